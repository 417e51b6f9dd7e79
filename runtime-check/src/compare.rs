//! Agreement metrics between a reference logit set and a test logit set.
//!
//! NMSE and max |Δ| measure the raw numbers; top-1 agreement and the KL divergence of the
//! softmax distributions measure what a user would notice. KLD is reported as mean and as the
//! 99th / 99.9th percentile over positions (llama-perplexity's `--kl-divergence` summary),
//! because quantization damage concentrates on a few positions that the mean hides.

use crate::error::RuntimeError;
use crate::model::Logits;

/// Summary of one comparison (possibly over several prompts).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    pub n_positions: usize,
    /// Σ(ref − test)² / Σ ref² over all logits.
    pub nmse: f64,
    /// The worst per-position NMSE.
    pub max_position_nmse: f64,
    pub max_abs_diff: f64,
    /// Fraction of positions where both argmaxes agree.
    pub top1: f64,
    pub top1_matches: usize,
    /// KL(P_ref ‖ P_test), natural log, per position.
    pub mean_kld: f64,
    pub p99_kld: f64,
    pub p999_kld: f64,
    pub max_kld: f64,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "positions {} | NMSE {:.3e} (worst position {:.3e}) | max|Δ| {:.3e} | top-1 {}/{} ({:.2}%) | KLD mean {:.3e} p99 {:.3e} p99.9 {:.3e} max {:.3e}",
            self.n_positions,
            self.nmse,
            self.max_position_nmse,
            self.max_abs_diff,
            self.top1_matches,
            self.n_positions,
            100.0 * self.top1,
            self.mean_kld,
            self.p99_kld,
            self.p999_kld,
            self.max_kld
        )
    }
}

/// Accumulates positions from any number of (reference, test) pairs.
#[derive(Clone, Debug, Default)]
pub struct Comparison {
    sum_sq_err: f64,
    sum_sq_ref: f64,
    max_position_nmse: f64,
    max_abs_diff: f64,
    top1_matches: usize,
    klds: Vec<f64>,
}

impl Comparison {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, reference: &Logits, test: &Logits) -> Result<(), RuntimeError> {
        if reference.n_tokens != test.n_tokens || reference.n_vocab != test.n_vocab {
            return Err(RuntimeError::ShapeMismatch(format!(
                "reference [{}, {}] vs test [{}, {}]",
                reference.n_tokens, reference.n_vocab, test.n_tokens, test.n_vocab
            )));
        }
        for t in 0..reference.n_tokens {
            self.add_position(reference.row(t), test.row(t));
        }
        Ok(())
    }

    fn add_position(&mut self, r: &[f32], q: &[f32]) {
        let mut err = 0f64;
        let mut norm = 0f64;
        for (&a, &b) in r.iter().zip(q) {
            let d = a as f64 - b as f64;
            err += d * d;
            norm += a as f64 * a as f64;
            self.max_abs_diff = self.max_abs_diff.max(d.abs());
        }
        self.sum_sq_err += err;
        self.sum_sq_ref += norm;
        let pos_nmse = if norm > 0.0 { err / norm } else { err };
        self.max_position_nmse = self.max_position_nmse.max(pos_nmse);
        if argmax(r) == argmax(q) {
            self.top1_matches += 1;
        }
        self.klds.push(kld(r, q));
    }

    pub fn report(&self) -> Report {
        let n = self.klds.len();
        let mut sorted = self.klds.clone();
        sorted.sort_by(f64::total_cmp);
        let pct = |p: f64| -> f64 {
            if n == 0 {
                return 0.0;
            }
            // Nearest rank.
            let rank = ((p * n as f64).ceil() as usize).clamp(1, n);
            sorted[rank - 1]
        };
        Report {
            n_positions: n,
            nmse: if self.sum_sq_ref > 0.0 {
                self.sum_sq_err / self.sum_sq_ref
            } else {
                self.sum_sq_err
            },
            max_position_nmse: self.max_position_nmse,
            max_abs_diff: self.max_abs_diff,
            top1: if n > 0 {
                self.top1_matches as f64 / n as f64
            } else {
                0.0
            },
            top1_matches: self.top1_matches,
            mean_kld: if n > 0 {
                sorted.iter().sum::<f64>() / n as f64
            } else {
                0.0
            },
            p99_kld: pct(0.99),
            p999_kld: pct(0.999),
            max_kld: sorted.last().copied().unwrap_or(0.0),
        }
    }
}

/// Compares two logit sets of the same shape.
pub fn compare(reference: &Logits, test: &Logits) -> Result<Report, RuntimeError> {
    let mut c = Comparison::new();
    c.add(reference, test)?;
    Ok(c.report())
}

/// Index of the largest value (the first one on ties), as `torch.argmax` picks it.
pub fn argmax(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best
}

fn log_softmax(x: &[f32]) -> Vec<f64> {
    let max = x.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
    let lse = x.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln() + max;
    x.iter().map(|&v| v as f64 - lse).collect()
}

/// KL(softmax(p) ‖ softmax(q)) in nats; never negative.
pub fn kld(p: &[f32], q: &[f32]) -> f64 {
    let lp = log_softmax(p);
    let lq = log_softmax(q);
    lp.iter()
        .zip(&lq)
        .map(|(&a, &b)| a.exp() * (a - b))
        .sum::<f64>()
        .max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits(rows: &[&[f32]]) -> Logits {
        Logits {
            n_tokens: rows.len(),
            n_vocab: rows[0].len(),
            data: rows.concat(),
        }
    }

    #[test]
    fn identical_sets_agree_perfectly() {
        let a = logits(&[&[1.0, 2.0, 3.0], &[0.0, -1.0, 5.0]]);
        let r = compare(&a, &a).unwrap();
        assert_eq!(r.nmse, 0.0);
        assert_eq!(r.top1, 1.0);
        assert_eq!(r.mean_kld, 0.0);
        assert_eq!(r.max_abs_diff, 0.0);
    }

    #[test]
    fn metrics_have_the_textbook_values() {
        let a = logits(&[&[0.0, 0.0], &[3.0, 4.0]]);
        let b = logits(&[&[1.0, 0.0], &[3.0, 4.0]]);
        let r = compare(&a, &b).unwrap();
        // Σ err² = 1, Σ ref² = 25.
        assert!((r.nmse - 0.04).abs() < 1e-12);
        assert_eq!(r.max_abs_diff, 1.0);
        // Position 0: argmax 0 in both (first of ties / larger value).
        assert_eq!(r.top1_matches, 2);
        // KL([.5,.5] ‖ softmax([1,0])) = ln(.5) - .5 ln(s1 s0) with s = softmax([1,0]).
        let s1 = 1f64.exp() / (1.0 + 1f64.exp());
        let expect = 0.5 * (0.5 / s1).ln() + 0.5 * (0.5 / (1.0 - s1)).ln();
        assert!((r.max_kld - expect).abs() < 1e-12);
        assert!((r.mean_kld - expect / 2.0).abs() < 1e-12);
        assert_eq!(r.p99_kld, r.max_kld);
    }

    #[test]
    fn shape_mismatch_is_an_error() {
        let a = logits(&[&[0.0, 0.0]]);
        let b = logits(&[&[0.0, 0.0, 1.0]]);
        assert!(compare(&a, &b).is_err());
    }
}
