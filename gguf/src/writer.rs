//! A streaming GGUF writer.
//!
//! The header is laid out from tensor *descriptions*, before any tensor data exists; then each
//! tensor's bytes are appended in header order as they are produced, so a converter never holds
//! more than one tensor in memory.

use std::io::Write;

use crate::error::{ParseError, WriteError};
use crate::metadata::Metadata;
use crate::tensor::{TensorDesc, TensorInfo};
use crate::value::{Array, Value};
use crate::{pad_to, GGUF_MAGIC, GGUF_VERSION, MAX_TENSOR_NAME};

/// Computes the tensor infos (offsets) for `tensors` at `alignment`.
pub fn layout(tensors: &[TensorDesc], alignment: u64) -> Result<Vec<TensorInfo>, ParseError> {
    let mut offset = 0u64;
    let mut infos = Vec::with_capacity(tensors.len());
    for t in tensors {
        if t.name.len() >= MAX_TENSOR_NAME {
            return Err(ParseError::TensorNameTooLong(t.name.clone()));
        }
        if t.dims.is_empty() || t.dims.len() > crate::MAX_DIMS {
            return Err(ParseError::BadDimCount {
                tensor: t.name.clone(),
                n_dims: t.dims.len() as u32,
            });
        }
        let info = t.info(offset);
        let n = info.checked_n_bytes()?;
        offset = offset
            .checked_add(n)
            .and_then(|o| pad_to(o, alignment))
            .ok_or_else(|| ParseError::SizeOverflow {
                tensor: t.name.clone(),
            })?;
        infos.push(info);
    }
    Ok(infos)
}

/// Serializes the header (magic through the padding before the data section).
pub fn encode_header(metadata: &Metadata, infos: &[TensorInfo]) -> Vec<u8> {
    let alignment = metadata.alignment();
    let mut b = Vec::new();
    b.extend_from_slice(GGUF_MAGIC);
    b.extend_from_slice(&GGUF_VERSION.to_le_bytes());
    b.extend_from_slice(&(infos.len() as u64).to_le_bytes());
    b.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata.iter() {
        put_str(&mut b, key);
        b.extend_from_slice(&(value.value_type() as u32).to_le_bytes());
        put_value(&mut b, value);
    }
    for info in infos {
        put_str(&mut b, &info.name);
        b.extend_from_slice(&(info.dims.len() as u32).to_le_bytes());
        for d in &info.dims {
            b.extend_from_slice(&d.to_le_bytes());
        }
        b.extend_from_slice(&info.ggml_type.id().to_le_bytes());
        b.extend_from_slice(&info.offset.to_le_bytes());
    }
    if !infos.is_empty() {
        let padded = pad_to(b.len() as u64, alignment).unwrap_or(b.len() as u64) as usize;
        b.resize(padded, 0);
    }
    b
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as u64).to_le_bytes());
    b.extend_from_slice(s.as_bytes());
}

fn put_value(b: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => b.push(*x),
        Value::I8(x) => b.push(*x as u8),
        Value::U16(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => b.push(*x as u8),
        Value::String(s) => put_str(b, s),
        Value::U64(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::Array(a) => {
            b.extend_from_slice(&(a.element_type() as u32).to_le_bytes());
            b.extend_from_slice(&(a.len() as u64).to_le_bytes());
            match a {
                Array::U8(v) => b.extend_from_slice(v),
                Array::I8(v) => b.extend(v.iter().map(|&x| x as u8)),
                Array::Bool(v) => b.extend(v.iter().map(|&x| x as u8)),
                Array::U16(v) => v.iter().for_each(|x| b.extend_from_slice(&x.to_le_bytes())),
                Array::I16(v) => v.iter().for_each(|x| b.extend_from_slice(&x.to_le_bytes())),
                Array::U32(v) => v.iter().for_each(|x| b.extend_from_slice(&x.to_le_bytes())),
                Array::I32(v) => v.iter().for_each(|x| b.extend_from_slice(&x.to_le_bytes())),
                Array::F32(v) => v.iter().for_each(|x| b.extend_from_slice(&x.to_le_bytes())),
                Array::U64(v) => v.iter().for_each(|x| b.extend_from_slice(&x.to_le_bytes())),
                Array::I64(v) => v.iter().for_each(|x| b.extend_from_slice(&x.to_le_bytes())),
                Array::F64(v) => v.iter().for_each(|x| b.extend_from_slice(&x.to_le_bytes())),
                Array::String(v) => v.iter().for_each(|s| put_str(b, s)),
            }
        }
    }
}

/// Writes a GGUF file to `W` tensor by tensor.
pub struct GgufWriter<W: Write> {
    out: W,
    infos: Vec<TensorInfo>,
    alignment: u64,
    next: usize,
    written: u64,
    /// Bytes written so far, header included.
    position: u64,
}

impl<W: Write> GgufWriter<W> {
    /// Writes the header. `io_err` wraps I/O errors with the destination's name.
    pub fn new(
        mut out: W,
        metadata: &Metadata,
        tensors: &[TensorDesc],
    ) -> Result<Self, WriteError> {
        let alignment = metadata.alignment();
        let infos = layout(tensors, alignment)?;
        let header = encode_header(metadata, &infos);
        out.write_all(&header).map_err(io_err)?;
        Ok(GgufWriter {
            out,
            infos,
            alignment,
            next: 0,
            written: 0,
            position: header.len() as u64,
        })
    }

    pub fn infos(&self) -> &[TensorInfo] {
        &self.infos
    }

    /// The tensor whose bytes are expected next.
    pub fn current(&self) -> Option<&TensorInfo> {
        self.infos.get(self.next)
    }

    /// Appends bytes to the current tensor; a tensor may be written in several pieces.
    pub fn write_bytes(&mut self, bytes: &[u8]) -> Result<(), WriteError> {
        let info = self
            .infos
            .get(self.next)
            .ok_or_else(|| WriteError::Sequence {
                tensor: String::new(),
                message: "all tensors were already written".into(),
            })?;
        let size = info.n_bytes();
        if self.written + bytes.len() as u64 > size {
            return Err(WriteError::Sequence {
                tensor: info.name.clone(),
                message: format!(
                    "{} bytes given, but the tensor holds {size}",
                    self.written + bytes.len() as u64
                ),
            });
        }
        self.out.write_all(bytes).map_err(io_err)?;
        self.written += bytes.len() as u64;
        self.position += bytes.len() as u64;
        if self.written == size {
            self.end_tensor()?;
        }
        Ok(())
    }

    /// Writes one whole tensor, checking that it is the one expected next.
    pub fn write_tensor(&mut self, name: &str, bytes: &[u8]) -> Result<(), WriteError> {
        match self.current() {
            Some(info) if info.name == name && self.written == 0 => {}
            Some(info) => {
                return Err(WriteError::Sequence {
                    tensor: name.into(),
                    message: format!("written out of order: '{}' comes next", info.name),
                })
            }
            None => {
                return Err(WriteError::Sequence {
                    tensor: name.into(),
                    message: "not in the header".into(),
                })
            }
        }
        if bytes.is_empty() {
            return self.end_tensor();
        }
        self.write_bytes(bytes)
    }

    fn end_tensor(&mut self) -> Result<(), WriteError> {
        let pad = pad_to(self.position, self.alignment).unwrap_or(self.position) - self.position;
        self.out
            .write_all(&vec![0u8; pad as usize])
            .map_err(io_err)?;
        self.position += pad;
        self.next += 1;
        self.written = 0;
        Ok(())
    }

    /// Bytes written so far.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Checks that every tensor was written and returns the sink.
    pub fn finish(mut self) -> Result<W, WriteError> {
        if let Some(info) = self.infos.get(self.next) {
            return Err(WriteError::Sequence {
                tensor: info.name.clone(),
                message: "never written".into(),
            });
        }
        self.out.flush().map_err(io_err)?;
        Ok(self.out)
    }
}

fn io_err(source: std::io::Error) -> WriteError {
    if source.kind() == std::io::ErrorKind::Interrupted {
        return WriteError::Interrupted {
            path: Default::default(),
        };
    }
    WriteError::Io {
        path: Default::default(),
        source,
    }
}
