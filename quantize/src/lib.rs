//! ggml block quantization, bit-exact with llama.cpp's `ggml-quants.c`.
//!
//! Every quantizer reproduces what `ggml_quantize_chunk` (hence `llama-quantize`) runs for a type:
//! the `_ref` functions without an importance matrix and the `_impl` functions with one. The float
//! arithmetic follows the C evaluation order with plain f32 operations (Rust never fuses a
//! multiply-add), which is what an x86-64 build of ggml computes, so the bytes are identical —
//! tests/ compares them against ggml's own output for ordinary and adversarial rows.
//!
//! Rows are independent in every format, so [`quantize`] spreads rows over rayon's pool and
//! writes each row to its fixed offset: the output does not depend on the thread count.

// The block codecs index arrays exactly as ggml-quants.c does (`x[16*j + ii]`, `L[j + l + 32]`),
// so each loop can be checked line by line against the C reference; iterator rewrites would
// obscure that without making the code faster.
#![allow(clippy::needless_range_loop)]

mod common;
mod fp;
mod fp4;
mod iq4;
mod iq_dequant;
#[rustfmt::skip]
mod iq_tables;
mod kquants;
mod legacy;
mod low_bit;
mod stream;

pub mod imatrix;
pub mod mix;
pub mod model;

use gguf::GgmlType;
use rayon::prelude::*;

pub use fp::{bf16_bits_to_f32, f16_bits_to_f32, f32_to_bf16_bits, f32_to_f16_bits};

/// Why a quantize/dequantize call was refused. Callers add the tensor name.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum QuantizeError {
    #[error("quantizing to {ty} is not supported (it needs ggml's grid search, or it is an intermediate format)")]
    CannotQuantize { ty: GgmlType },
    #[error("row length must be positive")]
    EmptyRow,
    #[error("row length {n_per_row} is not a multiple of the {ty} block size {block}")]
    RowNotBlockMultiple {
        ty: GgmlType,
        n_per_row: usize,
        block: usize,
    },
    #[error("{len} input values are not a whole number of rows of {n_per_row}")]
    PartialRow { len: usize, n_per_row: usize },
    #[error("imatrix has {got} values, expected one per column ({expected})")]
    ImatrixLength { expected: usize, got: usize },
    #[error("imatrix value {value} at column {column} is not finite")]
    ImatrixNotFinite { column: usize, value: f32 },
    #[error("{ty} output buffer has {got} bytes, expected {expected}")]
    OutputLength {
        ty: GgmlType,
        expected: usize,
        got: usize,
    },
    #[error("{n_elements} elements are not a whole number of {ty} blocks of {block}")]
    ElementsNotBlockMultiple {
        ty: GgmlType,
        n_elements: usize,
        block: usize,
    },
    #[error("{ty} data has {got} bytes, expected {expected} for {n_elements} elements")]
    InputLength {
        ty: GgmlType,
        n_elements: usize,
        expected: usize,
        got: usize,
    },
}

/// True when [`quantize`] can produce `ty`.
///
/// False for the grid-search IQ types (IQ1_S/M, IQ2_*, IQ3_*), which are decode-only here, for
/// the dot-product intermediates Q8_1/Q8_K, and for the integer/f64 types (never quantization
/// targets).
pub fn can_quantize(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        ty,
        F32 | F16
            | BF16
            | Q4_0
            | Q4_1
            | Q5_0
            | Q5_1
            | Q8_0
            | Q2_K
            | Q3_K
            | Q4_K
            | Q5_K
            | Q6_K
            | IQ4_NL
            | IQ4_XS
            | TQ1_0
            | TQ2_0
            | MXFP4
            | NVFP4
            | Q1_0
            | Q2_0
    )
}

/// True when ggml's quantizer reads the imatrix for `ty` (the others ignore it, as in ggml).
pub fn uses_imatrix(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        ty,
        Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | IQ4_NL | IQ4_XS
    )
}

/// Bytes needed for `n_rows` rows of `n_per_row` values of `ty`, when that is a whole number of blocks.
pub fn quantized_size(ty: GgmlType, n_rows: usize, n_per_row: usize) -> Option<usize> {
    let bs = ty.block_size();
    if n_per_row % bs != 0 {
        return None;
    }
    (n_per_row / bs)
        .checked_mul(ty.block_bytes())?
        .checked_mul(n_rows)
}

/// Quantizes `src` (whole rows of `n_per_row` f32) to `ty`, as `ggml_quantize_chunk` does.
///
/// `imatrix` holds one importance weight per column; when present it selects ggml's `_impl`
/// paths for the types that use it. For a 3-D expert tensor, call once per expert with that
/// expert's rows and imatrix slice, as llama-quantize does.
///
/// F32/F16/BF16 are plain conversions. Nothing is validated after quantizing: values beyond the
/// f16 range give ±Inf scales exactly as in ggml (llama-quantize then refuses the tensor in
/// `ggml_validate_row_data`; that check belongs to the caller).
pub fn quantize(
    ty: GgmlType,
    src: &[f32],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
) -> Result<Vec<u8>, QuantizeError> {
    let n_rows = check_quantize_args(ty, src, n_per_row, imatrix)?;
    let size = quantized_size(ty, n_rows, n_per_row).ok_or(QuantizeError::RowNotBlockMultiple {
        ty,
        n_per_row,
        block: ty.block_size(),
    })?;
    let mut dst = vec![0u8; size];
    quantize_rows(ty, src, n_per_row, imatrix, &mut dst);
    Ok(dst)
}

/// [`quantize`] into a caller-provided buffer of exactly the quantized size.
pub fn quantize_into(
    ty: GgmlType,
    src: &[f32],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
    dst: &mut [u8],
) -> Result<(), QuantizeError> {
    let n_rows = check_quantize_args(ty, src, n_per_row, imatrix)?;
    let expected =
        quantized_size(ty, n_rows, n_per_row).ok_or(QuantizeError::RowNotBlockMultiple {
            ty,
            n_per_row,
            block: ty.block_size(),
        })?;
    if dst.len() != expected {
        return Err(QuantizeError::OutputLength {
            ty,
            expected,
            got: dst.len(),
        });
    }
    quantize_rows(ty, src, n_per_row, imatrix, dst);
    Ok(())
}

/// Validates the arguments and returns the number of rows.
fn check_quantize_args(
    ty: GgmlType,
    src: &[f32],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
) -> Result<usize, QuantizeError> {
    if !can_quantize(ty) {
        return Err(QuantizeError::CannotQuantize { ty });
    }
    if n_per_row == 0 {
        return Err(QuantizeError::EmptyRow);
    }
    let block = ty.block_size();
    if n_per_row % block != 0 {
        return Err(QuantizeError::RowNotBlockMultiple {
            ty,
            n_per_row,
            block,
        });
    }
    if src.len() % n_per_row != 0 {
        return Err(QuantizeError::PartialRow {
            len: src.len(),
            n_per_row,
        });
    }
    if let Some(w) = imatrix {
        if w.len() != n_per_row {
            return Err(QuantizeError::ImatrixLength {
                expected: n_per_row,
                got: w.len(),
            });
        }
        // A NaN/Inf weight poisons every block of its column; llama-quantize refuses such an
        // imatrix for every tensor, and so do we.
        if let Some((column, &value)) = w.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(QuantizeError::ImatrixNotFinite { column, value });
        }
    }
    Ok(src.len() / n_per_row)
}

/// Rows handed to one rayon task: at least ~16K values, like ggml's chunking, so tiny rows do
/// not drown in scheduling overhead.
pub(crate) fn rows_per_task(n_per_row: usize) -> usize {
    (16384 / n_per_row).max(1)
}

fn quantize_rows(
    ty: GgmlType,
    src: &[f32],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
    dst: &mut [u8],
) {
    if src.is_empty() {
        return;
    }
    let row_bytes = dst.len() / (src.len() / n_per_row);
    let qw = if uses_imatrix(ty) { imatrix } else { None };
    let rpt = rows_per_task(n_per_row);
    dst.par_chunks_mut(row_bytes * rpt)
        .zip(src.par_chunks(n_per_row * rpt))
        .for_each(|(d, s)| {
            for (drow, srow) in d.chunks_exact_mut(row_bytes).zip(s.chunks_exact(n_per_row)) {
                quantize_row(ty, srow, qw, drow);
            }
        });
}

/// Quantizes one row. `qw` is only `Some` for types whose ggml quantizer reads it.
fn quantize_row(ty: GgmlType, x: &[f32], qw: Option<&[f32]>, y: &mut [u8]) {
    use GgmlType::*;
    match ty {
        F32 => {
            for (v, o) in x.iter().zip(y.chunks_exact_mut(4)) {
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        F16 => {
            for (v, o) in x.iter().zip(y.chunks_exact_mut(2)) {
                o.copy_from_slice(&f32_to_f16_bits(*v).to_le_bytes());
            }
        }
        BF16 => {
            for (v, o) in x.iter().zip(y.chunks_exact_mut(2)) {
                o.copy_from_slice(&f32_to_bf16_bits(*v).to_le_bytes());
            }
        }
        Q4_0 => legacy::quantize_q4_0(x, y, qw),
        Q4_1 => legacy::quantize_q4_1(x, y, qw),
        Q5_0 => legacy::quantize_q5_0(x, y, qw),
        Q5_1 => legacy::quantize_q5_1(x, y, qw),
        Q8_0 => legacy::quantize_q8_0(x, y),
        Q2_K => kquants::quantize_q2_k(x, y, qw),
        Q3_K => kquants::quantize_q3_k(x, y, qw),
        Q4_K => kquants::quantize_q4_k(x, y, qw),
        Q5_K => kquants::quantize_q5_k(x, y, qw),
        Q6_K => kquants::quantize_q6_k(x, y, qw),
        IQ4_NL => iq4::quantize_iq4_nl(x, y, qw),
        IQ4_XS => iq4::quantize_iq4_xs(x, y, qw),
        TQ1_0 => low_bit::quantize_tq1_0(x, y),
        TQ2_0 => low_bit::quantize_tq2_0(x, y),
        Q1_0 => low_bit::quantize_q1_0(x, y),
        Q2_0 => low_bit::quantize_q2_0(x, y),
        MXFP4 => fp4::quantize_mxfp4(x, y),
        NVFP4 => fp4::quantize_nvfp4(x, y),
        // Rejected by `check_quantize_args`.
        Q8_1 | Q8_K | IQ2_XXS | IQ2_XS | IQ3_XXS | IQ1_S | IQ3_S | IQ2_S | IQ1_M | I8 | I16
        | I32 | I64 | F64 => unreachable!("can_quantize({ty}) is false"),
    }
}

/// Decodes `n_elements` values of `ty` to f32, as ggml's `to_float` (integer and f64 types are
/// converted with a plain cast).
pub fn dequantize(ty: GgmlType, src: &[u8], n_elements: usize) -> Result<Vec<f32>, QuantizeError> {
    let mut out = vec![0.0f32; n_elements];
    dequantize_into(ty, src, &mut out)?;
    Ok(out)
}

/// [`dequantize`] into a caller-provided buffer; `dst.len()` is the element count.
pub fn dequantize_into(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantizeError> {
    let n_elements = dst.len();
    let block = ty.block_size();
    if n_elements % block != 0 {
        return Err(QuantizeError::ElementsNotBlockMultiple {
            ty,
            n_elements,
            block,
        });
    }
    let n_blocks = n_elements / block;
    let bb = ty.block_bytes();
    let expected = n_blocks.checked_mul(bb);
    if expected != Some(src.len()) {
        return Err(QuantizeError::InputLength {
            ty,
            n_elements,
            expected: expected.unwrap_or(usize::MAX),
            got: src.len(),
        });
    }
    if n_blocks == 0 {
        return Ok(());
    }
    // Whole blocks per task, ~16K values each.
    let blocks_per_task = (16384 / block).max(1);
    src.par_chunks(bb * blocks_per_task)
        .zip(dst.par_chunks_mut(block * blocks_per_task))
        .for_each(|(s, d)| dequantize_blocks(ty, s, d));
    Ok(())
}

fn dequantize_blocks(ty: GgmlType, x: &[u8], y: &mut [f32]) {
    use GgmlType::*;
    match ty {
        F32 => {
            for (o, b) in y.iter_mut().zip(x.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        F16 => widen_f16(x, y),
        BF16 => {
            for (o, b) in y.iter_mut().zip(x.chunks_exact(2)) {
                *o = bf16_bits_to_f32(u16::from_le_bytes([b[0], b[1]]));
            }
        }
        I8 => {
            for (o, b) in y.iter_mut().zip(x.iter()) {
                *o = *b as i8 as f32;
            }
        }
        I16 => {
            for (o, b) in y.iter_mut().zip(x.chunks_exact(2)) {
                *o = i16::from_le_bytes([b[0], b[1]]) as f32;
            }
        }
        I32 => {
            for (o, b) in y.iter_mut().zip(x.chunks_exact(4)) {
                *o = i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32;
            }
        }
        I64 => {
            for (o, b) in y.iter_mut().zip(x.chunks_exact(8)) {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                *o = i64::from_le_bytes(a) as f32;
            }
        }
        F64 => {
            for (o, b) in y.iter_mut().zip(x.chunks_exact(8)) {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                *o = f64::from_le_bytes(a) as f32;
            }
        }
        Q4_0 => legacy::dequantize_q4_0(x, y),
        Q4_1 => legacy::dequantize_q4_1(x, y),
        Q5_0 => legacy::dequantize_q5_0(x, y),
        Q5_1 => legacy::dequantize_q5_1(x, y),
        Q8_0 => legacy::dequantize_q8_0(x, y),
        Q8_1 => legacy::dequantize_q8_1(x, y),
        Q2_K => kquants::dequantize_q2_k(x, y),
        Q3_K => kquants::dequantize_q3_k(x, y),
        Q4_K => kquants::dequantize_q4_k(x, y),
        Q5_K => kquants::dequantize_q5_k(x, y),
        Q6_K => kquants::dequantize_q6_k(x, y),
        Q8_K => kquants::dequantize_q8_k(x, y),
        IQ4_NL => iq4::dequantize_iq4_nl(x, y),
        IQ4_XS => iq4::dequantize_iq4_xs(x, y),
        IQ2_XXS => iq_dequant::dequantize_iq2_xxs(x, y),
        IQ2_XS => iq_dequant::dequantize_iq2_xs(x, y),
        IQ2_S => iq_dequant::dequantize_iq2_s(x, y),
        IQ3_XXS => iq_dequant::dequantize_iq3_xxs(x, y),
        IQ3_S => iq_dequant::dequantize_iq3_s(x, y),
        IQ1_S => iq_dequant::dequantize_iq1_s(x, y),
        IQ1_M => iq_dequant::dequantize_iq1_m(x, y),
        TQ1_0 => low_bit::dequantize_tq1_0(x, y),
        TQ2_0 => low_bit::dequantize_tq2_0(x, y),
        Q1_0 => low_bit::dequantize_q1_0(x, y),
        Q2_0 => low_bit::dequantize_q2_0(x, y),
        MXFP4 => fp4::dequantize_mxfp4(x, y),
        NVFP4 => fp4::dequantize_nvfp4(x, y),
    }
}

/// f16 → f32 for a run of values. Expanding F16 input is a large share of quantizing an F16
/// model to Q8_0/Q4_0, so with AVX2 the same branch-free bit manipulation is compiled for 8
/// lanes (integer and exact float operations only: the bits are those of the scalar code).
fn widen_f16(x: &[u8], y: &mut [f32]) {
    #[inline(always)]
    fn body(x: &[u8], y: &mut [f32]) {
        for (o, b) in y.iter_mut().zip(x.chunks_exact(2)) {
            *o = f16_bits_to_f32(u16::from_le_bytes([b[0], b[1]]));
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        unsafe fn avx2(x: &[u8], y: &mut [f32]) {
            body(x, y)
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { avx2(x, y) };
        }
    }
    body(x, y)
}
