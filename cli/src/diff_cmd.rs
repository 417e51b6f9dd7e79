//! `ggforge diff A B`: compare two GGUF models key by key and tensor by tensor.
//!
//! Either side may be a shard of a split model: the whole model is compared (tensors are found
//! by name in whichever shard holds them). The split keys (`split.no`, `split.count`,
//! `split.tensors.count`) describe how the files are cut, not the model, so they are listed
//! apart and do not count as differences: a split conversion and the unsplit one of the same
//! model are reported identical, with a note on the layout.

use std::path::PathBuf;

use gguf::diff::{diff_models, DiffOptions};
use gguf::SplitModel;

use crate::Failure;

#[derive(clap::Args)]
pub struct Args {
    /// A GGUF file, or any shard of a split model.
    pub a: PathBuf,
    /// A GGUF file, or any shard of a split model.
    pub b: PathBuf,
    /// Keys to ignore (repeatable).
    #[arg(long = "ignore-key")]
    pub ignore_keys: Vec<String>,
    /// Also compare key and tensor order.
    #[arg(long)]
    pub order: bool,
}

/// "one file" or "a split model of N files".
fn layout(m: &SplitModel) -> String {
    if m.is_split() {
        format!("a split model of {} files", m.files().len())
    } else {
        "one file".to_string()
    }
}

pub fn run(args: Args) -> Result<(), Failure> {
    // Unreadable or inconsistent input (a missing shard included) is an input error: exit 2.
    let open = |p: &PathBuf| SplitModel::open(p).map_err(|e| Failure::input(e.to_string()));
    let (a, b) = (open(&args.a)?, open(&args.b)?);
    let opts = DiffOptions {
        ignore_keys: args.ignore_keys,
        key_order: args.order,
        tensor_order: args.order,
    };
    let d = diff_models(&a, &b, &opts);
    let mut text = String::new();
    if a.is_split() || b.is_split() || !d.layout.is_empty() {
        text.push_str(&format!(
            "note: A is {}, B is {}; the models are compared whole, and the split.* keys (how the files are cut) are listed apart, not counted as differences\n",
            layout(&a),
            layout(&b)
        ));
        for l in &d.layout {
            text.push_str(&format!("layout: {l}\n"));
        }
    }
    for m in &d.model {
        text.push_str(&format!("{m}\n"));
    }
    if d.model.is_empty() {
        let compared = |m: &SplitModel| {
            m.metadata()
                .iter()
                .filter(|(k, _)| !gguf::diff::SPLIT_KEYS.contains(k))
                .count()
        };
        text.push_str(&format!(
            "identical: {} keys, {} tensors\n",
            compared(&a),
            a.tensors().len()
        ));
    }
    crate::print_stdout(&text)?;
    if d.model.is_empty() {
        Ok(())
    } else {
        Err(Failure::failed(format!("{} differences", d.model.len())))
    }
}
