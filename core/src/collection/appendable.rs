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

use super::shared_rows::SharedRows;
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

/// [`AppendableSegment::grow_on`] spread over the life of `prev`: the writer copies what
/// linking never changes (ids, stand-in payloads, build codes; vectors only when `prev`'s
/// buffer has no room to be shared, see [`SharedRows`]) a share of rows at a time while the
/// build pool links each batch ([`Growth::copy_some`]), so that when `prev` is full only the
/// rest and the graph's links are left to copy ([`Growth::finish`]). Copied up front at the
/// freeze, the rows of a segment grown to 700k rows of 128 dimensions took 2.2 s on the
/// writer's thread while the build threads waited.
#[derive(Debug)]
pub(crate) struct Growth {
    /// The [`AppendableSegment::serial`] of the segment it copies.
    of: u64,
    seg: AppendableSegment,
    codes: Option<crate::index::quant::BuildCodes>,
    more: usize,
    /// Whether the copy shares `prev`'s vectors (else it copies them with the other rows).
    share: bool,
}

impl Growth {
    /// An empty copy of `prev`, with room for its rows, `extra` rows it may still get and
    /// `more` after them (each at most as many as it will have or 65,536: a huge seal
    /// threshold reserves nothing absurd; past the room the buffers grow as vectors do).
    /// When `prev`'s vector buffer has that room, the copy will share it instead of copying
    /// the vectors (see [`SharedRows`]); otherwise it copies them into a buffer of its own,
    /// with at least twice the room, which the segments after it can then share.
    pub(crate) fn new(prev: &AppendableSegment, extra: usize, more: usize) -> Growth {
        let room = |n: usize, rows: usize| n.min(rows.max(1 << 16));
        let rows = prev.rows().saturating_add(room(extra, prev.rows()));
        let more = room(more, rows);
        let mut seg = AppendableSegment::new(
            prev.dim,
            None,
            prev.payload_index.only(),
            prev.text_indexing.clone(),
        );
        let floats = |n: usize| n.saturating_mul(prev.dim);
        let share = prev.vectors.room() >= floats(rows.saturating_add(more) - prev.rows());
        if !share {
            let want =
                floats(rows.saturating_add(more)).max(prev.vectors.capacity().saturating_mul(2));
            seg.vectors.reserve(want);
        }
        seg.ids.reserve_exact(rows + more);
        Growth {
            of: prev.serial,
            seg,
            codes: None,
            more,
            share,
        }
    }

    /// Whether this is a copy of `prev`.
    pub(crate) fn of(&self, prev: &AppendableSegment) -> bool {
        self.of == prev.serial && self.seg.rows() <= prev.rows()
    }

    /// Copy up to `max` more rows of `prev` (whose rows all have their graph nodes, linked
    /// or not), and bring the build codes up to them.
    pub(crate) fn copy_some(&mut self, prev: &AppendableSegment, max: usize) {
        let (from, dim) = (self.seg.rows(), prev.dim);
        let to = prev.rows().min(from.saturating_add(max));
        if to <= from {
            return;
        }
        let a = &mut self.seg;
        if !self.share {
            a.vectors
                .extend_from_slice(&prev.vectors[from * dim..to * dim]);
        }
        a.ids.extend_from_slice(&prev.ids[from..to]);
        let empty = Payload::default();
        a.payloads.resize(to, empty.clone());
        for _ in from..to {
            a.payload_index.add(&empty);
        }
        if let Some(t) = &a.text_indexing {
            for _ in from..to {
                t.add_row(&mut a.text, &empty);
            }
        }
        let theirs = prev.graph.as_ref().and_then(GraphBuilder::codes);
        match (&mut self.codes, theirs) {
            (Some(mine), Some(theirs)) => mine.copy_rows(theirs, to, self.more),
            (mine, theirs) => *mine = theirs.map(|c| c.copy_upto(to, self.more)),
        }
    }

    /// The new segment, growing on `prev` (the segment this copies, its linking finished)
    /// sealed into segment `id`: the rest of its rows, then its graph's links.
    pub(crate) fn finish(mut self, prev: &AppendableSegment, id: u64) -> AppendableSegment {
        self.copy_some(prev, usize::MAX);
        let Growth {
            mut seg,
            codes,
            more,
            share,
            ..
        } = self;
        let nb = seg.rows();
        if share {
            seg.vectors = prev.vectors.share();
            seg.vectors.reserve(more * prev.dim);
        }
        seg.deleted = Bitset::full(nb);
        seg.graph = prev.graph.as_ref().map(|g| g.copy_links(codes, more));
        seg.base = Some(ChainBase { id, rows: nb });
        seg
    }
}

/// Source of [`AppendableSegment::serial`].
static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[derive(Debug)]
pub(crate) struct AppendableSegment {
    dim: usize,
    pub(crate) vectors: SharedRows,
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
    /// Tells this segment from every other one of the process (see [`Growth`]).
    serial: u64,
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
            vectors: SharedRows::new(),
            ids: Vec::new(),
            payloads: Vec::new(),
            deleted: Bitset::new(0),
            by_id: HashMap::new(),
            base: None,
            serial: SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// A new appendable segment that grows on `prev` (frozen, about to be sealed whole into
    /// segment `id`; see [`AppendableSegment::seals_whole`]): `prev`'s rows become its first
    /// rows, deleted (their vectors shared or copied, their graph copied, payloads left
    /// empty: the sealed segment holds them), and new rows are linked into the copy of
    /// `prev`'s graph. Room is made for `more` rows after them, so that appending them does
    /// not move the copies again.
    pub(crate) fn grow_on(prev: &AppendableSegment, id: u64, more: usize) -> Self {
        Growth::new(prev, 0, more).finish(prev, id)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::quant::BuildCodes;
    use crate::index::rng::Rng;

    const DIM: usize = 128;

    fn rows(n: usize, rng: &mut Rng) -> Vec<f32> {
        (0..n * DIM)
            .map(|_| rng.next_f64() as f32 * 2.0 - 1.0)
            .collect()
    }

    fn codes(g: Option<&GraphBuilder>) -> Option<&BuildCodes> {
        g.and_then(GraphBuilder::codes)
    }

    /// A small, quick graph.
    fn small_graph(seed: u64) -> HnswParams {
        HnswParams {
            m: 8,
            ef_construction: 32,
            seed,
        }
    }

    /// Append `n` rows (ids from `first`) and link them, as a write does.
    fn add(a: &mut AppendableSegment, first: u64, n: usize, rng: &mut Rng) {
        let k = crate::distance::Kernels::best();
        for (i, v) in rows(n, rng).chunks_exact(DIM).enumerate() {
            a.push(first + i as u64, v, Payload::default());
        }
        let nodes = a.grow_graph(k, Metric::L2);
        a.link(nodes, k, Metric::L2);
    }

    /// A copy taken a share at a time while rows keep arriving (across a retraining of the
    /// build codes) ends equal to the copy taken at once when the segment is full.
    #[test]
    fn a_growth_copied_in_shares_equals_the_copy_taken_at_once() {
        let params = small_graph(3);
        let mut rng = Rng::new(11);
        let mut a = AppendableSegment::new(DIM, None, None, None);
        a.graph = Some(GraphBuilder::new_coded_from(params, 256));
        add(&mut a, 0, 300, &mut rng);
        let trained = codes(a.graph.as_ref()).map(BuildCodes::rows);
        assert_eq!(trained, Some(300), "codes from 256 rows on");
        let mut g = Growth::new(&a, 400, 100);
        assert!(g.of(&a));
        g.copy_some(&a, 120);
        assert_eq!(g.seg.rows(), 120);
        // At 600 rows (twice the 300 they were trained on) the codes are trained again and
        // every row is encoded again.
        add(&mut a, 300, 300, &mut rng);
        g.copy_some(&a, 50);
        add(&mut a, 600, 100, &mut rng);
        g.copy_some(&a, 30);
        assert!(g.of(&a));
        assert!(!g.of(&AppendableSegment::new(DIM, None, None, None)));
        let shares = g.finish(&a, 9);
        let once = AppendableSegment::grow_on(&a, 9, 100);
        assert_eq!(shares.rows(), 700);
        assert_eq!(&shares.vectors[..], &once.vectors[..]);
        assert_eq!(&shares.vectors[..], &a.vectors[..]);
        assert_eq!(shares.ids, once.ids);
        assert_eq!(shares.payloads, once.payloads);
        assert_eq!(shares.deleted, once.deleted);
        assert_eq!(shares.deleted.count_ones(), 700);
        assert_eq!(shares.base, Some(ChainBase { id: 9, rows: 700 }));
        assert_eq!(shares.base, once.base);
        let (gs, go) = (shares.graph.as_ref(), once.graph.as_ref());
        assert_eq!(codes(gs), codes(go));
        assert_eq!(codes(gs), codes(a.graph.as_ref()));
        assert_eq!(gs.map(GraphBuilder::freeze), go.map(GraphBuilder::freeze));
        assert_eq!(
            gs.map(GraphBuilder::freeze),
            a.graph.as_ref().map(GraphBuilder::freeze)
        );
    }

    /// A segment grown on `prev` holds `prev`'s vectors in `prev`'s own buffer when that has
    /// room for the growth (no copy) and copies them otherwise; either way `prev` keeps its
    /// rows unchanged while the new segment appends, and the copies leave room to share next.
    #[test]
    fn a_growth_shares_the_vectors_when_there_is_room_and_copies_them_otherwise() {
        let params = small_graph(5);
        let mut rng = Rng::new(12);
        let mut a = AppendableSegment::new(DIM, Some(params), None, None);
        add(&mut a, 0, 200, &mut rng);
        let before: Vec<f32> = a.vectors.to_vec();
        let room = a.vectors.room() / DIM;
        let mut b = AppendableSegment::grow_on(&a, 1, room + 1);
        assert!(!b.vectors.same_region(&a.vectors), "no room: copied");
        assert!(b.vectors.capacity() >= 2 * a.vectors.capacity());
        add(&mut b, 1000, 100, &mut rng);
        assert_eq!(&a.vectors[..], &before[..]);
        assert_eq!(&b.vectors[..200 * DIM], &before[..]);
        // `b`'s buffer has room for 100 more: the next growth shares it.
        let b_rows: Vec<f32> = b.vectors.to_vec();
        let mut c = AppendableSegment::grow_on(&b, 2, 100);
        assert!(c.vectors.same_region(&b.vectors), "room: shared");
        add(&mut c, 2000, 100, &mut rng);
        assert_eq!(&b.vectors[..], &b_rows[..]);
        assert_eq!(&c.vectors[..300 * DIM], &b_rows[..]);
        assert_eq!(c.rows(), 400);
        for r in 300..400 {
            assert_eq!(c.vector(r).len(), DIM);
        }
        // Appending to `b` again (never done by a frozen segment, but allowed) copies: `c`'s
        // rows stay as they were.
        let c_rows: Vec<f32> = c.vectors.to_vec();
        add(&mut b, 3000, 5, &mut rng);
        assert!(!b.vectors.same_region(&c.vectors));
        assert_eq!(&c.vectors[..], &c_rows[..]);
        assert_eq!(&b.vectors[..300 * DIM], &b_rows[..]);
    }
}
