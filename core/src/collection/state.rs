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
use crate::index::hnsw::graph::Graph;
use crate::index::hnsw::visited::VisitedPool;
use crate::index::hnsw::{search as hnsw_search, HnswParams};
use crate::index::{flat, topk::TopK};
use crate::storage::segment::reader::SegmentReader;
use crate::storage::wal::record::WalOp;
use crate::types::{CollectionConfig, IndexConfig};

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
    config: CollectionConfig,
    kernels: &'static Kernels,
}

/// Segments with at most this many rows are scanned exactly even when they have a graph:
/// below it a scan is as fast as a graph search and always exact.
pub(crate) const FLAT_SCAN_MAX_ROWS: usize = 1024;

/// HNSW build parameters of a collection config, if it uses HNSW.
pub(crate) fn hnsw_params(config: &CollectionConfig) -> Option<HnswParams> {
    match config.index {
        IndexConfig::Hnsw {
            m,
            ef_construction,
            seed,
            ..
        } => Some(HnswParams {
            m,
            ef_construction,
            seed,
        }),
        _ => None,
    }
}

impl State {
    pub(crate) fn new(
        config: &CollectionConfig,
        kernels: &'static Kernels,
        sealed: Vec<SealedSegment>,
    ) -> State {
        State {
            appendable: AppendableSegment::new(config.dim, hnsw_params(config)),
            sealed,
            config: config.clone(),
            kernels,
        }
    }

    /// Start a fresh appendable segment (after a seal).
    pub(crate) fn reset_appendable(&mut self) {
        self.appendable = AppendableSegment::new(self.config.dim, hnsw_params(&self.config));
    }

    /// Upsert rows (vectors as stored): replace older rows, append, link into the graph.
    pub(crate) fn upsert_rows(
        &mut self,
        ids: &[u64],
        vectors: &[f32],
        payloads: impl Iterator<Item = Payload>,
    ) {
        let dim = self.config.dim;
        for ((i, id), p) in ids.iter().enumerate().zip(payloads) {
            self.remove(*id);
            self.appendable
                .push(*id, &vectors[i * dim..(i + 1) * dim], p);
        }
        self.appendable
            .index_new_rows(self.kernels, self.config.metric);
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
                let ids: Vec<u64> = points.iter().map(|p| p.id).collect();
                let vectors: Vec<f32> = points
                    .iter()
                    .flat_map(|p| p.vector.iter().copied())
                    .collect();
                self.upsert_rows(&ids, &vectors, points.into_iter().map(|p| p.payload));
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

    /// Top-k over every segment, deletes respected: exact scans for flat collections and
    /// small segments, graph search (beam `ef`) otherwise.
    pub(crate) fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        pool: &VisitedPool,
    ) -> Vec<(u64, f32)> {
        let (kernels, metric, dim) = (self.kernels, self.config.metric, self.config.dim);
        let mut top = TopK::new(k);
        let graph_search = |g: &dyn Graph,
                            vectors: &[f32],
                            del: &Bitset,
                            ids: &dyn Fn(usize) -> u64,
                            top: &mut TopK| {
            let dist = |n: u32| {
                let n = n as usize;
                kernels.distance(metric, query, &vectors[n * dim..(n + 1) * dim])
            };
            let prefetch = |n: u32| {
                let n = n as usize;
                crate::distance::prefetch(&vectors[n * dim..(n + 1) * dim]);
            };
            let mut visited = pool.take(g.len());
            let found = hnsw_search::with_scratch(|scratch| {
                hnsw_search::search(
                    g,
                    &dist,
                    &prefetch,
                    k,
                    ef,
                    &|n| !del.get(n as usize),
                    &mut visited,
                    scratch,
                )
            });
            pool.give(visited);
            for c in found {
                top.push(c.d, ids(c.id as usize));
            }
        };
        for s in &self.sealed {
            let ids = s.reader.ids();
            let del = &s.deleted;
            match s.reader.graph() {
                Some(g) if s.reader.rows() > FLAT_SCAN_MAX_ROWS => {
                    graph_search(&g, s.reader.vectors(), del, &|r| ids[r], &mut top);
                }
                _ => flat::scan(
                    kernels,
                    metric,
                    dim,
                    s.reader.vectors(),
                    query,
                    |r| !del.get(r),
                    |r| ids[r],
                    &mut top,
                ),
            }
        }
        let a = &self.appendable;
        match &a.graph {
            Some(g) if a.rows() > FLAT_SCAN_MAX_ROWS => {
                graph_search(g, &a.vectors, &a.deleted, &|r| a.ids[r], &mut top);
            }
            _ => flat::scan(
                kernels,
                metric,
                dim,
                &a.vectors,
                query,
                |r| !a.deleted.get(r),
                |r| a.ids[r],
                &mut top,
            ),
        }
        top.into_sorted()
    }

    /// Exact top-k for a block of queries at once (see `flat::scan_block`).
    pub(crate) fn search_flat_block(&self, queries: &[&[f32]], k: usize) -> Vec<Vec<(u64, f32)>> {
        let (kernels, config) = (self.kernels, &self.config);
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
