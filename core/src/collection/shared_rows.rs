//! The appendable segment's vectors, in a buffer a growing successor shares with its frozen
//! predecessor instead of copying it.
//!
//! A segment that grows on the one frozen before it ([`super::appendable::Growth`]) starts
//! with every row of that segment. Copying those rows took most of the growth's time (at
//! 700k rows of 128 dimensions, 2.2 s) and held them twice until the predecessor's seal was
//! published. Instead both hold one buffer: the predecessor reads its rows, which never
//! change, and the successor appends after them. Only the holder at the end of the claimed
//! rows may append in place; anyone else (or anyone out of room) first copies its rows into a
//! fresh buffer with twice the room, so copies happen at doubling sizes (O(rows) in all)
//! rather than at every freeze.
#![expect(
    unsafe_code,
    reason = "one buffer shared by segments that read disjoint, written-once prefixes while \
              the last of them appends after them"
)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Fixed-capacity storage: its allocation never moves. Floats `0..claimed` were claimed by
/// a holder (and are written, or being written, by that holder only); floats from `claimed`
/// on belong to no one.
struct Region {
    /// The allocation: length 0, capacity `cap`; written only through `ptr`.
    _buf: Vec<f32>,
    ptr: *mut f32,
    cap: usize,
    claimed: AtomicUsize,
}

// SAFETY: `ptr` points into `_buf`'s allocation, which the region owns and never moves or
// frees before it is dropped. Floats are written only by the holder that claimed them
// (through an atomic compare-and-swap on `claimed`, so no two holders ever claim the same
// float) and read only by holders whose length covers them, which they reach after those
// writes (the appending holder's own `&mut`, or its later publication to other threads by
// the collection's locks). No float is written after any holder's length covers it.
unsafe impl Send for Region {}
// SAFETY: as for `Send`: shared references to the region only read floats below some
// holder's length and claim new ones atomically.
unsafe impl Sync for Region {}

/// A holder of vectors: floats `0..len` of a shared region (or none).
pub(crate) struct SharedRows {
    region: Option<Arc<Region>>,
    len: usize,
}

impl SharedRows {
    pub(crate) fn new() -> SharedRows {
        SharedRows {
            region: None,
            len: 0,
        }
    }

    /// Floats this holder could append in place without copying: room after its end when it
    /// holds the end of the claimed floats, else 0.
    pub(crate) fn room(&self) -> usize {
        match &self.region {
            Some(r) if r.claimed.load(Ordering::Acquire) == self.len => r.cap - self.len,
            _ => 0,
        }
    }

    /// Floats the region holds room for (0 without one).
    pub(crate) fn capacity(&self) -> usize {
        self.region.as_ref().map_or(0, |r| r.cap)
    }

    /// Make room to append `additional` floats in place: when this holder cannot, its floats
    /// are copied into a fresh region (at least twice the old capacity), which it alone holds.
    pub(crate) fn reserve(&mut self, additional: usize) {
        if self.room() >= additional {
            return;
        }
        let need = self
            .len
            .checked_add(additional)
            .unwrap_or_else(|| panic!("vector buffer size overflows"));
        let cap = need.max(self.capacity().saturating_mul(2)).max(1024);
        let mut buf: Vec<f32> = Vec::with_capacity(cap);
        crate::hugepages::advise_vec(&buf);
        let cap = buf.capacity();
        let ptr = buf.as_mut_ptr();
        let region = Region {
            _buf: buf,
            ptr,
            cap,
            claimed: AtomicUsize::new(0),
        };
        let mine: &[f32] = self;
        // SAFETY: the fresh region's first `mine.len()` floats lie inside its capacity
        // (`cap ≥ need ≥ len`), nobody else holds it yet, and `mine` is another allocation.
        unsafe { std::ptr::copy_nonoverlapping(mine.as_ptr(), region.ptr, mine.len()) };
        region.claimed.store(self.len, Ordering::Release);
        self.region = Some(Arc::new(region));
    }

    /// Append `xs`.
    pub(crate) fn extend_from_slice(&mut self, xs: &[f32]) {
        if xs.is_empty() {
            return;
        }
        loop {
            self.reserve(xs.len());
            let r = self
                .region
                .as_ref()
                .unwrap_or_else(|| unreachable!("reserve made a region"));
            let end = self.len + xs.len();
            if r.claimed
                .compare_exchange(self.len, end, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                // SAFETY: this holder just claimed floats `len..end` (inside the capacity:
                // `reserve` checked the room); no other holder can claim them and none reads
                // them (every holder's length is at most the claimed end before this claim).
                unsafe {
                    std::ptr::copy_nonoverlapping(xs.as_ptr(), r.ptr.add(self.len), xs.len());
                };
                self.len = end;
                return;
            }
            // Another holder appended in between: the next `reserve` copies.
        }
    }

    /// Another holder of the same floats (no copy). Whichever of the two appends first does
    /// so in place; the other then copies before it appends.
    pub(crate) fn share(&self) -> SharedRows {
        SharedRows {
            region: self.region.clone(),
            len: self.len,
        }
    }

    /// Whether `other` holds its floats in the same region as this one.
    #[cfg(test)]
    pub(crate) fn same_region(&self, other: &SharedRows) -> bool {
        match (&self.region, &other.region) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Default for SharedRows {
    fn default() -> Self {
        SharedRows::new()
    }
}

impl std::ops::Deref for SharedRows {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match &self.region {
            // SAFETY: floats `0..len` of the region were written (by this holder, or by the
            // holder it was shared from, before the share) and are never written again:
            // appends only write floats past the claimed end, which is at least `len`.
            Some(r) => unsafe { std::slice::from_raw_parts(r.ptr, self.len) },
            None => &[],
        }
    }
}

impl std::fmt::Debug for SharedRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedRows")
            .field("len", &self.len)
            .field("capacity", &self.capacity())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::SharedRows;

    fn floats(from: usize, n: usize) -> Vec<f32> {
        (from..from + n).map(|i| i as f32).collect()
    }

    #[test]
    fn appends_keep_every_float_in_order() {
        let mut a = SharedRows::new();
        let mut model = Vec::new();
        for n in [0, 1, 7, 1000, 3, 5000, 1] {
            let xs = floats(model.len(), n);
            a.extend_from_slice(&xs);
            model.extend_from_slice(&xs);
            assert_eq!(&a[..], &model[..]);
        }
    }

    #[test]
    fn a_shared_holder_sees_its_floats_unchanged_while_the_other_appends() {
        let mut a = SharedRows::new();
        a.extend_from_slice(&floats(0, 100));
        a.reserve(1000);
        let mut b = a.share();
        b.extend_from_slice(&floats(100, 50));
        // `b` appended in place (no copy): it is still in `a`'s region.
        assert!(b.same_region(&a));
        assert_eq!(&a[..], &floats(0, 100)[..]);
        assert_eq!(&b[..], &floats(0, 150)[..]);
        // `a` no longer holds the end: its append copies into a region of its own, and
        // neither holder sees the other's floats.
        a.extend_from_slice(&[-1.0; 10]);
        assert!(!a.same_region(&b));
        assert_eq!(&a[..100], &floats(0, 100)[..]);
        assert_eq!(&a[100..], &[-1.0; 10]);
        assert_eq!(&b[..], &floats(0, 150)[..]);
        b.extend_from_slice(&floats(150, 5));
        assert_eq!(&b[..], &floats(0, 155)[..]);
    }

    #[test]
    fn out_of_room_copies_to_twice_the_capacity() {
        let mut a = SharedRows::new();
        a.extend_from_slice(&floats(0, 10));
        let cap = a.capacity();
        assert!(cap >= 10);
        let b = a.share();
        a.extend_from_slice(&floats(10, cap));
        assert!(!a.same_region(&b));
        assert!(a.capacity() >= 2 * cap);
        assert_eq!(&a[..], &floats(0, 10 + cap)[..]);
        assert_eq!(&b[..], &floats(0, 10)[..]);
    }

    #[test]
    fn holders_on_threads_append_and_read_concurrently() {
        let mut a = SharedRows::new();
        a.extend_from_slice(&floats(0, 4096));
        a.reserve(1 << 16);
        let b = a.share();
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..64 {
                    a.extend_from_slice(&floats(4096 + i * 1024, 1024));
                }
            });
            s.spawn(|| {
                for _ in 0..64 {
                    assert_eq!(&b[..], &floats(0, 4096)[..]);
                }
            });
        });
        assert_eq!(&a[..], &floats(0, 4096 + 64 * 1024)[..]);
    }
}
