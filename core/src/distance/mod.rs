//! Distance kernels: squared L2 and inner product, with a scalar reference and SIMD
//! versions chosen once at runtime by CPU feature detection.
//!
//! This module depends on nothing else in the crate. Cosine distance is `1 - dot` over
//! unit-normalised vectors (collections normalise cosine vectors on the way in).
#![expect(
    unsafe_code,
    reason = "calls the SIMD kernels through checked function pointers"
)]

#[cfg(target_arch = "aarch64")]
mod aarch64;
pub(crate) mod gemm;
mod metric;
pub mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86_64;

use std::sync::OnceLock;

pub use metric::Metric;

/// An instruction set a kernel is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Isa {
    /// Portable Rust.
    Scalar,
    /// x86_64 AVX2 with FMA.
    Avx2,
    /// x86_64 AVX-512F.
    Avx512,
    /// aarch64 NEON.
    Neon,
}

type RawKernel = unsafe fn(&[f32], &[f32]) -> f32;
type ColumnsKernel = unsafe fn(&[f32], &[f32], usize, &mut [f32]);
type NearestKernel = unsafe fn(&[f32], &[f32], usize, &mut [f32]) -> (u32, f32);
type HammingKernel = unsafe fn(&[u8], &[u8]) -> u32;
type HammingAllKernel = unsafe fn(&[u8], &[u8], &mut [u32]);
type SqI8AllKernel = unsafe fn(&[u8], &[u8], &mut [u32]);
type SqI8GatherKernel = unsafe fn(&[u8], &[u8], &[u32], &mut [u32]);
type DotU8I16Kernel = unsafe fn(&[u8], &[i16]) -> i32;
type DotU8I16RowsKernel = unsafe fn(&[u8], &[u32], &[i16], &mut [i32]);
type BitplaneKernel = unsafe fn(&[u64], &[u64]) -> (u32, u32);

/// A pair of kernels for one ISA. Obtain one with [`Kernels::best`] or [`Kernels::for_isa`].
#[derive(Clone, Copy)]
pub struct Kernels {
    isa: Isa,
    l2: RawKernel,
    dot: RawKernel,
    cols: ColumnsKernel,
    nearest: NearestKernel,
    hamming: HammingKernel,
    hamming_all: HammingAllKernel,
    sq_i8_all: SqI8AllKernel,
    sq_i8_gather: SqI8GatherKernel,
    dot_u8_i16: DotU8I16Kernel,
    dot_u8_i16_rows: DotU8I16RowsKernel,
    dot_u4_i16_rows: DotU8I16RowsKernel,
    bitplane: BitplaneKernel,
}

impl std::fmt::Debug for Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernels")
            .field("isa", &self.isa)
            .finish_non_exhaustive()
    }
}

// Safe functions coerce to `unsafe fn` pointers; the scalar ones have no obligations.
const SCALAR: Kernels = Kernels {
    isa: Isa::Scalar,
    l2: scalar::l2_sq,
    dot: scalar::dot,
    cols: scalar::sq_dists_columns_ref,
    nearest: scalar::nearest_column_ref,
    hamming: scalar::hamming_ref,
    hamming_all: scalar::hamming_all_ref,
    sq_i8_all: scalar::sq_i8_all_ref,
    sq_i8_gather: scalar::sq_i8_gather_ref,
    dot_u8_i16: scalar::dot_u8_i16_ref,
    dot_u8_i16_rows: scalar::dot_u8_i16_rows_ref,
    dot_u4_i16_rows: scalar::dot_u4_i16_rows_ref,
    bitplane: scalar::bitplane_dot_ref,
};

impl Kernels {
    /// The kernels for `isa`, or `None` when this CPU cannot run them.
    pub fn for_isa(isa: Isa) -> Option<Kernels> {
        match isa {
            Isa::Scalar => Some(SCALAR),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => (is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("popcnt"))
            .then_some(Kernels {
                isa,
                l2: x86_64::avx2::l2_sq,
                dot: x86_64::avx2::dot,
                cols: x86_64::avx2::sq_dists_columns,
                nearest: x86_64::avx2::nearest_column,
                hamming: x86_64::avx2::hamming,
                hamming_all: x86_64::avx2::hamming_all,
                sq_i8_all: x86_64::avx2::sq_i8_all,
                sq_i8_gather: x86_64::avx2::sq_i8_gather,
                dot_u8_i16: x86_64::avx2::dot_u8_i16,
                dot_u8_i16_rows: x86_64::avx2::dot_u8_i16_rows,
                dot_u4_i16_rows: x86_64::avx2::dot_u4_i16_rows,
                bitplane: x86_64::avx2::bitplane_dot,
            }),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => (is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("popcnt"))
            .then_some(Kernels {
                isa,
                l2: x86_64::avx512::l2_sq,
                dot: x86_64::avx512::dot,
                cols: x86_64::avx512::sq_dists_columns,
                nearest: x86_64::avx512::nearest_column,
                hamming: x86_64::avx512::hamming,
                // PERF: 3x faster signature scans where the CPU counts bits in vectors.
                hamming_all: if is_x86_feature_detected!("avx512vpopcntdq") {
                    x86_64::avx512::hamming_all_vpopcnt
                } else {
                    x86_64::avx512::hamming_all
                },
                sq_i8_all: x86_64::avx512::sq_i8_all,
                sq_i8_gather: x86_64::avx512::sq_i8_gather,
                dot_u8_i16: x86_64::avx512::dot_u8_i16,
                dot_u8_i16_rows: x86_64::avx512::dot_u8_i16_rows,
                dot_u4_i16_rows: x86_64::avx512::dot_u4_i16_rows,
                bitplane: x86_64::avx512::bitplane_dot,
            }),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => Some(Kernels {
                isa,
                l2: aarch64::neon::l2_sq,
                dot: aarch64::neon::dot,
                cols: scalar::sq_dists_columns_ref,
                nearest: scalar::nearest_column_ref,
                hamming: scalar::hamming_ref,
                hamming_all: scalar::hamming_all_ref,
                sq_i8_all: scalar::sq_i8_all_ref,
                sq_i8_gather: scalar::sq_i8_gather_ref,
                dot_u8_i16: scalar::dot_u8_i16_ref,
                dot_u8_i16_rows: scalar::dot_u8_i16_rows_ref,
                dot_u4_i16_rows: scalar::dot_u4_i16_rows_ref,
                bitplane: scalar::bitplane_dot_ref,
            }),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// Every ISA this CPU can run, best last.
    pub fn available() -> Vec<Kernels> {
        [Isa::Scalar, Isa::Neon, Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter_map(Kernels::for_isa)
            .collect()
    }

    /// The fastest kernels for this CPU, detected once per process. The environment
    /// variable `TROVEDB_ISA` (`scalar`, `avx2`, `avx512`, `neon`) caps the choice, for
    /// benchmarks and for ruling out a kernel bug.
    pub fn best() -> &'static Kernels {
        static BEST: OnceLock<Kernels> = OnceLock::new();
        BEST.get_or_init(|| {
            let all = Kernels::available();
            let want = std::env::var("TROVEDB_ISA").ok();
            let pick = want.and_then(|w| {
                all.iter()
                    .find(|k| format!("{:?}", k.isa).eq_ignore_ascii_case(&w))
                    .copied()
            });
            pick.or_else(|| all.last().copied()).unwrap_or(SCALAR)
        })
    }

    /// Which ISA these kernels use.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Squared Euclidean distance. Panics if the lengths differ (a caller bug, never
    /// reachable from validated API input).
    #[inline]
    pub fn l2_sq(&self, a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len(), "distance kernels need equal lengths");
        // SAFETY: lengths are equal (checked above) and the ISA was verified by
        // `for_isa` when this `Kernels` was built.
        unsafe { (self.l2)(a, b) }
    }

    /// Inner product. Panics if the lengths differ.
    #[inline]
    pub fn dot(&self, a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len(), "distance kernels need equal lengths");
        // SAFETY: as in `l2_sq`.
        unsafe { (self.dot)(a, b) }
    }

    /// Squared distances from `x` to the `k` columns of the component-major matrix `cols`
    /// (`x.len() * k` floats) into `out[..k]`. Panics on a size mismatch.
    #[inline]
    pub fn sq_dists_columns(&self, x: &[f32], cols: &[f32], k: usize, out: &mut [f32]) {
        assert!(
            cols.len() == x.len() * k && out.len() >= k,
            "column kernel sizes"
        );
        // SAFETY: sizes checked above (the body also slices with bounds checks); the ISA
        // was verified by `for_isa` when this `Kernels` was built.
        unsafe { (self.cols)(x, cols, k, out) }
    }

    /// The nearest of the `k` columns of `cols` to `x` (see [`Kernels::sq_dists_columns`])
    /// and its squared distance; `out` is scratch of at least `k` floats.
    #[inline]
    pub fn nearest_column(&self, x: &[f32], cols: &[f32], k: usize, out: &mut [f32]) -> (u32, f32) {
        assert!(
            cols.len() == x.len() * k && out.len() >= k,
            "column kernel sizes"
        );
        // SAFETY: as in `sq_dists_columns`.
        unsafe { (self.nearest)(x, cols, k, out) }
    }

    /// Hamming distance between equal-length bit strings of whole `u64` words. Panics on
    /// a length mismatch.
    #[inline]
    pub fn hamming(&self, a: &[u8], b: &[u8]) -> u32 {
        assert!(a.len() == b.len(), "hamming needs equal lengths");
        // SAFETY: the ISA was verified by `for_isa` when this `Kernels` was built; the body
        // is safe code.
        unsafe { (self.hamming)(a, b) }
    }

    /// `out[r]` = Hamming distance from `q` to row `r` of `rows` (rows of `q.len()` bytes).
    /// Panics unless `rows` holds exactly `out.len()` rows.
    #[inline]
    pub fn hamming_all(&self, q: &[u8], rows: &[u8], out: &mut [u32]) {
        assert!(rows.len() == q.len() * out.len(), "hamming_all sizes");
        // SAFETY: as in `hamming`.
        unsafe { (self.hamming_all)(q, rows, out) }
    }

    /// `out[r]` = squared distance from `q` to row `r` of `rows`, all read as `i8` vectors
    /// of `q.len()` components. Panics unless `rows` holds exactly `out.len()` rows.
    #[inline]
    pub fn sq_i8_all(&self, q: &[u8], rows: &[u8], out: &mut [u32]) {
        assert!(rows.len() == q.len() * out.len(), "sq_i8_all sizes");
        // SAFETY: as in `hamming`.
        unsafe { (self.sq_i8_all)(q, rows, out) }
    }

    /// `out[i]` = squared distance from `q` to row `rows[i]` of `all` (rows of `q.len()`
    /// bytes as `i8`; a row out of range gives `u32::MAX`). Panics if `out` is shorter
    /// than `rows`.
    #[inline]
    pub fn sq_i8_gather(&self, q: &[u8], all: &[u8], rows: &[u32], out: &mut [u32]) {
        assert!(out.len() >= rows.len(), "sq_i8_gather sizes");
        // SAFETY: as in `hamming`.
        unsafe { (self.sq_i8_gather)(q, all, rows, out) }
    }

    /// `sum codes[i] * w[i]` over 8-bit codes and 16-bit weights. Panics on a length
    /// mismatch. The caller keeps `255 * max|w| * len` below `2^31` (the sum never
    /// overflows; see `index::quant`).
    #[inline]
    pub fn dot_u8_i16(&self, codes: &[u8], w: &[i16]) -> i32 {
        assert_eq!(codes.len(), w.len(), "dot_u8_i16 needs equal lengths");
        // SAFETY: as in `hamming`.
        unsafe { (self.dot_u8_i16)(codes, w) }
    }

    /// `out[i]` = [`Kernels::dot_u8_i16`] of row `rows[i]` of `codes` (rows of `w.len()`
    /// bytes) with `w`, several rows at a time. Panics if a row is out of range or `out` is
    /// shorter than `rows`.
    #[inline]
    pub fn dot_u8_i16_rows(&self, codes: &[u8], rows: &[u32], w: &[i16], out: &mut [i32]) {
        let n = w.len();
        assert!(out.len() >= rows.len(), "dot_u8_i16_rows sizes");
        // One bound for the block (the largest row vectorises; a check per row cost a
        // fifth of a code scan's time outside the kernel).
        let last = rows.iter().copied().max().map_or(0, |r| r as usize + 1);
        assert!(
            last.checked_mul(n).is_some_and(|end| end <= codes.len()),
            "dot_u8_i16_rows: a row out of range"
        );
        // SAFETY: the ISA was detected by `for_isa`; the rows and `out` were checked above.
        unsafe { (self.dot_u8_i16_rows)(codes, rows, w, out) }
    }

    /// `out[i]` = the integer dot product of row `rows[i]` of packed 4-bit `codes` (rows of
    /// `w.len() / 2` bytes; see [`scalar::U4_BLOCK`] for the packing) with `w`. Panics unless
    /// `w.len()` is a multiple of [`scalar::U4_BLOCK`], every row is in range and `out` is at
    /// least as long as `rows`. The caller keeps `15 * max|w| * w.len()` below `2^31`.
    #[inline]
    pub fn dot_u4_i16_rows(&self, codes: &[u8], rows: &[u32], w: &[i16], out: &mut [i32]) {
        assert!(
            w.len().is_multiple_of(scalar::U4_BLOCK),
            "dot_u4_i16_rows: weights in whole blocks"
        );
        assert!(out.len() >= rows.len(), "dot_u4_i16_rows sizes");
        let n = w.len() / 2;
        let last = rows.iter().copied().max().map_or(0, |r| r as usize + 1);
        assert!(
            last.checked_mul(n).is_some_and(|end| end <= codes.len()),
            "dot_u4_i16_rows: a row out of range"
        );
        // SAFETY: the ISA was detected by `for_isa`; the block size, the rows and `out` were
        // checked above.
        unsafe { (self.dot_u4_i16_rows)(codes, rows, w, out) }
    }

    /// `(sum_j 2^j * popcount(planes[j] & bits), popcount(bits))` for the four bit planes
    /// of a 4-bit query (`planes`: four strings of `bits.len()` words). Panics unless
    /// `planes.len() == 4 * bits.len()`.
    #[inline]
    pub fn bitplane_dot(&self, planes: &[u64], bits: &[u64]) -> (u32, u32) {
        assert_eq!(planes.len(), 4 * bits.len(), "bitplane_dot sizes");
        // SAFETY: as in `hamming`.
        unsafe { (self.bitplane)(planes, bits) }
    }

    /// The distance under `metric` (smaller is nearer). Cosine assumes unit vectors.
    #[inline]
    pub fn distance(&self, metric: Metric, a: &[f32], b: &[f32]) -> f32 {
        match metric {
            Metric::L2 => self.l2_sq(a, b),
            Metric::Cosine => 1.0 - self.dot(a, b),
            Metric::Dot => -self.dot(a, b),
        }
    }
}

/// Hint the CPU to start loading `v` (up to its first 512 bytes) into cache. A no-op on
/// targets without a prefetch instruction. Used by graph search to overlap the memory
/// latency of the next neighbours' vectors with distance computations.
#[inline]
pub fn prefetch(v: &[f32]) {
    prefetch_bytes(bytemuck::cast_slice(v));
}

/// Hint the CPU to start loading `v` (up to its first 512 bytes) into cache (see
/// [`prefetch`]).
#[inline]
pub fn prefetch_bytes(v: &[u8]) {
    prefetch_any(&v[..v.len().min(512)]);
}

/// Hint the CPU to start loading rows `rows` of `codes` (rows of `n` bytes), every 64-byte
/// line of each; a row out of range is skipped. The several-rows code kernels call it for
/// the rows two groups ahead of the one they score.
#[inline]
pub(crate) fn prefetch_rows(codes: &[u8], rows: &[u32], n: usize) {
    for &r in rows {
        let start = r as usize * n;
        if let Some(row) = codes.get(start..start + n) {
            prefetch_any(row);
        }
    }
}

/// Hint the CPU to start loading every 64-byte line of `v`, whatever its element type (the
/// atomics of a graph under construction, say).
#[inline]
pub(crate) fn prefetch_any<T>(v: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let p = v.as_ptr().cast::<i8>();
        for off in (0..std::mem::size_of_val(v)).step_by(64) {
            // SAFETY: SSE is part of the x86_64 baseline, so the intrinsic's target feature
            // is always present; a prefetch is a hint that never faults or reads memory
            // architecturally, and `off < size_of_val(v)` keeps the address inside `v`.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.add(off)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

/// How far from 1 a squared length may be for a vector to count as unit already: a few
/// float32 rounding steps, so a vector this function produced is left alone next time.
const UNIT_SQ_TOLERANCE: f64 = 1e-6;

/// Scale `v` to unit length in place. Returns false (and leaves `v` alone) for a zero vector.
/// A vector already of unit length (squared length within 1e-6 of 1) is kept bit for bit,
/// so normalising twice gives the same bits as once (a cosine collection exported and
/// imported again stores the same vectors).
pub fn normalize(v: &mut [f32]) -> bool {
    let sq: f64 = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
    if (sq - 1.0).abs() <= UNIT_SQ_TOLERANCE {
        return true;
    }
    let norm = sq.sqrt() as f32;
    if norm == 0.0 || !norm.is_finite() {
        return false;
    }
    let inv = 1.0 / norm;
    for x in v.iter_mut() {
        *x *= inv;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    #[test]
    fn every_isa_matches_scalar_for_every_dim() {
        let mut seed = 42u64;
        for k in Kernels::available() {
            for dim in (1..=257).chain([383, 384, 385, 512, 767, 768, 1023, 1024, 1536]) {
                let a: Vec<f32> = (0..dim).map(|_| lcg(&mut seed)).collect();
                let b: Vec<f32> = (0..dim).map(|_| lcg(&mut seed)).collect();
                let (l2r, dotr) = (scalar::l2_sq(&a, &b), scalar::dot(&a, &b));
                let tol = 1e-4 * (dim as f32).sqrt() * 4.0;
                assert!(
                    (k.l2_sq(&a, &b) - l2r).abs() <= tol * l2r.abs().max(1.0),
                    "{:?} l2 dim {dim}",
                    k.isa()
                );
                assert!(
                    (k.dot(&a, &b) - dotr).abs() <= tol * dotr.abs().max(1.0),
                    "{:?} dot dim {dim}",
                    k.isa()
                );
            }
        }
    }

    #[test]
    fn batch_kernels_of_every_isa_match_a_direct_computation() {
        let mut seed = 7u64;
        for kern in Kernels::available() {
            for (dim, k) in [(1, 1), (4, 256), (3, 17), (16, 33), (128, 100), (5, 1000)] {
                let rows: Vec<f32> = (0..dim * k).map(|_| lcg(&mut seed)).collect();
                let mut cols = vec![0.0; dim * k];
                for c in 0..k {
                    for t in 0..dim {
                        cols[t * k + c] = rows[c * dim + t];
                    }
                }
                let x: Vec<f32> = (0..dim).map(|_| lcg(&mut seed)).collect();
                let mut out = vec![0.0; k];
                kern.sq_dists_columns(&x, &cols, k, &mut out);
                let direct: Vec<f32> = (0..k)
                    .map(|c| scalar::l2_sq(&x, &rows[c * dim..(c + 1) * dim]))
                    .collect();
                for c in 0..k {
                    assert!((out[c] - direct[c]).abs() <= 1e-4 * direct[c].max(1.0));
                }
                let (at, d) = kern.nearest_column(&x, &cols, k, &mut out);
                let best = direct.iter().copied().fold(f32::INFINITY, f32::min);
                assert!((d - best).abs() <= 1e-4 * best.max(1.0), "{:?}", kern.isa());
                assert!((direct[at as usize] - best).abs() <= 1e-4 * best.max(1.0));
            }
            for words in [1usize, 2, 3, 4, 5, 6, 7, 8, 9, 12] {
                let n = 50;
                let bytes: Vec<u8> = (0..words * 8 * (n + 1))
                    .map(|_| (lcg(&mut seed) * 1000.0) as i32 as u8)
                    .collect();
                let (q, rows) = bytes.split_at(words * 8);
                let mut out = vec![0u32; n];
                kern.hamming_all(q, rows, &mut out);
                for (r, row) in rows.chunks_exact(words * 8).enumerate() {
                    let ham: u32 = q.iter().zip(row).map(|(a, b)| (a ^ b).count_ones()).sum();
                    assert_eq!(out[r], ham, "{:?}", kern.isa());
                    assert_eq!(kern.hamming(q, row), ham);
                }
                let mut sq = vec![0u32; n];
                kern.sq_i8_all(q, rows, &mut sq);
                let picks: Vec<u32> = (0..n as u32).rev().chain([n as u32 + 5]).collect();
                let mut gathered = vec![0u32; picks.len()];
                kern.sq_i8_gather(q, rows, &picks, &mut gathered);
                for (i, &p) in picks.iter().enumerate() {
                    let want = sq.get(p as usize).copied().unwrap_or(u32::MAX);
                    assert_eq!(gathered[i], want, "{:?} gather row {p}", kern.isa());
                }
                for (r, row) in rows.chunks_exact(words * 8).enumerate() {
                    let want: i64 = q
                        .iter()
                        .zip(row)
                        .map(|(a, b)| (i64::from(*a as i8) - i64::from(*b as i8)).pow(2))
                        .sum();
                    assert_eq!(i64::from(sq[r]), want, "{:?}", kern.isa());
                }
            }
        }
    }

    /// Packed 4-bit rows against 16-bit weights: every ISA gives the sum of each component's
    /// nibble (unpacked here from the documented layout) times its weight, for one to sixteen
    /// blocks, rows in blocks of four and a tail, repeats and any order.
    #[test]
    fn packed_4bit_kernels_of_every_isa_match_a_direct_computation() {
        let mut seed = 29u64;
        let nibble = |row: &[u8], d: usize| {
            let (block, at) = (d / scalar::U4_BLOCK, d % scalar::U4_BLOCK);
            let byte = row[block * scalar::U4_BLOCK / 2 + at % (scalar::U4_BLOCK / 2)];
            i64::from(if at < scalar::U4_BLOCK / 2 {
                byte & 15
            } else {
                byte >> 4
            })
        };
        for kern in Kernels::available() {
            for blocks in [1, 2, 3, 6, 12, 16] {
                let len = blocks * scalar::U4_BLOCK;
                let w: Vec<i16> = (0..len)
                    .map(|_| ((lcg(&mut seed) * 2.0 - 1.0) * 16383.0) as i16)
                    .collect();
                let table: Vec<u8> = (0..len / 2 * 40)
                    .map(|_| (lcg(&mut seed) * 1000.0) as i32 as u8)
                    .collect();
                let long: Vec<u32> = (0..37).map(|i| (i * 11) % 40).collect();
                for rows in [
                    vec![],
                    vec![3],
                    vec![8, 0, 5, 5, 2, 7, 1],
                    (0..9).collect(),
                    long,
                ] {
                    let mut out = vec![i32::MIN; rows.len() + 1];
                    kern.dot_u4_i16_rows(&table, &rows, &w, &mut out);
                    for (i, &r) in rows.iter().enumerate() {
                        let row = &table[r as usize * len / 2..(r as usize + 1) * len / 2];
                        let want: i64 = (0..len).map(|d| nibble(row, d) * i64::from(w[d])).sum();
                        assert_eq!(i64::from(out[i]), want, "{:?} {blocks} blocks", kern.isa());
                    }
                    assert_eq!(out[rows.len()], i32::MIN, "wrote past the rows");
                }
            }
        }
    }

    #[test]
    fn quantised_kernels_of_every_isa_match_a_direct_computation() {
        let mut seed = 11u64;
        for kern in Kernels::available() {
            for len in (0..70).chain([127, 128, 129, 384, 768, 1000]) {
                let codes: Vec<u8> = (0..len)
                    .map(|_| (lcg(&mut seed) * 1000.0) as i32 as u8)
                    .collect();
                let w: Vec<i16> = (0..len)
                    .map(|_| (lcg(&mut seed) * 16383.0) as i16)
                    .collect();
                let want: i64 = codes
                    .iter()
                    .zip(&w)
                    .map(|(c, w)| i64::from(*c) * i64::from(*w))
                    .sum();
                assert_eq!(
                    i64::from(kern.dot_u8_i16(&codes, &w)),
                    want,
                    "{:?} len {len}",
                    kern.isa()
                );
                // Several rows at a time (blocks of four and a tail), in any order.
                if len > 0 {
                    let table: Vec<u8> = (0..len * 40)
                        .map(|_| (lcg(&mut seed) * 1000.0) as i32 as u8)
                        .collect();
                    // Past twelve rows the kernels prefetch rows ahead of the group they score.
                    let long: Vec<u32> = (0..37).map(|i| (i * 11) % 40).collect();
                    for rows in [
                        vec![],
                        vec![3],
                        vec![8, 0, 5, 5, 2, 7, 1],
                        (0..9).collect(),
                        long,
                    ] {
                        let mut out = vec![i32::MIN; rows.len() + 1];
                        kern.dot_u8_i16_rows(&table, &rows, &w, &mut out);
                        for (i, &r) in rows.iter().enumerate() {
                            let row = &table[r as usize * len..(r as usize + 1) * len];
                            let want: i64 = row
                                .iter()
                                .zip(&w)
                                .map(|(c, w)| i64::from(*c) * i64::from(*w))
                                .sum();
                            assert_eq!(i64::from(out[i]), want, "{:?} len {len}", kern.isa());
                        }
                        assert_eq!(out[rows.len()], i32::MIN, "wrote past the rows");
                    }
                }
            }
            for words in [1usize, 2, 6, 12, 13] {
                let mut next = || {
                    let a = (lcg(&mut seed).to_bits() as u64) << 32;
                    a | u64::from(lcg(&mut seed).to_bits())
                };
                let planes: Vec<u64> = (0..4 * words).map(|_| next()).collect();
                let bits: Vec<u64> = (0..words).map(|_| next()).collect();
                let mut want = (0u32, 0u32);
                for i in 0..words * 64 {
                    let b = (bits[i / 64] >> (i % 64)) & 1;
                    if b == 1 {
                        want.1 += 1;
                        for j in 0..4 {
                            want.0 += (((planes[j * words + i / 64] >> (i % 64)) & 1) as u32) << j;
                        }
                    }
                }
                assert_eq!(
                    kern.bitplane_dot(&planes, &bits),
                    want,
                    "{:?} words {words}",
                    kern.isa()
                );
            }
        }
    }

    #[test]
    fn scalar_matches_f64_definition() {
        let a = [1.0f32, 2.0, 3.0, -4.0, 0.5];
        let b = [0.0f32, -1.0, 3.0, 2.0, 0.25];
        assert!((scalar::l2_sq(&a, &b) - (1.0 + 9.0 + 0.0 + 36.0 + 0.0625)).abs() < 1e-6);
        assert!((scalar::dot(&a, &b) - (0.0 - 2.0 + 9.0 - 8.0 + 0.125)).abs() < 1e-6);
    }

    #[test]
    fn normalising_twice_keeps_the_bits() {
        let mut seed = 7u64;
        for dim in [3, 64, 384, 1536] {
            for _ in 0..50 {
                let mut v: Vec<f32> = (0..dim).map(|_| lcg(&mut seed) * 10.0).collect();
                assert!(normalize(&mut v));
                let sq: f64 = v.iter().map(|&x| f64::from(x).powi(2)).sum();
                assert!((sq - 1.0).abs() < 1e-6, "dim {dim}: squared length {sq}");
                let once: Vec<u32> = v.iter().map(|x| x.to_bits()).collect();
                assert!(normalize(&mut v));
                assert_eq!(once, v.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn distance_per_metric() {
        let k = Kernels::best();
        let mut a = vec![3.0f32, 4.0];
        let mut b = vec![4.0f32, 3.0];
        assert!((k.distance(Metric::L2, &a, &b) - 2.0).abs() < 1e-6);
        assert!((k.distance(Metric::Dot, &a, &b) + 24.0).abs() < 1e-6);
        assert!(normalize(&mut a) && normalize(&mut b));
        assert!((k.distance(Metric::Cosine, &a, &b) - (1.0 - 24.0 / 25.0)).abs() < 1e-6);
        assert!(!normalize(&mut [0.0, 0.0]));
        // Idempotent: a normalised vector keeps its bits.
        let once = a.clone();
        assert!(normalize(&mut a));
        assert_eq!(
            once.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            a.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
    }
}
