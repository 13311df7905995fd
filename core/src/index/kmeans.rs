//! k-means for the IVF coarse quantizer and the PQ codebooks: k-means++ seeding, Lloyd
//! iterations with the assignment step parallel over rayon, empty-cluster repair by
//! splitting the largest cluster. Deterministic for a seed whatever the thread count: the
//! parallel step only assigns points; sums are accumulated sequentially in point order.

use rayon::prelude::*;

use super::rng::Rng;
use crate::distance::Kernels;

/// Centroids kept twice: row-major (`k x dim`) to read one, and transposed (`dim x k`) so
/// that the distances from a point to all of them are one vectorisable loop per component.
#[derive(Debug, Clone)]
pub(crate) struct Centroids {
    pub k: usize,
    pub dim: usize,
    pub rows: Vec<f32>,
    pub cols: Vec<f32>,
}

impl Centroids {
    pub(crate) fn from_rows(k: usize, dim: usize, rows: Vec<f32>) -> Centroids {
        debug_assert_eq!(rows.len(), k * dim);
        let mut cols = vec![0.0f32; k * dim];
        for c in 0..k {
            for t in 0..dim {
                cols[t * k + c] = rows[c * dim + t];
            }
        }
        Centroids { k, dim, rows, cols }
    }

    pub(crate) fn row(&self, c: usize) -> &[f32] {
        &self.rows[c * self.dim..(c + 1) * self.dim]
    }

    /// Nearest centroid to `x` and its squared distance; `acc` is scratch of length k.
    #[inline]
    pub(crate) fn nearest(&self, x: &[f32], acc: &mut [f32]) -> (u32, f32) {
        Kernels::best().nearest_column(x, &self.cols, self.k, acc)
    }
}

/// `out[c] = |x - C[c]|^2` for the `k` columns of a transposed matrix `cols` (`dim x k`).
// PERF: one SIMD pass per component over all centroids (Kernels::sq_dists_columns); with
// the portable SSE2 build of the same loop, sealing 20k x 384 took 15 s instead of ~4 s.
#[inline]
pub(crate) fn sq_dists_transposed(x: &[f32], cols: &[f32], k: usize, out: &mut [f32]) {
    Kernels::best().sq_dists_columns(x, &cols[..x.len() * k], k, out);
}

#[cfg(test)]
fn sq_l2(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// From this many components and centroids on, [`assign`] ranks centroids by matrix products.
const GEMM_MIN_DIM: usize = 32;
const GEMM_MIN_K: usize = 64;

/// Assign every row of `data` to its nearest centroid (and its squared distance), in
/// parallel.
pub(crate) fn assign(data: &[f32], centroids: &Centroids) -> Vec<(u32, f32)> {
    let dim = centroids.dim;
    if dim >= GEMM_MIN_DIM && centroids.k >= GEMM_MIN_K {
        return assign_gemm(data, centroids);
    }
    data.par_chunks(dim * 256)
        .flat_map_iter(|block| {
            let mut acc = vec![0.0f32; centroids.k];
            block
                .chunks_exact(dim)
                .map(|x| centroids.nearest(x, &mut acc))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// [`assign`] for wide rows and many centroids: a block of 256 rows is multiplied with all
/// the centroids at once ([`crate::distance::gemm::dots`]) and each row takes the centroid
/// minimising `|c|² − 2·x·c`; its distance is then computed exactly. Where two centroids are
/// within rounding of each other the pick may differ from the one-pair kernels' (either is
/// a nearest centroid to within that rounding; any assignment is a valid one for the index,
/// whose search re-ranks exactly). Deterministic: each block is one product.
// PERF: measured on the merge of a 1M x 128 ivf_pq collection (nlist 2,000): see README
// "The default path" (IVF-PQ).
fn assign_gemm(data: &[f32], centroids: &Centroids) -> Vec<(u32, f32)> {
    let (dim, k) = (centroids.dim, centroids.k);
    let kernels = Kernels::best();
    let norms: Vec<f32> = (0..k)
        .map(|c| kernels.dot(centroids.row(c), centroids.row(c)))
        .collect();
    data.par_chunks(dim * 256)
        .flat_map_iter(|block| {
            let nb = block.len() / dim;
            let mut dots = vec![0.0f32; nb * k];
            crate::distance::gemm::dots(block, &centroids.rows, dim, &mut dots);
            (0..nb)
                .map(|i| {
                    let mut best = (0u32, f32::INFINITY);
                    for (c, (&p, &n)) in dots[i * k..(i + 1) * k].iter().zip(&norms).enumerate() {
                        let score = n - 2.0 * p;
                        if score < best.1 {
                            best = (c as u32, score);
                        }
                    }
                    let x = &block[i * dim..(i + 1) * dim];
                    (best.0, kernels.l2_sq(x, centroids.row(best.0 as usize)))
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Train `k` centroids on the rows of `data` (row-major, `dim` wide, at least `k` rows).
pub(crate) fn train(data: &[f32], dim: usize, k: usize, iters: usize, seed: u64) -> Centroids {
    let n = data.len() / dim;
    assert!(k >= 1 && n >= k, "k-means needs at least k points");
    let mut rng = Rng::new(seed);
    let mut cent = Centroids::from_rows(k, dim, seed_plus_plus(data, dim, k, &mut rng));
    let row = |i: usize| &data[i * dim..(i + 1) * dim];

    let mut sums = vec![0.0f64; k * dim];
    let mut counts = vec![0usize; k];
    for _ in 0..iters {
        let a = assign(data, &cent);
        sums.fill(0.0);
        counts.fill(0);
        for (i, (c, _)) in a.iter().enumerate() {
            let c = *c as usize;
            counts[c] += 1;
            for (s, x) in sums[c * dim..(c + 1) * dim].iter_mut().zip(row(i)) {
                *s += f64::from(*x);
            }
        }
        let mut rows = cent.rows.clone();
        for c in 0..k {
            if counts[c] > 0 {
                for t in 0..dim {
                    rows[c * dim + t] = (sums[c * dim + t] / counts[c] as f64) as f32;
                }
            }
        }
        repair_empty(&mut rows, &mut counts, dim, &mut rng);
        cent = Centroids::from_rows(k, dim, rows);
    }
    cent
}

/// k-means++ seeding: each next centre drawn with probability proportional to the squared
/// distance to the nearest centre chosen so far. Drawn from a sample of at most `16 * k`
/// points: O(k^2) instead of O(n k) distance computations, with the same effect on Lloyd.
fn seed_plus_plus(all: &[f32], dim: usize, k: usize, rng: &mut Rng) -> Vec<f32> {
    let kernels = Kernels::best();
    let idx = rng.sample(all.len() / dim, 16 * k);
    let mut data = Vec::with_capacity(idx.len() * dim);
    for i in idx {
        data.extend_from_slice(&all[i * dim..(i + 1) * dim]);
    }
    let n = data.len() / dim;
    let row = |i: usize| &data[i * dim..(i + 1) * dim];
    let mut rows = Vec::with_capacity(k * dim);
    let first = rng.below(n);
    rows.extend_from_slice(row(first));
    let mut mind: Vec<f32> = (0..n)
        .into_par_iter()
        .map(|i| kernels.l2_sq(row(i), row(first)))
        .collect();
    for _ in 1..k {
        let total: f64 = mind.iter().map(|d| f64::from(*d)).sum();
        let pick = if total > 0.0 {
            let mut target = rng.next_f64() * total;
            let mut pick = n - 1;
            for (i, d) in mind.iter().enumerate() {
                target -= f64::from(*d);
                if target < 0.0 {
                    pick = i;
                    break;
                }
            }
            pick
        } else {
            rng.below(n)
        };
        let c = row(pick).to_vec();
        rows.extend_from_slice(&c);
        mind.par_iter_mut().enumerate().for_each(|(i, m)| {
            let d = kernels.l2_sq(row(i), &c);
            if d < *m {
                *m = d;
            }
        });
    }
    rows
}

/// Give each empty cluster half of the largest one: copy its centre and push the two
/// copies slightly apart, so the next assignment splits its points between them.
fn repair_empty(rows: &mut [f32], counts: &mut [usize], dim: usize, rng: &mut Rng) {
    const EPS: f32 = 1.0 / 1024.0;
    for c in 0..counts.len() {
        if counts[c] > 0 {
            continue;
        }
        let (big, &n) = counts
            .iter()
            .enumerate()
            .max_by_key(|(i, n)| (**n, std::cmp::Reverse(*i)))
            .expect("k >= 1");
        if n < 2 {
            break;
        }
        for t in 0..dim {
            let v = rows[big * dim + t];
            let sign = if rng.next_u64() & 1 == 0 { 1.0 } else { -1.0 };
            let delta = EPS * sign * v.abs().max(EPS);
            rows[c * dim + t] = v + delta;
            rows[big * dim + t] = v - delta;
        }
        counts[c] = n / 2;
        counts[big] = n - n / 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Points around `centres` well-separated centres.
    fn blobs(centres: usize, per: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        let mut out = Vec::new();
        for c in 0..centres {
            for _ in 0..per {
                for t in 0..dim {
                    let centre = if t % centres == c { 10.0 } else { 0.0 };
                    out.push(centre + 0.1 * rng.gaussian() as f32);
                }
            }
        }
        out
    }

    #[test]
    fn finds_separated_clusters_and_is_deterministic() {
        let dim = 8;
        let data = blobs(4, 200, dim, 3);
        let a = train(&data, dim, 4, 10, 9);
        let b = train(&data, dim, 4, 10, 9);
        assert_eq!(a.rows, b.rows);
        // Every blob maps to one centroid and the four blobs to four different ones.
        let assigned = assign(&data, &a);
        let mut seen = std::collections::HashSet::new();
        for blob in assigned.chunks(200) {
            assert!(blob.iter().all(|x| x.0 == blob[0].0));
            assert!(blob.iter().all(|x| x.1 < 0.2 * dim as f32));
            seen.insert(blob[0].0);
        }
        assert_eq!(seen.len(), 4);
    }

    #[test]
    fn empty_clusters_are_repaired() {
        // 3 distinct points, many duplicates, k = 3 with repair must use all three.
        let dim = 2;
        let mut data = vec![];
        for _ in 0..50 {
            data.extend_from_slice(&[0.0, 0.0]);
        }
        data.extend_from_slice(&[5.0, 5.0, -5.0, 5.0]);
        let c = train(&data, dim, 3, 5, 1);
        let a = assign(&data, &c);
        let used: std::collections::HashSet<u32> = a.iter().map(|x| x.0).collect();
        assert_eq!(used.len(), 3);
    }

    #[test]
    fn repair_splits_the_largest_cluster() {
        // Cluster 1 is empty, cluster 2 the largest: afterwards 1 sits next to 2's centre and
        // they share its points.
        let mut rows = vec![0.0, 0.0, 9.0, 9.0, 4.0, 4.0];
        let mut counts = vec![3, 0, 10];
        repair_empty(&mut rows, &mut counts, 2, &mut Rng::new(1));
        assert_eq!(counts, vec![3, 5, 5]);
        for t in 0..2 {
            assert!((rows[2 + t] - 4.0).abs() < 0.01 && (rows[4 + t] - 4.0).abs() < 0.01);
            assert!((rows[2 + t] - rows[4 + t]).abs() > 0.0);
        }
    }

    #[test]
    fn matrix_product_assignment_finds_a_nearest_centroid() {
        // Wide rows, many centroids (the product path) against brute force: the chosen
        // centroid is at the minimum distance to within rounding, and that distance is exact.
        let mut rng = Rng::new(11);
        let (k, dim, n) = (150, 48, 700);
        let rows: Vec<f32> = (0..k * dim).map(|_| rng.gaussian() as f32).collect();
        let c = Centroids::from_rows(k, dim, rows);
        let data: Vec<f32> = (0..n * dim).map(|_| 2.0 * rng.gaussian() as f32).collect();
        let got = assign(&data, &c);
        assert_eq!(got.len(), n);
        let mut same = 0;
        for (i, (a, d)) in got.iter().enumerate() {
            let x = &data[i * dim..(i + 1) * dim];
            let (best, min) = (0..k)
                .map(|j| (j, sq_l2(x, c.row(j))))
                .min_by(|p, q| p.1.total_cmp(&q.1))
                .unwrap();
            assert!((d - sq_l2(x, c.row(*a as usize))).abs() <= 1e-3 * d.max(1.0));
            assert!(
                *d <= min * (1.0 + 1e-4) + 1e-4,
                "row {i}: {d} vs minimum {min}"
            );
            same += usize::from(*a as usize == best);
        }
        assert!(
            same >= n - 2,
            "{same} of {n} rows took the brute-force centroid"
        );
    }

    #[test]
    fn transposed_distances_match_direct() {
        let mut rng = Rng::new(5);
        let (k, dim) = (37, 11);
        let rows: Vec<f32> = (0..k * dim).map(|_| rng.gaussian() as f32).collect();
        let c = Centroids::from_rows(k, dim, rows);
        let x: Vec<f32> = (0..dim).map(|_| rng.gaussian() as f32).collect();
        let mut acc = vec![0.0; k];
        sq_dists_transposed(&x, &c.cols, k, &mut acc);
        for (j, a) in acc.iter().enumerate() {
            assert!((a - sq_l2(&x, c.row(j))).abs() < 1e-4);
        }
    }
}
