//! Locality-sensitive hashing with multi-probe: `tables` hash tables, each keyed by
//! `bits` hash functions of a vector; a query reads its own bucket and the `probes - 1`
//! neighbouring buckets most likely to hold its neighbours in every table, then re-ranks
//! the (de-duplicated) candidates exactly.
//!
//! - cosine and dot: random-hyperplane hashing (SimHash), bit i = `a_i . v + b_i > 0`, with
//!   `b_i = -a_i . mean` (hyperplanes through the data's mean, not the origin: real
//!   embeddings are not centred). Neighbouring buckets flip the bits of smallest margin.
//! - l2: p-stable hashing (E2LSH), `h_i = floor((a_i . v + b_i) / w)`, `b_i` uniform in
//!   `[0, w)`, `w` from the data (a multiple of a typical 10-NN distance). Neighbouring
//!   buckets move single coordinates by -1/+1, nearest boundary first.
//!
//! Probe sequences follow Lv et al., "Multi-probe LSH" (VLDB 2007): perturbation sets are
//! generated in increasing score (sum of squared boundary distances) with shift/expand.
//!
//! Candidates are ranked before the exact re-ranking by a stored per-row signature of all
//! `tables * bits` hash values: the Hamming distance of the SimHash bits, or the squared
//! difference of the E2LSH values; only the best `refine * k` are compared exactly. SimHash
//! ranks twice: Hamming keeps `ASYM_WIDEN * refine * k`, then the asymmetric distance (the
//! query's margins `|a_g . q + b_g|` summed over the bits where the row differs) keeps
//! `refine * k` (Gordo et al., "Asymmetric distances for binary embeddings", TPAMI 2014). Bucket
//! collisions alone are a coarse signal: on real embeddings, re-ranking every candidate cost
//! more than a flat scan at recall 0.9. When the probed buckets would hold more than
//! 1/8 of the segment, the signatures of all rows are ranked instead (a linear scan of a few
//! dozen bytes per row is cheaper than gathering that many candidates through the tables).
//!
//! Frozen layout (FORMAT.md §LSH):
//! - meta `u64 [8]` = family (1 SimHash, 2 E2LSH), tables, bits, rows, dim, w (f64 bits),
//!   seed, total buckets;
//! - functions `f32 [tables * bits][dim]` then biases `f32 [tables * bits]`;
//! - table offsets `u64 [tables + 1]`, prefix sums into the bucket arrays;
//! - bucket keys `u64 [buckets]` (ascending within each table);
//! - bucket starts `u32 [buckets]`: where each bucket's rows begin in the rows array; a
//!   bucket ends where the next bucket of its table begins (or at the table's end,
//!   `(t + 1) * rows`);
//! - rows `u32 [tables * rows]`: each table's rows grouped by bucket;
//! - signatures `u8 [rows][sig]`: SimHash: the `tables * bits` bits, bit `g = t * bits + i`
//!   at byte `g / 8`, bit `g % 8`, padded to whole `u64` words (sig = 8 * ceil(tables * bits
//!   / 64)); E2LSH: each value `floor((a.v + b) / w)` clamped to an `i8` (sig = tables *
//!   bits).

pub(crate) mod kind;

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rayon::prelude::*;

use crate::distance::Kernels;
use crate::distance::Metric;
use crate::index::hnsw::visited::Visited;
use crate::index::rng::Rng;
use crate::index::topk::TopK;

/// Default number of LSH tables.
pub const LSH_DEFAULT_TABLES: usize = 32;
/// Default LSH probes per table.
pub const LSH_DEFAULT_PROBES: usize = 32;
/// Default LSH re-ranking factor: the best `refine * k` candidates by collision count are
/// compared exactly.
pub const LSH_DEFAULT_REFINE: usize = 20;

pub(crate) const FAMILY_SIMHASH: u64 = 1;
pub(crate) const FAMILY_E2LSH: u64 = 2;
/// Segments with fewer rows are not hashed; they are scanned exactly.
pub(crate) const MIN_ROWS: usize = 1025;
/// Bits per SimHash key are at most 64 (one `u64`).
pub(crate) const MAX_BITS: usize = 64;
/// E2LSH signatures store each value `(a.v + b) / w` at this resolution (in steps of
/// `w / 4`, clamped to an i8): the squared differences then estimate the projected distance
/// (Johnson-Lindenstrauss) four times more finely than the bucket values themselves.
const E2LSH_SIG_SCALE: f32 = 4.0;
/// Rank all signatures instead when the probed buckets hold more than `rows / SCAN_FRACTION`.
const SCAN_FRACTION: usize = 8;
/// E2LSH bucket width as a multiple of the median 10-NN distance of a sample.
const E2LSH_W_FACTOR: f64 = 2.0;
/// SimHash: the Hamming stage keeps this many times `refine * k` candidates, which the
/// asymmetric stage (margins of the query's projections) cuts to `refine * k`. Measured on
/// text-minilm-dev (384 signature bits, refine 10): Hamming alone recall@10 0.903; widened
/// 2x 0.948, 3x 0.953, 4x 0.958, asymmetric ranking of every row 0.961.
const ASYM_WIDEN: usize = 4;

/// Build-time parameters (`bits = 0`: choose from the segment size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LshParams {
    pub tables: usize,
    pub bits: usize,
    pub seed: u64,
}

/// Hash functions per table for a segment of `rows`: about `log2(rows) - 2` for SimHash
/// (buckets of a few rows; measured on text-minilm-dev: 9 bits per table read most of the
/// segment per query, 16 lost recall), `log2(rows) / 2` for E2LSH, whose values are
/// coarser.
pub(crate) fn effective_bits(requested: usize, rows: usize, family: u64) -> usize {
    if requested != 0 {
        return requested;
    }
    let lg = (rows.max(2) as f64).log2();
    let b = if family == FAMILY_SIMHASH {
        lg - 2.3
    } else {
        lg / 2.0
    };
    (b.round() as usize).clamp(4, 32)
}

/// Owned index buffers, as written to a segment file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FrozenLsh {
    pub meta: [u64; 8],
    pub functions: Vec<f32>,
    pub table_offsets: Vec<u64>,
    pub keys: Vec<u64>,
    pub starts: Vec<u32>,
    pub rows: Vec<u32>,
    pub sigs: Vec<u8>,
}

impl FrozenLsh {
    #[cfg(test)]
    pub(crate) fn view(&self) -> LshView<'_> {
        LshView::new(
            &self.meta,
            &self.functions,
            &self.table_offsets,
            &self.keys,
            &self.starts,
            &self.rows,
            &self.sigs,
        )
        .expect("an index built by this build is well formed")
    }
}

/// Bytes of signature per row.
pub(crate) fn sig_len(family: u64, tables: usize, bits: usize) -> usize {
    if family == FAMILY_SIMHASH {
        8 * (tables * bits).div_ceil(64)
    } else {
        tables * bits
    }
}

/// Signature distance (smaller = more likely near).
#[inline]
fn sig_distance(kernels: &Kernels, simhash: bool, a: &[u8], b: &[u8]) -> u32 {
    if simhash {
        kernels.hamming(a, b)
    } else {
        a.iter()
            .zip(b)
            .map(|(x, y)| {
                let d = i32::from(x.cast_signed()) - i32::from(y.cast_signed());
                d.unsigned_abs() * d.unsigned_abs()
            })
            .sum()
    }
}

/// FNV-1a over 32-bit words: the bucket key of an E2LSH hash vector.
fn e2_key(h: &[i32]) -> u64 {
    let mut k = 0xcbf2_9ce4_8422_2325u64;
    for &c in h {
        k = (k ^ u64::from(c as u32)).wrapping_mul(0x0000_0100_0000_01B3);
    }
    k
}

fn simhash_key(h: &[f32]) -> u64 {
    h.iter()
        .enumerate()
        .fold(0u64, |k, (i, x)| k | (u64::from(*x > 0.0) << i))
}

/// Hash functions of one family: projections, biases and (E2LSH) the width.
struct Functions<'a> {
    family: u64,
    bits: usize,
    dim: usize,
    w: f32,
    proj: &'a [f32],
    bias: &'a [f32],
}

impl Functions<'_> {
    /// Raw projections `a_i . v + b_i` of table `t` into `out` (divided by w for E2LSH).
    fn project(&self, kernels: &Kernels, t: usize, v: &[f32], out: &mut [f32]) {
        let (b, d) = (self.bits, self.dim);
        for (i, o) in out.iter_mut().enumerate().take(b) {
            let f = t * b + i;
            let x = kernels.dot(&self.proj[f * d..(f + 1) * d], v) + self.bias[f];
            *o = if self.family == FAMILY_E2LSH {
                x / self.w
            } else {
                x
            };
        }
    }

    /// Write the signature of `v` (every table's values; see the module docs) into `out`
    /// (`sig_len` bytes, zeroed by the caller), and every table's projections into `h`
    /// (`tables * bits` floats).
    fn signature(
        &self,
        kernels: &Kernels,
        tables: usize,
        v: &[f32],
        h: &mut [f32],
        out: &mut [u8],
    ) {
        for t in 0..tables {
            let h = &mut h[t * self.bits..(t + 1) * self.bits];
            self.project(kernels, t, v, h);
            if self.family == FAMILY_SIMHASH {
                for (i, x) in h.iter().enumerate() {
                    if *x > 0.0 {
                        let g = t * self.bits + i;
                        out[g / 8] |= 1 << (g % 8);
                    }
                }
            } else {
                for (i, x) in h.iter().enumerate() {
                    out[t * self.bits + i] =
                        ((x * E2LSH_SIG_SCALE).round().clamp(-128.0, 127.0) as i8).to_le_bytes()[0];
                }
            }
        }
    }

    fn key(&self, h: &[f32], scratch: &mut Vec<i32>) -> u64 {
        if self.family == FAMILY_SIMHASH {
            simhash_key(h)
        } else {
            scratch.clear();
            scratch.extend(h.iter().map(|x| x.floor() as i32));
            e2_key(scratch)
        }
    }
}

/// Median distance from sampled rows to their 10th nearest neighbour in a larger sample.
fn typical_knn_distance(vectors: &[f32], dim: usize, kernels: &Kernels, rng: &mut Rng) -> f64 {
    let rows = vectors.len() / dim;
    let base = rng.sample(rows, 20_000);
    let probes = rng.sample(rows, 200);
    let row = |i: usize| &vectors[i * dim..(i + 1) * dim];
    let mut d10: Vec<f64> = probes
        .par_iter()
        .map(|&p| {
            let mut top = TopK::new(11);
            for &b in &base {
                top.push(kernels.l2_sq(row(p), row(b)), b as u64);
            }
            // The nearest is usually `p` itself (distance 0): skip self-matches.
            let ds: Vec<f32> = top
                .into_sorted()
                .into_iter()
                .filter(|(id, _)| *id as usize != p)
                .map(|x| x.1)
                .collect();
            f64::from(ds.get(9).copied().unwrap_or(0.0)).sqrt()
        })
        .collect();
    d10.sort_by(f64::total_cmp);
    d10[d10.len() / 2]
}

/// One built table: bucket keys, bucket starts, rows by bucket.
type Table = (Vec<u64>, Vec<u32>, Vec<u32>);

/// Build the tables over `vectors`. `None` when the segment is too small to be worth
/// hashing ([`MIN_ROWS`]); such segments are scanned exactly.
pub(crate) fn build(
    vectors: &[f32],
    dim: usize,
    metric: Metric,
    params: LshParams,
    kernels: &Kernels,
) -> Option<FrozenLsh> {
    let rows = vectors.len() / dim;
    if rows < MIN_ROWS {
        return None;
    }
    let family = if metric == Metric::L2 {
        FAMILY_E2LSH
    } else {
        FAMILY_SIMHASH
    };
    let bits = effective_bits(params.bits, rows, family);
    let tables = params.tables;
    let mut rng = Rng::new(params.seed);
    let nf = tables * bits;
    let mut functions: Vec<f32> = (0..nf * dim).map(|_| rng.gaussian() as f32).collect();
    let w = if family == FAMILY_E2LSH {
        let w = E2LSH_W_FACTOR * typical_knn_distance(vectors, dim, kernels, &mut rng);
        if w > 0.0 && w.is_finite() {
            w
        } else {
            1.0
        }
    } else {
        0.0
    };
    let bias: Vec<f32> = if family == FAMILY_E2LSH {
        (0..nf).map(|_| (rng.next_f64() * w) as f32).collect()
    } else {
        let mut mean = vec![0.0f64; dim];
        for v in vectors.chunks_exact(dim) {
            for (m, x) in mean.iter_mut().zip(v) {
                *m += f64::from(*x);
            }
        }
        let mean: Vec<f32> = mean.iter().map(|m| (m / rows as f64) as f32).collect();
        (0..nf)
            .map(|f| -kernels.dot(&functions[f * dim..(f + 1) * dim], &mean))
            .collect()
    };
    functions.extend_from_slice(&bias);
    let fns = Functions {
        family,
        bits,
        dim,
        w: w as f32,
        proj: &functions[..nf * dim],
        bias: &functions[nf * dim..],
    };
    let slen = sig_len(family, tables, bits);
    let mut sigs = vec![0u8; rows * slen];
    sigs.par_chunks_mut(slen * 256)
        .enumerate()
        .for_each(|(block, out)| {
            let mut h = vec![0.0f32; tables * bits];
            for (j, sig) in out.chunks_exact_mut(slen).enumerate() {
                let r = block * 256 + j;
                fns.signature(
                    kernels,
                    tables,
                    &vectors[r * dim..(r + 1) * dim],
                    &mut h,
                    sig,
                );
            }
        });
    let per_table: Vec<Table> = (0..tables)
        .into_par_iter()
        .map(|t| {
            let mut h = vec![0.0f32; bits];
            let mut scratch = Vec::with_capacity(bits);
            let mut pairs: Vec<(u64, u32)> = vectors
                .chunks_exact(dim)
                .enumerate()
                .map(|(r, v)| {
                    fns.project(kernels, t, v, &mut h);
                    (fns.key(&h, &mut scratch), r as u32)
                })
                .collect();
            pairs.sort_unstable();
            let mut keys = Vec::new();
            let mut starts = Vec::new();
            let base = (t * rows) as u32;
            for (i, (k, _)) in pairs.iter().enumerate() {
                if keys.last() != Some(k) {
                    keys.push(*k);
                    starts.push(base + i as u32);
                }
            }
            (keys, starts, pairs.into_iter().map(|p| p.1).collect())
        })
        .collect();
    let mut table_offsets = vec![0u64];
    let (mut keys, mut starts, mut all_rows) = (Vec::new(), Vec::new(), Vec::new());
    for (k, s, r) in per_table {
        keys.extend(k);
        starts.extend(s);
        all_rows.extend(r);
        table_offsets.push(keys.len() as u64);
    }
    Some(FrozenLsh {
        meta: [
            family,
            tables as u64,
            bits as u64,
            rows as u64,
            dim as u64,
            w.to_bits(),
            params.seed,
            keys.len() as u64,
        ],
        functions,
        table_offsets,
        keys,
        starts,
        rows: all_rows,
        sigs,
    })
}

/// An index borrowed from a segment map (or from owned buffers).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LshView<'a> {
    family: u64,
    pub tables: usize,
    pub bits: usize,
    rows: usize,
    dim: usize,
    w: f32,
    functions: &'a [f32],
    table_offsets: &'a [u64],
    keys: &'a [u64],
    starts: &'a [u32],
    table_rows: &'a [u32],
    sigs: &'a [u8],
}

impl<'a> LshView<'a> {
    /// Validate buffers read from a file (sizes, offsets, starts ascending within each
    /// table and inside it, rows in range). O(tables * rows); run once at open.
    pub(crate) fn new(
        meta: &[u64; 8],
        functions: &'a [f32],
        table_offsets: &'a [u64],
        keys: &'a [u64],
        starts: &'a [u32],
        table_rows: &'a [u32],
        sigs: &'a [u8],
    ) -> Result<Self, String> {
        let small = |x: u64| usize::try_from(x).ok().filter(|x| *x <= 1 << 32);
        let (Some(tables), Some(bits), Some(rows), Some(dim), Some(buckets)) = (
            small(meta[1]),
            small(meta[2]),
            small(meta[3]),
            small(meta[4]),
            small(meta[7]),
        ) else {
            return Err("meta values out of range".into());
        };
        if meta[0] != FAMILY_SIMHASH && meta[0] != FAMILY_E2LSH {
            return Err(format!("unknown hash family {}", meta[0]));
        }
        if tables == 0 || bits == 0 || bits > MAX_BITS || dim == 0 {
            return Err(format!("bad shape tables {tables} bits {bits} dim {dim}"));
        }
        let w = f64::from_bits(meta[5]);
        if meta[0] == FAMILY_E2LSH && !(w > 0.0 && w.is_finite()) {
            return Err(format!("bad bucket width {w}"));
        }
        let total_rows = tables
            .checked_mul(rows)
            .filter(|t| u32::try_from(*t).is_ok())
            .ok_or("tables x rows too large")?;
        // Products are checked: every factor comes from the file (each up to 2^32).
        let functions_len = tables
            .checked_mul(bits)
            .and_then(|tb| tb.checked_mul(dim + 1));
        let sigs_len = tables
            .checked_mul(bits)
            .and_then(|_| rows.checked_mul(sig_len(meta[0], tables, bits)));
        if Some(functions.len()) != functions_len
            || table_offsets.len() != tables + 1
            || keys.len() != buckets
            || starts.len() != buckets
            || table_rows.len() != total_rows
            || Some(sigs.len()) != sigs_len
        {
            return Err("section sizes do not match the meta".into());
        }
        if table_offsets[0] != 0
            || table_offsets[tables] != buckets as u64
            || table_offsets.windows(2).any(|w| w[0] > w[1])
        {
            return Err("table offsets are not a prefix sum ending at the bucket count".into());
        }
        for t in 0..tables {
            let (a, b) = (table_offsets[t] as usize, table_offsets[t + 1] as usize);
            let (lo, hi) = ((t * rows) as u64, ((t + 1) * rows) as u64);
            let mut prev: Option<(u64, u64)> = None;
            for i in a..b {
                let (k, s) = (keys[i], u64::from(starts[i]));
                if s < lo || s >= hi || prev.is_some_and(|(pk, ps)| pk >= k || ps >= s) {
                    return Err(format!("bucket {i} of table {t} is out of order or range"));
                }
                prev = Some((k, s));
            }
        }
        if table_rows.iter().any(|r| *r as usize >= rows) {
            return Err("a row is out of range".into());
        }
        if functions.iter().any(|x| !x.is_finite()) {
            return Err("a hash function is not finite".into());
        }
        Ok(Self::trusted(
            meta,
            functions,
            table_offsets,
            keys,
            starts,
            table_rows,
            sigs,
        ))
    }

    /// Wrap buffers already validated by [`LshView::new`].
    pub(crate) fn trusted(
        meta: &[u64; 8],
        functions: &'a [f32],
        table_offsets: &'a [u64],
        keys: &'a [u64],
        starts: &'a [u32],
        table_rows: &'a [u32],
        sigs: &'a [u8],
    ) -> Self {
        LshView {
            family: meta[0],
            tables: meta[1] as usize,
            bits: meta[2] as usize,
            rows: meta[3] as usize,
            dim: meta[4] as usize,
            w: f64::from_bits(meta[5]) as f32,
            functions,
            table_offsets,
            keys,
            starts,
            table_rows,
            sigs,
        }
    }

    pub(crate) fn bytes(&self) -> usize {
        4 * self.functions.len()
            + 8 * self.table_offsets.len()
            + 12 * self.keys.len()
            + 4 * self.table_rows.len()
            + self.sigs.len()
    }

    pub(crate) fn family_name(&self) -> &'static str {
        if self.family == FAMILY_SIMHASH {
            "simhash"
        } else {
            "e2lsh"
        }
    }

    fn functions(&self) -> Functions<'a> {
        let nf = self.tables * self.bits;
        Functions {
            family: self.family,
            bits: self.bits,
            dim: self.dim,
            w: self.w,
            proj: &self.functions[..nf * self.dim],
            bias: &self.functions[nf * self.dim..],
        }
    }

    /// Where the rows of bucket `key` in table `t` lie in the rows array (empty if none).
    fn bucket_span(&self, t: usize, key: u64) -> std::ops::Range<usize> {
        let (a, b) = (
            self.table_offsets[t] as usize,
            self.table_offsets[t + 1] as usize,
        );
        let keys = &self.keys[a..b];
        match keys.binary_search(&key) {
            Ok(i) => {
                let s = self.starts[a + i] as usize;
                let e = if a + i + 1 < b {
                    self.starts[a + i + 1] as usize
                } else {
                    (t + 1) * self.rows
                };
                s..e
            }
            Err(_) => 0..0,
        }
    }
}

/// Perturbation sets over up to 128 candidate perturbations sorted by ascending `score`,
/// in ascending total score (shift/expand generation). A set is a bit mask over positions
/// in `score`; `valid` rejects sets that may not be applied together. Emits up to `count`
/// sets into `out`. Allocation-free apart from `heap` and `out` (reused scratch).
fn probe_sets(
    score: &[f32],
    count: usize,
    valid: impl Fn(u128) -> bool,
    heap: &mut BinaryHeap<Reverse<ProbeSet>>,
    out: &mut Vec<u128>,
) {
    out.clear();
    heap.clear();
    let n = score.len().min(128);
    if n == 0 || count == 0 {
        return;
    }
    heap.push(Reverse(ProbeSet {
        score: score[0],
        mask: 1,
        last: 0,
    }));
    // Each pop adds at most two sets; bound the work even when most sets are invalid.
    let mut budget = count * 8 + 64;
    while let Some(Reverse(set)) = heap.pop() {
        let last = set.last as usize;
        if last + 1 < n {
            heap.push(Reverse(ProbeSet {
                score: set.score - score[last] + score[last + 1],
                mask: (set.mask & !(1u128 << last)) | (1u128 << (last + 1)),
                last: set.last + 1,
            }));
            heap.push(Reverse(ProbeSet {
                score: set.score + score[last + 1],
                mask: set.mask | (1u128 << (last + 1)),
                last: set.last + 1,
            }));
        }
        if valid(set.mask) {
            out.push(set.mask);
            if out.len() >= count {
                return;
            }
        }
        budget -= 1;
        if budget == 0 {
            return;
        }
    }
}

/// A perturbation set under construction: total score, members, highest member.
#[derive(Debug, Clone, Copy)]
struct ProbeSet {
    score: f32,
    mask: u128,
    last: u8,
}

impl PartialEq for ProbeSet {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o).is_eq()
    }
}
impl Eq for ProbeSet {}
impl PartialOrd for ProbeSet {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for ProbeSet {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.score.total_cmp(&o.score).then(self.mask.cmp(&o.mask))
    }
}

/// Positions set in a mask, ascending.
fn members(mut mask: u128) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if mask == 0 {
            return None;
        }
        let i = mask.trailing_zeros() as usize;
        mask &= mask - 1;
        Some(i)
    })
}

/// Per-query knobs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LshQuery {
    pub k: usize,
    /// Buckets read per table, the query's own included.
    pub probes: usize,
    /// The best `refine * k` candidates by collision count are re-ranked exactly.
    pub refine: usize,
}

#[derive(Default)]
struct Scratch {
    h: Vec<f32>,
    ht: Vec<f32>,
    ints: Vec<i32>,
    order: Vec<(f32, u32)>,
    sets: Vec<u128>,
    partner: Vec<u128>,
    heap: BinaryHeap<Reverse<ProbeSet>>,
    score: Vec<f32>,
    qsig: Vec<u8>,
    cand: Vec<(u32, u32)>,
    spans: Vec<std::ops::Range<usize>>,
    dists: Vec<u32>,
    hist: Vec<usize>,
    rows: Vec<u32>,
    lut: Vec<f32>,
}

/// Byte tables of the asymmetric SimHash distance: `lut[b * 256 + m]` = the sum of
/// `|h[g]|` over the bits `g = 8b + j` set in `m` (a mismatch mask of signature byte `b`).
/// `h` holds the query's projections in signature bit order; bits past its end (the padding
/// of the last word) weigh nothing. Built from two 16-entry nibble tables per byte.
fn asym_tables(h: &[f32], slen: usize, lut: &mut Vec<f32>) {
    lut.clear();
    lut.resize(slen * 256, 0.0);
    let w = |g: usize| h.get(g).map_or(0.0, |x| x.abs());
    for (b, out) in lut.chunks_exact_mut(256).enumerate() {
        let (mut lo, mut hi) = ([0f32; 16], [0f32; 16]);
        for m in 1..16usize {
            let j = m.trailing_zeros() as usize;
            lo[m] = lo[m & (m - 1)] + w(8 * b + j);
            hi[m] = hi[m & (m - 1)] + w(8 * b + 4 + j);
        }
        for (hh, block) in out.chunks_exact_mut(16).enumerate() {
            for (o, l) in block.iter_mut().zip(lo) {
                *o = l + hi[hh];
            }
        }
    }
}

/// The `keep` allowed rows of smallest Hamming distance to `qsig` among every row of
/// `sigs` (ties at the cut broken by row), as `(distance, row)` into `cand`, in one pass.
///
/// A cut follows the pass: a histogram of the candidates kept so far lowers it as soon as
/// the rows strictly under it are `keep`, so most rows cost one comparison after their
/// distance, and only rows under the cut are asked `allow` (a filter or deletions never
/// need a second pass). Measured on text-minilm-dev (20k rows of 384 bits): as fast as a
/// histogram of every row followed by a collecting pass; a branch per row was 10% slower.
#[allow(
    clippy::too_many_arguments,
    reason = "the scratch buffers are the caller's"
)]
fn scan_hamming(
    kernels: &Kernels,
    qsig: &[u8],
    sigs: &[u8],
    keep: usize,
    allow: &impl Fn(usize) -> bool,
    block: &mut Vec<u32>,
    hist: &mut Vec<usize>,
    cand: &mut Vec<(u32, u32)>,
) {
    const BLOCK: usize = 1024;
    let slen = qsig.len().max(1);
    let rows = sigs.len() / slen;
    let keep = keep.max(1);
    let mut cut = 8 * slen; // no distance is larger
    hist.clear();
    hist.resize(cut + 1, 0);
    // Candidates kept with distance <= cut.
    let mut under = 0usize;
    block.resize(BLOCK, 0);
    let mut picked = [0u16; BLOCK];
    for start in (0..rows).step_by(BLOCK) {
        let end = (start + BLOCK).min(rows);
        let out = &mut block[..end - start];
        kernels.hamming_all(qsig, &sigs[start * slen..end * slen], out);
        // Rows of the block at or under the cut, branch-free (a branch per row mispredicted
        // on the rows at the cut), then those allowed.
        let mut n = 0;
        for (i, &d) in out.iter().enumerate() {
            picked[n] = i as u16;
            n += usize::from(d as usize <= cut);
        }
        for &i in &picked[..n] {
            let (d, r) = (out[usize::from(i)] as usize, start + usize::from(i));
            if d > cut || !allow(r) {
                continue;
            }
            hist[d] += 1;
            under += 1;
            cand.push((d as u32, r as u32));
            while cut > 0 && under - hist[cut] >= keep {
                under -= hist[cut];
                cut -= 1;
            }
        }
        if cand.len() > 4 * keep.max(BLOCK) {
            cand.retain(|c| c.0 as usize <= cut);
        }
    }
    cand.retain(|c| c.0 as usize <= cut);
    if cand.len() > keep {
        cand.select_nth_unstable(keep);
        cand.truncate(keep);
    }
}

/// The asymmetric distance of a row's SimHash signature to the query's: the summed margins
/// `|a_g . q + b_g|` of the bits where they differ (a bit the query barely set counts little).
#[inline]
fn asym_score(lut: &[f32], qsig: &[u8], sig: &[u8]) -> f32 {
    // PERF: eight partial sums, one per byte of a word (a single running sum waited on the
    // previous add at every byte); signatures are whole u64 words.
    let mut acc = [0f32; 8];
    for ((q, r), l) in qsig
        .chunks_exact(8)
        .zip(sig.chunks_exact(8))
        .zip(lut.chunks_exact(8 * 256))
    {
        let x = u64::from_le_bytes(q.try_into().unwrap_or([0; 8]))
            ^ u64::from_le_bytes(r.try_into().unwrap_or([0; 8]));
        let l: &[f32; 8 * 256] = l.try_into().unwrap_or(&[0.0; 8 * 256]);
        for (j, a) in acc.iter_mut().enumerate() {
            *a += l[j * 256 + ((x >> (8 * j)) & 0xff) as usize];
        }
    }
    acc.iter().sum()
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// The `q.k` nearest allowed rows among the candidates as `(row, exact distance)`.
#[allow(
    clippy::too_many_arguments,
    reason = "one search call; the parts are unrelated"
)]
pub(crate) fn search(
    ix: &LshView<'_>,
    vectors: &[f32],
    kernels: &Kernels,
    metric: Metric,
    query: &[f32],
    opts: LshQuery,
    allow: &impl Fn(usize) -> bool,
    visited: &mut Visited,
) -> Vec<(u32, f32)> {
    let fns = ix.functions();
    let (bits, dim, rows) = (ix.bits, ix.dim, ix.rows);
    let slen = sig_len(ix.family, ix.tables, bits);
    let mut top = TopK::new(opts.k);
    let simhash = ix.family == FAMILY_SIMHASH;
    let keep = opts.k.saturating_mul(opts.refine.max(1));
    // SimHash ranks twice: Hamming distance keeps `keep_ham`, the asymmetric distance `keep`.
    let keep_ham = if simhash {
        keep.saturating_mul(ASYM_WIDEN)
    } else {
        keep
    };
    SCRATCH.with(|s| {
        let s = &mut *s.borrow_mut();
        s.h.resize(ix.tables * bits, 0.0);
        s.qsig.clear();
        s.qsig.resize(slen, 0);
        s.cand.clear();
        s.spans.clear();
        fns.signature(kernels, ix.tables, query, &mut s.h, &mut s.qsig);
        let qsig = std::mem::take(&mut s.qsig);
        let sig_of = |r: usize| &ix.sigs[r * slen..(r + 1) * slen];
        // Expected rows in the probed buckets (mean occupancy): when that alone passes the
        // scan threshold, skip the bucket lookups and rank every signature directly.
        let buckets = ix.keys.len().max(1);
        let expected = ix
            .tables
            .saturating_mul(opts.probes.max(1))
            .saturating_mul(rows * ix.tables)
            / buckets;
        let mut gathered = if expected > rows / SCAN_FRACTION {
            usize::MAX
        } else {
            0
        };
        for t in 0..ix.tables {
            if gathered > rows / SCAN_FRACTION {
                break;
            }
            s.ht.clear();
            s.ht.extend_from_slice(&s.h[t * bits..(t + 1) * bits]);
            let home = fns.key(&s.ht, &mut s.ints);
            // Candidate perturbations sorted by their cost: (score, code) where the code is
            // the bit to flip (SimHash) or 2*coordinate + (0: -1, 1: +1) (E2LSH).
            s.order.clear();
            if ix.family == FAMILY_SIMHASH {
                s.order
                    .extend(s.ht.iter().enumerate().map(|(i, x)| (x * x, i as u32)));
            } else {
                for (i, x) in s.ht.iter().enumerate() {
                    let f = x - x.floor();
                    s.order.push((f * f, 2 * i as u32));
                    s.order.push(((1.0 - f) * (1.0 - f), 2 * i as u32 + 1));
                }
            }
            s.order.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
            s.score.clear();
            s.score.extend(s.order.iter().map(|o| o.0));
            let order = &s.order;
            let e2 = ix.family == FAMILY_E2LSH;
            // E2LSH: one coordinate cannot move both ways. partner[x] = the position of the
            // opposite move of the same coordinate.
            s.partner.clear();
            if e2 {
                s.partner.resize(order.len(), 0);
                let mut pos_of = [usize::MAX; 128];
                for (x, o) in order.iter().enumerate().take(128) {
                    pos_of[o.1 as usize % 128] = x;
                }
                for (x, o) in order.iter().enumerate().take(128) {
                    let other = pos_of[(o.1 ^ 1) as usize % 128];
                    if other < 128 {
                        s.partner[x] = 1u128 << other;
                    }
                }
            }
            let partner = &s.partner;
            probe_sets(
                &s.score,
                opts.probes.saturating_sub(1),
                |mask| !e2 || members(mask).all(|x| mask & partner[x] == 0),
                &mut s.heap,
                &mut s.sets,
            );
            for p in 0..=s.sets.len() {
                let key = if p == 0 {
                    home
                } else if e2 {
                    s.ints.clear();
                    s.ints.extend(s.ht.iter().map(|x| x.floor() as i32));
                    for x in members(s.sets[p - 1]) {
                        let code = order[x].1;
                        let c = &mut s.ints[(code / 2) as usize];
                        *c += if code % 2 == 0 { -1 } else { 1 };
                    }
                    e2_key(&s.ints)
                } else {
                    members(s.sets[p - 1]).fold(home, |k, x| k ^ (1u64 << order[x].1))
                };
                let span = ix.bucket_span(t, key);
                gathered += span.len();
                s.spans.push(span);
                if gathered > rows / SCAN_FRACTION {
                    break;
                }
            }
            if gathered > rows / SCAN_FRACTION {
                break;
            }
        }
        if gathered > rows / SCAN_FRACTION {
            // The buckets cover much of the segment: rank every allowed row's signature
            // (SimHash: one pass with a falling cut; E2LSH: all distances, then a histogram
            // cut at the keep-th).
            if simhash {
                scan_hamming(
                    kernels,
                    &qsig,
                    &ix.sigs[..rows * slen],
                    keep_ham,
                    allow,
                    &mut s.dists,
                    &mut s.hist,
                    &mut s.cand,
                );
            } else {
                s.dists.resize(rows, 0);
                kernels.sq_i8_all(&qsig, &ix.sigs[..rows * slen], &mut s.dists);
                let max = s.dists.iter().copied().max().unwrap_or(0) as usize;
                s.hist.clear();
                s.hist.resize(max + 2, 0);
                for (r, d) in s.dists.iter_mut().enumerate() {
                    if allow(r) {
                        s.hist[*d as usize] += 1;
                    } else {
                        *d = u32::MAX;
                    }
                }
                let (mut cut, mut seen) = (0usize, 0usize);
                while cut <= max && seen + s.hist[cut] < keep {
                    seen += s.hist[cut];
                    cut += 1;
                }
                // Every allowed row strictly below `cut`, then rows at `cut` up to `keep`.
                let mut at_cut = keep.saturating_sub(seen);
                for (r, d) in s.dists.iter().enumerate() {
                    let d = *d as usize;
                    if d < cut || (d == cut && at_cut > 0) {
                        if d == cut {
                            at_cut -= 1;
                        }
                        s.cand.push((d as u32, r as u32));
                    }
                }
            }
        } else {
            s.rows.clear();
            for span in &s.spans {
                for &row in &ix.table_rows[span.clone()] {
                    let r = row as usize;
                    if visited.insert(r) && allow(r) {
                        s.rows.push(row);
                    }
                }
            }
            // PERF: one kernel call scores every candidate (E2LSH i8 signatures); on 1M x 128
            // per-candidate calls were the largest cost of the gathering path.
            s.dists.resize(s.rows.len(), 0);
            if simhash {
                for (d, &row) in s.dists.iter_mut().zip(&s.rows) {
                    *d = sig_distance(kernels, true, sig_of(row as usize), &qsig);
                }
            } else {
                kernels.sq_i8_gather(&qsig, ix.sigs, &s.rows, &mut s.dists);
            }
            s.cand
                .extend(s.dists.iter().copied().zip(s.rows.iter().copied()));
            if s.cand.len() > keep_ham {
                s.cand.select_nth_unstable(keep_ham);
                s.cand.truncate(keep_ham);
            }
        }
        if simhash && s.cand.len() > keep {
            // Non-negative f32 scores order as their bit patterns.
            asym_tables(&s.h, slen, &mut s.lut);
            for c in &mut s.cand {
                c.0 = asym_score(&s.lut, &qsig, sig_of(c.1 as usize)).to_bits();
            }
            s.cand.select_nth_unstable(keep);
            s.cand.truncate(keep);
        }
        // PERF: the candidates' rows are scattered over the segment; prefetching two ahead
        // overlaps their memory latency with the distance of the current one.
        for (i, &(_, row)) in s.cand.iter().enumerate() {
            if let Some(&(_, ahead)) = s.cand.get(i + 2) {
                let a = ahead as usize;
                if let Some(v) = vectors.get(a * dim..(a + 1) * dim) {
                    crate::distance::prefetch(v);
                }
            }
            let r = row as usize;
            top.push(
                kernels.distance(metric, query, &vectors[r * dim..(r + 1) * dim]),
                u64::from(row),
            );
        }
        s.qsig = qsig;
    });
    top.into_sorted()
        .into_iter()
        .map(|(row, d)| (row as u32, d))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_from_a_file_that_overflow_are_refused() {
        // tables x bits x (dim + 1) = 2^70: must be refused, not wrap or panic.
        let meta = [FAMILY_SIMHASH, 1 << 32, 64, 0, 1 << 32, 0, 0, 0];
        assert!(LshView::new(&meta, &[], &[0, 0], &[], &[], &[], &[]).is_err());
    }
    use crate::index::hnsw::visited::VisitedPool;

    pub(super) fn data(n: usize, dim: usize, seed: u64, normalise: bool) -> Vec<f32> {
        // Clusters of ~25 points (at least 200): neighbours are clearly nearer than the rest,
        // as in real embeddings (LSH cannot separate points of one wide Gaussian blob).
        let clusters = (n / 25).max(200);
        let mut rng = Rng::new(seed);
        let centres: Vec<f32> = (0..clusters * dim)
            .map(|_| 3.0 * rng.gaussian() as f32)
            .collect();
        let mut out = Vec::with_capacity(n * dim);
        for _ in 0..n {
            let c = rng.below(clusters);
            let mut v: Vec<f32> = (0..dim)
                .map(|t| centres[c * dim + t] + 0.3 * rng.gaussian() as f32)
                .collect();
            if normalise {
                crate::distance::normalize(&mut v);
            }
            out.extend(v);
        }
        out
    }

    /// Recall@10 against brute force over rows passing `allow`, at `probes`.
    fn recall_with(
        metric: Metric,
        normalise: bool,
        n: usize,
        probes: usize,
        allow: &dyn Fn(usize) -> bool,
    ) -> f64 {
        let dim = 32;
        let all = data(n + 50, dim, 1, normalise);
        let (v, qs) = all.split_at(n * dim);
        let kernels = Kernels::best();
        let params = LshParams {
            tables: super::LSH_DEFAULT_TABLES,
            bits: 0,
            seed: 2,
        };
        let ix = build(v, dim, metric, params, kernels).expect("built");
        let view = ix.view();
        let pool = VisitedPool::default();
        let mut hit = 0;
        for q in qs.chunks_exact(dim) {
            let mut visited = pool.take(n);
            let got = search(
                &view,
                v,
                kernels,
                metric,
                q,
                LshQuery {
                    k: 10,
                    probes,
                    refine: super::LSH_DEFAULT_REFINE,
                },
                &|r| allow(r),
                &mut visited,
            );
            let mut top = TopK::new(10);
            for (r, x) in v.chunks_exact(dim).enumerate().filter(|(r, _)| allow(*r)) {
                top.push(kernels.distance(metric, q, x), r as u64);
            }
            let want: Vec<u32> = top.into_sorted().iter().map(|x| x.0 as u32).collect();
            assert!(
                got.iter().all(|g| allow(g.0 as usize)),
                "a row the filter refuses"
            );
            hit += got.iter().filter(|g| want.contains(&g.0)).count();
        }
        eprintln!("recall {}", hit as f64 / 500.0);
        hit as f64 / 500.0
    }

    fn recall(metric: Metric, normalise: bool) -> f64 {
        recall_with(metric, normalise, 5000, super::LSH_DEFAULT_PROBES, &|_| {
            true
        })
    }

    #[test]
    fn simhash_recall() {
        let r = recall(Metric::Cosine, true);
        assert!(r >= 0.9, "recall {r}");
    }

    #[test]
    fn simhash_recall_through_the_buckets() {
        // 20k rows at 2 probes: the gathering path (not the scan of every signature), with
        // and without a filter; the Hamming and asymmetric stages rank what it gathers.
        let all = recall_with(Metric::Cosine, true, 20_000, 2, &|_| true);
        assert!(all >= 0.8, "recall {all}");
        let half = recall_with(Metric::Cosine, true, 20_000, 4, &|r| r % 2 == 0);
        assert!(half >= 0.8, "recall {half}");
    }

    #[test]
    fn e2lsh_recall() {
        let r = recall(Metric::L2, false);
        assert!(r >= 0.9, "recall {r}");
    }

    #[test]
    fn asymmetric_distance_sums_the_margins_of_mismatched_bits() {
        // Oracle: the sum over every mismatched bit of |h|, bit by bit.
        let mut rng = Rng::new(7);
        for nbits in [1usize, 7, 64, 100, 384] {
            let slen = 8 * nbits.div_ceil(64);
            let h: Vec<f32> = (0..nbits).map(|_| rng.gaussian() as f32).collect();
            let bit_bytes = |f: &dyn Fn(usize) -> bool| {
                let mut out = vec![0u8; slen];
                for g in (0..nbits).filter(|&g| f(g)) {
                    out[g / 8] |= 1 << (g % 8);
                }
                out
            };
            let qsig = bit_bytes(&|g| h[g] > 0.0);
            let mut lut = Vec::new();
            asym_tables(&h, slen, &mut lut);
            for _ in 0..20 {
                let row: Vec<bool> = (0..nbits).map(|_| rng.below(2) == 1).collect();
                let sig = bit_bytes(&|g| row[g]);
                let want: f32 = (0..nbits)
                    .filter(|&g| row[g] != (h[g] > 0.0))
                    .map(|g| h[g].abs())
                    .sum();
                let got = asym_score(&lut, &qsig, &sig);
                assert!(
                    (got - want).abs() <= 1e-4 * want.max(1.0),
                    "{nbits}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn the_one_pass_hamming_scan_keeps_what_a_full_sort_keeps() {
        // Oracle: every allowed row sorted by (distance, row), the first `keep`.
        let mut rng = Rng::new(9);
        let kernels = Kernels::best();
        for (words, rows, keep) in [
            (1usize, 50usize, 10usize),
            (6, 5000, 400),
            (6, 3000, 1),
            (3, 2500, 2000),
            (2, 100, 500),
        ] {
            let slen = 8 * words;
            // Few distinct bits per row: many ties at every distance.
            let sigs: Vec<u8> = (0..rows * slen)
                .map(|_| {
                    if rng.below(4) == 0 {
                        1 << rng.below(8)
                    } else {
                        0
                    }
                })
                .collect();
            let qsig: Vec<u8> = (0..slen).map(|_| rng.below(256) as u8).collect();
            for stride in [1usize, 3, 7] {
                let allow = |r: usize| r.is_multiple_of(stride);
                let (mut block, mut hist, mut cand) = (Vec::new(), Vec::new(), Vec::new());
                scan_hamming(
                    kernels, &qsig, &sigs, keep, &allow, &mut block, &mut hist, &mut cand,
                );
                cand.sort_unstable();
                let mut want: Vec<(u32, u32)> = (0..rows)
                    .filter(|&r| allow(r))
                    .map(|r| {
                        (
                            kernels.hamming(&qsig, &sigs[r * slen..(r + 1) * slen]),
                            r as u32,
                        )
                    })
                    .collect();
                want.sort_unstable();
                want.truncate(keep);
                assert_eq!(
                    cand, want,
                    "{words} words, {rows} rows, keep {keep}, stride {stride}"
                );
            }
        }
    }

    #[test]
    fn probe_sets_ascend_and_respect_validity() {
        let score = [0.1, 0.2, 0.4, 0.8];
        let (mut out, mut heap) = (Vec::new(), BinaryHeap::new());
        probe_sets(&score, 15, |_| true, &mut heap, &mut out);
        assert_eq!(out.len(), 15); // every non-empty subset of 4
        let totals: Vec<f32> = out
            .iter()
            .map(|m| members(*m).map(|i| score[i]).sum())
            .collect();
        assert!(totals.windows(2).all(|w| w[0] <= w[1] + 1e-6), "{totals:?}");
        let distinct: std::collections::HashSet<u128> = out.iter().copied().collect();
        assert_eq!(distinct.len(), 15);
        probe_sets(&score, 15, |m| m & 0b10 == 0, &mut heap, &mut out);
        assert!(out.iter().all(|m| m & 0b10 == 0));
        assert_eq!(out.len(), 7);
    }

    #[test]
    fn damaged_tables_are_refused() {
        let v = data(2000, 8, 3, true);
        let ix = build(
            &v,
            8,
            Metric::Cosine,
            LshParams {
                tables: 4,
                bits: 0,
                seed: 1,
            },
            Kernels::best(),
        )
        .expect("built");
        let chk = |f: &FrozenLsh| {
            LshView::new(
                &f.meta,
                &f.functions,
                &f.table_offsets,
                &f.keys,
                &f.starts,
                &f.rows,
                &f.sigs,
            )
            .is_ok()
        };
        assert!(chk(&ix));
        let mut bad = ix.clone();
        bad.rows[3] = 2000;
        assert!(!chk(&bad));
        let mut bad = ix.clone();
        bad.starts[1] = bad.starts[0];
        assert!(!chk(&bad));
        let mut bad = ix.clone();
        bad.meta[0] = 9;
        assert!(!chk(&bad));
        let mut bad = ix;
        bad.table_offsets[2] = bad.table_offsets[4] + 1;
        assert!(!chk(&bad));
    }
}
