//! IVF-PQ: an inverted file over `nlist` k-means centroids whose lists hold product-quantised
//! residuals (`pq_m` sub-quantisers of 256 codewords, one byte each), searched by
//! asymmetric distance computation (a per-query lookup table) over the `nprobe` nearest
//! lists, then exact re-ranking of the best `refine * k` candidates from the full vectors.
//!
//! Frozen layout (FORMAT.md §IVF-PQ):
//! - meta `u64 [8]` = nlist, pq_m, dsub, rows, dim, seed, 0, 0;
//! - centroids `f32 [nlist][dim]`;
//! - codebooks `f32 [pq_m][dsub][256]` (each sub-quantiser transposed: component-major);
//! - list offsets `u64 [nlist + 1]`, prefix sums into the two arrays below;
//! - list rows `u32 [rows]`: the segment rows of each list, list after list;
//! - codes `u8 [rows][pq_m]`, in the same order as list rows.

pub(crate) mod kind;

use std::cell::RefCell;

use rayon::prelude::*;

use crate::distance::Metric;
use crate::index::kmeans::{self, sq_dists_transposed, Centroids};
use crate::index::rng::Rng;
use crate::index::topk::TopK;
use crate::index::SegmentRows;

/// Codewords per sub-quantiser (8-bit codes).
pub(crate) const KSUB: usize = 256;
/// Segments with fewer rows are not trained; they are scanned exactly.
pub(crate) const MIN_TRAIN_ROWS: usize = 1025;
/// At least this many rows per list: `nlist` is lowered for small segments.
pub(crate) const MIN_ROWS_PER_LIST: usize = 32;
/// Training sample sizes and iterations.
const COARSE_SAMPLE_PER_LIST: usize = 64;
const PQ_SAMPLE: usize = 32_768;
const COARSE_ITERS: usize = 16;
const PQ_ITERS: usize = 12;

/// Build-time parameters (`0` = choose from the data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IvfPqParams {
    pub nlist: usize,
    pub pq_m: usize,
    pub seed: u64,
}

/// Default `nprobe` of IVF-PQ.
pub const IVF_DEFAULT_NPROBE: usize = 24;
/// Default `refine` of IVF-PQ.
pub const IVF_DEFAULT_REFINE: usize = 10;

/// The default number of sub-quantisers: the largest divisor of `dim` not above `dim / 4`,
/// so codes take at most 1/16 of the float32 vector.
pub(crate) fn default_pq_m(dim: usize) -> usize {
    (1..=(dim / 4).max(1))
        .rev()
        .find(|m| dim.is_multiple_of(*m))
        .unwrap_or(1)
}

/// `nlist` for a segment of `rows`: the requested one (or `2 * sqrt(rows)`), lowered so
/// every list averages at least [`MIN_ROWS_PER_LIST`] rows.
pub(crate) fn effective_nlist(requested: usize, rows: usize) -> usize {
    let want = if requested == 0 {
        (2.0 * (rows as f64).sqrt()).round() as usize
    } else {
        requested
    };
    want.min(rows / MIN_ROWS_PER_LIST).max(1)
}

/// Owned index buffers, as written to a segment file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FrozenIvfPq {
    pub meta: [u64; 8],
    pub centroids: Vec<f32>,
    pub codebooks: Vec<f32>,
    pub list_offsets: Vec<u64>,
    pub list_rows: Vec<u32>,
    pub codes: Vec<u8>,
}

impl FrozenIvfPq {
    #[cfg(test)]
    pub(crate) fn view(&self) -> IvfPqView<'_> {
        IvfPqView::trusted(
            &self.meta,
            &self.centroids,
            &self.codebooks,
            &self.list_offsets,
            &self.list_rows,
            &self.codes,
        )
    }
}

/// Train and encode an index over `vectors` (row-major, `dim` wide). `None` when the segment
/// has too few rows to train ([`MIN_TRAIN_ROWS`]); such segments are scanned exactly.
pub(crate) fn build(vectors: &[f32], dim: usize, params: IvfPqParams) -> Option<FrozenIvfPq> {
    let rows = vectors.len() / dim;
    if rows < MIN_TRAIN_ROWS {
        return None;
    }
    let m = if params.pq_m == 0 {
        default_pq_m(dim)
    } else {
        params.pq_m
    };
    assert!(dim.is_multiple_of(m), "pq_m is validated with the config");
    let dsub = dim / m;
    let nlist = effective_nlist(params.nlist, rows);
    let mut rng = Rng::new(params.seed);
    let gather = |idx: &[usize]| -> Vec<f32> {
        let mut out = Vec::with_capacity(idx.len() * dim);
        for &i in idx {
            out.extend_from_slice(&vectors[i * dim..(i + 1) * dim]);
        }
        out
    };

    // Coarse quantiser on a sample, then every row to its list.
    let sample = gather(&rng.sample(rows, nlist * COARSE_SAMPLE_PER_LIST));
    let coarse = kmeans::train(&sample, dim, nlist, COARSE_ITERS, rng.next_u64());
    let assigned = kmeans::assign(vectors, &coarse);

    // Sub-quantisers on residuals of a sample, one k-means per subspace, in parallel.
    let pq_idx = rng.sample(rows, PQ_SAMPLE);
    let residual = |i: usize, out: &mut [f32]| {
        let c = coarse.row(assigned[i].0 as usize);
        for ((o, x), y) in out.iter_mut().zip(&vectors[i * dim..(i + 1) * dim]).zip(c) {
            *o = x - y;
        }
    };
    let mut res_sample = vec![0.0f32; pq_idx.len() * dim];
    for (j, &i) in pq_idx.iter().enumerate() {
        residual(i, &mut res_sample[j * dim..(j + 1) * dim]);
    }
    let seeds: Vec<u64> = (0..m).map(|_| rng.next_u64()).collect();
    let books: Vec<Centroids> = (0..m)
        .into_par_iter()
        .map(|s| {
            let sub: Vec<f32> = res_sample
                .chunks_exact(dim)
                .flat_map(|r| r[s * dsub..(s + 1) * dsub].iter().copied())
                .collect();
            train_subspace(&sub, dsub, seeds[s])
        })
        .collect();
    let mut codebooks = Vec::with_capacity(m * dsub * KSUB);
    for b in &books {
        codebooks.extend_from_slice(&b.cols);
    }

    // Encode every row's residual.
    let mut codes_by_row = vec![0u8; rows * m];
    codes_by_row
        .par_chunks_mut(m * 256)
        .enumerate()
        .for_each(|(block, out)| {
            let mut r = vec![0.0f32; dim];
            let mut acc = vec![0.0f32; KSUB];
            for (j, code) in out.chunks_exact_mut(m).enumerate() {
                residual(block * 256 + j, &mut r);
                for (s, c) in code.iter_mut().enumerate() {
                    *c = books[s].nearest(&r[s * dsub..(s + 1) * dsub], &mut acc).0 as u8;
                }
            }
        });

    // Group rows by list (stable: rows stay in row order within a list).
    let mut list_offsets = vec![0u64; nlist + 1];
    for (c, _) in &assigned {
        list_offsets[*c as usize + 1] += 1;
    }
    for i in 0..nlist {
        list_offsets[i + 1] += list_offsets[i];
    }
    let mut fill: Vec<u64> = list_offsets[..nlist].to_vec();
    let mut list_rows = vec![0u32; rows];
    let mut codes = vec![0u8; rows * m];
    for (row, (c, _)) in assigned.iter().enumerate() {
        let at = fill[*c as usize] as usize;
        fill[*c as usize] += 1;
        list_rows[at] = row as u32;
        codes[at * m..(at + 1) * m].copy_from_slice(&codes_by_row[row * m..(row + 1) * m]);
    }
    Some(FrozenIvfPq {
        meta: [
            nlist as u64,
            m as u64,
            dsub as u64,
            rows as u64,
            dim as u64,
            params.seed,
            0,
            0,
        ],
        centroids: coarse.rows,
        codebooks,
        list_offsets,
        list_rows,
        codes,
    })
}

/// k-means with 256 centres over one subspace (fewer distinct points than 256 leave
/// duplicate codewords, which is harmless).
fn train_subspace(sub: &[f32], dsub: usize, seed: u64) -> Centroids {
    kmeans::train(sub, dsub, KSUB, PQ_ITERS, seed)
}

/// An index borrowed from a segment map (or from owned buffers).
#[derive(Debug, Clone, Copy)]
pub(crate) struct IvfPqView<'a> {
    pub nlist: usize,
    pub m: usize,
    pub dsub: usize,
    pub rows: usize,
    pub dim: usize,
    centroids: &'a [f32],
    codebooks: &'a [f32],
    list_offsets: &'a [u64],
    list_rows: &'a [u32],
    codes: &'a [u8],
}

impl<'a> IvfPqView<'a> {
    /// Validate buffers read from a file: every size, offsets monotone and ending at
    /// `rows`, every list row in range. O(rows); run once at open.
    pub(crate) fn new(
        meta: &[u64; 8],
        centroids: &'a [f32],
        codebooks: &'a [f32],
        list_offsets: &'a [u64],
        list_rows: &'a [u32],
        codes: &'a [u8],
    ) -> Result<Self, String> {
        let v = Self::trusted(meta, centroids, codebooks, list_offsets, list_rows, codes);
        let big = |x: u64| usize::try_from(x).ok().filter(|x| *x <= 1 << 40);
        let (Some(nlist), Some(m), Some(dsub), Some(rows), Some(dim)) = (
            big(meta[0]),
            big(meta[1]),
            big(meta[2]),
            big(meta[3]),
            big(meta[4]),
        ) else {
            return Err("meta values out of range".into());
        };
        // Products are checked: every factor comes from the file (each up to 2^40).
        let mul = |a: usize, b: usize| a.checked_mul(b);
        if nlist == 0 || m == 0 || dsub == 0 || mul(m, dsub) != Some(dim) {
            return Err(format!(
                "bad shape nlist {nlist} pq_m {m} dsub {dsub} dim {dim}"
            ));
        }
        if Some(centroids.len()) != mul(nlist, dim)
            || Some(codebooks.len()) != mul(dim, KSUB)
            || list_offsets.len() != nlist + 1
            || list_rows.len() != rows
            || Some(codes.len()) != mul(rows, m)
        {
            return Err("section sizes do not match the meta".into());
        }
        if list_offsets[0] != 0
            || list_offsets[nlist] != rows as u64
            || list_offsets.windows(2).any(|w| w[0] > w[1])
        {
            return Err("list offsets are not a prefix sum ending at rows".into());
        }
        if list_rows.iter().any(|r| *r as usize >= rows) {
            return Err("a list row is out of range".into());
        }
        if centroids.iter().chain(codebooks).any(|x| !x.is_finite()) {
            return Err("a centroid or codeword is not finite".into());
        }
        Ok(v)
    }

    /// Wrap buffers already validated by [`IvfPqView::new`].
    pub(crate) fn trusted(
        meta: &[u64; 8],
        centroids: &'a [f32],
        codebooks: &'a [f32],
        list_offsets: &'a [u64],
        list_rows: &'a [u32],
        codes: &'a [u8],
    ) -> Self {
        IvfPqView {
            nlist: meta[0] as usize,
            m: meta[1] as usize,
            dsub: meta[2] as usize,
            rows: meta[3] as usize,
            dim: meta[4] as usize,
            centroids,
            codebooks,
            list_offsets,
            list_rows,
            codes,
        }
    }

    pub(crate) fn bytes(&self) -> usize {
        4 * (self.centroids.len() + self.codebooks.len())
            + 8 * self.list_offsets.len()
            + 4 * self.list_rows.len()
            + self.codes.len()
    }

    pub(crate) fn code_bytes_per_vector(&self) -> usize {
        self.m
    }

    fn centroid(&self, c: usize) -> &'a [f32] {
        &self.centroids[c * self.dim..(c + 1) * self.dim]
    }

    fn list(&self, c: usize) -> (&'a [u32], &'a [u8]) {
        let (a, b) = (
            self.list_offsets[c] as usize,
            self.list_offsets[c + 1] as usize,
        );
        (&self.list_rows[a..b], &self.codes[a * self.m..b * self.m])
    }

    /// Reconstruct row `at` of list order (centroid + decoded residual); for tests.
    #[cfg(test)]
    fn decode(&self, list: usize, code: &[u8]) -> Vec<f32> {
        let mut out = self.centroid(list).to_vec();
        for (s, &c) in code.iter().enumerate() {
            for t in 0..self.dsub {
                out[s * self.dsub + t] += self.codebooks[(s * self.dsub + t) * KSUB + c as usize];
            }
        }
        out
    }
}

/// Per-query knobs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IvfPqQuery {
    pub k: usize,
    pub nprobe: usize,
    pub refine: usize,
}

#[derive(Default)]
struct Scratch {
    coarse: Vec<(f32, u32)>,
    lut: Vec<[f32; KSUB]>,
    resid: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// ADC score of one code: the sum of its table entries.
// PERF: four partial sums break the add dependency chain; `[f32; 256]` rows indexed by a
// `u8` need no bounds checks.
#[inline]
fn adc(lut: &[[f32; KSUB]], code: &[u8]) -> f32 {
    let mut s = [0.0f32; 4];
    let mut lc = lut.chunks_exact(4);
    let mut cc = code.chunks_exact(4);
    for (l, c) in (&mut lc).zip(&mut cc) {
        s[0] += l[0][c[0] as usize];
        s[1] += l[1][c[1] as usize];
        s[2] += l[2][c[2] as usize];
        s[3] += l[3][c[3] as usize];
    }
    for (l, c) in lc.remainder().iter().zip(cc.remainder()) {
        s[0] += l[*c as usize];
    }
    (s[0] + s[1]) + (s[2] + s[3])
}

/// The `q.k` nearest allowed rows as `(row, exact distance)`, nearest first.
///
/// Lists are probed nearest centroid first: the first `nprobe`, then more while fewer than
/// `k` allowed rows were seen (so a selective filter widens the search until k pass or the
/// lists run out). Disallowed rows are skipped before they are scored. The best
/// `refine * k` rows by ADC score are re-ranked exactly against `vectors`.
#[allow(
    clippy::too_many_arguments,
    reason = "one search call; the parts are unrelated"
)]
pub(crate) fn search(
    ix: &IvfPqView<'_>,
    seg: &SegmentRows<'_>,
    query: &[f32],
    opts: IvfPqQuery,
    allow: &impl Fn(usize) -> bool,
) -> Vec<(u32, f32)> {
    let (kernels, metric) = (seg.kernels, seg.metric);
    let (m, dsub, dim) = (ix.m, ix.dsub, ix.dim);
    debug_assert_eq!(seg.vectors.len(), ix.rows * dim);
    SCRATCH.with(|s| {
        let s = &mut *s.borrow_mut();
        s.coarse.clear();
        s.coarse.extend(
            (0..ix.nlist).map(|c| (kernels.distance(metric, query, ix.centroid(c)), c as u32)),
        );
        s.coarse
            .sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        s.lut.resize(m, [0.0; KSUB]);
        s.resid.resize(dim, 0.0);
        let by_ip = metric != Metric::L2;
        if by_ip {
            // <q, c + r> = <q, c> + sum_s <q_s, r_s>: one table for every list.
            for (sub, lut) in s.lut.iter_mut().enumerate() {
                lut.fill(0.0);
                for t in 0..dsub {
                    let qt = query[sub * dsub + t];
                    let col = &ix.codebooks[(sub * dsub + t) * KSUB..(sub * dsub + t + 1) * KSUB];
                    for (o, c) in lut.iter_mut().zip(col) {
                        *o -= qt * c;
                    }
                }
            }
        }
        let pool = opts.k.saturating_mul(opts.refine.max(1));
        let mut cand = TopK::new(pool);
        let mut allowed_seen = 0usize;
        for (probe, &(cd, list)) in s.coarse.iter().enumerate() {
            if probe >= opts.nprobe && allowed_seen >= opts.k {
                break;
            }
            let list = list as usize;
            let bias = if by_ip {
                // Distances are `base - <q, c> - sum`, with base 1 (cosine) or 0 (dot);
                // the table holds the negated sums and `cd` already is base - <q, c>.
                cd
            } else {
                let c = ix.centroid(list);
                for ((r, q), c) in s.resid.iter_mut().zip(query).zip(c) {
                    *r = q - c;
                }
                for (sub, lut) in s.lut.iter_mut().enumerate() {
                    sq_dists_transposed(
                        &s.resid[sub * dsub..(sub + 1) * dsub],
                        &ix.codebooks[sub * dsub * KSUB..(sub + 1) * dsub * KSUB],
                        KSUB,
                        lut,
                    );
                }
                0.0
            };
            let (rows, codes) = ix.list(list);
            let mut thr = cand.threshold();
            for (row, code) in rows.iter().zip(codes.chunks_exact(m)) {
                let d = bias + adc(&s.lut, code);
                if d <= thr && allow(*row as usize) {
                    allowed_seen += 1;
                    cand.push(d, u64::from(*row));
                    thr = cand.threshold();
                }
            }
        }
        let rows: Vec<u32> = cand.into_sorted().iter().map(|(r, _)| *r as u32).collect();
        let mut top = TopK::new(opts.k);
        seg.rerank(query, &rows, |row, d| top.push(d, u64::from(row)));
        top.into_sorted()
            .into_iter()
            .map(|(row, d)| (row as u32, d))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distance::Kernels;

    #[test]
    fn sizes_from_a_file_that_overflow_are_refused() {
        // pq_m x dsub = 2^64 wraps to 0 = dim: must be refused, not accepted or panic.
        let meta = [1, 1 << 32, 1 << 32, 0, 0, 0, 0, 0];
        assert!(IvfPqView::new(&meta, &[], &[], &[0, 0], &[], &[]).is_err());
        let meta = [1 << 40, 1, 1 << 40, 0, 1 << 40, 0, 0, 0];
        assert!(IvfPqView::new(&meta, &[], &[], &[0, 0], &[], &[]).is_err());
    }

    /// Clustered data in `dim` dimensions.
    fn data(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        let centres: Vec<f32> = (0..20 * dim).map(|_| 3.0 * rng.gaussian() as f32).collect();
        let mut out = Vec::with_capacity(n * dim);
        for _ in 0..n {
            let c = rng.below(20);
            for t in 0..dim {
                out.push(centres[c * dim + t] + rng.gaussian() as f32);
            }
        }
        out
    }

    fn exact(vectors: &[f32], dim: usize, q: &[f32], k: usize) -> Vec<u32> {
        let mut top = TopK::new(k);
        for (r, v) in vectors.chunks_exact(dim).enumerate() {
            let d: f32 = q.iter().zip(v).map(|(a, b)| (a - b) * (a - b)).sum();
            top.push(d, r as u64);
        }
        top.into_sorted().into_iter().map(|x| x.0 as u32).collect()
    }

    #[test]
    fn default_pq_m_divides_and_compresses_16x() {
        assert_eq!(default_pq_m(384), 96);
        assert_eq!(default_pq_m(128), 32);
        assert_eq!(default_pq_m(100), 25);
        assert_eq!(default_pq_m(7), 1);
        assert_eq!(default_pq_m(3), 1);
        for d in 1..300 {
            let m = default_pq_m(d);
            assert!(d % m == 0 && (m <= d / 4 || m == 1));
        }
    }

    #[test]
    fn too_small_is_not_trained() {
        let v = data(MIN_TRAIN_ROWS - 1, 8, 1);
        assert!(build(
            &v,
            8,
            IvfPqParams {
                nlist: 0,
                pq_m: 0,
                seed: 1
            }
        )
        .is_none());
    }

    #[test]
    fn recall_and_validation() {
        let (n, dim) = (4000, 32);
        let v = data(n, dim, 2);
        let ix = build(
            &v,
            dim,
            IvfPqParams {
                nlist: 0,
                pq_m: 8,
                seed: 3,
            },
        )
        .expect("trained");
        let view = IvfPqView::new(
            &ix.meta,
            &ix.centroids,
            &ix.codebooks,
            &ix.list_offsets,
            &ix.list_rows,
            &ix.codes,
        )
        .expect("valid");
        let kernels = Kernels::best();
        let seg = crate::index::SegmentRows {
            vectors: &v,
            dim,
            kernels,
            metric: Metric::L2,
            source: None,
        };
        let qs = data(50, dim, 99);
        let mut hit = 0;
        for q in qs.chunks_exact(dim) {
            let opts = IvfPqQuery {
                k: 10,
                nprobe: 16,
                refine: 8,
            };
            let got = search(&view, &seg, q, opts, &|_| true);
            let want = exact(&v, dim, q, 10);
            hit += got.iter().filter(|g| want.contains(&g.0)).count();
            // Exact re-ranking: reported distances are true distances, ascending.
            assert!(got.windows(2).all(|w| w[0].1 <= w[1].1));
        }
        let recall = hit as f64 / 500.0;
        assert!(recall >= 0.9, "recall {recall}");

        // A filter passing only even rows never returns an odd one and still finds k.
        let q = &qs[..dim];
        let opts = IvfPqQuery {
            k: 10,
            nprobe: 1,
            refine: 4,
        };
        let got = search(&view, &seg, q, opts, &|r| r % 97 == 0);
        assert_eq!(got.len(), 10);
        assert!(got.iter().all(|g| g.0 % 97 == 0));

        let mut bad = ix.clone();
        bad.list_rows[5] = n as u32;
        assert!(IvfPqView::new(
            &bad.meta,
            &bad.centroids,
            &bad.codebooks,
            &bad.list_offsets,
            &bad.list_rows,
            &bad.codes
        )
        .is_err());
        let mut bad = ix.clone();
        bad.list_offsets[1] = bad.list_offsets[2] + 1;
        assert!(IvfPqView::new(
            &bad.meta,
            &bad.centroids,
            &bad.codebooks,
            &bad.list_offsets,
            &bad.list_rows,
            &bad.codes
        )
        .is_err());
        let mut bad = ix.clone();
        bad.meta[1] = 7;
        assert!(IvfPqView::new(
            &bad.meta,
            &bad.centroids,
            &bad.codebooks,
            &bad.list_offsets,
            &bad.list_rows,
            &bad.codes
        )
        .is_err());
    }

    #[test]
    fn reconstruction_error_falls_as_pq_m_grows() {
        let (n, dim) = (3000, 32);
        let v = data(n, dim, 4);
        let mut last = f64::INFINITY;
        for m in [2, 4, 8, 16] {
            let ix = build(
                &v,
                dim,
                IvfPqParams {
                    nlist: 16,
                    pq_m: m,
                    seed: 5,
                },
            )
            .expect("trained");
            let view = ix.view();
            let mut err = 0.0f64;
            for list in 0..view.nlist {
                let (rows, codes) = view.list(list);
                for (r, code) in rows.iter().zip(codes.chunks_exact(m)) {
                    let rec = view.decode(list, code);
                    let x = &v[*r as usize * dim..(*r as usize + 1) * dim];
                    err += rec
                        .iter()
                        .zip(x)
                        .map(|(a, b)| f64::from((a - b) * (a - b)))
                        .sum::<f64>();
                }
            }
            let mse = err / n as f64;
            assert!(mse < last * 0.9, "pq_m {m}: mse {mse} not below {last}");
            last = mse;
        }
    }

    #[test]
    fn deterministic_for_a_seed() {
        let v = data(2000, 16, 6);
        let p = IvfPqParams {
            nlist: 0,
            pq_m: 4,
            seed: 11,
        };
        assert_eq!(build(&v, 16, p), build(&v, 16, p));
    }
}
