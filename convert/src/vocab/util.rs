//! Small shared pieces: file loading with named errors, the KV list that mimics gguf-py's
//! writer dictionary, Python truthiness of JSON values, and hparam lookup.

use std::path::{Path, PathBuf};

use gguf::{Array, Value};
use serde_json::Value as Json;

use super::VocabError;

/// Reads and parses a JSON file; `Ok(None)` when it does not exist (llama.cpp checks `is_file()`
/// before opening almost every tokenizer file, so absence is a normal case, not an error).
pub(crate) fn read_json_opt(path: &Path) -> Result<Option<Json>, VocabError> {
    if !path.is_file() {
        return Ok(None);
    }
    let bytes = std::fs::read(path).map_err(|source| VocabError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| VocabError::Json {
            path: path.to_path_buf(),
            source,
        })
}

pub(crate) fn read_text_opt(path: &Path) -> Result<Option<String>, VocabError> {
    if !path.is_file() {
        return Ok(None);
    }
    std::fs::read_to_string(path)
        .map(Some)
        .map_err(|source| VocabError::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// Python's truthiness for a JSON value (`None`, `False`, `0`, `""`, `[]`, `{}` are false).
pub(crate) fn truthy(v: Option<&Json>) -> bool {
    match v {
        None | Some(Json::Null) => false,
        Some(Json::Bool(b)) => *b,
        Some(Json::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(Json::String(s)) => !s.is_empty(),
        Some(Json::Array(a)) => !a.is_empty(),
        Some(Json::Object(o)) => !o.is_empty(),
    }
}

/// A JSON integer as Python would see it (`isinstance(x, int)`); floats and bools are not ids.
pub(crate) fn json_int(v: &Json) -> Option<i128> {
    match v {
        Json::Number(n) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from)),
        _ => None,
    }
}

/// Looks a key up the way `TextModel.hparams` sees it: `text_config` is merged over the root
/// (`{**hparams, **hparams["text_config"]}`), so a value inside `text_config` wins.
pub(crate) fn hparam<'a>(config: &'a Json, key: &str) -> Option<&'a Json> {
    config
        .get("text_config")
        .and_then(|t| t.get(key))
        .or_else(|| config.get(key))
}

/// `hparams.get(key)` as a non-negative integer; `Ok(None)` when absent or null.
pub(crate) fn hparam_usize(config: &Json, key: &str) -> Result<Option<usize>, VocabError> {
    match hparam(config, key) {
        None | Some(Json::Null) => Ok(None),
        Some(v) => match json_int(v).and_then(|i| usize::try_from(i).ok()) {
            Some(n) => Ok(Some(n)),
            None => Err(VocabError::Config(format!(
                "{key} must be a non-negative integer, found {v}"
            ))),
        },
    }
}

/// The tokenizer KVs in the order gguf-py's `GGUFWriter` would serialize them.
///
/// The writer keeps KVs in a Python dict: re-adding an existing key overwrites the value but keeps
/// the key's first position, `add_string("")` and `add_array([])` are silently skipped, and
/// `remove_key` deletes. Several `set_vocab` variants rely on these rules (Llama's granite-small
/// `add_bos_token` override, the second `SpecialVocab` pass for CodeLlama/Gemma), so they are
/// reproduced here instead of appending blindly.
#[derive(Debug, Default, Clone)]
pub(crate) struct KvList {
    entries: Vec<(String, Value)>,
}

impl KvList {
    pub(crate) fn set(&mut self, key: &str, value: Value) {
        if let Some(slot) = self.entries.iter_mut().find(|(k, _)| k == key) {
            slot.1 = value;
        } else {
            self.entries.push((key.to_owned(), value));
        }
    }

    pub(crate) fn string(&mut self, key: &str, value: &str) {
        if !value.is_empty() {
            self.set(key, Value::String(value.to_owned()));
        }
    }

    pub(crate) fn array(&mut self, key: &str, value: Array) {
        if !value.is_empty() {
            self.set(key, Value::Array(value));
        }
    }

    pub(crate) fn u32(&mut self, key: &str, value: u32) {
        self.set(key, Value::U32(value));
    }

    pub(crate) fn bool(&mut self, key: &str, value: bool) {
        self.set(key, Value::Bool(value));
    }

    pub(crate) fn into_vec(self) -> Vec<(String, Value)> {
        self.entries
    }

    #[cfg(test)]
    pub(crate) fn keys(&self) -> Vec<&str> {
        self.entries.iter().map(|(k, _)| k.as_str()).collect()
    }
}

/// Paths of the tokenizer files llama.cpp's converter looks at.
pub(crate) struct ModelFiles {
    pub dir: PathBuf,
}

impl ModelFiles {
    pub(crate) fn new(dir: &Path) -> Self {
        ModelFiles {
            dir: dir.to_path_buf(),
        }
    }
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    pub(crate) fn tokenizer_json(&self) -> PathBuf {
        self.path("tokenizer.json")
    }
    pub(crate) fn tokenizer_config(&self) -> PathBuf {
        self.path("tokenizer_config.json")
    }
    pub(crate) fn tokenizer_model(&self) -> PathBuf {
        self.path("tokenizer.model")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn truthiness_matches_python() {
        assert!(!truthy(None));
        assert!(!truthy(Some(&json!(null))));
        assert!(!truthy(Some(&json!(""))));
        assert!(!truthy(Some(&json!({}))));
        assert!(!truthy(Some(&json!(0))));
        assert!(truthy(Some(&json!("<s>"))));
        assert!(truthy(Some(&json!({"content": "<s>"}))));
    }

    #[test]
    fn kv_overwrite_keeps_first_position() {
        let mut kv = KvList::default();
        kv.bool("a", true);
        kv.u32("b", 1);
        kv.bool("a", false);
        kv.string("c", "");
        kv.array("d", Array::I32(vec![]));
        assert_eq!(kv.keys(), vec!["a", "b"]);
        assert_eq!(kv.into_vec()[0].1, Value::Bool(false));
    }

    #[test]
    fn text_config_wins_over_root() {
        let c = json!({"vocab_size": 10, "text_config": {"vocab_size": 20}});
        assert_eq!(hparam_usize(&c, "vocab_size").ok().flatten(), Some(20));
        let c = json!({"vocab_size": 10});
        assert_eq!(hparam_usize(&c, "vocab_size").ok().flatten(), Some(10));
        assert!(hparam_usize(&json!({"vocab_size": -1}), "vocab_size").is_err());
    }
}
