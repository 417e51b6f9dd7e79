//! Tensor descriptions as they appear in a GGUF header.

use crate::error::ParseError;
use crate::types::GgmlType;

/// One tensor's header entry. `dims` is in ggml order: `dims[0]` is the row length (the innermost,
/// contiguous dimension), the reverse of a PyTorch/NumPy shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Offset of the data relative to the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Elements per row (`ne[0]`).
    pub fn row_len(&self) -> u64 {
        self.dims.first().copied().unwrap_or(1)
    }

    /// Number of rows (product of the outer dimensions).
    pub fn n_rows(&self) -> u64 {
        self.dims.iter().skip(1).product()
    }

    /// Data size in bytes. Only valid for infos that passed [`TensorInfo::checked_n_bytes`]
    /// (every info a reader returns did).
    pub fn n_bytes(&self) -> u64 {
        self.checked_n_bytes().unwrap_or(u64::MAX)
    }

    /// Data size in bytes, or a typed error when the shape does not fit the type or overflows.
    pub fn checked_n_bytes(&self) -> Result<u64, ParseError> {
        let overflow = || ParseError::SizeOverflow {
            tensor: self.name.clone(),
        };
        let mut n: u64 = 1;
        for &d in &self.dims {
            n = n.checked_mul(d).ok_or_else(overflow)?;
        }
        if n > i64::MAX as u64 {
            return Err(overflow());
        }
        let row = self.row_len();
        let row_bytes =
            self.ggml_type
                .row_bytes(row)
                .ok_or_else(|| ParseError::RowNotBlockMultiple {
                    tensor: self.name.clone(),
                    row_len: row,
                    block_size: self.ggml_type.block_size(),
                })?;
        row_bytes.checked_mul(self.n_rows()).ok_or_else(overflow)
    }
}

/// What the writer needs to lay out a tensor before its bytes exist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorDesc {
    pub name: String,
    /// ggml order (innermost first).
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
}

impl TensorDesc {
    pub fn new(name: impl Into<String>, dims: Vec<u64>, ggml_type: GgmlType) -> Self {
        TensorDesc {
            name: name.into(),
            dims,
            ggml_type,
        }
    }

    /// From a PyTorch-order shape (outermost first).
    pub fn from_shape(name: impl Into<String>, shape: &[usize], ggml_type: GgmlType) -> Self {
        let dims = if shape.is_empty() {
            vec![1]
        } else {
            shape.iter().rev().map(|&d| d as u64).collect()
        };
        TensorDesc::new(name, dims, ggml_type)
    }

    pub fn info(&self, offset: u64) -> TensorInfo {
        TensorInfo {
            name: self.name.clone(),
            dims: self.dims.clone(),
            ggml_type: self.ggml_type,
            offset,
        }
    }
}
