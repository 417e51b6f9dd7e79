//! Ternary and 1/2-bit formats: TQ1_0, TQ2_0 (BitNet-style, d stored last), Q1_0 and Q2_0.
//!
//! These round with `lroundf`/`roundf` (half away from zero), not `nearest_int`.

use crate::common::{rd_f16, wr_f16};
use crate::fp::{c_lroundf, c_trunc_i32};

const QK_K: usize = 256;

/// max |x| over a block, with C's `MAX(a, b)` (`a > b ? a : b`).
#[inline(always)]
fn absmax(x: &[f32]) -> f32 {
    let mut amax = 0.0f32;
    for &v in x {
        let a = v.abs();
        amax = if amax > a { amax } else { a };
    }
    amax
}

/// `lroundf(v) + 1` converted to C `int` (low 32 bits).
#[inline(always)]
fn trit(v: f32) -> i32 {
    c_lroundf(v).wrapping_add(1) as i32
}

// TQ1_0: qs[48] @0, qh[4] @48, d @52
pub(crate) fn quantize_tq1_0(x: &[f32], y: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(QK_K).zip(y.chunks_exact_mut(54)) {
        let d = absmax(xb);
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        wr_f16(yb, 52, d);
        // Base-3 digits, first value most significant, then scaled to a byte by ceil(q·256/243)
        // so that the decoder can extract digits with a multiply and a shift.
        let enc = |q: u8| (q as u32 * 256).div_ceil(243) as u8;
        // 32 bytes × 5 values, stride 32.
        for m in 0..32 {
            let mut q = 0u8;
            for n in 0..5 {
                let xi = trit(xb[m + n * 32] * id);
                q = (q as i32 * 3) as u8;
                q = (q as i32).wrapping_add(xi) as u8;
            }
            yb[m] = enc(q);
        }
        // 16 bytes × 5 values, stride 16, from value 160.
        let xs = &xb[160..];
        for m in 0..16 {
            let mut q = 0u8;
            for n in 0..5 {
                let xi = trit(xs[m + n * 16] * id);
                q = (q as i32 * 3) as u8;
                q = (q as i32).wrapping_add(xi) as u8;
            }
            yb[32 + m] = enc(q);
        }
        // 4 bytes × 4 values, stride 4, from value 240; one extra ×3 so the first is the top trit.
        let xs = &xb[240..];
        for j in 0..4 {
            let mut q = 0u8;
            for m in 0..4 {
                let xi = trit(xs[j + m * 4] * id);
                q = (q as i32 * 3) as u8;
                q = (q as i32).wrapping_add(xi) as u8;
            }
            q = (q as i32 * 3) as u8;
            yb[48 + j] = enc(q);
        }
    }
}

pub(crate) fn dequantize_tq1_0(x: &[u8], y: &mut [f32]) {
    const POW3: [u8; 6] = [1, 3, 9, 27, 81, 243];
    let digit = |b: u8, n: usize| -> f32 {
        let q = b.wrapping_mul(POW3[n]);
        let xi = ((q as u16 * 3) >> 8) as i16;
        (xi - 1) as f32
    };
    for (xb, yb) in x.chunks_exact(54).zip(y.chunks_exact_mut(QK_K)) {
        let d = rd_f16(xb, 52);
        let mut o = 0usize;
        for n in 0..5 {
            for m in 0..32 {
                yb[o] = digit(xb[m], n) * d;
                o += 1;
            }
        }
        for n in 0..5 {
            for m in 0..16 {
                yb[o] = digit(xb[32 + m], n) * d;
                o += 1;
            }
        }
        for n in 0..4 {
            for j in 0..4 {
                yb[o] = digit(xb[48 + j], n) * d;
                o += 1;
            }
        }
    }
}

// TQ2_0: qs[64] @0, d @64
pub(crate) fn quantize_tq2_0(x: &[f32], y: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(QK_K).zip(y.chunks_exact_mut(66)) {
        let d = absmax(xb);
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        wr_f16(yb, 64, d);
        for j in (0..64).step_by(32) {
            let xs = &xb[j * 4..];
            for m in 0..32 {
                let mut q = 0u8;
                for n in 0..4 {
                    let xi = trit(xs[m + n * 32] * id);
                    q = (q as i32).wrapping_add((xi & 3) << (2 * n)) as u8;
                }
                yb[j + m] = q;
            }
        }
    }
}

pub(crate) fn dequantize_tq2_0(x: &[u8], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(66).zip(y.chunks_exact_mut(QK_K)) {
        let d = rd_f16(xb, 64);
        let mut o = 0usize;
        for j in (0..64).step_by(32) {
            for l in 0..4 {
                for m in 0..32 {
                    let q = ((xb[j + m] >> (l * 2)) & 3) as i32;
                    yb[o] = (q - 1) as f32 * d;
                    o += 1;
                }
            }
        }
    }
}

// Q1_0: d @0, qs[16] @2 (block of 128): sign bits, d = mean |x|.
pub(crate) fn quantize_q1_0(x: &[f32], y: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(128).zip(y.chunks_exact_mut(18)) {
        let mut sum_abs = 0.0f32;
        for &v in xb {
            sum_abs += v.abs();
        }
        wr_f16(yb, 0, sum_abs / 128.0);
        yb[2..].fill(0);
        for (j, &v) in xb.iter().enumerate() {
            if v >= 0.0 {
                yb[2 + j / 8] |= 1 << (j % 8);
            }
        }
    }
}

pub(crate) fn dequantize_q1_0(x: &[u8], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(18).zip(y.chunks_exact_mut(128)) {
        let d = rd_f16(xb, 0);
        let neg_d = -d;
        for (j, o) in yb.iter_mut().enumerate() {
            *o = if (xb[2 + j / 8] >> (j % 8)) & 1 != 0 {
                d
            } else {
                neg_d
            };
        }
    }
}

// Q2_0: d @0, qs[16] @2 (block of 64): codes 0..3 mean −1, 0, 1, 2 times d = max |x|.
pub(crate) fn quantize_q2_0(x: &[f32], y: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(64).zip(y.chunks_exact_mut(18)) {
        let mut amax = 0.0f32;
        for &v in xb {
            let a = v.abs();
            if a > amax {
                amax = a;
            }
        }
        let d = amax;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        wr_f16(yb, 0, d);
        yb[2..].fill(0);
        for (j, &w) in xb.iter().enumerate() {
            let q = c_trunc_i32((w * id).round()).wrapping_add(1).clamp(0, 3);
            yb[2 + j / 4] |= (q as u8) << ((j % 4) * 2);
        }
    }
}

pub(crate) fn dequantize_q2_0(x: &[u8], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(18).zip(y.chunks_exact_mut(64)) {
        let d = rd_f16(xb, 0);
        for (j, o) in yb.iter_mut().enumerate() {
            let q = ((xb[2 + j / 4] >> ((j % 4) * 2)) & 3) as i32;
            *o = (q - 1) as f32 * d;
        }
    }
}
