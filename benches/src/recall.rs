//! Recall against exact ground truth, with ties counted as hits.

use std::collections::HashSet;

/// recall@k of one result list: the fraction of the true k nearest that were found.
///
/// A returned id counts when it is among the first `k` ground-truth ids, or when its true
/// distance is no larger than that of the k-th true neighbour (a tie that the ground truth
/// happened to order differently). `dist_of` gives the exact distance of a base row to the
/// query. Duplicate ids count once. If the ground truth has fewer than `k` entries, the
/// denominator is its length.
pub fn recall_at_k(got: &[u64], gt: &[u32], k: usize, dist_of: impl Fn(u64) -> f64) -> f64 {
    let kk = k.min(gt.len());
    if kk == 0 {
        return 1.0;
    }
    let truth: HashSet<u64> = gt[..kk].iter().map(|x| u64::from(*x)).collect();
    let kth = dist_of(u64::from(gt[kk - 1]));
    let tol = 1e-6 * kth.abs().max(1.0);
    let mut seen = HashSet::new();
    let hits = got
        .iter()
        .take(kk)
        .filter(|id| seen.insert(**id))
        .filter(|id| truth.contains(id) || dist_of(**id) <= kth + tol)
        .count();
    hits as f64 / kk as f64
}

/// Percentile (0..=100) of unsorted samples, by nearest rank.
pub fn percentile(samples: &mut [f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

#[cfg(test)]
#[allow(clippy::float_cmp, reason = "exact values by construction")]
mod tests {
    use super::*;

    #[test]
    fn hand_checked_cases() {
        let d = |id: u64| id as f64; // distance = id
        assert!((recall_at_k(&[0, 1, 2], &[0, 1, 2], 3, d) - 1.0).abs() < 1e-12);
        assert!((recall_at_k(&[0, 5, 2], &[0, 1, 2], 3, d) - 2.0 / 3.0).abs() < 1e-12);
        assert!((recall_at_k(&[9, 8, 7], &[0, 1, 2], 3, d)).abs() < 1e-12);
        // Only the first k results count; duplicates count once.
        assert!((recall_at_k(&[0, 0, 1, 2], &[0, 1, 2, 3], 3, d) - 2.0 / 3.0).abs() < 1e-12);
        assert!((recall_at_k(&[1, 0], &[0, 1, 2], 1, d) - 0.0).abs() < 1e-12);
        // Fewer ground-truth entries than k.
        assert!((recall_at_k(&[0, 1], &[0, 1], 10, d) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn ties_with_the_kth_neighbour_count_as_hits() {
        // ids 3 and 4 are both at distance 1.0; the ground truth listed 3, we returned 4.
        let dist = |id: u64| {
            if id == 0 {
                0.0
            } else if id <= 4 {
                1.0
            } else {
                2.0
            }
        };
        assert!((recall_at_k(&[0, 4], &[0, 3], 2, dist) - 1.0).abs() < 1e-12);
        assert!((recall_at_k(&[0, 5], &[0, 3], 2, dist) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn percentiles() {
        let mut s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&mut s, 50.0), 50.0);
        assert_eq!(percentile(&mut s, 99.0), 99.0);
        assert_eq!(percentile(&mut s, 100.0), 100.0);
        assert_eq!(percentile(&mut [3.0], 95.0), 3.0);
    }
}
