//! AVX2 + FMA kernels, 32 floats per iteration in four accumulators.
#![expect(
    unsafe_code,
    reason = "SIMD intrinsics; measured 4-8x over scalar (benches/distance)"
)]

use std::arch::x86_64::{
    __m256, _mm256_add_epi32, _mm256_add_ps, _mm256_castps256_ps128, _mm256_castsi256_si128,
    _mm256_cvtepu8_epi16, _mm256_extractf128_ps, _mm256_extracti128_si256, _mm256_fmadd_ps,
    _mm256_loadu_ps, _mm256_loadu_si256, _mm256_madd_epi16, _mm256_setzero_ps,
    _mm256_setzero_si256, _mm256_sub_ps, _mm_add_epi32, _mm_add_ps, _mm_add_ss, _mm_cvtsi128_si32,
    _mm_cvtss_f32, _mm_loadu_si128, _mm_movehl_ps, _mm_shuffle_epi32, _mm_shuffle_ps,
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

/// [`crate::distance::scalar::dot_u4_i16_rows`] compiled for this ISA.
///
/// # Safety
/// The CPU must support the target features (checked by `Kernels::for_isa`).
#[target_feature(enable = "avx2,fma,popcnt")]
pub(crate) unsafe fn dot_u4_i16_rows(codes: &[u8], rows: &[u32], w: &[i16], out: &mut [i32]) {
    crate::distance::scalar::dot_u4_i16_rows(codes, rows, w, out);
}

/// [`crate::distance::scalar::dot_u8_i16_rows`] with AVX2: four rows at a time share each
/// load of the weights; 16 codes at a time are widened to 16 bits (`vpmovzxbw`) and
/// multiplied pairwise into 32-bit sums (`vpmaddwd`); the last `len % 16` components are
/// summed in scalar code. The sums are exact integers, equal to the scalar body's.
///
/// # Safety
/// The CPU must support AVX2 (checked by `Kernels::for_isa`); every `rows[i]` must satisfy
/// `(rows[i] + 1) * w.len() <= codes.len()` and `out.len() >= rows.len()` (both asserted by
/// the `Kernels` wrapper).
#[target_feature(enable = "avx2,fma,popcnt")]
pub(crate) unsafe fn dot_u8_i16_rows(codes: &[u8], rows: &[u32], w: &[i16], out: &mut [i32]) {
    let n = w.len();
    let full = n - n % 16;
    let (pc, pw) = (codes.as_ptr(), w.as_ptr());
    let tail = |row: &[u8]| crate::distance::scalar::dot_u8_i16(&row[full..], &w[full..]);
    let mut g = 0;
    // SAFETY: each row pointer starts a row of `n` bytes inside `codes` (the caller's
    // obligation); the loads read `[i, i + 16)` with `i + 16 <= full <= n` of the row (16
    // bytes) and of `w` (32 bytes); `out[g + j]` is in bounds since `g + j < rows.len() <=
    // out.len()`; the tails are read through bounds-checked slices.
    unsafe {
        while g + 4 <= rows.len() {
            let starts: [usize; 4] = std::array::from_fn(|j| rows[g + j] as usize * n);
            // Rows two groups ahead start loading (as in the AVX-512 kernel).
            if g + 12 <= rows.len() {
                crate::distance::prefetch_rows(codes, &rows[g + 8..g + 12], n);
            }
            let mut acc = [_mm256_setzero_si256(); 4];
            let mut i = 0;
            while i < full {
                let x = _mm256_loadu_si256(pw.add(i).cast());
                for (a, &s) in acc.iter_mut().zip(&starts) {
                    let c = _mm256_cvtepu8_epi16(_mm_loadu_si128(pc.add(s + i).cast()));
                    *a = _mm256_add_epi32(*a, _mm256_madd_epi16(c, x));
                }
                i += 16;
            }
            for (j, (a, &s)) in acc.iter().zip(&starts).enumerate() {
                let lo = _mm256_castsi256_si128(*a);
                let hi = _mm256_extracti128_si256::<1>(*a);
                let v = _mm_add_epi32(lo, hi);
                let v = _mm_add_epi32(v, _mm_shuffle_epi32::<0b01_00_11_10>(v));
                let v = _mm_add_epi32(v, _mm_shuffle_epi32::<0b10_11_00_01>(v));
                let sum = _mm_cvtsi128_si32(v).wrapping_add(tail(&codes[s..s + n]));
                *out.get_unchecked_mut(g + j) = sum;
            }
            g += 4;
        }
    }
    while g < rows.len() {
        let s = rows[g] as usize * n;
        out[g] = crate::distance::scalar::dot_u8_i16(&codes[s..s + n], w);
        g += 1;
    }
}

/// [`crate::distance::scalar::bitplane_dot`] compiled with the hardware popcount.
///
/// # Safety
/// The CPU must support the target features (checked by `Kernels::for_isa`).
#[target_feature(enable = "avx2,fma,popcnt")]
pub(crate) unsafe fn bitplane_dot(planes: &[u64], bits: &[u64]) -> (u32, u32) {
    crate::distance::scalar::bitplane_dot(planes, bits)
}
