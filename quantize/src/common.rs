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
}
