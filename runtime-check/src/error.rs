//! Errors of the reference runtime. Each names the key, tensor or file at fault and what was
//! expected, because the usual cause is a GGUF written by a converter with a bug, and the message
//! is what the person debugging that converter reads first.

use std::path::PathBuf;

use gguf::GgmlType;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error("general.architecture is missing or not a string")]
    NoArchitecture,
    #[error("architecture '{0}' is not supported by the reference runtime (supported: llama, qwen2, qwen3, gemma2, gemma3, phi3, gpt2)")]
    UnsupportedArchitecture(String),
    #[error("required metadata key '{0}' is missing")]
    MissingKey(String),
    #[error("metadata key '{key}' has an unusable value: {reason}")]
    BadKey { key: String, reason: String },
    #[error("{feature} is not implemented by the reference runtime ({detail})")]
    Unsupported {
        feature: &'static str,
        detail: String,
    },
    #[error("required tensor '{0}' is missing")]
    MissingTensor(String),
    #[error("tensor '{name}' has shape {found:?}, expected {expected:?}")]
    TensorShape {
        name: String,
        expected: Vec<u64>,
        found: Vec<u64>,
    },
    #[error("tensor '{name}': cannot decode {ty}: {source}")]
    Decode {
        name: String,
        ty: GgmlType,
        #[source]
        source: quantize::QuantizeError,
    },
    #[error("token id {token} at position {position} is outside the vocabulary of {n_vocab}")]
    TokenOutOfRange {
        token: i64,
        position: usize,
        n_vocab: usize,
    },
    #[error("{n_tokens} tokens exceed the {limit} learned positions of this model")]
    TooManyPositions { n_tokens: usize, limit: usize },
    #[error("no tokens to evaluate")]
    EmptyInput,
    #[error("cannot read fixture {path}: {reason}")]
    Fixture { path: PathBuf, reason: String },
    #[error("logit sets differ in shape: {0}")]
    ShapeMismatch(String),
}
