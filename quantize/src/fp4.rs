//! MXFP4 (E8M0 block exponent) and NVFP4 (UE4M3 sub-block scales) over E2M1 values.
//!
//! ggml stores E2M1 as the doubled table `kvalues_fp4` and halves the scale instead.

use crate::fp::{c_trunc_i32, e8m0_to_f32_half, f32_to_ue4m3, ue4m3_to_f32};

pub(crate) const KVALUES_FP4: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// Nearest table entry by |v·e − x|; the first best wins (`best_index_mxfp4`).
#[inline(always)]
fn best_index_fp4(x: f32, e: f32) -> u8 {
    let mut best_index = 0u8;
    let mut best_err = (KVALUES_FP4[0] as f32 * e - x).abs();
    for (i, &v) in KVALUES_FP4.iter().enumerate().skip(1) {
        let err = (v as f32 * e - x).abs();
        if err < best_err {
            best_index = i as u8;
            best_err = err;
        }
    }
    best_index
}

// MXFP4: e @0, qs[16] @1 (block of 32)
pub(crate) fn quantize_mxfp4(x: &[f32], y: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(32).zip(y.chunks_exact_mut(17)) {
        let mut amax = 0.0f32;
        for &v in xb {
            if amax < v.abs() {
                amax = v.abs();
            }
        }
        // ggml: (uint8_t)(floorf(log2f(amax)) - 2 + 127). `f32::log2` is libm's log2f on the
        // platforms we build for, which is what the C code calls (it is not exact just below
        // powers of two, so the exponent cannot be read from the bits instead).
        let e = if amax > 0.0 {
            c_trunc_i32(amax.log2().floor() - 2.0 + 127.0) as u8
        } else {
            0
        };
        let d = e8m0_to_f32_half(e);
        yb[0] = e;
        for j in 0..16 {
            let x0 = best_index_fp4(xb[j], d);
            let x1 = best_index_fp4(xb[j + 16], d);
            yb[1 + j] = x0 | (x1 << 4);
        }
    }
}

pub(crate) fn dequantize_mxfp4(x: &[u8], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(17).zip(y.chunks_exact_mut(32)) {
        let d = e8m0_to_f32_half(xb[0]);
        for j in 0..16 {
            yb[j] = KVALUES_FP4[(xb[1 + j] & 0x0F) as usize] as f32 * d;
            yb[j + 16] = KVALUES_FP4[(xb[1 + j] >> 4) as usize] as f32 * d;
        }
    }
}

// NVFP4: d[4] (UE4M3) @0, qs[32] @4 (block of 64, sub-blocks of 16)
pub(crate) fn quantize_nvfp4(x: &[f32], y: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(64).zip(y.chunks_exact_mut(36)) {
        for s in 0..4 {
            let xs = &xb[16 * s..16 * s + 16];
            let mut amax = 0.0f32;
            for &v in xs {
                if amax < v.abs() {
                    amax = v.abs();
                }
            }
            let ue = f32_to_ue4m3(amax / 6.0);
            yb[s] = ue;
            let d = ue4m3_to_f32(ue);
            for j in 0..8 {
                let x0 = best_index_fp4(xs[j], d);
                let x1 = best_index_fp4(xs[j + 8], d);
                yb[4 + 8 * s + j] = x0 | (x1 << 4);
            }
        }
    }
}

pub(crate) fn dequantize_nvfp4(x: &[u8], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(36).zip(y.chunks_exact_mut(64)) {
        for s in 0..4 {
            let d = ue4m3_to_f32(xb[s]);
            let out = &mut yb[16 * s..16 * s + 16];
            for j in 0..8 {
                let q = xb[4 + 8 * s + j];
                out[j] = KVALUES_FP4[(q & 0x0F) as usize] as f32 * d;
                out[j + 8] = KVALUES_FP4[(q >> 4) as usize] as f32 * d;
            }
        }
    }
}
