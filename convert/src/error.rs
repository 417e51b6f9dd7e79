//! Conversion errors: each names the file, tensor or key involved and what was expected.

use std::path::{Path, PathBuf};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConvertError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    BadInput { path: PathBuf, message: String },
    #[error("{}: tensor '{tensor}' has dtype {dtype}, which is not supported yet (supported: F32, F16, BF16)", path.display())]
    UnsupportedDtype {
        path: PathBuf,
        tensor: String,
        dtype: String,
    },
    #[error("{}: {source}", path.display())]
    Registry {
        path: PathBuf,
        source: arch_registry::RegistryError,
    },
    #[error("tensor '{tensor}': {message}")]
    Tensor { tensor: String, message: String },
    #[error("tokenizer: {0}")]
    Vocab(String),
    #[error("metadata: {0}")]
    General(String),
    #[error("quantization: {0}")]
    Quant(String),
    #[error("writing {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: gguf::WriteError,
    },
    #[error("interrupted; {} was not written", path.display())]
    Interrupted { path: PathBuf },
}

impl ConvertError {
    pub fn io(path: &Path, source: std::io::Error) -> ConvertError {
        ConvertError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Maps a writer error, recognising interruption.
    pub fn write(path: &Path, source: gguf::WriteError) -> ConvertError {
        match source {
            gguf::WriteError::Interrupted { .. } => ConvertError::Interrupted {
                path: path.to_path_buf(),
            },
            source => ConvertError::Write {
                path: path.to_path_buf(),
                source,
            },
        }
    }
}
