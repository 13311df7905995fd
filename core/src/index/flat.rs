//! Exact search by a full scan: the oracle every other index is tested against.

use super::topk::TopK;
use crate::distance::Kernels;
use crate::distance::Metric;

/// Scan `vectors` (row-major, `dim` wide) and push every allowed row into `top`,
/// keyed by `key(row)`.
// PERF: the metric is matched once outside the loop so the loop body is one kernel
// call and a compare; rows that cannot enter the heap never touch it.
#[allow(
    clippy::too_many_arguments,
    reason = "a hot kernel; a struct would add indirection"
)]
pub(crate) fn scan(
    kernels: &Kernels,
    metric: Metric,
    dim: usize,
    vectors: &[f32],
    query: &[f32],
    allow: impl Fn(usize) -> bool,
    key: impl Fn(usize) -> u64,
    top: &mut TopK,
) {
    macro_rules! run {
        ($dist:expr) => {{
            let mut thr = top.threshold();
            for (row, v) in vectors.chunks_exact(dim).enumerate() {
                let d = $dist(v);
                if d <= thr && allow(row) {
                    top.push(d, key(row));
                    thr = top.threshold();
                }
            }
        }};
    }
    match metric {
        Metric::L2 => run!(|v| kernels.l2_sq(query, v)),
        Metric::Cosine => run!(|v| 1.0 - kernels.dot(query, v)),
        Metric::Dot => run!(|v| -kernels.dot(query, v)),
    }
}

/// Queries scanned together by [`scan_block`].
pub(crate) const QUERY_BLOCK: usize = 8;

/// Like [`scan`] for up to [`QUERY_BLOCK`] queries at once: each stored vector is read from
/// memory once and compared with every query of the block while it is in L1.
// PERF: a flat scan is memory-bound (one pass over all vectors per query); blocking
// queries divides the memory traffic by the block size. Measured with annbench's batch QPS.
#[allow(
    clippy::too_many_arguments,
    reason = "a hot kernel; a struct would add indirection"
)]
pub(crate) fn scan_block(
    kernels: &Kernels,
    metric: Metric,
    dim: usize,
    vectors: &[f32],
    queries: &[&[f32]],
    allow: impl Fn(usize) -> bool,
    key: impl Fn(usize) -> u64,
    tops: &mut [TopK],
) {
    debug_assert_eq!(queries.len(), tops.len());
    let mut thr: Vec<f32> = tops.iter().map(TopK::threshold).collect();
    for (row, v) in vectors.chunks_exact(dim).enumerate() {
        let mut allowed: Option<bool> = None;
        for (i, q) in queries.iter().enumerate() {
            let d = match metric {
                Metric::L2 => kernels.l2_sq(q, v),
                Metric::Cosine => 1.0 - kernels.dot(q, v),
                Metric::Dot => -kernels.dot(q, v),
            };
            if d <= thr[i] && *allowed.get_or_insert_with(|| allow(row)) {
                tops[i].push(d, key(row));
                thr[i] = tops[i].threshold();
            }
        }
    }
}

/// Rows compared per matrix product in [`GemmBatch::scan`].
const GEMM_ROWS: usize = 512;

/// Batch exact search by matrix products: each block of rows is multiplied with all the
/// queries at once ([`crate::distance::gemm::dots`]), which ranks candidates; the best
/// `2k + 16` of each query per segment are then re-ranked with the one-pair kernels, so the
/// distances returned are the same as [`scan`]'s. The products are rounded differently from
/// those kernels (by at most `eps` for a query, a bound from the dimension and the norms), so
/// a query whose k-th exact distance is not clearly below every row left out (the worst
/// candidate's ranking distance minus `eps`) is reported by [`GemmBatch::unsure`] and the
/// caller scans it exactly: the results never depend on the rounding.
// PERF: measured against `scan_block` on text-minilm-dev (20k x 384, 1,000 queries, 2
// threads): see README "Batch exact search".
pub(crate) struct GemmBatch<'a> {
    kernels: &'a Kernels,
    metric: Metric,
    dim: usize,
    queries: &'a [f32],
    k: usize,
    /// Squared norm of each query.
    qn: Vec<f32>,
    /// Per query: every row not re-ranked so far has an exact distance above this.
    floor: Vec<f32>,
    buf: Vec<f32>,
    rn: Vec<f32>,
}

impl<'a> GemmBatch<'a> {
    /// A batch of `queries` (row-major, `dim` wide) for the `k` nearest.
    pub(crate) fn new(
        kernels: &'a Kernels,
        metric: Metric,
        dim: usize,
        queries: &'a [f32],
        k: usize,
    ) -> GemmBatch<'a> {
        let qn: Vec<f32> = queries
            .chunks_exact(dim.max(1))
            .map(|q| kernels.dot(q, q))
            .collect();
        let nq = qn.len();
        GemmBatch {
            kernels,
            metric,
            dim,
            queries,
            k,
            qn,
            floor: vec![f32::INFINITY; nq],
            buf: Vec::new(),
            rn: Vec::new(),
        }
    }

    /// Search one segment's `vectors`; allowed rows enter `tops` (one per query) keyed by
    /// `key(row)`.
    pub(crate) fn scan(
        &mut self,
        vectors: &[f32],
        allow: impl Fn(usize) -> bool,
        key: impl Fn(usize) -> u64,
        tops: &mut [TopK],
    ) {
        let (dim, nq) = (self.dim, self.qn.len());
        if dim == 0 || vectors.is_empty() || nq == 0 {
            return;
        }
        let wide = 2 * self.k + 16;
        let mut cands: Vec<TopK> = (0..nq).map(|_| TopK::new(wide)).collect();
        let mut rmax = 0.0f32;
        for (b, block) in vectors.chunks(GEMM_ROWS * dim).enumerate() {
            let nr = block.len() / dim;
            let first = b * GEMM_ROWS;
            self.rn.clear();
            self.rn
                .extend(block.chunks_exact(dim).map(|r| self.kernels.dot(r, r)));
            rmax = self.rn.iter().copied().fold(rmax, f32::max);
            self.buf.resize(nq * nr, 0.0);
            crate::distance::gemm::dots(self.queries, block, dim, &mut self.buf);
            for (i, c) in cands.iter_mut().enumerate() {
                let dots = &self.buf[i * nr..(i + 1) * nr];
                let mut thr = c.threshold();
                let qn = self.qn[i];
                for (j, (&p, &rn)) in dots.iter().zip(&self.rn).enumerate() {
                    let d = match self.metric {
                        Metric::L2 => qn + rn - 2.0 * p,
                        Metric::Cosine => 1.0 - p,
                        Metric::Dot => -p,
                    };
                    if d <= thr && allow(first + j) {
                        c.push(d, (first + j) as u64);
                        thr = c.threshold();
                    }
                }
            }
        }
        // Rounding of one dot product of length dim is at most dim·u·Σ|q_t r_t| <=
        // dim·u·(|q|² + |r|²)/2 (u = 2^-24); the ranking distance and the exact one each
        // carry such an error (L2 twice over: the norms), so 4·(dim + 2)·EPSILON·(|q|² +
        // max |r|²) bounds how far apart they can be, with room to spare.
        let gamma = 4.0 * (dim as f32 + 2.0) * f32::EPSILON;
        for (i, c) in cands.into_iter().enumerate() {
            let worst = c.threshold();
            let q = &self.queries[i * dim..(i + 1) * dim];
            for (row, _) in c.into_sorted() {
                let row = row as usize;
                let v = &vectors[row * dim..(row + 1) * dim];
                tops[i].push(self.kernels.distance(self.metric, q, v), key(row));
            }
            if worst.is_finite() {
                let eps = gamma * (self.qn[i] + rmax);
                self.floor[i] = self.floor[i].min(worst - eps);
            }
        }
    }

    /// The queries whose results the ranking cannot vouch for (see the type): their k-th
    /// distance is not below every row left out. The caller scans them exactly.
    pub(crate) fn unsure(&self, tops: &[TopK]) -> Vec<usize> {
        tops.iter()
            .zip(&self.floor)
            .enumerate()
            .filter(|(_, (t, floor))| t.len() >= self.k && t.threshold() >= **floor)
            .map(|(i, _)| i)
            .collect()
    }
}
