//! `ggforge verify`: the layered verifier (structure, tokenizer, numbers) of `runtime-check`.
//!
//! Exit codes: 0 pass (findings allowed), 1 a check failed, 2 a requested layer could not run
//! (unsupported architecture, unreadable fixture or reference, bad arguments).

use std::path::PathBuf;

use runtime_check::verify::{self, Options, ThresholdOverrides};

use crate::Failure;

#[derive(clap::Args)]
#[command(
    after_help = "Layers: structure (always), tokenizer (with --against, --tokenizer or \
--fixture), numbers (with --fixture or --against).\n\
Default bounds: F32/F16/BF16 NMSE <= 1e-5 and 100% top-1; quantized types from the measured \
table in docs/verify.md.\n\
Exit codes: 0 pass, 1 fail, 2 could not run."
)]
pub struct Args {
    /// The GGUF file to verify, or any shard of a split model (the whole model is verified).
    pub file: PathBuf,
    /// Reference logits written by fixtures/make_fixture.py (transformers, float32).
    #[arg(long, value_name = "FILE")]
    pub fixture: Option<PathBuf>,
    /// An HF model folder: reference tokenizer (tokenizer.json) and reference weights (converted
    /// to a temporary F32 GGUF by ggforge; tensor-layout bugs of the converter cancel out, so
    /// prefer --fixture when checking a converter).
    #[arg(long, value_name = "HF_DIR")]
    pub against: Option<PathBuf>,
    /// Reference tokenizer only: an HF folder or a tokenizer.json (default: the --against folder).
    #[arg(long, value_name = "PATH")]
    pub tokenizer: Option<PathBuf>,
    /// Print the report as JSON (for CI).
    #[arg(long)]
    pub json: bool,
    /// Bound on the NMSE of the logits.
    #[arg(long, value_name = "X")]
    pub max_nmse: Option<f64>,
    /// Minimum fraction of positions whose argmax agrees (0..1).
    #[arg(long, value_name = "X")]
    pub min_top1: Option<f64>,
    /// Bound on the mean KL divergence (nats).
    #[arg(long, value_name = "X")]
    pub max_mean_kld: Option<f64>,
    /// Bound on the 99th percentile of the KL divergence.
    #[arg(long, value_name = "X")]
    pub max_p99_kld: Option<f64>,
    /// Bound on the 99.9th percentile of the KL divergence.
    #[arg(long, value_name = "X")]
    pub max_p999_kld: Option<f64>,
    /// Bound on the largest absolute logit difference (not checked by default).
    #[arg(long, value_name = "X")]
    pub max_abs_diff: Option<f64>,
    /// Skip the NaN/Inf scan of every tensor (it reads the whole file).
    #[arg(long)]
    pub no_scan: bool,
    /// Directory for the temporary F32 conversion of --against (default: the system temp dir).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

fn check_bound(name: &str, v: Option<f64>, unit: bool) -> Result<(), Failure> {
    if let Some(x) = v {
        if !x.is_finite() || x < 0.0 || (unit && x > 1.0) {
            let range = if unit {
                "between 0 and 1"
            } else {
                "a finite number ≥ 0"
            };
            return Err(Failure::input(format!("--{name} {x}: expected {range}")));
        }
    }
    Ok(())
}

pub fn run(args: Args) -> Result<(), Failure> {
    check_bound("max-nmse", args.max_nmse, false)?;
    check_bound("min-top1", args.min_top1, true)?;
    check_bound("max-mean-kld", args.max_mean_kld, false)?;
    check_bound("max-p99-kld", args.max_p99_kld, false)?;
    check_bound("max-p999-kld", args.max_p999_kld, false)?;
    check_bound("max-abs-diff", args.max_abs_diff, false)?;
    if let Some(n) = args.threads {
        if n == 0 {
            return Err(Failure::input("--threads must be at least 1"));
        }
        // Fails only if a pool exists already, which is harmless.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global();
    }
    let opts = Options {
        fixture: args.fixture,
        against: args.against,
        tokenizer: args.tokenizer,
        thresholds: ThresholdOverrides {
            max_nmse: args.max_nmse,
            min_top1: args.min_top1,
            max_mean_kld: args.max_mean_kld,
            max_p99_kld: args.max_p99_kld,
            max_p999_kld: args.max_p999_kld,
            max_abs_diff: args.max_abs_diff,
        },
        no_scan: args.no_scan,
        work_dir: args.work_dir,
    };
    let report = verify::verify(&args.file, &opts);
    let text = if args.json {
        format!("{}\n", report.render_json())
    } else {
        report.render_text()
    };
    crate::print_stdout(&text)?;
    match report.exit_code {
        0 => Ok(()),
        1 => Err(Failure::failed(format!(
            "{} failed verification",
            args.file.display()
        ))),
        code => Err(Failure {
            code,
            message: format!(
                "verification of {} is inconclusive: a layer could not run",
                args.file.display()
            ),
        }),
    }
}
