//! `ggforge diff A B`: compare two GGUF files key by key and tensor by tensor.

use std::path::PathBuf;

use gguf::diff::{diff, DiffOptions};
use gguf::GgufFile;

use crate::Failure;

#[derive(clap::Args)]
pub struct Args {
    pub a: PathBuf,
    pub b: PathBuf,
    /// Keys to ignore (repeatable).
    #[arg(long = "ignore-key")]
    pub ignore_keys: Vec<String>,
    /// Also compare key and tensor order.
    #[arg(long)]
    pub order: bool,
}

pub fn run(args: Args) -> Result<(), Failure> {
    let open = |p: &PathBuf| GgufFile::open(p).map_err(|e| Failure::input(e.to_string()));
    let (a, b) = (open(&args.a)?, open(&args.b)?);
    let opts = DiffOptions {
        ignore_keys: args.ignore_keys,
        key_order: args.order,
        tensor_order: args.order,
    };
    let diffs = diff(&a, &b, &opts);
    let mut text: String = diffs.iter().map(|d| format!("{d}\n")).collect();
    if diffs.is_empty() {
        text = format!(
            "identical: {} keys, {} tensors\n",
            a.metadata().len(),
            a.tensors().len()
        );
    }
    crate::print_stdout(&text)?;
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(Failure::failed(format!("{} differences", diffs.len())))
    }
}
