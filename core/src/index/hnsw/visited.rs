//! Visited sets with generation counters, reused across searches from a pool so that the
//! hot path allocates nothing: clearing is one increment, not a memset.

use parking_lot::Mutex;

#[derive(Debug, Default)]
pub(crate) struct Visited {
    marks: Vec<u32>,
    generation: u32,
}

impl Visited {
    /// Prepare for a search over `n` nodes.
    pub(crate) fn reset(&mut self, n: usize) {
        if self.marks.len() < n {
            let more = n - self.marks.len();
            crate::hugepages::reserve(&mut self.marks, more);
            self.marks.resize(n, 0);
        }
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.marks.iter_mut().for_each(|m| *m = 0);
            self.generation = 1;
        }
    }

    /// Whether `i` was visited in this search.
    #[inline]
    pub(crate) fn contains(&self, i: usize) -> bool {
        self.marks[i] == self.generation
    }

    /// Mark `i`; returns true if it was not yet visited in this search.
    #[inline]
    pub(crate) fn insert(&mut self, i: usize) -> bool {
        let m = &mut self.marks[i];
        if *m == self.generation {
            false
        } else {
            *m = self.generation;
            true
        }
    }
}

/// A pool of visited sets shared by concurrent searches.
#[derive(Debug, Default)]
pub(crate) struct VisitedPool {
    free: Mutex<Vec<Visited>>,
}

impl VisitedPool {
    pub(crate) fn take(&self, n: usize) -> Visited {
        let mut v = self.free.lock().pop().unwrap_or_default();
        v.reset(n);
        v
    }

    pub(crate) fn give(&self, v: Visited) {
        let mut free = self.free.lock();
        if free.len() < 64 {
            free.push(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_clear_in_constant_time() {
        let pool = VisitedPool::default();
        let mut v = pool.take(10);
        assert!(v.insert(3) && !v.insert(3));
        pool.give(v);
        let mut v = pool.take(20);
        assert!(v.insert(3) && v.insert(19) && !v.insert(19));
    }
}
