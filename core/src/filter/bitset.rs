//! A fixed-size bitset over segment rows.

/// One bit per row.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Bitset {
    words: Vec<u64>,
    len: usize,
    ones: usize,
}

impl Bitset {
    pub(crate) fn new(len: usize) -> Bitset {
        Bitset {
            words: vec![0; len.div_ceil(64)],
            len,
            ones: 0,
        }
    }

    /// Rebuild from stored words; `None` if the words do not fit `len`.
    pub(crate) fn from_words(words: Vec<u64>, len: usize) -> Option<Bitset> {
        if words.len() != len.div_ceil(64) {
            return None;
        }
        if !len.is_multiple_of(64) {
            if let Some(last) = words.last() {
                if last >> (len % 64) != 0 {
                    return None;
                }
            }
        }
        let ones = words.iter().map(|w| w.count_ones() as usize).sum();
        Some(Bitset { words, len, ones })
    }

    pub(crate) fn words(&self) -> &[u64] {
        &self.words
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn count_ones(&self) -> usize {
        self.ones
    }

    #[inline]
    pub(crate) fn get(&self, i: usize) -> bool {
        self.words[i / 64] >> (i % 64) & 1 == 1
    }

    /// Set bit `i`; returns whether it was clear before.
    pub(crate) fn insert(&mut self, i: usize) -> bool {
        let w = &mut self.words[i / 64];
        let bit = 1u64 << (i % 64);
        let was_clear = *w & bit == 0;
        // A branch, not `ones += usize::from(was_clear)`: rustc 1.95.0 (LLVM, opt-level >= 2,
        // release profile) drops the first increment of `a.insert(i) && a.insert(j)` in that
        // form (found by this module's test under `cargo test --release`; a 15-line repro
        // outside this crate does the same). The branch form compiles correctly.
        if was_clear {
            *w |= bit;
            self.ones += 1;
        }
        was_clear
    }

    /// Set every listed bit.
    pub(crate) fn insert_all<'a>(&mut self, rows: impl IntoIterator<Item = &'a u32>) {
        for r in rows {
            self.insert(*r as usize);
        }
    }

    /// All bits set.
    pub(crate) fn full(len: usize) -> Bitset {
        let mut b = Bitset::new(len);
        b.words.iter_mut().for_each(|w| *w = u64::MAX);
        b.trim();
        b
    }

    fn trim(&mut self) {
        if !self.len.is_multiple_of(64) {
            if let Some(last) = self.words.last_mut() {
                *last &= (1u64 << (self.len % 64)) - 1;
            }
        }
        self.ones = self.words.iter().map(|w| w.count_ones() as usize).sum();
    }

    /// In-place intersection.
    pub(crate) fn and_with(&mut self, o: &Bitset) {
        for (a, b) in self.words.iter_mut().zip(&o.words) {
            *a &= b;
        }
        self.trim();
    }

    /// In-place union.
    pub(crate) fn or_with(&mut self, o: &Bitset) {
        for (a, b) in self.words.iter_mut().zip(&o.words) {
            *a |= b;
        }
        self.trim();
    }

    /// In-place removal of the bits set in `o`.
    pub(crate) fn and_not(&mut self, o: &Bitset) {
        for (a, b) in self.words.iter_mut().zip(&o.words) {
            *a &= !b;
        }
        self.trim();
    }

    /// In-place complement.
    pub(crate) fn negate(&mut self) {
        self.words.iter_mut().for_each(|w| *w = !*w);
        self.trim();
    }

    /// Indices of set bits, ascending.
    pub(crate) fn iter_ones(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let t = w.trailing_zeros() as usize;
                w &= w - 1;
                Some(i * 64 + t)
            })
        })
    }

    /// Call `f` with the set bits in ascending order, in blocks of at most
    /// [`Bitset::BLOCK`] (each but the last at least 64 long). Faster than
    /// [`Bitset::iter_ones`] for a caller that works on rows in batches.
    pub(crate) fn ones_in_blocks(&self, f: &mut dyn FnMut(&[u32])) {
        self.blocks(false, self.len, f);
    }

    /// As [`Bitset::ones_in_blocks`], for the clear bits below `below` (bits past the
    /// set's length count as clear).
    pub(crate) fn zeros_in_blocks(&self, below: usize, f: &mut dyn FnMut(&[u32])) {
        self.blocks(true, below, f);
    }

    /// Longest block [`Bitset::ones_in_blocks`] hands over.
    pub(crate) const BLOCK: usize = 127;

    fn blocks(&self, clear: bool, below: usize, f: &mut dyn FnMut(&[u32])) {
        let mut buf = [0u32; Self::BLOCK];
        let mut n = 0;
        for i in 0..below.div_ceil(64) {
            let w = self.words.get(i).copied().unwrap_or(0);
            let mut w = if clear { !w } else { w };
            if (i + 1) * 64 > below {
                // Bits at `below` and above are not asked for.
                w &= (1u64 << (below % 64)).wrapping_sub(1);
            }
            // `n < 64` here, so the word's at most 64 bits fit.
            while w != 0 {
                buf[n] = (i * 64) as u32 + w.trailing_zeros();
                n += 1;
                w &= w - 1;
            }
            if n >= 64 {
                f(&buf[..n]);
                n = 0;
            }
        }
        if n > 0 {
            f(&buf[..n]);
        }
    }

    /// Grow to `len` bits (new bits clear).
    pub(crate) fn grow(&mut self, len: usize) {
        if len > self.len {
            self.words.resize(len.div_ceil(64), 0);
            self.len = len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_get_count_and_restore() {
        let mut b = Bitset::new(130);
        assert!(b.insert(0) && b.insert(129) && !b.insert(129));
        assert!(b.get(0) && b.get(129) && !b.get(64));
        assert_eq!(b.count_ones(), 2);
        let c = Bitset::from_words(b.words().to_vec(), 130).expect("fits");
        assert_eq!(b, c);
        assert!(Bitset::from_words(vec![u64::MAX; 3], 130).is_none());
        assert!(Bitset::from_words(vec![0; 2], 130).is_none());
    }

    type Visit<'a> = &'a mut dyn FnMut(&[u32]);

    #[test]
    fn blocks_hand_over_every_row_in_order() {
        let mut seed = 7u64;
        for (len, density) in [(0, 50), (1, 100), (63, 50), (64, 100), (300, 3), (1000, 50)] {
            let mut b = Bitset::new(len);
            for i in 0..len {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                if (seed >> 33) % 100 < density {
                    b.insert(i);
                }
            }
            let collect = |f: &dyn Fn(Visit<'_>)| {
                let (mut all, mut sizes) = (Vec::new(), Vec::new());
                f(&mut |block: &[u32]| {
                    sizes.push(block.len());
                    all.extend(block.iter().map(|r| *r as usize));
                });
                // Every block but the last holds 64 to BLOCK rows; none is empty.
                if let Some((last, rest)) = sizes.split_last() {
                    assert!(*last >= 1 && *last <= Bitset::BLOCK);
                    assert!(rest.iter().all(|n| (64..=Bitset::BLOCK).contains(n)));
                }
                all
            };
            let ones: Vec<usize> = b.iter_ones().collect();
            assert_eq!(collect(&|f| b.ones_in_blocks(f)), ones, "ones of {len}");
            for below in [0, len / 2, len, len + 70] {
                let want: Vec<usize> = (0..below).filter(|&i| i >= len || !b.get(i)).collect();
                assert_eq!(
                    collect(&|f| b.zeros_in_blocks(below, f)),
                    want,
                    "{len} {below}"
                );
            }
        }
    }
}
