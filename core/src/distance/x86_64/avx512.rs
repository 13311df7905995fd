//! AVX-512F kernels, 64 floats per iteration in four accumulators, masked tail.
#![expect(
    unsafe_code,
    reason = "SIMD intrinsics; measured faster than AVX2 at dim >= 128"
)]

use std::arch::x86_64::{
    _mm512_add_ps, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_maskz_loadu_ps, _mm512_reduce_add_ps,
    _mm512_setzero_ps, _mm512_sub_ps,
};

/// Squared L2 distance.
///
/// # Safety
/// The CPU must support AVX-512F, and `a.len() == b.len()`. The dispatcher checks the
/// feature once; the safe wrapper checks the lengths.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn l2_sq(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len();
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    // SAFETY: full loads read 16 floats below n; the masked tail load reads only the
    // lanes whose bit is set, all below n. Both slices have length n.
    unsafe {
        while i + 64 <= n {
            for (j, acc) in acc.iter_mut().enumerate() {
                let d = _mm512_sub_ps(
                    _mm512_loadu_ps(pa.add(i + 16 * j)),
                    _mm512_loadu_ps(pb.add(i + 16 * j)),
                );
                *acc = _mm512_fmadd_ps(d, d, *acc);
            }
            i += 64;
        }
        while i + 16 <= n {
            let d = _mm512_sub_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)));
            acc[1] = _mm512_fmadd_ps(d, d, acc[1]);
            i += 16;
        }
        if i < n {
            let mask: u16 = (1u32 << (n - i)).wrapping_sub(1) as u16;
            let d = _mm512_sub_ps(
                _mm512_maskz_loadu_ps(mask, pa.add(i)),
                _mm512_maskz_loadu_ps(mask, pb.add(i)),
            );
            acc[2] = _mm512_fmadd_ps(d, d, acc[2]);
        }
    }
    _mm512_reduce_add_ps(_mm512_add_ps(
        _mm512_add_ps(acc[0], acc[1]),
        _mm512_add_ps(acc[2], acc[3]),
    ))
}

/// Inner product.
///
/// # Safety
/// Same obligations as [`l2_sq`].
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len();
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    // SAFETY: as in `l2_sq`.
    unsafe {
        while i + 64 <= n {
            for (j, acc) in acc.iter_mut().enumerate() {
                *acc = _mm512_fmadd_ps(
                    _mm512_loadu_ps(pa.add(i + 16 * j)),
                    _mm512_loadu_ps(pb.add(i + 16 * j)),
                    *acc,
                );
            }
            i += 64;
        }
        while i + 16 <= n {
            acc[1] = _mm512_fmadd_ps(
                _mm512_loadu_ps(pa.add(i)),
                _mm512_loadu_ps(pb.add(i)),
                acc[1],
            );
            i += 16;
        }
        if i < n {
            let mask: u16 = (1u32 << (n - i)).wrapping_sub(1) as u16;
            acc[2] = _mm512_fmadd_ps(
                _mm512_maskz_loadu_ps(mask, pa.add(i)),
                _mm512_maskz_loadu_ps(mask, pb.add(i)),
                acc[2],
            );
        }
    }
    _mm512_reduce_add_ps(_mm512_add_ps(
        _mm512_add_ps(acc[0], acc[1]),
        _mm512_add_ps(acc[2], acc[3]),
    ))
}

/// [`crate::distance::scalar::sq_dists_columns`] compiled for this ISA.
///
/// # Safety
/// The CPU must support the target features (checked by `Kernels::for_isa`).
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn sq_dists_columns(x: &[f32], cols: &[f32], k: usize, out: &mut [f32]) {
    crate::distance::scalar::sq_dists_columns(x, cols, k, out);
}

/// [`crate::distance::scalar::nearest_column`] compiled for this ISA.
///
/// # Safety
/// The CPU must support the target features (checked by `Kernels::for_isa`).
#[target_feature(enable = "avx512f")]
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
#[target_feature(enable = "avx512f,popcnt")]
pub(crate) unsafe fn hamming(a: &[u8], b: &[u8]) -> u32 {
    crate::distance::scalar::hamming(a, b)
}

/// [`crate::distance::scalar::hamming_all`] compiled with the hardware popcount.
///
/// # Safety
/// The CPU must support the target features (checked by `Kernels::for_isa`).
#[target_feature(enable = "avx512f,popcnt")]
pub(crate) unsafe fn hamming_all(q: &[u8], rows: &[u8], out: &mut [u32]) {
    crate::distance::scalar::hamming_all(q, rows, out);
}

/// [`crate::distance::scalar::sq_i8_all`] compiled for this ISA.
///
/// # Safety
/// The CPU must support the target features (checked by `Kernels::for_isa`).
#[target_feature(enable = "avx512f,avx512bw,popcnt")]
pub(crate) unsafe fn sq_i8_all(q: &[u8], rows: &[u8], out: &mut [u32]) {
    crate::distance::scalar::sq_i8_all(q, rows, out);
}

/// [`crate::distance::scalar::sq_i8_gather`] compiled for this ISA.
///
/// # Safety
/// The CPU must support the target features (checked by `Kernels::for_isa`).
#[target_feature(enable = "avx512f,avx512bw,popcnt")]
pub(crate) unsafe fn sq_i8_gather(q: &[u8], all: &[u8], rows: &[u32], out: &mut [u32]) {
    crate::distance::scalar::sq_i8_gather(q, all, rows, out);
}

/// [`crate::distance::scalar::dot_u8_i16`] compiled for this ISA (widening multiply-add).
///
/// # Safety
/// The CPU must support the target features (checked by `Kernels::for_isa`).
#[target_feature(enable = "avx512f,avx512bw,popcnt")]
pub(crate) unsafe fn dot_u8_i16(codes: &[u8], w: &[i16]) -> i32 {
    crate::distance::scalar::dot_u8_i16(codes, w)
}

/// [`crate::distance::scalar::bitplane_dot`] compiled with the hardware popcount.
///
/// # Safety
/// The CPU must support the target features (checked by `Kernels::for_isa`).
#[target_feature(enable = "avx512f,avx512bw,popcnt")]
pub(crate) unsafe fn bitplane_dot(planes: &[u64], bits: &[u64]) -> (u32, u32) {
    crate::distance::scalar::bitplane_dot(planes, bits)
}
