//! Building a graph: nodes are inserted concurrently (rayon). Layer-0 links live in one
//! flat array of atomics in the frozen layout (`count, m0 neighbours` per node), so a
//! neighbour expansion is one load and freezing is a copy; writers of a node's list hold
//! that node's lock. Upper layers (about 1/m of the nodes) keep a locked list per level.
//! With one thread the result is deterministic for a seed (levels are a pure function of
//! (seed, node)).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};

use parking_lot::{Mutex, RwLock};
use rayon::prelude::*;

use super::graph::{FrozenGraph, Graph, GraphView};
use super::search::{
    greedy_descent, search_layer, search_layer_unordered, with_scratch, Cand, Dist, Expand,
};
use super::visited::{Visited, VisitedPool};
use super::HnswParams;
use crate::distance::Kernels;
use crate::distance::Metric;
use crate::index::quant::{with_prepared, BuildCodes, BuildDist};

/// The vectors a graph is built over.
#[derive(Clone, Copy)]
pub(crate) struct VectorSet<'a> {
    pub data: &'a [f32],
    pub dim: usize,
    pub kernels: &'a Kernels,
    pub metric: Metric,
}

impl VectorSet<'_> {
    #[inline]
    pub(crate) fn row(&self, i: u32) -> &[f32] {
        let i = i as usize;
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    #[inline]
    pub(crate) fn between(&self, a: u32, b: u32) -> f32 {
        self.kernels.distance(self.metric, self.row(a), self.row(b))
    }
}

/// A graph under construction (also the appendable segment's live graph).
#[derive(Debug)]
pub(crate) struct GraphBuilder {
    params: HnswParams,
    /// Layer 0, `nodes × (1 + m0)`: count then neighbours. Readers load without locking;
    /// every stored value is a valid node, so a list read mid-update is merely stale.
    l0: Vec<AtomicU32>,
    /// Serialises writers of one node's layer-0 list.
    locks: Vec<Mutex<()>>,
    /// Levels 1..=L of each node (empty for the ~(1 - 1/m) nodes on layer 0 only).
    upper: Vec<Vec<Mutex<Vec<u32>>>>,
    entry: RwLock<Option<(u32, usize)>>,
    pool: VisitedPool,
    /// 4-bit codes of the nodes, scored by the insertion beam (see [`build_codes`]); `None`
    /// until enough rows are there to train them, or when not used.
    codes: Option<BuildCodes>,
    /// Never use codes (tests compare against this).
    exact_beam: bool,
    /// Rows from which codes are used, in place of [`codes_from_rows`] (tests).
    codes_from_rows: Option<usize>,
}

/// Nodes inserted one by one before parallel insertion starts, so that concurrent inserts
/// do not all race for a near-empty graph.
const SEQUENTIAL_PREFIX: usize = 256;

/// The layer-0 beam of the rows a merge inserts into a reused graph, in percent of
/// `ef_construction` (nodes with upper layers always take the full beam). It stays at 100:
/// a narrower beam trades recall for merge time exactly as a lower `ef_construction` does,
/// and `ef_construction` is the user's to choose. Measured at 50% (ten segments merged into
/// one, m 16, ef_construction 200, 2 threads): on 1M x 128 the converged ingest took 21% less
/// time (555 vs 702 s, the merge itself 36% less) and recall@10 fell 0.004-0.009 at ef
/// 128-256; on 200k x 128, 25% less time and up to 0.004 recall; 25% lost 0.01 and 12.5%
/// 0.04 at ef 64. Starting that beam at the row's neighbours in its input's own graph
/// (skipping the descent from the entry point) was measured too, at 50%: about as fast and
/// no better (200k x 128, one run each: 59.6 s and recall@10 0.9153 at ef 64, against 62.2 s
/// and 0.9194 descending), so the saving is the narrower beam's alone.
const MERGE_EF_PERCENT: usize = 100;

/// [`MERGE_EF_PERCENT`] (`TROVEDB_MERGE_EF_PERCENT` with feature `bench`).
fn merge_ef_percent() -> usize {
    #[cfg(feature = "bench")]
    {
        static V: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        crate::index::bench_knob(&V, "TROVEDB_MERGE_EF_PERCENT", MERGE_EF_PERCENT)
    }
    #[cfg(not(feature = "bench"))]
    MERGE_EF_PERCENT
}

/// Whether a build scores its insertion beam on codes (for `dim` components; 4-bit since
/// 2026-12, see [`BuildCodes`]).
///
/// Measured with sq8 codes (m 16, ef_construction 200, 2 threads, one build each way,
/// alternated):
/// text-minilm-dev 20k x 384 cosine built in 1.51-1.55 s instead of 1.99-2.19 s, with
/// recall@10 at ef 16-96 within 0.004 of the exact build's; 200k x 128 l2 in 20.3 s instead
/// of 21.7 s, recall within 0.008 (both ways up and down); MNIST 5k x 784 l2 unchanged
/// (0.31 s, it fits in cache). Below [`BUILD_CODES_MIN_DIM`] components the float rows are
/// cheap to read already and the beam scores them. With feature `bench`,
/// `TROVEDB_BUILD_SQ8=0` turns the codes off, for measurements.
fn build_codes(dim: usize) -> bool {
    #[cfg(feature = "bench")]
    {
        static V: std::sync::OnceLock<u8> = std::sync::OnceLock::new();
        if crate::index::bench_knob(&V, "TROVEDB_BUILD_SQ8", 1) == 0 {
            return false;
        }
    }
    dim >= BUILD_CODES_MIN_DIM
}

/// Fewest components for which a build scores codes (see [`build_codes`]): the smallest
/// width measured to gain.
const BUILD_CODES_MIN_DIM: usize = 128;

/// Size of the float rows from which a graph's build scores codes: below it the rows stay in
/// a core's own cache (2 MiB of L2 on the machine measured) and the codes only add work.
/// Measured with sq8 build codes on text-minilm-dev (384 dimensions) loaded through the Python
/// API (seal threshold 2,000, batches of 1,000, `wait_idle()`; the chain of growing segments
/// ends as one 20,000-row graph), six alternated loads each: converged median 1.92 s with codes from
/// 2 MiB (1,365 rows) against 2.09 s from 8 MiB (5,461 rows, the value before) and 2.35 s
/// from 16 MiB, CPU 3.41 s against 3.70 s; from 1 MiB, 384 KiB or 256 rows 1.94-2.00 s (no
/// better). Recall@10 at ef 10-64 within 0.003 of the 8 MiB build (500 queries, two builds
/// each); MNIST 5k x 784 loaded in 0.47-0.48 s against 0.50-0.56 s, recall within 0.003.
/// With feature `bench`, `TROVEDB_BUILD_CODES_MIN_KB` sets it, for measurements.
const BUILD_CODES_MIN_BYTES: usize = 2 << 20;

/// [`BUILD_CODES_MIN_BYTES`] (`TROVEDB_BUILD_CODES_MIN_KB`, in KiB, with feature `bench`).
fn build_codes_min_bytes() -> usize {
    #[cfg(feature = "bench")]
    {
        static V: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        crate::index::bench_knob(
            &V,
            "TROVEDB_BUILD_CODES_MIN_KB",
            BUILD_CODES_MIN_BYTES >> 10,
        ) << 10
    }
    #[cfg(not(feature = "bench"))]
    BUILD_CODES_MIN_BYTES
}

/// Rows from which a graph of `dim`-wide rows scores codes: [`BUILD_CODES_MIN_BYTES`] of
/// float rows, and at least [`BuildCodes::TRAIN_ROWS`] to train on.
fn codes_from_rows(dim: usize) -> usize {
    (build_codes_min_bytes() / (4 * dim.max(1))).max(BuildCodes::TRAIN_ROWS)
}

impl GraphBuilder {
    pub(crate) fn new(params: HnswParams) -> GraphBuilder {
        GraphBuilder {
            params,
            l0: Vec::new(),
            locks: Vec::new(),
            upper: Vec::new(),
            entry: RwLock::new(None),
            pool: VisitedPool::default(),
            codes: None,
            exact_beam: false,
            codes_from_rows: None,
        }
    }

    /// A builder whose insertion beam always scores the float rows.
    #[cfg(test)]
    pub(crate) fn new_exact(params: HnswParams) -> GraphBuilder {
        GraphBuilder {
            exact_beam: true,
            ..GraphBuilder::new(params)
        }
    }

    /// A builder that scores codes from `rows` rows on, whatever their size.
    #[cfg(test)]
    pub(crate) fn new_coded_from(params: HnswParams, rows: usize) -> GraphBuilder {
        GraphBuilder {
            codes_from_rows: Some(rows),
            ..GraphBuilder::new(params)
        }
    }

    /// Rows the build codes cover (0 without codes).
    #[cfg(test)]
    pub(crate) fn coded_rows(&self) -> usize {
        self.codes.as_ref().map_or(0, BuildCodes::rows)
    }

    /// Nodes allocated so far.
    pub(crate) fn len_nodes(&self) -> usize {
        self.locks.len()
    }

    fn width(&self) -> usize {
        1 + self.params.m0()
    }

    fn level(&self, node: u32) -> usize {
        self.upper[node as usize].len()
    }

    /// Allocate nodes `len()..len()+count` (levels drawn from the seed) for the rows of `vs`
    /// with those numbers, and encode them for the insertion beam (see [`build_codes`]).
    pub(crate) fn add_nodes(&mut self, count: usize, vs: &VectorSet<'_>) {
        let start = self.len_nodes();
        let w = self.width();
        crate::hugepages::reserve(&mut self.l0, count * w);
        crate::hugepages::reserve(&mut self.locks, count);
        self.l0
            .resize_with((start + count) * w, || AtomicU32::new(0));
        self.locks.resize_with(start + count, || Mutex::new(()));
        for node in start..start + count {
            let level = self.params.level_of(node as u64);
            self.upper
                .push((0..level).map(|_| Mutex::new(Vec::new())).collect());
        }
        self.encode_nodes(vs);
    }

    /// Bring the build codes up to every node: train them once there are enough rows, then
    /// encode each new row. Rows missing from `vs` leave the codes behind, and the beam then
    /// scores exact distances.
    fn encode_nodes(&mut self, vs: &VectorSet<'_>) {
        let n = self.len_nodes();
        if self.exact_beam || !build_codes(vs.dim) || vs.data.len() < n * vs.dim {
            return;
        }
        let rows = &vs.data[..n * vs.dim];
        match &mut self.codes {
            None if n
                >= self
                    .codes_from_rows
                    .unwrap_or_else(|| codes_from_rows(vs.dim)) =>
            {
                self.codes = Some(BuildCodes::train(vs.metric, rows, vs.dim));
            }
            Some(c) => c.catch_up(rows),
            None => {}
        }
    }

    /// A builder holding a copy of the frozen graph `g` (its nodes with their levels, links
    /// and entry point), to which more nodes can be added and inserted: a merge reuses the
    /// graph of its largest input this way instead of rebuilding it. `None` if `g` was built
    /// with another degree than `params`. Room is made for `capacity` nodes in all (at least
    /// the graph's), so that adding the rest does not move the buffers.
    pub(crate) fn from_view(
        params: HnswParams,
        g: &GraphView<'_>,
        capacity: usize,
    ) -> Option<GraphBuilder> {
        if g.m != params.m || g.m0 != params.m0() {
            return None;
        }
        let n = g.len();
        let cap = capacity.max(n);
        let mut b = GraphBuilder::new(params);
        let w = b.width();
        b.l0.reserve_exact(cap * w);
        b.locks.reserve_exact(cap);
        b.upper.reserve_exact(cap);
        crate::hugepages::advise_vec(&b.l0);
        crate::hugepages::advise_vec(&b.locks);
        let mut list = Vec::with_capacity(w);
        for node in 0..n as u32 {
            g.neighbors(node, 0, &mut list);
            list.truncate(w - 1);
            b.l0.push(AtomicU32::new(list.len() as u32));
            b.l0.extend(list.iter().map(|x| AtomicU32::new(*x)));
            b.l0.extend((list.len()..w - 1).map(|_| AtomicU32::new(0)));
            b.locks.push(Mutex::new(()));
            let levels = (1..=g.levels(node))
                .map(|level| {
                    g.neighbors(node, level, &mut list);
                    Mutex::new(list.clone())
                })
                .collect();
            b.upper.push(levels);
        }
        *b.entry.write() = g.entry();
        Some(b)
    }

    /// The build codes, if any (see `Growth`: a copy of this graph to which more nodes can
    /// be added takes them row by row while nodes are being linked, since linking never
    /// changes them; then [`GraphBuilder::copy_links`]).
    pub(crate) fn codes(&self) -> Option<&BuildCodes> {
        self.codes.as_ref()
    }

    /// A copy of this graph to which more nodes can be added, built of its links, levels and
    /// entry point and `codes`, a copy of its build codes (see [`GraphBuilder::codes`]) taken
    /// since its last nodes were added: an appendable segment that grows on the graph of the
    /// segment sealed before it starts from such a copy (see `AppendableSegment::grow_on`). Taken while no
    /// node is being linked (the caller holds the writers off). Room is made for `more`
    /// nodes, so that adding them does not move the copy again.
    pub(crate) fn copy_links(&self, codes: Option<BuildCodes>, more: usize) -> GraphBuilder {
        let n = self.len_nodes();
        let mut b = GraphBuilder::new(self.params);
        crate::hugepages::reserve(&mut b.l0, self.l0.len() + more * self.width());
        crate::hugepages::reserve(&mut b.locks, n + more);
        b.upper.reserve_exact(n + more);
        b.l0.extend(self.l0.iter().map(|x| AtomicU32::new(x.load(Relaxed))));
        b.locks.resize_with(n, || Mutex::new(()));
        b.upper.extend(self.upper.iter().map(|levels| {
            levels
                .iter()
                .map(|l| Mutex::new(l.lock().clone()))
                .collect()
        }));
        *b.entry.write() = *self.entry.read();
        b.codes = codes;
        b.exact_beam = self.exact_beam;
        b.codes_from_rows = self.codes_from_rows;
        b
    }

    /// Build a graph over every row of `vs`, in parallel on the current rayon pool.
    #[cfg(test)]
    pub(crate) fn build(params: HnswParams, vs: &VectorSet<'_>) -> GraphBuilder {
        GraphBuilder::build_or_stop(params, vs, &AtomicBool::new(false))
    }

    /// [`GraphBuilder::build`], giving up early once `stop` is set (the graph is then
    /// incomplete and must be thrown away).
    pub(crate) fn build_or_stop(
        params: HnswParams,
        vs: &VectorSet<'_>,
        stop: &AtomicBool,
    ) -> GraphBuilder {
        let n = vs.data.len() / vs.dim;
        let mut b = GraphBuilder::new(params);
        b.add_nodes(n, vs);
        b.insert_range_or_stop(0, n, vs, stop);
        b
    }

    /// Insert nodes `from..to` (already allocated) using every rayon thread.
    pub(crate) fn insert_range(&self, from: usize, to: usize, vs: &VectorSet<'_>) {
        self.insert_range_or_stop(from, to, vs, &AtomicBool::new(false));
    }

    /// [`GraphBuilder::insert_range`], skipping the remaining nodes once `stop` is set.
    pub(crate) fn insert_range_or_stop(
        &self,
        from: usize,
        to: usize,
        vs: &VectorSet<'_>,
        stop: &AtomicBool,
    ) {
        self.insert_range_beam(from, to, vs, self.params.ef_construction, stop);
    }

    /// [`GraphBuilder::insert_range_or_stop`] for the rows a merge inserts into a graph: a
    /// node without upper layers searches layer 0 with [`MERGE_EF_PERCENT`] of the
    /// `ef_construction` beam (at least `m`).
    pub(crate) fn insert_range_merge_or_stop(
        &self,
        from: usize,
        to: usize,
        vs: &VectorSet<'_>,
        stop: &AtomicBool,
    ) {
        let ef0 = (self.params.ef_construction * merge_ef_percent() / 100).max(self.params.m);
        self.insert_range_beam(from, to, vs, ef0, stop);
    }

    /// Insert nodes `from..to` with a layer-0 beam of `ef0` for nodes on layer 0 only.
    fn insert_range_beam(
        &self,
        from: usize,
        to: usize,
        vs: &VectorSet<'_>,
        ef0: usize,
        stop: &AtomicBool,
    ) {
        let seq_end = if rayon::current_num_threads() == 1 {
            to
        } else {
            to.min(from.max(SEQUENTIAL_PREFIX))
        };
        for i in from..seq_end {
            if stop.load(Relaxed) {
                return;
            }
            self.insert_beam(i as u32, vs, ef0);
        }
        (seq_end..to).into_par_iter().for_each(|i| {
            if !stop.load(Relaxed) {
                self.insert_beam(i as u32, vs, ef0);
            }
        });
    }

    fn read_l0(&self, node: u32, out: &mut Vec<u32>) {
        let w = self.width();
        let base = node as usize * w;
        let c = (self.l0[base].load(Relaxed) as usize).min(w - 1);
        out.extend(self.l0[base + 1..=base + c].iter().map(|x| x.load(Relaxed)));
    }

    /// Store a layer-0 list; the caller holds `locks[node]`.
    fn write_l0(&self, node: u32, list: &[u32]) {
        let w = self.width();
        let base = node as usize * w;
        let c = list.len().min(w - 1);
        for (slot, v) in self.l0[base + 1..=base + c].iter().zip(list) {
            slot.store(*v, Relaxed);
        }
        self.l0[base].store(c as u32, Relaxed);
    }

    /// Insert one allocated node, with a layer-0 beam of `ef0` if it has no upper layer.
    fn insert_beam(&self, q: u32, vs: &VectorSet<'_>, ef0: usize) {
        let level = self.level(q);
        let ef = if level == 0 {
            ef0
        } else {
            self.params.ef_construction
        };
        let entry = *self.entry.read();
        let (ep, top) = if let Some(e) = entry {
            e
        } else {
            let mut w = self.entry.write();
            if let Some(e) = *w {
                e
            } else {
                *w = Some((q, level));
                return;
            }
        };
        let vq = vs.row(q);
        let exact = |n: u32| vs.kernels.distance(vs.metric, vq, vs.row(n));
        let codes = self.codes.as_ref().filter(|c| c.rows() >= self.len_nodes());
        let mut visited = self.pool.take(self.len_nodes());
        with_prepared(|p| {
            if let Some(c) = codes {
                c.prepare(vq, p);
            }
            // The beam scores codes when there are some; links are chosen on exact distances.
            let dist = BeamDist {
                codes: codes.map(|codes| BuildDist {
                    codes,
                    kernels: vs.kernels,
                    prepared: p,
                }),
                exact: &exact,
            };
            let prefetch = |n: u32| match codes {
                Some(c) => c.prefetch(n as usize),
                None => crate::distance::prefetch(vs.row(n)),
            };
            with_scratch(|s| {
                let start = greedy_descent(self, &dist, (ep, top), level, &mut s.nbrs);
                let mut entries = vec![start];
                for lev in (0..=level.min(top)).rev() {
                    visited.reset(self.len_nodes());
                    // In no order: sorted below on exact distances, or on these when they are.
                    let mut found = search_layer_unordered(
                        self,
                        &dist,
                        &prefetch,
                        &entries,
                        ef,
                        lev,
                        &|n| n != q,
                        Expand::Through,
                        &mut visited,
                        s,
                    );
                    // A new node starts with at most m diverse links on every layer; layer 0
                    // grows to 2m through back links. Measured on 1M x 128: starting layer 0
                    // at 2m builds 30% slower for no recall per QPS, and filling the list
                    // with pruned (non-diverse) candidates caps recall@10 at 0.986 (0.996
                    // without, ef=1280).
                    let chosen = if codes.is_some() {
                        select_rescored(&mut found, self.params.m, vs, &exact)
                    } else {
                        found.sort_unstable();
                        select(&found, self.params.m, vs)
                    };
                    if lev == 0 {
                        let _g = self.locks[q as usize].lock();
                        self.write_l0(q, &chosen);
                    } else {
                        self.upper[q as usize][lev - 1].lock().clone_from(&chosen);
                    }
                    for n in chosen {
                        self.connect(n, q, lev, vs);
                    }
                    if !found.is_empty() {
                        entries = found;
                    }
                }
            });
        });
        self.pool.give(visited);
        if level > top {
            let mut w = self.entry.write();
            if w.is_none_or(|(_, t)| level > t) {
                *w = Some((q, level));
            }
        }
    }

    /// Add the back link `n -> q`, pruning `n`'s list with the heuristic when it overflows.
    fn connect(&self, n: u32, q: u32, lev: usize, vs: &VectorSet<'_>) {
        let max = self.params.max_links(lev);
        let shrink = |list: &mut Vec<u32>| {
            let mut cands = exact_cands(list.iter().copied(), vs, &|x| vs.between(n, x));
            cands.sort_unstable();
            *list = select(&cands, max, vs);
        };
        if lev == 0 {
            let _g = self.locks[n as usize].lock();
            let mut list = Vec::with_capacity(max + 1);
            self.read_l0(n, &mut list);
            if list.contains(&q) {
                return;
            }
            list.push(q);
            if list.len() > max {
                shrink(&mut list);
            }
            self.write_l0(n, &list);
        } else if let Some(slot) = self.upper[n as usize].get(lev - 1) {
            let mut list = slot.lock();
            if list.contains(&q) {
                return;
            }
            list.push(q);
            if list.len() > max {
                shrink(&mut list);
            }
        }
    }

    /// [`GraphBuilder::freeze`], then every node made reachable ([`link_unreachable`]): the
    /// graph a segment file gets.
    pub(crate) fn freeze_linked(&self, vs: &VectorSet<'_>) -> FrozenGraph {
        let mut g = self.freeze();
        link_unreachable(&mut g, vs);
        g
    }

    /// Snapshot into the fixed-width layout.
    pub(crate) fn freeze(&self) -> FrozenGraph {
        let mut links: Vec<Vec<Vec<u32>>> = Vec::with_capacity(self.len_nodes());
        for node in 0..self.len_nodes() {
            let mut l0 = Vec::new();
            self.read_l0(node as u32, &mut l0);
            let mut levels = vec![l0];
            levels.extend(self.upper[node].iter().map(|l| l.lock().clone()));
            links.push(levels);
        }
        FrozenGraph::from_links(&self.params, *self.entry.read(), &links)
    }
}

/// Rows whose loads a loop of exact distances starts ahead of the one it computes.
const EXACT_AHEAD: usize = 3;

/// `ids` with their exact distances `exact(id)`, in order.
///
/// PERF: the rows of a beam or of a neighbour list lie anywhere in the collection; past the
/// cache (1M x 128 is 512 MB) each is a miss, so the row [`EXACT_AHEAD`] places on is
/// prefetched while this one is computed.
fn exact_cands(
    ids: impl ExactSizeIterator<Item = u32> + Clone,
    vs: &VectorSet<'_>,
    exact: &impl Fn(u32) -> f32,
) -> Vec<Cand> {
    let mut out = Vec::with_capacity(ids.len());
    let mut ahead = ids.clone().skip(EXACT_AHEAD);
    for id in ids {
        if let Some(a) = ahead.next() {
            crate::distance::prefetch(vs.row(a));
        }
        out.push(Cand { d: exact(id), id });
    }
    out
}

/// The neighbour-selection heuristic: walk candidates nearest first and keep one only if it
/// is nearer to the base than to every neighbour kept so far (diversity), up to `m`.
///
/// Pruned candidates are deliberately not used to fill the list: measured on 1M x 128 they
/// cap recall (see `insert`). PERF: a list shrunk after a back link overflowed then stays
/// below its limit, so the next back links are plain appends, not another O(m²) selection.
fn select(cands: &[Cand], m: usize, vs: &VectorSet<'_>) -> Vec<u32> {
    let mut kept: Vec<Cand> = Vec::with_capacity(m);
    select_more(cands, m, vs, &mut kept);
    kept.iter().map(|c| c.id).collect()
}

/// [`select`] continued: walk `cands` (nearest first) adding to `kept` up to `m`.
fn select_more(cands: &[Cand], m: usize, vs: &VectorSet<'_>, kept: &mut Vec<Cand>) {
    for c in cands {
        if kept.len() >= m {
            break;
        }
        if kept.iter().all(|k| vs.between(c.id, k.id) > c.d) {
            kept.push(*c);
        }
    }
}

/// Candidates a beam scored on codes are re-scored exactly this many at a time, nearest
/// estimates first, until the selection has its `m` links (see [`select_rescored`]).
///
/// The selection walks on average 108 of a ~200-wide beam (text-minilm-dev, m 16), so
/// re-scoring all of it spent half its exact distances on candidates never looked at.
/// Measured on text-minilm-dev (20k x 384 cosine, Python API, batches of 1,000, seal 2,000,
/// converged, 2 threads, alternated runs in fresh processes, medians of 8-10): 64 a chunk
/// 1.84-1.92 s (CPU 3.26-3.39 s) against 2.00-2.07 s (CPU 3.52-3.55 s) for the whole beam;
/// 56 and 80 the same as 64 within noise. Recall@10 at ef 10-64 within 0.003 (500 queries,
/// two builds each); 200k x 128 l2 in one segment 17.7-18.6 s against 18.3-19.1 s, recall
/// within 0.002. With feature `bench`, `TROVEDB_RESCORE_CHUNK` sets it (0: the whole beam).
const RESCORE_CHUNK: usize = 64;

/// [`RESCORE_CHUNK`] (`TROVEDB_RESCORE_CHUNK` with feature `bench`).
fn rescore_chunk() -> usize {
    #[cfg(feature = "bench")]
    {
        static V: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        crate::index::bench_knob(&V, "TROVEDB_RESCORE_CHUNK", RESCORE_CHUNK)
    }
    #[cfg(not(feature = "bench"))]
    RESCORE_CHUNK
}

/// [`select`] over a beam `found` scored on code estimates: re-score a chunk of the nearest
/// estimates exactly, select on it in exact order, and go on to the next chunk only while
/// fewer than `m` links are kept. Reorders `found`. The walk is in exact order within a
/// chunk and in estimate order across chunks: a candidate of a later chunk that is nearer
/// than one already walked is judged after it (the same selection when the estimates order
/// the beam as exact distances do).
fn select_rescored(
    found: &mut [Cand],
    m: usize,
    vs: &VectorSet<'_>,
    exact: &impl Fn(u32) -> f32,
) -> Vec<u32> {
    let chunk = match rescore_chunk() {
        0 => found.len().max(1),
        c => c,
    };
    let mut kept: Vec<Cand> = Vec::with_capacity(m);
    let mut rest = found;
    while kept.len() < m && !rest.is_empty() {
        let k = chunk.min(rest.len());
        if k < rest.len() {
            rest.select_nth_unstable(k - 1);
        }
        let (head, tail) = rest.split_at_mut(k);
        let mut r = exact_cands(head.iter().map(|c| c.id), vs, exact);
        r.sort_unstable();
        select_more(&r, m, vs, &mut kept);
        rest = tail;
    }
    kept.iter().map(|c| c.id).collect()
}

impl Graph for GraphBuilder {
    fn entry(&self) -> Option<(u32, usize)> {
        *self.entry.read()
    }

    #[inline]
    fn neighbors(&self, node: u32, level: usize, out: &mut Vec<u32>) {
        out.clear();
        if (node as usize) >= self.len_nodes() {
            return;
        }
        if level == 0 {
            self.read_l0(node, out);
        } else if let Some(l) = self.upper[node as usize].get(level - 1) {
            out.extend_from_slice(&l.lock());
        }
    }

    fn len(&self) -> usize {
        self.len_nodes()
    }

    #[inline]
    fn prefetch_l0(&self, node: u32) {
        let (n, w) = (node as usize, self.width());
        if let Some(list) = self.l0.get(n * w..(n + 1) * w) {
            crate::distance::prefetch_any(list);
        }
    }
}

/// The distances of an insertion beam: code estimates when the builder keeps codes, else
/// exact distances.
struct BeamDist<'a, E> {
    codes: Option<BuildDist<'a>>,
    exact: &'a E,
}

impl<E: Fn(u32) -> f32> Dist for BeamDist<'_, E> {
    #[inline]
    fn one(&self, n: u32) -> f32 {
        match &self.codes {
            Some(c) => c.one(n),
            None => (self.exact)(n),
        }
    }

    fn many(&self, ns: &[u32], out: &mut [f32]) {
        match &self.codes {
            Some(c) => c.many(ns, out),
            None => self.exact.many(ns, out),
        }
    }
}

/// Beam width of the search that finds where an unreachable node is linked from.
const REPAIR_EF: usize = 64;
/// Passes of [`link_unreachable`] at most (a replaced link can strand another node, which the
/// next pass links).
const REPAIR_PASSES: usize = 4;

/// Layer 0 of a frozen graph, borrowed: each node's list is `count, m0 neighbours`. Built in
/// O(1) (unlike a [`GraphView`], which checks every offset), so the repair below can search
/// it between two edits of the array; it checks once that every neighbour is a node
/// ([`Layer0::ids_in_range`]).
struct Layer0<'a> {
    l0: &'a [u32],
    m0: usize,
    entry: u32,
}

impl<'a> Layer0<'a> {
    fn new(l0: &'a [u32], m0: usize, entry: u32) -> Self {
        Layer0 { l0, m0, entry }
    }

    /// Whether every list names only nodes of the graph.
    fn ids_in_range(&self) -> bool {
        let rows = self.len();
        (0..rows).all(|n| self.list(n).iter().all(|&x| (x as usize) < rows))
    }

    fn width(&self) -> usize {
        1 + self.m0
    }

    /// The neighbours of `n` (the count capped at `m0`).
    fn list(&self, n: usize) -> &[u32] {
        let w = self.width();
        let c = (self.l0[n * w] as usize).min(self.m0);
        &self.l0[n * w + 1..n * w + 1 + c]
    }

    /// Mark every node reachable from `from` (and `from`) in `reach`; nodes already marked
    /// are not walked again.
    fn mark_reachable(&self, from: usize, reach: &mut [bool]) {
        if reach[from] {
            return;
        }
        reach[from] = true;
        let mut stack = vec![from];
        while let Some(n) = stack.pop() {
            for &x in self.list(n) {
                if !reach[x as usize] {
                    reach[x as usize] = true;
                    stack.push(x as usize);
                }
            }
        }
    }
}

impl Graph for Layer0<'_> {
    fn entry(&self) -> Option<(u32, usize)> {
        Some((self.entry, 0))
    }

    fn neighbors(&self, node: u32, level: usize, out: &mut Vec<u32>) {
        out.clear();
        if level == 0 && (node as usize) < self.len() {
            out.extend_from_slice(self.list(node as usize));
        }
    }

    fn len(&self) -> usize {
        self.l0.len() / self.width()
    }
}

/// Make every node reachable on layer 0 from the entry point, so that a beam as wide as the
/// graph finds every row: the neighbour-selection heuristic can leave a node with no link to
/// it (measured: 8 of 20,000 text-minilm-dev rows; 5 of 1,500 rows of a test's grown graph),
/// which no search returns however wide its beam. Each such node gets a link from the
/// nearest reachable node (found by a beam search over layer 0 from the entry, exact
/// distances): appended when that node's list has room, else in place of the neighbour
/// farthest from it among those with another link to them. Returns how many links were
/// added or replaced.
pub(crate) fn link_unreachable(g: &mut FrozenGraph, vs: &VectorSet<'_>) -> usize {
    let rows = g.meta[5] as usize;
    let m0 = g.meta[1] as usize;
    let w = 1 + m0;
    if rows < 2 || g.meta[3] >= rows as u64 || g.l0.len() != rows * w {
        return 0;
    }
    let entry = g.meta[3] as u32;
    // The view is made again after each edit of `g.l0` (the borrow ends there); O(1).
    if !Layer0::new(&g.l0, m0, entry).ids_in_range() {
        return 0;
    }
    let mut visited = Visited::default();
    let mut linked = 0;
    for _ in 0..REPAIR_PASSES {
        let layer = Layer0::new(&g.l0, m0, entry);
        let mut reach = vec![false; rows];
        layer.mark_reachable(entry as usize, &mut reach);
        if reach.iter().all(|r| *r) {
            break;
        }
        let mut indeg = vec![0u32; rows];
        for n in 0..rows {
            for &x in layer.list(n) {
                indeg[x as usize] += 1;
            }
        }
        for u in 0..rows {
            if reach[u] {
                continue;
            }
            let layer = Layer0::new(&g.l0, m0, entry);
            let q = u as u32;
            let dist = |n: u32| vs.between(q, n);
            let start = Cand {
                d: dist(entry),
                id: entry,
            };
            visited.reset(rows);
            let near = with_scratch(|s| {
                search_layer(
                    &layer,
                    &dist,
                    &|_| {},
                    &[start],
                    REPAIR_EF,
                    0,
                    &|n| n != q,
                    Expand::Through,
                    &mut visited,
                    s,
                )
            });
            // The nearest reachable node whose list has room, or else whose list has a
            // neighbour that something else links to too (replaced: the one farthest from it).
            let mut chosen = None;
            for c in &near {
                let (v, nb) = (c.id as usize, layer.list(c.id as usize));
                if nb.len() < m0 {
                    chosen = Some((v, nb.len(), None));
                    break;
                }
                let far = (0..nb.len())
                    .filter(|&i| indeg[nb[i] as usize] >= 2)
                    .map(|i| (vs.between(c.id, nb[i]), i))
                    .max_by(|a, b| a.0.total_cmp(&b.0));
                if let Some((_, i)) = far {
                    chosen = Some((v, i, Some(nb[i])));
                    break;
                }
            }
            let Some((v, slot, dropped)) = chosen else {
                continue;
            };
            match dropped {
                Some(x) => indeg[x as usize] -= 1,
                None => g.l0[v * w] = slot as u32 + 1,
            }
            g.l0[v * w + 1 + slot] = q;
            indeg[u] += 1;
            linked += 1;
            Layer0::new(&g.l0, m0, entry).mark_reachable(u, &mut reach);
        }
    }
    linked
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Re-scoring a beam a chunk at a time selects what re-scoring all of it and selecting
    /// in exact order does, when the estimates order the beam as the exact distances do —
    /// whether the links fill up in the first chunk or take every chunk (m = 400).
    #[test]
    fn chunked_rescoring_selects_as_a_whole_exact_selection() {
        let (dim, n) = (16, 400);
        let data = super::super::tests::data(n, dim, 7);
        for metric in [Metric::L2, Metric::Cosine] {
            let vs = VectorSet {
                data: &data,
                dim,
                kernels: Kernels::best(),
                metric,
            };
            let exact = |id: u32| vs.between(0, id);
            let all: Vec<Cand> = (1..n as u32).map(|id| Cand { d: exact(id), id }).collect();
            let mut sorted = all.clone();
            sorted.sort_unstable();
            for m in [4, 16, 400] {
                let want = select(&sorted, m, &vs);
                // The beam arrives in no order (here: reversed, then interleaved).
                let mut found: Vec<Cand> = all.iter().rev().copied().collect();
                found.rotate_left(n / 3);
                let got = select_rescored(&mut found, m, &vs, &exact);
                assert_eq!(got, want, "{metric:?} m {m}");
                assert!(want.len() > 1);
            }
            // Noisy estimates: still distinct candidates, at most m of them, each kept one
            // nearer to the base than to every link kept before it in exact order.
            let mut noisy: Vec<Cand> = all
                .iter()
                .map(|c| Cand {
                    d: c.d * (1.0 + 0.3 * ((c.id * 37 % 11) as f32 / 11.0 - 0.5)),
                    id: c.id,
                })
                .collect();
            let got = select_rescored(&mut noisy, 16, &vs, &exact);
            let mut ids = got.clone();
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len(), got.len());
            assert!(!got.is_empty() && got.len() <= 16 && !got.contains(&0));
            for (i, &a) in got.iter().enumerate() {
                for &b in &got[..i] {
                    assert!(vs.between(a, b) > exact(a), "{metric:?} {a} after {b}");
                }
            }
        }
    }
}
