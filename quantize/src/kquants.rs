//! K-quants: 256-value super-blocks with quantized sub-block scales (Q2_K … Q6_K), plus Q8_K
//! decoding.
//!
//! All of them pack the super-block scale(s) as fp16 and then requantize every value with the
//! *rounded* scales, so `rd_f16` re-reads the stored bytes exactly where ggml re-reads `y[i].d`.

use crate::common::{
    get_scale_min_k4, make_qp_quants, make_qx_quants, nearest_int, pack_scale_min_k4, q3_lanes,
    qkx_lanes, qx_lanes, rd_f16, wr_f16, MinSearch, GROUP_MAX_EPS,
};

const QK_K: usize = 256;

const IMPL_SEARCH: MinSearch = MinSearch {
    rmin: -0.9,
    rdelta: 0.05,
    nstep: 36,
    use_mad: false,
};

/// Defines `pub(crate) fn $name(x, y, qw)` running `$body`, compiled a second time with AVX2
/// enabled and picked at run time. The lane kernels in `common` then use 256-bit registers;
/// the arithmetic is the same IEEE f32 operations either way (Rust never contracts to FMA),
/// so both builds give identical bytes.
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

/// Transposes `L` consecutive groups of `N` values into lane layout: `out[i][k] = x[N*k + i]`.
#[inline(always)]
fn to_lanes<const L: usize, const N: usize>(x: &[f32]) -> [[f32; L]; N] {
    let x = &x[..L * N];
    let mut out = [[0.0f32; L]; N];
    for k in 0..L {
        for i in 0..N {
            out[i][k] = x[N * k + i];
        }
    }
    out
}

/// Σx² over one super-block.
#[inline(always)]
fn sum_sq(x: &[f32]) -> f32 {
    let mut s = 0.0f32;
    for &v in x {
        s += v * v;
    }
    s
}

/// 2-bit values, 4 per byte: byte `j/4 + l` of each 128-value half holds L[j+l], L[j+l+32],
/// L[j+l+64], L[j+l+96] from the low bits up (Q2_K and the low bits of Q3_K).
#[inline(always)]
fn pack_2bit(l: &[u8; QK_K], qs: &mut [u8]) {
    for j in (0..QK_K).step_by(128) {
        for i in 0..32 {
            qs[j / 4 + i] =
                l[j + i] | (l[j + i + 32] << 2) | (l[j + i + 64] << 4) | (l[j + i + 96] << 6);
        }
    }
}

// ------------------------------------------------------------------------------------------ Q2_K
// scales[16] @0 (scale | min<<4), qs[64] @16, d @80, dmin @82

avx2_dispatch!(quantize_q2_k, quantize_q2_k_body);

#[inline(always)]
fn quantize_q2_k_body(x: &[f32], y: &mut [u8], qw: Option<&[f32]>) {
    for (i, (xb, yb)) in x.chunks_exact(QK_K).zip(y.chunks_exact_mut(84)).enumerate() {
        match qw {
            None => q2_k_ref_block(xb, yb),
            Some(qw) => q2_k_impl_block(xb, yb, &qw[QK_K * i..QK_K * (i + 1)]),
        }
    }
}

#[inline(always)]
fn q2_k_ref_block(x: &[f32], y: &mut [u8]) {
    const Q4SCALE: f32 = 15.0;
    let mut l = [0u8; QK_K];
    let mut mins = [0.0f32; 16];
    let search = MinSearch {
        rmin: -0.5,
        rdelta: 0.1,
        nstep: 15,
        use_mad: true,
    };

    // make_qkx2_quants on the 16 sub-blocks, weights |x|, one sub-block per lane.
    let xt = to_lanes::<16, 16>(x);
    let mut wt = [[0.0f32; 16]; 16];
    for i in 0..16 {
        for k in 0..16 {
            wt[i][k] = xt[i][k].abs();
        }
    }
    let mut lt = [[0.0f32; 16]; 16];
    let scales = qkx_lanes(3, &xt, &wt, false, &mut lt, &mut mins, search);
    from_lanes_u8(&lt, &mut l);

    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for j in 0..16 {
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }

    let (sc, rest) = y.split_at_mut(16);
    if max_scale > 0.0 {
        let iscale = Q4SCALE / max_scale;
        for j in 0..16 {
            sc[j] = nearest_int(iscale * scales[j]) as u8;
        }
        wr_f16(rest, 64, max_scale / Q4SCALE);
    } else {
        sc.fill(0);
        wr_f16(rest, 64, 0.0);
    }
    if max_min > 0.0 {
        let iscale = Q4SCALE / max_min;
        for j in 0..16 {
            let lm = nearest_int(iscale * mins[j]);
            sc[j] |= (lm << 4) as u8;
        }
        wr_f16(rest, 66, max_min / Q4SCALE);
    } else {
        wr_f16(rest, 66, 0.0);
    }
    q2_k_requantize_and_pack(x, y, &mut l);
}

#[inline(always)]
fn q2_k_impl_block(x: &[f32], y: &mut [u8], qw: &[f32]) {
    let mut l = [0u8; QK_K];
    let mut mins = [0.0f32; 16];
    let mut sw = [0.0f32; 16];
    let mut ls = [0u8; 16];
    let mut lm = [0u8; 16];

    let sigma2 = sum_sq(x) / QK_K as f32;
    let xt = to_lanes::<16, 16>(x);
    let qt = to_lanes::<16, 16>(qw);
    let mut wt = [[0.0f32; 16]; 16];
    for i in 0..16 {
        for k in 0..16 {
            wt[i][k] = qt[i][k] * (sigma2 + xt[i][k] * xt[i][k]).sqrt();
            sw[k] += wt[i][k];
        }
    }
    let mut lt = [[0.0f32; 16]; 16];
    let scales = qkx_lanes(3, &xt, &wt, true, &mut lt, &mut mins, IMPL_SEARCH);
    from_lanes_u8(&lt, &mut l);
    let dm = make_qp_quants(15, &scales, &mut ls, &sw);
    let mm = make_qp_quants(15, &mins, &mut lm, &sw);
    wr_f16(y, 80, dm);
    wr_f16(y, 82, mm);
    for j in 0..16 {
        y[j] = ls[j] | (lm[j] << 4);
    }
    q2_k_requantize_and_pack(x, y, &mut l);
}

/// Writes lane-layout levels back in element order as bytes (`l[N*k + i] = lt[i][k]`).
#[inline(always)]
fn from_lanes_u8<const L: usize, const N: usize>(lt: &[[f32; L]; N], l: &mut [u8]) {
    let l = &mut l[..L * N];
    for k in 0..L {
        for i in 0..N {
            l[N * k + i] = lt[i][k] as u8;
        }
    }
}

/// Requantizes with the fp16-rounded d/dmin (sub-blocks whose scale is 0 keep the helper's L).
#[inline(always)]
fn q2_k_requantize_and_pack(x: &[f32], y: &mut [u8], l: &mut [u8; QK_K]) {
    let d_all = rd_f16(y, 80);
    let dmin = rd_f16(y, 82);
    for j in 0..16 {
        let d = d_all * (y[j] & 0xF) as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin * (y[j] >> 4) as f32;
        for ii in 0..16 {
            let q = nearest_int((x[16 * j + ii] + dm) / d);
            l[16 * j + ii] = q.clamp(0, 3) as u8;
        }
    }
    pack_2bit(l, &mut y[16..80]);
}

pub(crate) fn dequantize_q2_k(x: &[u8], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(84).zip(y.chunks_exact_mut(QK_K)) {
        let d = rd_f16(xb, 80);
        let min = rd_f16(xb, 82);
        let mut out = 0usize;
        let mut is = 0usize;
        for n in (0..QK_K).step_by(128) {
            let q = &xb[16 + n / 4..16 + n / 4 + 32];
            let mut shift = 0;
            for _ in 0..4 {
                for half in 0..2 {
                    let sc = xb[is];
                    is += 1;
                    let dl = d * (sc & 0xF) as f32;
                    let ml = min * (sc >> 4) as f32;
                    for l in 0..16 {
                        let v = ((q[l + 16 * half] >> shift) & 3) as f32;
                        yb[out] = dl * v - ml;
                        out += 1;
                    }
                }
                shift += 2;
            }
        }
    }
}

// ------------------------------------------------------------------------------------------ Q3_K
// hmask[32] @0, qs[64] @32, scales[12] @96, d @108

avx2_dispatch!(quantize_q3_k, quantize_q3_k_body);

#[inline(always)]
fn quantize_q3_k_body(x: &[f32], y: &mut [u8], qw: Option<&[f32]>) {
    for (i, (xb, yb)) in x
        .chunks_exact(QK_K)
        .zip(y.chunks_exact_mut(110))
        .enumerate()
    {
        match qw {
            None => q3_k_ref_block(xb, yb),
            Some(qw) => q3_k_impl_block(xb, yb, &qw[QK_K * i..QK_K * (i + 1)]),
        }
    }
}

/// Stores 6-bit scale `l` (0..63) for sub-block j: low nibble in scales[j] or the high nibble of
/// scales[j-8], top two bits in scales[8 + j%4] at bit 2·(j/4).
#[inline(always)]
fn q3_k_put_scale(scales: &mut [u8], j: usize, l: i32) {
    if j < 8 {
        scales[j] = (l & 0xF) as u8;
    } else {
        scales[j - 8] |= ((l & 0xF) << 4) as u8;
    }
    let hi = l >> 4;
    scales[j % 4 + 8] |= (hi << (2 * (j / 4))) as u8;
}

/// The signed 6-bit scale of sub-block j (−32..31).
#[inline(always)]
fn q3_k_get_scale(scales: &[u8], j: usize) -> i32 {
    let lo = if j < 8 {
        scales[j] & 0xF
    } else {
        scales[j - 8] >> 4
    } as i32;
    (lo | (((scales[8 + j % 4] >> (2 * (j / 4))) & 3) as i32) << 4) - 32
}

#[inline(always)]
fn q3_k_ref_block(x: &[f32], y: &mut [u8]) {
    let mut l = [0i8; QK_K];
    // make_q3_quants(4, .., do_rmse = true) on the 16 sub-blocks, one per lane.
    let xt = to_lanes::<16, 16>(x);
    let mut lt = [[0.0f32; 16]; 16];
    let scales = q3_lanes(4, &xt, &mut lt);
    from_lanes_i8(&lt, &mut l);
    let mut max_scale = 0.0f32;
    let mut amax = 0.0f32;
    for j in 0..16 {
        let scale = scales[j].abs();
        if scale > amax {
            amax = scale;
            max_scale = scales[j];
        }
    }
    y[96..108].fill(0);
    if max_scale != 0.0 {
        let iscale = -32.0 / max_scale;
        for j in 0..16 {
            // C stores nearest_int() into an int8_t before clamping.
            let li = nearest_int(iscale * scales[j]) as i8 as i32;
            let li = li.clamp(-32, 31) + 32;
            q3_k_put_scale(&mut y[96..108], j, li);
        }
        wr_f16(y, 108, 1.0 / iscale);
    } else {
        wr_f16(y, 108, 0.0);
    }
    q3_k_requantize_and_pack(x, y, &mut l);
}

#[inline(always)]
fn q3_k_impl_block(x: &[f32], y: &mut [u8], qw: &[f32]) {
    let mut l = [0i8; QK_K];
    let mut sw = [0.0f32; 16];
    let mut ls = [0i8; 16];

    let sigma2 = 2.0 * sum_sq(x) / QK_K as f32;
    // make_qx_quants(4, .., rmse_type 1, weights) on the 16 sub-blocks, one per lane.
    let xt = to_lanes::<16, 16>(x);
    let qt = to_lanes::<16, 16>(qw);
    let mut wt = [[0.0f32; 16]; 16];
    for i in 0..16 {
        for k in 0..16 {
            wt[i][k] = qt[i][k] * (sigma2 + xt[i][k] * xt[i][k]).sqrt();
            sw[k] += wt[i][k];
        }
    }
    let mut lt = [[0.0f32; 16]; 16];
    let scales = qx_lanes(4, &xt, &wt, &mut lt);
    from_lanes_i8(&lt, &mut l);
    y[96..108].fill(0);
    let d_block = make_qx_quants(32, &scales, &mut ls, 1, Some(&sw));
    for j in 0..16 {
        q3_k_put_scale(&mut y[96..108], j, ls[j] as i32);
    }
    wr_f16(y, 108, d_block);
    q3_k_requantize_and_pack(x, y, &mut l);
}

/// [`from_lanes_u8`] for the signed level arrays.
#[inline(always)]
fn from_lanes_i8<const L: usize, const N: usize>(lt: &[[f32; L]; N], l: &mut [i8]) {
    let l = &mut l[..L * N];
    for k in 0..L {
        for i in 0..N {
            l[N * k + i] = lt[i][k] as i8;
        }
    }
}

#[inline(always)]
fn q3_k_requantize_and_pack(x: &[f32], y: &mut [u8], l: &mut [i8; QK_K]) {
    let d_all = rd_f16(y, 108);
    for j in 0..16 {
        let sc = q3_k_get_scale(&y[96..108], j);
        let d = d_all * sc as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let q = nearest_int(x[16 * j + ii] / d).clamp(-4, 3);
            l[16 * j + ii] = (q + 4) as i8;
        }
    }
    // High bit of value j goes to hmask[j % 32], bit j / 32.
    y[..32].fill(0);
    let mut lu = [0u8; QK_K];
    for j in 0..QK_K {
        let mut v = l[j];
        if v > 3 {
            y[j % 32] |= 1 << (j / 32);
            v -= 4;
        }
        lu[j] = v as u8;
    }
    pack_2bit(&lu, &mut y[32..96]);
}

pub(crate) fn dequantize_q3_k(x: &[u8], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(110).zip(y.chunks_exact_mut(QK_K)) {
        let d_all = rd_f16(xb, 108);
        let hm = &xb[..32];
        let mut m = 1u8;
        let mut out = 0usize;
        let mut is = 0usize;
        for n in (0..QK_K).step_by(128) {
            let q = &xb[32 + n / 4..32 + n / 4 + 32];
            let mut shift = 0;
            for _ in 0..4 {
                for half in 0..2 {
                    let dl = d_all * q3_k_get_scale(&xb[96..108], is) as f32;
                    is += 1;
                    for l in 0..16 {
                        let k = l + 16 * half;
                        let v = ((q[k] >> shift) & 3) as i32 - if hm[k] & m != 0 { 0 } else { 4 };
                        yb[out] = dl * v as f32;
                        out += 1;
                    }
                }
                shift += 2;
                m = m.wrapping_shl(1);
            }
        }
    }
}

// ------------------------------------------------------------------------------------------ Q4_K
// d @0, dmin @2, scales[12] @4, qs[128] @16

avx2_dispatch!(quantize_q4_k, quantize_q4_k_body);

#[inline(always)]
fn quantize_q4_k_body(x: &[f32], y: &mut [u8], qw: Option<&[f32]>) {
    kx_quantize(x, y, qw, 15, -1.0, 20, 144, |l, yb| {
        let q = &mut yb[16..144];
        for (c, j) in (0..QK_K).step_by(64).enumerate() {
            for i in 0..32 {
                q[32 * c + i] = l[j + i] | (l[j + i + 32] << 4);
            }
        }
    });
}

/// Q4_K/Q5_K driver: super-blocks go through the scale search two at a time (16 lanes: two
/// independent dependency chains per instruction stream), a last odd one alone; then each is
/// requantized and handed to `pack(levels, block)`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn kx_quantize(
    x: &[f32],
    y: &mut [u8],
    qw: Option<&[f32]>,
    nmax: i32,
    rmin: f32,
    nstep: i32,
    bytes: usize,
    pack: impl Fn(&[u8], &mut [u8]),
) {
    let nb = x.len() / QK_K;
    let mut ib = 0;
    while ib < nb {
        let n = if nb - ib >= 2 { 2 } else { 1 };
        let xs = &x[QK_K * ib..QK_K * (ib + n)];
        let ys = &mut y[bytes * ib..bytes * (ib + n)];
        let q = qw.map(|q| &q[QK_K * ib..QK_K * (ib + n)]);
        let mut l = [0u8; 2 * QK_K];
        match (n, q) {
            (2, None) => kx_ref_scales::<16>(xs, ys, bytes, &mut l, nmax, rmin, nstep),
            (_, None) => kx_ref_scales::<8>(xs, ys, bytes, &mut l, nmax, rmin, nstep),
            (2, Some(q)) => kx_impl_scales::<16>(xs, ys, bytes, &mut l, nmax, q),
            (_, Some(q)) => kx_impl_scales::<8>(xs, ys, bytes, &mut l, nmax, q),
        }
        for b in 0..n {
            let xb = &xs[QK_K * b..QK_K * (b + 1)];
            let yb = &mut ys[bytes * b..bytes * (b + 1)];
            let lb = &mut l[QK_K * b..QK_K * (b + 1)];
            kx_requantize(xb, yb, lb, nmax);
            pack(lb, yb);
        }
        ib += n;
    }
}

/// Reference scale search shared by Q4_K (nmax 15, rmin −1, 20 steps) and Q5_K (31, −0.5, 15):
/// per 32-value sub-block weights `sqrt(mean x²) + |x|`, then 6-bit scales/mins relative to the
/// largest. Writes d, dmin and the 12 scale bytes.
///
/// Runs on L/8 consecutive super-blocks at once (`x`, `y`, `l` hold all of them).
#[inline(always)]
fn kx_ref_scales<const L: usize>(
    x: &[f32],
    y: &mut [u8],
    bytes: usize,
    l: &mut [u8],
    nmax: i32,
    rmin: f32,
    nstep: i32,
) {
    let mut mins = [0.0f32; L];
    let search = MinSearch {
        rmin,
        rdelta: 0.1,
        nstep,
        use_mad: false,
    };
    // make_qkx2_quants on the sub-blocks, one per lane.
    let xt = to_lanes::<L, 32>(x);
    let mut wt = [[0.0f32; L]; 32];
    for k in 0..L {
        let av_x = (sum_sq(&x[32 * k..32 * k + 32]) / 32.0).sqrt();
        for i in 0..32 {
            wt[i][k] = av_x + xt[i][k].abs();
        }
    }
    let mut lt = [[0.0f32; L]; 32];
    let scales = qkx_lanes(nmax, &xt, &wt, false, &mut lt, &mut mins, search);
    from_lanes_u8(&lt, l);
    for b in 0..L / 8 {
        kx_ref_pack(
            &scales[8 * b..8 * b + 8],
            &mins[8 * b..8 * b + 8],
            &mut y[bytes * b..bytes * (b + 1)],
        );
    }
}

/// Tail of the reference Q4_K/Q5_K search for one super-block: 6-bit scales and mins relative
/// to the largest, fp16 d and dmin.
#[inline(always)]
fn kx_ref_pack(scales: &[f32], mins: &[f32], y: &mut [u8]) {
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for j in 0..8 {
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    y[4..16].fill(0);
    for j in 0..8 {
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        pack_scale_min_k4(j, ls, lm, &mut y[4..16]);
    }
    wr_f16(y, 0, max_scale / 63.0);
    wr_f16(y, 2, max_min / 63.0);
}

/// imatrix scale search shared by Q4_K and Q5_K: qkx3 per sub-block, then `make_qp_quants` on
/// the scales and mins weighted by each sub-block's total weight.
///
/// Runs on L/8 consecutive super-blocks at once (`x`, `y`, `l`, `qw` hold all of them).
#[inline(always)]
fn kx_impl_scales<const L: usize>(
    x: &[f32],
    y: &mut [u8],
    bytes: usize,
    l: &mut [u8],
    nmax: i32,
    qw: &[f32],
) {
    let mut sw = [0.0f32; L];
    let mut mins = [0.0f32; L];
    let mut sigma2 = [0.0f32; L];
    for k in 0..L {
        sigma2[k] = 2.0 * sum_sq(&x[QK_K * (k / 8)..QK_K * (k / 8 + 1)]) / QK_K as f32;
    }
    // make_qkx3_quants on the sub-blocks, one per lane.
    let xt = to_lanes::<L, 32>(x);
    let qt = to_lanes::<L, 32>(qw);
    let mut wt = [[0.0f32; L]; 32];
    for i in 0..32 {
        for k in 0..L {
            wt[i][k] = qt[i][k] * (sigma2[k] + xt[i][k] * xt[i][k]).sqrt();
            sw[k] += wt[i][k];
        }
    }
    let mut lt = [[0.0f32; L]; 32];
    let scales = qkx_lanes(nmax, &xt, &wt, true, &mut lt, &mut mins, IMPL_SEARCH);
    from_lanes_u8(&lt, l);
    for b in 0..L / 8 {
        let r = 8 * b..8 * b + 8;
        kx_impl_pack(
            &scales[r.clone()],
            &mins[r.clone()],
            &sw[r],
            &mut y[bytes * b..bytes * (b + 1)],
            nmax,
        );
    }
}

/// Tail of the imatrix Q4_K/Q5_K search for one super-block.
#[inline(always)]
fn kx_impl_pack(scales: &[f32], mins: &[f32], sw: &[f32], y: &mut [u8], nmax: i32) {
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    let d_block = make_qp_quants(63, scales, &mut ls, sw);
    let m_block = make_qp_quants(63, mins, &mut lm, sw);
    y[4..16].fill(0);
    for j in 0..8 {
        // Q5_K's impl clamps to 63; Q4_K's packs the bytes as they are. They differ only if
        // make_qp_quants wrapped a negative level into the u8 array (a negative sub-block scale).
        let (a, b) = if nmax == 31 {
            (ls[j].min(63), lm[j].min(63))
        } else {
            (ls[j], lm[j])
        };
        pack_scale_min_k4(j, a, b, &mut y[4..16]);
    }
    wr_f16(y, 0, d_block);
    wr_f16(y, 2, m_block);
}

/// Requantizes Q4_K/Q5_K values with the fp16-rounded d/dmin and the packed 6-bit scales.
#[inline(always)]
fn kx_requantize(x: &[f32], y: &[u8], l: &mut [u8], nmax: i32) {
    let l = &mut l[..QK_K];
    let d_all = rd_f16(y, 0);
    let dmin = rd_f16(y, 2);
    for j in 0..8 {
        let (sc, m) = get_scale_min_k4(j, &y[4..16]);
        let d = d_all * sc as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin * m as f32;
        for ii in 0..32 {
            let q = nearest_int((x[32 * j + ii] + dm) / d);
            l[32 * j + ii] = q.clamp(0, nmax) as u8;
        }
    }
}

pub(crate) fn dequantize_q4_k(x: &[u8], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(144).zip(y.chunks_exact_mut(QK_K)) {
        let d = rd_f16(xb, 0);
        let min = rd_f16(xb, 2);
        let scales = &xb[4..16];
        for (c, j) in (0..QK_K).step_by(64).enumerate() {
            let q = &xb[16 + 32 * c..16 + 32 * c + 32];
            let (sc1, m1) = get_scale_min_k4(2 * c, scales);
            let (sc2, m2) = get_scale_min_k4(2 * c + 1, scales);
            let d1 = d * sc1 as f32;
            let m1 = min * m1 as f32;
            let d2 = d * sc2 as f32;
            let m2 = min * m2 as f32;
            for l in 0..32 {
                yb[j + l] = d1 * (q[l] & 0xF) as f32 - m1;
            }
            for l in 0..32 {
                yb[j + 32 + l] = d2 * (q[l] >> 4) as f32 - m2;
            }
        }
    }
}

// ------------------------------------------------------------------------------------------ Q5_K
// d @0, dmin @2, scales[12] @4, qh[32] @16, qs[128] @48

avx2_dispatch!(quantize_q5_k, quantize_q5_k_body);

#[inline(always)]
fn quantize_q5_k_body(x: &[f32], y: &mut [u8], qw: Option<&[f32]>) {
    kx_quantize(x, y, qw, 31, -0.5, 15, 176, |l, yb| {
        let (qh, ql) = yb[16..176].split_at_mut(32);
        qh.fill(0);
        let mut m1 = 1u8;
        let mut m2 = 2u8;
        for (c, n) in (0..QK_K).step_by(64).enumerate() {
            for j in 0..32 {
                let mut l1 = l[n + j];
                if l1 > 15 {
                    l1 -= 16;
                    qh[j] |= m1;
                }
                let mut l2 = l[n + j + 32];
                if l2 > 15 {
                    l2 -= 16;
                    qh[j] |= m2;
                }
                ql[32 * c + j] = l1 | (l2 << 4);
            }
            m1 = m1.wrapping_shl(2);
            m2 = m2.wrapping_shl(2);
        }
    });
}

pub(crate) fn dequantize_q5_k(x: &[u8], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(176).zip(y.chunks_exact_mut(QK_K)) {
        let d = rd_f16(xb, 0);
        let min = rd_f16(xb, 2);
        let scales = &xb[4..16];
        let qh = &xb[16..48];
        let mut u1 = 1u8;
        let mut u2 = 2u8;
        for (c, j) in (0..QK_K).step_by(64).enumerate() {
            let ql = &xb[48 + 32 * c..48 + 32 * c + 32];
            let (sc1, m1) = get_scale_min_k4(2 * c, scales);
            let (sc2, m2) = get_scale_min_k4(2 * c + 1, scales);
            let d1 = d * sc1 as f32;
            let m1 = min * m1 as f32;
            let d2 = d * sc2 as f32;
            let m2 = min * m2 as f32;
            for l in 0..32 {
                let v = (ql[l] & 0xF) as i32 + if qh[l] & u1 != 0 { 16 } else { 0 };
                yb[j + l] = d1 * v as f32 - m1;
            }
            for l in 0..32 {
                let v = (ql[l] >> 4) as i32 + if qh[l] & u2 != 0 { 16 } else { 0 };
                yb[j + 32 + l] = d2 * v as f32 - m2;
            }
            u1 = u1.wrapping_shl(2);
            u2 = u2.wrapping_shl(2);
        }
    }
}

// ------------------------------------------------------------------------------------------ Q6_K
// ql[128] @0, qh[64] @128, scales[16] (int8) @192, d @208

avx2_dispatch!(quantize_q6_k, quantize_q6_k_body);

#[inline(always)]
fn quantize_q6_k_body(x: &[f32], y: &mut [u8], qw: Option<&[f32]>) {
    for (i, (xb, yb)) in x
        .chunks_exact(QK_K)
        .zip(y.chunks_exact_mut(210))
        .enumerate()
    {
        let qwb = qw.map(|q| &q[QK_K * i..QK_K * (i + 1)]);
        q6_k_block(xb, yb, qwb);
    }
}

/// The ref and impl paths differ only in the sub-block weights: x² (`make_qx_quants` type 1)
/// without an imatrix, the raw imatrix values with one.
#[inline(always)]
fn q6_k_block(x: &[f32], y: &mut [u8], qw: Option<&[f32]>) {
    let mut l = [0i8; QK_K];
    let mut max_scale = 0.0f32;
    let mut max_abs_scale = 0.0f32;
    // make_qx_quants(32, .., rmse_type 1, qw) on the 16 sub-blocks, one per lane.
    let xt = to_lanes::<16, 16>(x);
    let wt = match qw {
        Some(q) => to_lanes::<16, 16>(q),
        None => {
            let mut wt = [[0.0f32; 16]; 16];
            for i in 0..16 {
                for k in 0..16 {
                    wt[i][k] = xt[i][k] * xt[i][k];
                }
            }
            wt
        }
    };
    let mut lt = [[0.0f32; 16]; 16];
    let scales = qx_lanes(32, &xt, &wt, &mut lt);
    from_lanes_i8(&lt, &mut l);
    for ib in 0..16 {
        let scale = scales[ib];
        let abs_scale = scale.abs();
        if abs_scale > max_abs_scale {
            max_abs_scale = abs_scale;
            max_scale = scale;
        }
    }
    if max_abs_scale < GROUP_MAX_EPS {
        y.fill(0);
        wr_f16(y, 208, 0.0);
        return;
    }
    let iscale = -128.0 / max_scale;
    wr_f16(y, 208, 1.0 / iscale);
    for ib in 0..16 {
        y[192 + ib] = nearest_int(iscale * scales[ib]).min(127) as i8 as u8;
    }
    let d_all = rd_f16(y, 208);
    for j in 0..16 {
        let d = d_all * (y[192 + j] as i8) as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let q = nearest_int(x[16 * j + ii] / d).clamp(-32, 31);
            l[16 * j + ii] = (q + 32) as i8;
        }
    }
    let (ql, rest) = y.split_at_mut(128);
    let qh = &mut rest[..64];
    for (c, j) in (0..QK_K).step_by(128).enumerate() {
        let ql = &mut ql[64 * c..64 * c + 64];
        let qh = &mut qh[32 * c..32 * c + 32];
        for i in 0..32 {
            let a = l[j + i] as u8;
            let b = l[j + i + 32] as u8;
            let cc = l[j + i + 64] as u8;
            let dd = l[j + i + 96] as u8;
            ql[i] = (a & 0xF) | ((cc & 0xF) << 4);
            ql[i + 32] = (b & 0xF) | ((dd & 0xF) << 4);
            qh[i] = (a >> 4) | ((b >> 4) << 2) | ((cc >> 4) << 4) | ((dd >> 4) << 6);
        }
    }
}

pub(crate) fn dequantize_q6_k(x: &[u8], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(210).zip(y.chunks_exact_mut(QK_K)) {
        let d = rd_f16(xb, 208);
        for c in 0..2 {
            let ql = &xb[64 * c..64 * c + 64];
            let qh = &xb[128 + 32 * c..128 + 32 * c + 32];
            let sc = &xb[192 + 8 * c..192 + 8 * c + 8];
            let out = &mut yb[128 * c..128 * c + 128];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                out[l] = d * (sc[is] as i8) as f32 * q1 as f32;
                out[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
                out[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
                out[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
            }
        }
    }
}

// ------------------------------------------------------------------------------------------ Q8_K
// d (f32) @0, qs[256] int8 @4, bsums[16] int16 @260

pub(crate) fn dequantize_q8_k(x: &[u8], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(292).zip(y.chunks_exact_mut(QK_K)) {
        let d = f32::from_le_bytes([xb[0], xb[1], xb[2], xb[3]]);
        for j in 0..QK_K {
            yb[j] = d * (xb[4 + j] as i8) as f32;
        }
    }
}
