//! Vector indexes. Each index receives vectors as slices (from a map or from memory),
//! never paths; it depends only on `distance`.
//!
//! Every kind implements [`VectorIndex`]: its parameters and their validation (the same
//! check at create and at open), building from rows with a stop flag, the sections it
//! writes, a validated view over those sections in a mapped segment, search under a row
//! filter, and the cost estimate the planner asks. [`registry`] lists the kinds and
//! dispatches to them statically (one `match` per call, generic search bodies).

pub(crate) mod flat;
pub(crate) mod hnsw;
pub(crate) mod ivfpq;
pub(crate) mod kmeans;
pub(crate) mod lsh;
pub(crate) mod quant;
pub(crate) mod registry;
pub(crate) mod rng;
pub(crate) mod text;
pub(crate) mod topk;

use std::ops::Range;
use std::sync::atomic::AtomicBool;

use crate::distance::{Kernels, Metric};
use hnsw::visited::VisitedPool;

/// Segments with at most this many rows are scanned exactly even when they have an index:
/// below it a scan is as fast as an index search and always exact.
pub(crate) const FLAT_SCAN_MAX_ROWS: usize = 1024;

/// Per-query knobs, resolved from the query's parameters and the collection's defaults
/// (each kind reads the ones it declares in [`VectorIndex::KNOBS`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Knobs {
    pub k: usize,
    pub ef: usize,
    pub nprobe: usize,
    pub refine: usize,
    pub probes: usize,
    /// Quantised segments: candidates by code re-ranked exactly, as a multiple of `k`.
    pub rescore: usize,
    /// What scanning one row exactly costs, relative to one distance of an index search:
    /// 1 when the segment's vectors fit in the last-level cache, more when every scanned row
    /// comes from memory (set per segment by the planner; see `graph_prefers_scan`).
    pub scan_row_cost: f64,
}

/// The knobs a query gave (`None`: the collection's default).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct GivenKnobs {
    pub ef: Option<usize>,
    pub nprobe: Option<usize>,
    pub refine: Option<usize>,
    pub probes: Option<usize>,
}

/// Where a segment's float rows come from, for searches that re-rank a few of them exactly
/// (quantised codes, IVF-PQ): a mapped file whose rows may be on disk rather than in memory.
pub(crate) trait RowSource: Sync {
    /// Ask for the byte range `range` of the rows (relative to the first row) to be read
    /// ahead: rows on disk are then read concurrently instead of one fault at a time.
    fn will_need(&self, range: Range<usize>);
    /// Whether re-ranking has been finding its rows on disk (then rows are asked for first).
    fn cold(&self) -> bool;
    /// Report a re-ranking of `rows` rows that took `nanos`.
    fn observe(&self, rows: usize, nanos: u64);
}

/// A row read from memory costs well under a microsecond; above this per row, re-ranking was
/// waiting for the disk.
const COLD_NANOS_PER_ROW: u64 = 4_000;
/// Consecutive re-rankings under [`WARM_NANOS_PER_ROW`] after which rows count as resident
/// again (and are no longer asked for first).
const WARM_AFTER: u32 = 64;
/// Per-row time of a re-ranking from memory.
const WARM_NANOS_PER_ROW: u64 = 1_000;

/// Whether a segment's re-ranking has been finding its rows on disk, from how long it took
/// per row: cold at once after a slow re-ranking, warm again after [`WARM_AFTER`] fast ones
/// in a row (hysteresis, so a partly resident segment does not flip every query).
#[derive(Debug, Default)]
pub(crate) struct ColdTracker {
    cold: std::sync::atomic::AtomicBool,
    warm_runs: std::sync::atomic::AtomicU32,
}

impl ColdTracker {
    pub(crate) fn cold(&self) -> bool {
        self.cold.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn observe(&self, rows: usize, nanos: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        if rows == 0 {
            return;
        }
        let per_row = nanos / rows as u64;
        if per_row >= COLD_NANOS_PER_ROW {
            self.warm_runs.store(0, Relaxed);
            self.cold.store(true, Relaxed);
        } else if self.cold() && per_row < WARM_NANOS_PER_ROW {
            if self.warm_runs.fetch_add(1, Relaxed) + 1 >= WARM_AFTER {
                self.cold.store(false, Relaxed);
            }
        } else {
            self.warm_runs.store(0, Relaxed);
        }
    }
}

#[cfg(test)]
mod cold_tests {
    use super::*;

    #[test]
    fn cold_after_one_slow_rerank_warm_after_a_run_of_fast_ones() {
        let t = ColdTracker::default();
        t.observe(30, 30 * 200);
        assert!(!t.cold());
        t.observe(30, 30 * 50_000);
        assert!(t.cold());
        for _ in 0..WARM_AFTER - 1 {
            t.observe(30, 30 * 200);
        }
        assert!(t.cold(), "one short of the run");
        // A slow one restarts the run.
        t.observe(30, 30 * 50_000);
        for _ in 0..WARM_AFTER - 1 {
            t.observe(30, 30 * 200);
        }
        assert!(t.cold());
        t.observe(30, 30 * 200);
        assert!(!t.cold());
        t.observe(0, 1_000_000);
        assert!(!t.cold(), "nothing re-ranked says nothing");
    }
}

/// The rows of a segment as an index search reads them.
#[derive(Clone, Copy)]
pub(crate) struct SegmentRows<'a> {
    /// Row-major, `dim` wide.
    pub vectors: &'a [f32],
    pub dim: usize,
    pub kernels: &'static Kernels,
    pub metric: Metric,
    /// The mapped file the rows come from (sealed segments).
    pub source: Option<&'a dyn RowSource>,
}

impl SegmentRows<'_> {
    /// Re-rank `rows` exactly, giving each to `push(row, distance)`. The rows are prefetched
    /// first; when re-ranking has been finding rows on disk, they are asked for from the
    /// file first, so their reads overlap (README "Memory").
    pub(crate) fn rerank(&self, query: &[f32], rows: &[u32], mut push: impl FnMut(u32, f32)) {
        let dim = self.dim;
        if let Some(src) = self.source.filter(|s| s.cold()) {
            let row_bytes = dim * 4;
            for &r in rows {
                let r = r as usize;
                src.will_need(r * row_bytes..(r + 1) * row_bytes);
            }
        }
        let t = std::time::Instant::now();
        for &r in rows {
            let r = r as usize;
            crate::distance::prefetch(&self.vectors[r * dim..(r + 1) * dim]);
        }
        for &r in rows {
            push(r, self.distance(query, r as usize));
        }
        if let Some(src) = self.source {
            src.observe(rows.len(), t.elapsed().as_nanos() as u64);
        }
    }

    pub(crate) fn rows(&self) -> usize {
        self.vectors.len() / self.dim
    }

    pub(crate) fn distance(&self, query: &[f32], row: usize) -> f32 {
        self.kernels.distance(
            self.metric,
            query,
            &self.vectors[row * self.dim..(row + 1) * self.dim],
        )
    }
}

/// What a search of one segment is asked.
pub(crate) struct Query<'a> {
    pub vector: &'a [f32],
    pub knobs: &'a Knobs,
    /// Rows that pass (the filter and the deletions) — `rows` when unfiltered.
    pub passing: usize,
    pub pool: &'a VisitedPool,
}

/// The rows of a segment an index is built from.
#[derive(Clone, Copy)]
pub(crate) struct BuildInput<'a> {
    pub vectors: &'a [f32],
    pub dim: usize,
    pub metric: Metric,
    pub kernels: &'static Kernels,
    /// Set to give up early (the caller then discards the result).
    pub stop: &'a AtomicBool,
}

/// A section of an index that cannot be used, relative to the segment's bytes.
#[derive(Debug)]
pub(crate) struct SectionError {
    pub offset: usize,
    pub reason: String,
}

/// The sections of one index in a segment's bytes, by the index's own tags. Every range
/// was checked to lie inside `bytes`, 64-byte aligned.
pub(crate) struct Sections<'a> {
    pub bytes: &'a [u8],
    pub entries: Vec<(u16, Range<usize>)>,
}

impl Sections<'_> {
    /// The range of section `tag`: present, a whole number of `elem`-byte items, and
    /// exactly `count` of them when given.
    pub(crate) fn get(
        &self,
        tag: u16,
        elem: usize,
        count: Option<usize>,
    ) -> Result<Range<usize>, SectionError> {
        let (_, r) = self
            .entries
            .iter()
            .find(|(t, _)| *t == tag)
            .ok_or_else(|| SectionError {
                offset: 0,
                reason: format!("index section {tag} missing"),
            })?;
        let len = r.len();
        let want = count.and_then(|c| c.checked_mul(elem));
        if !len.is_multiple_of(elem) || count.is_some_and(|_| want != Some(len)) {
            return Err(SectionError {
                offset: r.start,
                reason: format!("index section {tag} has the wrong size {len}"),
            });
        }
        Ok(r.clone())
    }

    /// The eight `u64` of a meta section.
    pub(crate) fn meta(&self, tag: u16) -> Result<([u64; 8], usize), SectionError> {
        let r = self.get(tag, 8, Some(8))?;
        let mut meta = [0u64; 8];
        meta.copy_from_slice(bytemuck::cast_slice(&self.bytes[r.clone()]));
        Ok((meta, r.start))
    }
}

/// Typed slice of `bytes` over a range validated by [`Sections::get`] (aligned, whole items).
pub(crate) fn cast<'a, T: bytemuck::Pod>(bytes: &'a [u8], r: &Range<usize>) -> &'a [T] {
    bytemuck::cast_slice(&bytes[r.clone()])
}

/// One kind of vector index. Implementations are zero-sized markers; [`registry`] holds
/// the enums that carry their data and dispatch to them.
pub(crate) trait VectorIndex {
    /// Name in configs and `stats()`.
    const NAME: &'static str;
    /// Code in the segment header.
    const CODE: u8;
    /// The section kind of tag 1 in segment format v1/v2, whose section table numbered
    /// every kind's sections globally (tag `t` was kind `LEGACY_BASE + t - 1`).
    const LEGACY_BASE: u32;
    /// Number of sections (tags `1..=SECTION_COUNT`).
    const SECTION_COUNT: u16;
    /// Search knobs that apply to this kind (names of `SearchParams` fields).
    const KNOBS: &'static [&'static str];
    /// Sections whose checksum is verified before [`VectorIndex::open`] parses them (the
    /// metadata and offset tables an open reads whole).
    const CHECKED_AT_OPEN: &'static [u16];

    /// Parameters, as chosen at creation.
    type Spec: Clone + std::fmt::Debug + PartialEq;
    /// An index built for a segment about to be written (owned buffers).
    type Built: Send + Sync;
    /// Where a validated index lies in a segment's bytes (small, copied).
    type Parts: Clone + std::fmt::Debug + Send + Sync;
    /// A view for searching, borrowed from the bytes.
    type View<'a>: Copy + Send + Sync + std::fmt::Debug;

    /// Check parameters against the collection's dimension: the same check at create time
    /// and when a manifest is read. `Err((parameter, reason))`.
    fn validate(spec: &Self::Spec, dim: usize) -> Result<(), (&'static str, String)>;
    /// Fill this kind's knobs from the query's (`given`) or the spec's defaults.
    fn knobs(spec: &Self::Spec, given: &GivenKnobs, knobs: &mut Knobs);
    /// Build over `input` (`None`: too few rows, the segment is scanned exactly).
    fn build(spec: &Self::Spec, input: &BuildInput<'_>) -> Option<Self::Built>;
    /// The sections to write, by tag (1, 2, ...).
    fn sections(built: &Self::Built) -> Vec<(u16, &[u8])>;
    /// Validate the sections of a segment of `rows` x `dim`.
    fn open(s: &Sections<'_>, rows: usize, dim: usize) -> Result<Self::Parts, SectionError>;
    /// A view over sections `open` accepted.
    fn view<'a>(parts: &'a Self::Parts, bytes: &'a [u8]) -> Self::View<'a>;
    /// Bytes of index structures.
    fn bytes(view: &Self::View<'_>) -> usize;
    /// Build parameters for `stats()`.
    fn detail(view: &Self::View<'_>) -> String;
    /// Whether scanning `passing` of `rows` rows exactly is cheaper than searching the index
    /// under that filter.
    fn prefer_scan(view: &Self::View<'_>, passing: usize, rows: usize, knobs: &Knobs) -> bool;
    /// The nearest allowed rows, each given to `push(row, distance)`.
    fn search<A: Fn(usize) -> bool, P: FnMut(u32, f32)>(
        view: &Self::View<'_>,
        seg: &SegmentRows<'_>,
        q: &Query<'_>,
        allow: &A,
        push: P,
    );
}

/// A probe count scaled for a filter passing `passing` of `rows`: by `1 / sqrt(pass rate)`.
/// With a pass rate `s` the k nearest passing points lie about `1/s` times deeper in the
/// unfiltered ranking; on text-minilm-dev, widening by `1/sqrt(s)` brought IVF-PQ and LSH
/// recall@10 at 50% back to the unfiltered level, and by `1/s` bought nothing more.
pub(crate) fn widen(probes: usize, passing: usize, rows: usize) -> usize {
    if passing == 0 || passing >= rows {
        return probes;
    }
    let f = (rows as f64 / passing as f64).sqrt();
    ((probes as f64 * f).ceil() as usize).max(probes)
}

/// A measurement knob from the environment (feature `bench` only; production builds always
/// use the default, so nothing outside the API changes a search).
#[cfg(feature = "bench")]
pub(crate) fn bench_knob<T: std::str::FromStr + Copy>(
    cell: &'static std::sync::OnceLock<T>,
    var: &str,
    default: T,
) -> T {
    *cell.get_or_init(|| {
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    })
}
