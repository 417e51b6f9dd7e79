//! Typed errors. Every way a file can be wrong has its own variant, so callers (and the hostile
//! input tests) can tell them apart without matching on message text.

use std::path::PathBuf;

use thiserror::Error;

/// What is wrong with the bytes of a GGUF header.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ParseError {
    #[error("not a GGUF file (magic {0:02x?}, expected \"GGUF\")")]
    BadMagic([u8; 4]),
    #[error("GGUF version {0:#x} looks byte-swapped: only little-endian files are supported")]
    WrongEndianness(u32),
    #[error("unsupported GGUF version {0} (supported: 2, 3)")]
    UnsupportedVersion(u32),
    #[error("file ends inside the {0}")]
    Truncated(&'static str),
    #[error("{what} count {count} is larger than the file can hold")]
    CountTooLarge { what: &'static str, count: u64 },
    #[error("{what} of length {len} runs past the end of the file or over the 1 GiB limit")]
    StringTooLong { what: &'static str, len: u64 },
    #[error("{0} is not valid UTF-8")]
    InvalidUtf8(&'static str),
    #[error("empty metadata key")]
    EmptyKey,
    #[error("duplicate metadata key '{0}'")]
    DuplicateKey(String),
    #[error("metadata key '{key}' has unknown value type {type_id}")]
    BadValueType { key: String, type_id: u32 },
    #[error("metadata key '{0}' is an array of arrays, which GGUF does not allow")]
    NestedArray(String),
    #[error("array '{key}' of {len} elements runs past the end of the file or over the limit")]
    ArrayTooLong { key: String, len: u64 },
    #[error("metadata key '{key}' has type {found}, expected {expected}")]
    WrongKeyType {
        key: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("general.alignment {0} is not a power of two between 1 and 2^30")]
    BadAlignment(u64),
    #[error("empty tensor name")]
    EmptyTensorName,
    #[error("tensor name '{0}' is 64 bytes or longer (llama.cpp's limit is 63)")]
    TensorNameTooLong(String),
    #[error("duplicate tensor name '{0}'")]
    DuplicateTensor(String),
    #[error("tensor '{tensor}' has {n_dims} dimensions (expected 1 to 4)")]
    BadDimCount { tensor: String, n_dims: u32 },
    #[error("tensor '{tensor}' has invalid dimension {dim} (every dimension must be at least 1)")]
    BadDimension { tensor: String, dim: i64 },
    #[error("tensor '{tensor}' has unknown ggml type id {type_id}")]
    UnknownType { tensor: String, type_id: u32 },
    #[error("tensor '{tensor}' has rows of {row_len} elements, not a multiple of the block size {block_size}")]
    RowNotBlockMultiple {
        tensor: String,
        row_len: u64,
        block_size: usize,
    },
    #[error("tensor '{tensor}' is too large (size overflows)")]
    SizeOverflow { tensor: String },
    #[error("tensor '{tensor}' has offset {offset}, which is not a multiple of the alignment {alignment}")]
    MisalignedOffset {
        tensor: String,
        offset: u64,
        alignment: u64,
    },
    #[error("tensor '{tensor}' has offset {offset}, before the previous tensor's offset {previous} (tensors must be in order)")]
    OffsetOutOfOrder {
        tensor: String,
        offset: u64,
        previous: u64,
    },
    #[error("tensor '{tensor}' at offset {offset} overlaps the previous tensor, which ends at {previous_end}")]
    OverlappingTensors {
        tensor: String,
        offset: u64,
        previous_end: u64,
    },
    #[error("tensor '{tensor}' has offset {offset}, expected {expected} (tensors must be dense, with only alignment padding between them)")]
    OffsetGap {
        tensor: String,
        offset: u64,
        expected: u64,
    },
    #[error("tensor '{tensor}' ends at byte {end}, past the end of the file ({file_len} bytes)")]
    DataPastEof {
        tensor: String,
        end: u64,
        file_len: u64,
    },
    #[error("'{key}' is present but the token list 'tokenizer.ggml.tokens' is missing")]
    MissingTokenList { key: String },
    #[error("'{key}' has {len} entries, but the vocabulary has {n_vocab} tokens")]
    VocabLengthMismatch { key: String, len: u64, n_vocab: u64 },
    #[error("special token '{key}' = {id} is outside the vocabulary of {n_vocab} tokens")]
    SpecialTokenOutOfRange { key: String, id: u64, n_vocab: u64 },
    #[error("token {index} has token type {value} (valid types are 0 to 6)")]
    BadTokenType { index: u64, value: i32 },
    #[error("tokenizer.ggml.precompiled_charsmap of {len} bytes declares a {blob_size}-byte blob that does not fit")]
    BadCharsmap { len: u64, blob_size: u64 },
}

/// Reading a GGUF file failed.
#[derive(Debug, Error)]
pub enum ReadError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Parse { path: PathBuf, source: ParseError },
}

impl ReadError {
    /// The parse error, when the file was readable but malformed.
    pub fn parse_error(&self) -> Option<&ParseError> {
        match self {
            ReadError::Parse { source, .. } => Some(source),
            ReadError::Io { .. } => None,
        }
    }
}

/// Writing a GGUF file failed.
#[derive(Debug, Error)]
pub enum WriteError {
    /// `path` is empty when the writer does not know it (it writes to any `Write`); the caller
    /// that wraps the error names the file, so the text is then just the OS error.
    #[error("{}", io_message(path, source))]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid tensor description: {0}")]
    BadTensor(#[from] ParseError),
    #[error("tensor '{tensor}': {message}")]
    Sequence { tensor: String, message: String },
    #[error("interrupted; {} was not written", path.display())]
    Interrupted { path: PathBuf },
}

fn io_message(path: &std::path::Path, source: &std::io::Error) -> String {
    if path.as_os_str().is_empty() {
        source.to_string()
    } else {
        format!("cannot write {}: {source}", path.display())
    }
}
