//! Rotary position embeddings, computed the way ggml's CPU `rope_f32` computes them.
//!
//! ggml derives the angle of pair `i` at position `p` by repeated multiplication
//! (`theta *= base^(-2/n_rot)`, starting from `p`), divides it by the optional per-pair frequency
//! factor (`rope_freqs` for Llama-3, `rope_factors_long/short` for Phi-3), then applies linear
//! scaling or YaRN, and multiplies cos and sin by the attention factor. We follow the same order
//! in f32 so a GGUF evaluates here as it does in llama.cpp.

use crate::hparams::RopeMode;

/// One layer's rotary settings.
#[derive(Clone, Debug, PartialEq)]
pub struct RopeParams {
    pub mode: RopeMode,
    pub n_rot: usize,
    pub freq_base: f32,
    pub freq_scale: f32,
    /// Divisors of each pair's angle (length n_rot/2).
    pub factors: Option<Vec<f32>>,
    /// YaRN interpolation strength; 0 disables YaRN.
    pub ext_factor: f32,
    /// Multiplies cos and sin.
    pub attn_factor: f32,
    pub n_ctx_orig: usize,
    pub beta_fast: f32,
    pub beta_slow: f32,
}

/// cos/sin for every position and pair, so the attention loop only multiplies.
#[derive(Clone, Debug)]
pub struct RopeCache {
    mode: RopeMode,
    n_rot: usize,
    /// [n_pos][n_rot/2] of (cos, sin).
    table: Vec<(f32, f32)>,
}

impl RopeParams {
    pub fn cache(&self, n_pos: usize) -> RopeCache {
        let half = self.n_rot / 2;
        let mut table = Vec::with_capacity(n_pos * half);
        if self.mode == RopeMode::None || half == 0 {
            return RopeCache {
                mode: RopeMode::None,
                n_rot: 0,
                table,
            };
        }
        let theta_scale = self.freq_base.powf(-2.0 / self.n_rot as f32);
        let corr = yarn_corr_dims(
            self.n_rot,
            self.n_ctx_orig,
            self.freq_base,
            self.beta_fast,
            self.beta_slow,
        );
        for p in 0..n_pos {
            let mut theta = p as f32;
            for i in 0..half {
                let ff = self.factors.as_ref().map_or(1.0, |f| f[i]);
                table.push(self.yarn(theta / ff, corr, 2 * i));
                theta *= theta_scale;
            }
        }
        RopeCache {
            mode: self.mode,
            n_rot: self.n_rot,
            table,
        }
    }

    /// ggml's `rope_yarn`: linear interpolation, blended with extrapolation by YaRN's ramp.
    fn yarn(&self, theta_extrap: f32, corr: [f32; 2], i0: usize) -> (f32, f32) {
        let theta_interp = self.freq_scale * theta_extrap;
        let mut theta = theta_interp;
        let mut mscale = self.attn_factor;
        if self.ext_factor != 0.0 {
            let y = ((i0 / 2) as f32 - corr[0]) / (corr[1] - corr[0]).max(0.001);
            let ramp_mix = (1.0 - y.clamp(0.0, 1.0)) * self.ext_factor;
            theta = theta_interp * (1.0 - ramp_mix) + theta_extrap * ramp_mix;
            mscale *= 1.0 + 0.1 * (1.0 / self.freq_scale).ln();
        }
        (theta.cos() * mscale, theta.sin() * mscale)
    }
}

fn yarn_corr_dims(n_dims: usize, n_ctx_orig: usize, base: f32, fast: f32, slow: f32) -> [f32; 2] {
    let dim = |n_rot: f32| {
        n_dims as f32 * (n_ctx_orig as f32 / (n_rot * 2.0 * std::f32::consts::PI)).ln()
            / (2.0 * base.ln())
    };
    let start = dim(fast).floor();
    let end = dim(slow).ceil();
    [start.max(0.0), end.min(n_dims as f32 - 1.0)]
}

impl RopeCache {
    /// Rotates the first `n_rot` values of one head vector in place for position `pos`.
    pub fn apply(&self, head: &mut [f32], pos: usize) {
        let half = self.n_rot / 2;
        if half == 0 {
            return;
        }
        let cs = &self.table[pos * half..(pos + 1) * half];
        match self.mode {
            RopeMode::Norm => {
                for (i, &(c, s)) in cs.iter().enumerate() {
                    let (x0, x1) = (head[2 * i], head[2 * i + 1]);
                    head[2 * i] = x0 * c - x1 * s;
                    head[2 * i + 1] = x0 * s + x1 * c;
                }
            }
            RopeMode::Neox => {
                for (i, &(c, s)) in cs.iter().enumerate() {
                    let (x0, x1) = (head[i], head[i + half]);
                    head[i] = x0 * c - x1 * s;
                    head[i + half] = x0 * s + x1 * c;
                }
            }
            RopeMode::None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(mode: RopeMode) -> RopeParams {
        RopeParams {
            mode,
            n_rot: 4,
            freq_base: 10000.0,
            freq_scale: 1.0,
            factors: None,
            ext_factor: 0.0,
            attn_factor: 1.0,
            n_ctx_orig: 4096,
            beta_fast: 32.0,
            beta_slow: 1.0,
        }
    }

    #[test]
    fn norm_and_neox_pair_different_elements() {
        // Position 1: pair 0 turns by 1 rad, pair 1 by 1/100 rad (base 10000, n_rot 4).
        let x = [1.0f32, 2.0, 3.0, 4.0, 5.0];
        let mut a = x;
        params(RopeMode::Norm).cache(2).apply(&mut a, 1);
        let (c, s) = (1f32.cos(), 1f32.sin());
        assert!((a[0] - (c - 2.0 * s)).abs() < 1e-6);
        assert!((a[1] - (s + 2.0 * c)).abs() < 1e-6);
        assert_eq!(a[4], 5.0, "beyond n_rot stays");
        let mut b = x;
        params(RopeMode::Neox).cache(2).apply(&mut b, 1);
        assert!((b[0] - (c - 3.0 * s)).abs() < 1e-6);
        assert!((b[2] - (s + 3.0 * c)).abs() < 1e-6);
        // Position 0 is the identity in both modes.
        let mut z = x;
        params(RopeMode::Neox).cache(1).apply(&mut z, 0);
        assert_eq!(z, x);
    }

    #[test]
    fn factors_divide_and_attn_factor_scales() {
        let mut p = params(RopeMode::Norm);
        p.factors = Some(vec![2.0, 1.0]);
        p.attn_factor = 1.5;
        let mut a = [1.0f32, 0.0, 0.0, 0.0];
        p.cache(2).apply(&mut a, 1);
        assert!((a[0] - 0.5f32.cos() * 1.5).abs() < 1e-6);
        assert!((a[1] - 0.5f32.sin() * 1.5).abs() < 1e-6);
    }
}
