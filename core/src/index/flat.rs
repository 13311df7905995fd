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
