//! IVF-PQ as a [`VectorIndex`].

use std::ops::Range;

use super::{build, default_pq_m, search, FrozenIvfPq, IvfPqParams, IvfPqQuery, IvfPqView};
use crate::index::{
    cast, widen, BuildInput, GivenKnobs, Knobs, Query, SectionError, Sections, SegmentRows,
    VectorIndex,
};

/// The IVF-PQ index kind.
pub(crate) struct IvfPq;

/// IVF-PQ parameters chosen at creation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct IvfPqSpec {
    pub params: IvfPqParams,
    /// Default lists probed per query.
    pub nprobe: usize,
    /// Default re-ranking factor.
    pub refine: usize,
}

/// Where a validated index lies in a segment's bytes.
#[derive(Debug, Clone)]
pub(crate) struct IvfPqParts {
    meta: [u64; 8],
    parts: [Range<usize>; 5],
}

const META: u16 = 1;
const CENTROIDS: u16 = 2;
const CODEBOOKS: u16 = 3;
const LIST_OFFSETS: u16 = 4;
const LIST_ROWS: u16 = 5;
const CODES: u16 = 6;

impl VectorIndex for IvfPq {
    const NAME: &'static str = "ivf_pq";
    const CODE: u8 = 3;
    const LEGACY_BASE: u32 = 10;
    const SECTION_COUNT: u16 = 6;
    const KNOBS: &'static [&'static str] = &["nprobe", "refine"];
    const CHECKED_AT_OPEN: &'static [u16] = &[META, LIST_OFFSETS];

    type Spec = IvfPqSpec;
    type Built = FrozenIvfPq;
    type Parts = IvfPqParts;
    type View<'a> = IvfPqView<'a>;

    fn validate(spec: &IvfPqSpec, dim: usize) -> Result<(), (&'static str, String)> {
        let pq_m = spec.params.pq_m;
        if pq_m != 0 && !dim.is_multiple_of(pq_m) {
            return Err((
                "pq_m",
                format!(
                    "pq_m = {pq_m} does not divide dim = {dim}; choose a divisor of the dimension (or 0 for the default {})",
                    default_pq_m(dim)
                ),
            ));
        }
        if spec.nprobe == 0 {
            return Err(("nprobe", "nprobe must be at least 1".into()));
        }
        if spec.refine == 0 {
            return Err(("refine", "refine must be at least 1".into()));
        }
        Ok(())
    }

    fn knobs(spec: &IvfPqSpec, given: &GivenKnobs, knobs: &mut Knobs) {
        knobs.nprobe = given.nprobe.unwrap_or(spec.nprobe);
        knobs.refine = given.refine.unwrap_or(spec.refine);
    }

    fn build(spec: &IvfPqSpec, input: &BuildInput<'_>) -> Option<FrozenIvfPq> {
        build(input.vectors, input.dim, spec.params)
    }

    fn sections(ix: &FrozenIvfPq) -> Vec<(u16, &[u8])> {
        vec![
            (META, bytemuck::cast_slice(&ix.meta)),
            (CENTROIDS, bytemuck::cast_slice(&ix.centroids)),
            (CODEBOOKS, bytemuck::cast_slice(&ix.codebooks)),
            (LIST_OFFSETS, bytemuck::cast_slice(&ix.list_offsets)),
            (LIST_ROWS, bytemuck::cast_slice(&ix.list_rows)),
            (CODES, &ix.codes),
        ]
    }

    fn open(s: &Sections<'_>, rows: usize, dim: usize) -> Result<IvfPqParts, SectionError> {
        let (meta, meta_at) = s.meta(META)?;
        let parts = [
            s.get(CENTROIDS, 4, None)?,
            s.get(CODEBOOKS, 4, None)?,
            s.get(LIST_OFFSETS, 8, None)?,
            s.get(LIST_ROWS, 4, None)?,
            s.get(CODES, 1, None)?,
        ];
        if meta[3] != rows as u64 || meta[4] != dim as u64 {
            return Err(SectionError {
                offset: meta_at,
                reason: "ivf_pq shape differs from the segment's".into(),
            });
        }
        let p = IvfPqParts { meta, parts };
        IvfPqView::new(
            &p.meta,
            cast(s.bytes, &p.parts[0]),
            cast(s.bytes, &p.parts[1]),
            cast(s.bytes, &p.parts[2]),
            cast(s.bytes, &p.parts[3]),
            &s.bytes[p.parts[4].clone()],
        )
        .map_err(|why| SectionError {
            offset: meta_at,
            reason: format!("ivf_pq index: {why}"),
        })?;
        Ok(p)
    }

    fn view<'a>(p: &'a IvfPqParts, bytes: &'a [u8]) -> IvfPqView<'a> {
        IvfPqView::trusted(
            &p.meta,
            cast(bytes, &p.parts[0]),
            cast(bytes, &p.parts[1]),
            cast(bytes, &p.parts[2]),
            cast(bytes, &p.parts[3]),
            &bytes[p.parts[4].clone()],
        )
    }

    fn bytes(ix: &IvfPqView<'_>) -> usize {
        ix.bytes()
    }

    fn detail(ix: &IvfPqView<'_>) -> String {
        format!(
            "nlist={} pq_m={} code_bytes_per_vector={}",
            ix.nlist,
            ix.m,
            ix.code_bytes_per_vector()
        )
    }

    // A filtered probe scores about rows * nprobe' / nlist codes (nprobe' widened for the
    // pass rate, see `widen`); scanning fewer passing rows exactly is both cheaper and exact.
    fn prefer_scan(ix: &IvfPqView<'_>, passing: usize, rows: usize, knobs: &Knobs) -> bool {
        let nprobe = widen(knobs.nprobe, passing, rows).min(ix.nlist);
        passing.saturating_mul(ix.nlist) <= rows.saturating_mul(nprobe)
    }

    fn search<A: Fn(usize) -> bool, P: FnMut(u32, f32)>(
        ix: &IvfPqView<'_>,
        seg: &SegmentRows<'_>,
        q: &Query<'_>,
        allow: &A,
        mut push: P,
    ) {
        let opts = IvfPqQuery {
            k: q.knobs.k,
            nprobe: widen(q.knobs.nprobe, q.passing, seg.rows()),
            refine: q.knobs.refine,
        };
        let found = search(ix, seg, q.vector, opts, allow);
        for (row, d) in found {
            push(row, d);
        }
    }
}
