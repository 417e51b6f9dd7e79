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

/// Defines `pub(crate) fn $name(x, y, qw)` running `$body`, compiled a second time with AVX2
/// enabled and picked at run time (same IEEE operations either way; see `kquants`).
macro_rules! avx2_dispatch {
    ($name:ident, $body:ident) => {
        pub(crate) fn $name(x: &[f32], y: &mut [u8], qw: Option<&[f32]>) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                unsafe fn avx2(x: &[f32], y: &mut [u8], qw: Option<&[f32]>) {
                    $body(x, y, qw)
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU supports AVX2, checked just above.
                    return unsafe { avx2(x, y, qw) };
                }
            }
            $body(x, y, qw)
        }
    };
}

const BS: usize = 32;

/// `sigma2` of `quantize_row_iq4_nl_impl`: 2·Σx²/len, summed in order.
#[inline(always)]
fn sigma2_of(x: &[f32]) -> f32 {
    let mut sigma2 = 0.0f32;
    for &v in x {
        sigma2 += v * v;
    }
    sigma2 * (2.0 / x.len() as f32)
}

/// Per-value weights of one sub-block: `qw·sqrt(sigma2 + x²)` with an imatrix, else x².
#[inline(always)]
fn sub_block_weights(xb: &[f32], qw: Option<&[f32]>, sigma2: f32, weight: &mut [f32; BS]) {
    match qw {
        Some(q) => {
            let q = &q[..BS];
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
}

/// The scale search of one 32-value sub-block (`ntry = 7`); 0 for an all-zero sub-block.
#[inline(always)]
fn search_scalar(xb: &[f32], weight: &[f32; BS]) -> f32 {
    let values = &KVALUES_IQ4NL;
    let v0 = values[0] as f32;
    let xb = &xb[..BS];
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
        return 0.0;
    }
    let mut d = -max / v0;
    let mut id = 1.0 / d;
    let mut sumqx = 0.0f32;
    let mut sumq2 = 0.0f32;
    for j in 0..BS {
        let q = values[best_index_int8(values, id * xb[j])] as f32;
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
            let q = values[best_index_int8(values, id * xb[j])] as f32;
            let w = weight[j];
            sumqx += w * q * xb[j];
            sumq2 += w * q * q;
        }
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    d
}

/// `values[best_index_int8(values, x)]` without branches, for the lane kernel: the binary
/// search ends between the largest entry ≤ x and the smallest entry > x (or at an end of the
/// table), and picks the upper one unless x is strictly nearer the lower. NaN gives the last
/// entry, as the binary search does.
#[inline(always)]
fn nearest_value(x: f32) -> f32 {
    let values = &KVALUES_IQ4NL;
    let mut lo = values[0] as f32;
    let mut hi = values[15] as f32;
    for k in 1..15 {
        let v = values[k] as f32;
        lo = if x >= v { v } else { lo };
    }
    for k in (1..15).rev() {
        let v = values[k] as f32;
        hi = if x < v { v } else { hi };
    }
    if x - lo < hi - x {
        lo
    } else {
        hi
    }
}

/// [`search_scalar`] on L sub-blocks at once, lane k being sub-block k (`xt[j][k]`), with the
/// identical operation sequence per lane.
#[inline(always)]
fn search_lanes_portable<const L: usize>(xt: &[[f32; L]; BS], wt: &[[f32; L]; BS]) -> [f32; L] {
    let v0 = KVALUES_IQ4NL[0] as f32;
    let mut amax = [0.0f32; L];
    let mut max = [0.0f32; L];
    for j in 0..BS {
        for k in 0..L {
            let v = xt[j][k];
            let ax = v.abs();
            let gt = ax > amax[k];
            amax[k] = if gt { ax } else { amax[k] };
            max[k] = if gt { v } else { max[k] };
        }
    }
    let mut id = [0.0f32; L];
    for k in 0..L {
        let d = -max[k] / v0;
        id[k] = 1.0 / d;
    }
    let mut sumqx = [0.0f32; L];
    let mut sumq2 = [0.0f32; L];
    for j in 0..BS {
        for k in 0..L {
            let q = nearest_value(id[k] * xt[j][k]);
            let w = wt[j][k];
            sumqx[k] += w * q * xt[j][k];
            sumq2[k] += w * q * q;
        }
    }
    let mut d = [0.0f32; L];
    let mut best = [0.0f32; L];
    for k in 0..L {
        d[k] = if sumq2[k] > 0.0 {
            sumqx[k] / sumq2[k]
        } else {
            0.0
        };
        best[k] = d[k] * sumqx[k];
    }
    for itry in -NTRY..=NTRY {
        let num = (itry + KVALUES_IQ4NL[0] as i32) as f32;
        for k in 0..L {
            id[k] = num / max[k];
            sumqx[k] = 0.0;
            sumq2[k] = 0.0;
        }
        for j in 0..BS {
            for k in 0..L {
                let q = nearest_value(id[k] * xt[j][k]);
                let w = wt[j][k];
                sumqx[k] += w * q * xt[j][k];
                sumq2[k] += w * q * q;
            }
        }
        for k in 0..L {
            let take = sumq2[k] > 0.0 && sumqx[k] * sumqx[k] > best[k] * sumq2[k];
            if take {
                d[k] = sumqx[k] / sumq2[k];
                best[k] = d[k] * sumqx[k];
            }
        }
    }
    for k in 0..L {
        if amax[k] < GROUP_MAX_EPS {
            d[k] = 0.0;
        }
    }
    d
}

/// [`search_lanes_portable`] with explicit AVX2 when the CPU has it (LLVM keeps the per-lane
/// sums of the portable form in scalar registers).
#[inline(always)]
fn search_lanes(xt: &[[f32; 8]; BS], wt: &[[f32; 8]; BS]) -> [f32; 8] {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { avx2::search(xt, wt) };
    }
    search_lanes_portable(xt, wt)
}

/// `l[j] = best_index_int8(values, scale * x[j])` for a slice whose length is a multiple of 8,
/// with the AVX2 table compare when available (the binary search mispredicts on every value).
#[inline(always)]
fn indices(scale: f32, x: &[f32], l: &mut [u8]) {
    let l = &mut l[..x.len()];
    #[cfg(target_arch = "x86_64")]
    if x.len() % 8 == 0 && std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        unsafe { avx2::indices(scale, x, l) };
        return;
    }
    for j in 0..x.len() {
        l[j] = best_index_int8(&KVALUES_IQ4NL, scale * x[j]) as u8;
    }
}

/// AVX2 form of [`search_lanes_portable`]: identical per-lane operations on one `__m256`.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{BS, KVALUES_IQ4NL, NTRY};
    use crate::common::GROUP_MAX_EPS;
    use std::arch::x86_64::*;

    /// [`super::nearest_value`] on 8 lanes (ordered compares: false on NaN, as in Rust).
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn nearest_value(x: __m256, table: &[__m256; 16]) -> __m256 {
        let mut lo = table[0];
        let mut hi = table[15];
        for k in 1..15 {
            lo = _mm256_blendv_ps(lo, table[k], _mm256_cmp_ps::<_CMP_GE_OQ>(x, table[k]));
        }
        for k in (1..15).rev() {
            hi = _mm256_blendv_ps(hi, table[k], _mm256_cmp_ps::<_CMP_LT_OQ>(x, table[k]));
        }
        let take_lo = _mm256_cmp_ps::<_CMP_LT_OQ>(_mm256_sub_ps(x, lo), _mm256_sub_ps(hi, x));
        _mm256_blendv_ps(hi, lo, take_lo)
    }

    /// `best_index_int8(values, scale * x[j])` for 8 values at a time: the binary search stops
    /// at ml = the number of entries 1..=14 that are ≤ v and returns ml or ml + 1, whichever is
    /// nearer (ties up); a NaN walks to the top of the table, index 15.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn indices(scale: f32, x: &[f32], l: &mut [u8]) {
        let mut table = [_mm256_setzero_ps(); 16];
        for k in 0..16 {
            table[k] = _mm256_set1_ps(KVALUES_IQ4NL[k] as f32);
        }
        let s = _mm256_set1_ps(scale);
        let mut idx = [0i32; 8];
        for (xc, lc) in x.chunks_exact(8).zip(l.chunks_exact_mut(8)) {
            let v = _mm256_mul_ps(s, _mm256_loadu_ps(xc.as_ptr()));
            let mut ml = _mm256_setzero_si256();
            let mut lo = table[0];
            let mut hi = table[15];
            for k in 1..15 {
                let ge = _mm256_cmp_ps::<_CMP_GE_OQ>(v, table[k]);
                ml = _mm256_sub_epi32(ml, _mm256_castps_si256(ge));
                lo = _mm256_blendv_ps(lo, table[k], ge);
            }
            for k in (1..15).rev() {
                hi = _mm256_blendv_ps(hi, table[k], _mm256_cmp_ps::<_CMP_LT_OQ>(v, table[k]));
            }
            let take_lo = _mm256_cmp_ps::<_CMP_LT_OQ>(_mm256_sub_ps(v, lo), _mm256_sub_ps(hi, v));
            // ml + 1 unless the lower entry is strictly nearer (mask is -1 there).
            let mut i = _mm256_add_epi32(
                _mm256_add_epi32(ml, _mm256_set1_epi32(1)),
                _mm256_castps_si256(take_lo),
            );
            let nan = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
            i = _mm256_blendv_epi8(i, _mm256_set1_epi32(15), nan);
            _mm256_storeu_si256(idx.as_mut_ptr() as *mut __m256i, i);
            for j in 0..8 {
                lc[j] = idx[j] as u8;
            }
        }
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn search(xt: &[[f32; 8]; BS], wt: &[[f32; 8]; BS]) -> [f32; 8] {
        let mut table = [_mm256_setzero_ps(); 16];
        for k in 0..16 {
            table[k] = _mm256_set1_ps(KVALUES_IQ4NL[k] as f32);
        }
        let v0 = KVALUES_IQ4NL[0] as f32;
        let zero = _mm256_setzero_ps();
        let sign = _mm256_set1_ps(-0.0);
        let mut x = [zero; BS];
        let mut w = [zero; BS];
        for j in 0..BS {
            x[j] = _mm256_loadu_ps(xt[j].as_ptr());
            w[j] = _mm256_loadu_ps(wt[j].as_ptr());
        }
        let mut amax = zero;
        let mut max = zero;
        for j in 0..BS {
            let ax = _mm256_andnot_ps(sign, x[j]);
            let gt = _mm256_cmp_ps::<_CMP_GT_OQ>(ax, amax);
            amax = _mm256_blendv_ps(amax, ax, gt);
            max = _mm256_blendv_ps(max, x[j], gt);
        }
        // d = -max / v0 (negation is a sign flip, as in C); id = 1 / d.
        let d0 = _mm256_div_ps(_mm256_xor_ps(max, sign), _mm256_set1_ps(v0));
        let id = _mm256_div_ps(_mm256_set1_ps(1.0), d0);
        let mut sumqx = zero;
        let mut sumq2 = zero;
        for j in 0..BS {
            let q = nearest_value(_mm256_mul_ps(id, x[j]), &table);
            let wq = _mm256_mul_ps(w[j], q);
            sumqx = _mm256_add_ps(sumqx, _mm256_mul_ps(wq, x[j]));
            sumq2 = _mm256_add_ps(sumq2, _mm256_mul_ps(wq, q));
        }
        let pos = _mm256_cmp_ps::<_CMP_GT_OQ>(sumq2, zero);
        let mut d = _mm256_blendv_ps(zero, _mm256_div_ps(sumqx, sumq2), pos);
        let mut best = _mm256_mul_ps(d, sumqx);
        for itry in -NTRY..=NTRY {
            let num = _mm256_set1_ps((itry + KVALUES_IQ4NL[0] as i32) as f32);
            let id = _mm256_div_ps(num, max);
            let mut sumqx = zero;
            let mut sumq2 = zero;
            for j in 0..BS {
                let q = nearest_value(_mm256_mul_ps(id, x[j]), &table);
                let wq = _mm256_mul_ps(w[j], q);
                sumqx = _mm256_add_ps(sumqx, _mm256_mul_ps(wq, x[j]));
                sumq2 = _mm256_add_ps(sumq2, _mm256_mul_ps(wq, q));
            }
            let take = _mm256_and_ps(
                _mm256_cmp_ps::<_CMP_GT_OQ>(sumq2, zero),
                _mm256_cmp_ps::<_CMP_GT_OQ>(
                    _mm256_mul_ps(sumqx, sumqx),
                    _mm256_mul_ps(best, sumq2),
                ),
            );
            d = _mm256_blendv_ps(d, _mm256_div_ps(sumqx, sumq2), take);
            best = _mm256_blendv_ps(best, _mm256_mul_ps(d, sumqx), take);
        }
        let zero_lane = _mm256_cmp_ps::<_CMP_LT_OQ>(amax, _mm256_set1_ps(GROUP_MAX_EPS));
        d = _mm256_blendv_ps(d, zero, zero_lane);
        let mut out = [0.0f32; 8];
        _mm256_storeu_ps(out.as_mut_ptr(), d);
        out
    }
}

/// The part of `quantize_row_iq4_nl_impl` after the per-sub-block search: fp16 block scale,
/// 6-bit sub-block scales (more than one sub-block) and the final table indices in `l`.
/// Returns the fp16 bits of the block scale.
#[inline(always)]
fn finish(x: &[f32], l: &mut [u8], scales: &[f32], scales_h: &mut u16, scales_l: &mut [u8]) -> u16 {
    let sbs = x.len();
    let nb = sbs / BS;
    let mut max_scale = 0.0f32;
    let mut amax_scale = 0.0f32;
    for &d in &scales[..nb] {
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
            indices(idl, xb, lb);
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
        indices(id, x, &mut l[..sbs]);
    }
    dh
}

/// Transposes 8 consecutive sub-blocks (values, and weights from `weight_of`) to lane layout.
#[inline(always)]
fn lanes8(
    x: &[f32],
    mut weight_of: impl FnMut(usize, &mut [f32; BS]),
) -> ([[f32; 8]; BS], [[f32; 8]; BS]) {
    let mut xt = [[0.0f32; 8]; BS];
    let mut wt = [[0.0f32; 8]; BS];
    let mut w = [0.0f32; BS];
    for k in 0..8 {
        weight_of(k, &mut w);
        for j in 0..BS {
            xt[j][k] = x[BS * k + j];
            wt[j][k] = w[j];
        }
    }
    (xt, wt)
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
avx2_dispatch!(quantize_iq4_nl, quantize_iq4_nl_body);

/// Each 32-value block is one sub-block with its own sigma2; groups of 8 blocks share one
/// lane-parallel search, the rest are searched one at a time.
#[inline(always)]
fn quantize_iq4_nl_body(x: &[f32], y: &mut [u8], qw: Option<&[f32]>) {
    let mut l = [0u8; BS];
    let mut unused_h = 0u16;
    let nblocks = x.len() / BS;
    let mut ib = 0;
    while ib < nblocks {
        let group = if nblocks - ib >= 8 { 8 } else { 1 };
        let xg = &x[BS * ib..BS * (ib + group)];
        let mut scales = [0.0f32; 8];
        if group == 8 {
            let (xt, wt) = lanes8(xg, |k, w| {
                let xb = &xg[BS * k..BS * k + BS];
                let q = qw.map(|q| &q[BS * (ib + k)..BS * (ib + k + 1)]);
                sub_block_weights(xb, q, sigma2_of(xb), w);
            });
            scales = search_lanes(&xt, &wt);
        } else {
            let mut w = [0.0f32; BS];
            let q = qw.map(|q| &q[BS * ib..BS * (ib + 1)]);
            sub_block_weights(xg, q, sigma2_of(xg), &mut w);
            scales[0] = search_scalar(xg, &w);
        }
        for k in 0..group {
            let xb = &xg[BS * k..BS * k + BS];
            let yb = &mut y[18 * (ib + k)..18 * (ib + k + 1)];
            let dh = finish(xb, &mut l, &scales[k..k + 1], &mut unused_h, &mut []);
            yb[..2].copy_from_slice(&dh.to_le_bytes());
            pack_nibbles(&l, &mut yb[2..18]);
        }
        ib += group;
    }
}

// IQ4_XS: d @0, scales_h (u16) @2, scales_l[4] @4, qs[128] @8
avx2_dispatch!(quantize_iq4_xs, quantize_iq4_xs_body);

/// The 8 sub-blocks of a super-block are searched side by side, one per lane.
#[inline(always)]
fn quantize_iq4_xs_body(x: &[f32], y: &mut [u8], qw: Option<&[f32]>) {
    let mut l = [0u8; 256];
    for (ib, (xb, yb)) in x.chunks_exact(256).zip(y.chunks_exact_mut(136)).enumerate() {
        let q = qw.map(|q| &q[256 * ib..256 * ib + 256]);
        let sigma2 = sigma2_of(xb);
        let (xt, wt) = lanes8(xb, |k, w| {
            let qk = q.map(|q| &q[BS * k..BS * k + BS]);
            sub_block_weights(&xb[BS * k..BS * k + BS], qk, sigma2, w);
        });
        let scales = search_lanes(&xt, &wt);
        let mut scales_h = 0u16;
        let mut scales_l = [0u8; 4];
        let dh = finish(xb, &mut l, &scales, &mut scales_h, &mut scales_l);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_value_matches_best_index() {
        let mut probes = vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0];
        for i in -1400..1400 {
            probes.push(i as f32 * 0.1);
        }
        // Exact midpoints between neighbouring entries, and the entries themselves.
        for w in KVALUES_IQ4NL.windows(2) {
            probes.push((w[0] as f32 + w[1] as f32) / 2.0);
            probes.push(w[0] as f32);
        }
        for x in probes {
            let want = KVALUES_IQ4NL[best_index_int8(&KVALUES_IQ4NL, x)] as f32;
            assert_eq!(nearest_value(x), want, "x = {x}");
        }
    }

    #[test]
    fn indices_match_best_index() {
        let mut x: Vec<f32> = (-1500..1500).map(|i| i as f32 * 0.0937).collect();
        for w in KVALUES_IQ4NL.windows(2) {
            x.push((w[0] as f32 + w[1] as f32) / 2.0);
            x.push(w[1] as f32);
        }
        x.extend([
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            1e30,
            -1e30,
        ]);
        while x.len() % 8 != 0 {
            x.push(0.5);
        }
        for scale in [1.0f32, 0.37, -2.5, f32::INFINITY, 0.0] {
            let mut got = vec![0u8; x.len()];
            indices(scale, &x, &mut got);
            for (j, &v) in x.iter().enumerate() {
                let want = best_index_int8(&KVALUES_IQ4NL, scale * v) as u8;
                assert_eq!(got[j], want, "scale {scale} x {v}");
            }
        }
    }

    #[test]
    fn search_lanes_matches_scalar() {
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        for round in 0..40 {
            let mut x = [0.0f32; 8 * BS];
            for (i, v) in x.iter_mut().enumerate() {
                let sub = i / BS;
                *v = match (round + sub) % 6 {
                    0 => 0.0,
                    1 => 0.5,
                    2 if i % BS == 5 => 40.0,
                    3 => 1e-30 * rnd(),
                    _ => rnd() * [0.01f32, 1.0, 1000.0][round % 3],
                };
            }
            let imat: Vec<f32> = (0..8 * BS).map(|i| (i % 7) as f32 * 0.3).collect();
            for qw in [None, Some(&imat[..])] {
                let sigma2 = sigma2_of(&x);
                let weight_of = |k: usize, w: &mut [f32; BS]| {
                    let q = qw.map(|q| &q[BS * k..BS * k + BS]);
                    sub_block_weights(&x[BS * k..BS * k + BS], q, sigma2, w);
                };
                let (xt, wt) = lanes8(&x, weight_of);
                let got = search_lanes(&xt, &wt);
                let portable = search_lanes_portable(&xt, &wt);
                for k in 0..8 {
                    assert_eq!(
                        got[k].to_bits(),
                        portable[k].to_bits(),
                        "round {round} lane {k}"
                    );
                    let mut w = [0.0f32; BS];
                    weight_of(k, &mut w);
                    let want = search_scalar(&x[BS * k..BS * k + BS], &w);
                    assert_eq!(got[k].to_bits(), want.to_bits(), "round {round} lane {k}");
                }
            }
        }
    }
}
