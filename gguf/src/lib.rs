//! The GGUF file format: types, metadata values, a hardened reader and a streaming writer.
//!
//! GGUF is llama.cpp's model container: a header of typed key–value metadata and tensor
//! descriptions, followed by the tensors' bytes, each aligned (32 bytes by default). This crate
//! knows the container only; what the keys mean lives in `arch-registry` and `convert`.

pub mod atomic;
pub mod diff;
pub mod error;
#[doc(hidden)]
pub mod fuzz_checks;
pub mod metadata;
pub mod pages;
pub mod reader;
pub mod split;
pub mod tensor;
pub mod types;
pub mod value;
pub mod vocab_check;
pub mod writer;

pub use atomic::AtomicFile;
pub use error::{ParseError, ReadError, WriteError};
pub use metadata::Metadata;
pub use reader::{GgufFile, Header};
pub use split::{GgufModel, SplitError, SplitModel};
pub use tensor::{TensorDesc, TensorInfo};
pub use types::GgmlType;
pub use value::{Array, Value, ValueType};
pub use writer::GgufWriter;

pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";
pub const GGUF_VERSION: u32 = 3;
pub const DEFAULT_ALIGNMENT: u64 = 32;
pub const KEY_ALIGNMENT: &str = "general.alignment";
/// ggml's `GGML_MAX_DIMS`.
pub const MAX_DIMS: usize = 4;
/// ggml's `GGML_MAX_NAME`: names must be shorter than this.
pub const MAX_TENSOR_NAME: usize = 64;
/// The largest alignment we accept when reading; llama.cpp has no cap, but no real file needs more.
pub const MAX_ALIGNMENT: u64 = 1 << 30;

/// Rounds `x` up to a multiple of `align` (a power of two); `None` on overflow.
pub fn pad_to(x: u64, align: u64) -> Option<u64> {
    Some(x.checked_add(align - 1)? & !(align - 1))
}

/// Writes a whole GGUF file atomically from in-memory tensors (tests and small outputs).
pub fn write_file(
    path: &std::path::Path,
    metadata: &Metadata,
    tensors: &[(TensorDesc, Vec<u8>)],
) -> Result<(), WriteError> {
    let with_path = |e: WriteError| match e {
        WriteError::Io { source, .. } => WriteError::Io {
            path: path.to_path_buf(),
            source,
        },
        WriteError::Interrupted { .. } => WriteError::Interrupted {
            path: path.to_path_buf(),
        },
        other => other,
    };
    let file = AtomicFile::create(path).map_err(|source| WriteError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let descs: Vec<TensorDesc> = tensors.iter().map(|(d, _)| d.clone()).collect();
    let mut w = GgufWriter::new(file, metadata, &descs).map_err(with_path)?;
    for (d, bytes) in tensors {
        w.write_tensor(&d.name, bytes).map_err(with_path)?;
    }
    let file = w.finish().map_err(with_path)?;
    file.commit().map_err(|source| WriteError::Io {
        path: path.to_path_buf(),
        source,
    })
}
