//! Quantized block dot products: a weight row stays in its GGUF blocks and meets activations
//! quantized to 8 bits, as in llama.cpp's CPU backend.
//!
//! Each weight type has a `vec_dot_type` in ggml: Q8_0 (blocks of 32) for Q4_0, Q5_0 and Q8_0,
//! Q8_K (super-blocks of 256 with sums of every 16 quants) for Q4_K, Q5_K and Q6_K. A matrix
//! product quantizes every token's activations once to that format ([`QuantActs`], rounding
//! like ggml's x86 build), then each output is a sum over blocks of an *exact* integer dot
//! product times the two blocks' scales. Why: these are the numbers llama.cpp produces (its
//! activations are rounded to 8 bits too), so a verify run measures the file as llama.cpp will
//! run it; and the weights are read as 4–8 bits instead of 32, with 32 byte products per
//! `vpmaddubsw` where an f32 FMA does 8 (one thread, 4096-value rows: Q4_0/Q5_0 ~1.8× and Q8_0,
//! Q4_K ~1.1× the dequantize-then-FMA path; Q5_K/Q6_K about equal).
//!
//! The result of one (row, token) pair is defined independently of the tiling and the thread
//! count, so it is deterministic, and the portable code computes the same bits as the AVX2 code
//! (the integer parts are exact; the float operations are the same ones in the same order):
//!
//! ```text
//! acc = 0
//! for each block b, in order:                    (32 values; k-quants: super-blocks of 256)
//!     isum = Σ w_q · x_q                          (exact i32; k-quants: Σ_sub scale · Σ w_q · x_q)
//!     acc  = fma(d_w · d_x, isum, acc)
//!     Q4_K/Q5_K: acc = fma(−dmin_w · d_x, Σ_sub min · Σ x_q, acc)
//! ```
//!
//! The AVX2 kernels: for Q4_0/Q5_0/Q8_0 each task repacks its rows so that the eight lanes of a
//! vector are eight rows, and the per-block float work serves eight rows at once
//! ([`avx2::q8_0_family_tile`]); the k-quants run one row against four tokens with integer
//! accumulators, reduced with exact integer adds once per super-block. Measured speeds are in
//! docs/performance.md.

use gguf::GgmlType;
use quantize::{f16_bits_to_f32, f32_to_f16_bits};
use rayon::prelude::*;

/// Values in a Q8_0 block (and in Q4_0 / Q5_0 blocks).
const QK8_0: usize = 32;
/// Values in a k-quant super-block (and in a Q8_K block).
const QK_K: usize = 256;
/// Tokens per [`QKernel::dot`] call (the k-quant kernels and the portable code; the 32-value
/// formats' AVX2 path has its own grouping, see `avx2::q8_0_family_tile`).
const TOKENS: usize = 8;
/// Weight rows per [`QKernel::dot`] call.
const ROWS: usize = 2;
/// Tokens per k-quant inner kernel (half a call): their integer accumulators of 4 tokens and
/// the unpacked weights fill the 16 vector registers.
const HALF: usize = TOKENS / 2;

/// ggml's `vec_dot_type`: the format activations are quantized to for a weight type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ActFormat {
    /// 32 quants with an f16-rounded scale.
    Q8_0,
    /// 256 quants with an f32 scale and sums of every 16.
    Q8K,
}

impl ActFormat {
    /// The activation format for a weight type, or `None` when products of that type still go
    /// through dequantization (types not implemented here).
    pub(crate) fn for_weight(ty: GgmlType) -> Option<ActFormat> {
        match ty {
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => Some(ActFormat::Q8_0),
            GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K => Some(ActFormat::Q8K),
            _ => None,
        }
    }

    fn block(self) -> usize {
        match self {
            ActFormat::Q8_0 => QK8_0,
            ActFormat::Q8K => QK_K,
        }
    }

    /// Integer sums of the quants kept per block: one for Q8_0 (for the offset of 8 or 16 of
    /// Q4_0/Q5_0 quants, which the AVX2 kernel multiplies unsigned), one per 16 for Q8_K (ggml's
    /// `bsums`, for the k-quants' mins and Q6_K's offset of 32).
    fn sums_per_block(self) -> usize {
        match self {
            ActFormat::Q8_0 => 1,
            ActFormat::Q8K => QK_K / 16,
        }
    }
}

/// A batch of token rows quantized to an [`ActFormat`], structure-of-arrays so the kernels load
/// the quants of a block as one 32-byte vector.
pub(crate) struct QuantActs {
    fmt: ActFormat,
    n_in: usize,
    /// Per token, per block: the scale (Q8_0: already rounded to f16).
    d: Vec<f32>,
    /// Per token: `n_in` quants in −127..=127.
    qs: Vec<i8>,
    /// Per token, per block: `sums_per_block` integer sums of the quants.
    sums: Vec<i16>,
}

/// One token's quantized activations.
#[derive(Clone, Copy)]
pub(crate) struct ActRow<'a> {
    d: &'a [f32],
    qs: &'a [i8],
    sums: &'a [i16],
}

impl QuantActs {
    /// Quantizes `n_t` rows of `n_in` values; `n_in` must be a multiple of the format's block.
    /// Rows are independent (spread over rayon's pool), so the result does not depend on the
    /// thread count.
    pub(crate) fn quantize(fmt: ActFormat, x: &[f32], n_t: usize, n_in: usize) -> QuantActs {
        let bs = fmt.block();
        assert!(n_in % bs == 0 && x.len() == n_t * n_in, "activation shape");
        let nb = n_in / bs;
        let ns = nb * fmt.sums_per_block();
        let mut acts = QuantActs {
            fmt,
            n_in,
            d: vec![0.0; n_t * nb],
            qs: vec![0; n_t * n_in],
            sums: vec![0; n_t * ns],
        };
        if n_t == 0 {
            return acts;
        }
        let k = QKernel::detect();
        x.par_chunks(n_in)
            .zip(acts.d.par_chunks_mut(nb))
            .zip(acts.qs.par_chunks_mut(n_in))
            .zip(acts.sums.par_chunks_mut(ns))
            .for_each(|(((x, d), qs), sums)| match fmt {
                ActFormat::Q8_0 => quantize_row_q8_0(k, x, d, qs, sums),
                ActFormat::Q8K => quantize_row_q8_k(k, x, d, qs, sums),
            });
        acts
    }

    pub(crate) fn n_tokens(&self) -> usize {
        self.qs.len() / self.n_in.max(1)
    }

    pub(crate) fn row(&self, t: usize) -> ActRow<'_> {
        let nb = self.n_in / self.fmt.block();
        let ns = nb * self.fmt.sums_per_block();
        ActRow {
            d: &self.d[t * nb..(t + 1) * nb],
            qs: &self.qs[t * self.n_in..(t + 1) * self.n_in],
            sums: &self.sums[t * ns..(t + 1) * ns],
        }
    }
}

/// Round half to even for |v| < 2²² (ggml's `nearest_int` trick: adding 1.5·2²³ makes the FPU
/// round at the units place). `f32::round_ties_even` gives the same values but is a libm call
/// without SSE4.1 in the target features, which cost 4% of a forward pass.
#[inline]
fn round_half_even(v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    if v.abs() < 4_194_304.0 {
        (v + MAGIC) - MAGIC
    } else {
        v
    }
}

/// ggml's x86 `quantize_row_q8_0` (the AVX2 code, which llama.cpp runs on these CPUs): scale
/// max|x|/127 stored as f16, quants `round_half_even(x · 127/max|x|)`.
fn quantize_row_q8_0(k: QKernel, x: &[f32], d: &mut [f32], qs: &mut [i8], sums: &mut [i16]) {
    for (((xb, d), qb), s) in x
        .chunks_exact(QK8_0)
        .zip(d.iter_mut())
        .zip(qs.chunks_exact_mut(QK8_0))
        .zip(sums.iter_mut())
    {
        let amax = k.abs_max(xb);
        *d = f16_bits_to_f32(f32_to_f16_bits(amax / 127.0));
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        // |v · id| ≤ 127 (up to rounding); the clamp only guards non-finite inputs.
        k.round_clamp(xb, id, -127.0, qb);
        *s = qb.iter().map(|&q| q as i16).sum();
    }
}

/// ggml's `quantize_row_q8_K_ref` (x86 uses the reference): scale −max/127 where max is the
/// value of largest magnitude (first one on ties), quants `min(127, round_half_even(x / d))`.
fn quantize_row_q8_k(k: QKernel, x: &[f32], d: &mut [f32], qs: &mut [i8], sums: &mut [i16]) {
    for (((xb, d), qb), sb) in x
        .chunks_exact(QK_K)
        .zip(d.iter_mut())
        .zip(qs.chunks_exact_mut(QK_K))
        .zip(sums.chunks_exact_mut(QK_K / 16))
    {
        // The first value of largest magnitude (NaNs never compare greater).
        let amax = k.abs_max(xb);
        let max = xb.iter().copied().find(|v| v.abs() == amax).unwrap_or(0.0);
        if amax == 0.0 {
            *d = 0.0;
            qb.fill(0);
            sb.fill(0);
            continue;
        }
        let iscale = -127.0 / max;
        k.round_clamp(xb, iscale, -128.0, qb);
        for (s, g) in sb.iter_mut().zip(qb.chunks_exact(16)) {
            *s = g.iter().map(|&q| q as i16).sum();
        }
        *d = 1.0 / iscale;
    }
}

/// Which implementation runs the block kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum QKernel {
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Portable,
}

impl QKernel {
    pub(crate) fn detect() -> QKernel {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2")
                && std::is_x86_feature_detected!("fma")
                && std::is_x86_feature_detected!("f16c")
            {
                return QKernel::Avx2;
            }
        }
        QKernel::Portable
    }

    /// max |x| over a block (NaNs ignored, as `f32::max` does).
    fn abs_max(self, x: &[f32]) -> f32 {
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX2 was detected in `detect`.
            QKernel::Avx2 if x.len() % 8 == 0 => unsafe { avx2::abs_max(x) },
            _ => x.iter().fold(0f32, |m, v| m.max(v.abs())),
        }
    }

    /// `q[i] = clamp(round_half_even(x[i] · s), lo, 127)`, NaN → 0 (what `as i8` makes of it).
    fn round_clamp(self, x: &[f32], s: f32, lo: f32, q: &mut [i8]) {
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX2 was detected in `detect`; the lengths are checked inside.
            QKernel::Avx2 if x.len() % 8 == 0 => unsafe { avx2::round_clamp(x, s, lo, q) },
            _ => {
                for (q, &v) in q.iter_mut().zip(x) {
                    *q = round_half_even(v * s).clamp(lo, 127.0) as i8;
                }
            }
        }
    }

    /// Dot products of [`ROWS`] weight rows (`ty` blocks, `n_in` values) with [`TOKENS`] token
    /// rows. Callers with fewer rows or tokens repeat one; each (row, token) result depends only
    /// on that weight row and token row.
    ///
    /// Panics if `ty` has no [`ActFormat`], or the acts are in another format, or a slice is
    /// shorter than `n_in` values need (the AVX2 code reads through raw pointers after this
    /// check).
    fn dot(
        self,
        ty: GgmlType,
        n_in: usize,
        w: [&[u8]; ROWS],
        x: [ActRow<'_>; TOKENS],
    ) -> [[f32; TOKENS]; ROWS] {
        let fmt = ActFormat::for_weight(ty).expect("type with a block dot product");
        let nb = n_in / fmt.block();
        assert!(n_in % fmt.block() == 0 && w.iter().all(|w| w.len() >= nb * ty.block_bytes()));
        for r in &x {
            assert!(
                r.qs.len() >= n_in && r.d.len() >= nb && r.sums.len() >= nb * fmt.sums_per_block()
            );
        }
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the features were detected in `detect`; lengths were checked above.
            QKernel::Avx2 if fmt == ActFormat::Q8K => unsafe { avx2::dot(ty, nb, w, x) },
            // The 32-value formats' fast path is `matmul_tile` (it repacks rows first).
            _ => w.map(|w| x.map(|r| dot_portable(ty, nb, w, r))),
        }
    }

    /// All products of `n_rows` consecutive weight rows (`w`, `row_bytes` each) with every token
    /// of `acts`: `out[t * n_rows + r]`. The tile is the unit of work of one task in
    /// `Matrix::matmul`.
    pub(crate) fn matmul_tile(
        self,
        ty: GgmlType,
        n_in: usize,
        w: &[u8],
        n_rows: usize,
        acts: &QuantActs,
        out: &mut [f32],
    ) {
        let n_t = acts.n_tokens();
        let fmt = ActFormat::for_weight(ty).expect("type with a block dot product");
        let rb = w.len() / n_rows.max(1);
        assert!(
            fmt == acts.fmt
                && n_in == acts.n_in
                && rb * n_rows == w.len()
                && rb == (n_in / fmt.block()) * ty.block_bytes()
                && out.len() == n_t * n_rows
        );
        if n_rows == 0 || n_t == 0 {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if self == QKernel::Avx2 && fmt == ActFormat::Q8_0 {
            // SAFETY: the features were detected in `detect`; sizes were checked above.
            unsafe { avx2::q8_0_family_tile(ty, n_in / QK8_0, w, n_rows, acts, out) };
            return;
        }
        for t0 in (0..n_t).step_by(TOKENS) {
            let n_g = TOKENS.min(n_t - t0);
            let xr: [ActRow<'_>; TOKENS] = std::array::from_fn(|k| acts.row(t0 + k.min(n_g - 1)));
            for r0 in (0..n_rows).step_by(ROWS) {
                let n_r = ROWS.min(n_rows - r0);
                let wr: [&[u8]; ROWS] = std::array::from_fn(|k| {
                    let r = r0 + k.min(n_r - 1);
                    &w[r * rb..(r + 1) * rb]
                });
                let d = self.dot(ty, n_in, wr, xr);
                for (k, dk) in d.iter().take(n_r).enumerate() {
                    for (j, v) in dk.iter().take(n_g).enumerate() {
                        out[(t0 + j) * n_rows + r0 + k] = *v;
                    }
                }
            }
        }
    }
}

fn f16_at(b: &[u8], o: usize) -> f32 {
    f16_bits_to_f32(u16::from_le_bytes([b[o], b[o + 1]]))
}

/// Q4_K/Q5_K 6-bit sub-block scale and min (ggml's `get_scale_min_k4`).
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Σ a·b over equal-length quant slices, exact.
fn idot(a: &[u8], b: &[i8]) -> i32 {
    a.iter().zip(b).map(|(&a, &b)| a as i32 * b as i32).sum()
}

/// The definition of every kernel, one token at a time (see the module comment).
fn dot_portable(ty: GgmlType, nb: usize, w: &[u8], x: ActRow<'_>) -> f32 {
    let bb = ty.block_bytes();
    let mut acc = 0f32;
    let mut u = [0u8; QK_K];
    for (b, blk) in w.chunks_exact(bb).take(nb).enumerate() {
        match ty {
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => {
                let xq = &x.qs[b * QK8_0..(b + 1) * QK8_0];
                let sw = signed_quants_32(ty, blk);
                let isum: i32 = sw.iter().zip(xq).map(|(&w, &q)| w as i32 * q as i32).sum();
                acc = (f16_at(blk, 0) * x.d[b]).mul_add(isum as f32, acc);
            }
            GgmlType::Q4_K | GgmlType::Q5_K => {
                let xq = &x.qs[b * QK_K..(b + 1) * QK_K];
                let s16 = &x.sums[b * 16..(b + 1) * 16];
                let scales = &blk[4..16];
                let (qh, qs) = match ty {
                    GgmlType::Q4_K => (None, &blk[16..144]),
                    _ => (Some(&blk[16..48]), &blk[48..176]),
                };
                for j in 0..4 {
                    for l in 0..32 {
                        let q = qs[32 * j + l];
                        let (h0, h1) = match qh {
                            Some(h) => ((h[l] >> (2 * j)) & 1, (h[l] >> (2 * j + 1)) & 1),
                            None => (0, 0),
                        };
                        u[64 * j + l] = (q & 0xF) | (h0 << 4);
                        u[64 * j + 32 + l] = (q >> 4) | (h1 << 4);
                    }
                }
                let (mut isum, mut msum) = (0i32, 0i32);
                for j in 0..8 {
                    let (sc, m) = scale_min_k4(j, scales);
                    isum += sc as i32 * idot(&u[32 * j..32 * (j + 1)], &xq[32 * j..32 * (j + 1)]);
                    msum += m as i32 * (s16[2 * j] as i32 + s16[2 * j + 1] as i32);
                }
                let d = f16_at(blk, 0) * x.d[b];
                let dmin = f16_at(blk, 2) * x.d[b];
                acc = d.mul_add(isum as f32, acc);
                acc = (-dmin).mul_add(msum as f32, acc);
            }
            GgmlType::Q6_K => {
                let xq = &x.qs[b * QK_K..(b + 1) * QK_K];
                let s16 = &x.sums[b * 16..(b + 1) * 16];
                let (ql, qh, sc) = (&blk[0..128], &blk[128..192], &blk[192..208]);
                for n in 0..2 {
                    let (ql, qh) = (&ql[64 * n..], &qh[32 * n..]);
                    for l in 0..32 {
                        let o = 128 * n + l;
                        u[o] = (ql[l] & 0xF) | ((qh[l] & 3) << 4);
                        u[o + 32] = (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4);
                        u[o + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
                        u[o + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
                    }
                }
                let mut isum = 0i32;
                for g in 0..16 {
                    let s = sc[g] as i8 as i32;
                    isum += s
                        * (idot(&u[16 * g..16 * (g + 1)], &xq[16 * g..16 * (g + 1)])
                            - 32 * s16[g] as i32);
                }
                acc = (f16_at(blk, 208) * x.d[b]).mul_add(isum as f32, acc);
            }
            _ => unreachable!("dot checked the type"),
        }
    }
    acc
}

/// A Q4_0 / Q5_0 / Q8_0 block's 32 quants as signed values (offsets 8 and 16 removed).
fn signed_quants_32(ty: GgmlType, blk: &[u8]) -> [i8; 32] {
    let mut q = [0i8; 32];
    match ty {
        GgmlType::Q8_0 => {
            for (q, &b) in q.iter_mut().zip(&blk[2..34]) {
                *q = b as i8;
            }
        }
        _ => {
            let (qs, qh, off) = match ty {
                GgmlType::Q4_0 => (&blk[2..18], 0u32, 8),
                _ => (
                    &blk[6..22],
                    u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]),
                    16,
                ),
            };
            for j in 0..16 {
                let lo = (qs[j] & 0xF) as i32 | ((((qh >> j) & 1) << 4) as i32);
                let hi = (qs[j] >> 4) as i32 | ((((qh >> (j + 16)) & 1) << 4) as i32);
                q[j] = (lo - off) as i8;
                q[j + 16] = (hi - off) as i8;
            }
        }
    }
    q
}

// The kernels index several per-token arrays (accumulators, row pointers, scales) with one token
// index, so that each array stays a set of registers; iterator rewrites would hide that.
#[allow(clippy::needless_range_loop)]
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{scale_min_k4, ActRow, QuantActs, HALF, QK8_0, QK_K, ROWS, TOKENS};
    use gguf::GgmlType;

    /// The four tokens' integer sums: lane t of the result = Σ of the 8 lanes of `p[t]`.
    #[inline(always)]
    unsafe fn reduce4(p: [__m256i; HALF]) -> __m128i {
        let h01 = _mm256_hadd_epi32(p[0], p[1]);
        let h23 = _mm256_hadd_epi32(p[2], p[3]);
        let h = _mm256_hadd_epi32(h01, h23);
        _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h))
    }

    #[inline(always)]
    unsafe fn f16_at(p: *const u8) -> f32 {
        let bits = u16::from_le_bytes([*p, *p.add(1)]);
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
    }

    /// # Safety
    /// AVX2 must be present; `x.len()` a multiple of 8.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn abs_max(x: &[f32]) -> f32 {
        let sign = _mm256_set1_ps(-0.0);
        let mut m = _mm256_setzero_ps();
        for c in x.chunks_exact(8) {
            // max_ps returns its second operand when the first is NaN: NaNs are skipped.
            m = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(c.as_ptr())), m);
        }
        let mut l = [0f32; 8];
        _mm256_storeu_ps(l.as_mut_ptr(), m);
        l.iter().fold(0f32, |a, &v| a.max(v))
    }

    /// [`super::QKernel::round_clamp`] eight values at a time.
    ///
    /// # Safety
    /// AVX2 must be present; `x.len()` a multiple of 8.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn round_clamp(x: &[f32], s: f32, lo: f32, q: &mut [i8]) {
        assert!(q.len() == x.len());
        let (sv, lov, hiv) = (_mm256_set1_ps(s), _mm256_set1_ps(lo), _mm256_set1_ps(127.0));
        for (c, qc) in x.chunks_exact(8).zip(q.chunks_exact_mut(8)) {
            let v = _mm256_mul_ps(_mm256_loadu_ps(c.as_ptr()), sv);
            let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v);
            let r = _mm256_and_ps(r, _mm256_cmp_ps::<_CMP_ORD_Q>(r, r));
            let r = _mm256_min_ps(_mm256_max_ps(r, lov), hiv);
            let mut i = [0i32; 8];
            _mm256_storeu_si256(i.as_mut_ptr() as *mut __m256i, _mm256_cvtps_epi32(r));
            for (q, v) in qc.iter_mut().zip(i) {
                *q = v as i8;
            }
        }
    }

    #[inline(always)]
    unsafe fn load(p: *const i8) -> __m256i {
        _mm256_loadu_si256(p as *const __m256i)
    }

    /// Tokens `base..base + 4`'s per-block scales in one vector (lane k = token base + k).
    #[inline(always)]
    unsafe fn lanes_f32(x: &[ActRow<'_>; TOKENS], base: usize, b: usize) -> __m128 {
        _mm_setr_ps(
            *x[base].d.get_unchecked(b),
            *x[base + 1].d.get_unchecked(b),
            *x[base + 2].d.get_unchecked(b),
            *x[base + 3].d.get_unchecked(b),
        )
    }

    /// # Safety
    /// AVX2, FMA and F16C must be present; each `w` holds `nb` blocks of `ty` and every row of
    /// `x` the quants, scales and sums of `nb` blocks (checked by [`super::QKernel::dot`]).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot(
        ty: GgmlType,
        nb: usize,
        w: [&[u8]; ROWS],
        x: [ActRow<'_>; TOKENS],
    ) -> [[f32; TOKENS]; ROWS] {
        let mut out = [[0f32; TOKENS]; ROWS];
        for r in 0..ROWS {
            for base in [0, HALF] {
                let acc = match ty {
                    GgmlType::Q4_K | GgmlType::Q5_K => {
                        q4_q5_k(ty == GgmlType::Q5_K, nb, w[r], &x, base)
                    }
                    GgmlType::Q6_K => q6_k(nb, w[r], &x, base),
                    _ => unreachable!("dot is called for the k-quants only"),
                };
                _mm_storeu_ps(out[r].as_mut_ptr().add(base), acc);
            }
        }
        out
    }

    /// Rows per interleaved group: one i32/f32 lane per row.
    const GROUP: usize = 8;
    /// Tokens per pass over a group's blocks (accumulators in registers).
    const GT: usize = 4;

    /// The 32-value formats with lanes as rows (ggml's repacked `q4_0_8x8` idea): each task
    /// first interleaves its rows' quants by groups of 8 rows so that one 32-byte vector holds
    /// 4 quants of each of the 8 rows; a token's 4 quants are broadcast to the 8 lanes, and
    /// after `maddubs`/`madd` lane r holds row r's partial sum. The per-block float work (the
    /// conversion, the scale product and the fma) then serves 8 rows at once instead of one,
    /// which is what dominates the 32-value formats (see the module comment).
    ///
    /// Q4_0/Q5_0 quants are stored unsigned (0..16 / 0..32) and the offset comes back as
    /// `off · Σ x_q`; their `maddubs` pairs (≤ 2·31·127) can be summed in i16 four (Q5_0) or
    /// eight (Q4_0) at a time before widening. Q8_0 quants keep `vpsignb` (|w| ≤ 128).
    ///
    /// # Safety
    /// AVX2, FMA and F16C must be present; `w` holds `n_rows` rows of `nb` blocks of `ty`,
    /// `acts` is Q8_0 with `nb` blocks per row, `out` has `n_tokens · n_rows` elements
    /// (checked by [`super::QKernel::matmul_tile`]).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q8_0_family_tile(
        ty: GgmlType,
        nb: usize,
        w: &[u8],
        n_rows: usize,
        acts: &QuantActs,
        out: &mut [f32],
    ) {
        let bb = ty.block_bytes();
        let rb = nb * bb;
        let n_groups = n_rows.div_ceil(GROUP);
        // Repack: q[(g·nb + b)·256 + 32k + 4r ..+4] = quants 4k..4k+4 of row 8g+r, block b
        // (the last group repeats its last row).
        let mut q = vec![0u8; n_groups * nb * 256];
        let mut sq = if ty == GgmlType::Q8_0 {
            vec![0u8; q.len()]
        } else {
            Vec::new()
        };
        let mut dw = vec![0f32; n_groups * nb * GROUP];
        for g in 0..n_groups {
            for r in 0..GROUP {
                let row = (g * GROUP + r).min(n_rows - 1);
                for b in 0..nb {
                    let blk = &w[row * rb + b * bb..row * rb + (b + 1) * bb];
                    let at = (g * nb + b) * 256 + 4 * r;
                    let sw = super::signed_quants_32(ty, blk);
                    let off = match ty {
                        GgmlType::Q4_0 => 8,
                        GgmlType::Q5_0 => 16,
                        _ => 0,
                    };
                    for (i, &v) in sw.iter().enumerate() {
                        let o = at + 32 * (i / 4) + i % 4;
                        if ty == GgmlType::Q8_0 {
                            q[o] = v.unsigned_abs();
                            sq[o] = v as u8;
                        } else {
                            q[o] = (v as i32 + off) as u8;
                        }
                    }
                    dw[(g * nb + b) * GROUP + r] = super::f16_at(blk, 0);
                }
            }
        }
        let n_t = acts.n_tokens();
        let ones = _mm256_set1_epi16(1);
        for g in 0..n_groups {
            let n_r = GROUP.min(n_rows - g * GROUP);
            for t0 in (0..n_t).step_by(GT) {
                let n_g = GT.min(n_t - t0);
                let x: [ActRow<'_>; GT] = std::array::from_fn(|k| acts.row(t0 + k.min(n_g - 1)));
                let xq: [*const i8; GT] = x.map(|r| r.qs.as_ptr());
                let mut acc = [_mm256_setzero_ps(); GT];
                for b in 0..nb {
                    let qb = q.as_ptr().add((g * nb + b) * 256);
                    let bx = |t: usize, k: usize| {
                        let p = xq[t].add(b * QK8_0 + 4 * k) as *const i32;
                        _mm256_set1_epi32(std::ptr::read_unaligned(p))
                    };
                    let mut isum = [_mm256_setzero_si256(); GT];
                    match ty {
                        GgmlType::Q8_0 => {
                            let sb = sq.as_ptr().add((g * nb + b) * 256);
                            for k in 0..8 {
                                let a = _mm256_loadu_si256(qb.add(32 * k) as *const __m256i);
                                let sg = _mm256_loadu_si256(sb.add(32 * k) as *const __m256i);
                                for t in 0..GT {
                                    let p = _mm256_maddubs_epi16(a, _mm256_sign_epi8(bx(t, k), sg));
                                    isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(ones, p));
                                }
                            }
                        }
                        _ => {
                            // i16 partial sums of `span` quants-of-4 (bounded above), widened.
                            let span = if ty == GgmlType::Q4_0 { 8 } else { 4 };
                            for k0 in (0..8).step_by(span) {
                                let mut s16 = [_mm256_setzero_si256(); GT];
                                for k in k0..k0 + span {
                                    let u = _mm256_loadu_si256(qb.add(32 * k) as *const __m256i);
                                    for t in 0..GT {
                                        let p = _mm256_maddubs_epi16(u, bx(t, k));
                                        s16[t] = _mm256_add_epi16(s16[t], p);
                                    }
                                }
                                for t in 0..GT {
                                    isum[t] =
                                        _mm256_add_epi32(isum[t], _mm256_madd_epi16(ones, s16[t]));
                                }
                            }
                            let off = if ty == GgmlType::Q4_0 { 8 } else { 16 };
                            for t in 0..GT {
                                let s = *x[t].sums.get_unchecked(b) as i32 * off;
                                isum[t] = _mm256_sub_epi32(isum[t], _mm256_set1_epi32(s));
                            }
                        }
                    }
                    let dwv = _mm256_loadu_ps(dw.as_ptr().add((g * nb + b) * GROUP));
                    for t in 0..GT {
                        let dx = _mm256_broadcast_ss(x[t].d.get_unchecked(b));
                        let scale = _mm256_mul_ps(dwv, dx);
                        acc[t] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(isum[t]), acc[t]);
                    }
                }
                for (t, a) in acc.iter().enumerate().take(n_g) {
                    let o = (t0 + t) * n_rows + g * GROUP;
                    if n_r == GROUP {
                        // A whole group: one store (a slice copy of runtime length is a memcpy
                        // call, which cost 3% of a forward pass).
                        _mm256_storeu_ps(out[o..o + GROUP].as_mut_ptr(), *a);
                    } else {
                        let mut lanes = [0f32; GROUP];
                        _mm256_storeu_ps(lanes.as_mut_ptr(), *a);
                        out[o..o + n_r].copy_from_slice(&lanes[..n_r]);
                    }
                }
            }
        }
    }

    #[inline(always)]
    unsafe fn q4_q5_k(
        five: bool,
        nb: usize,
        w: &[u8],
        x: &[ActRow<'_>; TOKENS],
        base: usize,
    ) -> __m128 {
        let bb = if five { 176 } else { 144 };
        let m4 = _mm256_set1_epi8(0xF);
        let mut acc = _mm_setzero_ps();
        for b in 0..nb {
            let blk = w.as_ptr().add(b * bb);
            let scales = std::slice::from_raw_parts(blk.add(4), 12);
            let mut sc = [0i16; 8];
            let mut mins = [0i32; 8];
            for j in 0..8 {
                let (s, m) = scale_min_k4(j, scales);
                sc[j] = s as i16;
                mins[j] = m as i32;
            }
            let qs = blk.add(if five { 48 } else { 16 });
            let hbits = if five {
                _mm256_loadu_si256(blk.add(16) as *const __m256i)
            } else {
                _mm256_setzero_si256()
            };
            let mut hm = _mm256_set1_epi8(1);
            let h16 = _mm256_set1_epi8(0x10);
            let mut sumi = [_mm256_setzero_si256(); HALF];
            for j in 0..4 {
                let scale_l = _mm256_set1_epi16(sc[2 * j]);
                let scale_h = _mm256_set1_epi16(sc[2 * j + 1]);
                let q4bits = _mm256_loadu_si256(qs.add(32 * j) as *const __m256i);
                let mut ql = _mm256_and_si256(q4bits, m4);
                let mut qh = _mm256_and_si256(_mm256_srli_epi16::<4>(q4bits), m4);
                if five {
                    let bl = _mm256_cmpeq_epi8(_mm256_and_si256(hbits, hm), hm);
                    hm = _mm256_add_epi8(hm, hm);
                    let bh = _mm256_cmpeq_epi8(_mm256_and_si256(hbits, hm), hm);
                    hm = _mm256_add_epi8(hm, hm);
                    ql = _mm256_or_si256(ql, _mm256_and_si256(bl, h16));
                    qh = _mm256_or_si256(qh, _mm256_and_si256(bh, h16));
                }
                for t in 0..HALF {
                    let xp = x[base + t].qs.as_ptr().add(b * QK_K + 64 * j);
                    let pl = _mm256_madd_epi16(scale_l, _mm256_maddubs_epi16(ql, load(xp)));
                    let ph = _mm256_madd_epi16(scale_h, _mm256_maddubs_epi16(qh, load(xp.add(32))));
                    sumi[t] = _mm256_add_epi32(sumi[t], _mm256_add_epi32(pl, ph));
                }
            }
            let isum = reduce4(sumi);
            let mut ms = [0i32; HALF];
            for (t, m) in ms.iter_mut().enumerate() {
                let s16 = x[base + t].sums.get_unchecked(b * 16..(b + 1) * 16);
                *m = (0..8)
                    .map(|j| mins[j] * (s16[2 * j] as i32 + s16[2 * j + 1] as i32))
                    .sum();
            }
            let msum = _mm_loadu_si128(ms.as_ptr() as *const __m128i);
            let xd = lanes_f32(x, base, b);
            let d = _mm_mul_ps(_mm_set1_ps(f16_at(blk)), xd);
            let dmin = _mm_mul_ps(_mm_set1_ps(f16_at(blk.add(2))), xd);
            acc = _mm_fmadd_ps(d, _mm_cvtepi32_ps(isum), acc);
            acc = _mm_fnmadd_ps(dmin, _mm_cvtepi32_ps(msum), acc);
        }
        acc
    }

    #[inline(always)]
    unsafe fn q6_k(nb: usize, w: &[u8], x: &[ActRow<'_>; TOKENS], base: usize) -> __m128 {
        let m4 = _mm256_set1_epi8(0xF);
        let m3 = _mm256_set1_epi8(3);
        let mut acc = _mm_setzero_ps();
        for b in 0..nb {
            let blk = w.as_ptr().add(b * 210);
            let sc = std::slice::from_raw_parts(blk.add(192) as *const i8, 16);
            let mut sumi = [_mm256_setzero_si256(); HALF];
            for n in 0..2 {
                let ql = blk.add(64 * n);
                let qhb = _mm256_loadu_si256(blk.add(128 + 32 * n) as *const __m256i);
                let b1 = _mm256_loadu_si256(ql as *const __m256i);
                let b2 = _mm256_loadu_si256(ql.add(32) as *const __m256i);
                let h0 = _mm256_slli_epi16::<4>(_mm256_and_si256(qhb, m3));
                let h1 = _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<2>(qhb), m3));
                let h2 = _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<4>(qhb), m3));
                let h3 = _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<6>(qhb), m3));
                let v = [
                    _mm256_or_si256(_mm256_and_si256(b1, m4), h0),
                    _mm256_or_si256(_mm256_and_si256(b2, m4), h1),
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(b1), m4), h2),
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(b2), m4), h3),
                ];
                for (k, vk) in v.iter().enumerate() {
                    let g = 8 * n + 2 * k;
                    let s = _mm256_set_m128i(
                        _mm_set1_epi16(sc[g + 1] as i16),
                        _mm_set1_epi16(sc[g] as i16),
                    );
                    for t in 0..HALF {
                        let xp = x[base + t].qs.as_ptr().add(b * QK_K + 128 * n + 32 * k);
                        let p = _mm256_madd_epi16(s, _mm256_maddubs_epi16(*vk, load(xp)));
                        sumi[t] = _mm256_add_epi32(sumi[t], p);
                    }
                }
            }
            let mut os = [0i32; HALF];
            for (t, o) in os.iter_mut().enumerate() {
                let s16 = x[base + t].sums.get_unchecked(b * 16..(b + 1) * 16);
                *o = 32 * (0..16).map(|g| sc[g] as i32 * s16[g] as i32).sum::<i32>();
            }
            let isum = _mm_sub_epi32(
                reduce4(sumi),
                _mm_loadu_si128(os.as_ptr() as *const __m128i),
            );
            let d = _mm_mul_ps(_mm_set1_ps(f16_at(blk.add(208))), lanes_f32(x, base, b));
            acc = _mm_fmadd_ps(d, _mm_cvtepi32_ps(isum), acc);
        }
        acc
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Deterministic pseudo-random values (xorshift), roughly N(0, 1)-shaped.
    pub(crate) fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                let mut u = 0f32;
                for _ in 0..4 {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    u += (s >> 40) as f32 / (1u64 << 24) as f32;
                }
                u - 2.0
            })
            .collect()
    }

    pub(crate) const TYPES: [GgmlType; 6] = [
        GgmlType::Q4_0,
        GgmlType::Q5_0,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
    ];

    /// `n_rows` rows of `ty`: quantized values, then (from row 1 on, when `random`) random
    /// bytes with finite f16 scales, which reach the extremes (−128 Q8_0 quants, 6-bit scales
    /// of 63, Q6_K scales of −128) that real files may hold.
    pub(crate) fn weights(ty: GgmlType, n_in: usize, n_rows: usize, random: bool) -> Vec<u8> {
        let mut w = quantize::quantize(ty, &values(n_rows * n_in, 3), n_in, None).unwrap();
        if !random {
            return w;
        }
        let rb = ty.row_bytes(n_in as u64).unwrap() as usize;
        let mut s = 0x1234_5678_9abc_def1u64;
        for byte in &mut w[rb..] {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            *byte = (s >> 56) as u8;
        }
        let d_offsets: &[usize] = match ty {
            GgmlType::Q6_K => &[208],
            GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
            _ => &[0],
        };
        for blk in w[rb..].chunks_exact_mut(ty.block_bytes()) {
            for &o in d_offsets {
                blk[o + 1] &= 0x3B; // exponent ≤ 0b01110: |d| < 1, finite
            }
        }
        w
    }

    fn tile(
        k: QKernel,
        ty: GgmlType,
        n_in: usize,
        w: &[u8],
        n_rows: usize,
        a: &QuantActs,
    ) -> Vec<f32> {
        let mut out = vec![f32::NAN; a.n_tokens() * n_rows];
        k.matmul_tile(ty, n_in, w, n_rows, a, &mut out);
        out
    }

    /// Every kernel agrees with Σ dequant(w) · dequant(x) (f64) to within f32 rounding: checks
    /// the block layouts, offsets, scales and mins.
    #[test]
    fn block_dots_match_dequantized_products() {
        let (n_in, n_rows, n_t) = (512, 3, 5);
        for ty in TYPES {
            let fmt = ActFormat::for_weight(ty).unwrap();
            let w = weights(ty, n_in, n_rows, false);
            let wd = quantize::dequantize(ty, &w, n_rows * n_in).unwrap();
            let mut xf = values(n_t * n_in, 2);
            xf[5] = 0.0; // a zero and an all-zero block
            xf[n_in..n_in + fmt.block()].fill(0.0);
            let acts = QuantActs::quantize(fmt, &xf, n_t, n_in);
            for k in [QKernel::Portable, QKernel::detect()] {
                let got = tile(k, ty, n_in, &w, n_rows, &acts);
                for t in 0..n_t {
                    let xd = dequant_acts(&acts, t);
                    for r in 0..n_rows {
                        let p = |i: usize| wd[r * n_in + i] as f64 * xd[i] as f64;
                        let e: f64 = (0..n_in).map(p).sum();
                        let scale: f64 = (0..n_in).map(|i| p(i).abs()).sum();
                        let g = got[t * n_rows + r];
                        assert!(
                            (g as f64 - e).abs() <= 1e-5 * scale,
                            "{ty} {k:?} row {r} token {t}: {g} vs {e}"
                        );
                    }
                }
            }
        }
    }

    fn dequant_acts(a: &QuantActs, t: usize) -> Vec<f32> {
        let r = a.row(t);
        let bs = a.fmt.block();
        r.qs.iter()
            .enumerate()
            .map(|(i, &q)| q as f32 * r.d[i / bs])
            .collect()
    }

    /// The SIMD kernels give the portable definition's bits, on ragged tiles (rows and tokens
    /// not multiples of the kernels' groups) and on random block bytes; and a (row, token)
    /// result does not depend on the other rows and tokens of the tile.
    #[test]
    fn simd_kernels_match_the_portable_definition_bit_for_bit() {
        let k = QKernel::detect();
        if k == QKernel::Portable {
            return; // nothing to compare on this CPU
        }
        let (n_in, n_rows, n_t) = (768, 11, 11);
        for ty in TYPES {
            let fmt = ActFormat::for_weight(ty).unwrap();
            let rb = ty.row_bytes(n_in as u64).unwrap() as usize;
            let w = weights(ty, n_in, n_rows, true);
            let x: Vec<f32> = values(n_t * n_in, 4).iter().map(|v| v * 3.0).collect();
            let acts = QuantActs::quantize(fmt, &x, n_t, n_in);
            let a = tile(k, ty, n_in, &w, n_rows, &acts);
            let b = tile(QKernel::Portable, ty, n_in, &w, n_rows, &acts);
            assert_eq!(
                a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                b.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{ty}"
            );
            // Row 9 alone, token 6 alone.
            let one = QuantActs::quantize(fmt, &x[6 * n_in..7 * n_in], 1, n_in);
            let solo = tile(k, ty, n_in, &w[9 * rb..10 * rb], 1, &one);
            assert_eq!(solo[0].to_bits(), a[6 * n_rows + 9].to_bits(), "{ty}");
        }
    }

    /// The AVX2 rounding gives the portable bits, on ordinary values and on zeros, ±0, ties,
    /// tiny, huge, infinite and NaN activations.
    #[test]
    fn simd_activation_quantization_matches_the_portable_code() {
        let k = QKernel::detect();
        if k == QKernel::Portable {
            return;
        }
        let mut x = values(4 * 512, 6);
        let specials = [
            0.0,
            -0.0,
            0.5,
            -2.5,
            1e-38,
            -1e-45,
            3e38,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ];
        for (i, v) in specials.iter().enumerate() {
            x[512 + 37 * i] = *v; // row 1: specials spread over blocks
        }
        x[1024..1024 + 256].fill(1e-40); // row 2: subnormal (127 / max overflows)
        for (fmt, n) in [(ActFormat::Q8_0, 32), (ActFormat::Q8K, 256)] {
            for r in 0..4 {
                let xr = &x[r * 512..(r + 1) * 512];
                let nb = 512 / n;
                let (mut d1, mut q1, mut s1) = (vec![0f32; nb], vec![0i8; 512], vec![0i16; 512]);
                let (mut d2, mut q2, mut s2) = (d1.clone(), q1.clone(), s1.clone());
                let ns = nb * fmt.sums_per_block();
                match fmt {
                    ActFormat::Q8_0 => {
                        quantize_row_q8_0(k, xr, &mut d1, &mut q1, &mut s1[..ns]);
                        quantize_row_q8_0(QKernel::Portable, xr, &mut d2, &mut q2, &mut s2[..ns]);
                    }
                    ActFormat::Q8K => {
                        quantize_row_q8_k(k, xr, &mut d1, &mut q1, &mut s1[..ns]);
                        quantize_row_q8_k(QKernel::Portable, xr, &mut d2, &mut q2, &mut s2[..ns]);
                    }
                }
                let bits = |d: &[f32]| d.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&d1), bits(&d2), "{fmt:?} row {r}");
                assert_eq!((q1, s1), (q2, s2), "{fmt:?} row {r}");
            }
        }
    }

    #[test]
    fn activation_quantization_follows_ggml() {
        // Q8_0: scale max/127 rounded to f16, round-half-even quants.
        let mut x = vec![0f32; 32];
        x[0] = 127.0;
        x[1] = 2.5;
        x[2] = -3.5;
        x[3] = -127.0;
        let a = QuantActs::quantize(ActFormat::Q8_0, &x, 1, 32);
        assert_eq!(a.d[0], 1.0);
        assert_eq!(&a.qs[..4], &[127, 2, -4, -127]);
        assert_eq!(a.sums[0], -2);
        // Q8_K: the value of largest magnitude maps to −127 (first one on ties), d = −max/127.
        let mut x = vec![0f32; 256];
        x[0] = -2.0;
        x[7] = 2.0;
        x[20] = 1.0;
        let a = QuantActs::quantize(ActFormat::Q8K, &x, 1, 256);
        assert_eq!(a.d[0], 1.0 / (127.0 / 2.0));
        // x[20] · 127/2 = 63.5 rounds to the even 64.
        assert_eq!((a.qs[0], a.qs[7], a.qs[20]), (-127, 127, 64));
        assert_eq!((a.sums[0], a.sums[1]), (0, 64));
        // All zeros: zero scale and quants.
        let a = QuantActs::quantize(ActFormat::Q8K, &[0.0; 256], 1, 256);
        assert_eq!((a.d[0], a.qs.iter().all(|&q| q == 0)), (0.0, true));
    }
}
