//! IQ4_NL and IQ4_XS: 4-bit indices into the non-linear table `kvalues_iq4nl`.
//!
//! llama-quantize runs `quantize_row_iq4_nl_impl` with `ntry = 7` for both types, with or without
//! an imatrix (for IQ4_NL that is *not* `quantize_row_iq4_nl_ref`, which uses `ntry = -1`).

use crate::common::{best_index_int8, nearest_int, rd_f16, GROUP_MAX_EPS};
use crate::fp::f32_to_f16_bits;

pub(crate) const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

const NTRY: i32 = 7;

/// One super-block of `x.len()` values in sub-blocks of 32 (`quantize_row_iq4_nl_impl`).
/// Returns the fp16 bits of the block scale; fills `l` with table indices, and for more than one
/// sub-block the 6-bit sub-block scales (`scales_h`, `scales_l`).
fn iq4_impl(
    x: &[f32],
    qw: Option<&[f32]>,
    l: &mut [u8],
    scales: &mut [f32],
    scales_h: &mut u16,
    scales_l: &mut [u8],
) -> u16 {
    const BS: usize = 32;
    let values = &KVALUES_IQ4NL;
    let v0 = values[0] as f32;
    let sbs = x.len();
    let nb = sbs / BS;

    let mut sigma2 = 0.0f32;
    for &v in x {
        sigma2 += v * v;
    }
    sigma2 *= 2.0 / sbs as f32;

    let mut weight = [0.0f32; BS];
    let mut max_scale = 0.0f32;
    let mut amax_scale = 0.0f32;
    for ib in 0..nb {
        let xb = &x[ib * BS..ib * BS + BS];
        let lb = &mut l[ib * BS..ib * BS + BS];
        match qw {
            Some(qw) => {
                let q = &qw[ib * BS..ib * BS + BS];
                for j in 0..BS {
                    weight[j] = q[j] * (sigma2 + xb[j] * xb[j]).sqrt();
                }
            }
            None => {
                for j in 0..BS {
                    weight[j] = xb[j] * xb[j];
                }
            }
        }
        let mut amax = 0.0f32;
        let mut max = 0.0f32;
        for &v in xb {
            let ax = v.abs();
            if ax > amax {
                amax = ax;
                max = v;
            }
        }
        if amax < GROUP_MAX_EPS {
            scales[ib] = 0.0;
            continue;
        }
        // ntry > 0 always here.
        let mut d = -max / v0;
        let mut id = 1.0 / d;
        let mut sumqx = 0.0f32;
        let mut sumq2 = 0.0f32;
        for j in 0..BS {
            let al = id * xb[j];
            let li = best_index_int8(values, al);
            lb[j] = li as u8;
            let q = values[li] as f32;
            let w = weight[j];
            sumqx += w * q * xb[j];
            sumq2 += w * q * q;
        }
        d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
        let mut best = d * sumqx;
        for itry in -NTRY..=NTRY {
            id = (itry + values[0] as i32) as f32 / max;
            sumqx = 0.0;
            sumq2 = 0.0;
            for j in 0..BS {
                let al = id * xb[j];
                let li = best_index_int8(values, al);
                let q = values[li] as f32;
                let w = weight[j];
                sumqx += w * q * xb[j];
                sumq2 += w * q * q;
            }
            if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
                d = sumqx / sumq2;
                best = d * sumqx;
            }
        }
        scales[ib] = d;
        let abs_d = d.abs();
        if abs_d > amax_scale {
            amax_scale = abs_d;
            max_scale = d;
        }
    }

    let dh;
    if nb > 1 {
        *scales_h = 0;
        let d = -max_scale / 32.0;
        dh = f32_to_f16_bits(d);
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        for ib in 0..nb {
            let li = nearest_int(id * scales[ib]).clamp(-32, 31);
            let dl = d * li as f32;
            let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
            let lb = &mut l[ib * BS..ib * BS + BS];
            let xb = &x[ib * BS..ib * BS + BS];
            for j in 0..BS {
                lb[j] = best_index_int8(values, idl * xb[j]) as u8;
            }
            let li = (li + 32) as u8;
            let l_l = li & 0xf;
            let l_h = li >> 4;
            if ib % 2 == 0 {
                scales_l[ib / 2] = l_l;
            } else {
                scales_l[ib / 2] |= l_l << 4;
            }
            *scales_h |= (l_h as u16) << (2 * (ib % 8));
        }
    } else {
        dh = f32_to_f16_bits(scales[0]);
        let id = if scales[0] != 0.0 {
            1.0 / scales[0]
        } else {
            0.0
        };
        for j in 0..sbs {
            l[j] = best_index_int8(values, id * x[j]) as u8;
        }
    }
    dh
}

/// Packs indices: byte j of each 32-value group holds L[j] | L[j+16] << 4.
#[inline(always)]
fn pack_nibbles(l: &[u8], q4: &mut [u8]) {
    for i in 0..l.len() / 32 {
        for j in 0..16 {
            q4[16 * i + j] = l[32 * i + j] | (l[32 * i + 16 + j] << 4);
        }
    }
}

// IQ4_NL: d @0, qs[16] @2
pub(crate) fn quantize_iq4_nl(x: &[f32], y: &mut [u8], qw: Option<&[f32]>) {
    let mut l = [0u8; 32];
    let mut scale = [0.0f32; 1];
    let mut unused_h = 0u16;
    for (ib, (xb, yb)) in x.chunks_exact(32).zip(y.chunks_exact_mut(18)).enumerate() {
        let q = qw.map(|q| &q[32 * ib..32 * ib + 32]);
        let dh = iq4_impl(xb, q, &mut l, &mut scale, &mut unused_h, &mut []);
        yb[..2].copy_from_slice(&dh.to_le_bytes());
        pack_nibbles(&l, &mut yb[2..18]);
    }
}

// IQ4_XS: d @0, scales_h (u16) @2, scales_l[4] @4, qs[128] @8
pub(crate) fn quantize_iq4_xs(x: &[f32], y: &mut [u8], qw: Option<&[f32]>) {
    let mut l = [0u8; 256];
    let mut scales = [0.0f32; 8];
    for (ib, (xb, yb)) in x.chunks_exact(256).zip(y.chunks_exact_mut(136)).enumerate() {
        let q = qw.map(|q| &q[256 * ib..256 * ib + 256]);
        let mut scales_h = 0u16;
        let mut scales_l = [0u8; 4];
        let dh = iq4_impl(xb, q, &mut l, &mut scales, &mut scales_h, &mut scales_l);
        yb[..2].copy_from_slice(&dh.to_le_bytes());
        yb[2..4].copy_from_slice(&scales_h.to_le_bytes());
        yb[4..8].copy_from_slice(&scales_l);
        pack_nibbles(&l, &mut yb[8..136]);
    }
}

pub(crate) fn dequantize_iq4_nl(x: &[u8], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(18).zip(y.chunks_exact_mut(32)) {
        let d = rd_f16(xb, 0);
        for j in 0..16 {
            yb[j] = d * KVALUES_IQ4NL[(xb[2 + j] & 0xf) as usize] as f32;
            yb[j + 16] = d * KVALUES_IQ4NL[(xb[2 + j] >> 4) as usize] as f32;
        }
    }
}

pub(crate) fn dequantize_iq4_xs(x: &[u8], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(136).zip(y.chunks_exact_mut(256)) {
        let d = rd_f16(xb, 0);
        let scales_h = u16::from_le_bytes([xb[2], xb[3]]);
        for ib in 0..8 {
            let ls = ((xb[4 + ib / 2] >> (4 * (ib % 2))) & 0xf) as i32
                | ((((scales_h >> (2 * ib)) & 3) as i32) << 4);
            let dl = d * (ls - 32) as f32;
            let qs = &xb[8 + 16 * ib..8 + 16 * ib + 16];
            let out = &mut yb[32 * ib..32 * ib + 32];
            for j in 0..16 {
                out[j] = dl * KVALUES_IQ4NL[(qs[j] & 0xf) as usize] as f32;
                out[j + 16] = dl * KVALUES_IQ4NL[(qs[j] >> 4) as usize] as f32;
            }
        }
    }
}
