//! Quantised copies of a sealed segment's vectors, searched in place of the float32 rows
//! (the graph walk of HNSW, the scan of flat) and re-scored exactly from the float rows:
//!
//! - **sq8**: one byte per component, `x[d] ~ lo[d] + step[d] * code[d]` with `lo`/`step`
//!   trained per segment from each component's range. A query is prepared once as 16-bit
//!   integer weights `q[d] * step[d]` (scaled so no integer sum can overflow); the estimate
//!   is an integer dot product of the weights with a row's codes plus per-row and per-query
//!   constants (`||x~||^2` for l2).
//! - **binary**: one bit per component, the sign of `x - mean` (the mean of the segment's
//!   rows, per component). A row's inner product with the query is estimated in the manner
//!   of RaBitQ (Gao & Long, 2024): `<q - mean, x - mean> ~ f * <q - mean, s>` with `s` the
//!   row's signs as +-1 and `f = ||x - mean||^2 / ||x - mean||_1` (the estimate is exact for
//!   a query along `x - mean`); the query is quantised to 4 bits per component and the
//!   product taken by popcounts of its four bit planes against the row's bits.
//!
//! The codes are their own index in the segment's directory (kind [`QUANT_KIND`]): sections
//! meta, parameters, codes and per-row factors. Only the codes and factors are read by a
//! search; the float rows are touched for the `rescore * k` best candidates, so they can
//! stay on disk.

use std::ops::Range;

use super::hnsw::graph::Graph;
use super::hnsw::kind::expand_for;
use super::hnsw::search as hnsw_search;
use super::{cast, Query, SectionError, Sections, SegmentRows};
use crate::distance::scalar::U4_BLOCK;
use crate::distance::{Kernels, Metric};

/// Directory kind code of a segment's quantised vectors.
pub(crate) const QUANT_KIND: u8 = 17;

const META: u16 = 1;
const PARAMS: u16 = 2;
const CODES: u16 = 3;
const FACTORS: u16 = 4;

/// Format of the sections (meta word 0).
const FORMAT: u64 = 1;

/// A quantisation scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QuantKind {
    Sq8,
    Binary,
}

impl QuantKind {
    fn code(self) -> u64 {
        match self {
            QuantKind::Sq8 => 1,
            QuantKind::Binary => 2,
        }
    }

    fn from_code(c: u64) -> Option<QuantKind> {
        match c {
            1 => Some(QuantKind::Sq8),
            2 => Some(QuantKind::Binary),
            _ => None,
        }
    }

    /// Name in configs and `stats()`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            QuantKind::Sq8 => "sq8",
            QuantKind::Binary => "binary",
        }
    }

    /// Bytes of one row's code.
    pub(crate) fn code_bytes(self, dim: usize) -> usize {
        match self {
            QuantKind::Sq8 => dim,
            QuantKind::Binary => dim.div_ceil(64) * 8,
        }
    }

    /// Per-row factors (`f32`).
    fn factors(self) -> usize {
        match self {
            QuantKind::Sq8 => 1,
            QuantKind::Binary => 2,
        }
    }

    /// Parameters per component (`f32`).
    fn params(self) -> usize {
        match self {
            QuantKind::Sq8 => 2,
            QuantKind::Binary => 1,
        }
    }
}

/// Quantised vectors built for a segment about to be written.
pub(crate) struct BuiltQuant {
    meta: [u64; 8],
    params: Vec<f32>,
    codes: Vec<u8>,
    factors: Vec<f32>,
}

impl BuiltQuant {
    /// The sections to write, by tag.
    pub(crate) fn sections(&self) -> Vec<(u16, &[u8])> {
        vec![
            (META, bytemuck::cast_slice(&self.meta)),
            (PARAMS, bytemuck::cast_slice(&self.params)),
            (CODES, &self.codes),
            (FACTORS, bytemuck::cast_slice(&self.factors)),
        ]
    }
}

/// Rows per parallel encoding task. A graph build encodes each upsert's rows as they are
/// added (1,000 in a typical batch) while the build pool has nothing else to do, so the
/// task must be small enough to give both threads a share: with 4,096 a batch was one task
/// on one thread. Measured on text-minilm-dev (Python API, batches of 1,000, seal 2,000,
/// instrumented load): the build codes' encoding 41 ms in all against 33 ms with 256, the
/// writer's wait for new graph nodes 61 against 45 ms.
const ENCODE_CHUNK: usize = 256;

/// Train the parameters of `kind` on `vectors` (row-major, `dim` wide) and encode them.
pub(crate) fn encode(kind: QuantKind, metric: Metric, vectors: &[f32], dim: usize) -> BuiltQuant {
    use rayon::prelude::*;
    let rows = vectors.len() / dim.max(1);
    let cb = kind.code_bytes(dim);
    let nf = kind.factors();
    let params = match kind {
        QuantKind::Sq8 => {
            // Each component's range over the segment: lo, then step = range / 255.
            let (lo, hi) = component_range(vectors, dim, 1);
            let mut p = Vec::with_capacity(2 * dim);
            for l in &lo {
                p.push(if rows == 0 { 0.0 } else { *l });
            }
            for d in 0..dim {
                let span = if rows == 0 { 0.0 } else { hi[d] - lo[d] };
                // A constant component: every code 0 decodes to it exactly.
                p.push(if span > 0.0 { span / 255.0 } else { 1.0 });
            }
            p
        }
        QuantKind::Binary => {
            let mut mean = vec![0f64; dim];
            for v in vectors.chunks_exact(dim) {
                for d in 0..dim {
                    mean[d] += f64::from(v[d]);
                }
            }
            mean.iter()
                .map(|m| {
                    if rows == 0 {
                        0.0
                    } else {
                        (m / rows as f64) as f32
                    }
                })
                .collect()
        }
    };
    let mut codes = vec![0u8; rows * cb];
    let mut factors = vec![0f32; rows * nf];
    let p = &params;
    codes
        .par_chunks_mut(ENCODE_CHUNK * cb.max(1))
        .zip(factors.par_chunks_mut(ENCODE_CHUNK * nf))
        .zip(vectors.par_chunks(ENCODE_CHUNK * dim.max(1)))
        .for_each(|((codes, factors), vectors)| {
            for ((c, f), v) in codes
                .chunks_exact_mut(cb)
                .zip(factors.chunks_exact_mut(nf))
                .zip(vectors.chunks_exact(dim))
            {
                encode_row(kind, metric, p, v, c, f);
            }
        });
    BuiltQuant {
        meta: [
            FORMAT,
            kind.code(),
            dim as u64,
            rows as u64,
            cb as u64,
            0,
            0,
            0,
        ],
        params,
        codes,
        factors,
    }
}

/// Codes of the rows of a graph under construction, which the insertion beam scores in place of
/// the float rows (the chosen links are then picked on exact distances). Never written: a
/// build-time copy. From [`BUILD_U4_MIN_DIM`] components on, 4 bits a component (an eighth of
/// the float rows' size; packed two to a byte in blocks of [`U4_BLOCK`], zero-padded to a
/// whole block, see `distance::scalar`); below, sq8 (a quarter).
///
/// PERF: the beam is bound by loading the codes of the nodes it visits from memory. Measured
/// on text-minilm-dev through the Python API (seal threshold 2,000, batches of 1,000,
/// `wait_idle()`): scoring the beam on half of each sq8 row (the first 192 components, the
/// same 192 bytes as 4-bit codes of all 384) cut the converged load from 1.96 to 1.74 s and
/// its CPU by 12% (recall@10 0.005 lower); 4-bit codes of every component instead of sq8,
/// eight alternated loads each: 1.99 s against 2.12 s, CPU 3.47 s against 3.70 s, recall@10
/// at ef 10-64 within 0.002. 200k x 128 l2 (one segment): 18.1 s against 17.9 s (128 bytes
/// of sq8 are two cache lines already), recall within 0.004; MNIST 5k x 784: 0.51 s against
/// 0.59 s, recall within 0.004. At 128 components 4 bits bought nothing (the 128 bytes of an
/// sq8 row are two cache lines) and a 1M x 128 graph built with them reached recall@10 0.982
/// at ef 512 (hnswlib 0.992 in the same run; built on sq8 codes in the run before, 0.986
/// against hnswlib's 0.990), so narrower rows keep sq8.
///
/// The per-component range is trained on the rows present (a sample of at most
/// [`BuildCodes::TRAIN_SAMPLE`]) and widened by a margin on each side. Rows added later are
/// encoded with the same range; a component outside it is clamped, which only makes that
/// row's estimates coarser. The range is trained again, and every row encoded again, each
/// time the rows have doubled since the last training, and when more than 1% of the
/// components of newly added rows were clamped (data drifting away from what was trained
/// on) and the rows have grown by a quarter since.
#[derive(Debug, PartialEq)]
pub(crate) struct BuildCodes {
    dim: usize,
    /// Bits a component: 4 or 8.
    bits: u8,
    metric: Metric,
    /// Each component's lowest level, then its step between levels (`dim` each).
    params: Vec<f32>,
    /// [`BuildCodes::row_bytes`] per row.
    codes: Vec<u8>,
    /// The squared norm of each row as decoded (added to l2 estimates).
    factors: Vec<f32>,
    /// Rows the range was trained on.
    trained: usize,
}

/// Fewest components for which build codes take 4 bits a component (sq8 below).
const BUILD_U4_MIN_DIM: usize = 256;

impl BuildCodes {
    /// Rows needed before the range is first trained.
    pub(crate) const TRAIN_ROWS: usize = 256;
    /// Rows a training pass reads at most (evenly spaced).
    const TRAIN_SAMPLE: usize = 65_536;
    /// Extra range on each side of the trained one, as a fraction of its span.
    const MARGIN: f32 = 0.1;

    /// Train on `vectors` (row-major, `dim` wide) and encode them all.
    pub(crate) fn train(metric: Metric, vectors: &[f32], dim: usize) -> BuildCodes {
        let mut b = BuildCodes {
            dim,
            bits: if dim >= BUILD_U4_MIN_DIM { 4 } else { 8 },
            metric,
            params: Vec::new(),
            codes: Vec::new(),
            factors: Vec::new(),
            trained: 0,
        };
        b.retrain(vectors);
        b
    }

    /// Components of a row with its padding (whole blocks of 4-bit codes).
    fn padded(&self) -> usize {
        match self.bits {
            4 => self.dim.div_ceil(U4_BLOCK) * U4_BLOCK,
            _ => self.dim,
        }
    }

    /// Bytes of one row's codes.
    fn row_bytes(&self) -> usize {
        match self.bits {
            4 => self.padded() / 2,
            _ => self.dim,
        }
    }

    /// The highest level of a component's code.
    fn levels(&self) -> f32 {
        match self.bits {
            4 => 15.0,
            _ => 255.0,
        }
    }

    /// Train the range on `vectors` (every row so far) and encode them all again.
    fn retrain(&mut self, vectors: &[f32]) {
        let dim = self.dim;
        let rows = vectors.len() / dim.max(1);
        let stride = rows.div_ceil(Self::TRAIN_SAMPLE).max(1);
        let (lo, hi) = component_range(vectors, dim, stride);
        let mut params = Vec::with_capacity(2 * dim);
        let mut steps = Vec::with_capacity(dim);
        for d in 0..dim {
            // Stored vectors are finite; `lo > hi` only if there were no rows.
            let (l, h) = if lo[d] <= hi[d] {
                (lo[d], hi[d])
            } else {
                (0.0, 0.0)
            };
            let pad = (h - l) * Self::MARGIN;
            params.push(l - pad);
            let step = (h - l + 2.0 * pad) / self.levels();
            // A constant component: every code 0 decodes to it exactly.
            steps.push(if step > 0.0 { step } else { 1.0 });
        }
        params.extend(steps);
        self.params = params;
        self.codes.clear();
        self.factors.clear();
        self.trained = rows;
        self.encode(vectors);
    }

    /// A copy of the first `rows` rows, with room for `more` rows after this one's (see
    /// `Growth`).
    pub(crate) fn copy_upto(&self, rows: usize, more: usize) -> BuildCodes {
        let (rows, rb) = (rows.min(self.rows()), self.row_bytes());
        let mut codes = Vec::with_capacity(self.codes.len() + more * rb);
        codes.extend_from_slice(&self.codes[..rows * rb]);
        let mut factors = Vec::with_capacity(self.factors.len() + more);
        factors.extend_from_slice(&self.factors[..rows]);
        BuildCodes {
            params: self.params.clone(),
            codes,
            factors,
            ..*self
        }
    }

    /// Bring this copy of `from` (see [`BuildCodes::copy_upto`]) up to its first `rows` rows;
    /// all of them again when `from` was trained again since.
    pub(crate) fn copy_rows(&mut self, from: &BuildCodes, rows: usize, more: usize) {
        if self.trained != from.trained || self.params != from.params {
            *self = from.copy_upto(rows, more);
            return;
        }
        let (have, rows, rb) = (self.rows(), rows.min(from.rows()), self.row_bytes());
        if rows > have {
            if self.factors.capacity() < rows {
                self.codes
                    .reserve_exact((rows + more) * rb - self.codes.len());
                self.factors.reserve_exact(rows + more - self.factors.len());
            }
            self.codes
                .extend_from_slice(&from.codes[have * rb..rows * rb]);
            self.factors.extend_from_slice(&from.factors[have..rows]);
        }
    }

    /// Rows encoded.
    pub(crate) fn rows(&self) -> usize {
        self.factors.len()
    }

    /// Add the rows of `all` (every row so far, row-major) not encoded yet; trains the range
    /// again when the rows have doubled since the last training, or drifted out of it.
    pub(crate) fn catch_up(&mut self, all: &[f32]) {
        let (dim, n) = (self.dim, all.len() / self.dim.max(1));
        let have = self.rows();
        if n <= have {
            return;
        }
        if n >= 2 * self.trained {
            return self.retrain(all);
        }
        let clamped = self.encode(&all[have * dim..]);
        if clamped * 100 > (n - have) * dim && 4 * n >= 5 * self.trained {
            self.retrain(all);
        }
    }

    /// Encode `vectors` (row-major) as the next rows; returns how many components fell
    /// outside the range (and were clamped).
    fn encode(&mut self, vectors: &[f32]) -> usize {
        use rayon::prelude::*;
        let (dim, rb, top, bits, metric) = (
            self.dim,
            self.row_bytes(),
            self.levels(),
            self.bits,
            self.metric,
        );
        let rows = vectors.len() / dim.max(1);
        let start = self.rows();
        self.codes.resize((start + rows) * rb, 0);
        self.factors.resize(start + rows, 0.0);
        let p = &self.params;
        let (lo, step) = p.split_at(dim);
        let padded = self.padded();
        let codes = &mut self.codes[start * rb..];
        let factors = &mut self.factors[start..];
        // The caller runs this on trovedb's build pool (`index` does not depend on
        // `background`): rayon's global pool is never started in the host process, since a
        // forked child would inherit it without its threads.
        codes
            .par_chunks_mut(ENCODE_CHUNK * rb)
            .zip(factors.par_chunks_mut(ENCODE_CHUNK))
            .zip(vectors.par_chunks(ENCODE_CHUNK * dim.max(1)))
            .map(|((c, f), v)| {
                let mut levels = vec![0u8; padded];
                c.chunks_exact_mut(rb)
                    .zip(f.iter_mut())
                    .zip(v.chunks_exact(dim))
                    .map(|((c, f), v)| {
                        if bits == 4 {
                            *f = encode_u4(lo, step, v, &mut levels, c);
                        } else {
                            encode_row(QuantKind::Sq8, metric, p, v, c, std::slice::from_mut(f));
                        }
                        v.iter()
                            .zip(lo.iter().zip(step))
                            .filter(|(x, (l, s))| **x < **l || **x > **l + top * **s)
                            .count()
                    })
                    .sum::<usize>()
            })
            .sum()
    }

    /// Prepare `q` (a float row of the graph's width) for scoring against the codes: its
    /// integer weights (zero on the padding), constant and scale, as for sq8.
    pub(crate) fn prepare(&self, q: &[f32], out: &mut Prepared) {
        let (lo, step) = self.params.split_at(self.dim);
        let (top, padded) = (self.levels() as usize, self.padded());
        // `levels * w * padded` stays below 2^31, so the integer sum never overflows.
        let limit = ((i32::MAX as usize) / (top * padded.max(1))).clamp(1, 16_383) as f32;
        prepare_scalar(self.metric, q, lo, step, limit, padded, out);
    }

    /// Hint the CPU to load `row`'s codes.
    #[inline]
    pub(crate) fn prefetch(&self, row: usize) {
        let rb = self.row_bytes();
        crate::distance::prefetch_bytes(&self.codes[row * rb..(row + 1) * rb]);
    }
}

/// Encode row `v` into `code` (zeroed padding included) with the range `lo`, `step`;
/// `levels` is scratch of the padded width. Returns the decoded row's squared norm.
///
/// PERF: in passes that vectorise (levels, then packing two blocks' halves into bytes, then
/// the norm in eight lanes), as sq8's `encode_row` is.
fn encode_u4(lo: &[f32], step: &[f32], v: &[f32], levels: &mut [u8], code: &mut [u8]) -> f32 {
    let dim = v.len();
    for d in 0..dim {
        let t = ((v[d] - lo[d]) / step[d]).clamp(0.0, 15.0);
        levels[d] = (t + 0.5) as u8;
    }
    levels[dim..].fill(0);
    for (c, l) in code
        .chunks_exact_mut(U4_BLOCK / 2)
        .zip(levels.chunks_exact(U4_BLOCK))
    {
        let (a, b) = l.split_at(U4_BLOCK / 2);
        for j in 0..U4_BLOCK / 2 {
            c[j] = a[j] | (b[j] << 4);
        }
    }
    decoded_norm(&levels[..dim], lo, step)
}

/// The squared norm of the row the levels `code` decode to (`lo + step * level` for each
/// component), summed in eight lanes so that it vectorises.
fn decoded_norm(code: &[u8], lo: &[f32], step: &[f32]) -> f32 {
    let dim = code.len();
    let mut lanes = [0f64; 8];
    let whole = dim / 8 * 8;
    for ((c, l), s) in code[..whole]
        .chunks_exact(8)
        .zip(lo[..whole].chunks_exact(8))
        .zip(step[..whole].chunks_exact(8))
    {
        for i in 0..8 {
            let x = f64::from(l[i] + s[i] * f32::from(c[i]));
            lanes[i] += x * x;
        }
    }
    for d in whole..dim {
        let x = f64::from(lo[d] + step[d] * f32::from(code[d]));
        lanes[0] += x * x;
    }
    lanes.iter().sum::<f64>() as f32
}

/// The estimates of one query prepared against [`BuildCodes`] as a graph search's
/// distances: neighbours are scored together through the several-rows kernel.
pub(crate) struct BuildDist<'a> {
    pub codes: &'a BuildCodes,
    pub kernels: &'a Kernels,
    pub prepared: &'a Prepared,
}

impl hnsw_search::Dist for BuildDist<'_> {
    #[inline]
    fn one(&self, n: u32) -> f32 {
        let mut d = [0f32; 1];
        self.many(&[n], &mut d);
        d[0]
    }

    fn many(&self, ns: &[u32], out: &mut [f32]) {
        const CHUNK: usize = 64;
        let mut dots = [0i32; CHUNK];
        let p = self.prepared;
        for (ns, out) in ns.chunks(CHUNK).zip(out.chunks_mut(CHUNK)) {
            let dots = &mut dots[..ns.len()];
            let codes = &self.codes.codes;
            if self.codes.bits == 4 {
                self.kernels.dot_u4_i16_rows(codes, ns, &p.weights, dots);
            } else {
                self.kernels.dot_u8_i16_rows(codes, ns, &p.weights, dots);
            }
            for ((o, &r), &i) in out.iter_mut().zip(ns).zip(dots.iter()) {
                let norm = if p.add_norm {
                    self.codes.factors[r as usize]
                } else {
                    0.0
                };
                *o = p.konst + p.scale * i as f32 + norm;
            }
        }
    }
}

/// Each component's smallest and largest value over every `stride`-th row of `vectors`
/// (infinite, `lo > hi`, when there is no row).
fn component_range(vectors: &[f32], dim: usize, stride: usize) -> (Vec<f32>, Vec<f32>) {
    let mut lo = vec![f32::INFINITY; dim];
    let mut hi = vec![f32::NEG_INFINITY; dim];
    for v in vectors.chunks_exact(dim).step_by(stride) {
        for d in 0..dim {
            lo[d] = lo[d].min(v[d]);
            hi[d] = hi[d].max(v[d]);
        }
    }
    (lo, hi)
}

/// Encode one row into its code and factors.
fn encode_row(
    kind: QuantKind,
    metric: Metric,
    p: &[f32],
    v: &[f32],
    code: &mut [u8],
    f: &mut [f32],
) {
    let dim = v.len();
    match kind {
        QuantKind::Sq8 => {
            let (lo, step) = p.split_at(dim);
            let code = &mut code[..dim];
            // PERF: written so that it vectorises: the nearest level as `floor(t + 0.5)` of
            // the clamped `t` (a truncating cast, `t + 0.5 >= 0.5`) instead of a `round` call
            // per component, and the decoded row's squared norm summed over eight lanes.
            // Measured on the text-minilm-dev default path (20k x 384, 2,000-row seals, three
            // alternated pairs): the load converged 13% sooner; `roundf` alone had been 1.3%
            // of its CPU, the scalar loop around it about 4%.
            for d in 0..dim {
                let t = ((v[d] - lo[d]) / step[d]).clamp(0.0, 255.0);
                code[d] = (t + 0.5) as u8;
            }
            f[0] = decoded_norm(code, lo, step);
        }
        QuantKind::Binary => {
            let mean = p;
            let (mut sq, mut l1, mut mu_x, mut norm) = (0f64, 0f64, 0f64, 0f64);
            for d in 0..dim {
                let r = f64::from(v[d]) - f64::from(mean[d]);
                if r > 0.0 {
                    code[d / 8] |= 1 << (d % 8);
                }
                sq += r * r;
                l1 += r.abs();
                mu_x += f64::from(mean[d]) * r;
                norm += f64::from(v[d]) * f64::from(v[d]);
            }
            let scale = if l1 > 0.0 { sq / l1 } else { 0.0 };
            // <q, x> ~ <q, mean> + <mean, x - mean> + scale * <q - mean, s>.
            match metric {
                Metric::L2 => {
                    f[0] = (norm - 2.0 * mu_x) as f32;
                    f[1] = (-2.0 * scale) as f32;
                }
                Metric::Cosine | Metric::Dot => {
                    f[0] = (-mu_x) as f32;
                    f[1] = (-scale) as f32;
                }
            }
        }
    }
}

/// Where validated quantised vectors lie in a segment's bytes.
#[derive(Debug, Clone)]
pub(crate) struct QuantParts {
    kind: QuantKind,
    params: Range<usize>,
    codes: Range<usize>,
    factors: Range<usize>,
}

/// Sections checksummed before they are parsed at open (the small ones).
pub(crate) const CHECKED_AT_OPEN: &[u16] = &[META, PARAMS];

impl QuantParts {
    /// Validate the sections of a segment of `rows` x `dim` (meta and parameters were
    /// checksummed by the caller).
    pub(crate) fn open(
        s: &Sections<'_>,
        rows: usize,
        dim: usize,
    ) -> Result<QuantParts, SectionError> {
        let (meta, at) = s.meta(META)?;
        let bad = |why: String| SectionError {
            offset: at,
            reason: format!("quantised vectors: {why}"),
        };
        if meta[0] != FORMAT {
            return Err(bad(format!("unknown format {}", meta[0])));
        }
        let kind = QuantKind::from_code(meta[1])
            .ok_or_else(|| bad(format!("unknown kind {}", meta[1])))?;
        if meta[2] != dim as u64 || meta[3] != rows as u64 {
            return Err(bad(format!(
                "{} x {} rows, the segment has {rows} x {dim}",
                meta[3], meta[2]
            )));
        }
        let cb = kind.code_bytes(dim);
        if meta[4] != cb as u64 {
            return Err(bad(format!("code width {} (expected {cb})", meta[4])));
        }
        let count =
            |n: usize, m: usize| n.checked_mul(m).ok_or_else(|| bad("size overflows".into()));
        let parts = QuantParts {
            kind,
            params: s.get(PARAMS, 4, Some(count(dim, kind.params())?))?,
            codes: s.get(CODES, 1, Some(count(rows, cb)?))?,
            factors: s.get(FACTORS, 4, Some(count(rows, kind.factors())?))?,
        };
        let p: &[f32] = cast(s.bytes, &parts.params);
        if p.iter().any(|x| !x.is_finite()) {
            return Err(bad("a parameter is not finite".into()));
        }
        if kind == QuantKind::Sq8 && p[dim..].iter().any(|s| *s <= 0.0) {
            return Err(bad("a step is not positive".into()));
        }
        Ok(parts)
    }

    /// A view over the bytes the parts were validated in.
    pub(crate) fn view<'a>(&self, bytes: &'a [u8], dim: usize) -> QuantView<'a> {
        QuantView {
            kind: self.kind,
            dim,
            cb: self.kind.code_bytes(dim),
            params: cast(bytes, &self.params),
            codes: &bytes[self.codes.clone()],
            factors: cast(bytes, &self.factors),
        }
    }

    /// Bytes of codes and factors (what a search keeps resident).
    pub(crate) fn bytes(&self) -> usize {
        self.codes.len() + self.factors.len() + self.params.len()
    }
}

/// A segment's quantised vectors, borrowed from its bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QuantView<'a> {
    kind: QuantKind,
    dim: usize,
    cb: usize,
    params: &'a [f32],
    codes: &'a [u8],
    factors: &'a [f32],
}

/// A query prepared against one segment's parameters.
#[derive(Debug, Default)]
pub(crate) struct Prepared {
    /// sq8: the integer weights; empty for binary.
    weights: Vec<i16>,
    /// binary: the four bit planes of the 4-bit query.
    planes: Vec<u64>,
    /// Added to every estimate.
    konst: f32,
    /// sq8: multiplies the integer product. binary: `2 * step` of the 4-bit query.
    scale: f32,
    /// binary: `2 * lo` of the 4-bit query.
    lo2: f32,
    /// binary: `sum (q - mean)`.
    sum: f32,
    /// Whether the per-row factor 0 is added (sq8 under l2).
    add_norm: bool,
}

/// The code estimates of one prepared query as a graph search's distances: neighbours
/// are scored together through the several-rows kernel.
pub(crate) struct CodeDist<'a> {
    pub view: &'a QuantView<'a>,
    pub kernels: &'a Kernels,
    pub prepared: &'a Prepared,
}

impl hnsw_search::Dist for CodeDist<'_> {
    #[inline]
    fn one(&self, n: u32) -> f32 {
        self.view.estimate(self.kernels, self.prepared, n as usize)
    }

    fn many(&self, ns: &[u32], out: &mut [f32]) {
        const CHUNK: usize = 64;
        let mut dots = [0i32; CHUNK];
        for (ns, out) in ns.chunks(CHUNK).zip(out.chunks_mut(CHUNK)) {
            self.view
                .estimate_rows(self.kernels, self.prepared, ns, &mut dots, out);
        }
    }
}

/// `sum a[i] * b[i]` in `f64`, in eight partial sums (so it vectorises; a query is prepared
/// once per segment searched).
fn dot_f64(a: &[f32], b: &[f32]) -> f64 {
    let mut acc = [0f64; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += f64::from(x[i]) * f64::from(y[i]);
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// `x` rounded half away from zero, saturated to `i16` (without a call to `roundf`, which
/// the baseline x86-64 target makes of `f32::round`).
#[inline]
fn round_to_i16(x: f32) -> i16 {
    (x + 0.5f32.copysign(x)) as i16
}

/// Prepare `q` against per-component levels `lo + step * code`: integer weights
/// `round(q * step / sigma)` with the largest at `limit` (then zeros up to `padded`
/// components), and the constant and scale that turn their integer product with a row's codes
/// into the metric's estimate: `<q, x~> = c + sigma * I`. Shared by sq8 segments and build
/// codes.
fn prepare_scalar(
    metric: Metric,
    q: &[f32],
    lo: &[f32],
    step: &[f32],
    limit: f32,
    padded: usize,
    out: &mut Prepared,
) {
    let c = dot_f64(q, lo);
    let maxw = q
        .iter()
        .zip(step)
        .map(|(a, s)| (a * s).abs())
        .fold(0f32, f32::max);
    let sigma = if maxw > 0.0 { maxw / limit } else { 1.0 };
    out.weights.clear();
    out.weights
        .extend(q.iter().zip(step).map(|(a, s)| round_to_i16(a * s / sigma)));
    out.weights.resize(padded.max(out.weights.len()), 0);
    out.planes.clear();
    let (konst, scale) = match metric {
        Metric::L2 => (dot_f64(q, q) - 2.0 * c, -2.0 * f64::from(sigma)),
        Metric::Cosine => (1.0 - c, -f64::from(sigma)),
        Metric::Dot => (-c, -f64::from(sigma)),
    };
    out.konst = konst as f32;
    out.scale = scale as f32;
    out.add_norm = metric == Metric::L2;
}

/// Largest weight magnitude of a prepared sq8 query for `dim` components: `255 * w * dim`
/// must stay below `2^31` (the integer dot product never overflows), and 16 bits hold it.
fn weight_limit(dim: usize) -> f32 {
    let by_sum = (i32::MAX as usize) / (255 * dim.max(1));
    by_sum.clamp(1, 16_383) as f32
}

impl QuantView<'_> {
    pub(crate) fn kind(&self) -> QuantKind {
        self.kind
    }

    /// Bytes a search reads: codes and per-row factors.
    pub(crate) fn bytes(&self) -> usize {
        self.codes.len() + std::mem::size_of_val(self.factors)
    }

    /// Prepare `q` (a query as the collection stores vectors: normalised for cosine).
    pub(crate) fn prepare(&self, metric: Metric, q: &[f32], out: &mut Prepared) {
        let dim = self.dim;
        let qq = dot_f64(q, q);
        match self.kind {
            QuantKind::Sq8 => {
                let (lo, step) = self.params.split_at(dim);
                prepare_scalar(metric, q, lo, step, weight_limit(dim), dim, out);
            }
            QuantKind::Binary => {
                let mean = self.params;
                let words = dim.div_ceil(64);
                let qm: f64 = q
                    .iter()
                    .zip(mean)
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum();
                let (mut lo, mut hi, mut sum) = (f32::INFINITY, f32::NEG_INFINITY, 0f64);
                for (a, m) in q.iter().zip(mean) {
                    let r = a - m;
                    lo = lo.min(r);
                    hi = hi.max(r);
                    sum += f64::from(r);
                }
                if dim == 0 {
                    (lo, hi) = (0.0, 0.0);
                }
                let step = if hi > lo { (hi - lo) / 15.0 } else { 1.0 };
                out.planes.clear();
                out.planes.resize(4 * words, 0);
                for (d, (a, m)) in q.iter().zip(mean).enumerate() {
                    let u = (((a - m) - lo) / step).round().clamp(0.0, 15.0) as u32;
                    for j in 0..4 {
                        if (u >> j) & 1 == 1 {
                            out.planes[j * words + d / 64] |= 1 << (d % 64);
                        }
                    }
                }
                out.weights.clear();
                out.konst = match metric {
                    Metric::L2 => (qq - 2.0 * qm) as f32,
                    Metric::Cosine => (1.0 - qm) as f32,
                    Metric::Dot => (-qm) as f32,
                };
                out.scale = 2.0 * step;
                out.lo2 = 2.0 * lo;
                out.sum = sum as f32;
                out.add_norm = false;
            }
        }
    }

    /// The estimated distance of `row` to the prepared query (smaller is nearer).
    #[inline]
    pub(crate) fn estimate(&self, kernels: &Kernels, p: &Prepared, row: usize) -> f32 {
        let code = &self.codes[row * self.cb..(row + 1) * self.cb];
        match self.kind {
            QuantKind::Sq8 => {
                let i = kernels.dot_u8_i16(code, &p.weights);
                let norm = if p.add_norm { self.factors[row] } else { 0.0 };
                p.konst + p.scale * i as f32 + norm
            }
            QuantKind::Binary => {
                let bits: &[u64] = bytemuck::cast_slice(code);
                let (b, ones) = kernels.bitplane_dot(&p.planes, bits);
                // <q - mean, s> = 2 <q - mean, bits> - sum(q - mean).
                let qs = p.lo2 * ones as f32 + p.scale * b as f32 - p.sum;
                let f = &self.factors[2 * row..2 * row + 2];
                p.konst + f[0] + f[1] * qs
            }
        }
    }

    /// The estimates of `rows` (as [`QuantView::estimate`]) into `out[..rows.len()]`; sq8
    /// rows go through the several-rows kernel. Panics if a row is out of range.
    pub(crate) fn estimate_rows(
        &self,
        kernels: &Kernels,
        p: &Prepared,
        rows: &[u32],
        dots: &mut [i32],
        out: &mut [f32],
    ) {
        match self.kind {
            QuantKind::Sq8 => {
                let dots = &mut dots[..rows.len()];
                kernels.dot_u8_i16_rows(self.codes, rows, &p.weights, dots);
                for ((o, &r), &i) in out.iter_mut().zip(rows).zip(dots.iter()) {
                    let norm = if p.add_norm {
                        self.factors[r as usize]
                    } else {
                        0.0
                    };
                    *o = p.konst + p.scale * i as f32 + norm;
                }
            }
            QuantKind::Binary => {
                for (o, &r) in out.iter_mut().zip(rows) {
                    *o = self.estimate(kernels, p, r as usize);
                }
            }
        }
    }

    /// Hint the CPU to load `row`'s code.
    #[inline]
    pub(crate) fn prefetch(&self, row: usize) {
        crate::distance::prefetch_bytes(&self.codes[row * self.cb..(row + 1) * self.cb]);
    }
}

thread_local! {
    static PREPARED: std::cell::RefCell<Prepared> = std::cell::RefCell::new(Prepared::default());
}

/// Run `f` with this thread's reusable prepared query (a fresh one if it is taken).
pub(crate) fn with_prepared<R>(f: impl FnOnce(&mut Prepared) -> R) -> R {
    PREPARED.with(|cell| match cell.try_borrow_mut() {
        Ok(mut p) => f(&mut p),
        Err(_) => f(&mut Prepared::default()),
    })
}

/// How many candidates by code a query re-ranks exactly: `rescore * k`.
fn rescored(knobs: &super::Knobs) -> usize {
    knobs.k.saturating_mul(knobs.rescore.max(1)).max(knobs.k)
}

/// The candidates of one quantised search by their code estimates: the best `rescore * k`
/// over every quantised segment the search visits, keyed by (segment number, row). Shared
/// across segments, it re-ranks `rescore * k` rows in all (as one segment would), not per
/// segment, and its threshold bounds the code scan of the next segment.
#[derive(Debug)]
pub(crate) struct Shortlist {
    /// How many candidates it keeps.
    cap: usize,
    /// `(estimate, (segment << 32) | row)`: the best `cap` so far and the candidates pushed
    /// since the last cut, at most `2 * cap` in all.
    held: Vec<(f32, u64)>,
    /// The worst estimate kept at the last cut (infinite before the first).
    worst: f32,
}

impl Shortlist {
    pub(crate) fn new(knobs: &super::Knobs) -> Shortlist {
        let cap = rescored(knobs);
        Shortlist {
            cap,
            held: Vec::with_capacity(2 * cap.min(1 << 16)),
            worst: f32::INFINITY,
        }
    }

    /// Estimate a candidate must beat (or tie) to enter.
    #[inline]
    fn threshold(&self) -> f32 {
        self.worst
    }

    // PERF: candidates are appended and cut back to the best `cap` once `2 * cap` are held
    // (a selection, linear), instead of a heap kept at `cap` (a sift per entry): ten 2,000-row
    // segments filtered at 50% push ~200 candidates per query; measured ~2% faster there. The
    // threshold tightens at each cut only, so a few more candidates enter.
    #[inline]
    fn push(&mut self, segment: usize, row: usize, estimate: f32) {
        self.held
            .push((estimate, ((segment as u64) << 32) | row as u64));
        if self.held.len() >= 2 * self.cap {
            self.cut();
        }
    }

    /// Keep the best `cap` (ties on the estimate broken by the smaller key, so the set kept
    /// does not depend on the order of pushes).
    fn cut(&mut self) {
        let order = |a: &(f32, u64), b: &(f32, u64)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
        if self.held.len() > self.cap && self.cap > 0 {
            self.held.select_nth_unstable_by(self.cap - 1, order);
            self.held.truncate(self.cap);
        } else if self.cap == 0 {
            self.held.clear();
        }
        if self.held.len() >= self.cap {
            self.worst = self
                .held
                .iter()
                .map(|e| e.0)
                .fold(f32::NEG_INFINITY, f32::max);
        }
    }

    /// The rows held, grouped by segment number (ascending), best estimate first within a
    /// segment.
    pub(crate) fn by_segment(mut self) -> Vec<(usize, Vec<u32>)> {
        self.cut();
        let mut keys: Vec<(usize, f32, u32)> = self
            .held
            .iter()
            .map(|&(d, key)| ((key >> 32) as usize, d, key as u32))
            .collect();
        keys.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)).then(a.2.cmp(&b.2)));
        let mut out: Vec<(usize, Vec<u32>)> = Vec::new();
        for (seg, _, row) in keys {
            match out.last_mut() {
                Some((s, rows)) if *s == seg => rows.push(row),
                _ => out.push((seg, vec![row])),
            }
        }
        out
    }
}

/// Search a quantised segment through its HNSW graph: the beam search scores codes, with a
/// beam of at least `rescore * k`; its best `rescore * k` go to the shortlist as segment
/// `segment` (re-ranked exactly once every segment has been searched).
#[allow(clippy::too_many_arguments, reason = "one segment's search state")]
pub(crate) fn search_graph<G: Graph + ?Sized, A: Fn(usize) -> bool>(
    qv: &QuantView<'_>,
    g: &G,
    seg: &SegmentRows<'_>,
    q: &Query<'_>,
    allow: &A,
    segment: usize,
    short: &mut Shortlist,
) {
    let want = rescored(q.knobs);
    let found = with_prepared(|p| {
        qv.prepare(seg.metric, q.vector, p);
        let dist = CodeDist {
            view: qv,
            kernels: seg.kernels,
            prepared: p,
        };
        let prefetch = |n: u32| qv.prefetch(n as usize);
        let allow_node = |n: u32| allow(n as usize);
        let expand = expand_for(q.passing, seg.rows());
        let mut visited = q.pool.take(g.len());
        let found = hnsw_search::with_scratch(|scratch| {
            hnsw_search::search(
                g,
                &dist,
                &prefetch,
                want,
                q.knobs.ef.max(want),
                &allow_node,
                expand,
                &mut visited,
                scratch,
            )
        });
        q.pool.give(visited);
        found
    });
    for c in found {
        short.push(segment, c.id as usize, c.d);
    }
}

/// Scan `rows` of a quantised segment on their codes into the shortlist (as segment
/// `segment`): a row enters when its estimate beats the shortlist's worst, over every
/// segment scanned so far.
pub(crate) fn scan(
    qv: &QuantView<'_>,
    seg: &SegmentRows<'_>,
    q: &Query<'_>,
    rows: impl FnOnce(&mut dyn FnMut(&[u32])),
    segment: usize,
    short: &mut Shortlist,
) {
    // Rows come and go to the kernel in blocks: several rows at a time share the loads of
    // the query's weights and overlap their latencies. (A filter's bitset hands over at
    // most 127 rows at a time; longer blocks are cut.)
    const BLOCK: usize = 128;
    with_prepared(|p| {
        qv.prepare(seg.metric, q.vector, p);
        let mut thr = short.threshold();
        let (mut dots, mut est) = ([0i32; BLOCK], [0f32; BLOCK]);
        rows(&mut |block: &[u32]| {
            for block in block.chunks(BLOCK) {
                qv.estimate_rows(seg.kernels, p, block, &mut dots, &mut est);
                for (&r, &d) in block.iter().zip(&est) {
                    if d <= thr {
                        short.push(segment, r as usize, d);
                        thr = short.threshold();
                    }
                }
            }
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n * dim)
            .map(|i| {
                s = s
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5 + (i % dim) as f32 * 0.01
            })
            .collect()
    }

    fn sections(b: &BuiltQuant) -> (Vec<u8>, Vec<(u16, Range<usize>)>) {
        let mut bytes = Vec::new();
        let mut entries = Vec::new();
        for (tag, s) in b.sections() {
            while bytes.len() % 64 != 0 {
                bytes.push(0);
            }
            entries.push((tag, bytes.len()..bytes.len() + s.len()));
            bytes.extend_from_slice(s);
        }
        (bytes, entries)
    }

    #[test]
    fn sq8_codes_are_the_nearest_level_and_the_factor_their_norm() {
        // Widths with and without a remainder of eight; rows beyond the trained range too.
        for dim in [1, 7, 8, 13, 384] {
            let train = data(50, dim, 3);
            let b = encode(QuantKind::Sq8, Metric::L2, &train, dim);
            let (lo, step) = b.params.split_at(dim);
            let mut wide = data(20, dim, 9);
            wide.iter_mut().step_by(3).for_each(|x| *x *= 4.0);
            let mut code = vec![0u8; dim];
            let mut f = [0f32];
            for v in train.chunks_exact(dim).chain(wide.chunks_exact(dim)) {
                encode_row(QuantKind::Sq8, Metric::L2, &b.params, v, &mut code, &mut f);
                let mut sq = 0f64;
                for d in 0..dim {
                    // The nearest of the 256 levels to the component (brute force).
                    let level = |c: u8| lo[d] + step[d] * f32::from(c);
                    let best = (0..=255u8)
                        .min_by(|a, b| {
                            (level(*a) - v[d])
                                .abs()
                                .total_cmp(&(level(*b) - v[d]).abs())
                        })
                        .expect("256 levels");
                    let (got, want) = (level(code[d]), level(best));
                    assert!(
                        (got - v[d]).abs() <= (want - v[d]).abs() + step[d] * 1e-3,
                        "dim {dim} component {d}: code {} for {} (nearest {best})",
                        code[d],
                        v[d]
                    );
                    sq += f64::from(got) * f64::from(got);
                }
                assert!(
                    (f64::from(f[0]) - sq).abs() <= 1e-5 * sq.max(1.0),
                    "dim {dim}: factor {} against {sq}",
                    f[0]
                );
            }
        }
    }

    #[test]
    fn the_shortlist_keeps_the_best_estimates_whatever_the_order() {
        let mut seed = 5u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            seed >> 33
        };
        for (k, rescore, n) in [(1, 1, 0), (1, 1, 5), (10, 3, 29), (10, 3, 31), (10, 3, 500)] {
            let knobs = crate::index::Knobs {
                k,
                ef: 16,
                nprobe: 1,
                refine: 1,
                probes: 1,
                rescore,
                scan_row_cost: 1.0,
            };
            // Estimates with many ties, over three segments.
            let cands: Vec<(usize, usize, f32)> = (0..n)
                .map(|i| ((next() % 3) as usize, i, (next() % 40) as f32))
                .collect();
            let mut short = Shortlist::new(&knobs);
            for &(seg, row, d) in &cands {
                // As the scans do: only what beats (or ties) the threshold is pushed.
                if d <= short.threshold() {
                    short.push(seg, row, d);
                }
            }
            let mut want: Vec<(f32, usize, usize)> =
                cands.iter().map(|&(s, r, d)| (d, s, r)).collect();
            want.sort_by(|a, b| a.0.total_cmp(&b.0).then((a.1, a.2).cmp(&(b.1, b.2))));
            want.truncate(k * rescore);
            let mut got: Vec<(usize, usize)> = short
                .by_segment()
                .into_iter()
                .flat_map(|(s, rows)| rows.into_iter().map(move |r| (s, r as usize)))
                .collect();
            let mut want: Vec<(usize, usize)> = want.iter().map(|&(_, s, r)| (s, r)).collect();
            got.sort_unstable();
            want.sort_unstable();
            assert_eq!(got, want, "k {k} rescore {rescore} n {n}");
        }
    }

    #[test]
    fn estimates_follow_the_exact_distances() {
        let k = Kernels::best();
        for dim in [1, 7, 64, 100, 384] {
            let (n, base) = (300, data(300, dim, 1));
            let queries = data(5, dim, 9);
            for metric in [Metric::L2, Metric::Dot] {
                for kind in [QuantKind::Sq8, QuantKind::Binary] {
                    let built = encode(kind, metric, &base, dim);
                    let (bytes, entries) = sections(&built);
                    let s = Sections {
                        bytes: &bytes,
                        entries,
                    };
                    let parts = QuantParts::open(&s, n, dim).unwrap();
                    let view = parts.view(&bytes, dim);
                    let mut p = Prepared::default();
                    for q in queries.chunks_exact(dim) {
                        view.prepare(metric, q, &mut p);
                        let (mut err, mut spread) = (0f64, 0f64);
                        let exact: Vec<f32> = base
                            .chunks_exact(dim)
                            .map(|v| k.distance(metric, q, v))
                            .collect();
                        let mean = exact.iter().map(|x| f64::from(*x)).sum::<f64>() / n as f64;
                        for (r, e) in exact.iter().enumerate() {
                            let est = view.estimate(k, &p, r);
                            err += (f64::from(est) - f64::from(*e)).powi(2);
                            spread += (f64::from(*e) - mean).powi(2);
                        }
                        // sq8 is near exact; binary keeps most of the ordering.
                        let rel = (err / spread.max(1e-12)).sqrt();
                        let limit = if kind == QuantKind::Sq8 { 0.02 } else { 0.8 };
                        assert!(
                            dim == 1 || rel < limit,
                            "{kind:?} {metric:?} dim {dim}: error {rel}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn damaged_meta_or_parameters_are_refused() {
        let dim = 16;
        let built = encode(QuantKind::Sq8, Metric::L2, &data(50, dim, 3), dim);
        let (bytes, entries) = sections(&built);
        let open = |bytes: &[u8], rows: usize| {
            QuantParts::open(
                &Sections {
                    bytes,
                    entries: entries.clone(),
                },
                rows,
                dim,
            )
        };
        assert!(open(&bytes, 50).is_ok());
        assert!(open(&bytes, 49).is_err());
        for (word, value) in [(0usize, 9u64), (1, 7), (2, 15), (4, 3)] {
            let mut b = bytes.clone();
            b[word * 8..word * 8 + 8].copy_from_slice(&value.to_le_bytes());
            let e = open(&b, 50).unwrap_err();
            assert!(e.reason.starts_with("quantised vectors"), "{}", e.reason);
        }
        let mut b = bytes.clone();
        let at = entries[1].1.start + 4 * dim;
        b[at..at + 4].copy_from_slice(&0f32.to_le_bytes());
        assert!(open(&b, 50).unwrap_err().reason.contains("step"));
        let mut b = bytes.clone();
        b[entries[1].1.start..entries[1].1.start + 4].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(open(&b, 50).unwrap_err().reason.contains("finite"));
    }
}
