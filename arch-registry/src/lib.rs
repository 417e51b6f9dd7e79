//! Hugging Face architectures → GGUF: data, not if-chains.
//!
//! Each supported family is one [`ArchSpec`] value: the GGUF architecture name, the
//! `transformers` config class whose defaults apply, the hyperparameter keys written (as a list of
//! [`Step`]s in llama.cpp's write order), the HF → GGUF tensor-name map with the transforms each
//! tensor needs, and generated tensors. Adding a family means adding a value to [`ARCHS`] (and a
//! fixture); the converter has no per-family code paths.

pub mod hparams;
mod steps;

use std::fmt;

pub use hparams::{ConfigClass, Hparams, RopeStyle, CONFIG_CLASSES};
pub use steps::{phi3_rope_dims, Step, Ty};

/// Errors from looking up or evaluating an architecture.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum RegistryError {
    #[error("config.json is not a JSON object")]
    ConfigNotObject,
    #[error("config.json has no \"architectures\" list (nor text_config.architectures); cannot tell which model this is")]
    NoArchitecture,
    #[error("unsupported architecture '{arch}'; supported: {}", supported.join(", "))]
    UnknownArchitecture {
        arch: String,
        supported: Vec<String>,
    },
    #[error("config.json is missing {0}")]
    MissingHparam(String),
    #[error("config.json: {0}")]
    BadHparam(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("internal registry error: {0}")]
    Internal(String),
}

/// What must happen to a tensor's values on its way from HF layout to GGUF layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transform {
    /// llama.cpp's Q/K permutation (`LlamaModel.permute`) for query rows: `num_attention_heads`.
    PermuteQ,
    /// The same for key rows, with `num_key_value_heads` heads.
    PermuteK,
    /// Gemma stores RMSNorm weights as `w` and computes with `1 + w`; GGUF stores `1 + w`.
    AddOne,
    /// GPT-2's Conv1D stores `[in, out]`; ggml wants `[out, in]` rows.
    Transpose,
    /// Gemma 3 checkpoints carry embedding rows past the tokenizer's vocabulary; keep only the
    /// first `n_vocab` rows (the tokenizer's real size).
    TruncateToVocab,
}

/// Which tensor suffixes a rule covers and which transforms apply to which suffix.
#[derive(Clone, Copy, Debug)]
pub struct TensorRule {
    /// HF name without `.weight`/`.bias`; `{bid}` stands for the layer number.
    pub hf: &'static str,
    /// GGUF name without the suffix.
    pub gguf: &'static str,
    /// Transforms applied to `.weight`.
    pub weight: &'static [Transform],
    /// Transforms applied to `.bias`.
    pub bias: &'static [Transform],
}

/// Tensors the converter synthesizes rather than reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtraTensor {
    /// `rope_freqs.weight` for Llama-3 style `rope_type: llama3` scaling.
    Llama3RopeFreqs,
    /// `rope_factors_long.weight` from Phi-3's `rope_scaling.long_factor` (long-rope models).
    RopeFactorsLong,
    /// `rope_factors_short.weight` from `rope_scaling.short_factor`.
    RopeFactorsShort,
}

/// Which tokenizer conversion recipe a family uses (the vocab module implements them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VocabRecipe {
    /// `LlamaModel.set_vocab`: SentencePiece, else HF BPE with byte fallback, else GPT-2 BPE.
    Llama,
    /// `Qwen2Model.set_vocab`: SentencePiece if present, else GPT-2 BPE.
    Qwen,
    /// Gemma: SentencePiece, `add_space_prefix = false`.
    Gemma,
    /// Phi-3: its own SentencePiece reader.
    Phi3,
    /// Plain GPT-2 byte-level BPE.
    Gpt2,
}

/// One supported architecture family.
pub struct ArchSpec {
    /// HF `architectures[0]` values this spec handles.
    pub hf_archs: &'static [&'static str],
    /// `general.architecture`.
    pub gguf_arch: &'static str,
    /// The transformers config class (`model_type`) whose defaults apply.
    pub model_type: &'static str,
    /// Keys llama.cpp writes while it prepares tensors, i.e. right after
    /// `general.architecture` and before `general.type` (Phi-3's long-rope attention factor).
    pub early_steps: &'static [Step],
    /// Hyperparameter keys in write order.
    pub steps: &'static [Step],
    pub tensors: &'static [TensorRule],
    /// HF tensor names dropped on purpose (exact names).
    pub drop: &'static [&'static str],
    pub extra: &'static [ExtraTensor],
    pub vocab: VocabRecipe,
}

impl fmt::Debug for ArchSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArchSpec")
            .field("gguf_arch", &self.gguf_arch)
            .field("hf_archs", &self.hf_archs)
            .finish()
    }
}

/// A mapped tensor name with its transforms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapped {
    pub gguf_name: String,
    pub transforms: Vec<Transform>,
    /// Layer number, when the name has one.
    pub bid: Option<u32>,
}

/// Suffixes llama.cpp drops everywhere (`prepare_tensors`).
const ALWAYS_DROPPED: &[&str] = &[
    ".attention.masked_bias",
    ".attention.bias",
    ".rotary_emb.inv_freq",
];

impl ArchSpec {
    pub fn config_class(&self) -> Result<&'static ConfigClass, RegistryError> {
        CONFIG_CLASSES
            .iter()
            .find(|c| c.model_type == self.model_type)
            .ok_or_else(|| {
                RegistryError::Internal(format!("no config class '{}'", self.model_type))
            })
    }

    /// Maps an HF tensor name. `Ok(None)`: dropped on purpose. `Err`: unknown tensor.
    pub fn map_tensor(&self, hf_name: &str) -> Result<Option<Mapped>, String> {
        let name = hf_name.replace("language_model.", "");
        if ALWAYS_DROPPED.iter().any(|s| name.ends_with(s)) || self.drop.contains(&name.as_str()) {
            return Ok(None);
        }
        let bid = name
            .split('.')
            .find(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        let bid_num = bid.and_then(|b| b.parse::<u32>().ok());
        for (suffix, is_weight) in [(".weight", true), (".bias", false)] {
            let Some(stem) = name.strip_suffix(suffix) else {
                continue;
            };
            for rule in self.tensors {
                let pattern = match bid {
                    Some(b) => rule.hf.replace("{bid}", b),
                    None => rule.hf.to_string(),
                };
                if pattern.contains("{bid}") || pattern != stem {
                    continue;
                }
                let gguf = match bid {
                    Some(b) => rule.gguf.replace("{bid}", b),
                    None => rule.gguf.to_string(),
                };
                let transforms = if is_weight { rule.weight } else { rule.bias };
                return Ok(Some(Mapped {
                    gguf_name: format!("{gguf}{suffix}"),
                    transforms: transforms.to_vec(),
                    bid: bid_num,
                }));
            }
        }
        Err(format!(
            "tensor '{hf_name}' has no GGUF name in the {} map",
            self.gguf_arch
        ))
    }

    /// Evaluates the hyperparameter steps into GGUF keys (with `general.file_type` = `ftype`).
    pub fn hparam_kvs(
        &self,
        hp: &Hparams,
        ftype: u32,
    ) -> Result<Vec<(String, gguf::Value)>, RegistryError> {
        Self::eval(self.steps, self.gguf_arch, hp, ftype)
    }

    /// Evaluates [`ArchSpec::early_steps`].
    pub fn early_kvs(&self, hp: &Hparams) -> Result<Vec<(String, gguf::Value)>, RegistryError> {
        Self::eval(self.early_steps, self.gguf_arch, hp, 0)
    }

    fn eval(
        steps: &[Step],
        arch: &str,
        hp: &Hparams,
        ftype: u32,
    ) -> Result<Vec<(String, gguf::Value)>, RegistryError> {
        let mut out = gguf::Metadata::new();
        for step in steps {
            step.apply(arch, hp, ftype, &mut out)?;
        }
        Ok(out
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect())
    }
}

/// Reads `architectures[0]` (or `text_config.architectures[0]`) from a raw config.
pub fn hf_architecture(config: &serde_json::Value) -> Result<&str, RegistryError> {
    fn first(v: &serde_json::Value) -> Option<&str> {
        v.get("architectures")
            .and_then(|a| a.as_array())
            .and_then(|a| a.first())
            .and_then(|s| s.as_str())
    }
    first(config)
        .or_else(|| config.get("text_config").and_then(first))
        .ok_or(RegistryError::NoArchitecture)
}

/// Looks up an HF architecture name.
pub fn lookup(hf_arch: &str) -> Result<&'static ArchSpec, RegistryError> {
    ARCHS
        .iter()
        .find(|a| a.hf_archs.contains(&hf_arch))
        .ok_or_else(|| RegistryError::UnknownArchitecture {
            arch: hf_arch.to_string(),
            supported: supported(),
        })
}

/// Every supported HF architecture name, sorted.
pub fn supported() -> Vec<String> {
    let mut v: Vec<String> = ARCHS
        .iter()
        .flat_map(|a| a.hf_archs.iter().map(|s| s.to_string()))
        .collect();
    v.sort();
    v
}

use Transform::*;

const NONE: &[Transform] = &[];

const fn rule(hf: &'static str, gguf: &'static str) -> TensorRule {
    TensorRule {
        hf,
        gguf,
        weight: NONE,
        bias: NONE,
    }
}

const fn rule_w(hf: &'static str, gguf: &'static str, weight: &'static [Transform]) -> TensorRule {
    TensorRule {
        hf,
        gguf,
        weight,
        bias: NONE,
    }
}

/// The llama-layout block tensors shared by llama, mistral, qwen2, qwen3.
macro_rules! llama_block {
    ($q:expr, $k:expr) => {
        [
            rule("model.embed_tokens", "token_embd"),
            rule("lm_head", "output"),
            rule("model.norm", "output_norm"),
            rule("model.layers.{bid}.input_layernorm", "blk.{bid}.attn_norm"),
            TensorRule {
                hf: "model.layers.{bid}.self_attn.q_proj",
                gguf: "blk.{bid}.attn_q",
                weight: $q,
                bias: $q,
            },
            TensorRule {
                hf: "model.layers.{bid}.self_attn.k_proj",
                gguf: "blk.{bid}.attn_k",
                weight: $k,
                bias: $k,
            },
            rule("model.layers.{bid}.self_attn.v_proj", "blk.{bid}.attn_v"),
            rule(
                "model.layers.{bid}.self_attn.o_proj",
                "blk.{bid}.attn_output",
            ),
            rule(
                "model.layers.{bid}.post_attention_layernorm",
                "blk.{bid}.ffn_norm",
            ),
            rule("model.layers.{bid}.mlp.gate_proj", "blk.{bid}.ffn_gate"),
            rule("model.layers.{bid}.mlp.up_proj", "blk.{bid}.ffn_up"),
            rule("model.layers.{bid}.mlp.down_proj", "blk.{bid}.ffn_down"),
        ]
    };
}

const LLAMA_TENSORS: [TensorRule; 12] = llama_block!(&[PermuteQ], &[PermuteK]);
const QWEN2_TENSORS: [TensorRule; 12] = llama_block!(NONE, NONE);
const QWEN3_EXTRA: [TensorRule; 2] = [
    rule(
        "model.layers.{bid}.self_attn.q_norm",
        "blk.{bid}.attn_q_norm",
    ),
    rule(
        "model.layers.{bid}.self_attn.k_norm",
        "blk.{bid}.attn_k_norm",
    ),
];
const QWEN3_TENSORS: [TensorRule; 14] = concat_rules(QWEN2_TENSORS, QWEN3_EXTRA);

const fn concat_rules<const A: usize, const B: usize, const C: usize>(
    a: [TensorRule; A],
    b: [TensorRule; B],
) -> [TensorRule; C] {
    let mut out = [rule("", ""); C];
    let mut i = 0;
    while i < A {
        out[i] = a[i];
        i += 1;
    }
    while i < C {
        out[i] = b[i - A];
        i += 1;
    }
    out
}

const GEMMA_NORM: &[Transform] = &[AddOne];

const GEMMA2_TENSORS: [TensorRule; 14] = [
    rule("model.embed_tokens", "token_embd"),
    rule("lm_head", "output"),
    rule_w("model.norm", "output_norm", GEMMA_NORM),
    rule_w(
        "model.layers.{bid}.input_layernorm",
        "blk.{bid}.attn_norm",
        GEMMA_NORM,
    ),
    rule("model.layers.{bid}.self_attn.q_proj", "blk.{bid}.attn_q"),
    rule("model.layers.{bid}.self_attn.k_proj", "blk.{bid}.attn_k"),
    rule("model.layers.{bid}.self_attn.v_proj", "blk.{bid}.attn_v"),
    rule(
        "model.layers.{bid}.self_attn.o_proj",
        "blk.{bid}.attn_output",
    ),
    rule_w(
        "model.layers.{bid}.post_attention_layernorm",
        "blk.{bid}.post_attention_norm",
        GEMMA_NORM,
    ),
    rule_w(
        "model.layers.{bid}.pre_feedforward_layernorm",
        "blk.{bid}.ffn_norm",
        GEMMA_NORM,
    ),
    rule_w(
        "model.layers.{bid}.post_feedforward_layernorm",
        "blk.{bid}.post_ffw_norm",
        GEMMA_NORM,
    ),
    rule("model.layers.{bid}.mlp.gate_proj", "blk.{bid}.ffn_gate"),
    rule("model.layers.{bid}.mlp.up_proj", "blk.{bid}.ffn_up"),
    rule("model.layers.{bid}.mlp.down_proj", "blk.{bid}.ffn_down"),
];

const GEMMA3_EXTRA: [TensorRule; 2] = [
    rule_w(
        "model.layers.{bid}.self_attn.q_norm",
        "blk.{bid}.attn_q_norm",
        GEMMA_NORM,
    ),
    rule_w(
        "model.layers.{bid}.self_attn.k_norm",
        "blk.{bid}.attn_k_norm",
        GEMMA_NORM,
    ),
];
const GEMMA3_BASE: [TensorRule; 14] = {
    let mut t = GEMMA2_TENSORS;
    t[0] = rule_w("model.embed_tokens", "token_embd", &[TruncateToVocab]);
    t
};
const GEMMA3_TENSORS: [TensorRule; 16] = concat_rules(GEMMA3_BASE, GEMMA3_EXTRA);

const PHI3_TENSORS: [TensorRule; 9] = [
    rule("model.embed_tokens", "token_embd"),
    rule("lm_head", "output"),
    rule("model.norm", "output_norm"),
    rule("model.layers.{bid}.input_layernorm", "blk.{bid}.attn_norm"),
    rule(
        "model.layers.{bid}.self_attn.qkv_proj",
        "blk.{bid}.attn_qkv",
    ),
    rule(
        "model.layers.{bid}.self_attn.o_proj",
        "blk.{bid}.attn_output",
    ),
    rule(
        "model.layers.{bid}.post_attention_layernorm",
        "blk.{bid}.ffn_norm",
    ),
    rule("model.layers.{bid}.mlp.gate_up_proj", "blk.{bid}.ffn_up"),
    rule("model.layers.{bid}.mlp.down_proj", "blk.{bid}.ffn_down"),
];

const CONV1D: &[Transform] = &[Transpose];

const GPT2_TENSORS: [TensorRule; 10] = [
    rule("transformer.wte", "token_embd"),
    rule("transformer.wpe", "position_embd"),
    rule("transformer.ln_f", "output_norm"),
    rule("lm_head", "output"),
    rule("transformer.h.{bid}.ln_1", "blk.{bid}.attn_norm"),
    rule_w(
        "transformer.h.{bid}.attn.c_attn",
        "blk.{bid}.attn_qkv",
        CONV1D,
    ),
    rule_w(
        "transformer.h.{bid}.attn.c_proj",
        "blk.{bid}.attn_output",
        CONV1D,
    ),
    rule("transformer.h.{bid}.ln_2", "blk.{bid}.ffn_norm"),
    rule_w("transformer.h.{bid}.mlp.c_fc", "blk.{bid}.ffn_up", CONV1D),
    rule_w(
        "transformer.h.{bid}.mlp.c_proj",
        "blk.{bid}.ffn_down",
        CONV1D,
    ),
];

/// Every supported family.
pub static ARCHS: &[ArchSpec] = &[
    ArchSpec {
        hf_archs: &["LlamaForCausalLM", "LLaMAForCausalLM", "MistralForCausalLM"],
        gguf_arch: "llama",
        model_type: "llama",
        early_steps: &[],
        steps: steps::LLAMA,
        tensors: &LLAMA_TENSORS,
        drop: &[],
        extra: &[ExtraTensor::Llama3RopeFreqs],
        vocab: VocabRecipe::Llama,
    },
    ArchSpec {
        hf_archs: &["Qwen2ForCausalLM"],
        gguf_arch: "qwen2",
        model_type: "qwen2",
        early_steps: &[],
        steps: steps::TEXT_MODEL,
        tensors: &QWEN2_TENSORS,
        drop: &[],
        extra: &[],
        vocab: VocabRecipe::Qwen,
    },
    ArchSpec {
        hf_archs: &["Qwen3ForCausalLM"],
        gguf_arch: "qwen3",
        model_type: "qwen3",
        early_steps: &[],
        steps: steps::TEXT_MODEL,
        tensors: &QWEN3_TENSORS,
        drop: &[],
        extra: &[],
        vocab: VocabRecipe::Qwen,
    },
    ArchSpec {
        hf_archs: &["Gemma2ForCausalLM"],
        gguf_arch: "gemma2",
        model_type: "gemma2",
        early_steps: &[],
        steps: steps::GEMMA2,
        tensors: &GEMMA2_TENSORS,
        drop: &["lm_head.weight"],
        extra: &[],
        vocab: VocabRecipe::Gemma,
    },
    ArchSpec {
        hf_archs: &["Gemma3ForCausalLM"],
        gguf_arch: "gemma3",
        model_type: "gemma3_text",
        early_steps: &[],
        steps: steps::GEMMA3,
        tensors: &GEMMA3_TENSORS,
        drop: &[],
        extra: &[],
        vocab: VocabRecipe::Gemma,
    },
    ArchSpec {
        hf_archs: &["Phi3ForCausalLM"],
        gguf_arch: "phi3",
        model_type: "phi3",
        early_steps: steps::PHI3_EARLY,
        steps: steps::PHI3,
        tensors: &PHI3_TENSORS,
        drop: &[],
        extra: &[ExtraTensor::RopeFactorsLong, ExtraTensor::RopeFactorsShort],
        vocab: VocabRecipe::Phi3,
    },
    ArchSpec {
        hf_archs: &["GPT2LMHeadModel"],
        gguf_arch: "gpt2",
        model_type: "gpt2",
        early_steps: &[],
        steps: steps::GPT2,
        tensors: &GPT2_TENSORS,
        drop: &[],
        extra: &[],
        vocab: VocabRecipe::Gpt2,
    },
];

/// The llama.cpp Q/K row permutation. Rows of each head are reordered so that HF's
/// "rotate half" layout becomes ggml's interleaved (NORM) rope layout: within a head of
/// `head_dim` rows, output row `2i` is input row `i` and output row `2i + 1` is input row
/// `head_dim/2 + i`. Returns, for each output row, the input row it takes.
pub fn permute_rows(n_rows: usize, n_head: usize) -> Result<Vec<usize>, String> {
    if n_head == 0 || n_rows % (n_head * 2) != 0 {
        return Err(format!(
            "{n_rows} rows cannot be split into {n_head} heads of even size"
        ));
    }
    let head_dim = n_rows / n_head;
    let half = head_dim / 2;
    let mut map = Vec::with_capacity(n_rows);
    for h in 0..n_head {
        for i in 0..half {
            map.push(h * head_dim + i);
            map.push(h * head_dim + half + i);
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_architecture_lists_supported() {
        let err = lookup("FalconForCausalLM").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("FalconForCausalLM")
                && msg.contains("Qwen3ForCausalLM")
                && msg.contains("GPT2LMHeadModel")
        );
    }

    #[test]
    fn maps_names_with_layer_numbers_and_transforms() {
        let llama = lookup("LlamaForCausalLM").unwrap();
        let m = llama
            .map_tensor("model.layers.12.self_attn.k_proj.weight")
            .unwrap()
            .unwrap();
        assert_eq!(m.gguf_name, "blk.12.attn_k.weight");
        assert_eq!(m.transforms, vec![PermuteK]);
        assert_eq!(m.bid, Some(12));
        assert!(llama
            .map_tensor("model.layers.0.self_attn.rotary_emb.inv_freq")
            .unwrap()
            .is_none());
        assert!(llama
            .map_tensor("model.layers.0.mlp.experts.weight")
            .is_err());
        let gemma = lookup("Gemma2ForCausalLM").unwrap();
        assert!(gemma.map_tensor("lm_head.weight").unwrap().is_none());
        let gpt2 = lookup("GPT2LMHeadModel").unwrap();
        let m = gpt2
            .map_tensor("transformer.h.1.attn.c_attn.bias")
            .unwrap()
            .unwrap();
        assert_eq!(
            (m.gguf_name.as_str(), m.transforms.len()),
            ("blk.1.attn_qkv.bias", 0)
        );
    }

    #[test]
    fn permutation_interleaves_halves() {
        // 2 heads of 4 rows: [0,1,2,3 | 4,5,6,7] -> [0,2,1,3 | 4,6,5,7]
        assert_eq!(permute_rows(8, 2).unwrap(), vec![0, 2, 1, 3, 4, 6, 5, 7]);
        assert!(permute_rows(6, 4).is_err());
    }
}
