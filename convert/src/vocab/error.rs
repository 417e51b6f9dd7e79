//! Errors of the tokenizer → GGUF metadata conversion.

use std::path::PathBuf;

/// Why the tokenizer of a checkpoint could not be turned into GGUF metadata.
///
/// Every variant names the file (or key) involved, so a user can tell what to fix.
#[derive(Debug, thiserror::Error)]
pub enum VocabError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path} is not valid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// A file exists and parses, but its content is not what llama.cpp's converter expects.
    #[error("{path}: {message}")]
    BadFile { path: PathBuf, message: String },

    /// A required file is missing (e.g. a Gemma 2 checkpoint without `tokenizer.model`).
    #[error("{path} not found: {why}")]
    Missing { path: PathBuf, why: String },

    /// `config.json`/hparams lack a value or hold one of the wrong type.
    #[error("config: {0}")]
    Config(String),

    #[error(
        "architecture {arch:?} has no tokenizer recipe; supported: {}",
        supported.join(", ")
    )]
    UnsupportedArchitecture {
        arch: String,
        supported: Vec<&'static str>,
    },

    /// The `tokenizers` crate could not load or run `tokenizer.json`.
    #[error("{path}: tokenizers library error: {message}")]
    Tokenizers { path: PathBuf, message: String },

    /// The BPE pre-tokenizer matches neither a known definition nor a known hash.
    #[error(
        "{path}: the BPE pre-tokenizer is not recognized.\n  definition: {definition}\n  chkhsh: {chkhsh}\n  \
         closest known names: {}\n  if the tokenizer really behaves like one of them, pass --pre NAME \
         (e.g. --pre {})",
        closest.join(", "),
        closest.first().map(String::as_str).unwrap_or("NAME")
    )]
    UnknownPreTokenizer {
        path: PathBuf,
        definition: String,
        chkhsh: String,
        closest: Vec<String>,
    },

    /// `--pre NAME` names something llama.cpp would refuse to load.
    #[error("--pre {name:?} is not a pre-tokenizer name llama.cpp knows; known names: {}", known.join(", "))]
    UnknownPreOverride {
        name: String,
        known: Vec<&'static str>,
    },
}

impl VocabError {
    pub(crate) fn bad(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        VocabError::BadFile {
            path: path.into(),
            message: message.into(),
        }
    }
}
