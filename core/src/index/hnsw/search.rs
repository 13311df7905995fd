//! Greedy descent through the upper layers, then a best-first beam search on the layer
//! below. Rows rejected by `allow` (deleted, or filtered out) are never returned. With
//! [`Expand::Through`] they are traversed like any node (they keep the graph connected);
//! with [`Expand::TwoHop`] (for low pass rates, in the spirit of ACORN, Patel et al. 2024)
//! a rejected neighbour is not scored at all: its own allowed neighbours are taken in its
//! place, so the search walks the subgraph of allowed nodes, kept connected through
//! two-hop links, and spends its distance computations on nodes it may return.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use super::graph::Graph;
use super::visited::Visited;

/// A candidate: distance to the query and node.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cand {
    pub d: f32,
    pub id: u32,
}

impl PartialEq for Cand {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Cand {}
impl PartialOrd for Cand {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Cand {
    fn cmp(&self, o: &Self) -> Ordering {
        self.d.total_cmp(&o.d).then(self.id.cmp(&o.id))
    }
}

/// How a beam search treats neighbours rejected by `allow`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expand {
    /// Score and traverse them (never return them).
    Through,
    /// Replace them by their allowed neighbours (two-hop), never scoring them.
    TwoHop,
}

/// Whether a two-hop search whose beam is already full still walks through rejected
/// neighbours when their two-hop neighbourhood holds nothing new (the behaviour before
/// 2026-12; `TROVEDB_TWO_HOP_ESCAPE_FULL=1` with feature `bench` brings it back to measure).
/// Off: a full beam spends its distances on passing nodes only (README "Filtered HNSW search").
fn escape_when_full() -> bool {
    #[cfg(feature = "bench")]
    {
        static V: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        crate::index::bench_knob(&V, "TROVEDB_TWO_HOP_ESCAPE_FULL", 0) == 1
    }
    #[cfg(not(feature = "bench"))]
    false
}

/// Distances to the query of one search (smaller is nearer). A closure `Fn(u32) -> f32`
/// is one; a scorer that computes several nodes faster together (the code estimates of a
/// quantised segment) implements [`Dist::many`] too.
pub(crate) trait Dist {
    /// The distance of node `n`.
    fn one(&self, n: u32) -> f32;

    /// `out[i]` = `self.one(ns[i])`; `out` is at least as long as `ns`.
    fn many(&self, ns: &[u32], out: &mut [f32]) {
        for (o, &n) in out.iter_mut().zip(ns) {
            *o = self.one(n);
        }
    }
}

impl<F: Fn(u32) -> f32> Dist for F {
    #[inline]
    fn one(&self, n: u32) -> f32 {
        self(n)
    }
}

/// Scratch buffers reused by one search.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    pub nbrs: Vec<u32>,
    pub hop2: Vec<u32>,
    pub expanded: Vec<u32>,
    pub used: Vec<u32>,
    pub candidates: BinaryHeap<Reverse<Cand>>,
    pub results: BinaryHeap<Cand>,
    /// The distances of `nbrs`, scored together.
    pub dists: Vec<f32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// Run `f` with this thread's reusable search buffers (no allocation per search once warm).
/// `f` must not start another search on the same thread (it would find the buffers taken
/// and fall back to fresh ones).
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut s) => f(&mut s),
        Err(_) => f(&mut Scratch::default()),
    })
}

/// Walk down from the entry to `stop_level + 1`, always moving to a nearer neighbour.
pub(crate) fn greedy_descent<G: Graph + ?Sized>(
    g: &G,
    dist: &impl Dist,
    from: (u32, usize),
    stop_level: usize,
    nbrs: &mut Vec<u32>,
) -> Cand {
    let (mut cur, top) = from;
    let mut cur_d = dist.one(cur);
    for level in (stop_level + 1..=top).rev() {
        loop {
            let mut moved = false;
            g.neighbors(cur, level, nbrs);
            for &n in nbrs.iter() {
                let d = dist.one(n);
                if d < cur_d {
                    cur_d = d;
                    cur = n;
                    moved = true;
                }
            }
            if !moved {
                break;
            }
        }
    }
    Cand { d: cur_d, id: cur }
}

/// Beam search on `level` from `entries`; returns up to `ef` allowed nodes, nearest first.
#[allow(
    clippy::too_many_arguments,
    reason = "hot loop; grouping would add indirection"
)]
pub(crate) fn search_layer<G: Graph + ?Sized>(
    g: &G,
    dist: &impl Dist,
    prefetch: &impl Fn(u32),
    entries: &[Cand],
    ef: usize,
    level: usize,
    allow: &impl Fn(u32) -> bool,
    expand: Expand,
    visited: &mut Visited,
    s: &mut Scratch,
) -> Vec<Cand> {
    let mut out = search_layer_unordered(
        g, dist, prefetch, entries, ef, level, allow, expand, visited, s,
    );
    out.sort_unstable();
    out
}

/// [`search_layer`] returning the nodes in no particular order: a graph build that re-scores
/// them exactly sorts them on those distances instead (measured: the sort of the beam's
/// result on its estimates was 2.3% of a build's CPU on text-minilm-dev).
// PERF: one loop over a min-heap of candidates and a max-heap of results, both reused
// through `Scratch`; the visited set is a bit per node from a pool, cleared word by word.
#[allow(
    clippy::too_many_arguments,
    reason = "hot loop; grouping would add indirection"
)]
pub(crate) fn search_layer_unordered<G: Graph + ?Sized>(
    g: &G,
    dist: &impl Dist,
    prefetch: &impl Fn(u32),
    entries: &[Cand],
    ef: usize,
    level: usize,
    allow: &impl Fn(u32) -> bool,
    expand: Expand,
    visited: &mut Visited,
    s: &mut Scratch,
) -> Vec<Cand> {
    s.candidates.clear();
    s.results.clear();
    for e in entries {
        if visited.insert(e.id as usize) {
            s.candidates.push(Reverse(*e));
            if allow(e.id) {
                s.results.push(*e);
            }
        }
    }
    while s.results.len() > ef {
        s.results.pop();
    }
    while let Some(Reverse(c)) = s.candidates.pop() {
        if s.results.len() >= ef && s.results.peek().is_some_and(|w| c.d > w.d) {
            break;
        }
        g.neighbors(c.id, level, &mut s.nbrs);
        if expand == Expand::TwoHop {
            // Allowed neighbours as they are, then each rejected one replaced by its allowed
            // neighbours, up to twice the list length.
            let cap = 2 * s.nbrs.len().max(1);
            s.expanded.clear();
            s.expanded
                .extend(s.nbrs.iter().copied().filter(|n| allow(*n)));
            s.used.clear();
            for i in 0..s.nbrs.len() {
                let n = s.nbrs[i];
                if s.expanded.len() >= cap {
                    break;
                }
                if !allow(n) && !visited.contains(n as usize) {
                    s.used.push(n);
                    g.neighbors(n, level, &mut s.hop2);
                    for &m in &s.hop2 {
                        if s.expanded.len() >= cap {
                            break;
                        }
                        if allow(m) {
                            s.expanded.push(m);
                        }
                    }
                }
            }
            // Nothing new allowed within two hops (a region without passing points, e.g. a
            // filter correlated with the data) while the beam still wants passing nodes: walk
            // through the rejected neighbours as `Through` does, so the search can leave the
            // region. Once the beam is full, a spent neighbourhood is not a reason to score
            // rejected nodes: the beam's other candidates carry on (measured at 1M x 128, 5%
            // filter: ef 96 went from 316 to 1,607 QPS, recall 0.994 -> 0.978; at equal recall
            // faster from 0.97 up, about equal below; `escape_when_full`).
            let fresh = s.expanded.iter().any(|m| !visited.contains(*m as usize));
            if fresh || (s.results.len() >= ef && !escape_when_full()) {
                for &n in &s.used {
                    visited.insert(n as usize);
                }
                std::mem::swap(&mut s.nbrs, &mut s.expanded);
            }
        }
        // PERF: keep only unvisited neighbours and prefetch their vectors first, so the
        // loads overlap instead of stalling one distance at a time.
        s.nbrs.retain(|n| visited.insert(*n as usize));
        for &n in &s.nbrs {
            prefetch(n);
        }
        // The candidate expanded next unless a neighbour scored now is nearer: start loading
        // its list while these distances are computed. Measured on 200k x 128 (annbench, five
        // alternated pairs, 2 threads): graph insertion 1-14% faster (about 8%); no change on
        // the cache-resident 20k x 384. Search: on the Python default path (benches/
        // defaultpath.py, 200k x 128, two alternated pairs) single-thread QPS at recall@10
        // 0.95 went from 6,488 / 6,864 to 8,737 / 9,134 (hnswlib in the same runs 3,900-4,063
        // in three of the four).
        if level == 0 {
            if let Some(Reverse(next)) = s.candidates.peek() {
                g.prefetch_l0(next.id);
            }
        }
        s.dists.resize(s.nbrs.len(), 0.0);
        dist.many(&s.nbrs, &mut s.dists);
        for i in 0..s.nbrs.len() {
            let (n, d) = (s.nbrs[i], s.dists[i]);
            let full = s.results.len() >= ef;
            if !full || s.results.peek().is_some_and(|w| d < w.d) {
                s.candidates.push(Reverse(Cand { d, id: n }));
                if allow(n) {
                    s.results.push(Cand { d, id: n });
                    if s.results.len() > ef {
                        s.results.pop();
                    }
                }
            }
        }
    }
    s.results.drain().collect()
}

/// The `k` nearest allowed nodes to the query behind `dist`, searching layer 0 with
/// a beam of `max(ef, k)`.
#[allow(
    clippy::too_many_arguments,
    reason = "hot path; grouping would add indirection"
)]
pub(crate) fn search<G: Graph + ?Sized>(
    g: &G,
    dist: &impl Dist,
    prefetch: &impl Fn(u32),
    k: usize,
    ef: usize,
    allow: &impl Fn(u32) -> bool,
    expand: Expand,
    visited: &mut Visited,
    s: &mut Scratch,
) -> Vec<Cand> {
    let Some(entry) = g.entry() else {
        return Vec::new();
    };
    let start = greedy_descent(g, dist, entry, 0, &mut s.nbrs);
    // The entry point starts layer 0 too: a written graph has every node reachable from it
    // (`build::link_unreachable`), not necessarily from where the descent ended, so a beam
    // as wide as the graph finds every row. It costs one distance; being far from the query
    // as a rule, it is expanded only when the beam runs out of nearer candidates.
    // (When the descent ended at the entry, `start` already is it, distance and all.)
    let both = start.id != entry.0;
    let second = if both {
        Cand {
            d: dist.one(entry.0),
            id: entry.0,
        }
    } else {
        start
    };
    let first = [start, second];
    let entries = if both { &first[..] } else { &first[..1] };
    let mut found = search_layer(
        g,
        dist,
        prefetch,
        entries,
        ef.max(k),
        0,
        allow,
        expand,
        visited,
        s,
    );
    found.truncate(k);
    found
}
