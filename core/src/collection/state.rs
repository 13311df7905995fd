//! The in-memory view of a collection: the sealed segments with their deletion bitmaps,
//! and the appendable segment. Writers mutate it under the collection's write lock;
//! searches read it under a shared lock.
//!
//! INVARIANT: every id has at most one live row across all segments.

use std::sync::Arc;

use crate::distance::Kernels;
use crate::error::Result;
use crate::filter::bitset::Bitset;
use crate::filter::value::Payload;
use crate::index::{flat, topk::TopK};
use crate::storage::segment::reader::SegmentReader;
use crate::storage::wal::record::WalOp;
use crate::types::CollectionConfig;

use super::appendable::AppendableSegment;

#[derive(Debug)]
pub(crate) struct SealedSegment {
    pub id: u64,
    pub reader: Arc<SegmentReader>,
    pub deleted: Bitset,
    /// Deletions changed since the last checkpoint (a new deletion file is due).
    pub dirty: bool,
}

impl SealedSegment {
    pub(crate) fn live_count(&self) -> usize {
        self.reader.rows() - self.deleted.count_ones()
    }
}

/// Where the live row of an id is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Location {
    Appendable(usize),
    Sealed { seg: usize, row: usize },
}

#[derive(Debug)]
pub(crate) struct State {
    pub appendable: AppendableSegment,
    pub sealed: Vec<SealedSegment>,
}

impl State {
    pub(crate) fn new(dim: usize, sealed: Vec<SealedSegment>) -> State {
        State {
            appendable: AppendableSegment::new(dim),
            sealed,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.appendable.live_count()
            + self
                .sealed
                .iter()
                .map(SealedSegment::live_count)
                .sum::<usize>()
    }

    pub(crate) fn locate(&self, id: u64) -> Option<Location> {
        if let Some(r) = self.appendable.find(id) {
            return Some(Location::Appendable(r));
        }
        // Newest segment first: that is where a recently rewritten id lives.
        for (seg, s) in self.sealed.iter().enumerate().rev() {
            if let Some(row) = s.reader.find(id) {
                if !s.deleted.get(row) {
                    return Some(Location::Sealed { seg, row });
                }
            }
        }
        None
    }

    /// Delete the live row of `id`; returns whether there was one.
    pub(crate) fn remove(&mut self, id: u64) -> bool {
        match self.locate(id) {
            Some(Location::Appendable(_)) => self.appendable.remove(id),
            Some(Location::Sealed { seg, row }) => {
                let s = &mut self.sealed[seg];
                s.deleted.insert(row);
                s.dirty = true;
                true
            }
            None => false,
        }
    }

    /// Apply one logged operation. Used by writers and by WAL replay alike, so that the
    /// state after a crash equals the state before it.
    pub(crate) fn apply(&mut self, op: WalOp) {
        match op {
            WalOp::Upsert { points, .. } => {
                for p in points {
                    self.remove(p.id);
                    self.appendable.push(p.id, &p.vector, p.payload);
                }
            }
            WalOp::Delete { ids } => {
                for id in ids {
                    self.remove(id);
                }
            }
        }
    }

    /// The vector and payload of `id`.
    pub(crate) fn get(&self, id: u64) -> Result<Option<(Vec<f32>, Payload)>> {
        Ok(match self.locate(id) {
            Some(Location::Appendable(r)) => Some((
                self.appendable.vector(r).to_vec(),
                self.appendable.payloads[r].clone(),
            )),
            Some(Location::Sealed { seg, row }) => {
                let s = &self.sealed[seg];
                Some((s.reader.vector(row).to_vec(), s.reader.payload(row)?))
            }
            None => None,
        })
    }

    /// Exact top-k over every segment, deletes respected.
    pub(crate) fn search_flat(
        &self,
        kernels: &Kernels,
        config: &CollectionConfig,
        query: &[f32],
        k: usize,
    ) -> Vec<(u64, f32)> {
        let mut top = TopK::new(k);
        for s in &self.sealed {
            let ids = s.reader.ids();
            let del = &s.deleted;
            flat::scan(
                kernels,
                config.metric,
                config.dim,
                s.reader.vectors(),
                query,
                |r| !del.get(r),
                |r| ids[r],
                &mut top,
            );
        }
        let a = &self.appendable;
        flat::scan(
            kernels,
            config.metric,
            config.dim,
            &a.vectors,
            query,
            |r| !a.deleted.get(r),
            |r| a.ids[r],
            &mut top,
        );
        top.into_sorted()
    }

    /// Exact top-k for a block of queries at once (see `flat::scan_block`).
    pub(crate) fn search_flat_block(
        &self,
        kernels: &Kernels,
        config: &CollectionConfig,
        queries: &[&[f32]],
        k: usize,
    ) -> Vec<Vec<(u64, f32)>> {
        let mut tops: Vec<TopK> = queries.iter().map(|_| TopK::new(k)).collect();
        for s in &self.sealed {
            let ids = s.reader.ids();
            let del = &s.deleted;
            flat::scan_block(
                kernels,
                config.metric,
                config.dim,
                s.reader.vectors(),
                queries,
                |r| !del.get(r),
                |r| ids[r],
                &mut tops,
            );
        }
        let a = &self.appendable;
        flat::scan_block(
            kernels,
            config.metric,
            config.dim,
            &a.vectors,
            queries,
            |r| !a.deleted.get(r),
            |r| a.ids[r],
            &mut tops,
        );
        tops.into_iter().map(TopK::into_sorted).collect()
    }

    /// The payload of the live row of `id` (for search results).
    pub(crate) fn payload_of(&self, id: u64) -> Result<Payload> {
        Ok(match self.locate(id) {
            Some(Location::Appendable(r)) => self.appendable.payloads[r].clone(),
            Some(Location::Sealed { seg, row }) => self.sealed[seg].reader.payload(row)?,
            None => Payload::new(),
        })
    }
}
