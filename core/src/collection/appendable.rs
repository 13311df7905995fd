//! The appendable segment: the rows written since the last seal, in memory.

use std::collections::HashMap;

use crate::distance::Kernels;
use crate::filter::bitset::Bitset;
use crate::filter::cache::{FilterCache, KeyedFilter};
use crate::filter::expr::IdMatch;
use crate::filter::key::{str_id, KEY_FIELD};
use crate::filter::payload_index::RowLookup;
use crate::filter::payload_index::{IndexedFields, PayloadIndex};
use crate::filter::value::{Payload, Value};
use crate::index::hnsw::build::{GraphBuilder, VectorSet};
use crate::index::hnsw::HnswParams;
use crate::index::text::MemText;
use crate::types::Metric;

use super::text::{match_rows, TextIndexing};
use crate::index::text::TextSource;

/// The segment an appendable segment grows on ("link once"): the rows of the segment sealed
/// before it, which are its own first rows and graph nodes, so that each new row is linked
/// into one graph that keeps growing over a bulk load, instead of into a small graph a merge
/// throws away. Those rows stay deleted in the appendable segment (searches traverse them
/// as waypoints and never return them: the sealed segment does); its seal writes them again,
/// followed by the new rows, and the new segment replaces the base (see `build_sealed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChainBase {
    /// The sealed segment's id.
    pub(crate) id: u64,
    /// Its rows: the appendable segment's rows `0..rows`.
    pub(crate) rows: usize,
}

/// [`AppendableSegment::grow_on`] in two steps. The first copies what linking does not change
/// (vectors, ids, stand-in payloads, build codes): the bulk of the copy, which can run while
/// the batch that fills `prev` is being linked. The second copies the graph's links once
/// linking is done.
#[derive(Debug)]
pub(crate) struct Growth {
    seg: AppendableSegment,
    codes: Option<crate::index::quant::BuildCodes>,
    more: usize,
}

impl Growth {
    /// The first step, from `prev` whose rows all have their graph nodes (linked or not).
    pub(crate) fn start(prev: &AppendableSegment, more: usize) -> Growth {
        let nb = prev.rows();
        let mut a = AppendableSegment::new(
            prev.dim,
            None,
            prev.payload_index.only(),
            prev.text_indexing.clone(),
        );
        crate::hugepages::reserve(&mut a.vectors, prev.vectors.len() + more * prev.dim);
        a.vectors.extend_from_slice(&prev.vectors);
        a.ids.clone_from(&prev.ids);
        let empty = Payload::default();
        a.payloads = vec![empty.clone(); nb];
        for _ in 0..nb {
            a.payload_index.add(&empty);
        }
        if let Some(t) = &a.text_indexing {
            for _ in 0..nb {
                t.add_row(&mut a.text, &empty);
            }
        }
        a.deleted = Bitset::full(nb);
        Growth {
            codes: prev.graph.as_ref().and_then(|g| g.copy_codes(more)),
            seg: a,
            more,
        }
    }

    /// Whether this growth was started from a segment of `prev`'s rows.
    pub(crate) fn fits(&self, prev: &AppendableSegment) -> bool {
        self.seg.rows() == prev.rows() && self.seg.dim == prev.dim
    }

    /// The second step: the new segment, growing on `prev` (the segment [`Growth::start`]
    /// read, its linking finished) sealed into segment `id`.
    pub(crate) fn finish(self, prev: &AppendableSegment, id: u64) -> AppendableSegment {
        let Growth {
            mut seg,
            codes,
            more,
        } = self;
        seg.graph = prev.graph.as_ref().map(|g| g.copy_links(codes, more));
        seg.base = Some(ChainBase {
            id,
            rows: seg.rows(),
        });
        seg
    }
}

#[derive(Debug)]
pub(crate) struct AppendableSegment {
    dim: usize,
    pub(crate) vectors: Vec<f32>,
    pub(crate) ids: Vec<u64>,
    pub(crate) payloads: Vec<Payload>,
    pub(crate) deleted: Bitset,
    by_id: HashMap<u64, usize>,
    /// The live HNSW graph over every row (deleted rows stay in it as waypoints).
    pub(crate) graph: Option<GraphBuilder>,
    /// Rows by payload value, kept current as rows are appended.
    pub(crate) payload_index: PayloadIndex,
    filter_cache: FilterCache,
    /// The text index of each text field (in the config's order), kept current as rows
    /// are appended.
    pub(crate) text: Vec<MemText>,
    text_indexing: Option<std::sync::Arc<TextIndexing>>,
    /// The sealed segment whose rows come first (see [`ChainBase`]).
    pub(crate) base: Option<ChainBase>,
}

impl AppendableSegment {
    pub(crate) fn new(
        dim: usize,
        hnsw: Option<HnswParams>,
        only: IndexedFields,
        text: Option<std::sync::Arc<TextIndexing>>,
    ) -> Self {
        AppendableSegment {
            text: text
                .as_ref()
                .map(|t| vec![MemText::default(); t.fields.len()])
                .unwrap_or_default(),
            text_indexing: text,
            graph: hnsw.map(GraphBuilder::new),
            payload_index: PayloadIndex::new(only),
            filter_cache: FilterCache::default(),
            dim,
            vectors: Vec::new(),
            ids: Vec::new(),
            payloads: Vec::new(),
            deleted: Bitset::new(0),
            by_id: HashMap::new(),
            base: None,
        }
    }

    /// A new appendable segment that grows on `prev` (frozen, about to be sealed whole into
    /// segment `id`; see [`AppendableSegment::seals_whole`]): `prev`'s rows become its first
    /// rows, deleted (their vectors and graph copied, payloads left empty: the sealed segment
    /// holds them), and new rows are linked into the copy of `prev`'s graph. Room is made for
    /// `more` rows after them, so that appending them does not move the copies again.
    pub(crate) fn grow_on(prev: &AppendableSegment, id: u64, more: usize) -> Self {
        Growth::start(prev, more).finish(prev, id)
    }

    /// Rows of the base segment at the start (0 without one).
    pub(crate) fn base_rows(&self) -> usize {
        self.base.map_or(0, |b| b.rows)
    }

    /// Rows appended to this segment (live or deleted since), not counting the base's.
    pub(crate) fn own_rows(&self) -> usize {
        self.rows() - self.base_rows()
    }

    /// Whether sealing this segment writes every row in graph-node order, reusing the graph
    /// as it is: it has a graph over every row and none of its own rows is deleted. Only then
    /// can the next appendable segment grow on the sealed one.
    pub(crate) fn seals_whole(&self) -> bool {
        self.graph
            .as_ref()
            .is_some_and(|g| g.len_nodes() == self.rows())
            && self.deleted.count_ones() == self.base_rows()
    }

    /// The rows a search may return when this segment has a base (its own live rows), for
    /// searches without a filter; `None` without a base (every row not in `dead`).
    pub(crate) fn chain_live(&self, dead: &Bitset) -> Option<Bitset> {
        self.base?;
        let mut b = Bitset::full(self.rows());
        b.and_not(dead);
        Some(b)
    }

    pub(crate) fn rows(&self) -> usize {
        self.ids.len()
    }

    pub(crate) fn live_count(&self) -> usize {
        self.by_id.len()
    }

    pub(crate) fn find(&self, id: u64) -> Option<usize> {
        self.by_id.get(&id).copied()
    }

    pub(crate) fn vector(&self, row: usize) -> &[f32] {
        &self.vectors[row * self.dim..(row + 1) * self.dim]
    }

    /// Append a row for `id`. The caller has removed any older live row of `id`.
    pub(crate) fn push(&mut self, id: u64, vector: &[f32], payload: Payload) {
        let row = self.ids.len();
        crate::hugepages::reserve(&mut self.vectors, vector.len());
        self.vectors.extend_from_slice(vector);
        self.ids.push(id);
        self.payloads.push(payload);
        self.deleted.grow(row + 1);
        let payload = &self.payloads[row];
        self.payload_index.add(payload);
        if let Some(t) = &self.text_indexing {
            t.add_row(&mut self.text, payload);
        }
        self.by_id.insert(id, row);
    }

    /// Give the graph a node for every row added since the last call; returns the nodes
    /// still to link (see [`AppendableSegment::link`]). Until linked, a node is unreachable
    /// by graph search.
    pub(crate) fn grow_graph(
        &mut self,
        kernels: &Kernels,
        metric: Metric,
    ) -> std::ops::Range<usize> {
        let rows = self.rows();
        match &mut self.graph {
            Some(g) if g.len_nodes() < rows => {
                let from = g.len_nodes();
                let vs = VectorSet {
                    data: &self.vectors,
                    dim: self.dim,
                    kernels,
                    metric,
                };
                // On the build pool: encoding the rows for the build is parallel, and rayon's
                // global pool is never started in the host process (fork safety).
                crate::background::build(|| g.add_nodes(rows - from, &vs));
                from..rows
            }
            _ => 0..0,
        }
    }

    /// Link `nodes` into the graph (in parallel over rayon). Takes `&self`: the graph's links
    /// are atomics behind per-node locks, so searches may run meanwhile.
    pub(crate) fn link(&self, nodes: std::ops::Range<usize>, kernels: &Kernels, metric: Metric) {
        if let Some(g) = &self.graph {
            if !nodes.is_empty() {
                let vs = VectorSet {
                    data: &self.vectors,
                    dim: self.dim,
                    kernels,
                    metric,
                };
                crate::background::build(|| g.insert_range(nodes.start, nodes.end, &vs));
            }
        }
    }

    /// Live rows matching `filter`.
    pub(crate) fn passing(&self, filter: &KeyedFilter<'_>) -> Bitset {
        self.passing_except(filter, &self.deleted)
    }

    /// Rows matching `filter` that are not in `dead` (for a frozen segment, whose deletions
    /// after the freeze are kept outside it).
    pub(crate) fn passing_except(&self, filter: &KeyedFilter<'_>, dead: &Bitset) -> Bitset {
        let all = self.filter_cache.get_or_eval(filter, self.rows(), || {
            if self.payload_index.covers(filter.filter) {
                return Ok::<_, std::convert::Infallible>(
                    self.payload_index
                        .eval_with(filter.filter, &MemLookup(self)),
                );
            }
            // A field outside `indexed_fields`: evaluate on the payloads in memory.
            let mut b = Bitset::new(self.rows());
            for (row, p) in self.payloads.iter().enumerate() {
                if filter.filter.matches_point(self.ids[row], p) {
                    b.insert(row);
                }
            }
            Ok(b)
        });
        let mut b = match all {
            Ok(a) => (*a).clone(),
            Err(never) => match never {},
        };
        b.and_not(dead);
        b
    }

    /// Delete the live row of `id`, if any.
    pub(crate) fn remove(&mut self, id: u64) -> bool {
        match self.by_id.remove(&id) {
            Some(row) => {
                self.deleted.insert(row);
                true
            }
            None => false,
        }
    }

    /// Live rows in row order.
    pub(crate) fn live_rows(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.rows()).filter(|r| !self.deleted.get(*r))
    }
}

/// `$match` and `$id` for the payload index of an in-memory segment.
struct MemLookup<'a>(&'a AppendableSegment);

impl RowLookup for MemLookup<'_> {
    fn text(&self, field: &str, terms: &[String]) -> Bitset {
        let a = self.0;
        // In memory: a text index cannot be damaged, `err` stays empty.
        let err = std::cell::RefCell::new(None);
        let src = a.text_indexing.as_ref().and_then(|t| {
            let f = t.fields.iter().position(|x| x == field)?;
            a.text.get(f).map(TextSource::Mem)
        });
        match_rows(src, terms, a.rows(), None, &err)
    }

    fn ids(&self, m: &IdMatch) -> Bitset {
        let a = self.0;
        let mut b = Bitset::new(a.rows());
        for id in m.int_ids() {
            if let Some(row) = a.find(*id) {
                b.insert(row);
            }
        }
        for k in m.str_ids() {
            if let Some(row) = a.find(str_id(k)) {
                if matches!(a.payloads[row].get(KEY_FIELD), Some(Value::Str(s)) if s == k) {
                    b.insert(row);
                }
            }
        }
        b
    }
}
