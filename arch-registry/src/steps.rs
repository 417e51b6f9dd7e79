//! Hyperparameter keys as data: each family's `set_gguf_parameters` as a list of steps.
//!
//! A step writes zero or more keys. Writing a key that already exists keeps its position and
//! replaces the value, which is what gguf-py's writer does when a subclass re-adds a key after
//! calling its parent (Gemma 3 does this).

use gguf::{Metadata, Value};
use serde_json::Value as Json;

use crate::hparams::Hparams;
use crate::RegistryError;

/// The GGUF value type a key is written with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ty {
    U32,
    F32,
    Bool,
    Str,
}

/// A computed value: `Ok(None)` writes nothing.
pub type Compute = fn(&Hparams) -> Result<Option<Json>, RegistryError>;

/// One step of a family's hyperparameter program.
#[derive(Clone, Copy)]
pub enum Step {
    /// `{arch}.KEY` from the first *present* HF key (llama.cpp's `find_hparam`); nothing when that
    /// value is null or no key is present.
    Find(&'static str, Ty, &'static [&'static str]),
    /// Like `Find` but an error when absent.
    Require(&'static str, Ty, &'static [&'static str]),
    /// `{arch}.KEY` from `hparams.get(key, default)`.
    GetOr(&'static str, Ty, &'static str, f64),
    /// `{arch}.KEY` computed from the hyperparameters.
    Computed(&'static str, Ty, Compute),
    /// `general.file_type`.
    FileType,
    /// The common `TextModel.set_gguf_parameters` sequence.
    TextModel,
}

impl Step {
    pub(crate) fn apply(
        &self,
        arch: &str,
        hp: &Hparams,
        ftype: u32,
        out: &mut Metadata,
    ) -> Result<(), RegistryError> {
        let key = |k: &str| format!("{arch}.{k}");
        match *self {
            Step::Find(k, ty, keys) => {
                if let Some(v) = hp.find_some(keys) {
                    out.set(key(k), to_value(ty, v, k)?);
                }
            }
            Step::Require(k, ty, keys) => {
                let v = hp
                    .find_some(keys)
                    .ok_or_else(|| RegistryError::MissingHparam(keys.join(" / ")))?;
                out.set(key(k), to_value(ty, v, k)?);
            }
            Step::GetOr(k, ty, hf, default) => {
                let v = match hp.get(hf) {
                    Some(v) if !v.is_null() => v.clone(),
                    Some(_) => return Err(RegistryError::BadHparam(format!("{hf} is null"))),
                    None => Json::from(default),
                };
                out.set(key(k), to_value(ty, &v, k)?);
            }
            Step::Computed(k, ty, f) => {
                if let Some(v) = f(hp)? {
                    out.set(key(k), to_value(ty, &v, k)?);
                }
            }
            Step::FileType => out.set("general.file_type", Value::U32(ftype)),
            Step::TextModel => {
                for s in TEXT_MODEL_BODY {
                    s.apply(arch, hp, ftype, out)?;
                }
            }
        }
        Ok(())
    }
}

fn to_value(ty: Ty, v: &Json, key: &str) -> Result<Value, RegistryError> {
    let bad = || RegistryError::BadHparam(format!("value {v} for {key} is not a {ty:?}"));
    Ok(match ty {
        Ty::U32 => {
            let n = v.as_u64().or_else(|| {
                v.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                    .map(|f| f as u64)
            });
            Value::U32(n.and_then(|n| u32::try_from(n).ok()).ok_or_else(bad)?)
        }
        Ty::F32 => Value::F32(v.as_f64().ok_or_else(bad)? as f32),
        Ty::Bool => Value::Bool(v.as_bool().ok_or_else(bad)?),
        Ty::Str => Value::String(v.as_str().ok_or_else(bad)?.to_string()),
    })
}

const BLOCK_KEYS: &[&str] = &["n_layers", "num_hidden_layers", "n_layer", "num_layers"];

/// `TextModel.set_gguf_parameters`, minus the MoE/mrope branches no supported family uses yet
/// (they error out below rather than being silently skipped).
const TEXT_MODEL_BODY: &[Step] = &[
    Step::Require("block_count", Ty::U32, BLOCK_KEYS),
    Step::Find(
        "context_length",
        Ty::U32,
        &[
            "max_position_embeddings",
            "n_ctx",
            "n_positions",
            "max_length",
            "max_sequence_length",
            "model_max_length",
        ],
    ),
    Step::Find(
        "embedding_length",
        Ty::U32,
        &["hidden_size", "n_embd", "dim"],
    ),
    Step::Find(
        "feed_forward_length",
        Ty::U32,
        &[
            "prefix_dense_intermediate_size",
            "dense_intermediate_size",
            "intermediate_size",
            "n_inner",
            "hidden_dim",
        ],
    ),
    Step::Find(
        "attention.head_count",
        Ty::U32,
        &["num_attention_heads", "n_head", "n_heads"],
    ),
    Step::Find(
        "attention.head_count_kv",
        Ty::U32,
        &["num_key_value_heads", "n_kv_heads"],
    ),
    Step::Computed("attention.causal", Ty::Bool, |hp| {
        Ok((hp.get("is_causal") == Some(&Json::Bool(false))).then_some(Json::Bool(false)))
    }),
    Step::Computed("rope.scaling.type", Ty::Str, |hp| {
        let rp = hp.rope_full();
        let factor = rp.get("factor").filter(|f| !f.is_null());
        Ok(match rp.get("rope_type").and_then(Json::as_str) {
            Some("linear") if factor.is_some() => Some(Json::from("linear")),
            Some("yarn") if factor.is_some() => Some(Json::from("yarn")),
            Some("su" | "longrope") => Some(Json::from("longrope")),
            _ => None,
        })
    }),
    Step::Computed("rope.scaling.factor", Ty::F32, |hp| {
        let rp = hp.rope_full();
        Ok(match rp.get("rope_type").and_then(Json::as_str) {
            Some("linear" | "yarn") => rp.get("factor").filter(|f| !f.is_null()).cloned(),
            _ => None,
        })
    }),
    Step::Computed("rope.scaling.original_context_length", Ty::U32, |hp| {
        let rp = hp.rope_full();
        if rp.get("rope_type").and_then(Json::as_str) == Some("yarn")
            && rp.get("factor").is_some_and(|f| !f.is_null())
        {
            return rp
                .get("original_max_position_embeddings")
                .cloned()
                .map(Some)
                .ok_or_else(|| {
                    RegistryError::MissingHparam(
                        "rope_scaling.original_max_position_embeddings".into(),
                    )
                });
        }
        Ok(None)
    }),
    Step::Computed("rope.scaling.yarn_ext_factor", Ty::F32, |hp| {
        Ok(yarn_param(hp, &["extrapolation_factor"]))
    }),
    Step::Computed("rope.scaling.yarn_attn_factor", Ty::F32, |hp| {
        Ok(yarn_param(hp, &["attention_factor", "attn_factor"]))
    }),
    Step::Computed("rope.scaling.yarn_beta_fast", Ty::F32, |hp| {
        Ok(yarn_param(hp, &["beta_fast"]))
    }),
    Step::Computed("rope.scaling.yarn_beta_slow", Ty::F32, |hp| {
        Ok(yarn_param(hp, &["beta_slow"]))
    }),
    Step::Computed("rope.dimension_sections", Ty::U32, |hp| {
        if hp.rope_parameters().contains_key("mrope_section") {
            return Err(RegistryError::Unsupported(
                "mrope_section (multimodal rope) is not supported yet".into(),
            ));
        }
        Ok(None)
    }),
    Step::Computed("rope.freq_base", Ty::F32, |hp| {
        Ok(hp
            .rope_full()
            .get("rope_theta")
            .filter(|v| !v.is_null())
            .cloned())
    }),
    Step::Computed("rope.freq_base_swa", Ty::F32, |hp| {
        Ok(hp
            .rope_parameters()
            .get("sliding_attention")
            .and_then(|s| s.get("rope_theta"))
            .filter(|v| !v.is_null())
            .cloned())
    }),
    Step::Find(
        "attention.layer_norm_rms_epsilon",
        Ty::F32,
        &["rms_norm_eps", "norm_eps"],
    ),
    Step::Find(
        "attention.layer_norm_epsilon",
        Ty::F32,
        &["layer_norm_eps", "layer_norm_epsilon", "norm_epsilon"],
    ),
    Step::Computed("expert_count", Ty::U32, |hp| {
        if hp
            .find_some(&["num_local_experts", "num_experts", "n_routed_experts"])
            .is_some()
        {
            return Err(RegistryError::Unsupported(
                "mixture-of-experts checkpoints are not supported yet".into(),
            ));
        }
        Ok(None)
    }),
    Step::Computed("attention.key_length", Ty::U32, |hp| {
        Ok(hp.get("head_dim").filter(|v| !v.is_null()).cloned())
    }),
    Step::Computed("attention.value_length", Ty::U32, |hp| {
        Ok(hp.get("head_dim").filter(|v| !v.is_null()).cloned())
    }),
    Step::FileType,
];

fn yarn_param(hp: &Hparams, keys: &[&str]) -> Option<Json> {
    let rp = hp.rope_full();
    if rp.get("rope_type").and_then(Json::as_str) != Some("yarn")
        || rp.get("factor").is_none_or(Json::is_null)
    {
        return None;
    }
    keys.iter()
        .find_map(|k| rp.get(*k))
        .filter(|v| !v.is_null())
        .cloned()
}

fn head_dim_or_split(hp: &Hparams) -> Result<Option<Json>, RegistryError> {
    if let Some(h) = hp.get("head_dim").filter(|v| !v.is_null()) {
        return Ok(Some(h.clone()));
    }
    let hidden = hp.require_u64(&["hidden_size"])?;
    let heads = hp.require_u64(&["num_attention_heads"])?;
    if heads == 0 {
        return Err(RegistryError::BadHparam("num_attention_heads is 0".into()));
    }
    Ok(Some(Json::from(hidden / heads)))
}

/// Generic `TextModel` families (Qwen2, Qwen3).
pub const TEXT_MODEL: &[Step] = &[Step::TextModel];

/// `LlamaModel.set_gguf_parameters`.
pub const LLAMA: &[Step] = &[
    Step::TextModel,
    Step::Require("vocab_size", Ty::U32, &["vocab_size"]),
    Step::Computed("rope.dimension_count", Ty::U32, head_dim_or_split),
];

/// `Gemma2Model.set_gguf_parameters` (does not call the generic one).
pub const GEMMA2: &[Step] = &[
    Step::Require("context_length", Ty::U32, &["max_position_embeddings"]),
    Step::Require("embedding_length", Ty::U32, &["hidden_size"]),
    Step::Require("block_count", Ty::U32, BLOCK_KEYS),
    Step::Require("feed_forward_length", Ty::U32, &["intermediate_size"]),
    Step::Require("attention.head_count", Ty::U32, &["num_attention_heads"]),
    Step::Require(
        "attention.head_count_kv",
        Ty::U32,
        &["num_key_value_heads", "num_attention_heads"],
    ),
    Step::Require(
        "attention.layer_norm_rms_epsilon",
        Ty::F32,
        &["rms_norm_eps"],
    ),
    Step::Require("attention.key_length", Ty::U32, &["head_dim"]),
    Step::Require("attention.value_length", Ty::U32, &["head_dim"]),
    Step::FileType,
    Step::Require(
        "attn_logit_softcapping",
        Ty::F32,
        &["attn_logit_softcapping"],
    ),
    Step::Require(
        "final_logit_softcapping",
        Ty::F32,
        &["final_logit_softcapping"],
    ),
    Step::Require("attention.sliding_window", Ty::U32, &["sliding_window"]),
];

/// `Gemma3Model.set_gguf_parameters`: the generic sequence, then re-set keys in place.
pub const GEMMA3: &[Step] = &[
    Step::TextModel,
    Step::GetOr(
        "context_length",
        Ty::U32,
        "max_position_embeddings",
        131072.0,
    ),
    Step::GetOr("attention.head_count", Ty::U32, "num_attention_heads", 8.0),
    Step::GetOr(
        "attention.layer_norm_rms_epsilon",
        Ty::F32,
        "rms_norm_eps",
        1e-6,
    ),
    Step::GetOr("attention.key_length", Ty::U32, "head_dim", 256.0),
    Step::GetOr("attention.value_length", Ty::U32, "head_dim", 256.0),
    Step::Computed("rope.freq_base", Ty::F32, |hp| {
        Ok(Some(
            hp.rope_full()
                .get("rope_theta")
                .filter(|v| !v.is_null())
                .cloned()
                .unwrap_or(Json::from(1_000_000.0)),
        ))
    }),
    Step::Computed("final_logit_softcapping", Ty::F32, |hp| {
        if hp
            .get("attn_logit_softcapping")
            .is_some_and(|v| !v.is_null())
        {
            return Err(RegistryError::Unsupported(
                "Gemma 3 with attn_logit_softcapping".into(),
            ));
        }
        let v = hp
            .get("final_logit_softcapping")
            .filter(|v| !v.is_null() && v.as_f64() != Some(0.0));
        Ok(v.cloned())
    }),
    Step::Computed("attention.sliding_window", Ty::U32, |hp| {
        if hp.get("sliding_window_pattern").and_then(Json::as_f64) == Some(1.0) {
            return Ok(None);
        }
        Ok(Some(hp.get("sliding_window").cloned().ok_or_else(
            || RegistryError::MissingHparam("sliding_window".into()),
        )?))
    }),
    Step::GetOr(
        "attention.head_count_kv",
        Ty::U32,
        "num_key_value_heads",
        4.0,
    ),
];

/// `Phi3MiniModel.set_gguf_parameters`.
pub const PHI3: &[Step] = &[
    Step::Require(
        "context_length",
        Ty::U32,
        &["n_positions", "max_position_embeddings"],
    ),
    Step::Computed("rope.scaling.original_context_length", Ty::U32, |hp| {
        hp.rope_parameters()
            .get("original_max_position_embeddings")
            .cloned()
            .map(Some)
            .ok_or_else(|| RegistryError::MissingHparam("original_max_position_embeddings".into()))
    }),
    Step::Require("embedding_length", Ty::U32, &["hidden_size", "n_embd"]),
    Step::Require("feed_forward_length", Ty::U32, &["intermediate_size"]),
    Step::Require("block_count", Ty::U32, BLOCK_KEYS),
    Step::Require(
        "attention.head_count",
        Ty::U32,
        &["num_attention_heads", "n_head"],
    ),
    Step::Require(
        "attention.head_count_kv",
        Ty::U32,
        &["num_key_value_heads", "n_head_kv"],
    ),
    Step::Require(
        "attention.layer_norm_rms_epsilon",
        Ty::F32,
        &["rms_norm_eps"],
    ),
    Step::Computed("rope.dimension_count", Ty::U32, |hp| {
        let n_embd = hp.require_u64(&["hidden_size", "n_embd"])?;
        let n_head = hp.require_u64(&["num_attention_heads", "n_head"])?;
        if n_head == 0 {
            return Err(RegistryError::BadHparam("num_attention_heads is 0".into()));
        }
        Ok(Some(Json::from(phi3_rope_dims(hp, n_embd, n_head))))
    }),
    Step::Computed("rope.freq_base", Ty::F32, |hp| {
        hp.rope_full()
            .get("rope_theta")
            .cloned()
            .map(Some)
            .ok_or_else(|| RegistryError::MissingHparam("rope_theta".into()))
    }),
    Step::FileType,
    Step::Computed("attention.sliding_window", Ty::U32, |hp| {
        Ok(Some(
            hp.get("sliding_window")
                .filter(|v| !v.is_null())
                .cloned()
                .unwrap_or(Json::from(0)),
        ))
    }),
];

/// `int(partial_rotary_factor * n_embd) // n_head`.
pub fn phi3_rope_dims(hp: &Hparams, n_embd: u64, n_head: u64) -> u64 {
    let pct = hp
        .rope_parameters()
        .get("partial_rotary_factor")
        .and_then(Json::as_f64)
        .unwrap_or(1.0);
    ((pct * n_embd as f64) as u64) / n_head
}

/// Phi-3 long-rope: `rope.scaling.attn_factor`, written by llama.cpp while it generates the
/// rope factor tensors (hence before `general.type`).
pub const PHI3_EARLY: &[Step] = &[Step::Computed("rope.scaling.attn_factor", Ty::F32, |hp| {
    let rp = hp.rope_parameters();
    if rp
        .get("long_factor")
        .and_then(Json::as_array)
        .is_none_or(|a| a.is_empty())
    {
        return Ok(None);
    }
    let max_pos = hp
        .f64(&["n_positions", "max_position_embeddings"])
        .ok_or_else(|| RegistryError::MissingHparam("max_position_embeddings".into()))?;
    let orig = rp
        .get("original_max_position_embeddings")
        .and_then(Json::as_f64)
        .ok_or_else(|| RegistryError::MissingHparam("original_max_position_embeddings".into()))?;
    let scale = max_pos / orig;
    let factor = match rp
        .get("rope_type")
        .and_then(Json::as_str)
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("su" | "longrope") if scale > 1.0 => (1.0 + scale.ln() / orig.ln()).sqrt(),
        Some("yarn") if scale > 1.0 => 0.1 * scale.ln() + 1.0,
        Some("su" | "longrope" | "yarn") => 1.0,
        other => {
            return Err(RegistryError::Unsupported(format!(
                "Phi-3 rope scaling type {other:?}"
            )))
        }
    };
    Ok(Some(Json::from(factor)))
})];

/// `GPT2Model.set_gguf_parameters`. llama.cpp reads `n_ctx`, which transformers 5 no longer
/// writes; we fall back to `n_positions` (the same number in every GPT-2 config) instead of failing.
pub const GPT2: &[Step] = &[
    Step::Require("block_count", Ty::U32, BLOCK_KEYS),
    Step::Require("context_length", Ty::U32, &["n_ctx", "n_positions"]),
    Step::Require("embedding_length", Ty::U32, &["n_embd"]),
    Step::Computed("feed_forward_length", Ty::U32, |hp| {
        Ok(Some(Json::from(4 * hp.require_u64(&["n_embd"])?)))
    }),
    Step::Require("attention.head_count", Ty::U32, &["n_head"]),
    Step::Require(
        "attention.layer_norm_epsilon",
        Ty::F32,
        &["layer_norm_epsilon"],
    ),
    Step::FileType,
];
