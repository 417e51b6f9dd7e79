//! `config.json` as `transformers` sees it.
//!
//! llama.cpp's converter does not read `config.json` raw: it reads
//! `AutoConfig.from_pretrained(dir).to_dict()`, i.e. the file overlaid on the config class's
//! defaults plus whatever the class's `__init__` derives (a default `head_dim`, rope parameters
//! folded into `rope_parameters`, …). Reproducing the GGUF metadata therefore means reproducing
//! that dictionary. The defaults below were dumped from transformers 5.23's config classes
//! (`AutoConfig.for_model(model_type).to_dict()`); the derivations are the ones their `__init__`
//! performs, reduced to flags.

use serde_json::{Map, Value};

use crate::RegistryError;

/// How one `model_type`'s config class fills in and derives values.
pub struct ConfigClass {
    pub model_type: &'static str,
    /// Class defaults as JSON (keys whose default is computed are left out and derived below).
    pub defaults: &'static str,
    /// `head_dim = hidden_size // num_attention_heads` when absent or null.
    pub derive_head_dim: bool,
    /// `num_key_value_heads = num_attention_heads` when null.
    pub kv_heads_from_heads: bool,
    /// Default `rope_theta` when the file has none.
    pub default_theta: f64,
    pub rope: RopeStyle,
    /// Qwen2/Qwen3: `sliding_window` is nulled unless `use_sliding_window`.
    pub sliding_window_needs_flag: bool,
}

/// How the class folds rope settings into `rope_parameters`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// No rotary embeddings (GPT-2).
    None,
    /// One flat dict: `rope_scaling` (or `rope_parameters`) plus `rope_theta` and `rope_type`.
    Flat,
    /// Gemma 3: `{full_attention: {...}, sliding_attention: {...}}` with `rope_local_base_freq`.
    Gemma3,
}

pub const CONFIG_CLASSES: &[ConfigClass] = &[
    ConfigClass {
        model_type: "llama",
        defaults: r#"{"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": null, "hidden_act": "silu", "max_position_embeddings": 2048, "rms_norm_eps": 1e-06, "pad_token_id": null, "bos_token_id": 1, "eos_token_id": 2, "pretraining_tp": 1, "tie_word_embeddings": false, "attention_bias": false, "mlp_bias": false, "head_dim": null}"#,
        derive_head_dim: true,
        kv_heads_from_heads: true,
        default_theta: 10000.0,
        rope: RopeStyle::Flat,
        sliding_window_needs_flag: false,
    },
    ConfigClass {
        model_type: "mistral",
        defaults: r#"{"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": null, "hidden_act": "silu", "max_position_embeddings": 131072, "rms_norm_eps": 1e-06, "pad_token_id": null, "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": false, "sliding_window": 4096}"#,
        derive_head_dim: true,
        kv_heads_from_heads: true,
        default_theta: 10000.0,
        rope: RopeStyle::Flat,
        sliding_window_needs_flag: false,
    },
    ConfigClass {
        model_type: "qwen2",
        defaults: r#"{"vocab_size": 151936, "hidden_size": 4096, "intermediate_size": 22016, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32, "hidden_act": "silu", "max_position_embeddings": 32768, "rms_norm_eps": 1e-06, "tie_word_embeddings": false, "use_sliding_window": false, "sliding_window": 4096, "max_window_layers": 28, "pad_token_id": null, "bos_token_id": null, "eos_token_id": null}"#,
        derive_head_dim: false,
        kv_heads_from_heads: true,
        default_theta: 10000.0,
        rope: RopeStyle::Flat,
        sliding_window_needs_flag: true,
    },
    ConfigClass {
        model_type: "qwen3",
        defaults: r#"{"vocab_size": 151936, "hidden_size": 4096, "intermediate_size": 22016, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32, "head_dim": 128, "hidden_act": "silu", "max_position_embeddings": 32768, "rms_norm_eps": 1e-06, "tie_word_embeddings": false, "attention_bias": false, "use_sliding_window": false, "sliding_window": 4096, "max_window_layers": 28, "pad_token_id": null, "bos_token_id": null, "eos_token_id": null}"#,
        derive_head_dim: false,
        kv_heads_from_heads: true,
        default_theta: 10000.0,
        rope: RopeStyle::Flat,
        sliding_window_needs_flag: true,
    },
    ConfigClass {
        model_type: "gemma2",
        defaults: r#"{"vocab_size": 256000, "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26, "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh", "max_position_embeddings": 8192, "rms_norm_eps": 1e-06, "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2, "tie_word_embeddings": true, "attention_bias": false, "query_pre_attn_scalar": 256, "sliding_window": 4096, "final_logit_softcapping": 30.0, "attn_logit_softcapping": 50.0, "use_bidirectional_attention": null}"#,
        derive_head_dim: false,
        kv_heads_from_heads: false,
        default_theta: 10000.0,
        rope: RopeStyle::Flat,
        sliding_window_needs_flag: false,
    },
    ConfigClass {
        model_type: "gemma3_text",
        defaults: r#"{"vocab_size": 262208, "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26, "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh", "max_position_embeddings": 131072, "rms_norm_eps": 1e-06, "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2, "tie_word_embeddings": true, "attention_bias": false, "query_pre_attn_scalar": 256, "sliding_window": 4096, "final_logit_softcapping": null, "attn_logit_softcapping": null, "use_bidirectional_attention": false}"#,
        derive_head_dim: false,
        kv_heads_from_heads: false,
        default_theta: 1000000.0,
        rope: RopeStyle::Gemma3,
        sliding_window_needs_flag: false,
    },
    ConfigClass {
        model_type: "phi3",
        defaults: r#"{"vocab_size": 32064, "hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": null, "hidden_act": "silu", "max_position_embeddings": 4096, "original_max_position_embeddings": 4096, "rms_norm_eps": 1e-05, "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": 32000, "pad_token_id": 32000, "sliding_window": null}"#,
        derive_head_dim: false,
        kv_heads_from_heads: true,
        default_theta: 10000.0,
        rope: RopeStyle::Flat,
        sliding_window_needs_flag: false,
    },
    ConfigClass {
        model_type: "gpt2",
        defaults: r#"{"vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12, "n_inner": null, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-05, "scale_attn_weights": true, "bos_token_id": 50256, "eos_token_id": 50256, "pad_token_id": null, "tie_word_embeddings": true}"#,
        derive_head_dim: false,
        kv_heads_from_heads: false,
        default_theta: 10000.0,
        rope: RopeStyle::None,
        sliding_window_needs_flag: false,
    },
];

/// The normalized hyperparameters of a model: what `AutoConfig(...).to_dict()` would return,
/// with `text_config` merged into the root as llama.cpp's `TextModel` does.
#[derive(Clone, Debug)]
pub struct Hparams {
    map: Map<String, Value>,
}

impl Hparams {
    /// Normalizes a raw `config.json` for its `model_type`.
    pub fn from_config(raw: &Value, class: &ConfigClass) -> Result<Hparams, RegistryError> {
        let raw = raw.as_object().ok_or(RegistryError::ConfigNotObject)?;
        let mut map: Map<String, Value> = serde_json::from_str(class.defaults).map_err(|e| {
            RegistryError::Internal(format!("defaults of {}: {e}", class.model_type))
        })?;
        for (k, v) in raw {
            map.insert(k.clone(), v.clone());
        }
        if let Some(Value::Object(text)) = raw.get("text_config") {
            for (k, v) in text {
                map.insert(k.clone(), v.clone());
            }
        }
        let heads = map.get("num_attention_heads").and_then(Value::as_u64);
        if class.derive_head_dim && map.get("head_dim").is_none_or(Value::is_null) {
            let hidden = map.get("hidden_size").and_then(Value::as_u64);
            if let Some(d) = hidden.zip(heads).and_then(|(h, n)| h.checked_div(n)) {
                map.insert("head_dim".into(), Value::from(d));
            }
        }
        if class.kv_heads_from_heads && map.get("num_key_value_heads").is_none_or(Value::is_null) {
            if let Some(n) = heads {
                map.insert("num_key_value_heads".into(), Value::from(n));
            }
        }
        if class.sliding_window_needs_flag
            && map.get("use_sliding_window") != Some(&Value::Bool(true))
        {
            map.insert("sliding_window".into(), Value::Null);
        }
        normalize_rope(&mut map, class);
        Ok(Hparams { map })
    }

    /// Wraps an already-normalized dictionary (tests, or a config read from elsewhere).
    pub fn from_map(map: Map<String, Value>) -> Hparams {
        Hparams { map }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.map.get(key)
    }

    /// The normalized dictionary as JSON (what llama.cpp's `self.hparams` holds).
    pub fn to_json(&self) -> Value {
        Value::Object(self.map.clone())
    }

    /// llama.cpp's `find_hparam`: the value of the first key that is *present*, even if null.
    pub fn find(&self, keys: &[&str]) -> Option<&Value> {
        keys.iter().find_map(|k| self.map.get(*k))
    }

    /// `find` that treats a null value as absent.
    pub fn find_some(&self, keys: &[&str]) -> Option<&Value> {
        self.find(keys).filter(|v| !v.is_null())
    }

    pub fn u64(&self, keys: &[&str]) -> Option<u64> {
        self.find_some(keys).and_then(json_u64)
    }

    pub fn f64(&self, keys: &[&str]) -> Option<f64> {
        self.find_some(keys).and_then(Value::as_f64)
    }

    /// A required unsigned integer, with an error that names the keys tried.
    pub fn require_u64(&self, keys: &[&str]) -> Result<u64, RegistryError> {
        self.u64(keys)
            .ok_or_else(|| RegistryError::MissingHparam(keys.join(" / ")))
    }

    /// The rope parameters dict llama.cpp's `TextModel.__init__` builds (`rope_parameters`
    /// merged with the legacy top-level keys).
    pub fn rope_parameters(&self) -> Map<String, Value> {
        let mut rp = match self
            .map
            .get("rope_parameters")
            .or_else(|| self.map.get("rope_scaling"))
        {
            Some(Value::Object(o)) => o.clone(),
            _ => Map::new(),
        };
        let nested = rp.contains_key("full_attention") || rp.contains_key("sliding_attention");
        if !nested {
            let local = self.find_some(&[
                "local_rope_theta",
                "rope_local_theta",
                "rope_theta_local",
                "swa_rope_theta",
                "rope_local_base_freq",
            ]);
            if let Some(l) = local {
                rp.insert(
                    "sliding_attention".into(),
                    serde_json::json!({ "rope_theta": l }),
                );
            }
            let theta = self.find_some(&[
                "global_rope_theta",
                "rope_global_theta",
                "rope_theta_global",
                "rope_theta",
                "rotary_emb_base",
            ]);
            if let Some(t) = theta {
                rp.entry("rope_theta").or_insert_with(|| t.clone());
            }
            if let Some(t) = rp.get("type").cloned() {
                rp.entry("rope_type").or_insert(t);
            }
            if let Some(p) = self.find_some(&["partial_rotary_factor", "rope_pct", "rope_percent"])
            {
                rp.entry("partial_rotary_factor")
                    .or_insert_with(|| p.clone());
            }
            if let Some(o) = self.find_some(&["original_max_position_embeddings"]) {
                rp.entry("original_max_position_embeddings")
                    .or_insert_with(|| o.clone());
            }
        }
        rp
    }

    /// The parameters of full-attention layers (`rope_parameters.full_attention` or the whole).
    pub fn rope_full(&self) -> Map<String, Value> {
        let rp = self.rope_parameters();
        match rp.get("full_attention") {
            Some(Value::Object(o)) => o.clone(),
            _ => rp,
        }
    }
}

fn json_u64(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0)
            .map(|f| f as u64)
    })
}

/// Folds rope settings the way the config class's `convert_rope_params_to_dict` and
/// `standardize_rope_params` do, then drops the legacy keys `to_dict` no longer has.
fn normalize_rope(map: &mut Map<String, Value>, class: &ConfigClass) {
    let scaling = map.remove("rope_scaling").filter(|v| !v.is_null());
    let theta = map.remove("rope_theta").filter(|v| !v.is_null());
    match class.rope {
        RopeStyle::None => {
            if let Some(s) = scaling {
                map.insert("rope_scaling".into(), s);
            }
            if let Some(t) = theta {
                map.insert("rope_theta".into(), t);
            }
        }
        RopeStyle::Flat => {
            let mut rp = match scaling.or_else(|| map.get("rope_parameters").cloned()) {
                Some(Value::Object(o)) => o,
                _ => Map::new(),
            };
            let theta = theta.unwrap_or(Value::from(class.default_theta));
            rp.entry("rope_theta").or_insert(theta);
            if let Some(p) = map.get("partial_rotary_factor").cloned() {
                rp.entry("partial_rotary_factor").or_insert(p);
            }
            if class.model_type == "phi3" {
                rp.entry("partial_rotary_factor")
                    .or_insert(Value::from(1.0));
            }
            let ty = rp.get("type").cloned().unwrap_or(Value::from("default"));
            rp.entry("rope_type").or_insert(ty);
            if class.model_type == "phi3"
                && matches!(
                    rp.get("rope_type").and_then(Value::as_str),
                    Some("su" | "yarn")
                )
            {
                rp.insert("rope_type".into(), Value::from("longrope"));
            }
            if matches!(
                rp.get("rope_type").and_then(Value::as_str),
                Some("llama3" | "yarn" | "longrope")
            ) {
                match map.get("original_max_position_embeddings").cloned() {
                    Some(o) => {
                        rp.insert("original_max_position_embeddings".into(), o);
                    }
                    None => {
                        if let Some(m) = map.get("max_position_embeddings").cloned() {
                            rp.entry("original_max_position_embeddings").or_insert(m);
                        }
                    }
                }
            }
            map.insert("rope_parameters".into(), Value::Object(rp));
        }
        RopeStyle::Gemma3 => {
            let local = map.remove("rope_local_base_freq").filter(|v| !v.is_null());
            let mut rp = match map.get("rope_parameters").cloned() {
                Some(Value::Object(o)) => o,
                _ => {
                    let mut m = Map::new();
                    m.insert(
                        "full_attention".into(),
                        serde_json::json!({ "rope_type": "default" }),
                    );
                    m.insert(
                        "sliding_attention".into(),
                        serde_json::json!({ "rope_type": "default" }),
                    );
                    m
                }
            };
            if let Some(Value::Object(s)) = scaling {
                if let Some(Value::Object(full)) = rp.get_mut("full_attention") {
                    for (k, v) in s {
                        full.insert(k, v);
                    }
                }
            }
            let full_theta = theta.unwrap_or(Value::from(class.default_theta));
            let local_theta = local.unwrap_or(Value::from(10000.0));
            for (key, t) in [
                ("full_attention", full_theta),
                ("sliding_attention", local_theta),
            ] {
                let entry = rp
                    .entry(key)
                    .or_insert_with(|| serde_json::json!({ "rope_type": "default" }));
                if let Value::Object(o) = entry {
                    o.entry("rope_theta").or_insert(t);
                    let ty = o.get("type").cloned().unwrap_or(Value::from("default"));
                    o.entry("rope_type").or_insert(ty);
                }
            }
            map.insert("rope_parameters".into(), Value::Object(rp));
            if let Some(p) = map.remove("sliding_window_pattern") {
                map.insert("_sliding_window_pattern".into(), p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(mt: &str) -> &'static ConfigClass {
        CONFIG_CLASSES.iter().find(|c| c.model_type == mt).unwrap()
    }

    #[test]
    fn llama_derives_head_dim_and_kv_heads() {
        let raw = serde_json::json!({"hidden_size": 64, "num_attention_heads": 4, "rope_theta": 500000.0});
        let hp = Hparams::from_config(&raw, class("llama")).unwrap();
        assert_eq!(hp.u64(&["head_dim"]), Some(16));
        assert_eq!(hp.u64(&["num_key_value_heads"]), Some(4));
        assert_eq!(
            hp.rope_full().get("rope_theta").and_then(Value::as_f64),
            Some(500000.0)
        );
        assert_eq!(
            hp.rope_full().get("rope_type").and_then(Value::as_str),
            Some("default")
        );
    }

    #[test]
    fn llama3_scaling_gets_original_context() {
        let raw = serde_json::json!({"max_position_embeddings": 1024,
            "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 256}});
        let hp = Hparams::from_config(&raw, class("llama")).unwrap();
        let rp = hp.rope_full();
        assert_eq!(rp.get("rope_type").and_then(Value::as_str), Some("llama3"));
        assert_eq!(
            rp.get("original_max_position_embeddings")
                .and_then(Value::as_u64),
            Some(256)
        );
    }

    #[test]
    fn qwen_sliding_window_needs_flag() {
        let raw = serde_json::json!({"sliding_window": 128});
        let hp = Hparams::from_config(&raw, class("qwen2")).unwrap();
        assert_eq!(hp.find(&["sliding_window"]), Some(&Value::Null));
    }
}
