//! AVX2 + FMA kernels, 32 floats per iteration in four accumulators.
#![expect(
    unsafe_code,
    reason = "SIMD intrinsics; measured 4-8x over scalar (benches/distance)"
)]

use std::arch::x86_64::{
    __m256, _mm256_add_ps, _mm256_castps256_ps128, _mm256_extractf128_ps, _mm256_fmadd_ps,
    _mm256_loadu_ps, _mm256_setzero_ps, _mm256_sub_ps, _mm_add_ps, _mm_add_ss, _mm_cvtss_f32,
    _mm_movehl_ps, _mm_shuffle_ps,
};

#[inline]
#[target_feature(enable = "avx2,fma")]
fn hsum(v: __m256) -> f32 {
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps::<1>(v);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
    _mm_cvtss_f32(s)
}

/// Squared L2 distance.
///
/// # Safety
/// The CPU must support AVX2 and FMA, and `a.len() == b.len()`. The dispatcher in
/// `distance/mod.rs` checks the features once; the safe wrapper checks the lengths.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn l2_sq(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len();
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    // SAFETY: every load reads 8 floats at offset i + 8j with i + 32 <= n, inside both slices
    // (equal lengths are the caller's obligation).
    unsafe {
        while i + 32 <= n {
            for (j, acc) in acc.iter_mut().enumerate() {
                let d = _mm256_sub_ps(
                    _mm256_loadu_ps(pa.add(i + 8 * j)),
                    _mm256_loadu_ps(pb.add(i + 8 * j)),
                );
                *acc = _mm256_fmadd_ps(d, d, *acc);
            }
            i += 32;
        }
        while i + 8 <= n {
            let d = _mm256_sub_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)));
            acc[0] = _mm256_fmadd_ps(d, d, acc[0]);
            i += 8;
        }
    }
    let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut s = hsum(v);
    while i < n {
        let d = a[i] - b[i];
        s += d * d;
        i += 1;
    }
    s
}

/// Inner product.
///
/// # Safety
/// Same obligations as [`l2_sq`].
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len();
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    // SAFETY: as in `l2_sq`: loads stay below n in both equal-length slices.
    unsafe {
        while i + 32 <= n {
            for (j, acc) in acc.iter_mut().enumerate() {
                *acc = _mm256_fmadd_ps(
                    _mm256_loadu_ps(pa.add(i + 8 * j)),
                    _mm256_loadu_ps(pb.add(i + 8 * j)),
                    *acc,
                );
            }
            i += 32;
        }
        while i + 8 <= n {
            acc[0] = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i)),
                _mm256_loadu_ps(pb.add(i)),
                acc[0],
            );
            i += 8;
        }
    }
    let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut s = hsum(v);
    while i < n {
        s += a[i] * b[i];
        i += 1;
    }
    s
}

/// [`crate::distance::scalar::sq_dists_columns`] compiled for this ISA.
///
/// # Safety
/// The CPU must support the target features (checked by `Kernels::for_isa`).
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn sq_dists_columns(x: &[f32], cols: &[f32], k: usize, out: &mut [f32]) {
    crate::distance::scalar::sq_dists_columns(x, cols, k, out);
}

/// [`crate::distance::scalar::nearest_column`] compiled for this ISA.
///
/// # Safety
/// The CPU must support the target features (checked by `Kernels::for_isa`).
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn nearest_column(
    x: &[f32],
    cols: &[f32],
    k: usize,
    out: &mut [f32],
) -> (u32, f32) {
    crate::distance::scalar::nearest_column(x, cols, k, out)
}

/// [`crate::distance::scalar::hamming`] compiled with the hardware popcount.
///
/// # Safety
/// The CPU must support the target features (checked by `Kernels::for_isa`).
#[target_feature(enable = "avx2,fma,popcnt")]
pub(crate) unsafe fn hamming(a: &[u8], b: &[u8]) -> u32 {
    crate::distance::scalar::hamming(a, b)
}

/// [`crate::distance::scalar::hamming_all`] compiled with the hardware popcount.
///
/// # Safety
/// The CPU must support the target features (checked by `Kernels::for_isa`).
#[target_feature(enable = "avx2,fma,popcnt")]
pub(crate) unsafe fn hamming_all(q: &[u8], rows: &[u8], out: &mut [u32]) {
    crate::distance::scalar::hamming_all(q, rows, out);
}

/// [`crate::distance::scalar::sq_i8_all`] compiled for this ISA.
///
/// # Safety
/// The CPU must support the target features (checked by `Kernels::for_isa`).
#[target_feature(enable = "avx2,fma,popcnt")]
pub(crate) unsafe fn sq_i8_all(q: &[u8], rows: &[u8], out: &mut [u32]) {
    crate::distance::scalar::sq_i8_all(q, rows, out);
}

/// [`crate::distance::scalar::sq_i8_gather`] compiled for this ISA.
///
/// # Safety
/// The CPU must support the target features (checked by `Kernels::for_isa`).
#[target_feature(enable = "avx2,fma,popcnt")]
pub(crate) unsafe fn sq_i8_gather(q: &[u8], all: &[u8], rows: &[u32], out: &mut [u32]) {
    crate::distance::scalar::sq_i8_gather(q, all, rows, out);
}

/// [`crate::distance::scalar::dot_u8_i16`] compiled for this ISA (widening multiply-add).
///
/// # Safety
/// The CPU must support the target features (checked by `Kernels::for_isa`).
#[target_feature(enable = "avx2,fma,popcnt")]
pub(crate) unsafe fn dot_u8_i16(codes: &[u8], w: &[i16]) -> i32 {
    crate::distance::scalar::dot_u8_i16(codes, w)
}

/// [`crate::distance::scalar::dot_u8_i16_rows`] compiled for this ISA.
///
/// # Safety
/// The CPU must support the target features (checked by `Kernels::for_isa`).
#[target_feature(enable = "avx2,fma,popcnt")]
pub(crate) unsafe fn dot_u8_i16_rows(codes: &[u8], rows: &[u32], w: &[i16], out: &mut [i32]) {
    crate::distance::scalar::dot_u8_i16_rows(codes, rows, w, out);
}

/// [`crate::distance::scalar::bitplane_dot`] compiled with the hardware popcount.
///
/// # Safety
/// The CPU must support the target features (checked by `Kernels::for_isa`).
#[target_feature(enable = "avx2,fma,popcnt")]
pub(crate) unsafe fn bitplane_dot(planes: &[u64], bits: &[u64]) -> (u32, u32) {
    crate::distance::scalar::bitplane_dot(planes, bits)
}
