//! `ggforge convert`.

use std::path::PathBuf;

use convert::{ConvertError, ConvertOptions, OutType};
use indicatif::{ProgressBar, ProgressStyle};

use crate::Failure;

#[derive(clap::Args)]
pub struct Args {
    /// The Hugging Face model folder (config.json, *.safetensors, tokenizer files), or a Hub
    /// repo `org/name[@revision]` to download into the huggingface_hub cache (docs/hub.md).
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
    /// Split the output into shards of at most SIZE bytes of tensor data (K, M, G: powers of
    /// 1000), named like llama.cpp's: NAME-00001-of-0000N.gguf.
    #[arg(long, value_name = "SIZE")]
    pub split_max_size: Option<String>,
    /// Split the output into shards of at most N tensors.
    #[arg(long, value_name = "N")]
    pub split_max_tensors: Option<usize>,
    /// Split, and keep the first shard to the metadata only.
    #[arg(long)]
    pub no_tensor_first_split: bool,
    /// Quantize in the same pass (Q4_K_M, Q8_0, …; see `ggforge quantize --help`). The result
    /// equals converting with --outtype and then `ggforge quantize` (or llama-quantize); use
    /// --outtype f32 to quantize straight from the checkpoint's values instead.
    #[arg(long, value_name = "TYPE")]
    pub quant: Option<String>,
    #[command(flatten)]
    pub mix: crate::quantize_cmd::MixArgs,
}

/// `--split-*` as a [`gguf::split::SplitRule`].
fn split_rule(args: &Args) -> Result<gguf::split::SplitRule, Failure> {
    let max_bytes = match &args.split_max_size {
        None => 0,
        Some(s) => gguf::split::parse_size(s).ok_or_else(|| {
            Failure::input(format!(
                "--split-max-size '{s}': expected a number of bytes, optionally followed by K, M or G"
            ))
        })?,
    };
    Ok(gguf::split::SplitRule {
        max_tensors: args.split_max_tensors.unwrap_or(0),
        max_bytes,
        no_tensors_in_first: args.no_tensor_first_split,
    })
}

/// The model folder to convert and, for a Hub repo, its id: a local path is used as is, an
/// `org/name[@revision]` is fetched into the Hub cache first.
fn resolve_model(arg: &std::path::Path) -> Result<(PathBuf, Option<String>), Failure> {
    let repo = match hub::ModelArg::classify(arg) {
        hub::ModelArg::Local(p) => return Ok((p, None)),
        hub::ModelArg::Hub(r) => r,
    };
    let cfg = hub::HubConfig::from_env();
    let bars = hub::ProgressBars::new();
    let opts = hub::FetchOptions {
        progress: &bars,
        should_stop: &gguf::atomic::interrupt_requested,
        ..hub::FetchOptions::default()
    };
    let snap = hub::fetch(&cfg, &repo, &opts).map_err(|e| {
        let message = format!("{e} (there is no local folder '{}' either)", arg.display());
        if e.is_input_error() {
            Failure::input(message)
        } else {
            Failure::failed(e.to_string())
        }
    })?;
    eprintln!(
        "{repo}: commit {} ({}), {}",
        snap.commit,
        snap.dir.display(),
        if snap.downloaded > 0 {
            format!("{} bytes downloaded", snap.downloaded)
        } else {
            "all files cached".to_string()
        }
    );
    Ok((snap.dir, Some(repo.repo_id)))
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
    let rule = split_rule(&args)?;
    let (model_dir, repo_id) = resolve_model(&args.model)?;
    let quant = match &args.quant {
        None => None,
        Some(q) => {
            let (preset, _) = crate::quantize_cmd::parse_preset(q)?;
            let (mix, imatrix) = args.mix.options()?;
            Some(convert::pipeline::QuantSpec {
                preset,
                mix,
                imatrix,
            })
        }
    };
    let opts = ConvertOptions {
        outtype,
        outfile: args.outfile,
        pre_override: args.pre,
        model_name: args.model_name,
        repo_id,
        quant,
    };
    let plan = convert::plan(&model_dir, &opts).map_err(classify)?;
    // Shards are planned before any work, so the file names are known up front.
    let split = if rule.is_active() {
        let out =
            gguf::split::SplitOutput::create(&plan.outfile, &plan.metadata, &plan.descs(), &rule)
                .map_err(|e| {
                classify(match e {
                    // Like the unsplit output: a missing directory is an input error.
                    gguf::WriteError::Io { path, source } => ConvertError::io(&path, source),
                    e => ConvertError::write(&plan.outfile, e),
                })
            })?;
        if !out.is_split() {
            eprintln!("note: the model fits the split limits in one file; not splitting");
        }
        Some(out)
    } else {
        None
    };
    let shards = split.as_ref().map(|o| o.shards()).unwrap_or_default();
    let outputs: Vec<PathBuf> = match &split {
        Some(_) => shards.iter().map(|s| s.path.clone()).collect(),
        None => vec![plan.outfile.clone()],
    };
    for p in outputs.iter().filter(|p| p.exists()) {
        eprintln!("note: {} exists and will be replaced", p.display());
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
    let summary = match split {
        Some(out) => plan.write_to(out, &outputs[0], &|n| bar.inc(n)),
        None => plan.write(&|n| bar.inc(n)),
    }
    .map_err(classify);
    bar.finish_and_clear();
    let summary = summary?;
    if args.json {
        let mut doc = serde_json::to_value(&summary).map_err(|e| Failure::failed(e.to_string()))?;
        if let (Some(obj), true) = (doc.as_object_mut(), shards.len() > 1) {
            let list: Vec<serde_json::Value> = shards
                .iter()
                .map(|s| serde_json::json!({"path": s.path, "n_tensors": s.n_tensors, "bytes": s.file_len}))
                .collect();
            obj.insert("shards".into(), serde_json::Value::Array(list));
        }
        let text =
            serde_json::to_string_pretty(&doc).map_err(|e| Failure::failed(e.to_string()))?;
        crate::print_stdout(&format!("{text}\n"))?;
    } else if shards.len() > 1 {
        for s in &shards {
            eprintln!(
                "wrote {} ({} tensors, {} bytes)",
                s.path.display(),
                s.n_tensors,
                s.file_len
            );
        }
        eprintln!(
            "{} shards: {} tensors, {} parameters, {} bytes in all, {}",
            shards.len(),
            summary.n_tensors,
            summary.n_params,
            shards.iter().map(|s| s.file_len).sum::<u64>(),
            summary.file_type
        );
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
