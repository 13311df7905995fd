//! One segment as reads see it, whatever its state: *appendable* (growing, in memory),
//! *frozen* (full, in memory, being sealed in the background; deletions since the freeze
//! kept beside it) or *sealed* (a mapped file with a deletion bitset). Locating an id,
//! reading a row, filtering, counting and scanning are written once over [`Segment`]; only
//! the three ways of deleting a row differ (see `State::remove`).

use super::appendable::AppendableSegment;
use super::state::{Frozen, SealedSegment};
use crate::error::Result;
use crate::filter::bitset::Bitset;
use crate::filter::cache::KeyedFilter;
use crate::filter::key::KEY_FIELD;
use crate::filter::value::{Payload, Value};

/// A segment of any state, borrowed.
#[derive(Clone, Copy)]
pub(crate) enum Segment<'a> {
    Appendable(&'a AppendableSegment),
    Frozen(&'a Frozen),
    Sealed(&'a SealedSegment),
}

/// Which segment of a state: a sealed one by position, the frozen one, or the appendable one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum SegmentAt {
    Sealed(usize),
    Frozen,
    Appendable,
}

impl<'a> Segment<'a> {
    /// Every row's id.
    pub(crate) fn ids(&self) -> &'a [u64] {
        match self {
            Segment::Appendable(a) => &a.ids,
            Segment::Frozen(f) => &f.seg.ids,
            Segment::Sealed(s) => s.reader.ids(),
        }
    }

    /// The id of `row`.
    pub(crate) fn id(&self, row: usize) -> u64 {
        self.ids()[row]
    }

    /// Every row's vector, row-major.
    pub(crate) fn vectors(&self) -> &'a [f32] {
        match self {
            Segment::Appendable(a) => &a.vectors,
            Segment::Frozen(f) => &f.seg.vectors,
            Segment::Sealed(s) => s.reader.vectors(),
        }
    }

    /// The vector of `row`.
    pub(crate) fn vector(&self, row: usize) -> &'a [f32] {
        match self {
            Segment::Appendable(a) => a.vector(row),
            Segment::Frozen(f) => f.seg.vector(row),
            Segment::Sealed(s) => s.reader.vector(row),
        }
    }

    /// The payload of `row` (decoded from the file for a sealed segment).
    pub(crate) fn payload(&self, row: usize) -> Result<Payload> {
        match self {
            Segment::Appendable(a) => Ok(a.payloads[row].clone()),
            Segment::Frozen(f) => Ok(f.seg.payloads[row].clone()),
            Segment::Sealed(s) => s.reader.payload(row),
        }
    }

    /// The string key stored with `row` (string-id collections), read without decoding the
    /// rest of a sealed row's payload.
    pub(crate) fn key(&self, row: usize) -> Result<Option<String>> {
        let mem = |p: &Payload| match p.get(KEY_FIELD) {
            Some(Value::Str(k)) => Some(k.clone()),
            _ => None,
        };
        match self {
            Segment::Appendable(a) => Ok(mem(&a.payloads[row])),
            Segment::Frozen(f) => Ok(mem(&f.seg.payloads[row])),
            Segment::Sealed(s) => Ok(s.reader.payload_key(row)?.map(str::to_owned)),
        }
    }

    /// Rows with an id above `after` (all rows when `None`), in id order; dead rows
    /// included.
    pub(crate) fn rows_by_id(
        &self,
        after: Option<u64>,
    ) -> Box<dyn Iterator<Item = (u64, usize)> + 'a> {
        let above = |id: u64| after.is_none_or(|a| id > a);
        if let Segment::Sealed(s) = *self {
            return Box::new(s.reader.rows_by_id(after));
        }
        let mut v: Vec<(u64, usize)> = self
            .ids()
            .iter()
            .enumerate()
            .filter(|(_, id)| above(**id))
            .map(|(row, id)| (*id, row))
            .collect();
        v.sort_unstable();
        Box::new(v.into_iter())
    }

    /// The rows that are not live.
    pub(crate) fn dead(&self) -> &'a Bitset {
        match self {
            Segment::Appendable(a) => &a.deleted,
            Segment::Frozen(f) => &f.dead,
            Segment::Sealed(s) => &s.deleted,
        }
    }

    /// The live row of `id`, if this segment holds one.
    pub(crate) fn find_live(&self, id: u64) -> Option<usize> {
        let row = match self {
            // The appendable segment's id map holds live rows only.
            Segment::Appendable(a) => return a.find(id),
            Segment::Frozen(f) => f.seg.find(id)?,
            Segment::Sealed(s) => s.reader.find(id)?,
        };
        (!self.dead().get(row)).then_some(row)
    }

    /// Live rows matching `filter`.
    pub(crate) fn passing(&self, filter: &KeyedFilter<'_>) -> Result<Bitset> {
        match self {
            Segment::Appendable(a) => Ok(a.passing(filter)),
            Segment::Frozen(f) => Ok(f.seg.passing_except(filter, &f.dead)),
            Segment::Sealed(s) => s.passing(filter),
        }
    }

    /// The rows an unfiltered search may return from an in-memory segment that grows on a
    /// sealed one (its own live rows); `None` for any other segment (every row not deleted).
    pub(crate) fn chain_live(&self) -> Option<Bitset> {
        match self {
            Segment::Appendable(a) => a.chain_live(&a.deleted),
            Segment::Frozen(f) => f.seg.chain_live(&f.dead),
            Segment::Sealed(_) => None,
        }
    }

    /// Live rows.
    pub(crate) fn live_count(&self) -> usize {
        match self {
            Segment::Appendable(a) => a.live_count(),
            Segment::Frozen(f) => f.live_count(),
            Segment::Sealed(s) => s.live_count(),
        }
    }
}
