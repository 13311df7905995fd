//! x86_64 kernels: AVX2+FMA and AVX-512F. Chosen at runtime by `distance::kernels`.

pub(crate) mod avx2;
pub(crate) mod avx512;
