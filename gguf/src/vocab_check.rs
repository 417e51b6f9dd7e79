//! Consistency checks for the tokenizer metadata (`tokenizer.ggml.*`).
//!
//! llama.cpp's vocabulary loader reads `tokenizer.ggml.scores` and `tokenizer.ggml.token_type`
//! as raw `float`/`int32` arrays indexed by token id, and fetches the special-token ids with a
//! typed getter that aborts on a type mismatch. A file whose arrays are shorter than the token
//! list, of the wrong element type, or whose special ids point past the vocabulary is therefore
//! either unloadable or an out-of-bounds read waiting to happen. ggforge rejects such files when
//! reading them, with an error that names the key.
//!
//! The rules are those of gguf-py's writer (what `convert_hf_to_gguf.py` produces), which is
//! stricter than llama.cpp's loader in two places: arrays must have exactly one entry per token
//! (llama.cpp accepts longer ones), and special ids must be inside the vocabulary (llama.cpp
//! ignores bad ones with a warning; gguf-py never writes them).

use crate::error::ParseError;
use crate::metadata::Metadata;
use crate::value::{Array, Value, ValueType};

pub const KEY_MODEL: &str = "tokenizer.ggml.model";
pub const KEY_PRE: &str = "tokenizer.ggml.pre";
pub const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
pub const KEY_SCORES: &str = "tokenizer.ggml.scores";
pub const KEY_TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
pub const KEY_TOKEN_TYPE_COUNT: &str = "tokenizer.ggml.token_type_count";
pub const KEY_MERGES: &str = "tokenizer.ggml.merges";
pub const KEY_SUPPRESS_TOKENS: &str = "tokenizer.ggml.suppress_tokens";
pub const KEY_PRECOMPILED_CHARSMAP: &str = "tokenizer.ggml.precompiled_charsmap";

/// Every special-token id key llama.cpp reads (including the deprecated FIM names). The misspelt
/// `seperator` is the real key name.
pub const SPECIAL_ID_KEYS: [&str; 18] = [
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.eot_token_id",
    "tokenizer.ggml.eom_token_id",
    "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.seperator_token_id",
    "tokenizer.ggml.padding_token_id",
    "tokenizer.ggml.cls_token_id",
    "tokenizer.ggml.mask_token_id",
    "tokenizer.ggml.fim_pre_token_id",
    "tokenizer.ggml.fim_suf_token_id",
    "tokenizer.ggml.fim_mid_token_id",
    "tokenizer.ggml.fim_pad_token_id",
    "tokenizer.ggml.fim_rep_token_id",
    "tokenizer.ggml.fim_sep_token_id",
    "tokenizer.ggml.prefix_token_id",
    "tokenizer.ggml.suffix_token_id",
    "tokenizer.ggml.middle_token_id",
];

/// Flags llama.cpp reads with a typed `bool` getter (a different type is a load error there).
const BOOL_KEYS: [&str; 7] = [
    "tokenizer.ggml.add_bos_token",
    "tokenizer.ggml.add_eos_token",
    "tokenizer.ggml.add_sep_token",
    "tokenizer.ggml.add_space_prefix",
    "tokenizer.ggml.remove_extra_whitespaces",
    "tokenizer.ggml.normalizer.lowercase",
    "tokenizer.ggml.normalizer.strip_accents",
];

/// String-valued tokenizer keys.
const STRING_KEYS: [&str; 4] = [
    KEY_MODEL,
    KEY_PRE,
    "tokenizer.chat_template",
    "tokenizer.huggingface.json",
];

/// The largest `llama_token_type` value (`LLAMA_TOKEN_TYPE_BYTE`); 0 is "undefined".
const MAX_TOKEN_TYPE: i32 = 6;

/// A short name for a value's type, arrays with their element type (`arr[i32]`).
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Array(a) => match a.element_type() {
            ValueType::U8 => "arr[u8]",
            ValueType::I8 => "arr[i8]",
            ValueType::U16 => "arr[u16]",
            ValueType::I16 => "arr[i16]",
            ValueType::U32 => "arr[u32]",
            ValueType::I32 => "arr[i32]",
            ValueType::F32 => "arr[f32]",
            ValueType::Bool => "arr[bool]",
            ValueType::String => "arr[str]",
            ValueType::U64 => "arr[u64]",
            ValueType::I64 => "arr[i64]",
            ValueType::F64 => "arr[f64]",
            ValueType::Array => "arr[arr]",
        },
        other => other.value_type().name(),
    }
}

fn wrong_type(key: &str, expected: &'static str, found: &Value) -> ParseError {
    ParseError::WrongKeyType {
        key: key.into(),
        expected,
        found: type_name(found),
    }
}

/// Checks the tokenizer metadata for consistency. Files without tokenizer keys pass.
pub fn check(meta: &Metadata) -> Result<(), ParseError> {
    for key in STRING_KEYS {
        match meta.get(key) {
            None | Some(Value::String(_)) => {}
            Some(v) => return Err(wrong_type(key, "str", v)),
        }
    }
    for key in BOOL_KEYS {
        match meta.get(key) {
            None | Some(Value::Bool(_)) => {}
            Some(v) => return Err(wrong_type(key, "bool", v)),
        }
    }
    match meta.get(KEY_TOKEN_TYPE_COUNT) {
        None | Some(Value::U32(_)) => {}
        Some(v) => return Err(wrong_type(KEY_TOKEN_TYPE_COUNT, "u32", v)),
    }

    let n_vocab: Option<u64> = match meta.get(KEY_TOKENS) {
        None => None,
        Some(Value::Array(Array::String(tokens))) => Some(tokens.len() as u64),
        Some(v) => return Err(wrong_type(KEY_TOKENS, "arr[str]", v)),
    };
    // Arrays that are indexed by token id make no sense without the token list.
    let need_vocab =
        |key: &str| n_vocab.ok_or_else(|| ParseError::MissingTokenList { key: key.into() });
    let same_length = |key: &str, len: usize| -> Result<(), ParseError> {
        let n = need_vocab(key)?;
        if len as u64 != n {
            return Err(ParseError::VocabLengthMismatch {
                key: key.into(),
                len: len as u64,
                n_vocab: n,
            });
        }
        Ok(())
    };

    match meta.get(KEY_SCORES) {
        None => {}
        // llama.cpp also accepts integer scores.
        Some(Value::Array(Array::F32(v))) => same_length(KEY_SCORES, v.len())?,
        Some(Value::Array(Array::I32(v))) => same_length(KEY_SCORES, v.len())?,
        Some(v) => return Err(wrong_type(KEY_SCORES, "arr[f32]", v)),
    }
    match meta.get(KEY_TOKEN_TYPE) {
        None => {}
        Some(Value::Array(Array::I32(types))) => {
            same_length(KEY_TOKEN_TYPE, types.len())?;
            if let Some((index, &value)) = types
                .iter()
                .enumerate()
                .find(|(_, &t)| !(0..=MAX_TOKEN_TYPE).contains(&t))
            {
                return Err(ParseError::BadTokenType {
                    index: index as u64,
                    value,
                });
            }
        }
        Some(v) => return Err(wrong_type(KEY_TOKEN_TYPE, "arr[i32]", v)),
    }
    match meta.get(KEY_MERGES) {
        None => {}
        Some(Value::Array(Array::String(_))) => {
            need_vocab(KEY_MERGES)?;
        }
        Some(v) => return Err(wrong_type(KEY_MERGES, "arr[str]", v)),
    }
    match meta.get(KEY_SUPPRESS_TOKENS) {
        None | Some(Value::Array(Array::I32(_))) => {}
        Some(v) => return Err(wrong_type(KEY_SUPPRESS_TOKENS, "arr[i32]", v)),
    }
    match meta.get(KEY_PRECOMPILED_CHARSMAP) {
        None => {}
        Some(Value::Array(Array::U8(bytes))) => check_charsmap(bytes.len(), |i| bytes[i])?,
        Some(Value::Array(Array::I8(bytes))) => check_charsmap(bytes.len(), |i| bytes[i] as u8)?,
        Some(v) => return Err(wrong_type(KEY_PRECOMPILED_CHARSMAP, "arr[u8]", v)),
    }

    for key in SPECIAL_ID_KEYS {
        let id = match meta.get(key) {
            None => continue,
            Some(Value::U32(id)) => *id as u64,
            Some(v) => return Err(wrong_type(key, "u32", v)),
        };
        // Without a token list there is nothing to check the id against (llama.cpp then refuses
        // to load a vocabulary at all).
        if let Some(n) = n_vocab {
            if id >= n {
                return Err(ParseError::SpecialTokenOutOfRange {
                    key: key.into(),
                    id,
                    n_vocab: n,
                });
            }
        }
    }
    Ok(())
}

/// The SentencePiece charsmap starts with a little-endian u32 giving the size of the trie blob
/// that follows; llama.cpp requires the blob to fit with room to spare (the normalized strings
/// come after it).
fn check_charsmap(len: usize, byte: impl Fn(usize) -> u8) -> Result<(), ParseError> {
    if len < 4 {
        return Err(ParseError::BadCharsmap {
            len: len as u64,
            blob_size: 0,
        });
    }
    let blob_size = u32::from_le_bytes([byte(0), byte(1), byte(2), byte(3)]) as u64;
    if blob_size + 4 >= len as u64 {
        return Err(ParseError::BadCharsmap {
            len: len as u64,
            blob_size,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab(n: usize) -> Metadata {
        let mut m = Metadata::new();
        m.set(KEY_MODEL, "gpt2");
        m.set(
            KEY_TOKENS,
            Array::String((0..n).map(|i| format!("t{i}")).collect()),
        );
        m.set(KEY_SCORES, Array::F32(vec![0.0; n]));
        m.set(KEY_TOKEN_TYPE, Array::I32(vec![1; n]));
        m.set("tokenizer.ggml.bos_token_id", (n as u32) - 1);
        m
    }

    #[test]
    fn consistent_vocab_passes() {
        assert_eq!(check(&vocab(5)), Ok(()));
        assert_eq!(check(&Metadata::new()), Ok(()));
    }

    #[test]
    fn special_id_at_vocab_size_is_rejected() {
        let mut m = vocab(5);
        m.set("tokenizer.ggml.eos_token_id", 5u32);
        assert_eq!(
            check(&m),
            Err(ParseError::SpecialTokenOutOfRange {
                key: "tokenizer.ggml.eos_token_id".into(),
                id: 5,
                n_vocab: 5
            })
        );
    }

    #[test]
    fn short_scores_and_wrong_types_are_rejected() {
        let mut m = vocab(5);
        m.set(KEY_SCORES, Array::F32(vec![0.0; 4]));
        assert!(matches!(
            check(&m),
            Err(ParseError::VocabLengthMismatch {
                len: 4,
                n_vocab: 5,
                ..
            })
        ));
        let mut m = vocab(5);
        m.set(KEY_TOKEN_TYPE, Array::U8(vec![1; 5]));
        assert!(matches!(
            check(&m),
            Err(ParseError::WrongKeyType {
                found: "arr[u8]",
                ..
            })
        ));
        let mut m = vocab(5);
        m.set("tokenizer.ggml.bos_token_id", 1i32);
        assert!(matches!(
            check(&m),
            Err(ParseError::WrongKeyType {
                expected: "u32",
                ..
            })
        ));
    }

    #[test]
    fn charsmap_blob_must_fit() {
        let mut m = vocab(2);
        m.set(
            KEY_PRECOMPILED_CHARSMAP,
            Array::U8(vec![4, 0, 0, 0, 1, 2, 3, 4, 5]),
        );
        assert_eq!(check(&m), Ok(()));
        m.set(
            KEY_PRECOMPILED_CHARSMAP,
            Array::U8(vec![5, 0, 0, 0, 1, 2, 3, 4, 5]),
        );
        assert!(matches!(
            check(&m),
            Err(ParseError::BadCharsmap { blob_size: 5, .. })
        ));
    }
}
