//! Causal multi-head attention with grouped KV heads, an optional sliding window and optional
//! logit soft-capping, as llama.cpp's `build_attn_mha` computes it (scores scaled, then capped,
//! then a masked softmax; masked when the key is after the query or `query - key >= window`).

use rayon::prelude::*;

use crate::matmul::gemm_abt;

/// Sizes of one attention call: `n_t` positions, `n_head` query heads sharing `n_head_kv` KV
/// heads, `head_dim` values per head.
#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    pub n_t: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
}

/// `q`: [n_t][n_head · head_dim], `k`/`v`: [n_t][n_head_kv · head_dim] (RoPE already applied).
/// Returns [n_t][n_head · head_dim]. `window = usize::MAX` for full causal attention.
pub fn attend(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    shape: AttnShape,
    scale: f32,
    softcap: Option<f32>,
    window: usize,
) -> Vec<f32> {
    let AttnShape {
        n_t,
        n_head,
        n_head_kv,
        head_dim: hd,
    } = shape;
    let (n_q, n_kv) = (n_head * hd, n_head_kv * hd);
    assert!(q.len() == n_t * n_q && k.len() == n_t * n_kv && v.len() == n_t * n_kv);
    assert!(window > 0 && n_head_kv > 0 && n_head % n_head_kv == 0);
    // V transposed per KV head ([kv head][dim][position]), so P·V is also an A·Bᵀ product.
    let mut vt = vec![0f32; n_kv * n_t];
    for (t, row) in v.chunks(n_kv).enumerate() {
        for (c, &val) in row.iter().enumerate() {
            vt[c * n_t + t] = val;
        }
    }

    // Tasks: one head × a block of queries. Scores for the block's queries against keys
    // lo..t1 (a few masked entries of the causal triangle are computed and discarded).
    const QB: usize = 32;
    let group = n_head / n_head_kv;
    let n_blocks = n_t.div_ceil(QB);
    let results: Vec<(usize, usize, Vec<f32>)> = (0..n_head * n_blocks)
        .into_par_iter()
        .map(|task| {
            let (hh, blk) = (task / n_blocks, task % n_blocks);
            let kvh = hh / group;
            let (t0, t1) = (blk * QB, ((blk + 1) * QB).min(n_t));
            let nq = t1 - t0;
            // Keys t - window + 1 ..= t are visible (llama.cpp masks p1 - p0 >= n_swa).
            let lo = (t0 + 1).saturating_sub(window);
            let nk = t1 - lo;
            let mut p = vec![0f32; nq * nk];
            gemm_abt(
                &k[lo * n_kv + kvh * hd..],
                n_kv,
                nk,
                &q[t0 * n_q + hh * hd..],
                n_q,
                nq,
                hd,
                &mut p,
                nk,
            );
            for (qi, row) in p.chunks_mut(nk).enumerate() {
                let t = t0 + qi;
                let mut max = f32::NEG_INFINITY;
                for (j, s) in row.iter_mut().enumerate() {
                    let key = lo + j;
                    if key > t || t - key >= window {
                        *s = f32::NEG_INFINITY;
                        continue;
                    }
                    let mut d = *s * scale;
                    if let Some(cap) = softcap {
                        d = (d / cap).tanh() * cap;
                    }
                    *s = d;
                    max = max.max(d);
                }
                let mut sum = 0f32;
                for s in row.iter_mut() {
                    *s = (*s - max).exp();
                    sum += *s;
                }
                let inv = 1.0 / sum;
                row.iter_mut().for_each(|s| *s *= inv);
            }
            let mut o = vec![0f32; nq * hd];
            gemm_abt(
                &vt[kvh * hd * n_t + lo..],
                n_t,
                hd,
                &p,
                nk,
                nq,
                nk,
                &mut o,
                hd,
            );
            (hh, t0, o)
        })
        .collect();
    let mut out = vec![0f32; n_t * n_q];
    for (hh, t0, o) in results {
        for (qi, orow) in o.chunks(hd).enumerate() {
            let base = (t0 + qi) * n_q + hh * hd;
            out[base..base + hd].copy_from_slice(orow);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One query at a time, straight from the definition, in f64.
    fn naive(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        s: AttnShape,
        scale: f32,
        softcap: Option<f32>,
        window: usize,
    ) -> Vec<f32> {
        let (n_q, n_kv, hd) = (s.n_head * s.head_dim, s.n_head_kv * s.head_dim, s.head_dim);
        let mut out = vec![0f32; s.n_t * n_q];
        for t in 0..s.n_t {
            for h in 0..s.n_head {
                let kvh = h / (s.n_head / s.n_head_kv);
                let keys: Vec<usize> = (0..=t).filter(|&j| t - j < window).collect();
                let scores: Vec<f64> = keys
                    .iter()
                    .map(|&j| {
                        let mut d = 0f64;
                        for i in 0..hd {
                            d += q[t * n_q + h * hd + i] as f64 * k[j * n_kv + kvh * hd + i] as f64;
                        }
                        let mut d = d * scale as f64;
                        if let Some(c) = softcap {
                            d = (d / c as f64).tanh() * c as f64;
                        }
                        d
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|x| (x - max).exp()).collect();
                let z: f64 = e.iter().sum();
                for i in 0..hd {
                    let mut acc = 0f64;
                    for (p, &j) in e.iter().zip(&keys) {
                        acc += p / z * v[j * n_kv + kvh * hd + i] as f64;
                    }
                    out[t * n_q + h * hd + i] = acc as f32;
                }
            }
        }
        out
    }

    #[test]
    fn blocked_attention_matches_the_definition() {
        // 70 positions = three query blocks; GQA 6:2; windows inside and across blocks.
        let s = AttnShape {
            n_t: 70,
            n_head: 6,
            n_head_kv: 2,
            head_dim: 12,
        };
        let gen = |n: usize, seed: usize| -> Vec<f32> {
            (0..n)
                .map(|i| (((i * 7919 + seed * 104729) % 1000) as f32 / 500.0 - 1.0) * 1.5)
                .collect()
        };
        let q = gen(s.n_t * 6 * 12, 1);
        let k = gen(s.n_t * 2 * 12, 2);
        let v = gen(s.n_t * 2 * 12, 3);
        for (window, softcap) in [(usize::MAX, None), (5, None), (40, Some(2.0)), (1, None)] {
            let got = attend(&q, &k, &v, s, 0.3, softcap, window);
            let want = naive(&q, &k, &v, s, 0.3, softcap, window);
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!((a - b).abs() < 1e-5, "window {window}: [{i}] {a} vs {b}");
            }
        }
    }
}
