//! Reference kernels. Every SIMD kernel is tested against these.

/// Squared Euclidean distance.
pub fn l2_sq(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    // PERF: four independent accumulators let the compiler pipeline the adds.
    let mut acc = [0.0f32; 4];
    let chunks = a.len() / 4;
    for i in 0..chunks {
        for j in 0..4 {
            let d = a[i * 4 + j] - b[i * 4 + j];
            acc[j] += d * d;
        }
    }
    let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for i in chunks * 4..a.len() {
        let d = a[i] - b[i];
        s += d * d;
    }
    s
}

/// Inner product.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0.0f32; 4];
    let chunks = a.len() / 4;
    for i in 0..chunks {
        for j in 0..4 {
            acc[j] += a[i * 4 + j] * b[i * 4 + j];
        }
    }
    let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for i in chunks * 4..a.len() {
        s += a[i] * b[i];
    }
    s
}

/// `out[c] = |x - C[c]|^2` for the `k` columns of a component-major matrix `cols`
/// (`x.len()` rows of `k`): the distances from `x` to `k` centroids at once. The loop over
/// `c` is contiguous and branch-free, so each ISA's copy of it (see `Kernels`) compiles to
/// full-width SIMD. Used for k-means, PQ encoding and PQ lookup tables.
#[allow(
    clippy::inline_always,
    reason = "inlined into each ISA's #[target_feature] wrapper, which is what vectorises it"
)]
#[inline(always)]
pub fn sq_dists_columns(x: &[f32], cols: &[f32], k: usize, out: &mut [f32]) {
    let out = &mut out[..k];
    out.fill(0.0);
    for (t, &xt) in x.iter().enumerate() {
        let col = &cols[t * k..(t + 1) * k];
        for (o, &c) in out.iter_mut().zip(col) {
            let d = xt - c;
            *o += d * d;
        }
    }
}

/// The nearest of the `k` columns (see [`sq_dists_columns`]): `(index, squared distance)`,
/// the first on ties. `out` is scratch of at least `k` floats.
#[allow(
    clippy::inline_always,
    reason = "inlined into each ISA's #[target_feature] wrapper, which is what vectorises it"
)]
#[inline(always)]
pub fn nearest_column(x: &[f32], cols: &[f32], k: usize, out: &mut [f32]) -> (u32, f32) {
    // Lane-wise minimum over chunks of 16 (vectorises), then across lanes.
    const L: usize = 16;
    sq_dists_columns(x, cols, k, out);
    let mut best = [f32::INFINITY; L];
    let mut at = [0u32; L];
    let chunks = out[..k].chunks_exact(L);
    let tail = chunks.remainder();
    for (ci, ch) in chunks.enumerate() {
        for l in 0..L {
            let better = ch[l] < best[l];
            best[l] = if better { ch[l] } else { best[l] };
            at[l] = if better { (ci * L + l) as u32 } else { at[l] };
        }
    }
    let mut r = (0u32, f32::INFINITY);
    for l in 0..L {
        if best[l] < r.1 || (best[l].total_cmp(&r.1).is_eq() && at[l] < r.0) {
            r = (at[l], best[l]);
        }
    }
    let base = k - tail.len();
    for (i, &d) in tail.iter().enumerate() {
        if d < r.1 {
            r = ((base + i) as u32, d);
        }
    }
    if r.1 == f32::INFINITY && k > 0 {
        // Every distance is infinite or NaN: fall back to the first column.
        r = (0, out[0]);
    }
    r
}

/// Reference (non-inlined) copy of [`nearest_column`] for the scalar `Kernels`.
pub(crate) fn nearest_column_ref(x: &[f32], cols: &[f32], k: usize, out: &mut [f32]) -> (u32, f32) {
    nearest_column(x, cols, k, out)
}

/// Reference (non-inlined) copy of [`sq_dists_columns`] for the scalar `Kernels`.
pub(crate) fn sq_dists_columns_ref(x: &[f32], cols: &[f32], k: usize, out: &mut [f32]) {
    sq_dists_columns(x, cols, k, out);
}

/// Hamming distance between two bit strings of equal length (whole `u64` words, LE).
#[allow(
    clippy::inline_always,
    reason = "inlined into each ISA's #[target_feature] wrapper, which is what uses popcnt"
)]
#[inline(always)]
pub fn hamming(a: &[u8], b: &[u8]) -> u32 {
    a.chunks_exact(8)
        .zip(b.chunks_exact(8))
        .map(|(x, y)| {
            let x = u64::from_le_bytes(x.try_into().unwrap_or([0; 8]));
            let y = u64::from_le_bytes(y.try_into().unwrap_or([0; 8]));
            (x ^ y).count_ones()
        })
        .sum()
}

/// Reference (non-inlined) copy of [`hamming`] for the scalar `Kernels`.
pub(crate) fn hamming_ref(a: &[u8], b: &[u8]) -> u32 {
    hamming(a, b)
}

/// `out[r] = hamming(q, rows[r])` for every `q.len()`-byte row of `rows`.
#[allow(
    clippy::inline_always,
    reason = "inlined into each ISA's #[target_feature] wrapper, which is what uses popcnt"
)]
#[inline(always)]
pub fn hamming_all(q: &[u8], rows: &[u8], out: &mut [u32]) {
    // PERF: signatures of up to 8 words get a loop with the query's words in registers and
    // a fixed count per row (the general loop re-derived the word count and its bounds at
    // every row: ~2x slower on 384-bit signatures).
    match q.len() {
        8 => hamming_all_words::<1>(q, rows, out),
        16 => hamming_all_words::<2>(q, rows, out),
        24 => hamming_all_words::<3>(q, rows, out),
        32 => hamming_all_words::<4>(q, rows, out),
        40 => hamming_all_words::<5>(q, rows, out),
        48 => hamming_all_words::<6>(q, rows, out),
        56 => hamming_all_words::<7>(q, rows, out),
        64 => hamming_all_words::<8>(q, rows, out),
        _ => {
            for (o, r) in out.iter_mut().zip(rows.chunks_exact(q.len().max(1))) {
                *o = hamming(q, r);
            }
        }
    }
}

#[allow(
    clippy::inline_always,
    reason = "inlined into each ISA's #[target_feature] wrapper, which is what uses popcnt"
)]
#[inline(always)]
fn hamming_all_words<const W: usize>(q: &[u8], rows: &[u8], out: &mut [u32]) {
    let word =
        |b: &[u8], i: usize| u64::from_le_bytes(b[8 * i..8 * i + 8].try_into().unwrap_or([0; 8]));
    let qw: [u64; W] = std::array::from_fn(|i| word(q, i));
    for (o, r) in out.iter_mut().zip(rows.chunks_exact(8 * W)) {
        *o = (0..W).map(|i| (qw[i] ^ word(r, i)).count_ones()).sum();
    }
}

/// Reference (non-inlined) copy of [`hamming_all`] for the scalar `Kernels`.
pub(crate) fn hamming_all_ref(q: &[u8], rows: &[u8], out: &mut [u32]) {
    hamming_all(q, rows, out);
}

/// `out[r]` = squared Euclidean distance between `q` and row `r` of `rows`, both read as
/// `i8` vectors of `q.len()` components (quantised projections).
#[allow(
    clippy::inline_always,
    reason = "inlined into each ISA's #[target_feature] wrapper, which is what vectorises it"
)]
#[inline(always)]
pub fn sq_i8_all(q: &[u8], rows: &[u8], out: &mut [u32]) {
    for (o, r) in out.iter_mut().zip(rows.chunks_exact(q.len().max(1))) {
        let mut acc = 0i32;
        for (a, b) in q.iter().zip(r) {
            let d = i32::from(a.cast_signed()) - i32::from(b.cast_signed());
            acc += d * d;
        }
        *o = acc.unsigned_abs();
    }
}

/// Reference (non-inlined) copy of [`sq_i8_all`] for the scalar `Kernels`.
pub(crate) fn sq_i8_all_ref(q: &[u8], rows: &[u8], out: &mut [u32]) {
    sq_i8_all(q, rows, out);
}

/// `out[i]` = squared distance between `q` and row `rows[i]` of `all` (rows of `q.len()`
/// bytes read as `i8`). Rows out of range give `u32::MAX`.
#[allow(
    clippy::inline_always,
    reason = "inlined into each ISA's #[target_feature] wrapper, which is what vectorises it"
)]
#[inline(always)]
pub fn sq_i8_gather(q: &[u8], all: &[u8], rows: &[u32], out: &mut [u32]) {
    let w = q.len().max(1);
    for (o, &r) in out.iter_mut().zip(rows) {
        let start = r as usize * w;
        *o = match all.get(start..start + w) {
            Some(row) => {
                let mut acc = 0i32;
                for (a, b) in q.iter().zip(row) {
                    let d = i32::from(a.cast_signed()) - i32::from(b.cast_signed());
                    acc += d * d;
                }
                acc.unsigned_abs()
            }
            None => u32::MAX,
        };
    }
}

/// Reference (non-inlined) copy of [`sq_i8_gather`] for the scalar `Kernels`.
pub(crate) fn sq_i8_gather_ref(q: &[u8], all: &[u8], rows: &[u32], out: &mut [u32]) {
    sq_i8_gather(q, all, rows, out);
}

/// Integer dot product of 8-bit codes with 16-bit weights (scalar-quantised rows against a
/// prepared query). The caller bounds `255 * max|w| * len` below `2^31`, so no partial sum
/// overflows; wrapping adds keep the loop free of overflow checks.
#[allow(
    clippy::inline_always,
    reason = "inlined into each ISA's #[target_feature] wrapper, which is what vectorises it"
)]
#[inline(always)]
pub fn dot_u8_i16(codes: &[u8], w: &[i16]) -> i32 {
    codes.iter().zip(w).fold(0i32, |acc, (&c, &w)| {
        acc.wrapping_add(i32::from(c) * i32::from(w))
    })
}

/// Reference (non-inlined) copy of [`dot_u8_i16`] for the scalar `Kernels`.
pub(crate) fn dot_u8_i16_ref(codes: &[u8], w: &[i16]) -> i32 {
    dot_u8_i16(codes, w)
}

/// `out[i]` = [`dot_u8_i16`] of row `rows[i]` of `codes` (rows of `w.len()` bytes) with
/// `w`. A row out of range gives 0 (the `Kernels` wrapper rules that out).
#[allow(
    clippy::inline_always,
    reason = "inlined into each ISA's #[target_feature] wrapper, which is what vectorises it"
)]
#[inline(always)]
pub fn dot_u8_i16_rows(codes: &[u8], rows: &[u32], w: &[i16], out: &mut [i32]) {
    let n = w.len();
    for (o, &r) in out.iter_mut().zip(rows) {
        let start = r as usize * n;
        *o = codes.get(start..start + n).map_or(0, |c| dot_u8_i16(c, w));
    }
}

/// Reference (non-inlined) copy of [`dot_u8_i16_rows`] for the scalar `Kernels`.
pub(crate) fn dot_u8_i16_rows_ref(codes: &[u8], rows: &[u32], w: &[i16], out: &mut [i32]) {
    dot_u8_i16_rows(codes, rows, w, out);
}

/// Components in one block of packed 4-bit codes: a block is 32 bytes, byte `j` holding
/// component `j` of the block in its low nibble and component `32 + j` in its high nibble (so
/// a SIMD kernel splits a block's nibbles into two runs of 32 consecutive components).
pub const U4_BLOCK: usize = 64;

/// Integer dot product of a row of packed 4-bit codes (`w.len() / 2` bytes in blocks of
/// [`U4_BLOCK`] components) with 16-bit weights (`w.len()` a multiple of [`U4_BLOCK`]). The
/// caller bounds `15 * max|w| * w.len()` below `2^31`; wrapping adds keep the loop free of
/// overflow checks.
#[allow(
    clippy::inline_always,
    reason = "inlined into each ISA's #[target_feature] wrapper, which is what vectorises it"
)]
#[inline(always)]
pub fn dot_u4_i16(codes: &[u8], w: &[i16]) -> i32 {
    let mut acc = 0i32;
    for (c, w) in codes
        .chunks_exact(U4_BLOCK / 2)
        .zip(w.chunks_exact(U4_BLOCK))
    {
        let (lo, hi) = w.split_at(U4_BLOCK / 2);
        for j in 0..U4_BLOCK / 2 {
            let (a, b) = (i32::from(c[j] & 15), i32::from(c[j] >> 4));
            acc = acc
                .wrapping_add(a * i32::from(lo[j]))
                .wrapping_add(b * i32::from(hi[j]));
        }
    }
    acc
}

/// `out[i]` = [`dot_u4_i16`] of row `rows[i]` of `codes` (rows of `w.len() / 2` bytes) with
/// `w`. A row out of range gives 0 (the `Kernels` wrapper rules that out).
#[allow(
    clippy::inline_always,
    reason = "inlined into each ISA's #[target_feature] wrapper, which is what vectorises it"
)]
#[inline(always)]
pub fn dot_u4_i16_rows(codes: &[u8], rows: &[u32], w: &[i16], out: &mut [i32]) {
    let n = w.len() / 2;
    for (o, &r) in out.iter_mut().zip(rows) {
        let start = r as usize * n;
        *o = codes.get(start..start + n).map_or(0, |c| dot_u4_i16(c, w));
    }
}

/// Reference (non-inlined) copy of [`dot_u4_i16_rows`] for the scalar `Kernels`.
pub(crate) fn dot_u4_i16_rows_ref(codes: &[u8], rows: &[u32], w: &[i16], out: &mut [i32]) {
    dot_u4_i16_rows(codes, rows, w, out);
}

/// Bit-plane product of a 4-bit query with a bit string: `planes` holds four bit strings of
/// `bits.len()` words each (plane `j` = bit `j` of every query component). Returns
/// `(sum_j 2^j * popcount(plane_j & bits), popcount(bits))`.
#[allow(
    clippy::inline_always,
    reason = "inlined into each ISA's #[target_feature] wrapper, which is what uses popcnt"
)]
#[inline(always)]
pub fn bitplane_dot(planes: &[u64], bits: &[u64]) -> (u32, u32) {
    let w = bits.len();
    let (mut acc, mut ones) = (0u32, 0u32);
    if planes.len() < 4 * w {
        return (0, 0);
    }
    let (p0, rest) = planes.split_at(w);
    let (p1, rest) = rest.split_at(w);
    let (p2, p3) = rest.split_at(w);
    for i in 0..w {
        let b = bits[i];
        acc += (p0[i] & b).count_ones()
            + 2 * (p1[i] & b).count_ones()
            + 4 * (p2[i] & b).count_ones()
            + 8 * (p3[i] & b).count_ones();
        ones += b.count_ones();
    }
    (acc, ones)
}

/// Reference (non-inlined) copy of [`bitplane_dot`] for the scalar `Kernels`.
pub(crate) fn bitplane_dot_ref(planes: &[u64], bits: &[u64]) -> (u32, u32) {
    bitplane_dot(planes, bits)
}
