//! A bounded max-heap keeping the k nearest `(distance, id)` pairs. Ties on distance are
//! broken by the smaller id, so results are deterministic.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

#[derive(Debug, Clone, Copy)]
struct Entry {
    dist: f32,
    id: u64,
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> Ordering {
        self.dist.total_cmp(&o.dist).then(self.id.cmp(&o.id))
    }
}

/// The k best candidates seen so far.
#[derive(Debug)]
pub(crate) struct TopK {
    k: usize,
    heap: BinaryHeap<Entry>,
}

impl TopK {
    pub(crate) fn new(k: usize) -> TopK {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k.min(1 << 16) + 1),
        }
    }

    /// Candidates held (at most k).
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Distance a candidate must beat (or tie with a smaller id) to enter.
    #[inline]
    pub(crate) fn threshold(&self) -> f32 {
        if self.heap.len() < self.k {
            f32::INFINITY
        } else {
            self.heap.peek().map_or(f32::INFINITY, |e| e.dist)
        }
    }

    #[inline]
    pub(crate) fn push(&mut self, dist: f32, id: u64) {
        let e = Entry { dist, id };
        if self.heap.len() < self.k {
            self.heap.push(e);
        } else if let Some(mut top) = self.heap.peek_mut() {
            if e < *top {
                *top = e;
            }
        }
    }

    /// The ids held, in no particular order.
    pub(crate) fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.heap.iter().map(|e| e.id)
    }

    /// Nearest first.
    pub(crate) fn into_sorted(self) -> Vec<(u64, f32)> {
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|e| (e.id, e.dist))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_k_smallest_with_id_tiebreak() {
        let mut t = TopK::new(3);
        for (d, id) in [(5.0, 1), (1.0, 9), (3.0, 4), (1.0, 2), (3.0, 3), (0.5, 7)] {
            t.push(d, id);
        }
        assert_eq!(t.into_sorted(), vec![(7, 0.5), (2, 1.0), (9, 1.0)]);
    }
}
