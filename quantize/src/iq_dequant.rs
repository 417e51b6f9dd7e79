//! Decoding of the grid-based IQ formats (IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS,
//! IQ3_S). Quantizing to them needs ggml's neighbour search and is not implemented; decoding lets
//! users inspect or requantize files that contain them.

use crate::common::rd_f16;
use crate::fp::f16_bits_to_f32;
use crate::iq_tables::{
    IQ1S_GRID, IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID, IQ3S_GRID, IQ3XXS_GRID, KMASK_IQ2XS,
    KSIGNS_IQ2XS,
};

const QK_K: usize = 256;
const IQ1S_DELTA: f32 = 0.125;

/// Byte j of a grid entry (grids are arrays of small values packed little-endian).
#[inline(always)]
fn gbyte64(g: u64, j: usize) -> u8 {
    (g >> (8 * j)) as u8
}

#[inline(always)]
fn gbyte32(g: u32, j: usize) -> u8 {
    (g >> (8 * j)) as u8
}

#[inline(always)]
fn sign(signs: u8, j: usize) -> f32 {
    if signs & KMASK_IQ2XS[j] != 0 {
        -1.0
    } else {
        1.0
    }
}

#[inline(always)]
fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

#[inline(always)]
fn le16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

// IQ2_XXS: d @0, qs[64 bytes] @2 — per 32 values: 4 grid bytes, then u32 of 4×7 sign bits + 4-bit scale.
pub(crate) fn dequantize_iq2_xxs(x: &[u8], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(66).zip(y.chunks_exact_mut(QK_K)) {
        let d = rd_f16(xb, 0);
        for ib32 in 0..8 {
            let base = 2 + 8 * ib32;
            let aux1 = le32(xb, base + 4);
            let db = d * (0.5 + (aux1 >> 28) as f32) * 0.25;
            for l in 0..4 {
                let grid = IQ2XXS_GRID[xb[base + l] as usize];
                let signs = KSIGNS_IQ2XS[((aux1 >> (7 * l)) & 127) as usize];
                let out = &mut yb[32 * ib32 + 8 * l..32 * ib32 + 8 * l + 8];
                for j in 0..8 {
                    out[j] = db * gbyte64(grid, j) as f32 * sign(signs, j);
                }
            }
        }
    }
}

// IQ2_XS: d @0, qs[32] u16 @2 (9-bit grid index | 7-bit sign index), scales[8] @66
pub(crate) fn dequantize_iq2_xs(x: &[u8], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(74).zip(y.chunks_exact_mut(QK_K)) {
        let d = rd_f16(xb, 0);
        for ib32 in 0..8 {
            let sc = xb[66 + ib32];
            let db = [
                d * (0.5 + (sc & 0xf) as f32) * 0.25,
                d * (0.5 + (sc >> 4) as f32) * 0.25,
            ];
            for l in 0..4 {
                let q = le16(xb, 2 + 2 * (4 * ib32 + l));
                let grid = IQ2XS_GRID[(q & 511) as usize];
                let signs = KSIGNS_IQ2XS[(q >> 9) as usize];
                let out = &mut yb[32 * ib32 + 8 * l..32 * ib32 + 8 * l + 8];
                for j in 0..8 {
                    out[j] = db[l / 2] * gbyte64(grid, j) as f32 * sign(signs, j);
                }
            }
        }
    }
}

// IQ2_S: d @0, qs[64] @2 (32 grid low bytes, then 32 sign bytes), qh[8] @66, scales[8] @74
pub(crate) fn dequantize_iq2_s(x: &[u8], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(82).zip(y.chunks_exact_mut(QK_K)) {
        let d = rd_f16(xb, 0);
        for ib32 in 0..8 {
            let sc = xb[74 + ib32];
            let db = [
                d * (0.5 + (sc & 0xf) as f32) * 0.25,
                d * (0.5 + (sc >> 4) as f32) * 0.25,
            ];
            let qh = xb[66 + ib32] as usize;
            for l in 0..4 {
                let dl = db[l / 2];
                let idx = xb[2 + 4 * ib32 + l] as usize | ((qh << (8 - 2 * l)) & 0x300);
                let grid = IQ2S_GRID[idx];
                let signs = xb[2 + 32 + 4 * ib32 + l];
                let out = &mut yb[32 * ib32 + 8 * l..32 * ib32 + 8 * l + 8];
                for j in 0..8 {
                    out[j] = dl * gbyte64(grid, j) as f32 * sign(signs, j);
                }
            }
        }
    }
}

// IQ3_XXS: d @0, qs[64] grid indices @2, then 8 × u32 (4×7 sign bits + 4-bit scale) @66
pub(crate) fn dequantize_iq3_xxs(x: &[u8], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(98).zip(y.chunks_exact_mut(QK_K)) {
        let d = rd_f16(xb, 0);
        for ib32 in 0..8 {
            let aux32 = le32(xb, 66 + 4 * ib32);
            let db = d * (0.5 + (aux32 >> 28) as f32) * 0.5;
            let qs = &xb[2 + 8 * ib32..2 + 8 * ib32 + 8];
            for l in 0..4 {
                let signs = KSIGNS_IQ2XS[((aux32 >> (7 * l)) & 127) as usize];
                let grid1 = IQ3XXS_GRID[qs[2 * l] as usize];
                let grid2 = IQ3XXS_GRID[qs[2 * l + 1] as usize];
                let out = &mut yb[32 * ib32 + 8 * l..32 * ib32 + 8 * l + 8];
                for j in 0..4 {
                    out[j] = db * gbyte32(grid1, j) as f32 * sign(signs, j);
                    out[j + 4] = db * gbyte32(grid2, j) as f32 * sign(signs, j + 4);
                }
            }
        }
    }
}

// IQ3_S: d @0, qs[64] @2, qh[8] @66, signs[32] @74, scales[4] @106
pub(crate) fn dequantize_iq3_s(x: &[u8], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(110).zip(y.chunks_exact_mut(QK_K)) {
        let d = rd_f16(xb, 0);
        for ib32 in 0..8 {
            let sc = xb[106 + ib32 / 2];
            let db = if ib32 % 2 == 0 {
                d * (1 + 2 * (sc & 0xf) as i32) as f32
            } else {
                d * (1 + 2 * (sc >> 4) as i32) as f32
            };
            let qs = &xb[2 + 8 * ib32..2 + 8 * ib32 + 8];
            let qh = xb[66 + ib32] as usize;
            let signs = &xb[74 + 4 * ib32..74 + 4 * ib32 + 4];
            for l in 0..4 {
                let grid1 = IQ3S_GRID[qs[2 * l] as usize | ((qh << (8 - 2 * l)) & 256)];
                let grid2 = IQ3S_GRID[qs[2 * l + 1] as usize | ((qh << (7 - 2 * l)) & 256)];
                let out = &mut yb[32 * ib32 + 8 * l..32 * ib32 + 8 * l + 8];
                for j in 0..4 {
                    out[j] = db * gbyte32(grid1, j) as f32 * sign(signs[l], j);
                    out[j + 4] = db * gbyte32(grid2, j) as f32 * sign(signs[l], j + 4);
                }
            }
        }
    }
}

// IQ1_S: d @0, qs[32] @2, qh[8] u16 @34 (3-bit scale, delta sign, 4 × 3 high index bits)
pub(crate) fn dequantize_iq1_s(x: &[u8], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(50).zip(y.chunks_exact_mut(QK_K)) {
        let d = rd_f16(xb, 0);
        for ib in 0..8 {
            let qh = le16(xb, 34 + 2 * ib);
            let dl = d * (2 * ((qh >> 12) & 7) as i32 + 1) as f32;
            let delta = if qh & 0x8000 != 0 {
                -IQ1S_DELTA
            } else {
                IQ1S_DELTA
            };
            for l in 0..4 {
                let idx = xb[2 + 4 * ib + l] as usize | ((((qh >> (3 * l)) & 7) as usize) << 8);
                let grid = IQ1S_GRID[idx];
                let out = &mut yb[32 * ib + 8 * l..32 * ib + 8 * l + 8];
                for j in 0..8 {
                    out[j] = dl * (gbyte64(grid, j) as i8 as f32 + delta);
                }
            }
        }
    }
}

// IQ1_M: qs[32] @0, qh[16] @32, scales[8] @48 (4 × u16: 3-bit sub-scales; top nibbles = fp16 d)
pub(crate) fn dequantize_iq1_m(x: &[u8], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(56).zip(y.chunks_exact_mut(QK_K)) {
        let sc = [le16(xb, 48), le16(xb, 50), le16(xb, 52), le16(xb, 54)];
        let scale =
            (sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) | ((sc[2] >> 4) & 0x0f00) | (sc[3] & 0xf000);
        let d = f16_bits_to_f32(scale);
        for ib in 0..8 {
            let s = sc[ib / 2] as i32;
            let dl1 = d * (2 * ((s >> (6 * (ib % 2))) & 0x7) + 1) as f32;
            let dl2 = d * (2 * ((s >> (6 * (ib % 2) + 3)) & 0x7) + 1) as f32;
            let qs = &xb[4 * ib..4 * ib + 4];
            let qh = [xb[32 + 2 * ib] as usize, xb[32 + 2 * ib + 1] as usize];
            let idx = [
                qs[0] as usize | ((qh[0] << 8) & 0x700),
                qs[1] as usize | ((qh[0] << 4) & 0x700),
                qs[2] as usize | ((qh[1] << 8) & 0x700),
                qs[3] as usize | ((qh[1] << 4) & 0x700),
            ];
            let delta = [
                if qh[0] & 0x08 != 0 {
                    -IQ1S_DELTA
                } else {
                    IQ1S_DELTA
                },
                if qh[0] & 0x80 != 0 {
                    -IQ1S_DELTA
                } else {
                    IQ1S_DELTA
                },
                if qh[1] & 0x08 != 0 {
                    -IQ1S_DELTA
                } else {
                    IQ1S_DELTA
                },
                if qh[1] & 0x80 != 0 {
                    -IQ1S_DELTA
                } else {
                    IQ1S_DELTA
                },
            ];
            for l in 0..4 {
                let dl = if l < 2 { dl1 } else { dl2 };
                let grid = IQ1S_GRID[idx[l]];
                let out = &mut yb[32 * ib + 8 * l..32 * ib + 8 * l + 8];
                for j in 0..8 {
                    out[j] = dl * (gbyte64(grid, j) as i8 as f32 + delta[l]);
                }
            }
        }
    }
}
