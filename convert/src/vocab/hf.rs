//! What `transformers.AutoTokenizer.from_pretrained(dir)` presents to llama.cpp's converter for
//! a `tokenizer.json` checkpoint: the vocabulary by id, the added tokens with their `special` /
//! `normalized` flags, and `all_special_tokens`.
//!
//! llama.cpp's BPE paths (`get_vocab_base`, `LlamaHfVocab`) read these through transformers, not
//! from the file, and transformers (v5) adds to what the file says: the tokenizer class resolved
//! from `tokenizer_config.json`/`config.json` brings default special tokens (GPT-2's
//! `<|endoftext|>`, Llama's `<s>`/`</s>`/`<unk>`, …) which are registered as special added
//! tokens when the file lacks them, and Qwen2's class re-registers its special tokens as
//! special. We model those rules (the ones that change token types) and nothing else.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use super::util::{json_int, truthy};
use super::VocabError;

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct AddedTok {
    pub id: u32,
    pub content: String,
    pub special: bool,
    pub normalized: bool,
}

/// The tokenizer classes whose behaviour we model (`tokenizer_class` without `Fast`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokClass {
    /// `TokenizersBackend` / `PreTrainedTokenizerFast`: the file as is, no default tokens.
    Backend,
    Gpt2,
    Qwen2,
    Llama,
    Gemma,
}

impl TokClass {
    fn from_name(name: &str) -> Option<TokClass> {
        Some(match name.strip_suffix("Fast").unwrap_or(name) {
            "PreTrainedTokenizer" | "TokenizersBackend" => TokClass::Backend,
            "GPT2Tokenizer" => TokClass::Gpt2,
            "Qwen2Tokenizer" => TokClass::Qwen2,
            "LlamaTokenizer" | "CodeLlamaTokenizer" => TokClass::Llama,
            "GemmaTokenizer" => TokClass::Gemma,
            _ => return None,
        })
    }

    /// transformers' `TOKENIZER_MAPPING_NAMES` for the model types we convert.
    fn for_model_type(model_type: &str) -> Option<TokClass> {
        Some(match model_type {
            "qwen2" | "qwen3" => TokClass::Qwen2,
            "gemma" | "gemma2" | "gemma3" | "gemma3_text" => TokClass::Gemma,
            "gpt2" => TokClass::Gpt2,
            "mistral" | "phi3" => TokClass::Backend,
            _ => return None,
        })
    }

    /// `__init__` defaults of the named special tokens (bos, eos, unk, sep, pad, cls, mask).
    fn default_specials(self) -> &'static [(&'static str, &'static str)] {
        match self {
            TokClass::Backend => &[],
            TokClass::Gpt2 => &[
                ("bos_token", "<|endoftext|>"),
                ("eos_token", "<|endoftext|>"),
                ("unk_token", "<|endoftext|>"),
            ],
            TokClass::Qwen2 => &[
                ("eos_token", "<|endoftext|>"),
                ("unk_token", "<|endoftext|>"),
                ("pad_token", "<|endoftext|>"),
            ],
            TokClass::Llama => &[
                ("bos_token", "<s>"),
                ("eos_token", "</s>"),
                ("unk_token", "<unk>"),
            ],
            TokClass::Gemma => &[
                ("bos_token", "<bos>"),
                ("eos_token", "<eos>"),
                ("unk_token", "<unk>"),
                ("pad_token", "<pad>"),
                ("mask_token", "<mask>"),
            ],
        }
    }
}

/// transformers' `SPECIAL_TOKENS_ATTRIBUTES` order.
const SPECIAL_ATTRS: &[&str] = &[
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
];

/// Model types whose Hub `tokenizer_class` transformers overrides with its registered class.
const INCORRECT_HUB_CLASS: &[&str] = &["phi3", "qwen2"];

/// Which class `AutoTokenizer` instantiates (the subset of its rules that matters here).
pub(crate) fn resolve_class(
    tc: Option<&Json>,
    config: Option<&Json>,
    tokenizer_json_text: &str,
) -> TokClass {
    let declared = tc
        .and_then(|t| t.get("tokenizer_class"))
        .and_then(Json::as_str)
        .or_else(|| {
            config
                .and_then(|c| c.get("tokenizer_class"))
                .and_then(Json::as_str)
        });
    let model_type = config
        .and_then(|c| c.get("model_type"))
        .and_then(Json::as_str)
        .unwrap_or("");
    let registered = TokClass::for_model_type(model_type);
    let Some(declared) = declared else {
        return registered.unwrap_or(TokClass::Backend);
    };
    let declared_class = TokClass::from_name(declared);
    // a byte-level tokenizer.json declared as LlamaTokenizer loads as TokenizersBackend
    if declared_class == Some(TokClass::Llama)
        && !INCORRECT_HUB_CLASS.contains(&model_type)
        && tokenizer_json_text.contains("\"ByteLevel\"")
    {
        return TokClass::Backend;
    }
    if let Some(reg) = registered {
        if Some(reg) != declared_class {
            if reg == TokClass::Backend {
                return TokClass::Backend;
            }
            let chosen = if INCORRECT_HUB_CLASS.contains(&model_type) {
                Some(reg)
            } else {
                declared_class
            };
            return chosen.unwrap_or(TokClass::Backend);
        }
    }
    declared_class.unwrap_or(TokClass::Backend)
}

/// The tokenizer as transformers exposes it.
pub(crate) struct HfTokenizer {
    pub path: PathBuf,
    pub json: Json,
    pub model_vocab: HashMap<String, u32>,
    pub added: Vec<AddedTok>,
    /// `all_special_tokens`: named special tokens then extra ones, deduplicated.
    pub all_special_tokens: Vec<String>,
}

fn token_content(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.clone()),
        Json::Object(o) => o.get("content").and_then(Json::as_str).map(str::to_owned),
        _ => None,
    }
}

impl HfTokenizer {
    pub(crate) fn load(dir: &Path, config: &Json) -> Result<HfTokenizer, VocabError> {
        let path = dir.join("tokenizer.json");
        let text = std::fs::read_to_string(&path).map_err(|source| VocabError::Io {
            path: path.clone(),
            source,
        })?;
        let json: Json = serde_json::from_str(&text).map_err(|source| VocabError::Json {
            path: path.clone(),
            source,
        })?;
        let tc_path = dir.join("tokenizer_config.json");
        let tc = super::util::read_json_opt(&tc_path)?;
        let raw_config = super::util::read_json_opt(&dir.join("config.json"))?;
        let class = resolve_class(tc.as_ref(), raw_config.as_ref().or(Some(config)), &text);

        let mut model_vocab = HashMap::new();
        match json.get("model").and_then(|m| m.get("vocab")) {
            Some(Json::Object(map)) => {
                for (tok, id) in map {
                    let id = json_int(id)
                        .and_then(|i| u32::try_from(i).ok())
                        .ok_or_else(|| {
                            VocabError::bad(&path, format!("vocab id of {tok:?} is not a u32"))
                        })?;
                    model_vocab.insert(tok.clone(), id);
                }
            }
            _ => {
                return Err(VocabError::bad(
                    &path,
                    "model.vocab must be a token → id object (BPE)",
                ))
            }
        }

        let mut added: Vec<AddedTok> = Vec::new();
        if let Some(Json::Array(list)) = json.get("added_tokens") {
            for t in list {
                let id = t
                    .get("id")
                    .and_then(json_int)
                    .and_then(|i| u32::try_from(i).ok())
                    .ok_or_else(|| VocabError::bad(&path, "added token without a valid id"))?;
                let content = t
                    .get("content")
                    .and_then(Json::as_str)
                    .ok_or_else(|| VocabError::bad(&path, "added token without content"))?;
                let special = truthy(t.get("special"));
                let normalized = t
                    .get("normalized")
                    .and_then(Json::as_bool)
                    .unwrap_or(!special);
                added.push(AddedTok {
                    id,
                    content: content.to_owned(),
                    special,
                    normalized,
                });
            }
        }

        let mut hf = HfTokenizer {
            path,
            json,
            model_vocab,
            added,
            all_special_tokens: Vec::new(),
        };

        // tokenizer_config added_tokens_decoder entries missing from the file are added.
        if let Some(tc) = &tc {
            if let Some(Json::Object(dec)) = tc.get("added_tokens_decoder") {
                let mut entries: Vec<(u64, &Json)> = dec
                    .iter()
                    .filter_map(|(k, v)| k.trim().parse::<u64>().ok().map(|i| (i, v)))
                    .collect();
                entries.sort_by_key(|(i, _)| *i);
                for (_, data) in entries {
                    if let Some(content) = data.get("content").and_then(Json::as_str) {
                        let special = truthy(data.get("special"));
                        let normalized = data
                            .get("normalized")
                            .and_then(Json::as_bool)
                            .unwrap_or(!special);
                        hf.add_token(content, special, normalized);
                    }
                }
            }
        }

        // Without `added_tokens_decoder` in tokenizer_config, transformers takes the legacy
        // route and lets special_tokens_map.json override the named tokens.
        let stm = if tc
            .as_ref()
            .is_some_and(|t| t.get("added_tokens_decoder").is_some())
        {
            None
        } else {
            super::util::read_json_opt(&dir.join("special_tokens_map.json"))?
        };
        // Named special tokens: class defaults, overridden (even by null) by tokenizer_config.
        let mut named: Vec<String> = Vec::new();
        for attr in SPECIAL_ATTRS {
            let from_tc = stm
                .as_ref()
                .and_then(|m| m.get(*attr))
                .filter(|v| !v.is_null())
                .or_else(|| tc.as_ref().and_then(|t| t.get(*attr)));
            let value = match from_tc {
                Some(v) => token_content(v),
                None => class
                    .default_specials()
                    .iter()
                    .find(|(a, _)| a == attr)
                    .map(|(_, v)| v.to_string()),
            };
            if let Some(v) = value {
                named.push(v);
            }
        }
        let mut extra: Vec<String> = Vec::new();
        if let Some(tc) = &tc {
            let list = match tc.get("extra_special_tokens") {
                Some(Json::Array(a)) if !a.is_empty() => Some(a),
                _ => tc.get("additional_special_tokens").and_then(Json::as_array),
            };
            if let Some(list) = list {
                extra.extend(list.iter().filter_map(token_content));
            }
        }
        if let Some(m) = &stm {
            for key in ["additional_special_tokens", "extra_special_tokens"] {
                if let Some(Json::Array(list)) = m.get(key) {
                    for t in list.iter().filter_map(token_content) {
                        if !extra.contains(&t) {
                            extra.push(t);
                        }
                    }
                }
            }
        }
        for tok in named.iter().chain(extra.iter()) {
            if !hf.all_special_tokens.contains(tok) {
                hf.all_special_tokens.push(tok.clone());
            }
        }
        // Registered as special added tokens when absent; Qwen2's class re-adds them all as
        // special, non-normalized tokens, replacing differing flags.
        let specials = hf.all_special_tokens.clone();
        for tok in &specials {
            if class == TokClass::Qwen2 {
                if let Some(a) = hf.added.iter_mut().find(|a| &a.content == tok) {
                    a.special = true;
                    a.normalized = false;
                    continue;
                }
            }
            hf.add_token(tok, true, false);
        }
        Ok(hf)
    }

    /// `AddedVocabulary.add_tokens` for one token: skipped if already added, else it takes the
    /// model's id for that content or the next free id.
    fn add_token(&mut self, content: &str, special: bool, normalized: bool) {
        if content.is_empty() || self.added.iter().any(|a| a.content == content) {
            return;
        }
        let id = match self.model_vocab.get(content) {
            Some(&id) => id,
            None => {
                let model_size = self.model_vocab.len() as u32;
                match self.added.iter().map(|a| a.id).max() {
                    None => model_size,
                    Some(max) if max >= model_size || model_size == 0 => max + 1,
                    Some(_) => model_size,
                }
            }
        };
        self.added.push(AddedTok {
            id,
            content: content.to_owned(),
            special,
            normalized,
        });
    }

    /// `get_vocab()`: model vocabulary overlaid with the added tokens.
    pub(crate) fn vocab(&self) -> HashMap<&str, u32> {
        let mut v: HashMap<&str, u32> = self
            .model_vocab
            .iter()
            .map(|(k, &id)| (k.as_str(), id))
            .collect();
        for a in &self.added {
            v.insert(a.content.as_str(), a.id);
        }
        v
    }

    /// `get_added_vocab()`: content → id, built in id order (a later duplicate content wins).
    pub(crate) fn added_vocab(&self) -> HashMap<&str, u32> {
        let mut sorted: Vec<&AddedTok> = self.added.iter().collect();
        sorted.sort_by_key(|a| a.id);
        sorted
            .into_iter()
            .map(|a| (a.content.as_str(), a.id))
            .collect()
    }

    /// `added_tokens_decoder[id]`.
    pub(crate) fn added_by_id(&self, id: u32) -> Option<&AddedTok> {
        self.added.iter().rev().find(|a| a.id == id)
    }

    /// `tokenizer.vocab_size` (base vocabulary without added tokens).
    pub(crate) fn base_vocab_size(&self) -> usize {
        self.model_vocab.len()
    }

    /// `all_special_ids`: ids of `all_special_tokens` (unknown strings map to nothing).
    pub(crate) fn all_special_ids(&self) -> Vec<u32> {
        let vocab = self.vocab();
        self.all_special_tokens
            .iter()
            .filter_map(|t| vocab.get(t.as_str()).copied())
            .collect()
    }

    /// A `tokenizers` tokenizer for the file, with the added tokens transformers registered on
    /// top of it (needed so that encode/decode see the same added vocabulary).
    pub(crate) fn runtime(&self) -> Result<tokenizers::Tokenizer, VocabError> {
        let mut t =
            tokenizers::Tokenizer::from_file(&self.path).map_err(|e| VocabError::Tokenizers {
                path: self.path.clone(),
                message: e.to_string(),
            })?;
        let file_added: Vec<String> = match self.json.get("added_tokens") {
            Some(Json::Array(list)) => list
                .iter()
                .filter_map(|t| t.get("content").and_then(Json::as_str).map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        let extra: Vec<tokenizers::AddedToken> = self
            .added
            .iter()
            .filter(|a| !file_added.contains(&a.content))
            .map(|a| {
                tokenizers::AddedToken::from(a.content.clone(), a.special).normalized(a.normalized)
            })
            .collect();
        if !extra.is_empty() {
            t.add_tokens(&extra);
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn class_resolution() {
        let bl = "{\"type\": \"ByteLevel\"}";
        let tc = |c: &str| json!({"tokenizer_class": c});
        let cfg = |m: &str| json!({"model_type": m});
        assert_eq!(
            resolve_class(Some(&tc("Qwen2TokenizerFast")), Some(&cfg("qwen2")), bl),
            TokClass::Qwen2
        );
        assert_eq!(
            resolve_class(None, Some(&cfg("qwen3")), bl),
            TokClass::Qwen2
        );
        assert_eq!(
            resolve_class(Some(&tc("LlamaTokenizerFast")), Some(&cfg("llama")), bl),
            TokClass::Backend
        );
        assert_eq!(
            resolve_class(Some(&tc("LlamaTokenizerFast")), Some(&cfg("llama")), "{}"),
            TokClass::Llama
        );
        assert_eq!(
            resolve_class(Some(&tc("LlamaTokenizer")), Some(&cfg("phi3")), "{}"),
            TokClass::Backend
        );
        assert_eq!(
            resolve_class(Some(&tc("GPT2Tokenizer")), Some(&cfg("gpt2")), bl),
            TokClass::Gpt2
        );
        assert_eq!(
            resolve_class(
                Some(&tc("PreTrainedTokenizerFast")),
                Some(&cfg("llama")),
                bl
            ),
            TokClass::Backend
        );
    }
}
