//! NEON kernels, 16 floats per iteration in four accumulators.
#![expect(unsafe_code, reason = "SIMD intrinsics")]

use std::arch::aarch64::{vaddq_f32, vaddvq_f32, vdupq_n_f32, vfmaq_f32, vld1q_f32, vsubq_f32};

/// Squared L2 distance.
///
/// # Safety
/// `a.len() == b.len()` (checked by the safe wrapper). NEON is mandatory on aarch64.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn l2_sq(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len();
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [vdupq_n_f32(0.0); 4];
    let mut i = 0;
    // SAFETY: each load reads 4 floats below n in both slices of length n.
    unsafe {
        while i + 16 <= n {
            for (j, acc) in acc.iter_mut().enumerate() {
                let d = vsubq_f32(vld1q_f32(pa.add(i + 4 * j)), vld1q_f32(pb.add(i + 4 * j)));
                *acc = vfmaq_f32(*acc, d, d);
            }
            i += 16;
        }
        while i + 4 <= n {
            let d = vsubq_f32(vld1q_f32(pa.add(i)), vld1q_f32(pb.add(i)));
            acc[0] = vfmaq_f32(acc[0], d, d);
            i += 4;
        }
    }
    let mut s = vaddvq_f32(vaddq_f32(
        vaddq_f32(acc[0], acc[1]),
        vaddq_f32(acc[2], acc[3]),
    ));
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
#[target_feature(enable = "neon")]
pub(crate) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len();
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [vdupq_n_f32(0.0); 4];
    let mut i = 0;
    // SAFETY: as in `l2_sq`.
    unsafe {
        while i + 16 <= n {
            for (j, acc) in acc.iter_mut().enumerate() {
                *acc = vfmaq_f32(
                    *acc,
                    vld1q_f32(pa.add(i + 4 * j)),
                    vld1q_f32(pb.add(i + 4 * j)),
                );
            }
            i += 16;
        }
        while i + 4 <= n {
            acc[0] = vfmaq_f32(acc[0], vld1q_f32(pa.add(i)), vld1q_f32(pb.add(i)));
            i += 4;
        }
    }
    let mut s = vaddvq_f32(vaddq_f32(
        vaddq_f32(acc[0], acc[1]),
        vaddq_f32(acc[2], acc[3]),
    ));
    while i < n {
        s += a[i] * b[i];
        i += 1;
    }
    s
}
