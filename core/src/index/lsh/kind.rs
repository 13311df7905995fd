//! LSH as a [`VectorIndex`].

use std::ops::Range;

use super::{build, search, FrozenLsh, LshParams, LshQuery, LshView, LSH_DEFAULT_REFINE};
use crate::index::{
    cast, widen, BuildInput, GivenKnobs, Knobs, Query, SectionError, Sections, SegmentRows,
    VectorIndex,
};

/// The LSH index kind.
pub(crate) struct Lsh;

/// LSH parameters chosen at creation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LshSpec {
    pub params: LshParams,
    /// Default buckets read per table.
    pub probes: usize,
}

/// Where a validated index lies in a segment's bytes.
#[derive(Debug, Clone)]
pub(crate) struct LshParts {
    meta: [u64; 8],
    parts: [Range<usize>; 6],
}

const META: u16 = 1;
const FUNCTIONS: u16 = 2;
const TABLE_OFFSETS: u16 = 3;
const KEYS: u16 = 4;
const STARTS: u16 = 5;
const ROWS: u16 = 6;
const SIGS: u16 = 7;

impl VectorIndex for Lsh {
    const NAME: &'static str = "lsh";
    const CODE: u8 = 4;
    const LEGACY_BASE: u32 = 16;
    const SECTION_COUNT: u16 = 7;
    const KNOBS: &'static [&'static str] = &["probes", "refine"];
    const CHECKED_AT_OPEN: &'static [u16] = &[META, TABLE_OFFSETS];

    type Spec = LshSpec;
    type Built = FrozenLsh;
    type Parts = LshParts;
    type View<'a> = LshView<'a>;

    fn validate(spec: &LshSpec, _dim: usize) -> Result<(), (&'static str, String)> {
        let LshParams { tables, bits, .. } = spec.params;
        if tables == 0 || bits > 64 {
            return Err((
                "lsh",
                format!("tables must be >= 1 and bits <= 64, got {tables} and {bits}"),
            ));
        }
        if spec.probes == 0 {
            return Err(("probes", "probes must be at least 1".into()));
        }
        Ok(())
    }

    fn knobs(spec: &LshSpec, given: &GivenKnobs, knobs: &mut Knobs) {
        knobs.probes = given.probes.unwrap_or(spec.probes);
        knobs.refine = given.refine.unwrap_or(LSH_DEFAULT_REFINE);
    }

    fn build(spec: &LshSpec, input: &BuildInput<'_>) -> Option<FrozenLsh> {
        build(
            input.vectors,
            input.dim,
            input.metric,
            spec.params,
            input.kernels,
        )
    }

    fn sections(ix: &FrozenLsh) -> Vec<(u16, &[u8])> {
        vec![
            (META, bytemuck::cast_slice(&ix.meta)),
            (FUNCTIONS, bytemuck::cast_slice(&ix.functions)),
            (TABLE_OFFSETS, bytemuck::cast_slice(&ix.table_offsets)),
            (KEYS, bytemuck::cast_slice(&ix.keys)),
            (STARTS, bytemuck::cast_slice(&ix.starts)),
            (ROWS, bytemuck::cast_slice(&ix.rows)),
            (SIGS, &ix.sigs),
        ]
    }

    fn open(s: &Sections<'_>, rows: usize, dim: usize) -> Result<LshParts, SectionError> {
        let (meta, meta_at) = s.meta(META)?;
        let parts = [
            s.get(FUNCTIONS, 4, None)?,
            s.get(TABLE_OFFSETS, 8, None)?,
            s.get(KEYS, 8, None)?,
            s.get(STARTS, 4, None)?,
            s.get(ROWS, 4, None)?,
            s.get(SIGS, 1, None)?,
        ];
        if meta[3] != rows as u64 || meta[4] != dim as u64 {
            return Err(SectionError {
                offset: meta_at,
                reason: "lsh shape differs from the segment's".into(),
            });
        }
        let p = LshParts { meta, parts };
        LshView::new(
            &p.meta,
            cast(s.bytes, &p.parts[0]),
            cast(s.bytes, &p.parts[1]),
            cast(s.bytes, &p.parts[2]),
            cast(s.bytes, &p.parts[3]),
            cast(s.bytes, &p.parts[4]),
            &s.bytes[p.parts[5].clone()],
        )
        .map_err(|why| SectionError {
            offset: meta_at,
            reason: format!("lsh index: {why}"),
        })?;
        Ok(p)
    }

    fn view<'a>(p: &'a LshParts, bytes: &'a [u8]) -> LshView<'a> {
        LshView::trusted(
            &p.meta,
            cast(bytes, &p.parts[0]),
            cast(bytes, &p.parts[1]),
            cast(bytes, &p.parts[2]),
            cast(bytes, &p.parts[3]),
            cast(bytes, &p.parts[4]),
            &bytes[p.parts[5].clone()],
        )
    }

    fn bytes(ix: &LshView<'_>) -> usize {
        ix.bytes()
    }

    fn detail(ix: &LshView<'_>) -> String {
        format!(
            "family={} tables={} bits={}",
            ix.family_name(),
            ix.tables,
            ix.bits
        )
    }

    // Measured on text-minilm-dev (20k): a widened LSH search costs about as much as
    // scanning an eighth of the rows.
    fn prefer_scan(_ix: &LshView<'_>, passing: usize, rows: usize, _knobs: &Knobs) -> bool {
        passing <= rows / 8
    }

    // Probing widens (4x per round) while fewer than k allowed rows were found, until every
    // bucket has been read.
    fn search<A: Fn(usize) -> bool, P: FnMut(u32, f32)>(
        ix: &LshView<'_>,
        seg: &SegmentRows<'_>,
        q: &Query<'_>,
        allow: &A,
        mut push: P,
    ) {
        let rows = seg.rows();
        let k = q.knobs.k;
        let mut probes = widen(q.knobs.probes.max(1), q.passing, rows);
        let most = 1usize << ix.bits.min(20);
        let mut visited = q.pool.take(rows);
        let found = loop {
            visited.reset(rows);
            let opts = LshQuery {
                k,
                probes,
                refine: q.knobs.refine,
            };
            let f = search(
                ix,
                seg.vectors,
                seg.kernels,
                seg.metric,
                q.vector,
                opts,
                allow,
                &mut visited,
            );
            if f.len() >= k || probes >= most {
                break f;
            }
            probes = probes.saturating_mul(4);
        };
        q.pool.give(visited);
        for (row, d) in found {
            push(row, d);
        }
    }
}
