//! Dot products of a block of queries with a block of rows as one matrix product (the `gemm`
//! crate's packed, register-tiled kernels, chosen at runtime: AVX-512, AVX2/FMA or NEON; one
//! thread, no pool: the caller's rayon chunks are the parallelism). Batch exact search ranks
//! candidates with it; what it returns is rounded differently from the one-pair kernels, so
//! callers re-rank with those (see [`crate::index::flat::GemmBatch`]).

/// `out[i * nr + j] = q_i · r_j` for the `nq` queries in `queries` and the `nr` rows in
/// `rows` (both row-major, `dim` wide); `out` holds at least `nq * nr` values.
pub(crate) fn dots(queries: &[f32], rows: &[f32], dim: usize, out: &mut [f32]) {
    if dim == 0 {
        return;
    }
    let (nq, nr) = (queries.len() / dim, rows.len() / dim);
    assert!(
        out.len() >= nq * nr && queries.len() == nq * dim && rows.len() == nr * dim,
        "gemm: {nq} x {nr} products need {} output values, got {}",
        nq * nr,
        out.len()
    );
    if nq == 0 || nr == 0 {
        return;
    }
    let to_isize = |v: usize| isize::try_from(v).unwrap_or(isize::MAX);
    // PERF: against `matrixmultiply::sgemm` (used before) on an AMD EPYC with AVX-512, batch
    // exact search of 1,000 queries on 2 threads was 5-10% faster (20k x 384, 100k x 128,
    // 100k x 768; README "Batch exact search").
    // SAFETY: A = queries is nq x dim with row stride dim and column stride 1; B = rowsᵀ is
    // dim x nr, read from `rows` (nr x dim) with row stride 1 and column stride dim; C = out
    // is nq x nr with row stride nr. The assertion above keeps every index of all three
    // inside its slice (the largest A index is (nq-1)*dim + dim-1 < queries.len(), the
    // largest B index (nr-1)*dim + dim-1 < rows.len(), the largest C index nq*nr-1 <
    // out.len()); `out` is a unique borrow, so C aliases neither input; `read_dst = false`
    // means C is only written (gemm's alpha, the factor of the old C, is then unused; beta = 1
    // scales the product).
    unsafe {
        gemm::gemm(
            nq,
            nr,
            dim,
            out.as_mut_ptr(),
            1,
            to_isize(nr),
            false,
            queries.as_ptr(),
            1,
            to_isize(dim),
            rows.as_ptr(),
            to_isize(dim),
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dots_match_a_direct_computation() {
        let dim = 37;
        let (nq, nr) = (5, 11);
        let q: Vec<f32> = (0..nq * dim)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 3.0)
            .collect();
        let r: Vec<f32> = (0..nr * dim)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 2.0)
            .collect();
        let mut out = vec![0.0; nq * nr];
        dots(&q, &r, dim, &mut out);
        for i in 0..nq {
            for j in 0..nr {
                let want: f64 = (0..dim)
                    .map(|t| f64::from(q[i * dim + t]) * f64::from(r[j * dim + t]))
                    .sum();
                assert!((f64::from(out[i * nr + j]) - want).abs() < 1e-3, "{i} {j}");
            }
        }
    }
}
