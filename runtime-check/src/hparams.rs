//! Hyperparameters read from GGUF metadata, with llama.cpp's defaults.
//!
//! The runtime must see exactly what llama.cpp sees, so every value here comes from the same key
//! with the same default as in llama.cpp's `llama_model_base::load_hparams` and the per-arch
//! `load_arch_hparams` (src/models/*.cpp), including its assumptions that are not stored in the
//! file (Gemma's attention scale, Gemma-2's window and layer pattern, Phi-3's disabled window).
//! Nothing is taken from the original HF config: a converter that forgets a key must show up as
//! wrong logits.

use gguf::{Array, Metadata, Value};

use crate::error::RuntimeError;

/// The model families the runtime implements (GGUF `general.architecture`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// Llama, Llama-3, Mistral, SmolLM2 (llama.cpp's `llama` graph).
    Llama,
    Qwen2,
    Qwen3,
    Gemma2,
    Gemma3,
    Phi3,
    Gpt2,
}

impl Arch {
    pub fn from_name(name: &str) -> Option<Arch> {
        Some(match name {
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            "qwen3" => Arch::Qwen3,
            "gemma2" => Arch::Gemma2,
            "gemma3" => Arch::Gemma3,
            "phi3" => Arch::Phi3,
            "gpt2" => Arch::Gpt2,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Gemma2 => "gemma2",
            Arch::Gemma3 => "gemma3",
            Arch::Phi3 => "phi3",
            Arch::Gpt2 => "gpt2",
        }
    }

    /// llama.cpp's `llama_model_rope_type`.
    pub fn rope_mode(self) -> RopeMode {
        match self {
            // The llama converter permutes Q/K rows so that ggml's adjacent-pair rotation equals
            // HF's rotate_half; the other families are stored unpermuted and use the NEOX layout.
            Arch::Llama => RopeMode::Norm,
            Arch::Qwen2 | Arch::Qwen3 | Arch::Gemma2 | Arch::Gemma3 | Arch::Phi3 => RopeMode::Neox,
            Arch::Gpt2 => RopeMode::None,
        }
    }
}

/// Which elements RoPE rotates together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeMode {
    /// ggml mode 0: pairs `(x[2i], x[2i+1])`.
    Norm,
    /// ggml mode 2 (GPT-NeoX): pairs `(x[i], x[i + n_rot/2])`.
    Neox,
    /// No rotary embedding (learned absolute positions).
    None,
}

/// `<arch>.rope.scaling.type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeScaling {
    None,
    Linear,
    Yarn,
    LongRope,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormKind {
    Rms,
    /// Mean/variance LayerNorm (GPT-2).
    Layer,
}

/// Everything the forward pass needs besides the tensors.
#[derive(Clone, Debug)]
pub struct HParams {
    pub arch: Arch,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_ctx_train: usize,
    pub n_head: Vec<usize>,
    pub n_head_kv: Vec<usize>,
    pub n_ff: Vec<usize>,
    pub head_dim_k: usize,
    pub head_dim_v: usize,
    pub n_rot: usize,
    pub rope_mode: RopeMode,
    pub rope_scaling: RopeScaling,
    pub rope_freq_base: f32,
    pub rope_freq_scale: f32,
    pub rope_freq_base_swa: f32,
    pub rope_freq_scale_swa: f32,
    /// `rope.scaling.attn_factor`: multiplies cos and sin (Phi-3 long-rope's magnitude fix).
    pub rope_attn_factor: f32,
    /// `rope.scaling.original_context_length` (default: the training context).
    pub n_ctx_orig: usize,
    pub yarn_beta_fast: f32,
    pub yarn_beta_slow: f32,
    pub norm_kind: NormKind,
    pub norm_eps: f32,
    pub attn_softcap: Option<f32>,
    pub final_softcap: Option<f32>,
    /// Sliding window size; 0 when the model has none.
    pub n_swa: usize,
    pub is_swa: Vec<bool>,
    /// Multiplies Q·K before the softmax.
    pub kq_scale: f32,
    /// Multiplies the token embeddings (Gemma: sqrt(n_embd)).
    pub embd_scale: Option<f32>,
}

impl HParams {
    pub fn from_metadata(md: &Metadata) -> Result<HParams, RuntimeError> {
        let arch_name = md
            .get_str("general.architecture")
            .ok_or(RuntimeError::NoArchitecture)?;
        let arch = Arch::from_name(arch_name)
            .ok_or_else(|| RuntimeError::UnsupportedArchitecture(arch_name.to_string()))?;
        let r = Keys {
            md,
            arch: arch_name,
        };

        let n_ctx_train = r.req_usize("context_length")?;
        let n_embd = r.req_usize("embedding_length")?;
        let n_layer = r.req_usize("block_count")?;
        if n_layer == 0 || n_layer > 512 {
            return Err(r.bad("block_count", format!("{n_layer} layers")));
        }
        if let Some(n) = r.opt_usize("expert_count")? {
            if n > 0 {
                return Err(RuntimeError::Unsupported {
                    feature: "mixture of experts",
                    detail: format!("{arch_name}.expert_count = {n}"),
                });
            }
        }
        let n_ff = r
            .per_layer("feed_forward_length", n_layer)?
            .unwrap_or(vec![0; n_layer]);
        let n_head = r
            .per_layer("attention.head_count", n_layer)?
            .ok_or_else(|| RuntimeError::MissingKey(r.key("attention.head_count")))?;
        let n_head_kv = r
            .per_layer("attention.head_count_kv", n_layer)?
            .unwrap_or_else(|| n_head.clone());
        if n_head[0] == 0 {
            return Err(r.bad("attention.head_count", "0 heads".into()));
        }
        for il in 0..n_layer {
            if n_head[il] != n_head[0] || n_head_kv[il] != n_head_kv[0] {
                return Err(RuntimeError::Unsupported {
                    feature: "per-layer head counts",
                    detail: format!("layer {il} differs from layer 0"),
                });
            }
            if n_head_kv[il] == 0 || n_head[il] % n_head_kv[il] != 0 {
                return Err(r.bad(
                    "attention.head_count_kv",
                    format!(
                        "{} KV heads do not divide {} heads (layer {il})",
                        n_head_kv[il], n_head[il]
                    ),
                ));
            }
        }

        let head_dim_k = r
            .opt_usize("attention.key_length")?
            .unwrap_or(n_embd / n_head[0]);
        let head_dim_v = r
            .opt_usize("attention.value_length")?
            .unwrap_or(n_embd / n_head[0]);
        let n_rot = r.opt_usize("rope.dimension_count")?.unwrap_or(head_dim_k);
        if head_dim_k == 0 || head_dim_k != head_dim_v {
            return Err(RuntimeError::Unsupported {
                feature: "different key and value head sizes",
                detail: format!("key_length {head_dim_k}, value_length {head_dim_v}"),
            });
        }
        if arch == Arch::Llama && n_rot != head_dim_k {
            // llama.cpp refuses these files ("invalid n_rot").
            return Err(r.bad(
                "rope.dimension_count",
                format!("{n_rot}, expected the head size {head_dim_k}"),
            ));
        }
        if n_rot > head_dim_k || n_rot % 2 != 0 {
            return Err(r.bad(
                "rope.dimension_count",
                format!("{n_rot} is odd or larger than the head size {head_dim_k}"),
            ));
        }

        let n_ctx_orig = r
            .opt_usize("rope.scaling.original_context_length")?
            .unwrap_or(n_ctx_train);
        let rope_freq_base = r.opt_f32("rope.freq_base")?.unwrap_or(10000.0);
        let scaling_name = r.opt_str("rope.scaling.type")?.unwrap_or("linear");
        let rope_scaling = match scaling_name {
            "none" => RopeScaling::None,
            "linear" => RopeScaling::Linear,
            "yarn" => RopeScaling::Yarn,
            "longrope" => RopeScaling::LongRope,
            other => {
                return Err(r.bad(
                    "rope.scaling.type",
                    format!("'{other}' (llama.cpp knows none, linear, yarn, longrope)"),
                ))
            }
        };
        // `rope.scaling.factor`, or the old `rope.scale_linear`; 0 means unset.
        let factor = match r.opt_f32("rope.scaling.factor")? {
            Some(f) => f,
            None => r.opt_f32("rope.scale_linear")?.unwrap_or(0.0),
        };
        let mut rope_freq_scale = if factor == 0.0 { 1.0 } else { 1.0 / factor };
        if rope_scaling == RopeScaling::None {
            rope_freq_scale = 1.0;
        }
        let rope_attn_factor = r.opt_f32("rope.scaling.attn_factor")?.unwrap_or(1.0);
        // llama.cpp reads the YaRN beta keys only for a few other architectures; these use the
        // defaults of `llama_hparams`.
        let yarn_beta_fast = 32.0;
        let yarn_beta_slow = 1.0;

        let (norm_kind, eps_key) = match arch {
            Arch::Gpt2 => (NormKind::Layer, "attention.layer_norm_epsilon"),
            _ => (NormKind::Rms, "attention.layer_norm_rms_epsilon"),
        };
        let norm_eps = r
            .opt_f32(eps_key)?
            .ok_or_else(|| RuntimeError::MissingKey(r.key(eps_key)))?;

        // Sliding windows, soft-capping and attention scale: per-arch rules of llama.cpp.
        let mut n_swa = 0usize;
        let mut is_swa = vec![false; n_layer];
        let mut attn_softcap = None;
        let mut final_softcap = None;
        let mut rope_freq_base_swa = 10000.0f32; // llama_hparams' default
        let mut rope_freq_scale_swa = 1.0f32;
        let mut kq_scale = 1.0 / (head_dim_k as f32).sqrt();
        let mut embd_scale = None;
        match arch {
            Arch::Gemma2 => {
                n_swa = r.opt_usize("attention.sliding_window")?.unwrap_or(4096);
                is_swa = r.swa_pattern(n_layer, 2)?;
                attn_softcap = Some(r.opt_f32("attn_logit_softcapping")?.unwrap_or(50.0));
                final_softcap = Some(r.opt_f32("final_logit_softcapping")?.unwrap_or(30.0));
                rope_freq_base_swa = r.opt_f32("rope.freq_base_swa")?.unwrap_or(rope_freq_base);
                rope_freq_scale_swa = rope_freq_scale;
                kq_scale = gemma_attention_scale(n_layer == 46, n_embd, n_head[0], head_dim_k);
                embd_scale = Some((n_embd as f32).sqrt());
            }
            Arch::Gemma3 => {
                let window = r.opt_usize("attention.sliding_window")?.unwrap_or(0);
                if window > 0 {
                    n_swa = window;
                    is_swa = r.swa_pattern(n_layer, 6)?;
                    if let Some(b) = r.opt_f32("rope.freq_base_swa")? {
                        rope_freq_base_swa = b;
                    }
                }
                final_softcap = r.opt_f32("final_logit_softcapping")?.filter(|&c| c != 0.0);
                kq_scale = gemma_attention_scale(n_layer == 62, n_embd, n_head[0], head_dim_k);
                embd_scale = Some((n_embd as f32).sqrt());
            }
            // Phi-3: llama.cpp reads `attention.sliding_window` and then disables it (it warns
            // "Phi SWA is currently disabled"), so every layer attends to the whole context.
            Arch::Phi3 => kq_scale = 1.0 / (head_dim_v as f32).sqrt(),
            Arch::Llama | Arch::Qwen2 | Arch::Qwen3 | Arch::Gpt2 => {}
        }
        if is_swa.iter().any(|&s| s) && n_swa == 0 {
            return Err(r.bad("attention.sliding_window", "0 with sliding layers".into()));
        }

        Ok(HParams {
            arch,
            n_layer,
            n_embd,
            n_ctx_train,
            n_head,
            n_head_kv,
            n_ff,
            head_dim_k,
            head_dim_v,
            n_rot,
            rope_mode: arch.rope_mode(),
            rope_scaling,
            rope_freq_base,
            rope_freq_scale,
            rope_freq_base_swa,
            rope_freq_scale_swa,
            rope_attn_factor,
            n_ctx_orig,
            yarn_beta_fast,
            yarn_beta_slow,
            norm_kind,
            norm_eps,
            attn_softcap,
            final_softcap,
            n_swa,
            is_swa,
            kq_scale,
            embd_scale,
        })
    }
}

/// Gemma scales Q by 1/sqrt(head_dim), except the 27B models (recognized by their layer count,
/// as llama.cpp does) which use 1/sqrt(n_embd / n_head). llama.cpp ignores the HF config's
/// `query_pre_attn_scalar`: no GGUF key carries it.
fn gemma_attention_scale(is_27b: bool, n_embd: usize, n_head: usize, head_dim: usize) -> f32 {
    if is_27b {
        1.0 / ((n_embd / n_head) as f32).sqrt()
    } else {
        1.0 / (head_dim as f32).sqrt()
    }
}

struct Keys<'a> {
    md: &'a Metadata,
    arch: &'a str,
}

impl Keys<'_> {
    fn key(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.arch)
    }

    fn bad(&self, suffix: &str, reason: String) -> RuntimeError {
        RuntimeError::BadKey {
            key: self.key(suffix),
            reason,
        }
    }

    fn opt_usize(&self, suffix: &str) -> Result<Option<usize>, RuntimeError> {
        match self.md.get(&self.key(suffix)) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| self.bad(suffix, format!("{v:?} is not a non-negative integer"))),
        }
    }

    fn req_usize(&self, suffix: &str) -> Result<usize, RuntimeError> {
        self.opt_usize(suffix)?
            .ok_or_else(|| RuntimeError::MissingKey(self.key(suffix)))
    }

    fn opt_f32(&self, suffix: &str) -> Result<Option<f32>, RuntimeError> {
        match self.md.get(&self.key(suffix)) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() => Ok(Some(x as f32)),
                _ => Err(self.bad(suffix, format!("{v:?} is not a finite number"))),
            },
        }
    }

    fn opt_str(&self, suffix: &str) -> Result<Option<&str>, RuntimeError> {
        match self.md.get(&self.key(suffix)) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.bad(suffix, format!("{v:?} is not a string"))),
        }
    }

    /// A scalar or a per-layer array (llama.cpp's `get_key_or_arr`).
    fn per_layer(&self, suffix: &str, n_layer: usize) -> Result<Option<Vec<usize>>, RuntimeError> {
        let Some(v) = self.md.get(&self.key(suffix)) else {
            return Ok(None);
        };
        if let Value::Array(a) = v {
            let vals =
                int_array(a).ok_or_else(|| self.bad(suffix, "array of non-integers".into()))?;
            if vals.len() != n_layer {
                return Err(self.bad(
                    suffix,
                    format!("{} values for {n_layer} layers", vals.len()),
                ));
            }
            return Ok(Some(vals));
        }
        let n = v
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| self.bad(suffix, format!("{v:?} is not a non-negative integer")))?;
        Ok(Some(vec![n; n_layer]))
    }

    /// `attention.sliding_window_pattern`: an array of per-layer flags, or a period `n` (layer
    /// `il` slides unless `il % n == n - 1`; 0 means every layer slides), as `set_swa_pattern`.
    fn swa_pattern(&self, n_layer: usize, default: usize) -> Result<Vec<bool>, RuntimeError> {
        let suffix = "attention.sliding_window_pattern";
        let period = match self.md.get(&self.key(suffix)) {
            Some(Value::Array(a)) => {
                let flags =
                    int_array(a).ok_or_else(|| self.bad(suffix, "array of non-integers".into()))?;
                if flags.len() < n_layer {
                    return Err(self.bad(
                        suffix,
                        format!("{} flags for {n_layer} layers", flags.len()),
                    ));
                }
                return Ok(flags[..n_layer].iter().map(|&f| f != 0).collect());
            }
            Some(_) => self.req_usize(suffix)?,
            None => default,
        };
        Ok((0..n_layer)
            .map(|il| period == 0 || il % period < period - 1)
            .collect())
    }
}

fn int_array(a: &Array) -> Option<Vec<usize>> {
    let conv = |x: i64| usize::try_from(x).ok();
    match a {
        Array::Bool(v) => Some(v.iter().map(|&b| b as usize).collect()),
        Array::U8(v) => Some(v.iter().map(|&x| x as usize).collect()),
        Array::U16(v) => Some(v.iter().map(|&x| x as usize).collect()),
        Array::U32(v) => Some(v.iter().map(|&x| x as usize).collect()),
        Array::U64(v) => v.iter().map(|&x| usize::try_from(x).ok()).collect(),
        Array::I8(v) => v.iter().map(|&x| conv(x as i64)).collect(),
        Array::I16(v) => v.iter().map(|&x| conv(x as i64)).collect(),
        Array::I32(v) => v.iter().map(|&x| conv(x as i64)).collect(),
        Array::I64(v) => v.iter().map(|&x| conv(x)).collect(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(arch: &str) -> Vec<(String, Value)> {
        let p = |s: &str| format!("{arch}.{s}");
        vec![
            ("general.architecture".into(), Value::String(arch.into())),
            (p("context_length"), Value::U32(256)),
            (p("embedding_length"), Value::U32(64)),
            (p("block_count"), Value::U32(12)),
            (p("feed_forward_length"), Value::U32(128)),
            (p("attention.head_count"), Value::U32(4)),
            (p("attention.layer_norm_rms_epsilon"), Value::F32(1e-6)),
        ]
    }

    fn parse(pairs: Vec<(String, Value)>) -> Result<HParams, RuntimeError> {
        HParams::from_metadata(&pairs.into_iter().collect())
    }

    #[test]
    fn gemma2_defaults_follow_llama_cpp() {
        let hp = parse(base("gemma2")).unwrap();
        assert_eq!(hp.n_swa, 4096);
        assert_eq!(hp.is_swa[..4], [true, false, true, false]);
        assert_eq!(hp.attn_softcap, Some(50.0));
        assert_eq!(hp.final_softcap, Some(30.0));
        assert_eq!(hp.head_dim_k, 16);
        assert_eq!(hp.rope_mode, RopeMode::Neox);
        assert_eq!(hp.embd_scale, Some(8.0));
    }

    #[test]
    fn gemma3_pattern_period_and_array() {
        let mut kv = base("gemma3");
        kv.push(("gemma3.attention.sliding_window".into(), Value::U32(8)));
        let hp = parse(kv.clone()).unwrap();
        let expect: Vec<bool> = (0..12).map(|i| i % 6 != 5).collect();
        assert_eq!(hp.is_swa, expect);
        assert_eq!(hp.final_softcap, None);
        let mut flags = vec![false; 12];
        flags[3] = true;
        kv.push((
            "gemma3.attention.sliding_window_pattern".into(),
            Value::Array(Array::Bool(flags.clone())),
        ));
        assert_eq!(parse(kv).unwrap().is_swa, flags);
        // No window key: no sliding layers at all.
        assert!(parse(base("gemma3")).unwrap().is_swa.iter().all(|&s| !s));
    }

    #[test]
    fn missing_and_bad_keys_are_named() {
        let mut kv = base("qwen2");
        kv.retain(|(k, _)| k != "qwen2.embedding_length");
        let e = parse(kv).unwrap_err().to_string();
        assert!(e.contains("qwen2.embedding_length"), "{e}");

        let mut kv = base("llama");
        kv.push(("llama.rope.dimension_count".into(), Value::U32(8)));
        let e = parse(kv).unwrap_err().to_string();
        assert!(e.contains("llama.rope.dimension_count"), "{e}");

        let e = parse(base("mamba")).unwrap_err().to_string();
        assert!(e.contains("mamba"), "{e}");

        let mut kv = base("llama");
        kv.push((
            "llama.rope.scaling.type".into(),
            Value::String("weird".into()),
        ));
        assert!(parse(kv).unwrap_err().to_string().contains("weird"));
    }

    #[test]
    fn linear_scaling_and_none() {
        let mut kv = base("llama");
        kv.push(("llama.rope.scaling.factor".into(), Value::F32(4.0)));
        assert_eq!(parse(kv.clone()).unwrap().rope_freq_scale, 0.25);
        kv.push((
            "llama.rope.scaling.type".into(),
            Value::String("none".into()),
        ));
        assert_eq!(parse(kv).unwrap().rope_freq_scale, 1.0);
    }
}
