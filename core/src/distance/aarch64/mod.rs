//! aarch64 kernels (NEON is part of the base ISA there).

pub(crate) mod neon;
