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
        None => {
            for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(18)) {
                q4_0_ref_block(xb, yb);
            }
        }
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
pub(crate) fn quantize_q8_0(x: &[f32], y: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(34)) {
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
