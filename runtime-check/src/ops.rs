//! Element-wise and row-wise operations of the forward pass (f32 activations).

use rayon::prelude::*;

use crate::hparams::NormKind;

/// A norm's weight and optional bias, decoded to f32 (they are small and always F32 in GGUFs).
#[derive(Clone, Debug)]
pub struct Norm {
    pub kind: NormKind,
    pub eps: f32,
    pub weight: Vec<f32>,
    pub bias: Option<Vec<f32>>,
}

impl Norm {
    /// Normalizes every row of `x` (rows of `weight.len()` values) in place.
    pub fn apply(&self, x: &mut [f32]) {
        let n = self.weight.len();
        x.par_chunks_mut(n).for_each(|row| self.apply_row(row));
    }

    pub fn apply_row(&self, row: &mut [f32]) {
        let n = row.len() as f64;
        match self.kind {
            NormKind::Rms => {
                // Sums in f64 like ggml's `ggml_float` accumulators.
                let ss: f64 = row.iter().map(|&v| v as f64 * v as f64).sum();
                let scale = 1.0 / ((ss / n) as f32 + self.eps).sqrt();
                for v in row.iter_mut() {
                    *v *= scale;
                }
            }
            NormKind::Layer => {
                let mean = (row.iter().map(|&v| v as f64).sum::<f64>() / n) as f32;
                let mut ss = 0f64;
                for v in row.iter_mut() {
                    *v -= mean;
                    ss += *v as f64 * *v as f64;
                }
                let scale = 1.0 / ((ss / n) as f32 + self.eps).sqrt();
                for v in row.iter_mut() {
                    *v *= scale;
                }
            }
        }
        for (v, w) in row.iter_mut().zip(&self.weight) {
            *v *= w;
        }
        if let Some(b) = &self.bias {
            for (v, bb) in row.iter_mut().zip(b) {
                *v += bb;
            }
        }
    }
}

/// Adds a bias vector to every row.
pub fn add_bias(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    }
}

pub fn add_in_place(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// GELU, tanh approximation (HF `gelu_pytorch_tanh` / `gelu_new`, ggml `gelu`).
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + 0.044715 * x * x)).tanh())
}

/// `cap * tanh(x / cap)` in place.
pub fn softcap(x: &mut [f32], cap: f32) {
    for v in x.iter_mut() {
        *v = (*v / cap).tanh() * cap;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_and_layer_norm_values() {
        let rms = Norm {
            kind: NormKind::Rms,
            eps: 0.0,
            weight: vec![1.0, 2.0],
            bias: None,
        };
        let mut x = [3.0f32, 4.0];
        rms.apply_row(&mut x);
        let s = (12.5f32).sqrt();
        assert!((x[0] - 3.0 / s).abs() < 1e-6 && (x[1] - 8.0 / s).abs() < 1e-6);

        let ln = Norm {
            kind: NormKind::Layer,
            eps: 0.0,
            weight: vec![1.0, 1.0],
            bias: Some(vec![0.5, 0.5]),
        };
        let mut y = [1.0f32, 3.0];
        ln.apply_row(&mut y);
        assert!((y[0] + 0.5).abs() < 1e-6 && (y[1] - 1.5).abs() < 1e-6);
    }

    #[test]
    fn activations() {
        assert!((silu(1.0) - 0.731_058_6).abs() < 1e-6);
        // torch.nn.functional.gelu(torch.tensor(1.0), approximate="tanh") = 0.8411920
        assert!((gelu_tanh(1.0) - 0.841_192).abs() < 1e-6);
        let mut v = [100.0f32, -1.0];
        softcap(&mut v, 30.0);
        assert!((v[0] - 30.0 * (100f32 / 30.0).tanh()).abs() < 1e-5);
    }
}
