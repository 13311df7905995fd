//! Building a graph: nodes are inserted concurrently (rayon), each neighbour list behind
//! its own lock; the entry point behind a read-write lock. With one thread the result is
//! deterministic for a seed (levels are a pure function of (seed, node)).

use std::cell::RefCell;

use parking_lot::{Mutex, RwLock};
use rayon::prelude::*;

use super::graph::{FrozenGraph, Graph};
use super::search::{greedy_descent, search_layer, Cand, Scratch};
use super::visited::VisitedPool;
use super::HnswParams;
use crate::distance::Kernels;
use crate::types::Metric;

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

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// A graph under construction (also the appendable segment's live graph).
#[derive(Debug)]
pub(crate) struct GraphBuilder {
    params: HnswParams,
    links: Vec<Vec<Mutex<Vec<u32>>>>,
    entry: RwLock<Option<(u32, usize)>>,
    pool: VisitedPool,
}

/// Nodes inserted one by one before parallel insertion starts, so that concurrent inserts
/// do not all race for a near-empty graph.
const SEQUENTIAL_PREFIX: usize = 256;

impl GraphBuilder {
    pub(crate) fn new(params: HnswParams) -> GraphBuilder {
        GraphBuilder {
            params,
            links: Vec::new(),
            entry: RwLock::new(None),
            pool: VisitedPool::default(),
        }
    }

    /// Nodes allocated so far.
    pub(crate) fn len_nodes(&self) -> usize {
        self.links.len()
    }

    /// Allocate link lists for nodes `len()..len()+count` (levels drawn from the seed).
    pub(crate) fn add_nodes(&mut self, count: usize) {
        let start = self.links.len();
        for node in start..start + count {
            let level = self.params.level_of(node as u64);
            self.links
                .push((0..=level).map(|_| Mutex::new(Vec::new())).collect());
        }
    }

    /// Build a graph over every row of `vs`, in parallel on the current rayon pool.
    pub(crate) fn build(params: HnswParams, vs: &VectorSet<'_>) -> GraphBuilder {
        let n = vs.data.len() / vs.dim;
        let mut b = GraphBuilder::new(params);
        b.add_nodes(n);
        b.insert_range(0, n, vs);
        b
    }

    /// Insert nodes `from..to` (already allocated) using every rayon thread.
    pub(crate) fn insert_range(&self, from: usize, to: usize, vs: &VectorSet<'_>) {
        let seq_end = if rayon::current_num_threads() == 1 {
            to
        } else {
            to.min(from.max(SEQUENTIAL_PREFIX))
        };
        for i in from..seq_end {
            self.insert(i as u32, vs);
        }
        (seq_end..to)
            .into_par_iter()
            .for_each(|i| self.insert(i as u32, vs));
    }

    /// Insert one allocated node.
    pub(crate) fn insert(&self, q: u32, vs: &VectorSet<'_>) {
        let level = self.links[q as usize].len() - 1;
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
        let dist = |n: u32| vs.kernels.distance(vs.metric, vq, vs.row(n));
        let mut visited = self.pool.take(self.links.len());
        SCRATCH.with(|s| {
            let s = &mut *s.borrow_mut();
            let start = greedy_descent(self, &dist, (ep, top), level, &mut s.nbrs);
            let mut entries = vec![start];
            for lev in (0..=level.min(top)).rev() {
                visited.reset(self.links.len());
                let found = search_layer(
                    self,
                    &dist,
                    &entries,
                    self.params.ef_construction,
                    lev,
                    &|n| n != q,
                    &mut visited,
                    s,
                );
                let chosen = select(&found, self.params.max_links(lev), vs);
                self.links[q as usize][lev].lock().clone_from(&chosen);
                for n in chosen {
                    self.connect(n, q, lev, vs);
                }
                if !found.is_empty() {
                    entries = found;
                }
            }
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
        let Some(slot) = self.links[n as usize].get(lev) else {
            return;
        };
        let mut list = slot.lock();
        if list.contains(&q) {
            return;
        }
        list.push(q);
        let max = self.params.max_links(lev);
        if list.len() > max {
            let mut cands: Vec<Cand> = list
                .iter()
                .map(|&x| Cand {
                    d: vs.between(n, x),
                    id: x,
                })
                .collect();
            cands.sort_unstable();
            *list = select(&cands, max, vs);
        }
    }

    /// Snapshot into the fixed-width layout.
    pub(crate) fn freeze(&self) -> FrozenGraph {
        let links: Vec<Vec<Vec<u32>>> = self
            .links
            .iter()
            .map(|levels| levels.iter().map(|l| l.lock().clone()).collect())
            .collect();
        FrozenGraph::from_links(&self.params, *self.entry.read(), &links)
    }
}

/// The neighbour-selection heuristic: walk candidates nearest first and keep one only if it
/// is nearer to the base than to every neighbour kept so far (diversity); then fill the
/// remaining slots with the pruned candidates, nearest first.
fn select(cands: &[Cand], m: usize, vs: &VectorSet<'_>) -> Vec<u32> {
    let mut kept: Vec<Cand> = Vec::with_capacity(m);
    let mut pruned: Vec<u32> = Vec::new();
    for c in cands {
        if kept.len() >= m {
            break;
        }
        if kept.iter().all(|k| vs.between(c.id, k.id) > c.d) {
            kept.push(*c);
        } else {
            pruned.push(c.id);
        }
    }
    let mut out: Vec<u32> = kept.iter().map(|c| c.id).collect();
    for p in pruned {
        if out.len() >= m {
            break;
        }
        out.push(p);
    }
    out
}

impl Graph for GraphBuilder {
    fn entry(&self) -> Option<(u32, usize)> {
        *self.entry.read()
    }

    fn neighbors(&self, node: u32, level: usize, out: &mut Vec<u32>) {
        out.clear();
        if let Some(l) = self.links.get(node as usize).and_then(|ls| ls.get(level)) {
            out.extend_from_slice(&l.lock());
        }
    }

    fn len(&self) -> usize {
        self.links.len()
    }
}
