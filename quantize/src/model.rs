//! Quantizing a whole GGUF model file, as `llama-quantize` does.
//!
//! [`quantize_file`] reads an F32/F16/BF16 (or, with `allow_requantize`, quantized) GGUF, decides
//! every tensor's type with [`crate::mix`], and streams the result into an atomically replaced
//! output, a chunk of rows at a time, with reading, converting and writing overlapped (the data
//! path is `stream.rs`): besides a few chunks of output and of the memory-mapped input, nothing
//! is held in memory. The file layout is llama-quantize's: tensors in the loader's (layer,
//! name) order, metadata from [`crate::mix::output_metadata`], 32-byte alignment. Rows are
//! quantized in parallel on a rayon pool; every row is independent, so the bytes do not depend
//! on the thread count.
//!
//! Checks follow llama-quantize: input data must be finite (it validates every tensor it loads),
//! quantized inputs are refused unless requantizing is allowed, imatrix entries must match the
//! tensor's columns, and quantized output must have finite scales (e.g. F16 overflow fails).
//! Unlike llama-quantize, a failure never leaves a partial output file behind.

use std::path::{Path, PathBuf};

use gguf::{
    AtomicFile, GgmlType, GgufModel, GgufWriter, Metadata, SplitModel, TensorDesc, TensorInfo,
};

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
    /// Values converted per chunk (whole rows; at least one row). Bounds memory (three chunks of
    /// output circulate); does not change the output.
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
    /// The shards of a split input do not make one model (missing, inconsistent, foreign).
    #[error(transparent)]
    Split(gguf::SplitError),
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

/// A file that cannot be read stays a `Read` error, whether it was the named file or a shard,
/// so plain inputs fail exactly as before splits were read.
impl From<gguf::SplitError> for QuantizeFileError {
    fn from(e: gguf::SplitError) -> Self {
        match e {
            gguf::SplitError::Read(r) => QuantizeFileError::Read(r),
            other => QuantizeFileError::Split(other),
        }
    }
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
            | Split(_)
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
pub fn plan_file(
    file: &dyn GgufModel,
    opts: &QuantizeOptions,
) -> Result<FilePlan, QuantizeFileError> {
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
    // A shard of a split model quantizes the whole model, as llama-quantize does; the output
    // is one file, whose bytes equal quantizing the unsplit model.
    let file = SplitModel::open(input)?;
    if let Some(shard) = file.files().iter().find(|f| same_file(f.path(), output)) {
        return Err(QuantizeFileError::SameFile(shard.path().to_path_buf()));
    }
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
    file: &dyn GgufModel,
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
    let w = GgufWriter::new(sink, &plan.metadata, &descs).map_err(write_err)?;
    let by_name: std::collections::HashMap<&str, &TensorInfo> = file
        .tensors()
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    let mut jobs = Vec::with_capacity(plan.mix.tensors.len());
    for (t, weights) in plan.mix.tensors.iter().zip(&plan.imatrix_rows) {
        // Every planned tensor comes from the file's own tensor list.
        let Some(info) = by_name.get(t.name.as_str()) else {
            return Err(QuantizeFileError::InvalidInput {
                tensor: t.name.clone(),
                what: "missing from the tensor list".into(),
            });
        };
        // A slice of the memory-mapped input file (see `stream::Job::src`).
        let src = file.tensor_data(info);
        let bytes_out = if t.converts() {
            let ne0 = t.dims.first().copied().unwrap_or(1);
            let n_rows: u64 = t.dims.iter().skip(1).product();
            t.target_type.row_bytes(ne0).unwrap_or(0) * n_rows
        } else {
            src.len() as u64
        };
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
        jobs.push(crate::stream::Job {
            plan: t,
            src,
            weights: weights.as_deref(),
            report,
        });
    }
    let (w, reports) = crate::stream::run(w, &jobs, slab_values, progress, &write_err)?;
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

/// Values per chunk by default: tensors are converted and handed to the writer this many values
/// at a time (whole rows, never across two expert matrices), so memory does not grow with the
/// tensor size. 4 Mi values make 4.25 MiB of Q8_0 (8 MiB of F16) per output buffer, of which
/// three circulate: big enough that a chunk's parallel split and its write are efficient, small
/// enough that converting one chunk overlaps writing the previous one closely.
pub const DEFAULT_SLAB_VALUES: u64 = 1 << 22;

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
}
