//! `ggforge inspect`: a GGUF model's header, metadata and tensor table.
//!
//! Given any shard of a split model, it shows the whole model: the first shard's metadata, every
//! shard's tensors (each with the shard it is in), and the shards themselves. A plain file is
//! shown exactly as before splits were read (the snapshot tests hold that).

use std::path::PathBuf;

use gguf::{Array, SplitModel, Value};
use serde_json::json;

use crate::Failure;

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF file, or any shard of a split model.
    pub file: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<(), Failure> {
    // Any file that cannot be opened as a model (unreadable, malformed, a missing or
    // inconsistent shard) is unusable input: exit 2.
    let model = SplitModel::open(&args.file).map_err(|e| Failure::input(e.to_string()))?;
    let text = if args.json {
        to_json(&model)
    } else {
        to_table(&model)
    };
    crate::print_stdout(&text)
}

/// Arrays longer than this are shown by their first elements only.
const ARRAY_HEAD: usize = 8;

fn array_head(a: &Array) -> serde_json::Value {
    fn take<T: Clone + serde::Serialize>(v: &[T]) -> serde_json::Value {
        json!(v.iter().take(ARRAY_HEAD).cloned().collect::<Vec<T>>())
    }
    match a {
        Array::U8(v) => take(v),
        Array::I8(v) => take(v),
        Array::U16(v) => take(v),
        Array::I16(v) => take(v),
        Array::U32(v) => take(v),
        Array::I32(v) => take(v),
        Array::F32(v) => take(v),
        Array::Bool(v) => take(v),
        Array::String(v) => take(v),
        Array::U64(v) => take(v),
        Array::I64(v) => take(v),
        Array::F64(v) => take(v),
    }
}

fn value_json(v: &Value) -> serde_json::Value {
    match v {
        Value::U8(x) => json!(x),
        Value::I8(x) => json!(x),
        Value::U16(x) => json!(x),
        Value::I16(x) => json!(x),
        Value::U32(x) => json!(x),
        Value::I32(x) => json!(x),
        Value::F32(x) => json!(x),
        Value::Bool(x) => json!(x),
        Value::String(x) => json!(x),
        Value::U64(x) => json!(x),
        Value::I64(x) => json!(x),
        Value::F64(x) => json!(x),
        Value::Array(a) => json!({
            "element_type": a.element_type().name(),
            "len": a.len(),
            "head": array_head(a),
        }),
    }
}

/// The 1-based shard number of tensor `i`, for split models only.
fn shard_of(model: &SplitModel, i: usize) -> Option<usize> {
    if model.is_split() {
        model.file_index(i).map(|f| f + 1)
    } else {
        None
    }
}

/// The JSON document. For a split model, `file_size` is the size of all shards together, the
/// header fields are the first shard's, every tensor has its `shard` (1-based, as in the file
/// names), and `split` lists the shards.
pub fn to_json(model: &SplitModel) -> String {
    let h = &model.first().header;
    let metadata: Vec<_> = h
        .metadata
        .iter()
        .map(|(k, v)| json!({"key": k, "type": v.value_type().name(), "value": value_json(v)}))
        .collect();
    let tensors: Vec<_> = model
        .tensors()
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut j = json!({"name": t.name, "type": t.ggml_type.name(), "dims": t.dims, "offset": t.offset, "bytes": t.n_bytes()});
            if let (Some(shard), Some(o)) = (shard_of(model, i), j.as_object_mut()) {
                o.insert("shard".into(), json!(shard));
            }
            j
        })
        .collect();
    let mut doc = json!({
        "version": h.version,
        "alignment": h.alignment,
        "data_offset": h.data_offset,
        "file_size": model.total_len(),
        "metadata": metadata,
        "tensors": tensors,
    });
    if model.is_split() {
        let files: Vec<_> = model
            .files()
            .iter()
            .map(|f| {
                json!({
                    "path": f.path().display().to_string(),
                    "version": f.header.version,
                    "alignment": f.header.alignment,
                    "data_offset": f.header.data_offset,
                    "file_size": f.file_len(),
                    "metadata_keys": f.metadata().len(),
                    "tensors": f.tensors().len(),
                })
            })
            .collect();
        if let Some(o) = doc.as_object_mut() {
            o.insert(
                "split".into(),
                json!({"count": model.files().len(), "files": files}),
            );
        }
    }
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}

/// The table. A split model gets a line saying so, a list of its shards, and a shard column.
pub fn to_table(model: &SplitModel) -> String {
    use std::fmt::Write;
    let h = &model.first().header;
    let tensors = model.tensors();
    let mut s = String::new();
    if model.is_split() {
        let _ = writeln!(
            s,
            "GGUF v{}  {} metadata keys  {} tensors  alignment {}  split model of {} files  {} bytes in all",
            h.version,
            h.metadata.len(),
            tensors.len(),
            h.alignment,
            model.files().len(),
            model.total_len()
        );
        let _ = writeln!(s, "\nshards (the metadata is the first one's):");
        for (i, f) in model.files().iter().enumerate() {
            let _ = writeln!(
                s,
                "  {:>4}  {}  {} metadata keys  {} tensors  data at {}  file {} bytes",
                i + 1,
                f.path().display(),
                f.metadata().len(),
                f.tensors().len(),
                f.header.data_offset,
                f.file_len()
            );
        }
    } else {
        let _ = writeln!(
            s,
            "GGUF v{}  {} metadata keys  {} tensors  alignment {}  data at {}  file {} bytes",
            h.version,
            h.metadata.len(),
            tensors.len(),
            h.alignment,
            h.data_offset,
            model.total_len()
        );
    }
    let _ = writeln!(s, "\nmetadata:");
    let kw = h.metadata.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in h.metadata.iter() {
        let _ = writeln!(s, "  {k:<kw$}  {:<4} {v}", v.value_type().name());
    }
    let _ = writeln!(s, "\ntensors:");
    let nw = tensors.iter().map(|t| t.name.len()).max().unwrap_or(0);
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for (i, t) in tensors.iter().enumerate() {
        let dims = t
            .dims
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(" x ");
        let shard = shard_of(model, i)
            .map(|n| format!("  shard {n}"))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "  {i:>4}  {:<nw$}  {:<7}  {dims:<20}  offset {:<10}  {} bytes{shard}",
            t.name,
            t.ggml_type.name(),
            t.offset,
            t.n_bytes()
        );
        *counts.entry(t.ggml_type.name()).or_default() += 1;
    }
    let types = counts
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ");
    let params: u64 = tensors.iter().map(|t| t.n_elements()).sum();
    let _ = writeln!(s, "\n{params} parameters; tensor types: {types}");
    s
}
