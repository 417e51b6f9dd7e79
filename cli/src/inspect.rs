//! `ggforge inspect`: a GGUF file's header, metadata and tensor table.

use std::path::PathBuf;

use gguf::{Array, GgufFile, Value};
use serde_json::json;

use crate::Failure;

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF file.
    pub file: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<(), Failure> {
    let file = GgufFile::open(&args.file).map_err(|e| match e {
        gguf::ReadError::Parse { .. } => Failure::input(e.to_string()),
        gguf::ReadError::Io { .. } => Failure::input(e.to_string()),
    })?;
    let text = if args.json {
        to_json(&file)
    } else {
        to_table(&file)
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

pub fn to_json(file: &GgufFile) -> String {
    let h = &file.header;
    let metadata: Vec<_> = h
        .metadata
        .iter()
        .map(|(k, v)| json!({"key": k, "type": v.value_type().name(), "value": value_json(v)}))
        .collect();
    let tensors: Vec<_> = h
        .tensors
        .iter()
        .map(|t| {
            json!({"name": t.name, "type": t.ggml_type.name(), "dims": t.dims, "offset": t.offset, "bytes": t.n_bytes()})
        })
        .collect();
    let doc = json!({
        "version": h.version,
        "alignment": h.alignment,
        "data_offset": h.data_offset,
        "file_size": file.file_len(),
        "metadata": metadata,
        "tensors": tensors,
    });
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}

pub fn to_table(file: &GgufFile) -> String {
    use std::fmt::Write;
    let h = &file.header;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "GGUF v{}  {} metadata keys  {} tensors  alignment {}  data at {}  file {} bytes",
        h.version,
        h.metadata.len(),
        h.tensors.len(),
        h.alignment,
        h.data_offset,
        file.file_len()
    );
    let _ = writeln!(s, "\nmetadata:");
    let kw = h.metadata.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in h.metadata.iter() {
        let _ = writeln!(s, "  {k:<kw$}  {:<4} {v}", v.value_type().name());
    }
    let _ = writeln!(s, "\ntensors:");
    let nw = h.tensors.iter().map(|t| t.name.len()).max().unwrap_or(0);
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for (i, t) in h.tensors.iter().enumerate() {
        let dims = t
            .dims
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(" x ");
        let _ = writeln!(
            s,
            "  {i:>4}  {:<nw$}  {:<7}  {dims:<20}  offset {:<10}  {} bytes",
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
    let params: u64 = h.tensors.iter().map(|t| t.n_elements()).sum();
    let _ = writeln!(s, "\n{params} parameters; tensor types: {types}");
    s
}
