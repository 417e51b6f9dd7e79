//! The forward pass: llama.cpp's graphs for the supported families, from GGUF tensors.
//!
//! The graph is chosen by `general.architecture` and assembled from the tensors that are present,
//! following llama.cpp's `src/models/<arch>.cpp`: which tensors are required, which are optional (biases, the
//! untied output), and what each step computes. Like llama.cpp we refuse files with tensors the
//! graph would not use, since llama.cpp itself refuses them ("wrong number of tensors").

use std::collections::HashSet;

use gguf::{GgufModel, TensorInfo};
use rayon::prelude::*;

use crate::attention::{attend, AttnShape};
use crate::error::RuntimeError;
use crate::hparams::{Arch, HParams, NormKind, RopeMode, RopeScaling};
use crate::matmul::Matrix;
use crate::ops::{self, Norm};
use crate::rope::{RopeCache, RopeParams};

/// Logits for every position: `n_tokens` rows of `n_vocab` values.
#[derive(Clone, Debug, PartialEq)]
pub struct Logits {
    pub n_tokens: usize,
    pub n_vocab: usize,
    pub data: Vec<f32>,
}

impl Logits {
    pub fn row(&self, t: usize) -> &[f32] {
        &self.data[t * self.n_vocab..(t + 1) * self.n_vocab]
    }
}

/// A projection with an optional bias.
struct Linear<'a> {
    w: Matrix<'a>,
    b: Option<Vec<f32>>,
}

impl Linear<'_> {
    fn forward(&self, x: &[f32], n_t: usize) -> Result<Vec<f32>, RuntimeError> {
        let mut y = self.w.matmul(x, n_t)?;
        if let Some(b) = &self.b {
            ops::add_bias(&mut y, b);
        }
        Ok(y)
    }
}

enum Qkv<'a> {
    /// One matrix producing [Q | K | V] (Phi-3, GPT-2).
    Fused(Linear<'a>),
    Split {
        q: Linear<'a>,
        k: Linear<'a>,
        v: Linear<'a>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Act {
    Silu,
    GeluTanh,
}

impl Act {
    fn apply(self, x: f32) -> f32 {
        match self {
            Act::Silu => ops::silu(x),
            Act::GeluTanh => ops::gelu_tanh(x),
        }
    }
}

enum Ffn<'a> {
    /// `down(act(gate(x)) * up(x))` (llama.cpp LLM_FFN_PAR).
    Gated {
        gate: Linear<'a>,
        up: Linear<'a>,
        down: Linear<'a>,
        act: Act,
    },
    /// `up` yields [gate | up] in one matrix (Phi-3's gate_up_proj, LLM_FFN_SWIGLU).
    FusedGated {
        up: Linear<'a>,
        down: Linear<'a>,
        act: Act,
    },
    /// `down(act(up(x)))` (GPT-2, LLM_FFN_SEQ).
    Plain {
        up: Linear<'a>,
        down: Linear<'a>,
        act: Act,
    },
}

struct Layer<'a> {
    attn_norm: Norm,
    qkv: Qkv<'a>,
    q_norm: Option<Norm>,
    k_norm: Option<Norm>,
    wo: Linear<'a>,
    attn_post_norm: Option<Norm>,
    ffn_norm: Norm,
    ffn: Ffn<'a>,
    ffn_post_norm: Option<Norm>,
}

/// A loaded model: hyperparameters, small tensors in f32, and views of the big ones in the file.
pub struct Model<'a> {
    pub hp: HParams,
    pub n_vocab: usize,
    tok_embd: Matrix<'a>,
    pos_embd: Option<Matrix<'a>>,
    layers: Vec<Layer<'a>>,
    output_norm: Norm,
    output: Linear<'a>,
    /// Llama-3's `rope_freqs` (divisors of each pair's angle).
    rope_freqs: Option<Vec<f32>>,
    rope_long: Option<Vec<f32>>,
    rope_short: Option<Vec<f32>>,
    context_length: Option<usize>,
}

struct Loader<'a> {
    file: &'a dyn GgufModel,
    used: HashSet<&'a str>,
}

impl<'a> Loader<'a> {
    fn info(&self, name: &str) -> Option<&'a TensorInfo> {
        self.file.tensors().iter().find(|t| t.name == name)
    }

    fn matrix(
        &mut self,
        name: &str,
        n_in: usize,
        n_out: usize,
    ) -> Result<Matrix<'a>, RuntimeError> {
        self.opt_matrix(name, n_in, n_out)?
            .ok_or_else(|| RuntimeError::MissingTensor(name.to_string()))
    }

    fn opt_matrix(
        &mut self,
        name: &str,
        n_in: usize,
        n_out: usize,
    ) -> Result<Option<Matrix<'a>>, RuntimeError> {
        let Some(info) = self.info(name) else {
            return Ok(None);
        };
        self.used.insert(&info.name);
        Matrix::new(self.file, info, n_in, n_out).map(Some)
    }

    fn opt_vector(&mut self, name: &str, n: usize) -> Result<Option<Vec<f32>>, RuntimeError> {
        let Some(info) = self.info(name) else {
            return Ok(None);
        };
        if info.dims != [n as u64] {
            return Err(RuntimeError::TensorShape {
                name: name.to_string(),
                expected: vec![n as u64],
                found: info.dims.clone(),
            });
        }
        self.used.insert(&info.name);
        quantize::dequantize(info.ggml_type, self.file.tensor_data(info), n)
            .map(Some)
            .map_err(|source| RuntimeError::Decode {
                name: name.to_string(),
                ty: info.ggml_type,
                source,
            })
    }

    fn vector(&mut self, name: &str, n: usize) -> Result<Vec<f32>, RuntimeError> {
        self.opt_vector(name, n)?
            .ok_or_else(|| RuntimeError::MissingTensor(name.to_string()))
    }

    fn linear(
        &mut self,
        name: &str,
        n_in: usize,
        n_out: usize,
    ) -> Result<Linear<'a>, RuntimeError> {
        let w = self.matrix(&format!("{name}.weight"), n_in, n_out)?;
        let b = self.opt_vector(&format!("{name}.bias"), n_out)?;
        Ok(Linear { w, b })
    }

    fn norm(&mut self, name: &str, n: usize, hp: &HParams) -> Result<Norm, RuntimeError> {
        let weight = self.vector(&format!("{name}.weight"), n)?;
        let bias = self.opt_vector(&format!("{name}.bias"), n)?;
        Ok(Norm {
            kind: hp.norm_kind,
            eps: hp.norm_eps,
            weight,
            bias,
        })
    }
}

impl<'a> Model<'a> {
    /// Builds the model from a GGUF file's metadata and tensors (no weights are decoded here
    /// except norms, biases and rope factors). A [`gguf::SplitModel`] works as well as a
    /// [`gguf::GgufFile`]: weights are read from whichever shard holds them.
    pub fn load(file: &'a dyn GgufModel) -> Result<Model<'a>, RuntimeError> {
        let hp = HParams::from_metadata(file.metadata())?;
        let mut ld = Loader {
            file,
            used: HashSet::new(),
        };
        let n_embd = hp.n_embd;
        let tok_info = ld
            .info("token_embd.weight")
            .ok_or_else(|| RuntimeError::MissingTensor("token_embd.weight".into()))?;
        let n_vocab = tok_info.dims.get(1).copied().unwrap_or(0) as usize;
        let tok_embd = ld.matrix("token_embd.weight", n_embd, n_vocab)?;
        let pos_embd = match hp.arch {
            Arch::Gpt2 => Some(ld.matrix("position_embd.weight", n_embd, hp.n_ctx_train)?),
            _ => None,
        };
        let output_norm = ld.norm("output_norm", n_embd, &hp)?;
        // Gemma-2 always ties the output to the embeddings; the others use output.weight when
        // the file has one.
        let output = match hp.arch {
            Arch::Gemma2 => None,
            _ => ld.opt_matrix("output.weight", n_embd, n_vocab)?,
        };
        let output = Linear {
            w: output.unwrap_or(tok_embd),
            b: match hp.arch {
                Arch::Qwen2 | Arch::Phi3 => ld.opt_vector("output.bias", n_vocab)?,
                _ => None,
            },
        };

        let half_rot = hp.n_rot / 2;
        let (mut rope_freqs, mut rope_long, mut rope_short) = (None, None, None);
        match hp.arch {
            Arch::Llama if hp.rope_scaling == RopeScaling::LongRope => {
                rope_long = ld.opt_vector("rope_factors_long.weight", half_rot)?;
                rope_short = ld.opt_vector("rope_factors_short.weight", half_rot)?;
            }
            Arch::Llama => rope_freqs = ld.opt_vector("rope_freqs.weight", half_rot)?,
            Arch::Phi3 => {
                rope_long = ld.opt_vector("rope_factors_long.weight", half_rot)?;
                rope_short = ld.opt_vector("rope_factors_short.weight", half_rot)?;
            }
            _ => {}
        }

        let n_head = hp.n_head[0];
        let n_head_kv = hp.n_head_kv[0];
        let hd = hp.head_dim_k;
        let (n_q, n_kv) = (n_head * hd, n_head_kv * hd);
        let mut layers = Vec::with_capacity(hp.n_layer);
        for il in 0..hp.n_layer {
            let p = |s: &str| format!("blk.{il}.{s}");
            let n_ff = hp.n_ff[il];
            let attn_norm = ld.norm(&p("attn_norm"), n_embd, &hp)?;
            let qkv = if ld.info(&p("attn_qkv.weight")).is_some() {
                let mut fused = ld.linear(&p("attn_qkv"), n_embd, n_q + 2 * n_kv)?;
                if fused.b.is_none() {
                    // Separate biases next to a fused weight: llama.cpp concatenates them.
                    let q = ld.opt_vector(&p("attn_q.bias"), n_q)?;
                    let k = ld.opt_vector(&p("attn_k.bias"), n_kv)?;
                    let v = ld.opt_vector(&p("attn_v.bias"), n_kv)?;
                    if let (Some(q), Some(k), Some(v)) = (q, k, v) {
                        fused.b = Some([q, k, v].concat());
                    }
                }
                Qkv::Fused(fused)
            } else {
                Qkv::Split {
                    q: ld.linear(&p("attn_q"), n_embd, n_q)?,
                    k: ld.linear(&p("attn_k"), n_embd, n_kv)?,
                    v: ld.linear(&p("attn_v"), n_embd, n_kv)?,
                }
            };
            let (q_norm, k_norm) = match hp.arch {
                Arch::Qwen3 | Arch::Gemma3 => {
                    let mk = |ld: &mut Loader<'a>, s: &str| -> Result<Norm, RuntimeError> {
                        Ok(Norm {
                            kind: NormKind::Rms,
                            eps: hp.norm_eps,
                            weight: ld.vector(&p(s), hd)?,
                            bias: None,
                        })
                    };
                    (
                        Some(mk(&mut ld, "attn_q_norm.weight")?),
                        Some(mk(&mut ld, "attn_k_norm.weight")?),
                    )
                }
                _ => (None, None),
            };
            let wo = ld.linear(&p("attn_output"), n_q, n_embd)?;
            let (attn_post_norm, ffn_post_norm) = match hp.arch {
                Arch::Gemma2 | Arch::Gemma3 => (
                    Some(ld.norm(&p("post_attention_norm"), n_embd, &hp)?),
                    Some(ld.norm(&p("post_ffw_norm"), n_embd, &hp)?),
                ),
                _ => (None, None),
            };
            let ffn_norm = ld.norm(&p("ffn_norm"), n_embd, &hp)?;
            let ffn = match hp.arch {
                Arch::Phi3 => Ffn::FusedGated {
                    up: ld.linear(&p("ffn_up"), n_embd, 2 * n_ff)?,
                    down: ld.linear(&p("ffn_down"), n_ff, n_embd)?,
                    act: Act::Silu,
                },
                Arch::Gpt2 => Ffn::Plain {
                    up: ld.linear(&p("ffn_up"), n_embd, n_ff)?,
                    down: ld.linear(&p("ffn_down"), n_ff, n_embd)?,
                    act: Act::GeluTanh,
                },
                _ => Ffn::Gated {
                    gate: ld.linear(&p("ffn_gate"), n_embd, n_ff)?,
                    up: ld.linear(&p("ffn_up"), n_embd, n_ff)?,
                    down: ld.linear(&p("ffn_down"), n_ff, n_embd)?,
                    act: match hp.arch {
                        Arch::Gemma2 | Arch::Gemma3 => Act::GeluTanh,
                        _ => Act::Silu,
                    },
                },
            };
            layers.push(Layer {
                attn_norm,
                qkv,
                q_norm,
                k_norm,
                wo,
                attn_post_norm,
                ffn_norm,
                ffn,
                ffn_post_norm,
            });
        }

        if let Some(extra) = file
            .tensors()
            .iter()
            .find(|t| !ld.used.contains(t.name.as_str()))
        {
            return Err(RuntimeError::Unsupported {
                feature: "tensors outside the graph",
                detail: format!(
                    "'{}' is not used by llama.cpp's {} graph (llama.cpp refuses such files)",
                    extra.name,
                    hp.arch.name()
                ),
            });
        }

        Ok(Model {
            hp,
            n_vocab,
            tok_embd,
            pos_embd,
            layers,
            output_norm,
            output,
            rope_freqs,
            rope_long,
            rope_short,
            context_length: None,
        })
    }

    /// The context size llama.cpp would have been created with. It matters only for long-rope
    /// models, which use the long factors when the context exceeds the original training context.
    /// Default (`None`): the number of tokens evaluated, which is what transformers does.
    pub fn set_context_length(&mut self, n_ctx: Option<usize>) {
        self.context_length = n_ctx;
    }

    fn rope_params(&self, swa: bool, n_ctx: usize) -> RopeParams {
        let hp = &self.hp;
        let (freq_base, freq_scale) = if swa {
            (hp.rope_freq_base_swa, hp.rope_freq_scale_swa)
        } else {
            (hp.rope_freq_base, hp.rope_freq_scale)
        };
        let factors = if self.rope_freqs.is_some() {
            self.rope_freqs.clone()
        } else if n_ctx > hp.n_ctx_orig {
            self.rope_long.clone()
        } else {
            self.rope_short.clone()
        };
        let ext_factor = if hp.rope_scaling == RopeScaling::Yarn {
            1.0
        } else {
            0.0
        };
        // llama.cpp's context setup: with YaRN the attention factor starts as
        // (1 + 0.1 ln s) / (1 + 0.1 ln s) = 1 before `rope.scaling.attn_factor` multiplies it;
        // ggml's rope then applies 1 + 0.1 ln s itself.
        RopeParams {
            mode: hp.rope_mode,
            n_rot: hp.n_rot,
            freq_base,
            freq_scale,
            factors,
            ext_factor,
            attn_factor: hp.rope_attn_factor,
            n_ctx_orig: hp.n_ctx_orig,
            beta_fast: hp.yarn_beta_fast,
            beta_slow: hp.yarn_beta_slow,
        }
    }

    /// Logits at every position of `tokens` (one sequence starting at position 0).
    pub fn forward(&self, tokens: &[u32]) -> Result<Logits, RuntimeError> {
        let hp = &self.hp;
        let n_t = tokens.len();
        if n_t == 0 {
            return Err(RuntimeError::EmptyInput);
        }
        for (position, &tok) in tokens.iter().enumerate() {
            if tok as usize >= self.n_vocab {
                return Err(RuntimeError::TokenOutOfRange {
                    token: tok as i64,
                    position,
                    n_vocab: self.n_vocab,
                });
            }
        }
        if let Some(pe) = &self.pos_embd {
            if n_t > pe.n_out {
                return Err(RuntimeError::TooManyPositions {
                    n_tokens: n_t,
                    limit: pe.n_out,
                });
            }
        }
        let n_embd = hp.n_embd;
        let n_ctx = self.context_length.unwrap_or(n_t).max(n_t);

        // Embeddings.
        let mut x = vec![0f32; n_t * n_embd];
        x.par_chunks_mut(n_embd).enumerate().try_for_each(
            |(t, row)| -> Result<(), RuntimeError> {
                row.copy_from_slice(&self.tok_embd.row(tokens[t] as usize)?);
                if let Some(s) = hp.embd_scale {
                    row.iter_mut().for_each(|v| *v *= s);
                }
                if let Some(pe) = &self.pos_embd {
                    ops::add_in_place(row, &pe.row(t)?);
                }
                Ok(())
            },
        )?;

        let rope_full = self.rope_params(false, n_ctx).cache(n_t);
        let rope_swa = self.rope_params(true, n_ctx).cache(n_t);

        for (il, layer) in self.layers.iter().enumerate() {
            let swa = hp.is_swa[il];
            let rope = if swa { &rope_swa } else { &rope_full };
            let window = if swa { hp.n_swa } else { usize::MAX };

            let mut h = x.clone();
            layer.attn_norm.apply(&mut h);
            let mut attn = self.attention(layer, &h, n_t, rope, window)?;
            if let Some(n) = &layer.attn_post_norm {
                n.apply(&mut attn);
            }
            ops::add_in_place(&mut x, &attn);

            let mut h = x.clone();
            layer.ffn_norm.apply(&mut h);
            let mut f = self.ffn(&layer.ffn, &h, n_t)?;
            if let Some(n) = &layer.ffn_post_norm {
                n.apply(&mut f);
            }
            ops::add_in_place(&mut x, &f);
        }

        self.output_norm.apply(&mut x);
        let mut logits = self.output.forward(&x, n_t)?;
        if let Some(cap) = hp.final_softcap {
            ops::softcap(&mut logits, cap);
        }
        Ok(Logits {
            n_tokens: n_t,
            n_vocab: self.n_vocab,
            data: logits,
        })
    }

    fn attention(
        &self,
        layer: &Layer<'a>,
        h: &[f32],
        n_t: usize,
        rope: &RopeCache,
        window: usize,
    ) -> Result<Vec<f32>, RuntimeError> {
        let hp = &self.hp;
        let n_head = hp.n_head[0];
        let n_head_kv = hp.n_head_kv[0];
        let hd = hp.head_dim_k;
        let (n_q, n_kv) = (n_head * hd, n_head_kv * hd);
        let (mut q, mut k, v) = match &layer.qkv {
            Qkv::Fused(l) => {
                let qkv = l.forward(h, n_t)?;
                let w = n_q + 2 * n_kv;
                let mut q = Vec::with_capacity(n_t * n_q);
                let mut k = Vec::with_capacity(n_t * n_kv);
                let mut v = Vec::with_capacity(n_t * n_kv);
                for row in qkv.chunks(w) {
                    q.extend_from_slice(&row[..n_q]);
                    k.extend_from_slice(&row[n_q..n_q + n_kv]);
                    v.extend_from_slice(&row[n_q + n_kv..]);
                }
                (q, k, v)
            }
            Qkv::Split { q, k, v } => (q.forward(h, n_t)?, k.forward(h, n_t)?, v.forward(h, n_t)?),
        };
        // Per-head norms (Qwen3, Gemma-3), then RoPE.
        let prep = |x: &mut [f32], norm: &Option<Norm>, width: usize| {
            x.par_chunks_mut(width).enumerate().for_each(|(t, row)| {
                for head in row.chunks_mut(hd) {
                    if let Some(n) = norm {
                        n.apply_row(head);
                    }
                    if hp.rope_mode != RopeMode::None {
                        rope.apply(head, t);
                    }
                }
            });
        };
        prep(&mut q, &layer.q_norm, n_q);
        prep(&mut k, &layer.k_norm, n_kv);

        let shape = AttnShape {
            n_t,
            n_head,
            n_head_kv,
            head_dim: hd,
        };
        let out = attend(&q, &k, &v, shape, hp.kq_scale, hp.attn_softcap, window);
        layer.wo.forward(&out, n_t)
    }

    fn ffn(&self, ffn: &Ffn<'a>, h: &[f32], n_t: usize) -> Result<Vec<f32>, RuntimeError> {
        match ffn {
            Ffn::Gated {
                gate,
                up,
                down,
                act,
            } => {
                let mut g = gate.forward(h, n_t)?;
                let u = up.forward(h, n_t)?;
                g.par_iter_mut()
                    .zip(u.par_iter())
                    .for_each(|(a, b)| *a = act.apply(*a) * b);
                down.forward(&g, n_t)
            }
            Ffn::FusedGated { up, down, act } => {
                let gu = up.forward(h, n_t)?;
                let n_ff = gu.len() / n_t / 2;
                let mut g = vec![0f32; n_t * n_ff];
                g.par_chunks_mut(n_ff)
                    .zip(gu.par_chunks(2 * n_ff))
                    .for_each(|(o, row)| {
                        for i in 0..n_ff {
                            o[i] = act.apply(row[i]) * row[n_ff + i];
                        }
                    });
                down.forward(&g, n_t)
            }
            Ffn::Plain { up, down, act } => {
                let mut u = up.forward(h, n_t)?;
                u.par_iter_mut().for_each(|a| *a = act.apply(*a));
                down.forward(&u, n_t)
            }
        }
    }
}
