//! Quantizing a whole GGUF model file, as `llama-quantize` does.
//!
//! [`quantize_file`] reads an F32/F16/BF16 (or, with `allow_requantize`, quantized) GGUF, decides
//! every tensor's type with [`crate::mix`], and streams the result into an atomically replaced
//! output, a slab of rows at a time: besides the memory-mapped input, only one slab's f32
//! expansion (at most 64 MiB) and its quantized bytes are in memory. The file layout is llama-quantize's:
//! tensors in the loader's (layer, name) order, metadata from [`crate::mix::output_metadata`],
//! 32-byte alignment. Rows are quantized in parallel on a rayon pool; every row is independent,
//! so the bytes do not depend on the thread count.
//!
//! Checks follow llama-quantize: input data must be finite (it validates every tensor it loads),
//! quantized inputs are refused unless requantizing is allowed, imatrix entries must match the
//! tensor's columns, and quantized output must have finite scales (e.g. F16 overflow fails).
//! Unlike llama-quantize, a failure never leaves a partial output file behind.

use std::path::{Path, PathBuf};

use gguf::{AtomicFile, GgmlType, GgufFile, GgufWriter, Metadata, TensorDesc, TensorInfo};
use rayon::prelude::*;

use crate::imatrix::{Imatrix, ImatrixError};
use crate::mix::{self, FileTypePreset, MixError, MixOptions, MixPlan, ModelInfo, TensorSpec};

/// An importance matrix and the name to record for it.
#[derive(Clone, Debug)]
pub struct ImatrixInput {
    pub imatrix: Imatrix,
    /// Written as `quantize.imatrix.file` (llama-quantize writes the path as typed).
    pub label: String,
}

/// Everything `ggforge quantize` can ask for.
#[derive(Clone, Debug)]
pub struct QuantizeOptions {
    pub preset: FileTypePreset,
    /// Mix options; `has_imatrix` is derived from `imatrix` and need not be set.
    pub mix: MixOptions,
    pub imatrix: Option<ImatrixInput>,
    /// `--allow-requantize`: accept already-quantized input tensors.
    pub allow_requantize: bool,
    /// Worker threads (default: rayon's default, all cores). Does not change the output.
    pub threads: Option<usize>,
    /// Values expanded to f32 at a time (whole rows; at least one row). Bounds memory like
    /// llama-quantize's --max-buffer-size; does not change the output.
    pub slab_values: u64,
}

impl QuantizeOptions {
    pub fn new(preset: FileTypePreset) -> QuantizeOptions {
        QuantizeOptions {
            preset,
            mix: MixOptions::default(),
            imatrix: None,
            allow_requantize: false,
            threads: None,
            slab_values: DEFAULT_SLAB_VALUES,
        }
    }
}

/// Why quantizing a file failed. Nothing is left at the output path.
#[derive(Debug, thiserror::Error)]
pub enum QuantizeFileError {
    #[error(transparent)]
    Read(#[from] gguf::ReadError),
    #[error("{}: {source}", path.display())]
    Mix { path: PathBuf, source: MixError },
    #[error(transparent)]
    Imatrix(#[from] ImatrixError),
    #[error("tensor '{tensor}' is already quantized ({ty}); requantizing is disabled (pass --allow-requantize, at a cost in quality compared with quantizing from 16/32-bit)")]
    Requantize { tensor: String, ty: GgmlType },
    #[error("tensor '{tensor}' has invalid data: {what}")]
    InvalidInput { tensor: String, what: String },
    #[error("tensor '{tensor}': cannot convert {from} to {to}: {message}")]
    Unsupported {
        tensor: String,
        from: GgmlType,
        to: GgmlType,
        message: String,
    },
    #[error("tensor '{tensor}': quantized data validation failed: {ty} output has {what}")]
    InvalidOutput {
        tensor: String,
        ty: GgmlType,
        what: String,
    },
    #[error("input and output are the same file: {}", .0.display())]
    SameFile(PathBuf),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: gguf::WriteError,
    },
    #[error("interrupted; {} was not written", path.display())]
    Interrupted { path: PathBuf },
    #[error("cannot start {threads} worker threads: {message}")]
    Threads { threads: usize, message: String },
}

impl QuantizeFileError {
    /// True when the input (file, imatrix or options) is unusable, as opposed to a failure while
    /// writing. The CLI maps this to exit code 2.
    pub fn is_input_error(&self) -> bool {
        use QuantizeFileError::*;
        match self {
            Read(gguf::ReadError::Io { source, .. }) => {
                source.kind() == std::io::ErrorKind::NotFound
            }
            Read(_)
            | Mix { .. }
            | Requantize { .. }
            | InvalidInput { .. }
            | Unsupported { .. }
            | SameFile(_)
            | InvalidOutput { .. } => true,
            Imatrix(ImatrixError::Io { source, .. }) => {
                source.kind() == std::io::ErrorKind::NotFound
            }
            Imatrix(_) => true,
            Write { .. } | Interrupted { .. } | Threads { .. } => false,
        }
    }
}

/// What happened to one tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorReport {
    pub name: String,
    /// Output dims (ggml order, trailing 1s dropped as ggml writes them).
    pub dims: Vec<u64>,
    pub source_type: GgmlType,
    pub target_type: GgmlType,
    /// False when the bytes were copied unchanged.
    pub converted: bool,
    /// True when imatrix weights were passed to the quantizer.
    pub imatrix_used: bool,
    /// The mix wanted a type whose block did not fit: (wanted, used).
    pub fallback: Option<(GgmlType, GgmlType)>,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// The result of [`quantize_file`].
#[derive(Clone, Debug)]
pub struct Report {
    pub input: PathBuf,
    pub output: PathBuf,
    pub preset: FileTypePreset,
    pub tensors: Vec<TensorReport>,
    pub n_fallback: usize,
    pub n_kv: usize,
    pub input_bytes: u64,
    pub output_bytes: u64,
}

/// The decisions for a file, before any data is touched.
pub struct FilePlan {
    pub model: ModelInfo,
    pub mix: MixPlan,
    /// The output metadata, in llama-quantize's order.
    pub metadata: Metadata,
    /// Per planned tensor (same order as `mix.tensors`): the imatrix weights it will use.
    imatrix_rows: Vec<Option<Vec<f32>>>,
}

impl FilePlan {
    /// The output tensor descriptions, in order.
    pub fn descs(&self) -> Vec<TensorDesc> {
        self.mix
            .tensors
            .iter()
            .map(|t| TensorDesc::new(&t.name, output_dims(&t.dims), t.target_type))
            .collect()
    }
}

/// ggml writes `ggml_n_dims` dimensions: trailing 1s dropped.
fn output_dims(dims: &[u64]) -> Vec<u64> {
    dims[..mix::ggml_n_dims(dims).min(dims.len())].to_vec()
}

/// Decides types, metadata and imatrix use for `file`, and runs every check that needs no tensor
/// data (in tensor order, so the first problem reported is the first llama-quantize would hit).
pub fn plan_file(file: &GgufFile, opts: &QuantizeOptions) -> Result<FilePlan, QuantizeFileError> {
    let mix_err = |source| QuantizeFileError::Mix {
        path: file.path().to_path_buf(),
        source,
    };
    let model = ModelInfo::from_metadata(file.metadata()).map_err(mix_err)?;
    let specs: Vec<TensorSpec> = file
        .tensors()
        .iter()
        .map(|t| TensorSpec {
            name: t.name.clone(),
            dims: t.dims.clone(),
            ggml_type: t.ggml_type,
        })
        .collect();
    let imatrix = opts
        .imatrix
        .as_ref()
        .filter(|i| !i.imatrix.entries.is_empty());
    let mut mix_opts = opts.mix.clone();
    mix_opts.has_imatrix = imatrix.is_some();
    let plan = mix::plan(&model, &specs, opts.preset, &mix_opts).map_err(mix_err)?;

    let mut imatrix_rows = Vec::with_capacity(plan.tensors.len());
    for t in &plan.tensors {
        if !t.converts() {
            imatrix_rows.push(None);
            continue;
        }
        let ne0 = t.dims.first().copied().unwrap_or(1);
        let n_mat = t.dims.get(2).copied().unwrap_or(1);
        let weights = match imatrix {
            Some(im) => im.imatrix.weights_for(&t.name, ne0, n_mat)?,
            None => None,
        };
        if weights.is_none() && t.requires_imatrix {
            return Err(mix_err(MixError::RequiresImatrix {
                tensor: t.name.clone(),
                ty: t.target_type,
            }));
        }
        if t.source_type.is_quantized() && !opts.allow_requantize {
            return Err(QuantizeFileError::Requantize {
                tensor: t.name.clone(),
                ty: t.source_type,
            });
        }
        check_convertible(t.name.as_str(), &t.dims, t.source_type, t.target_type)?;
        imatrix_rows.push(weights.map(<[f32]>::to_vec));
    }
    let kv = imatrix.map(|i| i.imatrix.kv(&i.label));
    let metadata = mix::output_metadata(file.metadata(), opts.preset, kv.as_ref());
    Ok(FilePlan {
        model,
        mix: plan,
        metadata,
        imatrix_rows,
    })
}

/// Refuses conversions ggforge (or ggml) cannot do, naming the tensor.
fn check_convertible(
    name: &str,
    dims: &[u64],
    from: GgmlType,
    to: GgmlType,
) -> Result<(), QuantizeFileError> {
    let unsupported = |message: String| QuantizeFileError::Unsupported {
        tensor: name.to_string(),
        from,
        to,
        message,
    };
    use GgmlType::*;
    if !from.is_quantized() && !matches!(from, F32 | F16 | BF16) {
        return Err(unsupported(format!(
            "llama-quantize only converts f32, f16, bf16 and quantized tensors, not {from}"
        )));
    }
    if !crate::can_quantize(to) {
        return Err(unsupported(format!("ggforge cannot produce {to}")));
    }
    let ne0 = dims.first().copied().unwrap_or(1);
    if ne0 % to.block_size() as u64 != 0 {
        return Err(unsupported(format!(
            "rows of {ne0} values are not a multiple of the {to} block size {}",
            to.block_size()
        )));
    }
    if dims.get(3).copied().unwrap_or(1) > 1 {
        return Err(unsupported(
            "llama-quantize converts at most 3-D tensors (ne[3] must be 1)".into(),
        ));
    }
    Ok(())
}

/// Quantizes `input` into `output` (see the module docs).
pub fn quantize_file(
    input: &Path,
    output: &Path,
    opts: &QuantizeOptions,
) -> Result<Report, QuantizeFileError> {
    quantize_file_with(input, output, opts, &mut |_, _, _| {})
}

/// [`quantize_file`], calling `progress(index, count, tensor)` after each tensor is written.
pub fn quantize_file_with(
    input: &Path,
    output: &Path,
    opts: &QuantizeOptions,
    progress: &mut (dyn FnMut(usize, usize, &TensorReport) + Send),
) -> Result<Report, QuantizeFileError> {
    if same_file(input, output) {
        return Err(QuantizeFileError::SameFile(output.to_path_buf()));
    }
    let file = GgufFile::open(input)?;
    let plan = plan_file(&file, opts)?;
    let pool = {
        let mut b = rayon::ThreadPoolBuilder::new();
        if let Some(n) = opts.threads {
            b = b.num_threads(n.max(1));
        }
        b.build().map_err(|e| QuantizeFileError::Threads {
            threads: opts.threads.unwrap_or(0),
            message: e.to_string(),
        })?
    };
    pool.install(|| write_output(&file, &plan, output, opts.slab_values, progress))
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

fn write_output(
    file: &GgufFile,
    plan: &FilePlan,
    output: &Path,
    slab_values: u64,
    progress: &mut (dyn FnMut(usize, usize, &TensorReport) + Send),
) -> Result<Report, QuantizeFileError> {
    let write_err = |source: gguf::WriteError| match source {
        gguf::WriteError::Interrupted { .. } => QuantizeFileError::Interrupted {
            path: output.to_path_buf(),
        },
        source => QuantizeFileError::Write {
            path: output.to_path_buf(),
            source,
        },
    };
    let io_err = |source: std::io::Error| {
        if source.kind() == std::io::ErrorKind::Interrupted {
            QuantizeFileError::Interrupted {
                path: output.to_path_buf(),
            }
        } else {
            QuantizeFileError::Write {
                path: output.to_path_buf(),
                source: gguf::WriteError::Io {
                    path: output.to_path_buf(),
                    source,
                },
            }
        }
    };
    let descs = plan.descs();
    let sink = AtomicFile::create(output).map_err(io_err)?;
    let mut w = GgufWriter::new(sink, &plan.metadata, &descs).map_err(write_err)?;
    let by_name: std::collections::HashMap<&str, &TensorInfo> = file
        .tensors()
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    let n = plan.mix.tensors.len();
    let mut reports = Vec::with_capacity(n);
    for (i, (t, weights)) in plan.mix.tensors.iter().zip(&plan.imatrix_rows).enumerate() {
        // Every planned tensor comes from the file's own tensor list.
        let Some(info) = by_name.get(t.name.as_str()) else {
            return Err(QuantizeFileError::InvalidInput {
                tensor: t.name.clone(),
                what: "missing from the tensor list".into(),
            });
        };
        let src = file.tensor_data(info);
        let mut bytes_out = 0u64;
        if t.converts() {
            for slab in slabs(t, slab_values) {
                let values = to_f32(&t.name, t.source_type, &src[slab.src_bytes(t)], slab.first)?;
                let w_slab = weights
                    .as_deref()
                    .map(|w| &w[slab.mat * slab.ne0..][..slab.ne0]);
                let out =
                    crate::quantize(t.target_type, &values, slab.ne0, w_slab).map_err(|e| {
                        QuantizeFileError::Unsupported {
                            tensor: t.name.clone(),
                            from: t.source_type,
                            to: t.target_type,
                            message: e.to_string(),
                        }
                    })?;
                drop(values);
                validate_output(&t.name, t.target_type, &out, slab.first)?;
                write_piece(&mut w, &t.name, &out).map_err(write_err)?;
                bytes_out += out.len() as u64;
            }
            if bytes_out == 0 {
                w.write_tensor(&t.name, &[]).map_err(write_err)?;
            }
        } else {
            for slab in slabs(t, slab_values) {
                validate_input(&t.name, t.source_type, &src[slab.src_bytes(t)], slab.first)?;
            }
            w.write_tensor(&t.name, src).map_err(write_err)?;
            bytes_out = src.len() as u64;
        }
        let report = TensorReport {
            name: t.name.clone(),
            dims: output_dims(&t.dims),
            source_type: t.source_type,
            target_type: t.target_type,
            converted: t.converts(),
            imatrix_used: weights.is_some() && crate::uses_imatrix(t.target_type),
            fallback: t.fallback,
            bytes_in: src.len() as u64,
            bytes_out,
        };
        progress(i, n, &report);
        reports.push(report);
    }
    let sink = w.finish().map_err(write_err)?;
    sink.commit().map_err(io_err)?;
    let output_bytes = std::fs::metadata(output).map(|m| m.len()).unwrap_or(0);
    Ok(Report {
        input: file.path().to_path_buf(),
        output: output.to_path_buf(),
        preset: plan.mix.preset,
        n_fallback: plan.mix.n_fallback,
        n_kv: plan.metadata.len(),
        tensors: reports,
        input_bytes: file.file_len(),
        output_bytes,
    })
}

/// Values per slab by default (64 MiB of f32): tensors are expanded to f32 and quantized this
/// many values at a time (whole rows, never across two expert matrices), so memory does not grow
/// with the tensor size.
pub const DEFAULT_SLAB_VALUES: u64 = 1 << 24;

/// A run of whole rows of one matrix of a tensor.
struct Slab {
    /// Row length (`ne[0]`).
    ne0: usize,
    /// Index of the expert matrix (`ne[2]` slice) the rows belong to.
    mat: usize,
    /// First row (global, over all matrices) and number of rows.
    row: u64,
    rows: u64,
    /// Index of the first element, for messages.
    first: u64,
}

impl Slab {
    fn src_bytes(&self, t: &mix::TensorPlan) -> std::ops::Range<usize> {
        let row_bytes = t.source_type.row_bytes(self.ne0 as u64).unwrap_or(0);
        (self.row * row_bytes) as usize..((self.row + self.rows) * row_bytes) as usize
    }
}

fn slabs(t: &mix::TensorPlan, slab_values: u64) -> Vec<Slab> {
    let ne0 = t.dims.first().copied().unwrap_or(1).max(1);
    let n_rows: u64 = t.dims.iter().skip(1).product();
    let n_mat = t.dims.get(2).copied().unwrap_or(1).max(1);
    let rows_per_mat = n_rows / n_mat;
    let per_slab = (slab_values / ne0).max(1);
    let mut v = Vec::new();
    for mat in 0..n_mat {
        let mut r = 0;
        while r < rows_per_mat {
            let rows = per_slab.min(rows_per_mat - r);
            let row = mat * rows_per_mat + r;
            v.push(Slab {
                ne0: ne0 as usize,
                mat: mat as usize,
                row,
                rows,
                first: row * ne0,
            });
            r += rows;
        }
    }
    v
}

/// Appends part of the current tensor, checking it is the one the header expects next.
fn write_piece<W: std::io::Write>(
    w: &mut GgufWriter<W>,
    name: &str,
    bytes: &[u8],
) -> Result<(), gguf::WriteError> {
    match w.current() {
        Some(info) if info.name == name => w.write_bytes(bytes),
        _ => Err(gguf::WriteError::Sequence {
            tensor: name.to_string(),
            message: "written out of order".into(),
        }),
    }
}

/// Expands whole rows to f32 (exact for f16/bf16), refusing non-finite values as llama-quantize's
/// loader does. `first` is the index of the first element, for messages.
fn to_f32(name: &str, ty: GgmlType, src: &[u8], first: u64) -> Result<Vec<f32>, QuantizeFileError> {
    let n = src.len() / ty.block_bytes() * ty.block_size();
    let values = crate::dequantize(ty, src, n).map_err(|e| QuantizeFileError::InvalidInput {
        tensor: name.to_string(),
        what: e.to_string(),
    })?;
    if let Some(bad) = first_non_finite(&values) {
        return Err(QuantizeFileError::InvalidInput {
            tensor: name.to_string(),
            what: non_finite_message(ty, first + bad as u64, values[bad]),
        });
    }
    Ok(values)
}

fn first_non_finite(values: &[f32]) -> Option<usize> {
    values
        .par_chunks(1 << 16)
        .enumerate()
        .find_first(|(_, c)| c.iter().any(|v| !v.is_finite()))
        .and_then(|(ci, c)| {
            c.iter()
                .position(|v| !v.is_finite())
                .map(|p| ci * (1 << 16) + p)
        })
}

fn non_finite_message(ty: GgmlType, index: u64, value: f32) -> String {
    if ty.is_quantized() {
        format!("non-finite value {value} at element {index} after decoding its {ty} blocks (a NaN or Inf scale)")
    } else {
        format!("{ty} value {value} at element {index} (NaN and Inf are not allowed)")
    }
}

/// `ggml_validate_row_data` for rows copied unchanged.
fn validate_input(
    name: &str,
    ty: GgmlType,
    src: &[u8],
    first: u64,
) -> Result<(), QuantizeFileError> {
    use GgmlType::*;
    match ty {
        F32 | F16 | BF16 => {
            if let Some((i, v)) = non_finite_plain(ty, src) {
                return Err(QuantizeFileError::InvalidInput {
                    tensor: name.to_string(),
                    what: non_finite_message(ty, first + i as u64, v),
                });
            }
            Ok(())
        }
        _ if ty.is_quantized() => to_f32(name, ty, src, first).map(drop),
        // Integer and f64 tensors are copied as they are.
        _ => Ok(()),
    }
}

/// First NaN/Inf of an f32/f16/bf16 buffer, checked on the bits (no conversion).
fn non_finite_plain(ty: GgmlType, bytes: &[u8]) -> Option<(usize, f32)> {
    match ty {
        GgmlType::F32 => bytes.chunks_exact(4).enumerate().find_map(|(i, b)| {
            let v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            (!v.is_finite()).then_some((i, v))
        }),
        GgmlType::F16 => bytes.chunks_exact(2).enumerate().find_map(|(i, b)| {
            let h = u16::from_le_bytes([b[0], b[1]]);
            (h & 0x7c00 == 0x7c00).then(|| (i, crate::f16_bits_to_f32(h)))
        }),
        GgmlType::BF16 => bytes.chunks_exact(2).enumerate().find_map(|(i, b)| {
            let h = u16::from_le_bytes([b[0], b[1]]);
            (h & 0x7fff >= 0x7f80).then(|| (i, crate::bf16_bits_to_f32(h)))
        }),
        _ => None,
    }
}

/// `ggml_validate_row_data` on the result: f16/bf16 overflow, non-finite block scales.
fn validate_output(
    name: &str,
    ty: GgmlType,
    out: &[u8],
    first: u64,
) -> Result<(), QuantizeFileError> {
    let invalid = |what: String| QuantizeFileError::InvalidOutput {
        tensor: name.to_string(),
        ty,
        what,
    };
    match ty {
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => match non_finite_plain(ty, out) {
            Some((i, v)) => Err(invalid(format!(
                "{v} at element {} (the value does not fit {ty})",
                first + i as u64
            ))),
            None => Ok(()),
        },
        _ => {
            let n = out.len() / ty.block_bytes() * ty.block_size();
            let values = crate::dequantize(ty, out, n).map_err(|e| invalid(e.to_string()))?;
            match first_non_finite(&values) {
                Some(i) => Err(invalid(format!(
                    "a non-finite block scale (element {}); the input values are too large for {ty}",
                    first + i as u64
                ))),
                None => Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_dims_drop_trailing_ones() {
        assert_eq!(output_dims(&[256, 1]), vec![256]);
        assert_eq!(output_dims(&[256, 8, 1]), vec![256, 8]);
        assert_eq!(output_dims(&[1, 1]), vec![1]);
        assert_eq!(output_dims(&[32, 1, 4]), vec![32, 1, 4]);
    }

    #[test]
    fn plain_non_finite_detection_uses_the_bits() {
        let f16: Vec<u8> = [0x3c00u16, 0x7c00, 0x0001]
            .iter()
            .flat_map(|h| h.to_le_bytes())
            .collect();
        assert_eq!(non_finite_plain(GgmlType::F16, &f16).map(|x| x.0), Some(1));
        let bf16: Vec<u8> = [0x3f80u16, 0x7f7f, 0xffc1]
            .iter()
            .flat_map(|h| h.to_le_bytes())
            .collect();
        assert_eq!(
            non_finite_plain(GgmlType::BF16, &bf16).map(|x| x.0),
            Some(2)
        );
        let f32b: Vec<u8> = [1.0f32, f32::MAX]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(non_finite_plain(GgmlType::F32, &f32b), None);
    }
}
