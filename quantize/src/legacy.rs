//! The original 32-element block formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (and Q8_1 decoding).
//!
//! Without an imatrix llama-quantize runs the `_ref` functions, which convert with plain C casts
//! (truncation after adding 8.5 / 0.5 / 16.5) or `roundf` (Q8_0). With an imatrix the 4/5-bit
//! types switch to a weighted search whose weights depend on the whole row's mean square.

use crate::common::{make_qkx3_quants, make_qx_quants, rd_f16, wr_f16, MinSearch};
use crate::fp::c_trunc_i32;

const QK: usize = 32;

/// The `_impl` search parameters shared by Q4_1 and Q5_1.
const IMPL_SEARCH: MinSearch = MinSearch {
    rmin: -0.9,
    rdelta: 0.05,
    nstep: 36,
    use_mad: false,
};

/// Signed value with the largest magnitude (first one wins on ties), as the symmetric `_ref`s pick it.
#[inline(always)]
fn signed_absmax(x: &[f32]) -> f32 {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

#[inline(always)]
fn min_max(x: &[f32]) -> (f32, f32) {
    let mut min = f32::MAX;
    let mut max = -f32::MAX;
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

/// Σx²/n over the whole row: the imatrix paths of the 32-blocks weigh by the row's spread.
fn row_sigma2(x: &[f32]) -> f32 {
    let mut sum_x2 = 0.0f32;
    for &v in x {
        sum_x2 += v * v;
    }
    sum_x2 / x.len() as f32
}

#[inline(always)]
fn imatrix_weights(xb: &[f32], qw: &[f32], sigma2: f32, weight: &mut [f32; QK]) {
    for j in 0..QK {
        weight[j] = qw[j] * (sigma2 + xb[j] * xb[j]).sqrt();
    }
}

// ---------------------------------------------------------------- Q4_0 (d, qs[16])

pub(crate) fn quantize_q4_0(x: &[f32], y: &mut [u8], qw: Option<&[f32]>) {
    match qw {
        None => q4_0_ref_blocks(x, y),
        Some(qw) => {
            let sigma2 = row_sigma2(x);
            let mut weight = [0.0f32; QK];
            let mut l = [0i8; QK];
            for ((xb, yb), qwb) in x
                .chunks_exact(QK)
                .zip(y.chunks_exact_mut(18))
                .zip(qw.chunks_exact(QK))
            {
                imatrix_weights(xb, qwb, sigma2, &mut weight);
                let d = make_qx_quants(8, xb, &mut l, 1, Some(&weight));
                wr_f16(yb, 0, d);
                for j in 0..16 {
                    yb[2 + j] = (l[j] as u8) | ((l[j + 16] as u8) << 4);
                }
            }
        }
    }
}

/// `quantize_row_q4_0_ref`. As for Q8_0, this loop is most of the time of an F16 → Q4_0
/// conversion, so blocks take a branch-free path ([`q4_0_block_fast`]), compiled for AVX2 when
/// the CPU has it; the bytes are the reference's.
fn q4_0_ref_blocks(x: &[f32], y: &mut [u8]) {
    #[inline(always)]
    fn body(x: &[f32], y: &mut [u8]) {
        for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(18)) {
            q4_0_block_fast(xb, yb);
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        unsafe fn avx2(x: &[f32], y: &mut [u8]) {
            body(x, y)
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { avx2(x, y) };
        }
    }
    body(x, y)
}

/// [`q4_0_ref_block`] for blocks of finite values with a normal scale; others take the
/// reference. Same bits because:
/// * `signed_absmax` keeps the first value of largest magnitude (it only replaces on a strict
///   increase), which for finite values is the first `v` with `|v|` equal to the maximum found
///   by any order of comparisons, except when that maximum is 0: the reference then keeps its
///   initial +0.0 (a first -0.0 would flip the sign of `d`);
/// * `|x·id| <= |max·id|` ≈ 8, so `x·id + 8.5` is in [0, 17) and `c_trunc_i32` is a plain
///   in-range truncation.
#[inline(always)]
fn q4_0_block_fast(x: &[f32], y: &mut [u8]) {
    let (amax, bad) = absmax_lanes(x);
    let max = if amax == 0.0 {
        0.0
    } else {
        x.iter().copied().find(|v| v.abs() == amax).unwrap_or(0.0)
    };
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    // False for NaN too (an infinite `id`).
    let in_range = (max * id).abs() < 1.0e6;
    if bad || !in_range {
        return q4_0_ref_block(x, y);
    }
    wr_f16(y, 0, d);
    for j in 0..16 {
        let xi0 = ((x[j] * id + 8.5) as i32).min(15) as u8;
        let xi1 = ((x[j + 16] * id + 8.5) as i32).min(15) as u8;
        y[2 + j] = xi0 | (xi1 << 4);
    }
}

fn q4_0_ref_block(x: &[f32], y: &mut [u8]) {
    let max = signed_absmax(x);
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    wr_f16(y, 0, d);
    for j in 0..16 {
        let x0 = x[j] * id;
        let x1 = x[j + 16] * id;
        let xi0 = (c_trunc_i32(x0 + 8.5) as i8 as i32).min(15) as u8;
        let xi1 = (c_trunc_i32(x1 + 8.5) as i8 as i32).min(15) as u8;
        y[2 + j] = xi0 | (xi1 << 4);
    }
}

pub(crate) fn dequantize_q4_0(x: &[u8], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(18).zip(y.chunks_exact_mut(QK)) {
        let d = rd_f16(xb, 0);
        for j in 0..16 {
            let x0 = (xb[2 + j] & 0x0F) as i32 - 8;
            let x1 = (xb[2 + j] >> 4) as i32 - 8;
            yb[j] = x0 as f32 * d;
            yb[j + 16] = x1 as f32 * d;
        }
    }
}

// ---------------------------------------------------------------- Q4_1 (d, m, qs[16])

pub(crate) fn quantize_q4_1(x: &[f32], y: &mut [u8], qw: Option<&[f32]>) {
    match qw {
        None => {
            for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(20)) {
                let (min, max) = min_max(xb);
                let d = (max - min) / 15.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                wr_f16(yb, 0, d);
                wr_f16(yb, 2, min);
                for j in 0..16 {
                    let x0 = (xb[j] - min) * id;
                    let x1 = (xb[j + 16] - min) * id;
                    let xi0 = (c_trunc_i32(x0 + 0.5) as i8 as i32).min(15) as u8;
                    let xi1 = (c_trunc_i32(x1 + 0.5) as i8 as i32).min(15) as u8;
                    yb[4 + j] = xi0 | (xi1 << 4);
                }
            }
        }
        Some(qw) => {
            let sigma2 = row_sigma2(x);
            let mut weight = [0.0f32; QK];
            let mut l = [0u8; QK];
            let mut laux = [0u8; QK];
            for ((xb, yb), qwb) in x
                .chunks_exact(QK)
                .zip(y.chunks_exact_mut(20))
                .zip(qw.chunks_exact(QK))
            {
                imatrix_weights(xb, qwb, sigma2, &mut weight);
                let mut min = 0.0f32;
                let d = make_qkx3_quants(
                    15,
                    xb,
                    Some(&weight),
                    &mut l,
                    &mut min,
                    &mut laux,
                    IMPL_SEARCH,
                );
                wr_f16(yb, 0, d);
                wr_f16(yb, 2, -min);
                for j in 0..16 {
                    yb[4 + j] = l[j] | (l[j + 16] << 4);
                }
            }
        }
    }
}

pub(crate) fn dequantize_q4_1(x: &[u8], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(20).zip(y.chunks_exact_mut(QK)) {
        let d = rd_f16(xb, 0);
        let m = rd_f16(xb, 2);
        for j in 0..16 {
            let x0 = (xb[4 + j] & 0x0F) as i32;
            let x1 = (xb[4 + j] >> 4) as i32;
            yb[j] = x0 as f32 * d + m;
            yb[j + 16] = x1 as f32 * d + m;
        }
    }
}

// ---------------------------------------------------------------- Q5_0 (d, qh[4], qs[16])

/// Low nibbles into `qs`, fifth bits into the little-endian u32 `qh` (bit j for value j).
#[inline(always)]
fn pack_q5(xi: impl Fn(usize) -> u8, qh_out: &mut [u8], qs: &mut [u8]) {
    let mut qh = 0u32;
    for j in 0..16 {
        let xi0 = xi(j);
        let xi1 = xi(j + 16);
        qs[j] = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4);
        qh |= (((xi0 & 0x10) as u32) >> 4) << j;
        qh |= (((xi1 & 0x10) as u32) >> 4) << (j + 16);
    }
    qh_out[..4].copy_from_slice(&qh.to_le_bytes());
}

pub(crate) fn quantize_q5_0(x: &[f32], y: &mut [u8], qw: Option<&[f32]>) {
    match qw {
        None => {
            for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(22)) {
                let max = signed_absmax(xb);
                let d = max / -16.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                wr_f16(yb, 0, d);
                let (qh, qs) = yb[2..].split_at_mut(4);
                pack_q5(
                    |j| (c_trunc_i32(xb[j] * id + 16.5) as i8 as i32).min(31) as u8,
                    qh,
                    qs,
                );
            }
        }
        Some(qw) => {
            let sigma2 = row_sigma2(x);
            let mut weight = [0.0f32; QK];
            let mut l = [0i8; QK];
            for ((xb, yb), qwb) in x
                .chunks_exact(QK)
                .zip(y.chunks_exact_mut(22))
                .zip(qw.chunks_exact(QK))
            {
                imatrix_weights(xb, qwb, sigma2, &mut weight);
                let d = make_qx_quants(16, xb, &mut l, 1, Some(&weight));
                wr_f16(yb, 0, d);
                let (qh, qs) = yb[2..].split_at_mut(4);
                pack_q5(|j| l[j] as u8, qh, qs);
            }
        }
    }
}

#[inline(always)]
fn q5_high_bits(qh: u32, j: usize) -> (u8, u8) {
    let xh0 = (((qh >> j) << 4) & 0x10) as u8;
    let xh1 = ((qh >> (j + 12)) & 0x10) as u8;
    (xh0, xh1)
}

pub(crate) fn dequantize_q5_0(x: &[u8], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(22).zip(y.chunks_exact_mut(QK)) {
        let d = rd_f16(xb, 0);
        let qh = u32::from_le_bytes([xb[2], xb[3], xb[4], xb[5]]);
        for j in 0..16 {
            let (xh0, xh1) = q5_high_bits(qh, j);
            let x0 = ((xb[6 + j] & 0x0F) | xh0) as i32 - 16;
            let x1 = ((xb[6 + j] >> 4) | xh1) as i32 - 16;
            yb[j] = x0 as f32 * d;
            yb[j + 16] = x1 as f32 * d;
        }
    }
}

// ---------------------------------------------------------------- Q5_1 (d, m, qh[4], qs[16])

pub(crate) fn quantize_q5_1(x: &[f32], y: &mut [u8], qw: Option<&[f32]>) {
    match qw {
        None => {
            for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(24)) {
                let (min, max) = min_max(xb);
                let d = (max - min) / 31.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                wr_f16(yb, 0, d);
                wr_f16(yb, 2, min);
                let (qh, qs) = yb[4..].split_at_mut(4);
                // No clamp in ggml's Q5_1 ref: the cast result is used as is.
                pack_q5(|j| c_trunc_i32((xb[j] - min) * id + 0.5) as u8, qh, qs);
            }
        }
        Some(qw) => {
            let sigma2 = row_sigma2(x);
            let mut weight = [0.0f32; QK];
            let mut l = [0u8; QK];
            let mut laux = [0u8; QK];
            for ((xb, yb), qwb) in x
                .chunks_exact(QK)
                .zip(y.chunks_exact_mut(24))
                .zip(qw.chunks_exact(QK))
            {
                imatrix_weights(xb, qwb, sigma2, &mut weight);
                let mut min = 0.0f32;
                let d = make_qkx3_quants(
                    31,
                    xb,
                    Some(&weight),
                    &mut l,
                    &mut min,
                    &mut laux,
                    IMPL_SEARCH,
                );
                wr_f16(yb, 0, d);
                wr_f16(yb, 2, -min);
                let (qh, qs) = yb[4..].split_at_mut(4);
                pack_q5(|j| l[j], qh, qs);
            }
        }
    }
}

pub(crate) fn dequantize_q5_1(x: &[u8], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(24).zip(y.chunks_exact_mut(QK)) {
        let d = rd_f16(xb, 0);
        let m = rd_f16(xb, 2);
        let qh = u32::from_le_bytes([xb[4], xb[5], xb[6], xb[7]]);
        for j in 0..16 {
            let (xh0, xh1) = q5_high_bits(qh, j);
            let x0 = ((xb[8 + j] & 0x0F) | xh0) as i32;
            let x1 = ((xb[8 + j] >> 4) | xh1) as i32;
            yb[j] = x0 as f32 * d + m;
            yb[j + 16] = x1 as f32 * d + m;
        }
    }
}

// ---------------------------------------------------------------- Q8_0 (d, qs[32] int8)

/// Q8_0 ignores the imatrix in ggml, so it has a single path: `quantize_row_q8_0_ref`.
///
/// Converting an F16 model to Q8_0 is mostly this loop, and its `roundf` is a
/// library call per value, so whole blocks take a vectorizable path (see [`q8_0_block_fast`]);
/// with AVX2 it is compiled for 8 lanes. Both give the bytes of the scalar reference.
pub(crate) fn quantize_q8_0(x: &[f32], y: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        unsafe fn avx2(x: &[f32], y: &mut [u8]) {
            q8_0_blocks(x, y)
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { avx2(x, y) };
        }
    }
    q8_0_blocks(x, y)
}

#[inline(always)]
fn q8_0_blocks(x: &[f32], y: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(34)) {
        q8_0_block_fast(xb, yb);
    }
}

/// Largest |v| of a block of 32 (eight running maxima, so it vectorizes; equal to any order's
/// result when every value is finite) and whether any value is NaN/Inf (tested on the exponent
/// bits, also lane-wise).
#[inline(always)]
fn absmax_lanes(x: &[f32]) -> (f32, bool) {
    let mut lanes = [0f32; 8];
    let mut bad = [0u32; 8];
    for c in x.chunks_exact(8) {
        for ((l, b), v) in lanes.iter_mut().zip(bad.iter_mut()).zip(c) {
            let a = v.abs();
            *l = if *l > a { *l } else { a };
            *b |= ((v.to_bits() & 0x7f80_0000) == 0x7f80_0000) as u32;
        }
    }
    let amax = lanes.iter().fold(0f32, |m, &a| if m > a { m } else { a });
    (amax, bad.iter().any(|&b| b != 0))
}

/// `quantize_row_q8_0_ref` for one block, as written in ggml-quants.c.
#[inline(always)]
fn q8_0_block_ref(xb: &[f32], yb: &mut [u8]) {
    let mut amax = 0.0f32;
    for &v in xb {
        let a = v.abs();
        amax = if amax > a { amax } else { a };
    }
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    wr_f16(yb, 0, d);
    for j in 0..QK {
        // roundf = half away from zero, which is Rust's `round`.
        yb[2 + j] = c_trunc_i32((xb[j] * id).round()) as u8;
    }
}

/// [`q8_0_block_ref`] without branches or library calls, for blocks of finite values whose
/// scaled values are small (always, unless the scale is subnormal); other blocks take the
/// reference. Same bits because:
/// * for finite values the maximum of |x| does not depend on the order of comparison, so eight
///   running maxima give the reference's `amax` (a NaN would make the order matter);
/// * for |s| < 1e9, `s - trunc(s)` is exact, so rounding half away from zero is
///   `trunc(s) ± (|frac| >= 0.5)`, and the conversion to i32 is in range (no "integer
///   indefinite" case), leaving the same low byte.
#[inline(always)]
fn q8_0_block_fast(xb: &[f32], yb: &mut [u8]) {
    let (amax, bad) = absmax_lanes(xb);
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    // False for NaN too (an infinite `id`).
    let in_range = amax * id < 1.0e9;
    if bad || !in_range {
        return q8_0_block_ref(xb, yb);
    }
    wr_f16(yb, 0, d);
    for (q, &v) in yb[2..].iter_mut().zip(xb) {
        let s = v * id;
        let t = s as i32;
        let frac = s - t as f32;
        *q = (t + (frac >= 0.5) as i32 - (frac <= -0.5) as i32) as u8;
    }
}

pub(crate) fn dequantize_q8_0(x: &[u8], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(34).zip(y.chunks_exact_mut(QK)) {
        let d = rd_f16(xb, 0);
        for j in 0..QK {
            yb[j] = (xb[2 + j] as i8) as f32 * d;
        }
    }
}

/// Q8_1 (d, s = d·Σq, qs[32]) is an activation format for dot products; ggml has no
/// `to_float` for it. Decoding uses the same q·d rule as Q8_0 (`s` is redundant).
pub(crate) fn dequantize_q8_1(x: &[u8], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(36).zip(y.chunks_exact_mut(QK)) {
        let d = rd_f16(xb, 0);
        for j in 0..QK {
            yb[j] = (xb[4 + j] as i8) as f32 * d;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast Q8_0 and Q4_0 blocks must give the reference's bytes, on ordinary values, exact
    /// ties, signed zeros, subnormal and huge scales, and non-finite values (which take the
    /// reference path).
    #[test]
    fn fast_blocks_equal_reference() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let specials = [
            0.0f32,
            -0.0,
            0.5,
            -0.5,
            1.5,
            -2.5,
            127.0,
            -127.0,
            1e-45,
            -1e-40,
            1e-30,
            65504.0,
            1e30,
            -3.4e38,
            f32::MAX,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ];
        for round in 0..20000 {
            let mut xb = [0f32; QK];
            let scale = [1e-42f32, 1e-20, 1e-3, 1.0, 1e3, 1e20, 1e36][round % 7];
            for v in xb.iter_mut() {
                let r = next();
                *v = match r % 16 {
                    // Values that land exactly on .5 after scaling by 127/amax.
                    0 => (((r >> 8) % 255) as f32 - 127.0) / 2.0,
                    1 if round % 5 == 0 => specials[(r >> 8) as usize % specials.len()],
                    _ => ((r >> 11) as f32 / (1u64 << 53) as f32 - 0.5) * scale,
                };
            }
            if round % 3 == 0 {
                xb[(next() % QK as u64) as usize] = 127.0;
            }
            let mut want = [0u8; 34];
            let mut got = [0u8; 34];
            q8_0_block_ref(&xb, &mut want);
            q8_0_block_fast(&xb, &mut got);
            assert_eq!(got, want, "{xb:?}");
        }
        for round in 0..20000 {
            let mut xb = [0f32; QK];
            let scale = [1e-42f32, 1e-20, 1e-3, 1.0, 1e3, 1e20, 1e36][round % 7];
            for v in xb.iter_mut() {
                let r = next();
                *v = match r % 16 {
                    // Exact ties between +m and -m, and values on the rounding boundaries.
                    0 => (((r >> 8) % 33) as f32 - 16.0) / 2.0,
                    1 if round % 5 == 0 => specials[(r >> 8) as usize % specials.len()],
                    2 if round % 7 == 0 => -0.0,
                    _ => ((r >> 11) as f32 / (1u64 << 53) as f32 - 0.5) * scale,
                };
            }
            if round % 11 == 0 {
                xb = [0.0; QK];
                xb[(next() % QK as u64) as usize] = -0.0;
            }
            let mut want = [0u8; 18];
            let mut got = [0u8; 18];
            q4_0_ref_block(&xb, &mut want);
            q4_0_block_fast(&xb, &mut got);
            assert_eq!(got, want, "{xb:?}");
        }
        let mut many = vec![0f32; QK * 64];
        for v in many.iter_mut() {
            *v = (next() % 2001) as f32 / 1000.0 - 1.0;
        }
        let mut want = vec![0u8; 34 * 64];
        for (xb, yb) in many.chunks_exact(QK).zip(want.chunks_exact_mut(34)) {
            q8_0_block_ref(xb, yb);
        }
        let mut got = vec![0u8; 34 * 64];
        quantize_q8_0(&many, &mut got);
        assert_eq!(got, want);
        let mut want = vec![0u8; 18 * 64];
        for (xb, yb) in many.chunks_exact(QK).zip(want.chunks_exact_mut(18)) {
            q4_0_ref_block(xb, yb);
        }
        let mut got = vec![0u8; 18 * 64];
        quantize_q4_0(&many, &mut got, None);
        assert_eq!(got, want);
    }
}
