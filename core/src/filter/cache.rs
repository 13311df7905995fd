//! A small per-segment cache of filter results: the everyday filtered query repeats the
//! same filter (`tenant = X`, `lang = en`), and evaluating it costs time proportional to
//! the passing rows. Results are kept before deletions are applied (callers subtract the
//! current deletion bitmap), keyed by the filter and the segment's row count, so they stay
//! valid for an immutable segment and are recomputed when an appendable one grows.

use std::sync::Arc;

use parking_lot::Mutex;

use super::bitset::Bitset;
use super::expr::Filter;

/// Entries kept per segment.
const CAPACITY: usize = 16;

/// A filter with its cache key, computed once per query rather than once per segment.
#[derive(Debug)]
pub(crate) struct KeyedFilter<'a> {
    pub filter: &'a Filter,
    key: String,
}

impl<'a> KeyedFilter<'a> {
    pub(crate) fn new(filter: &'a Filter) -> Self {
        KeyedFilter {
            filter,
            key: format!("{filter:?}"),
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct FilterCache {
    entries: Mutex<Vec<(String, usize, Arc<Bitset>)>>,
}

impl FilterCache {
    /// The rows of a `rows`-row segment matching `filter`, from the cache or from `eval`.
    pub(crate) fn get_or_eval<E>(
        &self,
        filter: &KeyedFilter<'_>,
        rows: usize,
        eval: impl FnOnce() -> Result<Bitset, E>,
    ) -> Result<Arc<Bitset>, E> {
        let key = &filter.key;
        {
            let mut e = self.entries.lock();
            if let Some(i) = e.iter().position(|(k, r, _)| *r == rows && k == key) {
                let hit = e.remove(i);
                let bits = Arc::clone(&hit.2);
                e.insert(0, hit);
                return Ok(bits);
            }
        }
        let bits = Arc::new(eval()?);
        let mut e = self.entries.lock();
        e.retain(|(k, _, _)| k != key);
        e.insert(0, (key.clone(), rows, Arc::clone(&bits)));
        e.truncate(CAPACITY);
        Ok(bits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_misses_and_invalidation_by_row_count() {
        let c = FilterCache::default();
        let f0 = Filter::Exists("a".into(), true);
        let f = KeyedFilter::new(&f0);
        let calls = std::cell::Cell::new(0);
        let eval = |n: usize| {
            calls.set(calls.get() + 1);
            Ok::<_, ()>(Bitset::new(n))
        };
        c.get_or_eval(&f, 10, || eval(10)).unwrap();
        c.get_or_eval(&f, 10, || eval(10)).unwrap();
        assert_eq!(calls.get(), 1);
        assert_eq!(c.get_or_eval(&f, 11, || eval(11)).unwrap().len(), 11);
        assert_eq!(calls.get(), 2);
        for i in 0..CAPACITY {
            let other = Filter::Exists(format!("f{i}"), true);
            c.get_or_eval(&KeyedFilter::new(&other), 11, || eval(11))
                .unwrap();
        }
        c.get_or_eval(&f, 11, || eval(11)).unwrap();
        assert_eq!(
            calls.get(),
            3 + CAPACITY,
            "evicted after CAPACITY newer entries"
        );
    }
}
