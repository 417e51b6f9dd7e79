//! `ggforge quantize`: llama-quantize's presets, options and output, byte for byte.

use std::path::{Path, PathBuf};

use gguf::GgmlType;
use indicatif::{ProgressBar, ProgressStyle};
use quantize::imatrix::Imatrix;
use quantize::mix::{FileTypePreset, MixOptions, TensorTypeOverride};
use quantize::model::{ImatrixInput, QuantizeOptions, Report};
use serde_json::json;

use crate::Failure;

#[derive(clap::Args)]
#[command(
    override_usage = "ggforge quantize [OPTIONS] <INPUT> [OUT] <TYPE> [NTHREADS]",
    after_help = after_help()
)]
pub struct Args {
    /// Input GGUF (F32, F16 or BF16; already-quantized tensors need --allow-requantize), or any
    /// shard of a split model: the whole model is quantized into one output file.
    pub input: PathBuf,
    /// `[OUT] TYPE [NTHREADS]`, as llama-quantize takes them. Without OUT the output is
    /// `<input's folder>/ggml-model-<TYPE>.gguf`, TYPE spelled as in the list below (q4_k_m →
    /// ggml-model-Q4_K_M.gguf, q4_k → ggml-model-Q4_K.gguf).
    #[arg(required = true, num_args = 1..=3, value_name = "[OUT] TYPE [NTHREADS]")]
    pub positional: Vec<String>,
    /// Worker threads (default: all cores). The output does not depend on it.
    #[arg(long)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub mix: MixArgs,
    /// Accept already-quantized input tensors (dequantized, then quantized again).
    #[arg(long)]
    pub allow_requantize: bool,
    /// Print a JSON report on stdout.
    #[arg(long)]
    pub json: bool,
}

/// The type-choice options shared by `quantize` and `convert --quant`.
#[derive(clap::Args)]
pub struct MixArgs {
    /// No mix: every quantizable tensor gets the preset's type (shape fallbacks still apply).
    #[arg(long)]
    pub pure: bool,
    /// ggml type for output.weight (and for tied token embeddings), e.g. q8_0.
    #[arg(long, value_name = "TYPE")]
    pub output_tensor_type: Option<String>,
    /// ggml type for token_embd.weight, e.g. q4_k.
    #[arg(long, value_name = "TYPE")]
    pub token_embedding_type: Option<String>,
    /// Type override for tensors whose name matches a regular expression (lower-cased first,
    /// searched anywhere in the name; the first matching option wins). Repeatable.
    #[arg(long = "tensor-type", value_name = "PATTERN=TYPE")]
    pub tensor_type: Vec<String>,
    /// Copy output.weight unchanged.
    #[arg(long)]
    pub leave_output_tensor: bool,
    /// Importance matrix from llama-imatrix (GGUF or legacy .dat).
    #[arg(long, value_name = "FILE")]
    pub imatrix: Option<PathBuf>,
}

impl MixArgs {
    /// The mix options and the loaded importance matrix.
    pub fn options(&self) -> Result<(MixOptions, Option<ImatrixInput>), Failure> {
        let mut mix = MixOptions {
            pure: self.pure,
            leave_output_tensor: self.leave_output_tensor,
            ..MixOptions::default()
        };
        if let Some(t) = &self.output_tensor_type {
            mix.output_tensor_type = Some(parse_ggml("--output-tensor-type", t)?);
        }
        if let Some(t) = &self.token_embedding_type {
            mix.token_embedding_type = Some(parse_ggml("--token-embedding-type", t)?);
        }
        for spec in &self.tensor_type {
            let o = TensorTypeOverride::parse(spec).map_err(|e| Failure::input(e.to_string()))?;
            mix.tensor_types.push(o);
        }
        let imatrix = match &self.imatrix {
            None => None,
            Some(path) => Some(ImatrixInput {
                imatrix: Imatrix::load(path).map_err(|e| classify(e.into()))?,
                label: path.to_string_lossy().into_owned(),
            }),
        };
        mix.has_imatrix = imatrix.is_some();
        Ok((mix, imatrix))
    }
}

fn after_help() -> String {
    let mut s = String::from("Types (case-insensitive; Q3_K, Q4_K, Q5_K are the _M presets; a llama_ftype number also works):\n");
    for p in FileTypePreset::names() {
        let (preset, _) = FileTypePreset::parse(p).unwrap_or((FileTypePreset::Q8_0, "Q8_0"));
        s.push_str(&format!(
            "  {:>2}  {p:<7} {}\n",
            preset.ftype(),
            preset.description()
        ));
    }
    s
}

fn valid_types() -> String {
    FileTypePreset::names().collect::<Vec<_>>().join(", ")
}

pub fn parse_preset(s: &str) -> Result<(FileTypePreset, &'static str), Failure> {
    FileTypePreset::parse(s).ok_or_else(|| {
        Failure::input(format!(
            "unknown quantization type '{s}'; valid types: {}",
            valid_types()
        ))
    })
}

fn parse_ggml(flag: &str, s: &str) -> Result<GgmlType, Failure> {
    quantize::mix::parse_ggml_type(s).ok_or_else(|| {
        let names: Vec<&str> = GgmlType::ALL.iter().map(|t| t.name()).collect();
        Failure::input(format!(
            "{flag}: unknown ggml type '{s}'; valid: {}",
            names.join(", ")
        ))
    })
}

fn parse_threads(s: &str) -> Result<usize, Failure> {
    s.parse::<usize>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| Failure::input(format!("invalid thread count '{s}'")))
}

/// llama-quantize's positional rules: `IN TYPE [N]` or `IN OUT TYPE [N]`.
fn positionals(
    input: &Path,
    pos: &[String],
) -> Result<(PathBuf, FileTypePreset, Option<usize>), Failure> {
    if let Some((preset, name)) = FileTypePreset::parse(&pos[0]) {
        if pos.len() > 2 {
            return Err(Failure::input(format!(
                "too many arguments after the type '{}'",
                pos[0]
            )));
        }
        let dir = input.parent().unwrap_or(Path::new(""));
        let out = dir.join(format!("ggml-model-{name}.gguf"));
        let threads = pos.get(1).map(|s| parse_threads(s)).transpose()?;
        return Ok((out, preset, threads));
    }
    let Some(ty) = pos.get(1) else {
        // A single positional that is not a type: most likely a mistyped type.
        return Err(parse_preset(&pos[0]).err().unwrap_or_else(|| {
            Failure::input(format!("missing TYPE; valid types: {}", valid_types()))
        }));
    };
    let (preset, _) = parse_preset(ty)?;
    let threads = pos.get(2).map(|s| parse_threads(s)).transpose()?;
    Ok((PathBuf::from(&pos[0]), preset, threads))
}

pub fn run(args: Args) -> Result<(), Failure> {
    let (output, preset, pos_threads) = positionals(&args.input, &args.positional)?;
    let mut opts = QuantizeOptions::new(preset);
    opts.threads = args.threads.or(pos_threads);
    opts.allow_requantize = args.allow_requantize;
    (opts.mix, opts.imatrix) = args.mix.options()?;

    // A shard of a split model is quantized whole, so the bar counts every shard's bytes (errors
    // are reported by the quantizer itself, which opens the model the same way).
    let total = gguf::SplitModel::open(&args.input)
        .map(|m| m.total_len())
        .unwrap_or(0);
    let bar = if args.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total)
    };
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(format!("quantizing to {}", preset.name()));
    let result =
        quantize::model::quantize_file_with(&args.input, &output, &opts, &mut |_, _, t| {
            bar.inc(t.bytes_in)
        });
    bar.finish_and_clear();
    let report = result.map_err(classify)?;
    if args.json {
        let text = serde_json::to_string_pretty(&report_json(&report, &opts))
            .map_err(|e| Failure::failed(e.to_string()))?;
        crate::print_stdout(&format!("{text}\n"))?;
    } else {
        let converted = report.tensors.iter().filter(|t| t.converted).count();
        eprintln!(
            "wrote {} ({}, {} tensors of which {} converted, {} -> {} bytes{})",
            report.output.display(),
            preset.description(),
            report.tensors.len(),
            converted,
            report.input_bytes,
            report.output_bytes,
            if report.n_fallback > 0 {
                format!(", {} shape fallbacks", report.n_fallback)
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

fn report_json(r: &Report, opts: &QuantizeOptions) -> serde_json::Value {
    let tensors: Vec<serde_json::Value> = r
        .tensors
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "dims": t.dims,
                "from": t.source_type.name(),
                "to": t.target_type.name(),
                "converted": t.converted,
                "imatrix": t.imatrix_used,
                "fallback": t.fallback.map(|(a, b)| json!([a.name(), b.name()])),
                "bytes_in": t.bytes_in,
                "bytes_out": t.bytes_out,
            })
        })
        .collect();
    json!({
        "input": r.input.display().to_string(),
        "output": r.output.display().to_string(),
        "type": r.preset.name(),
        "file_type": r.preset.ftype(),
        "imatrix": opts.imatrix.as_ref().map(|i| json!({
            "file": i.label,
            "entries": i.imatrix.entries.len(),
            "chunks": i.imatrix.chunk_count,
        })),
        "n_kv": r.n_kv,
        "n_fallback": r.n_fallback,
        "input_bytes": r.input_bytes,
        "output_bytes": r.output_bytes,
        "tensors": tensors,
    })
}

/// Unusable input (file, imatrix, options) exits 2, everything else 1.
fn classify(e: quantize::model::QuantizeFileError) -> Failure {
    if e.is_input_error() {
        Failure::input(e.to_string())
    } else {
        Failure::failed(e.to_string())
    }
}
