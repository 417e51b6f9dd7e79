//! `ggforge convert`.

use std::path::PathBuf;

use convert::{ConvertError, ConvertOptions, OutType};
use indicatif::{ProgressBar, ProgressStyle};

use crate::Failure;

#[derive(clap::Args)]
pub struct Args {
    /// The Hugging Face model folder (config.json, *.safetensors, tokenizer files).
    pub model: PathBuf,
    /// Output tensor type: f32, f16, bf16, q8_0 or auto (bf16 if the checkpoint is bf16, else f16).
    #[arg(long, default_value = "auto")]
    pub outtype: String,
    /// Output file, or a directory for the default name; `{ftype}` is replaced by the type.
    #[arg(long)]
    pub outfile: Option<PathBuf>,
    /// Worker threads (default: all cores). The output does not depend on it.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
    /// Force the tokenizer pre-tokenizer name (tokenizer.ggml.pre).
    #[arg(long = "pre")]
    pub pre: Option<String>,
    /// Override the model name (general.name).
    #[arg(long)]
    pub model_name: Option<String>,
}

pub fn run(args: Args) -> Result<(), Failure> {
    let outtype = OutType::parse(&args.outtype).ok_or_else(|| {
        Failure::input(format!(
            "unknown --outtype '{}'; valid: {}",
            args.outtype,
            OutType::NAMES.join(", ")
        ))
    })?;
    if let Some(n) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n.max(1))
            .build_global()
            .map_err(|e| Failure::failed(format!("cannot start {n} threads: {e}")))?;
    }
    let opts = ConvertOptions {
        outtype,
        outfile: args.outfile,
        pre_override: args.pre,
        model_name: args.model_name,
        repo_id: None,
    };
    let plan = convert::plan(&args.model, &opts).map_err(classify)?;
    if plan.outfile.exists() {
        eprintln!(
            "note: {} exists and will be replaced",
            plan.outfile.display()
        );
    }
    let bar = ProgressBar::new(plan.input_bytes());
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(format!("converting to {}", plan.ftype.label));
    let summary = plan.write(&|n| bar.inc(n)).map_err(classify);
    bar.finish_and_clear();
    let summary = summary?;
    if args.json {
        let text =
            serde_json::to_string_pretty(&summary).map_err(|e| Failure::failed(e.to_string()))?;
        crate::print_stdout(&format!("{text}\n"))?;
    } else {
        eprintln!(
            "wrote {} ({} tensors, {} parameters, {} bytes, {})",
            summary.output.display(),
            summary.n_tensors,
            summary.n_params,
            summary.bytes_written,
            summary.file_type
        );
    }
    Ok(())
}

/// Input problems exit 2, everything else 1.
fn classify(e: ConvertError) -> Failure {
    let message = e.to_string();
    match e {
        ConvertError::BadInput { .. }
        | ConvertError::UnsupportedDtype { .. }
        | ConvertError::Registry { .. }
        | ConvertError::Vocab(_) => Failure::input(message),
        ConvertError::Io { ref source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            Failure::input(message)
        }
        _ => Failure::failed(message),
    }
}
