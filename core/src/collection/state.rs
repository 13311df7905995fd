//! The in-memory view of a collection: the sealed segments with their deletion bitmaps,
//! and the appendable segment. Writers mutate it under the collection's write lock;
//! searches read it under a shared lock.
//!
//! INVARIANT: every id has at most one live row across all segments.

use std::sync::{Arc, OnceLock};

use crate::distance::Kernels;
use crate::error::{Error, Result};
use crate::filter::bitset::Bitset;
use crate::filter::cache::{FilterCache, KeyedFilter};
use crate::filter::expr::{Filter, IdMatch};
use crate::filter::key::str_id;
use crate::filter::payload_index::{IndexedFields, PayloadIndex, RowLookup};
use crate::filter::value::Payload;
use crate::index::hnsw::graph::Graph;
use crate::index::hnsw::kind::{graph_prefers_scan, search_graph, OUT_OF_CACHE_ROW_COST};
use crate::index::hnsw::visited::VisitedPool;
use crate::index::hnsw::HnswParams;
use crate::index::quant::{self, QuantView, Shortlist};
use crate::index::registry::IndexView;
use crate::index::{flat, topk::TopK, Query, RowSource, SegmentRows};
pub(crate) use crate::index::{Knobs, FLAT_SCAN_MAX_ROWS};
use crate::storage::segment::reader::SegmentReader;
use crate::storage::wal::record::WalOp;
use crate::types::{CollectionConfig, IndexConfig};

use super::appendable::AppendableSegment;
use super::segment::{Segment, SegmentAt};
use super::text::{match_rows, TextIndexing};
use crate::index::text::TextSource;

/// A sealed segment as the state holds it: the shared, immutable part and the deletions.
/// Cloning is two `Arc` clones: a search takes a snapshot of every sealed segment this way
/// and runs on it without the state lock. A writer changes `deleted` copy-on-write
/// (`Arc::make_mut`), so a snapshot keeps the deletions it was taken with.
#[derive(Debug, Clone)]
pub(crate) struct SealedSegment {
    pub data: Arc<SealedData>,
    pub deleted: Arc<Bitset>,
    /// Deletions changed since the last checkpoint (a new deletion file is due).
    pub dirty: bool,
}

/// The immutable part of a sealed segment.
#[derive(Debug)]
pub(crate) struct SealedData {
    pub id: u64,
    pub reader: Arc<SegmentReader>,
    /// Payload index, built from the segment's payloads on the first filtered query.
    pub payload_index: OnceLock<PayloadIndex>,
    /// Recent filter results (before deletions).
    pub filter_cache: FilterCache,
    /// The payload fields the collection indexes.
    only: IndexedFields,
}

impl std::ops::Deref for SealedSegment {
    type Target = SealedData;
    fn deref(&self) -> &SealedData {
        &self.data
    }
}

impl SealedSegment {
    pub(crate) fn new(
        id: u64,
        reader: Arc<SegmentReader>,
        deleted: Bitset,
        only: IndexedFields,
    ) -> SealedSegment {
        SealedSegment::with_index(id, reader, deleted, only, OnceLock::new())
    }

    fn with_index(
        id: u64,
        reader: Arc<SegmentReader>,
        deleted: Bitset,
        only: IndexedFields,
        payload_index: OnceLock<PayloadIndex>,
    ) -> SealedSegment {
        SealedSegment {
            data: Arc::new(SealedData {
                id,
                reader,
                payload_index,
                filter_cache: FilterCache::default(),
                only,
            }),
            deleted: Arc::new(deleted),
            dirty: false,
        }
    }

    /// A just-written segment: no deletions, and the payload index built while writing it
    /// (so its first filtered query need not read it back).
    pub(crate) fn fresh(
        id: u64,
        reader: SegmentReader,
        index: PayloadIndex,
        only: IndexedFields,
    ) -> SealedSegment {
        let rows = reader.rows();
        let built = OnceLock::new();
        // A new OnceLock is empty, so this cannot fail.
        let _ = built.set(index);
        SealedSegment::with_index(id, Arc::new(reader), Bitset::new(rows), only, built)
    }

    /// Mark `row` deleted (copy-on-write if a search snapshot shares the bitset).
    pub(crate) fn delete_row(&mut self, row: usize) {
        Arc::make_mut(&mut self.deleted).insert(row);
        self.dirty = true;
    }

    /// Live rows matching `filter`.
    pub(crate) fn passing(&self, filter: &KeyedFilter<'_>) -> Result<Bitset> {
        let all = self
            .filter_cache
            .get_or_eval(filter, self.reader.rows(), || {
                let ix = self.payload_index()?;
                if ix.covers(filter.filter) {
                    let look = SealedLookup {
                        seg: self,
                        err: std::cell::RefCell::new(None),
                    };
                    let b = ix.eval_with(filter.filter, &look);
                    return match look.err.into_inner() {
                        Some(e) => Err(e),
                        None => Ok(b),
                    };
                }
                // A field outside `indexed_fields`: read every payload of the segment.
                let mut b = Bitset::new(self.reader.rows());
                for row in 0..self.reader.rows() {
                    let p = self.reader.payload(row)?;
                    if filter.filter.matches_point(self.reader.ids()[row], &p) {
                        b.insert(row);
                    }
                }
                Ok(b)
            })?;
        let mut b = (*all).clone();
        b.and_not(&self.deleted);
        Ok(b)
    }

    pub(crate) fn live_count(&self) -> usize {
        self.reader.rows() - self.deleted.count_ones()
    }
}

impl SealedData {
    /// The payload index: read from the segment file on first use, or (format v1 files)
    /// built by decoding every payload once.
    pub(crate) fn payload_index(&self) -> Result<&PayloadIndex> {
        if let Some(ix) = self.payload_index.get() {
            return Ok(ix);
        }
        let ix = if let Some(ix) = self.reader.persisted_payload_index() {
            let mut ix = ix?;
            ix.set_only(self.only.clone());
            ix
        } else {
            let mut ix = PayloadIndex::new(self.only.clone());
            for row in 0..self.reader.rows() {
                ix.add(&self.reader.payload(row)?);
            }
            ix
        };
        // Two threads may build it at once; either result is the same.
        let _ = self.payload_index.set(ix);
        Ok(self.payload_index.get().expect("set just above"))
    }
}

/// One segment as search sees it.
struct SegmentView<'a> {
    /// Row ids, looked up once per segment (hits are keyed by them).
    ids: &'a [u64],
    vectors: &'a [f32],
    deleted: &'a Bitset,
    /// Passing and live rows, when a filter is given.
    allowed: Option<&'a Bitset>,
    index: Ann<'a>,
    /// Quantised vectors (sealed segments of quantised collections).
    quant: Option<QuantView<'a>>,
    /// The mapped file of a sealed segment's rows.
    source: Option<&'a dyn RowSource>,
}

impl<'a> SegmentView<'a> {
    fn of(seg: Segment<'a>, allowed: Option<&'a Bitset>) -> Self {
        let index = match seg {
            Segment::Appendable(a) => a.graph.as_ref().map_or(Ann::None, |g| Ann::Live(g)),
            Segment::Frozen(f) => f.seg.graph.as_ref().map_or(Ann::None, |g| Ann::Live(g)),
            Segment::Sealed(s) => Ann::Sealed(s.reader.index()),
        };
        SegmentView {
            ids: seg.ids(),
            vectors: seg.vectors(),
            deleted: seg.dead(),
            allowed,
            index,
            quant: match seg {
                Segment::Sealed(s) => s.reader.quant(),
                _ => None,
            },
            source: match seg {
                Segment::Sealed(s) => Some(&*s.reader as &dyn RowSource),
                _ => None,
            },
        }
    }

    fn id(&self, row: usize) -> u64 {
        self.ids[row]
    }
}

/// The approximate index of a segment, if it has one.
#[derive(Clone, Copy)]
enum Ann<'a> {
    None,
    /// A sealed segment's index (any kind).
    Sealed(IndexView<'a>),
    /// The live HNSW graph of an in-memory segment.
    Live(&'a dyn Graph),
}

/// An appendable segment being sealed in the background: still searched, never written to
/// again; deletions after the freeze go to `dead` (which starts as its own deletions).
#[derive(Debug)]
pub(crate) struct Frozen {
    pub seg: Arc<AppendableSegment>,
    pub dead: Bitset,
    /// Last log record it contains (the checkpoint its publication establishes).
    pub lsn: u64,
}

impl Frozen {
    pub(crate) fn live_count(&self) -> usize {
        self.seg.rows() - self.dead.count_ones()
    }
}

/// Where the live row of an id is: a segment and a row in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Location {
    pub seg: SegmentAt,
    pub row: usize,
}

#[derive(Debug)]
pub(crate) struct State {
    /// Shared with a seal in progress (which reads it without the state lock).
    pub appendable: Arc<AppendableSegment>,
    /// The previous appendable segment while a background seal builds it.
    pub frozen: Option<Frozen>,
    pub sealed: Vec<SealedSegment>,
    config: CollectionConfig,
    kernels: &'static Kernels,
    text: Option<Arc<TextIndexing>>,
}

/// The payload fields a collection indexes (`None`: all).
pub(crate) fn indexed_fields(config: &CollectionConfig) -> IndexedFields {
    config
        .indexed_fields
        .as_ref()
        .map(|f| Arc::new(f.iter().cloned().collect()))
}

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
        let text = config.text.as_ref().map(|t| Arc::new(TextIndexing::new(t)));
        State {
            appendable: Arc::new(AppendableSegment::new(
                config.dim,
                hnsw_params(config),
                indexed_fields(config),
                text.clone(),
            )),
            frozen: None,
            sealed,
            config: config.clone(),
            kernels,
            text,
        }
    }

    /// The text fields and analyzer (shared with every appendable segment).
    pub(crate) fn text_indexing(&self) -> Option<Arc<TextIndexing>> {
        self.text.clone()
    }

    /// Start a fresh appendable segment (after a seal).
    pub(crate) fn reset_appendable(&mut self) {
        self.appendable = Arc::new(self.fresh_appendable());
    }

    fn fresh_appendable(&self) -> AppendableSegment {
        AppendableSegment::new(
            self.config.dim,
            hnsw_params(&self.config),
            indexed_fields(&self.config),
            self.text.clone(),
        )
    }

    /// Upsert rows (vectors as stored): replace older rows, append, link into the graph.
    /// Upsert rows (vectors as stored): replace older rows and append. Returns the graph
    /// nodes still to link with [`State::link`] (which needs only `&self`).
    pub(crate) fn upsert_rows(
        &mut self,
        ids: &[u64],
        vectors: &[f32],
        payloads: impl Iterator<Item = Payload>,
    ) -> std::ops::Range<usize> {
        let dim = self.config.dim;
        for ((i, id), p) in ids.iter().enumerate().zip(payloads) {
            self.remove(*id);
            self.app_mut()
                .push(*id, &vectors[i * dim..(i + 1) * dim], p);
        }
        let (kernels, metric) = (self.kernels, self.config.metric);
        self.app_mut().grow_graph(kernels, metric)
    }

    /// Link appended rows into the appendable graph; searches may run meanwhile.
    pub(crate) fn link(&self, nodes: std::ops::Range<usize>) {
        self.appendable
            .link(nodes, self.kernels, self.config.metric);
    }

    /// The appendable segment, for a writer. Writers are serialised by the collection's
    /// write mutex, and the only other holder of the `Arc` is a seal in progress, which
    /// holds that mutex too; so a writer always has the segment to itself.
    fn app_mut(&mut self) -> &mut AppendableSegment {
        if Arc::get_mut(&mut self.appendable).is_none() {
            // Unreachable by the invariant above; stay correct rather than panic: copy it.
            let old = Arc::clone(&self.appendable);
            let mut copy = self.fresh_appendable();
            // Its own rows only: the copy does not grow on the base (its graph is rebuilt).
            for r in old.base_rows()..old.rows() {
                copy.push(old.ids[r], old.vector(r), old.payloads[r].clone());
                if old.deleted.get(r) {
                    copy.remove(old.ids[r]);
                }
            }
            let nodes = copy.grow_graph(self.kernels, self.config.metric);
            copy.link(nodes, self.kernels, self.config.metric);
            self.appendable = Arc::new(copy);
        }
        let unique = Arc::get_mut(&mut self.appendable);
        unique.unwrap_or_else(|| unreachable!("made unique just above"))
    }

    pub(crate) fn len(&self) -> usize {
        self.segments().map(|(_, s)| s.live_count()).sum()
    }

    /// Every segment, oldest first: the sealed ones in order, the frozen one, the appendable
    /// one.
    pub(crate) fn segments(&self) -> impl DoubleEndedIterator<Item = (SegmentAt, Segment<'_>)> {
        let sealed = self
            .sealed
            .iter()
            .enumerate()
            .map(|(i, s)| (SegmentAt::Sealed(i), Segment::Sealed(s)));
        let frozen = self
            .frozen
            .iter()
            .map(|f| (SegmentAt::Frozen, Segment::Frozen(f)));
        let appendable =
            std::iter::once((SegmentAt::Appendable, Segment::Appendable(&self.appendable)));
        sealed.chain(frozen).chain(appendable)
    }

    /// The segment at `at`, if it (still) exists.
    pub(crate) fn segment(&self, at: SegmentAt) -> Option<Segment<'_>> {
        match at {
            SegmentAt::Sealed(i) => self.sealed.get(i).map(Segment::Sealed),
            SegmentAt::Frozen => self.frozen.as_ref().map(Segment::Frozen),
            SegmentAt::Appendable => Some(Segment::Appendable(&self.appendable)),
        }
    }

    /// Where the live row of `id` is. Newest segment first: that is where a recently
    /// rewritten id lives (older ones hold it deleted, if at all).
    pub(crate) fn locate(&self, id: u64) -> Option<Location> {
        self.segments()
            .rev()
            .find_map(|(seg, s)| s.find_live(id).map(|row| Location { seg, row }))
    }

    /// Delete the live row of `id`; returns whether there was one.
    pub(crate) fn remove(&mut self, id: u64) -> bool {
        let Some(Location { seg, row }) = self.locate(id) else {
            return false;
        };
        // The one place the three states differ: how a row is deleted.
        match seg {
            SegmentAt::Appendable => self.app_mut().remove(id),
            SegmentAt::Frozen => match &mut self.frozen {
                Some(f) => {
                    f.dead.insert(row);
                    true
                }
                None => false,
            },
            SegmentAt::Sealed(i) => {
                self.sealed[i].delete_row(row);
                true
            }
        }
    }

    /// Apply to the sealed segments only what `op` does to them: every id it upserts or
    /// deletes loses its sealed row. A read-only handle uses this to bring a new set of
    /// sealed segments up to records its in-memory segment already holds.
    pub(crate) fn apply_to_sealed(&mut self, op: &WalOp) {
        let ids: Vec<u64> = match op {
            WalOp::Upsert { points, .. } => points.iter().map(|p| p.id).collect(),
            WalOp::Delete { ids } => ids.clone(),
        };
        for id in ids {
            let found = self
                .sealed
                .iter()
                .enumerate()
                .rev()
                .find_map(|(i, s)| Segment::Sealed(s).find_live(id).map(|row| (i, row)));
            if let Some((i, row)) = found {
                self.sealed[i].delete_row(row);
            }
        }
    }

    /// The first half of [`State::apply`]: the rows and deletions of `op`, with the graph
    /// nodes of its upserted rows still to link ([`State::link`], which needs only `&self`,
    /// so searches can run meanwhile).
    pub(crate) fn apply_unlinked(&mut self, op: WalOp) -> std::ops::Range<usize> {
        match op {
            WalOp::Upsert { points, .. } => {
                let ids: Vec<u64> = points.iter().map(|p| p.id).collect();
                let vectors: Vec<f32> = points
                    .iter()
                    .flat_map(|p| p.vector.iter().copied())
                    .collect();
                self.upsert_rows(&ids, &vectors, points.into_iter().map(|p| p.payload))
            }
            WalOp::Delete { ids } => {
                for id in ids {
                    self.remove(id);
                }
                0..0
            }
        }
    }

    /// Apply one logged operation. Used by writers and by WAL replay alike, so that the
    /// state after a crash equals the state before it.
    pub(crate) fn apply(&mut self, op: WalOp) {
        let nodes = self.apply_unlinked(op);
        self.link(nodes);
    }

    /// The vector and payload of `id`.
    pub(crate) fn get(&self, id: u64) -> Result<Option<(Vec<f32>, Payload)>> {
        self.locate(id)
            .map(|loc| self.point_at(loc).map(|(_, v, p)| (v, p)))
            .transpose()
    }

    /// Top-k over every segment, deletes and the filter respected.
    ///
    /// Per segment: without a filter, an exact scan (flat collections, segments of at most
    /// `FLAT_SCAN_MAX_ROWS`) or a graph search with beam `ef`. With a filter, the payload
    /// index gives the passing rows first; when they are few, only they are scanned (exact),
    /// otherwise the graph is searched, traversing rejected rows but returning passing ones.
    /// What searching needs besides the segments.
    pub(crate) fn ctx(&self) -> Ctx {
        Ctx {
            kernels: self.kernels,
            metric: self.config.metric,
            dim: self.config.dim,
            m0: hnsw_params(&self.config).map_or(32, |p| p.m0()),
            llc_bytes: crate::storage::fsutil::last_level_cache_bytes(),
        }
    }

    /// Search the in-memory segments (frozen and appendable) into `top`. The sealed ones
    /// are searched with [`search_sealed`], on a snapshot taken under the same lock.
    pub(crate) fn search_unsealed(
        &self,
        query: &[f32],
        knobs: &Knobs,
        pool: &VisitedPool,
        filter: Option<&KeyedFilter<'_>>,
        top: &mut TopK,
    ) -> Result<()> {
        let ctx = self.ctx();
        let unsealed = || {
            self.segments()
                .filter(|(at, _)| !matches!(at, SegmentAt::Sealed(_)))
                .map(|(_, seg)| seg)
        };
        // In-memory segments hold no codes, so the shortlist stays empty and `rerank` never
        // asks for a segment; it is kept for the day they do.
        let mut short = Shortlist::new(knobs);
        for (i, seg) in unsealed().enumerate() {
            // A segment grown on a sealed one is searched like a filtered one: its graph holds
            // the base's rows too, and the planner scans its own rows when they are few.
            let allowed = match filter {
                Some(f) => Some(seg.passing(f)?),
                None => seg.chain_live(),
            };
            ctx.search_segment(
                &SegmentView::of(seg, allowed.as_ref()),
                query,
                knobs,
                pool,
                top,
                (i, &mut short),
            );
        }
        ctx.rerank(
            short,
            query,
            |i| unsealed().nth(i).map(|seg| SegmentView::of(seg, None)),
            top,
        );
        Ok(())
    }

    /// The sealed segments as they are now (two `Arc` clones each): searches run on this
    /// after releasing the state lock.
    pub(crate) fn sealed_snapshot(&self) -> Vec<SealedSegment> {
        self.sealed.clone()
    }
}

/// Passing rows up to which a filtered search of a quantised segment scans the float rows
/// exactly instead of its codes. Measured on text-minilm-dev in ten 2,000-row sq8 segments
/// (single thread, ef 32, annbench; the codes scanned in blocks by the several-rows kernel,
/// one shortlist for all segments): a 1% filter (~20 rows per segment) answered 142-150k QPS
/// exactly against 66-68k on the codes; 5% (~100 rows) 42-46k on the codes against 37k
/// exactly; 10% (~200 rows) 27-29k against 18-19k. (Before the several-rows kernel and the
/// shared shortlist the codes lost up to ~500 rows per segment, hence the earlier bound 512.)
const QUANT_EXACT_SCAN_MAX_ROWS: usize = 64;

/// How many passing rows ahead a filtered scan prefetches (see `Ctx::search_segment`).
const SCAN_PREFETCH_AHEAD: usize = 8;

/// What searching needs besides the segments (copied out of the state).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ctx {
    kernels: &'static Kernels,
    metric: crate::types::Metric,
    dim: usize,
    /// Layer-0 degree of the collection's HNSW graphs (for the scan-or-graph bound).
    m0: usize,
    /// Size of the last-level cache (for the scan-or-graph bound).
    llc_bytes: usize,
}

/// Search sealed segments (a snapshot; no lock needed) into `top`.
pub(crate) fn search_sealed(
    ctx: Ctx,
    sealed: &[SealedSegment],
    query: &[f32],
    knobs: &Knobs,
    pool: &VisitedPool,
    filter: Option<&KeyedFilter<'_>>,
    top: &mut TopK,
) -> Result<()> {
    let mut short = Shortlist::new(knobs);
    for (i, s) in sealed.iter().enumerate() {
        let allowed = match filter {
            Some(f) => Some(s.passing(f)?),
            None => None,
        };
        ctx.search_segment(
            &SegmentView::of(Segment::Sealed(s), allowed.as_ref()),
            query,
            knobs,
            pool,
            top,
            (i, &mut short),
        );
    }
    ctx.rerank(
        short,
        query,
        |i| {
            sealed
                .get(i)
                .map(|s| SegmentView::of(Segment::Sealed(s), None))
        },
        top,
    );
    Ok(())
}

/// The string key of `id` if it has a live row in one of `sealed` (a search snapshot).
pub(crate) fn sealed_key(sealed: &[SealedSegment], id: u64) -> Result<Option<String>> {
    for s in sealed.iter().rev().map(Segment::Sealed) {
        if let Some(row) = s.find_live(id) {
            return s.key(row);
        }
    }
    Ok(None)
}

/// The payload of `id` if it has a live row in one of `sealed` (a search snapshot).
pub(crate) fn sealed_payload(sealed: &[SealedSegment], id: u64) -> Result<Option<Payload>> {
    for s in sealed.iter().rev().map(Segment::Sealed) {
        if let Some(row) = s.find_live(id) {
            return s.payload(row).map(Some);
        }
    }
    Ok(None)
}

impl Ctx {
    /// The rows of a segment's vectors (for exact distances).
    fn rows_of<'a>(&self, seg: &SegmentView<'a>) -> SegmentRows<'a> {
        SegmentRows {
            vectors: seg.vectors,
            dim: self.dim,
            kernels: self.kernels,
            metric: self.metric,
            source: seg.source,
        }
    }

    /// Re-rank the shortlist of the quantised segments searched exactly into `top`;
    /// `view(i)` is segment number `i` of the search (always there: the numbers come from
    /// the same list).
    fn rerank<'a>(
        &self,
        short: Shortlist,
        query: &[f32],
        view: impl Fn(usize) -> Option<SegmentView<'a>>,
        top: &mut TopK,
    ) {
        for (i, rows) in short.by_segment() {
            let Some(seg) = view(i) else { continue };
            self.rows_of(&seg)
                .rerank(query, &rows, |row, d| top.push(d, seg.id(row as usize)));
        }
    }

    /// Search a sealed segment on its quantised vectors: through its graph, or by a scan of
    /// the codes (flat, or a filter the planner would rather scan), into the shortlist (as
    /// segment `short.0`), which the caller re-ranks exactly once every segment is searched.
    #[allow(clippy::too_many_arguments, reason = "one segment's search state")]
    fn search_quantized(
        &self,
        seg: &SegmentView<'_>,
        qv: &QuantView<'_>,
        rows_view: &SegmentRows<'_>,
        query: &[f32],
        knobs: &Knobs,
        pool: &VisitedPool,
        short: (usize, &mut Shortlist),
    ) {
        let rows = rows_view.rows();
        let passing = seg.allowed.map_or(rows, Bitset::count_ones);
        if passing == 0 {
            return;
        }
        let graph = match seg.index {
            Ann::Sealed(IndexView::Hnsw(g)) => Some(g),
            _ => None,
        };
        // The planner's bound, with the cost of scanning a row of codes.
        let resident = qv.bytes() <= self.llc_bytes;
        let knobs = &Knobs {
            scan_row_cost: if resident { 1.0 } else { OUT_OF_CACHE_ROW_COST },
            ..*knobs
        };
        let graph = graph.filter(|g| {
            seg.allowed.is_none()
                || !graph_prefers_scan(g.m0, passing, rows, knobs.ef, knobs.scan_row_cost)
        });
        let q = Query {
            vector: query,
            knobs,
            passing,
            pool,
        };
        let (i, short) = short;
        match (graph, seg.allowed) {
            (Some(g), _) => {
                let allow_row = |r: usize| match seg.allowed {
                    Some(a) => a.get(r),
                    None => !seg.deleted.get(r),
                };
                quant::search_graph(qv, &g, rows_view, &q, &allow_row, i, short);
            }
            (None, Some(a)) => {
                quant::scan(qv, rows_view, &q, |f| a.ones_in_blocks(f), i, short);
            }
            (None, None) => {
                quant::scan(
                    qv,
                    rows_view,
                    &q,
                    |f| seg.deleted.zeros_in_blocks(rows, f),
                    i,
                    short,
                );
            }
        }
    }

    /// Search one segment: exact distances into `top`; a quantised segment's candidates by
    /// code into the shortlist `short` (as segment `short.0`), re-ranked by the caller.
    fn search_segment(
        &self,
        seg: &SegmentView<'_>,
        query: &[f32],
        knobs: &Knobs,
        pool: &VisitedPool,
        top: &mut TopK,
        short: (usize, &mut Shortlist),
    ) {
        let rows_view = self.rows_of(seg);
        let rows = rows_view.rows();
        // A filter passing few rows of a quantised segment: scanning their float rows exactly
        // is cheaper than preparing the query for the codes, scanning those and re-ranking.
        let few = seg
            .allowed
            .is_some_and(|a| a.count_ones() <= QUANT_EXACT_SCAN_MAX_ROWS);
        if let Some(qv) = seg.quant.filter(|_| rows > FLAT_SCAN_MAX_ROWS && !few) {
            self.search_quantized(seg, &qv, &rows_view, query, knobs, pool, short);
            return;
        }
        if let Some(allowed) = seg.allowed {
            let passing = allowed.count_ones();
            if passing == 0 {
                return;
            }
            // Scanning rows from memory costs more than scanning cached ones.
            let resident = seg.vectors.len() * 4 <= self.llc_bytes;
            let knobs = &Knobs {
                scan_row_cost: if resident { 1.0 } else { OUT_OF_CACHE_ROW_COST },
                ..*knobs
            };
            let scan = rows <= FLAT_SCAN_MAX_ROWS
                || match seg.index {
                    Ann::None => true,
                    Ann::Sealed(view) => view.prefer_scan(passing, rows, knobs),
                    Ann::Live(_) => {
                        graph_prefers_scan(self.m0, passing, rows, knobs.ef, knobs.scan_row_cost)
                    }
                };
            if scan {
                let mut thr = top.threshold();
                // PERF: passing rows are scattered, so the hardware prefetcher cannot guess
                // the next one; asking for the row SCAN_PREFETCH_AHEAD passing rows ahead
                // overlaps its memory latency with the distances in between.
                let dim = self.dim;
                let fetch = |r: usize| {
                    crate::distance::prefetch(&rows_view.vectors[r * dim..(r + 1) * dim]);
                };
                let mut ahead = allowed.iter_ones();
                ahead.by_ref().take(SCAN_PREFETCH_AHEAD).for_each(fetch);
                for r in allowed.iter_ones() {
                    if let Some(n) = ahead.next() {
                        fetch(n);
                    }
                    let d = rows_view.distance(query, r);
                    if d <= thr {
                        top.push(d, seg.id(r));
                        thr = top.threshold();
                    }
                }
                return;
            }
        }
        let allow_row = |r: usize| match seg.allowed {
            Some(a) => a.get(r),
            None => !seg.deleted.get(r),
        };
        let q = Query {
            vector: query,
            knobs,
            passing: seg.allowed.map_or(rows, Bitset::count_ones),
            pool,
        };
        match seg.index {
            Ann::Sealed(view) if rows > FLAT_SCAN_MAX_ROWS && !matches!(view, IndexView::Flat) => {
                view.search(&rows_view, &q, &allow_row, |row, d| {
                    top.push(d, seg.id(row as usize));
                });
            }
            // A live graph is not repaired (`link_unreachable` runs on written graphs), so a
            // row nothing links to is reached by no beam: one as wide as the live rows is a
            // scan instead (exact, and no dearer than a beam that wide).
            Ann::Live(g)
                if rows > FLAT_SCAN_MAX_ROWS
                    && (seg.allowed.is_some()
                        || knobs.ef < rows.saturating_sub(seg.deleted.count_ones())) =>
            {
                search_graph(g, &rows_view, &q, &allow_row, |row, d| {
                    top.push(d, seg.id(row as usize));
                });
            }
            _ => flat::scan(
                self.kernels,
                self.metric,
                self.dim,
                seg.vectors,
                query,
                |r| !seg.deleted.get(r),
                |r| seg.id(r),
                top,
            ),
        }
    }
}

impl State {
    /// Locations of up to `limit` live points matching `filter`, in segment order.
    pub(crate) fn matching(&self, filter: &Filter, limit: usize) -> Result<Vec<Location>> {
        let filter = &KeyedFilter::new(filter);
        let mut out = Vec::new();
        for (at, s) in self.segments() {
            if out.len() >= limit {
                break;
            }
            let b = s.passing(filter)?;
            out.extend(
                b.iter_ones()
                    .map(|row| Location { seg: at, row })
                    .take(limit - out.len()),
            );
        }
        Ok(out)
    }

    /// The id of the row at `loc` (0 if the segment is gone).
    pub(crate) fn id_at(&self, loc: Location) -> u64 {
        self.segment(loc.seg).map_or(0, |s| s.id(loc.row))
    }

    /// The id, vector and payload of the row at `loc`.
    pub(crate) fn point_at(&self, loc: Location) -> Result<(u64, Vec<f32>, Payload)> {
        match self.segment(loc.seg) {
            Some(s) => Ok((
                s.id(loc.row),
                s.vector(loc.row).to_vec(),
                s.payload(loc.row)?,
            )),
            None => Ok((0, Vec::new(), Payload::new())),
        }
    }

    /// Number of live points matching `filter`.
    pub(crate) fn count(&self, filter: &Filter) -> Result<usize> {
        let filter = &KeyedFilter::new(filter);
        let mut n = 0;
        for (_, s) in self.segments() {
            n += s.passing(filter)?.count_ones();
        }
        Ok(n)
    }

    /// Exact top-k for a block of queries at once (see `flat::scan_block`).
    pub(crate) fn search_flat_block(&self, queries: &[&[f32]], k: usize) -> Vec<Vec<(u64, f32)>> {
        let (kernels, config) = (self.kernels, &self.config);
        let mut tops: Vec<TopK> = queries.iter().map(|_| TopK::new(k)).collect();
        for (_, s) in self.segments() {
            let (dead, ids) = (s.dead(), s.ids());
            flat::scan_block(
                kernels,
                config.metric,
                config.dim,
                s.vectors(),
                queries,
                |r| !dead.get(r),
                |r| ids[r],
                &mut tops,
            );
        }
        tops.into_iter().map(TopK::into_sorted).collect()
    }

    /// Exact top-k of every query in `queries` (row-major, prepared) by matrix products
    /// over each segment, re-ranked exactly ([`flat::GemmBatch`]); the few queries the
    /// ranking cannot vouch for are scanned one by one.
    pub(crate) fn search_flat_gemm(&self, queries: &[f32], k: usize) -> Vec<Vec<(u64, f32)>> {
        let (kernels, metric, dim) = (self.kernels, self.config.metric, self.config.dim);
        let nq = queries.len() / dim.max(1);
        let mut tops: Vec<TopK> = (0..nq).map(|_| TopK::new(k)).collect();
        let mut batch = flat::GemmBatch::new(kernels, metric, dim, queries, k);
        for (_, s) in self.segments() {
            let (dead, ids) = (s.dead(), s.ids());
            batch.scan(s.vectors(), |r| !dead.get(r), |r| ids[r], &mut tops);
        }
        for i in batch.unsure(&tops) {
            let mut top = TopK::new(k);
            for (_, s) in self.segments() {
                let (dead, ids) = (s.dead(), s.ids());
                flat::scan(
                    kernels,
                    metric,
                    dim,
                    s.vectors(),
                    &queries[i * dim..(i + 1) * dim],
                    |r| !dead.get(r),
                    |r| ids[r],
                    &mut top,
                );
            }
            tops[i] = top;
        }
        tops.into_iter().map(TopK::into_sorted).collect()
    }

    /// The string key of the live row of `id` (string-id collections), if there is one.
    pub(crate) fn key_of(&self, id: u64) -> Result<Option<String>> {
        match self
            .locate(id)
            .and_then(|loc| Some((self.segment(loc.seg)?, loc.row)))
        {
            Some((s, row)) => s.key(row),
            None => Ok(None),
        }
    }

    /// Up to `limit` live points matching `filter` (every point when `None`) with ids above
    /// `after`, in id order: a page of a scroll. Rows are read segment by segment in id
    /// order, at most `limit` from each, and the smallest ids of the union kept.
    pub(crate) fn page(
        &self,
        filter: Option<&Filter>,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Location>> {
        let keyed = filter.map(KeyedFilter::new);
        let mut found: Vec<(u64, Location)> = Vec::new();
        for (at, s) in self.segments() {
            let pass = match &keyed {
                Some(f) => Some(s.passing(f)?),
                None => None,
            };
            let dead = s.dead();
            found.extend(
                s.rows_by_id(after)
                    .filter(|&(_, row)| match &pass {
                        Some(p) => p.get(row),
                        None => !dead.get(row),
                    })
                    .take(limit)
                    .map(|(id, row)| (id, Location { seg: at, row })),
            );
        }
        found.sort_unstable_by_key(|(id, _)| *id);
        found.truncate(limit);
        Ok(found.into_iter().map(|(_, loc)| loc).collect())
    }

    /// The payload of the live row of `id` (for search results).
    pub(crate) fn payload_of(&self, id: u64) -> Result<Payload> {
        match self
            .locate(id)
            .and_then(|loc| Some((self.segment(loc.seg)?, loc.row)))
        {
            Some((s, row)) => s.payload(row),
            None => Ok(Payload::new()),
        }
    }
}

/// `$match` and `$id` for the payload index of a sealed segment; the first damage found is
/// kept in `err` (the lookups return what they could read).
struct SealedLookup<'a> {
    seg: &'a SealedSegment,
    err: std::cell::RefCell<Option<Error>>,
}

impl RowLookup for SealedLookup<'_> {
    fn text(&self, field: &str, terms: &[String]) -> Bitset {
        let r = &self.seg.reader;
        let src = r.text(field).map(TextSource::Sealed);
        match_rows(src, terms, r.rows(), Some(r.path()), &self.err)
    }

    fn ids(&self, m: &IdMatch) -> Bitset {
        let r = &self.seg.reader;
        let mut b = Bitset::new(r.rows());
        for id in m.int_ids() {
            if let Some(row) = r.find(*id) {
                b.insert(row);
            }
        }
        for k in m.str_ids() {
            let Some(row) = r.find(str_id(k)) else {
                continue;
            };
            match r.payload_key(row) {
                Ok(Some(s)) if s == k => {
                    b.insert(row);
                }
                Ok(_) => {}
                Err(e) => {
                    self.err.borrow_mut().get_or_insert(e);
                }
            }
        }
        b
    }
}
