//! A GGUF v2/v3 reader that validates what llama.cpp's reader validates, and more.
//!
//! The file is memory-mapped; parsing reads only the header. Every count and length is checked
//! against the bytes that remain before anything is allocated, so a hostile header cannot make us
//! allocate more than the file size justifies (tests/alloc_bound.rs measures it).
//!
//! Beyond llama.cpp's own checks (see docs/security.md for the full list), the reader rejects
//! zero-sized dimensions, empty tensor names, alignments above 1 GiB, and inconsistent tokenizer
//! metadata ([`crate::vocab_check`]); and it tells misaligned, out-of-order, overlapping and
//! gapped tensor offsets apart instead of reporting one "bad offset".

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::{ParseError, ReadError};
use crate::metadata::Metadata;
use crate::tensor::TensorInfo;
use crate::types::GgmlType;
use crate::value::{Array, Value, ValueType};
use crate::{pad_to, GGUF_MAGIC, KEY_ALIGNMENT, MAX_ALIGNMENT, MAX_DIMS, MAX_TENSOR_NAME};

/// llama.cpp's `GGUF_MAX_STRING_LENGTH`.
pub const MAX_STRING_LEN: u64 = 1 << 30;
/// llama.cpp's `GGUF_MAX_ARRAY_ELEMENTS`.
pub const MAX_ARRAY_LEN: u64 = 1 << 30;
/// The smallest possible metadata entry: key length (8), a one-byte key, the type (4) and a
/// one-byte value.
const MIN_KV_BYTES: u64 = 8 + 1 + 4 + 1;
/// The smallest possible tensor info: name length (8), a one-byte name, `n_dims` (4), one
/// dimension (8), the type (4) and the offset (8).
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 1 + 4 + 8 + 4 + 8;

/// The parsed header of a GGUF file: everything but the tensor bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct Header {
    pub version: u32,
    pub metadata: Metadata,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Absolute file offset of the tensor data section.
    pub data_offset: u64,
}

impl Header {
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Parses and validates a header from the whole file contents: the container (counts,
    /// strings, arrays, tensor shapes, types and offsets) and then the tokenizer metadata, whose
    /// arrays llama.cpp indexes by token id without further checks.
    pub fn parse(bytes: &[u8]) -> Result<Header, ParseError> {
        let header = Header::parse_container(bytes)?;
        crate::vocab_check::check(&header.metadata)?;
        Ok(header)
    }

    /// Parses and validates the container only, without the tokenizer-metadata checks of
    /// [`Header::parse`]. Tools that must show a file whose vocabulary is broken can use this;
    /// everything else should call `parse`.
    pub fn parse_container(bytes: &[u8]) -> Result<Header, ParseError> {
        let mut c = Cursor { bytes, pos: 0 };
        let magic = c.take(4, "magic")?;
        if magic != GGUF_MAGIC {
            return Err(ParseError::BadMagic([
                magic[0], magic[1], magic[2], magic[3],
            ]));
        }
        let version = c.u32("version")?;
        if version & 0xFFFF == 0 && version != 0 {
            return Err(ParseError::WrongEndianness(version));
        }
        if !(2..=3).contains(&version) {
            return Err(ParseError::UnsupportedVersion(version));
        }
        let n_tensors = c.u64("tensor count")?;
        let n_kv = c.u64("metadata count")?;
        // Counts that cannot fit in the bytes that remain are rejected before anything is
        // allocated for them.
        let remaining = c.remaining() as u64;
        if n_kv > remaining / MIN_KV_BYTES {
            return Err(ParseError::CountTooLarge {
                what: "metadata",
                count: n_kv,
            });
        }
        if n_tensors > remaining / MIN_TENSOR_INFO_BYTES {
            return Err(ParseError::CountTooLarge {
                what: "tensor",
                count: n_tensors,
            });
        }

        let mut metadata = Metadata::new();
        let mut keys = HashSet::new();
        for _ in 0..n_kv {
            let key = c.string("metadata key")?;
            if key.is_empty() {
                return Err(ParseError::EmptyKey);
            }
            if !keys.insert(key.clone()) {
                return Err(ParseError::DuplicateKey(key));
            }
            let ty = c.value_type(&key)?;
            let value = c.value(ty, &key)?;
            metadata.push_new(key, value);
        }
        drop(keys);

        let alignment = match metadata.get(KEY_ALIGNMENT) {
            None => crate::DEFAULT_ALIGNMENT,
            Some(Value::U32(a)) => {
                let a = *a as u64;
                if a == 0 || !a.is_power_of_two() || a > MAX_ALIGNMENT {
                    return Err(ParseError::BadAlignment(a));
                }
                a
            }
            Some(other) => {
                return Err(ParseError::WrongKeyType {
                    key: KEY_ALIGNMENT.into(),
                    expected: "u32",
                    found: other.value_type().name(),
                })
            }
        };

        // The metadata has been read: check the tensor count again, against what is left.
        if n_tensors > c.remaining() as u64 / MIN_TENSOR_INFO_BYTES {
            return Err(ParseError::CountTooLarge {
                what: "tensor",
                count: n_tensors,
            });
        }
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        let mut names = HashSet::new();
        // llama.cpp requires the data to be dense: each tensor starts where the previous one ends,
        // rounded up to the alignment. Anything else is told apart so the error says what is wrong.
        let mut expected_offset: u64 = 0;
        let mut previous: Option<(u64, u64)> = None;
        for _ in 0..n_tensors {
            let name = c.string("tensor name")?;
            if name.is_empty() {
                return Err(ParseError::EmptyTensorName);
            }
            if name.len() >= MAX_TENSOR_NAME {
                return Err(ParseError::TensorNameTooLong(name));
            }
            if !names.insert(name.clone()) {
                return Err(ParseError::DuplicateTensor(name));
            }
            let n_dims = c.u32("tensor dimension count")?;
            if n_dims == 0 || n_dims as usize > MAX_DIMS {
                return Err(ParseError::BadDimCount {
                    tensor: name,
                    n_dims,
                });
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                let d = c.u64("tensor dimension")?;
                // ggml stores dimensions as int64: anything above i64::MAX is negative there.
                if d == 0 || d > i64::MAX as u64 {
                    return Err(ParseError::BadDimension {
                        tensor: name,
                        dim: d as i64,
                    });
                }
                dims.push(d);
            }
            let type_id = c.u32("tensor type")?;
            let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| ParseError::UnknownType {
                tensor: name.clone(),
                type_id,
            })?;
            let offset = c.u64("tensor offset")?;
            let info = TensorInfo {
                name,
                dims,
                ggml_type,
                offset,
            };
            let nbytes = info.checked_n_bytes()?;
            if offset % alignment != 0 {
                return Err(ParseError::MisalignedOffset {
                    tensor: info.name,
                    offset,
                    alignment,
                });
            }
            if let Some((prev_offset, prev_end)) = previous {
                if offset < prev_offset {
                    return Err(ParseError::OffsetOutOfOrder {
                        tensor: info.name,
                        offset,
                        previous: prev_offset,
                    });
                }
                if offset < prev_end {
                    return Err(ParseError::OverlappingTensors {
                        tensor: info.name,
                        offset,
                        previous_end: prev_end,
                    });
                }
            }
            if offset != expected_offset {
                return Err(ParseError::OffsetGap {
                    tensor: info.name,
                    offset,
                    expected: expected_offset,
                });
            }
            let end = offset.checked_add(nbytes);
            expected_offset =
                end.and_then(|o| pad_to(o, alignment))
                    .ok_or_else(|| ParseError::SizeOverflow {
                        tensor: info.name.clone(),
                    })?;
            previous = Some((offset, end.unwrap_or(u64::MAX)));
            tensors.push(info);
        }

        let data_offset = if n_tensors > 0 {
            pad_to(c.pos as u64, alignment).ok_or(ParseError::Truncated("data section"))?
        } else {
            c.pos as u64
        };
        let file_len = bytes.len() as u64;
        for t in &tensors {
            let end = data_offset
                .checked_add(t.offset)
                .and_then(|o| o.checked_add(t.n_bytes()))
                .ok_or(ParseError::SizeOverflow {
                    tensor: t.name.clone(),
                })?;
            if end > file_len {
                return Err(ParseError::DataPastEof {
                    tensor: t.name.clone(),
                    end,
                    file_len,
                });
            }
        }
        Ok(Header {
            version,
            metadata,
            tensors,
            alignment,
            data_offset,
        })
    }
}

/// A memory-mapped GGUF file.
pub struct GgufFile {
    path: PathBuf,
    mmap: Mmap,
    pub header: Header,
}

impl GgufFile {
    /// Opens and validates a file: the container and the tokenizer metadata ([`Header::parse`]).
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, ReadError> {
        GgufFile::open_with(path.as_ref(), Header::parse)
    }

    /// Opens a file with the container checks only ([`Header::parse_container`]): for tools that
    /// must show, and report on, a file whose tokenizer metadata is broken (`ggforge verify`'s
    /// structure layer). Everything else should call [`GgufFile::open`].
    pub fn open_container(path: impl AsRef<Path>) -> Result<GgufFile, ReadError> {
        GgufFile::open_with(path.as_ref(), Header::parse_container)
    }

    fn open_with(
        path: &Path,
        parse: fn(&[u8]) -> Result<Header, ParseError>,
    ) -> Result<GgufFile, ReadError> {
        let path = path.to_path_buf();
        let io = |source| ReadError::Io {
            path: path.clone(),
            source,
        };
        let file = File::open(&path).map_err(io)?;
        // SAFETY: the map is read-only; a concurrent writer truncating the file could fault, which
        // is the accepted risk of every mmap-based model reader (llama.cpp included).
        let mmap = unsafe { Mmap::map(&file) }.map_err(io)?;
        let header = parse(&mmap).map_err(|source| ReadError::Parse {
            path: path.clone(),
            source,
        })?;
        Ok(GgufFile { path, mmap, header })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn metadata(&self) -> &Metadata {
        &self.header.metadata
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.header.tensors
    }

    /// The raw bytes of a tensor (bounds were checked when the header was parsed).
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        let start = (self.header.data_offset + info.offset) as usize;
        &self.mmap[start..start + info.n_bytes() as usize]
    }

    pub fn file_len(&self) -> u64 {
        self.mmap.len() as u64
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ParseError> {
        if n > self.remaining() {
            return Err(ParseError::Truncated(what));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], ParseError> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, ParseError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, ParseError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &'static str) -> Result<String, ParseError> {
        let len = self.u64(what)?;
        if len > MAX_STRING_LEN || len > self.remaining() as u64 {
            return Err(ParseError::StringTooLong { what, len });
        }
        let raw = self.take(len as usize, what)?;
        String::from_utf8(raw.to_vec()).map_err(|_| ParseError::InvalidUtf8(what))
    }

    fn value_type(&mut self, key: &str) -> Result<ValueType, ParseError> {
        let id = self.u32("value type")?;
        ValueType::from_id(id).ok_or_else(|| ParseError::BadValueType {
            key: key.into(),
            type_id: id,
        })
    }

    fn value(&mut self, ty: ValueType, key: &str) -> Result<Value, ParseError> {
        const W: &str = "metadata value";
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>(W)?[0]),
            ValueType::I8 => Value::I8(self.array::<1>(W)?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(W)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(W)?)),
            ValueType::U32 => Value::U32(u32::from_le_bytes(self.array(W)?)),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(W)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(W)?)),
            ValueType::Bool => Value::Bool(self.array::<1>(W)?[0] != 0),
            ValueType::U64 => Value::U64(u64::from_le_bytes(self.array(W)?)),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(W)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(W)?)),
            ValueType::String => Value::String(self.string(W)?),
            ValueType::Array => Value::Array(self.array_value(key)?),
        })
    }

    fn array_value(&mut self, key: &str) -> Result<Array, ParseError> {
        let elem = self.value_type(key)?;
        let n = self.u64("array length")?;
        let min_elem = match elem {
            ValueType::Array => return Err(ParseError::NestedArray(key.into())),
            ValueType::String => 8,
            other => other.scalar_size().unwrap_or(1) as u64,
        };
        if n > MAX_ARRAY_LEN || n.saturating_mul(min_elem) > self.remaining() as u64 {
            return Err(ParseError::ArrayTooLong {
                key: key.into(),
                len: n,
            });
        }
        let n = n as usize;
        macro_rules! scalars {
            ($variant:ident, $t:ty) => {{
                let size = std::mem::size_of::<$t>();
                let raw = self.take(n * size, "array data")?;
                Array::$variant(
                    raw.chunks_exact(size)
                        .map(|b| {
                            let mut a = [0u8; std::mem::size_of::<$t>()];
                            a.copy_from_slice(b);
                            <$t>::from_le_bytes(a)
                        })
                        .collect(),
                )
            }};
        }
        Ok(match elem {
            ValueType::U8 => Array::U8(self.take(n, "array data")?.to_vec()),
            ValueType::I8 => Array::I8(
                self.take(n, "array data")?
                    .iter()
                    .map(|&b| b as i8)
                    .collect(),
            ),
            ValueType::Bool => Array::Bool(
                self.take(n, "array data")?
                    .iter()
                    .map(|&b| b != 0)
                    .collect(),
            ),
            ValueType::U16 => scalars!(U16, u16),
            ValueType::I16 => scalars!(I16, i16),
            ValueType::U32 => scalars!(U32, u32),
            ValueType::I32 => scalars!(I32, i32),
            ValueType::F32 => scalars!(F32, f32),
            ValueType::U64 => scalars!(U64, u64),
            ValueType::I64 => scalars!(I64, i64),
            ValueType::F64 => scalars!(F64, f64),
            ValueType::String => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.string("array string")?);
                }
                Array::String(v)
            }
            ValueType::Array => return Err(ParseError::NestedArray(key.into())),
        })
    }
}
