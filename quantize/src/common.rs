//! The scalar helpers ggml-quants.c builds its quantizers from.
//!
//! Each one follows the C statement order exactly: every sum is a sequential f32 accumulation and
//! every product is associated left to right as written in C (`w*x*l` is `(w*x)*l`). Integer
//! values that C stores into `int8_t`/`uint8_t` arrays are truncated the same way here (`as i8`,
//! `as u8`), because later comparisons read the truncated value back.

use crate::fp::{f16_bits_to_f32, f32_to_f16_bits};

/// Below this |max| a group is treated as all zeros (`GROUP_MAX_EPS`).
pub(crate) const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml's `nearest_int`: add 1.5·2²³ and read the mantissa. Round-half-to-even for
/// |f| ≤ 4194303; outside that range it returns the same wrapped bits ggml does (ggml only
/// asserts in debug builds), so it is reproduced bit for bit rather than with `round_ties_even`.
#[inline(always)]
pub(crate) fn nearest_int(f: f32) -> i32 {
    let val = f + 12582912.0;
    let i = val.to_bits() as i32;
    (i & 0x007f_ffff) - 0x0040_0000
}

#[inline(always)]
pub(crate) fn rd_f16(b: &[u8], off: usize) -> f32 {
    f16_bits_to_f32(u16::from_le_bytes([b[off], b[off + 1]]))
}

#[inline(always)]
pub(crate) fn wr_f16(b: &mut [u8], off: usize, v: f32) {
    b[off..off + 2].copy_from_slice(&f32_to_f16_bits(v).to_le_bytes());
}

/// Symmetric quantizer with an RMSE-weighted scale search (`make_qx_quants`).
/// `l` receives values in `0..2*nmax`. `rmse_type` 1 weighs by x² unless `qw` is given.
pub(crate) fn make_qx_quants(
    nmax: i32,
    x: &[f32],
    l_out: &mut [i8],
    rmse_type: i32,
    qw: Option<&[f32]>,
) -> f32 {
    // Monomorphise the weight function so the hot loops do not re-dispatch per element.
    let return_early = rmse_type < 0;
    match (qw, rmse_type.abs()) {
        (_, 0) => qx_inner(nmax, x, l_out, 0, false, |_| 0.0),
        (Some(w), _) => {
            let w = &w[..x.len()];
            qx_inner(nmax, x, l_out, 1, return_early, |i| w[i])
        }
        (None, 1) => qx_inner(nmax, x, l_out, 1, return_early, |i| x[i] * x[i]),
        (None, 2) => qx_inner(nmax, x, l_out, 1, return_early, |_| 1.0),
        (None, 3) => qx_inner(nmax, x, l_out, 1, return_early, |i| x[i].abs()),
        (None, _) => qx_inner(nmax, x, l_out, 1, return_early, |i| x[i].abs().sqrt()),
    }
}

/// Body of `make_qx_quants`; `mode` 0 is `rmse_type == 0` (plain rounding, no search).
#[inline(always)]
fn qx_inner(
    nmax: i32,
    x: &[f32],
    l_out: &mut [i8],
    mode: i32,
    return_early: bool,
    weight: impl Fn(usize) -> f32,
) -> f32 {
    let n = x.len();
    let l_out = &mut l_out[..n];
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l_out.fill(0);
        return 0.0;
    }
    let nmaxf = nmax as f32;
    let mut iscale = -nmaxf / max;
    if mode == 0 {
        for i in 0..n {
            let l = nearest_int(iscale * x[i]);
            l_out[i] = (nmax + l.clamp(-nmax, nmax - 1)) as i8;
        }
        return 1.0 / iscale;
    }
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for i in 0..n {
        let l = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
        l_out[i] = (l + nmax) as i8;
        let w = weight(i);
        let lf = l as f32;
        sumlx += w * x[i] * lf;
        suml2 += w * lf * lf;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    if return_early {
        return if suml2 > 0.0 {
            0.5 * (scale + 1.0 / iscale)
        } else {
            1.0 / iscale
        };
    }
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmaxf + 0.1 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for i in 0..n {
            let l = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
            let w = weight(i);
            let lf = l as f32;
            sumlx += w * x[i] * lf;
            suml2 += w * lf * lf;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for i in 0..n {
                let l = nearest_int(iscale * x[i]);
                l_out[i] = (nmax + l.clamp(-nmax, nmax - 1)) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Q3_K's reference sub-block quantizer (`make_q3_quants`): coordinate descent with weights x².
// Kept as the reference the lane kernels are tested against.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn make_q3_quants(nmax: i32, x: &[f32], l_out: &mut [i8], do_rmse: bool) -> f32 {
    let n = x.len();
    let l_out = &mut l_out[..n];
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l_out[..n].fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    if do_rmse {
        let mut sumlx = 0.0f32;
        let mut suml2 = 0.0f32;
        for i in 0..n {
            let l = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
            l_out[i] = l as i8;
            let w = x[i] * x[i];
            let lf = l as f32;
            sumlx += w * x[i] * lf;
            suml2 += w * lf * lf;
        }
        for _itry in 0..5 {
            let mut n_changed = 0;
            for i in 0..n {
                let w = x[i] * x[i];
                let li = l_out[i] as f32;
                let mut slx = sumlx - w * x[i] * li;
                if slx > 0.0 {
                    let mut sl2 = suml2 - w * li * li;
                    let new_l = nearest_int(x[i] * sl2 / slx).clamp(-nmax, nmax - 1);
                    if new_l != l_out[i] as i32 {
                        let nf = new_l as f32;
                        slx += w * x[i] * nf;
                        sl2 += w * nf * nf;
                        if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                            l_out[i] = new_l as i8;
                            sumlx = slx;
                            suml2 = sl2;
                            n_changed += 1;
                        }
                    }
                }
            }
            if n_changed == 0 {
                break;
            }
        }
        for v in l_out[..n].iter_mut() {
            *v = (*v as i32 + nmax) as i8;
        }
        return if suml2 > 0.0 { sumlx / suml2 } else { 0.0 };
    }
    for i in 0..n {
        let l = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
        l_out[i] = (l + nmax) as i8;
    }
    1.0 / iscale
}

/// Parameters of the asymmetric (scale + min) searches.
#[derive(Clone, Copy)]
pub(crate) struct MinSearch {
    pub rmin: f32,
    pub rdelta: f32,
    pub nstep: i32,
    pub use_mad: bool,
}

/// Asymmetric quantizer used by the reference K-quants (`make_qkx2_quants`).
/// Returns the scale; `*the_min` receives −min (≥ 0).
// Kept as the reference the lane kernels are tested against.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l_out: &mut [u8],
    the_min: &mut f32,
    laux: &mut [u8],
    p: MinSearch,
) -> f32 {
    let w = &weights[..x.len()];
    qkx_generic(nmax, x, |i| w[i], false, l_out, the_min, laux, p)
}

/// Like [`make_qkx2_quants`] but weights default to x² and a degenerate range is `max <= min`
/// (`make_qkx3_quants`, used by the imatrix paths).
pub(crate) fn make_qkx3_quants(
    nmax: i32,
    x: &[f32],
    weights: Option<&[f32]>,
    l_out: &mut [u8],
    the_min: &mut f32,
    laux: &mut [u8],
    p: MinSearch,
) -> f32 {
    match weights {
        Some(w) => {
            let w = &w[..x.len()];
            qkx_generic(nmax, x, |i| w[i], true, l_out, the_min, laux, p)
        }
        None => qkx_generic(nmax, x, |i| x[i] * x[i], true, l_out, the_min, laux, p),
    }
}

/// Shared body of qkx2/qkx3. `le_degenerate` selects qkx3's `max <= min` test (qkx2: `==`).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn qkx_generic(
    nmax: i32,
    x: &[f32],
    wt: impl Fn(usize) -> f32,
    le_degenerate: bool,
    l_out: &mut [u8],
    the_min: &mut f32,
    laux: &mut [u8],
    p: MinSearch,
) -> f32 {
    let n = x.len();
    let l_out = &mut l_out[..n];
    let laux = &mut laux[..n];
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = wt(0);
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = wt(i);
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if if le_degenerate {
        max <= min
    } else {
        max == min
    } {
        l_out.fill(0);
        *the_min = -min;
        return 0.0;
    }
    let nmaxf = nmax as f32;
    let mut iscale = nmaxf / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min));
        l_out[i] = l.clamp(0, nmax) as u8;
        let mut diff = scale * l_out[i] as f32 + min - x[i];
        diff = if p.use_mad { diff.abs() } else { diff * diff };
        best_error += wt(i) * diff;
    }
    if p.nstep < 1 {
        *the_min = -min;
        return scale;
    }
    for is in 0..=p.nstep {
        iscale = (p.rmin + p.rdelta * is as f32 + nmaxf) / (max - min);
        let mut sum_l = 0.0f32;
        let mut sum_l2 = 0.0f32;
        let mut sum_xl = 0.0f32;
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = l as u8;
            let w = wt(i);
            let lf = l as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                let mut diff = this_scale * laux[i] as f32 + this_min - x[i];
                diff = if p.use_mad { diff.abs() } else { diff * diff };
                cur_error += wt(i) * diff;
            }
            if cur_error < best_error {
                l_out.copy_from_slice(laux);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    scale
}

/// Positive-only quantizer for the sub-block scales and mins of the imatrix K-quant paths
/// (`make_qp_quants`). `l_out` is a `uint8_t` array in C: negative values wrap, and the wrapped
/// value is what later iterations read back.
pub(crate) fn make_qp_quants(nmax: i32, x: &[f32], l_out: &mut [u8], quant_weights: &[f32]) -> f32 {
    let n = x.len();
    let l_out = &mut l_out[..n];
    let quant_weights = &quant_weights[..n];
    let mut max = 0.0f32;
    for &v in x {
        max = if max > v { max } else { v };
    }
    if max < GROUP_MAX_EPS {
        l_out[..n].fill(0);
        return 0.0;
    }
    let nmaxf = nmax as f32;
    let mut iscale = nmaxf / max;
    for i in 0..n {
        l_out[i] = nearest_int(iscale * x[i]) as u8;
    }
    let scale = 1.0 / iscale;
    let mut best_mse = 0.0f32;
    for i in 0..n {
        let diff = x[i] - scale * l_out[i] as f32;
        let w = quant_weights[i];
        best_mse += w * diff * diff;
    }
    for is in -4..=4 {
        if is == 0 {
            continue;
        }
        let iscale_is = (0.1 * is as f32 + nmaxf) / max;
        let scale_is = 1.0 / iscale_is;
        let mut mse = 0.0f32;
        for i in 0..n {
            let l = nearest_int(iscale_is * x[i]).min(nmax);
            let diff = x[i] - scale_is * l as f32;
            let w = quant_weights[i];
            mse += w * diff * diff;
        }
        if mse < best_mse {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for i in 0..n {
        let l = nearest_int(iscale * x[i]).min(nmax);
        l_out[i] = l as u8;
        let w = quant_weights[i];
        let lf = l as f32;
        sumlx += w * x[i] * lf;
        suml2 += w * lf * lf;
    }
    for _itry in 0..5 {
        let mut n_changed = 0;
        for i in 0..n {
            let w = quant_weights[i];
            let li = l_out[i] as f32;
            let mut slx = sumlx - w * x[i] * li;
            let mut sl2 = suml2 - w * li * li;
            if slx > 0.0 && sl2 > 0.0 {
                let new_l = nearest_int(x[i] * sl2 / slx).min(nmax);
                if new_l != l_out[i] as i32 {
                    let nf = new_l as f32;
                    slx += w * x[i] * nf;
                    sl2 += w * nf * nf;
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l_out[i] = new_l as u8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

// ------------------------------------------------------------------------------ lane kernels
//
// The K-quants run the same search independently on each sub-block of a super-block. The
// `*_lanes` kernels below run L of those searches side by side: lane k of every `[f32; L]`
// is sub-block k, and each lane performs exactly the scalar operation sequence of the function
// it mirrors (same order of every sum and product; branches become per-lane selects). Nothing
// is reduced across lanes, so the results are bit-identical to the scalar helpers, while the
// plain lane loops let LLVM put the lanes into SIMD registers (the callers compile them with
// AVX2 enabled when the CPU has it). Inputs are transposed: `xt[i][k]` is element i of group k.

/// `nearest_int` followed by an integer clamp, on one lane.
#[inline(always)]
fn nearest_clamped(f: f32, lo: i32, hi: i32) -> f32 {
    let l = nearest_int(f);
    let l = if l < lo { lo } else { l };
    (if l > hi { hi } else { l }) as f32
}

/// Lane-parallel [`make_qkx2_quants`] (`le_degenerate == false`) / [`make_qkx3_quants`]
/// (`true`) with explicit weights and `p.nstep >= 1`. Levels are returned as f32 (0..=nmax) in
/// `lt`; `the_min` receives −min per lane; the return value is the scale per lane.
#[inline(always)]
pub(crate) fn qkx_lanes_portable<const L: usize, const N: usize>(
    nmax: i32,
    xt: &[[f32; L]; N],
    wt: &[[f32; L]; N],
    le_degenerate: bool,
    lt: &mut [[f32; L]; N],
    the_min: &mut [f32; L],
    p: MinSearch,
) -> [f32; L] {
    debug_assert!(p.nstep >= 1);
    let nmaxf = nmax as f32;
    let mut min = xt[0];
    let mut max = xt[0];
    let mut sum_w = wt[0];
    let mut sum_x = [0.0f32; L];
    for k in 0..L {
        sum_x[k] = sum_w[k] * xt[0][k];
    }
    for i in 1..N {
        for k in 0..L {
            let v = xt[i][k];
            min[k] = if v < min[k] { v } else { min[k] };
            max[k] = if v > max[k] { v } else { max[k] };
            sum_w[k] += wt[i][k];
            sum_x[k] += wt[i][k] * v;
        }
    }
    let mut degenerate = [false; L];
    for k in 0..L {
        if min[k] > 0.0 {
            min[k] = 0.0;
        }
        degenerate[k] = if le_degenerate {
            max[k] <= min[k]
        } else {
            max[k] == min[k]
        };
    }
    // What a degenerate lane returns; its other lanes' arithmetic below is discarded.
    let degenerate_min = min;

    let mut iscale = [0.0f32; L];
    let mut scale = [0.0f32; L];
    for k in 0..L {
        iscale[k] = nmaxf / (max[k] - min[k]);
        scale[k] = 1.0 / iscale[k];
    }
    let mut best_error = [0.0f32; L];
    for i in 0..N {
        for k in 0..L {
            let lf = nearest_clamped(iscale[k] * (xt[i][k] - min[k]), 0, nmax);
            lt[i][k] = lf;
            let mut diff = scale[k] * lf + min[k] - xt[i][k];
            diff = if p.use_mad { diff.abs() } else { diff * diff };
            best_error[k] += wt[i][k] * diff;
        }
    }
    let mut laux = [[0.0f32; L]; N];
    for is in 0..=p.nstep {
        let num = p.rmin + p.rdelta * is as f32 + nmaxf;
        let mut sum_l = [0.0f32; L];
        let mut sum_l2 = [0.0f32; L];
        let mut sum_xl = [0.0f32; L];
        for k in 0..L {
            iscale[k] = num / (max[k] - min[k]);
        }
        for i in 0..N {
            for k in 0..L {
                let lf = nearest_clamped(iscale[k] * (xt[i][k] - min[k]), 0, nmax);
                laux[i][k] = lf;
                let w = wt[i][k];
                sum_l[k] += w * lf;
                sum_l2[k] += w * lf * lf;
                sum_xl[k] += w * lf * xt[i][k];
            }
        }
        let mut d_pos = [false; L];
        let mut this_scale = [0.0f32; L];
        let mut this_min = [0.0f32; L];
        for k in 0..L {
            let d = sum_w[k] * sum_l2[k] - sum_l[k] * sum_l[k];
            d_pos[k] = d > 0.0;
            let ts = (sum_w[k] * sum_xl[k] - sum_x[k] * sum_l[k]) / d;
            let tm = (sum_l2[k] * sum_x[k] - sum_l[k] * sum_xl[k]) / d;
            let clip = tm > 0.0;
            this_min[k] = if clip { 0.0 } else { tm };
            this_scale[k] = if clip { sum_xl[k] / sum_l2[k] } else { ts };
        }
        if !d_pos.iter().any(|&b| b) {
            continue;
        }
        let mut cur_error = [0.0f32; L];
        for i in 0..N {
            for k in 0..L {
                let mut diff = this_scale[k] * laux[i][k] + this_min[k] - xt[i][k];
                diff = if p.use_mad { diff.abs() } else { diff * diff };
                cur_error[k] += wt[i][k] * diff;
            }
        }
        let mut accept = [false; L];
        for k in 0..L {
            accept[k] = d_pos[k] && cur_error[k] < best_error[k];
            if accept[k] {
                best_error[k] = cur_error[k];
                scale[k] = this_scale[k];
                min[k] = this_min[k];
            }
        }
        if accept.iter().any(|&b| b) {
            for i in 0..N {
                for k in 0..L {
                    lt[i][k] = if accept[k] { laux[i][k] } else { lt[i][k] };
                }
            }
        }
    }
    for k in 0..L {
        if degenerate[k] {
            the_min[k] = -degenerate_min[k];
            scale[k] = 0.0;
            for row in lt.iter_mut() {
                row[k] = 0.0;
            }
        } else {
            the_min[k] = -min[k];
        }
    }
    scale
}

/// Lane-parallel [`make_qx_quants`] with `rmse_type == 1` and explicit weights (pass x² for the
/// unweighted form, which is what the scalar helper computes). Levels (0..2·nmax) go to `lt`.
#[inline(always)]
pub(crate) fn qx_lanes_portable<const L: usize, const N: usize>(
    nmax: i32,
    xt: &[[f32; L]; N],
    wt: &[[f32; L]; N],
    lt: &mut [[f32; L]; N],
) -> [f32; L] {
    let nmaxf = nmax as f32;
    let mut max = [0.0f32; L];
    let mut amax = [0.0f32; L];
    for i in 0..N {
        for k in 0..L {
            let v = xt[i][k];
            let ax = v.abs();
            let gt = ax > amax[k];
            amax[k] = if gt { ax } else { amax[k] };
            max[k] = if gt { v } else { max[k] };
        }
    }
    let mut iscale = [0.0f32; L];
    for k in 0..L {
        iscale[k] = -nmaxf / max[k];
    }
    let mut sumlx = [0.0f32; L];
    let mut suml2 = [0.0f32; L];
    for i in 0..N {
        for k in 0..L {
            let lf = nearest_clamped(iscale[k] * xt[i][k], -nmax, nmax - 1);
            lt[i][k] = lf + nmaxf;
            let w = wt[i][k];
            sumlx[k] += w * xt[i][k] * lf;
            suml2[k] += w * lf * lf;
        }
    }
    let mut scale = [0.0f32; L];
    let mut best = [0.0f32; L];
    for k in 0..L {
        scale[k] = if suml2[k] != 0.0 {
            sumlx[k] / suml2[k]
        } else {
            0.0
        };
        best[k] = scale[k] * sumlx[k];
    }
    let mut laux = [[0.0f32; L]; N];
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        let num = -(nmaxf + 0.1 * is as f32);
        for k in 0..L {
            iscale[k] = num / max[k];
            sumlx[k] = 0.0;
            suml2[k] = 0.0;
        }
        for i in 0..N {
            for k in 0..L {
                let lf = nearest_clamped(iscale[k] * xt[i][k], -nmax, nmax - 1);
                laux[i][k] = lf + nmaxf;
                let w = wt[i][k];
                sumlx[k] += w * xt[i][k] * lf;
                suml2[k] += w * lf * lf;
            }
        }
        let mut accept = [false; L];
        for k in 0..L {
            accept[k] = suml2[k] > 0.0 && sumlx[k] * sumlx[k] > best[k] * suml2[k];
            if accept[k] {
                scale[k] = sumlx[k] / suml2[k];
                best[k] = scale[k] * sumlx[k];
            }
        }
        if accept.iter().any(|&b| b) {
            for i in 0..N {
                for k in 0..L {
                    lt[i][k] = if accept[k] { laux[i][k] } else { lt[i][k] };
                }
            }
        }
    }
    for k in 0..L {
        if amax[k] < GROUP_MAX_EPS {
            scale[k] = 0.0;
            for row in lt.iter_mut() {
                row[k] = 0.0;
            }
        }
    }
    scale
}

/// Lane-parallel [`make_q3_quants`] with `do_rmse == true` (weights x²). Levels (0..2·nmax) go
/// to `lt`. A lane stops iterating once a pass changes nothing, as the scalar loop breaks.
#[inline(always)]
pub(crate) fn q3_lanes_portable<const L: usize, const N: usize>(
    nmax: i32,
    xt: &[[f32; L]; N],
    lt: &mut [[f32; L]; N],
) -> [f32; L] {
    let mut max = [0.0f32; L];
    let mut amax = [0.0f32; L];
    for i in 0..N {
        for k in 0..L {
            let v = xt[i][k];
            let ax = v.abs();
            let gt = ax > amax[k];
            amax[k] = if gt { ax } else { amax[k] };
            max[k] = if gt { v } else { max[k] };
        }
    }
    let mut iscale = [0.0f32; L];
    for k in 0..L {
        iscale[k] = -(nmax as f32) / max[k];
    }
    let mut sumlx = [0.0f32; L];
    let mut suml2 = [0.0f32; L];
    for i in 0..N {
        for k in 0..L {
            let x = xt[i][k];
            let lf = nearest_clamped(iscale[k] * x, -nmax, nmax - 1);
            lt[i][k] = lf;
            let w = x * x;
            sumlx[k] += w * x * lf;
            suml2[k] += w * lf * lf;
        }
    }
    let mut active = [true; L];
    for _itry in 0..5 {
        let mut changed = [false; L];
        for i in 0..N {
            for k in 0..L {
                let x = xt[i][k];
                let w = x * x;
                let li = lt[i][k];
                let slx = sumlx[k] - w * x * li;
                let sl2 = suml2[k] - w * li * li;
                let new_l = nearest_clamped(x * sl2 / slx, -nmax, nmax - 1);
                let slx2 = slx + w * x * new_l;
                let sl22 = sl2 + w * new_l * new_l;
                let take = active[k]
                    && slx > 0.0
                    && new_l != li
                    && sl22 > 0.0
                    && slx2 * slx2 * suml2[k] > sumlx[k] * sumlx[k] * sl22;
                lt[i][k] = if take { new_l } else { li };
                sumlx[k] = if take { slx2 } else { sumlx[k] };
                suml2[k] = if take { sl22 } else { suml2[k] };
                changed[k] |= take;
            }
        }
        for k in 0..L {
            active[k] &= changed[k];
        }
        if !active.iter().any(|&b| b) {
            break;
        }
    }
    let mut scale = [0.0f32; L];
    let nmaxf = nmax as f32;
    for k in 0..L {
        if amax[k] < GROUP_MAX_EPS {
            scale[k] = 0.0;
            for row in lt.iter_mut() {
                row[k] = 0.0;
            }
        } else {
            for row in lt.iter_mut() {
                row[k] += nmaxf;
            }
            scale[k] = if suml2[k] > 0.0 {
                sumlx[k] / suml2[k]
            } else {
                0.0
            };
        }
    }
    scale
}

/// [`qkx_lanes_portable`], with explicit AVX2 (8 or 16 lanes) when the CPU has it (LLVM
/// vectorizes the level computation of the portable form but keeps the per-lane sums scalar).
#[inline(always)]
pub(crate) fn qkx_lanes<const L: usize, const N: usize>(
    nmax: i32,
    xt: &[[f32; L]; N],
    wt: &[[f32; L]; N],
    le_degenerate: bool,
    lt: &mut [[f32; L]; N],
    the_min: &mut [f32; L],
    p: MinSearch,
) -> [f32; L] {
    #[cfg(target_arch = "x86_64")]
    if (L == 8 || L == 16) && std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { avx2::qkx(nmax, xt, wt, le_degenerate, lt, the_min, p) };
    }
    qkx_lanes_portable(nmax, xt, wt, le_degenerate, lt, the_min, p)
}

/// [`qx_lanes_portable`], with explicit AVX2 (8 or 16 lanes) when available.
#[inline(always)]
pub(crate) fn qx_lanes<const L: usize, const N: usize>(
    nmax: i32,
    xt: &[[f32; L]; N],
    wt: &[[f32; L]; N],
    lt: &mut [[f32; L]; N],
) -> [f32; L] {
    #[cfg(target_arch = "x86_64")]
    if (L == 8 || L == 16) && std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { avx2::qx(nmax, xt, wt, lt) };
    }
    qx_lanes_portable(nmax, xt, wt, lt)
}

/// [`q3_lanes_portable`], with explicit AVX2 (8 or 16 lanes) when available.
#[inline(always)]
pub(crate) fn q3_lanes<const L: usize, const N: usize>(
    nmax: i32,
    xt: &[[f32; L]; N],
    lt: &mut [[f32; L]; N],
) -> [f32; L] {
    #[cfg(target_arch = "x86_64")]
    if (L == 8 || L == 16) && std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { avx2::q3(nmax, xt, lt) };
    }
    q3_lanes_portable(nmax, xt, lt)
}

/// Explicit AVX2 forms of the lane kernels: the same per-lane operations as the portable
/// versions, on 8 lanes in one `__m256`. Comparisons use the ordered predicates, which are
/// false on NaN exactly like Rust's `<`, `>`, `<=`, `==`; `blendv(b, a, m)` is `if m {a} else {b}`.
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use super::{MinSearch, GROUP_MAX_EPS};
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn abs(v: __m256) -> __m256 {
        _mm256_andnot_ps(_mm256_set1_ps(-0.0), v)
    }

    /// `nearest_int(f)` clamped to `lo..=hi`, as f32.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) unsafe fn nearest_clamped(f: __m256, lo: __m256i, hi: __m256i) -> __m256 {
        let v = _mm256_castps_si256(_mm256_add_ps(f, _mm256_set1_ps(12582912.0)));
        let i = _mm256_sub_epi32(
            _mm256_and_si256(v, _mm256_set1_epi32(0x007f_ffff)),
            _mm256_set1_epi32(0x0040_0000),
        );
        _mm256_cvtepi32_ps(_mm256_min_epi32(_mm256_max_epi32(i, lo), hi))
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn any(m: __m256) -> bool {
        _mm256_movemask_ps(m) != 0
    }

    /// Loads lanes `8m..8m+8` of a lane row.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn ldm<const L: usize>(a: &[f32; L], m: usize) -> __m256 {
        _mm256_loadu_ps(a[8 * m..8 * m + 8].as_ptr())
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn stm<const L: usize>(a: &mut [f32; L], m: usize, v: __m256) {
        _mm256_storeu_ps(a[8 * m..8 * m + 8].as_mut_ptr(), v)
    }

    /// Up to this many `__m256` per lane row (L = 8 or 16). With 16 lanes the two halves are
    /// independent dependency chains, which hides the latency of the sequential sums.
    const MV: usize = 2;

    /// AVX2 [`super::qkx_lanes_portable`] for L = 8 or 16 lanes.
    #[target_feature(enable = "avx2")]
    pub(crate) unsafe fn qkx<const L: usize, const N: usize>(
        nmax: i32,
        xt: &[[f32; L]; N],
        wt: &[[f32; L]; N],
        le_degenerate: bool,
        lt: &mut [[f32; L]; N],
        the_min: &mut [f32; L],
        p: MinSearch,
    ) -> [f32; L] {
        let mv = L / 8;
        assert!(L % 8 == 0 && mv <= MV);
        let nmaxf = _mm256_set1_ps(nmax as f32);
        let lo = _mm256_set1_epi32(0);
        let hi = _mm256_set1_epi32(nmax);
        let zero = _mm256_setzero_ps();
        let mut min = [zero; MV];
        let mut max = [zero; MV];
        let mut sum_w = [zero; MV];
        let mut sum_x = [zero; MV];
        for m in 0..mv {
            min[m] = ldm(&xt[0], m);
            max[m] = min[m];
            sum_w[m] = ldm(&wt[0], m);
            sum_x[m] = _mm256_mul_ps(sum_w[m], min[m]);
        }
        for i in 1..N {
            for m in 0..mv {
                let v = ldm(&xt[i], m);
                let w = ldm(&wt[i], m);
                min[m] = _mm256_blendv_ps(min[m], v, _mm256_cmp_ps::<_CMP_LT_OQ>(v, min[m]));
                max[m] = _mm256_blendv_ps(max[m], v, _mm256_cmp_ps::<_CMP_GT_OQ>(v, max[m]));
                sum_w[m] = _mm256_add_ps(sum_w[m], w);
                sum_x[m] = _mm256_add_ps(sum_x[m], _mm256_mul_ps(w, v));
            }
        }
        let mut degenerate = [zero; MV];
        let mut scale = [zero; MV];
        let mut best_error = [zero; MV];
        for m in 0..mv {
            min[m] = _mm256_blendv_ps(min[m], zero, _mm256_cmp_ps::<_CMP_GT_OQ>(min[m], zero));
            degenerate[m] = if le_degenerate {
                _mm256_cmp_ps::<_CMP_LE_OQ>(max[m], min[m])
            } else {
                _mm256_cmp_ps::<_CMP_EQ_OQ>(max[m], min[m])
            };
        }
        let degenerate_min = min;
        for m in 0..mv {
            let iscale = _mm256_div_ps(nmaxf, _mm256_sub_ps(max[m], min[m]));
            scale[m] = _mm256_div_ps(_mm256_set1_ps(1.0), iscale);
            for i in 0..N {
                let x = ldm(&xt[i], m);
                let lf = nearest_clamped(_mm256_mul_ps(iscale, _mm256_sub_ps(x, min[m])), lo, hi);
                stm(&mut lt[i], m, lf);
                let mut diff = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(scale[m], lf), min[m]), x);
                diff = if p.use_mad {
                    abs(diff)
                } else {
                    _mm256_mul_ps(diff, diff)
                };
                best_error[m] = _mm256_add_ps(best_error[m], _mm256_mul_ps(ldm(&wt[i], m), diff));
            }
        }
        let mut laux = [[zero; MV]; N];
        for is in 0..=p.nstep {
            let num = _mm256_set1_ps(p.rmin + p.rdelta * is as f32 + nmax as f32);
            let mut iscale = [zero; MV];
            let mut sum_l = [zero; MV];
            let mut sum_l2 = [zero; MV];
            let mut sum_xl = [zero; MV];
            for m in 0..mv {
                iscale[m] = _mm256_div_ps(num, _mm256_sub_ps(max[m], min[m]));
            }
            for i in 0..N {
                for m in 0..mv {
                    let x = ldm(&xt[i], m);
                    let w = ldm(&wt[i], m);
                    let lf =
                        nearest_clamped(_mm256_mul_ps(iscale[m], _mm256_sub_ps(x, min[m])), lo, hi);
                    laux[i][m] = lf;
                    let wl = _mm256_mul_ps(w, lf);
                    sum_l[m] = _mm256_add_ps(sum_l[m], wl);
                    sum_l2[m] = _mm256_add_ps(sum_l2[m], _mm256_mul_ps(wl, lf));
                    sum_xl[m] = _mm256_add_ps(sum_xl[m], _mm256_mul_ps(wl, x));
                }
            }
            let mut d_pos = [zero; MV];
            let mut this_min = [zero; MV];
            let mut this_scale = [zero; MV];
            let mut any_pos = false;
            for m in 0..mv {
                let d = _mm256_sub_ps(
                    _mm256_mul_ps(sum_w[m], sum_l2[m]),
                    _mm256_mul_ps(sum_l[m], sum_l[m]),
                );
                d_pos[m] = _mm256_cmp_ps::<_CMP_GT_OQ>(d, zero);
                any_pos |= any(d_pos[m]);
                let ts = _mm256_div_ps(
                    _mm256_sub_ps(
                        _mm256_mul_ps(sum_w[m], sum_xl[m]),
                        _mm256_mul_ps(sum_x[m], sum_l[m]),
                    ),
                    d,
                );
                let tm = _mm256_div_ps(
                    _mm256_sub_ps(
                        _mm256_mul_ps(sum_l2[m], sum_x[m]),
                        _mm256_mul_ps(sum_l[m], sum_xl[m]),
                    ),
                    d,
                );
                let clip = _mm256_cmp_ps::<_CMP_GT_OQ>(tm, zero);
                this_min[m] = _mm256_blendv_ps(tm, zero, clip);
                this_scale[m] = _mm256_blendv_ps(ts, _mm256_div_ps(sum_xl[m], sum_l2[m]), clip);
            }
            if !any_pos {
                continue;
            }
            let mut cur_error = [zero; MV];
            for i in 0..N {
                for m in 0..mv {
                    let x = ldm(&xt[i], m);
                    let mut diff = _mm256_sub_ps(
                        _mm256_add_ps(_mm256_mul_ps(this_scale[m], laux[i][m]), this_min[m]),
                        x,
                    );
                    diff = if p.use_mad {
                        abs(diff)
                    } else {
                        _mm256_mul_ps(diff, diff)
                    };
                    cur_error[m] = _mm256_add_ps(cur_error[m], _mm256_mul_ps(ldm(&wt[i], m), diff));
                }
            }
            for m in 0..mv {
                let accept = _mm256_and_ps(
                    d_pos[m],
                    _mm256_cmp_ps::<_CMP_LT_OQ>(cur_error[m], best_error[m]),
                );
                if any(accept) {
                    best_error[m] = _mm256_blendv_ps(best_error[m], cur_error[m], accept);
                    scale[m] = _mm256_blendv_ps(scale[m], this_scale[m], accept);
                    min[m] = _mm256_blendv_ps(min[m], this_min[m], accept);
                    for i in 0..N {
                        let old = ldm(&lt[i], m);
                        stm(&mut lt[i], m, _mm256_blendv_ps(old, laux[i][m], accept));
                    }
                }
            }
        }
        // Degenerate lanes: levels 0, scale 0, the clamped min.
        let mut out = [0.0f32; L];
        for m in 0..mv {
            let min_out = _mm256_blendv_ps(min[m], degenerate_min[m], degenerate[m]);
            stm(the_min, m, _mm256_xor_ps(min_out, _mm256_set1_ps(-0.0)));
            stm(&mut out, m, _mm256_blendv_ps(scale[m], zero, degenerate[m]));
            if any(degenerate[m]) {
                for i in 0..N {
                    let old = ldm(&lt[i], m);
                    stm(&mut lt[i], m, _mm256_blendv_ps(old, zero, degenerate[m]));
                }
            }
        }
        out
    }

    /// AVX2 [`super::q3_lanes_portable`] for L = 8 or 16 lanes.
    #[target_feature(enable = "avx2")]
    pub(crate) unsafe fn q3<const L: usize, const N: usize>(
        nmax: i32,
        xt: &[[f32; L]; N],
        lt: &mut [[f32; L]; N],
    ) -> [f32; L] {
        let mv = L / 8;
        assert!(L % 8 == 0 && mv <= MV);
        let nmaxf = nmax as f32;
        let lo = _mm256_set1_epi32(-nmax);
        let hi = _mm256_set1_epi32(nmax - 1);
        let zero = _mm256_setzero_ps();
        let mut max = [zero; MV];
        let mut amax = [zero; MV];
        for i in 0..N {
            for m in 0..mv {
                let v = ldm(&xt[i], m);
                let ax = abs(v);
                let gt = _mm256_cmp_ps::<_CMP_GT_OQ>(ax, amax[m]);
                amax[m] = _mm256_blendv_ps(amax[m], ax, gt);
                max[m] = _mm256_blendv_ps(max[m], v, gt);
            }
        }
        let mut iscale = [zero; MV];
        for m in 0..mv {
            iscale[m] = _mm256_div_ps(_mm256_set1_ps(-nmaxf), max[m]);
        }
        let mut sumlx = [zero; MV];
        let mut suml2 = [zero; MV];
        for i in 0..N {
            for m in 0..mv {
                let x = ldm(&xt[i], m);
                let lf = nearest_clamped(_mm256_mul_ps(iscale[m], x), lo, hi);
                stm(&mut lt[i], m, lf);
                let w = _mm256_mul_ps(x, x);
                sumlx[m] = _mm256_add_ps(sumlx[m], _mm256_mul_ps(_mm256_mul_ps(w, x), lf));
                suml2[m] = _mm256_add_ps(suml2[m], _mm256_mul_ps(_mm256_mul_ps(w, lf), lf));
            }
        }
        let all = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
        let mut active = [all; MV];
        for _itry in 0..5 {
            let mut changed = [zero; MV];
            for i in 0..N {
                for m in 0..mv {
                    let x = ldm(&xt[i], m);
                    let w = _mm256_mul_ps(x, x);
                    let wx = _mm256_mul_ps(w, x);
                    let li = ldm(&lt[i], m);
                    let slx = _mm256_sub_ps(sumlx[m], _mm256_mul_ps(wx, li));
                    let sl2 = _mm256_sub_ps(suml2[m], _mm256_mul_ps(_mm256_mul_ps(w, li), li));
                    let new_l = nearest_clamped(_mm256_div_ps(_mm256_mul_ps(x, sl2), slx), lo, hi);
                    let slx2 = _mm256_add_ps(slx, _mm256_mul_ps(wx, new_l));
                    let sl22 = _mm256_add_ps(sl2, _mm256_mul_ps(_mm256_mul_ps(w, new_l), new_l));
                    let better = _mm256_cmp_ps::<_CMP_GT_OQ>(
                        _mm256_mul_ps(_mm256_mul_ps(slx2, slx2), suml2[m]),
                        _mm256_mul_ps(_mm256_mul_ps(sumlx[m], sumlx[m]), sl22),
                    );
                    let take = _mm256_and_ps(
                        _mm256_and_ps(active[m], _mm256_cmp_ps::<_CMP_GT_OQ>(slx, zero)),
                        _mm256_and_ps(
                            _mm256_and_ps(
                                _mm256_cmp_ps::<_CMP_NEQ_UQ>(new_l, li),
                                _mm256_cmp_ps::<_CMP_GT_OQ>(sl22, zero),
                            ),
                            better,
                        ),
                    );
                    stm(&mut lt[i], m, _mm256_blendv_ps(li, new_l, take));
                    sumlx[m] = _mm256_blendv_ps(sumlx[m], slx2, take);
                    suml2[m] = _mm256_blendv_ps(suml2[m], sl22, take);
                    changed[m] = _mm256_or_ps(changed[m], take);
                }
            }
            let mut any_active = false;
            for m in 0..mv {
                active[m] = _mm256_and_ps(active[m], changed[m]);
                any_active |= any(active[m]);
            }
            if !any_active {
                break;
            }
        }
        let vnmax = _mm256_set1_ps(nmaxf);
        let mut out = [0.0f32; L];
        for m in 0..mv {
            let zero_lane = _mm256_cmp_ps::<_CMP_LT_OQ>(amax[m], _mm256_set1_ps(GROUP_MAX_EPS));
            let pos = _mm256_cmp_ps::<_CMP_GT_OQ>(suml2[m], zero);
            let scale = _mm256_blendv_ps(zero, _mm256_div_ps(sumlx[m], suml2[m]), pos);
            stm(&mut out, m, _mm256_blendv_ps(scale, zero, zero_lane));
            for i in 0..N {
                let l = _mm256_add_ps(ldm(&lt[i], m), vnmax);
                stm(&mut lt[i], m, _mm256_blendv_ps(l, zero, zero_lane));
            }
        }
        out
    }

    /// AVX2 [`super::qx_lanes_portable`] for L = 8 or 16 lanes.
    #[target_feature(enable = "avx2")]
    pub(crate) unsafe fn qx<const L: usize, const N: usize>(
        nmax: i32,
        xt: &[[f32; L]; N],
        wt: &[[f32; L]; N],
        lt: &mut [[f32; L]; N],
    ) -> [f32; L] {
        let mv = L / 8;
        assert!(L % 8 == 0 && mv <= MV);
        let nmaxf = nmax as f32;
        let vnmax = _mm256_set1_ps(nmaxf);
        let lo = _mm256_set1_epi32(-nmax);
        let hi = _mm256_set1_epi32(nmax - 1);
        let zero = _mm256_setzero_ps();
        let mut max = [zero; MV];
        let mut amax = [zero; MV];
        for i in 0..N {
            for m in 0..mv {
                let v = ldm(&xt[i], m);
                let ax = abs(v);
                let gt = _mm256_cmp_ps::<_CMP_GT_OQ>(ax, amax[m]);
                amax[m] = _mm256_blendv_ps(amax[m], ax, gt);
                max[m] = _mm256_blendv_ps(max[m], v, gt);
            }
        }
        let mut sumlx = [zero; MV];
        let mut suml2 = [zero; MV];
        let mut iscale = [zero; MV];
        for m in 0..mv {
            iscale[m] = _mm256_div_ps(_mm256_set1_ps(-nmaxf), max[m]);
        }
        for i in 0..N {
            for m in 0..mv {
                let x = ldm(&xt[i], m);
                let w = ldm(&wt[i], m);
                let lf = nearest_clamped(_mm256_mul_ps(iscale[m], x), lo, hi);
                stm(&mut lt[i], m, _mm256_add_ps(lf, vnmax));
                sumlx[m] = _mm256_add_ps(sumlx[m], _mm256_mul_ps(_mm256_mul_ps(w, x), lf));
                suml2[m] = _mm256_add_ps(suml2[m], _mm256_mul_ps(_mm256_mul_ps(w, lf), lf));
            }
        }
        let mut scale = [zero; MV];
        let mut best = [zero; MV];
        for m in 0..mv {
            // suml2 != 0 (true on NaN, like Rust's `!=`).
            let nz = _mm256_cmp_ps::<_CMP_NEQ_UQ>(suml2[m], zero);
            scale[m] = _mm256_blendv_ps(zero, _mm256_div_ps(sumlx[m], suml2[m]), nz);
            best[m] = _mm256_mul_ps(scale[m], sumlx[m]);
        }
        let mut laux = [[zero; MV]; N];
        for is in -9..=9 {
            if is == 0 {
                continue;
            }
            let num = _mm256_set1_ps(-(nmaxf + 0.1 * is as f32));
            for m in 0..mv {
                iscale[m] = _mm256_div_ps(num, max[m]);
                sumlx[m] = zero;
                suml2[m] = zero;
            }
            for i in 0..N {
                for m in 0..mv {
                    let x = ldm(&xt[i], m);
                    let w = ldm(&wt[i], m);
                    let lf = nearest_clamped(_mm256_mul_ps(iscale[m], x), lo, hi);
                    laux[i][m] = lf;
                    sumlx[m] = _mm256_add_ps(sumlx[m], _mm256_mul_ps(_mm256_mul_ps(w, x), lf));
                    suml2[m] = _mm256_add_ps(suml2[m], _mm256_mul_ps(_mm256_mul_ps(w, lf), lf));
                }
            }
            for m in 0..mv {
                let accept = _mm256_and_ps(
                    _mm256_cmp_ps::<_CMP_GT_OQ>(suml2[m], zero),
                    _mm256_cmp_ps::<_CMP_GT_OQ>(
                        _mm256_mul_ps(sumlx[m], sumlx[m]),
                        _mm256_mul_ps(best[m], suml2[m]),
                    ),
                );
                if any(accept) {
                    scale[m] =
                        _mm256_blendv_ps(scale[m], _mm256_div_ps(sumlx[m], suml2[m]), accept);
                    best[m] = _mm256_blendv_ps(best[m], _mm256_mul_ps(scale[m], sumlx[m]), accept);
                    for i in 0..N {
                        let l = _mm256_add_ps(laux[i][m], vnmax);
                        let old = ldm(&lt[i], m);
                        stm(&mut lt[i], m, _mm256_blendv_ps(old, l, accept));
                    }
                }
            }
        }
        let mut out = [0.0f32; L];
        for m in 0..mv {
            let zero_lane = _mm256_cmp_ps::<_CMP_LT_OQ>(amax[m], _mm256_set1_ps(GROUP_MAX_EPS));
            stm(&mut out, m, _mm256_blendv_ps(scale[m], zero, zero_lane));
            if any(zero_lane) {
                for i in 0..N {
                    let old = ldm(&lt[i], m);
                    stm(&mut lt[i], m, _mm256_blendv_ps(old, zero, zero_lane));
                }
            }
        }
        out
    }
}

/// Unpacks 6-bit scale `j` and min `j` of a Q4_K/Q5_K block (`get_scale_min_k4`).
#[inline(always)]
pub(crate) fn get_scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Packs 6-bit scales/mins into the 12-byte Q4_K/Q5_K layout (inverse of `get_scale_min_k4`).
#[inline(always)]
pub(crate) fn pack_scale_min_k4(j: usize, ls: u8, lm: u8, scales: &mut [u8]) {
    if j < 4 {
        scales[j] = ls;
        scales[j + 4] = lm;
    } else {
        scales[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
        scales[j - 4] |= (ls >> 4) << 6;
        scales[j] |= (lm >> 4) << 6;
    }
}

/// Index of the table entry nearest to `x` in a sorted table (`best_index_int8`); an exact
/// midpoint goes to the upper entry.
#[inline(always)]
pub(crate) fn best_index_int8(val: &[i8; 16], x: f32) -> usize {
    if x <= val[0] as f32 {
        return 0;
    }
    if x >= val[15] as f32 {
        return 15;
    }
    let mut ml = 0usize;
    let mut mu = 15usize;
    while mu - ml > 1 {
        let mav = (ml + mu) / 2;
        if x < val[mav] as f32 {
            mu = mav;
        } else {
            ml = mav;
        }
    }
    if x - (val[mu - 1] as f32) < (val[mu] as f32) - x {
        mu - 1
    } else {
        mu
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_is_ties_to_even_in_range() {
        for (f, want) in [
            (0.5f32, 0),
            (1.5, 2),
            (2.5, 2),
            (-0.5, 0),
            (-1.5, -2),
            (3.49, 3),
            (-7.51, -8),
        ] {
            assert_eq!(nearest_int(f), want, "{f}");
        }
        for i in -100_000..100_000 {
            let f = i as f32 * 0.37;
            assert_eq!(nearest_int(f), f.round_ties_even() as i32);
        }
    }

    #[test]
    fn best_index_ties_go_up() {
        let v: [i8; 16] = [
            -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
        ];
        assert_eq!(best_index_int8(&v, -200.0), 0);
        assert_eq!(best_index_int8(&v, 200.0), 15);
        assert_eq!(best_index_int8(&v, 7.0), 9); // midpoint of 1 and 13
        assert_eq!(best_index_int8(&v, 6.9), 8);
        assert_eq!(best_index_int8(&v, 0.0), 8);
    }

    #[test]
    fn scale_min_packing_round_trips() {
        let mut s = [0u8; 12];
        let vals: [(u8, u8); 8] = [
            (1, 63),
            (2, 62),
            (33, 3),
            (63, 0),
            (17, 48),
            (40, 5),
            (0, 0),
            (63, 63),
        ];
        for (j, &(a, b)) in vals.iter().enumerate() {
            pack_scale_min_k4(j, a, b, &mut s);
        }
        for (j, &(a, b)) in vals.iter().enumerate() {
            assert_eq!(get_scale_min_k4(j, &s), (a, b));
        }
    }

    /// Deterministic test groups: random normal-ish values at several scales plus adversarial
    /// groups (all zero, constant, one outlier, exact halves, subnormal, huge, mixed signs).
    fn groups(n: usize, count: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut s = seed;
        let mut rnd = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        let mut out = Vec::new();
        for g in 0..count {
            let scale = [1e-3f32, 0.02, 1.0, 300.0][g % 4];
            let v: Vec<f32> = (0..n)
                .map(|i| match g % 11 {
                    0 => 0.0,
                    1 => 0.25,
                    2 if i == 3 => 50.0,
                    3 => (i as f32 - 7.5) * 0.5,
                    4 => 1e-39 * (i as f32 + 1.0),
                    5 => 60000.0 * rnd(),
                    6 => rnd().abs() * scale,
                    7 => -rnd().abs() * scale,
                    _ => rnd() * scale,
                })
                .collect();
            out.push(v);
        }
        out
    }

    fn transpose<const L: usize, const N: usize>(g: &[Vec<f32>]) -> [[f32; L]; N] {
        let mut t = [[0.0f32; L]; N];
        for k in 0..L {
            for i in 0..N {
                t[i][k] = g[k][i];
            }
        }
        t
    }

    fn check_qkx<const L: usize, const N: usize>(nmax: i32, p: MinSearch, qkx3: bool, seed: u64) {
        let all = groups(N, 8 * L, seed);
        for chunk in all.chunks(L) {
            let weights: Vec<Vec<f32>> = chunk
                .iter()
                .map(|g| g.iter().map(|v| v.abs() + 0.01).collect())
                .collect();
            let xt = transpose::<L, N>(chunk);
            let wt = transpose::<L, N>(&weights);
            let mut lt = [[0.0f32; L]; N];
            let mut mins = [0.0f32; L];
            let scales = qkx_lanes(nmax, &xt, &wt, qkx3, &mut lt, &mut mins, p);
            let mut lt_p = [[0.0f32; L]; N];
            let mut mins_p = [0.0f32; L];
            let scales_p = qkx_lanes_portable(nmax, &xt, &wt, qkx3, &mut lt_p, &mut mins_p, p);
            assert_eq!(scales.map(f32::to_bits), scales_p.map(f32::to_bits));
            assert_eq!(mins.map(f32::to_bits), mins_p.map(f32::to_bits));
            assert_eq!(lt, lt_p);
            for k in 0..L {
                let mut l = vec![0u8; N];
                let mut laux = vec![0u8; N];
                let mut m = 0.0f32;
                let s = if qkx3 {
                    make_qkx3_quants(
                        nmax,
                        &chunk[k],
                        Some(&weights[k]),
                        &mut l,
                        &mut m,
                        &mut laux,
                        p,
                    )
                } else {
                    make_qkx2_quants(nmax, &chunk[k], &weights[k], &mut l, &mut m, &mut laux, p)
                };
                assert_eq!(
                    s.to_bits(),
                    scales[k].to_bits(),
                    "scale, group {:?}",
                    chunk[k]
                );
                assert_eq!(m.to_bits(), mins[k].to_bits(), "min, group {:?}", chunk[k]);
                for i in 0..N {
                    assert_eq!(l[i] as f32, lt[i][k], "level {i}, group {:?}", chunk[k]);
                }
            }
        }
    }

    #[test]
    fn qkx_lanes_match_scalar() {
        let q4 = MinSearch {
            rmin: -1.0,
            rdelta: 0.1,
            nstep: 20,
            use_mad: false,
        };
        let q2 = MinSearch {
            rmin: -0.5,
            rdelta: 0.1,
            nstep: 15,
            use_mad: true,
        };
        let imp = MinSearch {
            rmin: -0.9,
            rdelta: 0.05,
            nstep: 36,
            use_mad: false,
        };
        check_qkx::<8, 32>(15, q4, false, 1);
        check_qkx::<8, 32>(31, q4, false, 2);
        check_qkx::<16, 16>(3, q2, false, 3);
        check_qkx::<8, 32>(15, imp, true, 4);
        check_qkx::<16, 16>(3, imp, true, 5);
    }

    #[test]
    fn qx_and_q3_lanes_match_scalar() {
        for (nmax, seed) in [(32, 7u64), (4, 8)] {
            let all = groups(16, 64, seed);
            for chunk in all.chunks(16) {
                let xt = transpose::<16, 16>(chunk);
                let mut wt = [[0.0f32; 16]; 16];
                for i in 0..16 {
                    for k in 0..16 {
                        wt[i][k] = xt[i][k] * xt[i][k];
                    }
                }
                let mut lt = [[0.0f32; 16]; 16];
                let scales = qx_lanes(nmax, &xt, &wt, &mut lt);
                let mut lt_p = [[0.0f32; 16]; 16];
                let scales_p = qx_lanes_portable(nmax, &xt, &wt, &mut lt_p);
                assert_eq!(scales.map(f32::to_bits), scales_p.map(f32::to_bits));
                assert_eq!(lt, lt_p);
                let mut lt3 = [[0.0f32; 16]; 16];
                let scales3 = q3_lanes(nmax, &xt, &mut lt3);
                let mut lt3_p = [[0.0f32; 16]; 16];
                let scales3_p = q3_lanes_portable(nmax, &xt, &mut lt3_p);
                assert_eq!(scales3.map(f32::to_bits), scales3_p.map(f32::to_bits));
                assert_eq!(lt3, lt3_p);
                for k in 0..16 {
                    let mut l = [0i8; 16];
                    let s = make_qx_quants(nmax, &chunk[k], &mut l, 1, None);
                    assert_eq!(s.to_bits(), scales[k].to_bits(), "qx {:?}", chunk[k]);
                    for i in 0..16 {
                        assert_eq!(l[i] as f32, lt[i][k], "qx level {i}: {:?}", chunk[k]);
                    }
                    let s3 = make_q3_quants(nmax, &chunk[k], &mut l, true);
                    assert_eq!(s3.to_bits(), scales3[k].to_bits(), "q3 {:?}", chunk[k]);
                    for i in 0..16 {
                        assert_eq!(l[i] as f32, lt3[i][k], "q3 level {i}: {:?}", chunk[k]);
                    }
                }
            }
        }
    }
}
