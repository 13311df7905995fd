//! HNSW as a [`VectorIndex`]: parameters, sections, validated view, filtered beam search
//! and the scan-or-graph cost bound.

use std::ops::Range;

use super::build::{GraphBuilder, VectorSet};
use super::graph::{FrozenGraph, Graph, GraphView};
use super::search::{self as hnsw_search, Expand};
use super::HnswParams;
use crate::index::{
    cast, BuildInput, GivenKnobs, Knobs, Query, SectionError, Sections, SegmentRows, VectorIndex,
};

/// The HNSW index kind.
pub(crate) struct Hnsw;

/// HNSW parameters chosen at creation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HnswSpec {
    pub params: HnswParams,
    /// Default beam width of a search.
    pub ef_search: usize,
}

/// Where a validated graph lies in a segment's bytes.
#[derive(Debug, Clone)]
pub(crate) struct GraphParts {
    meta: [u64; 8],
    l0: Range<usize>,
    offsets: Range<usize>,
    upper: Range<usize>,
}

const META: u16 = 1;
const L0: u16 = 2;
const UPPER_OFFSETS: u16 = 3;
const UPPER: u16 = 4;

/// Largest `m` a graph may have (a segment with a larger one is refused at open too).
pub(crate) const MAX_M: usize = 512;

/// Pass rate (in percent) below which filtered graph search expands rejected neighbours two
/// hops instead of scoring them (`TROVEDB_TWO_HOP_BELOW` with feature `bench`).
const TWO_HOP_BELOW_PERCENT: usize = 30;

fn two_hop_below_percent() -> usize {
    #[cfg(feature = "bench")]
    {
        static V: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        crate::index::bench_knob(&V, "TROVEDB_TWO_HOP_BELOW", TWO_HOP_BELOW_PERCENT)
    }
    #[cfg(not(feature = "bench"))]
    TWO_HOP_BELOW_PERCENT
}

/// Multiplier of the scan-or-graph bound (`TROVEDB_SCAN_BOUND_SCALE` with feature `bench`;
/// default 1).
fn scan_bound_scale() -> f64 {
    #[cfg(feature = "bench")]
    {
        static V: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
        crate::index::bench_knob(&V, "TROVEDB_SCAN_BOUND_SCALE", 1.0)
    }
    #[cfg(not(feature = "bench"))]
    1.0
}

/// Whether scanning `passing` rows exactly is cheaper than a filtered graph search of a
/// segment of `rows` with layer-0 degree `m0`: a scan costs `passing` rows at `row_cost`
/// each; a graph search about `ef * m0 / s` distances with pass rate `s = passing / rows`.
/// Equal when `passing = sqrt(ef * m0 * rows / row_cost)`.
// Measured on text-minilm-dev (20k x 384, 30 MiB: cache-resident on a 32 MiB L3, ef 64):
// scaling this bound by 0.25 or 0.5 sent 10-30% filters to the graph and cut their QPS
// 3-13x; by 2 or 4 it scanned 50-100% filters and cut QPS 1.7-9x; 1 was best at every
// selectivity tried. Out of cache it is not (1M x 128, 512 MiB): a 5% filter at ef 96 was
// scanned at 156 QPS (50k rows from memory, 128 ns each) where the graph answers at ~900;
// there the planner uses `row_cost` = OUT_OF_CACHE_ROW_COST (README "Filtered search").
pub(crate) fn graph_prefers_scan(
    m0: usize,
    passing: usize,
    rows: usize,
    ef: usize,
    row_cost: f64,
) -> bool {
    let bound = ((ef * m0) as f64 * rows as f64 / row_cost.max(f64::MIN_POSITIVE)).sqrt();
    (passing as f64) <= scan_bound_scale() * bound
}

/// `scan_row_cost` of a segment whose vectors do not fit in the last-level cache: scanning
/// a row costs as much as four graph distances (the bound is halved). Measured on 1M x 128.
pub(crate) const OUT_OF_CACHE_ROW_COST: f64 = 4.0;

/// How a filtered beam search passing `passing` of `rows` treats rejected neighbours.
pub(crate) fn expand_for(passing: usize, rows: usize) -> Expand {
    if passing * 100 < rows * two_hop_below_percent() {
        Expand::TwoHop
    } else {
        Expand::Through
    }
}

/// Beam search of any graph (a sealed view or the appendable segment's live graph).
pub(crate) fn search_graph<G: Graph + ?Sized, A: Fn(usize) -> bool, P: FnMut(u32, f32)>(
    g: &G,
    seg: &SegmentRows<'_>,
    q: &Query<'_>,
    allow: &A,
    mut push: P,
) {
    let dim = seg.dim;
    let rows = seg.rows();
    let dist = |n: u32| seg.distance(q.vector, n as usize);
    let prefetch = |n: u32| {
        let n = n as usize;
        crate::distance::prefetch(&seg.vectors[n * dim..(n + 1) * dim]);
    };
    let allow_node = |n: u32| allow(n as usize);
    let expand = expand_for(q.passing, rows);
    let mut visited = q.pool.take(g.len());
    let found = hnsw_search::with_scratch(|scratch| {
        hnsw_search::search(
            g,
            &dist,
            &prefetch,
            q.knobs.k,
            q.knobs.ef,
            &allow_node,
            expand,
            &mut visited,
            scratch,
        )
    });
    q.pool.give(visited);
    for c in found {
        push(c.id, c.d);
    }
}

impl VectorIndex for Hnsw {
    const NAME: &'static str = "hnsw";
    const CODE: u8 = 2;
    const LEGACY_BASE: u32 = 6;
    const SECTION_COUNT: u16 = 4;
    const KNOBS: &'static [&'static str] = &["ef"];
    const CHECKED_AT_OPEN: &'static [u16] = &[META, UPPER_OFFSETS];

    type Spec = HnswSpec;
    type Built = FrozenGraph;
    type Parts = GraphParts;
    type View<'a> = GraphView<'a>;

    fn validate(spec: &HnswSpec, _dim: usize) -> Result<(), (&'static str, String)> {
        let p = &spec.params;
        if !(2..=MAX_M).contains(&p.m) {
            return Err(("m", format!("m must be in 2..={MAX_M}, got {}", p.m)));
        }
        if p.ef_construction == 0 {
            return Err((
                "ef_construction",
                "ef_construction must be at least 1".into(),
            ));
        }
        if spec.ef_search == 0 {
            return Err(("ef_search", "ef_search must be at least 1".into()));
        }
        Ok(())
    }

    fn knobs(spec: &HnswSpec, given: &GivenKnobs, knobs: &mut Knobs) {
        knobs.ef = given.ef.unwrap_or(spec.ef_search).max(knobs.k);
    }

    fn build(spec: &HnswSpec, input: &BuildInput<'_>) -> Option<FrozenGraph> {
        let vs = VectorSet {
            data: input.vectors,
            dim: input.dim,
            kernels: input.kernels,
            metric: input.metric,
        };
        let b = GraphBuilder::build_or_stop(spec.params, &vs, input.stop);
        // A stopped build is thrown away: not worth linking its unlinked nodes.
        if input.stop.load(std::sync::atomic::Ordering::Acquire) {
            return Some(b.freeze());
        }
        Some(b.freeze_linked(&vs))
    }

    fn sections(g: &FrozenGraph) -> Vec<(u16, &[u8])> {
        vec![
            (META, bytemuck::cast_slice(&g.meta)),
            (L0, bytemuck::cast_slice(&g.l0)),
            (UPPER_OFFSETS, bytemuck::cast_slice(&g.offsets)),
            (UPPER, bytemuck::cast_slice(&g.upper)),
        ]
    }

    fn open(s: &Sections<'_>, rows: usize, _dim: usize) -> Result<GraphParts, SectionError> {
        let (meta, meta_at) = s.meta(META)?;
        let rows_plus_one = rows.checked_add(1).ok_or_else(|| SectionError {
            offset: meta_at,
            reason: "row count overflows".into(),
        })?;
        let parts = GraphParts {
            meta,
            l0: s.get(L0, 4, None)?,
            offsets: s.get(UPPER_OFFSETS, 4, Some(rows_plus_one))?,
            upper: s.get(UPPER, 4, None)?,
        };
        if meta[5] != rows as u64 {
            return Err(SectionError {
                offset: meta_at,
                reason: "graph row count differs from the segment's".into(),
            });
        }
        GraphView::new(
            &parts.meta,
            cast(s.bytes, &parts.l0),
            cast(s.bytes, &parts.offsets),
            cast(s.bytes, &parts.upper),
        )
        .map_err(|why| SectionError {
            offset: meta_at,
            reason: format!("hnsw graph: {why}"),
        })?;
        Ok(parts)
    }

    fn view<'a>(p: &'a GraphParts, bytes: &'a [u8]) -> GraphView<'a> {
        GraphView::trusted(
            &p.meta,
            cast(bytes, &p.l0),
            cast(bytes, &p.offsets),
            cast(bytes, &p.upper),
        )
    }

    fn bytes(g: &GraphView<'_>) -> usize {
        g.bytes()
    }

    fn detail(g: &GraphView<'_>) -> String {
        format!("m={}", g.m)
    }

    fn prefer_scan(g: &GraphView<'_>, passing: usize, rows: usize, knobs: &Knobs) -> bool {
        graph_prefers_scan(g.m0, passing, rows, knobs.ef, knobs.scan_row_cost)
    }

    fn search<A: Fn(usize) -> bool, P: FnMut(u32, f32)>(
        g: &GraphView<'_>,
        seg: &SegmentRows<'_>,
        q: &Query<'_>,
        allow: &A,
        push: P,
    ) {
        search_graph(g, seg, q, allow, push);
    }
}
