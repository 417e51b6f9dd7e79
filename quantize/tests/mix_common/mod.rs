//! Shared helpers for the llama-quantize comparison tests (fixtures/quant-mix/).
//!
//! Each fixture model is an F16 GGUF whose header (metadata + tensor infos) is committed and
//! whose tensor data is procedural; `input()` rebuilds the exact file llama-quantize was run on
//! (checked against its recorded sha256) and `runs()` returns llama-quantize's manifests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use gguf::{Array, GgmlType, Header, Metadata, Value};
use quantize::imatrix::Imatrix;
use quantize::mix::{FileTypePreset, TensorTypeOverride};
use quantize::model::{ImatrixInput, QuantizeOptions};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

pub fn fixture_dir(model: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/quant-mix")
        .join(model)
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn read_json(path: &Path) -> Json {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading fixture {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// A scratch directory removed when the test binary's last user drops it.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!(
            "ggforge-quant-mix-{tag}-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create scratch dir");
        Scratch(p)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// Procedural tensor data: the mirror of procedural_values() in fixtures/quant-mix/gen.py.
// ---------------------------------------------------------------------------------------------

fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xCBF29CE484222325;
    for &b in data {
        h = (h ^ u64::from(b)).wrapping_mul(0x100000001B3);
    }
    h
}

fn splitmix64(seed: u64, i: u64) -> u64 {
    let mut z = seed.wrapping_add((i + 1).wrapping_mul(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
    z ^ (z >> 31)
}

/// Element `i` of tensor `name` (rows of `ne0`), exactly as gen.py computes it.
pub fn procedural_value(name: &str, seed: u64, i: u64, ne0: u64) -> f64 {
    let r = splitmix64(seed, i);
    let s: i64 = (0..4)
        .map(|k| ((r >> (10 * k)) & 0x3FF) as i64)
        .sum::<i64>()
        - 2046;
    if name.ends_with("_norm.weight") {
        return 1.0 + s as f64 * 2f64.powi(-14);
    }
    let factor = if (r >> 40) & 0xFF == 0 { 16 } else { 1 };
    let row = i / ne0;
    (s * factor) as f64 * 2f64.powi(-(14 + (row % 3) as i32))
}

fn fill_tensor(name: &str, ty: GgmlType, ne0: u64, out: &mut [u8]) {
    let seed = fnv1a64(name.as_bytes());
    match ty {
        GgmlType::F16 => {
            for (i, o) in out.chunks_exact_mut(2).enumerate() {
                let v = procedural_value(name, seed, i as u64, ne0) as f32;
                o.copy_from_slice(&quantize::f32_to_f16_bits(v).to_le_bytes());
            }
        }
        GgmlType::F32 => {
            for (i, o) in out.chunks_exact_mut(4).enumerate() {
                let v = procedural_value(name, seed, i as u64, ne0) as f32;
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        other => panic!("fixture input tensor {name} has unexpected type {other}"),
    }
}

/// The input GGUF llama-quantize saw, as bytes (rebuilt and checked against its sha256).
pub fn build_input_bytes(model: &str) -> Vec<u8> {
    let dir = fixture_dir(model);
    let info = read_json(&dir.join("input.json"));
    let header = std::fs::read(dir.join("input.header")).expect("input.header");
    let data_size = info["data_size"].as_u64().expect("data_size") as usize;
    let mut bytes = header.clone();
    bytes.resize(header.len() + data_size, 0);
    let h = Header::parse(&bytes).expect("fixture header parses");
    assert_eq!(h.data_offset as usize, header.len());
    for t in &h.tensors {
        let start = (h.data_offset + t.offset) as usize;
        let end = start + t.n_bytes() as usize;
        fill_tensor(&t.name, t.ggml_type, t.row_len(), &mut bytes[start..end]);
    }
    assert_eq!(
        sha256_hex(&bytes),
        info["sha256"].as_str().expect("sha256"),
        "rebuilt {model} input differs from the file llama-quantize was run on"
    );
    bytes
}

/// Path of the rebuilt input of `model`, kept in Cargo's test scratch directory (target/tmp) and
/// shared by all tests: it is rebuilt only when missing.
pub fn input(model: &str) -> PathBuf {
    static CHECKED: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    let mut checked = CHECKED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let info = read_json(&fixture_dir(model).join("input.json"));
    let sha = info["sha256"].as_str().expect("sha256");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("quant-mix");
    let path = dir.join(format!("{model}-{}.gguf", &sha[..16]));
    if checked.iter().any(|m| m == model) {
        return path;
    }
    // Reuse a file left by an earlier run only if it is intact (checked once per process).
    let intact = std::fs::read(&path).is_ok_and(|b| sha256_hex(&b) == sha);
    if !intact {
        std::fs::create_dir_all(&dir).expect("create target/tmp/quant-mix");
        // Written under a unique name and renamed, so concurrent test binaries never see half a file.
        let tmp = dir.join(format!(".{model}.{}.tmp", std::process::id()));
        std::fs::write(&tmp, build_input_bytes(model)).expect("write rebuilt input");
        std::fs::rename(&tmp, &path).expect("rename rebuilt input");
    }
    checked.push(model.to_string());
    path
}

// ---------------------------------------------------------------------------------------------
// llama-quantize's runs
// ---------------------------------------------------------------------------------------------

/// One llama-quantize run from runs.json.
#[derive(Clone, Debug)]
pub struct Run {
    pub name: String,
    pub args: Vec<String>,
    pub exit_code: i64,
    pub errors: Vec<String>,
    pub source_run: Option<String>,
    pub size: u64,
    pub sha256: String,
    pub header_sha256: String,
    /// [key, type label, value]
    pub kvs: Vec<Json>,
    pub tensors: Vec<RefTensor>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RefTensor {
    pub name: String,
    pub type_id: u32,
    pub type_name: String,
    pub dims: Vec<u64>,
    pub sha256: String,
}

pub fn runs(model: &str) -> Vec<Run> {
    let j = read_json(&fixture_dir(model).join("runs.json"));
    let obj = j.as_object().expect("runs.json is an object");
    obj.iter()
        .map(|(name, r)| Run {
            name: name.clone(),
            args: r["args"]
                .as_array()
                .expect("args")
                .iter()
                .map(|a| a.as_str().expect("arg").to_string())
                .collect(),
            exit_code: r["exit_code"].as_i64().expect("exit_code"),
            errors: r["errors"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
            source_run: r["source_run"].as_str().map(String::from),
            size: r["size"].as_u64().unwrap_or(0),
            sha256: r["sha256"].as_str().unwrap_or("").to_string(),
            header_sha256: r["header_sha256"].as_str().unwrap_or("").to_string(),
            kvs: r["kvs"].as_array().cloned().unwrap_or_default(),
            tensors: r["tensors"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|t| RefTensor {
                            name: t[0].as_str().expect("name").to_string(),
                            type_id: t[1].as_u64().expect("type") as u32,
                            type_name: t[2].as_str().expect("type name").to_string(),
                            dims: t[3]
                                .as_array()
                                .expect("ne")
                                .iter()
                                .map(|d| d.as_u64().expect("dim"))
                                .collect(),
                            sha256: t[4].as_str().expect("sha").to_string(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect()
}

/// The options a run's llama-quantize arguments stand for. Relative imatrix paths are resolved
/// against the model's fixture directory and recorded under the name llama-quantize saw.
pub fn options_for(model: &str, run: &Run) -> QuantizeOptions {
    let (preset_arg, flags) = run.args.split_last().expect("args end with the preset");
    let (preset, _) = FileTypePreset::parse(preset_arg).expect("known preset");
    let mut o = QuantizeOptions::new(preset);
    let mut it = flags.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().expect("flag value").clone();
        match a.as_str() {
            "--pure" => o.mix.pure = true,
            "--leave-output-tensor" => o.mix.leave_output_tensor = true,
            "--allow-requantize" => o.allow_requantize = true,
            "--output-tensor-type" => {
                o.mix.output_tensor_type = Some(GgmlType::from_name(&val()).expect("type"))
            }
            "--token-embedding-type" => {
                o.mix.token_embedding_type = Some(GgmlType::from_name(&val()).expect("type"))
            }
            "--tensor-type" => o
                .mix
                .tensor_types
                .push(TensorTypeOverride::parse(&val()).expect("override")),
            "--imatrix" => {
                let label = val();
                let path = fixture_dir(model).join(&label);
                let imatrix = Imatrix::load(&path).expect("fixture imatrix loads");
                o.imatrix = Some(ImatrixInput { imatrix, label });
            }
            other => panic!("run {}: unknown flag {other}", run.name),
        }
    }
    o
}

// ---------------------------------------------------------------------------------------------
// Our output in the manifests' terms
// ---------------------------------------------------------------------------------------------

const LONG_ARRAY: usize = 16;
const LONG_STRING: usize = 256;

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as u64).to_le_bytes());
    b.extend_from_slice(s.as_bytes());
}

fn scalar_json(v: &Value) -> (String, Json) {
    match v {
        Value::U8(x) => ("u8".into(), (*x).into()),
        Value::I8(x) => ("i8".into(), (*x).into()),
        Value::U16(x) => ("u16".into(), (*x).into()),
        Value::I16(x) => ("i16".into(), (*x).into()),
        Value::U32(x) => ("u32".into(), (*x).into()),
        Value::I32(x) => ("i32".into(), (*x).into()),
        Value::U64(x) => ("u64".into(), (*x).into()),
        Value::I64(x) => ("i64".into(), (*x).into()),
        Value::F32(x) => ("f32".into(), f64::from(*x).into()),
        Value::F64(x) => ("f64".into(), (*x).into()),
        Value::Bool(x) => ("bool".into(), (*x).into()),
        Value::String(s) => {
            if s.len() > LONG_STRING {
                let mut m = serde_json::Map::new();
                m.insert("len".into(), s.len().into());
                m.insert("sha256".into(), sha256_hex(s.as_bytes()).into());
                ("str".into(), Json::Object(m))
            } else {
                ("str".into(), s.clone().into())
            }
        }
        Value::Array(a) => array_json(a),
    }
}

fn array_json(a: &Array) -> (String, Json) {
    let (label, items, raw): (&str, Vec<Json>, Vec<u8>) = match a {
        Array::String(v) => {
            let mut raw = Vec::new();
            v.iter().for_each(|s| put_str(&mut raw, s));
            (
                "str",
                v.iter().map(|s| Json::from(s.clone())).collect(),
                raw,
            )
        }
        Array::U8(v) => ("u8", v.iter().map(|&x| x.into()).collect(), v.clone()),
        Array::I8(v) => (
            "i8",
            v.iter().map(|&x| x.into()).collect(),
            v.iter().map(|&x| x as u8).collect(),
        ),
        Array::Bool(v) => (
            "bool",
            v.iter().map(|&x| x.into()).collect(),
            v.iter().map(|&x| x as u8).collect(),
        ),
        Array::U16(v) => (
            "u16",
            v.iter().map(|&x| x.into()).collect(),
            le(v, |x| x.to_le_bytes()),
        ),
        Array::I16(v) => (
            "i16",
            v.iter().map(|&x| x.into()).collect(),
            le(v, |x| x.to_le_bytes()),
        ),
        Array::U32(v) => (
            "u32",
            v.iter().map(|&x| x.into()).collect(),
            le(v, |x| x.to_le_bytes()),
        ),
        Array::I32(v) => (
            "i32",
            v.iter().map(|&x| x.into()).collect(),
            le(v, |x| x.to_le_bytes()),
        ),
        Array::U64(v) => (
            "u64",
            v.iter().map(|&x| x.into()).collect(),
            le(v, |x| x.to_le_bytes()),
        ),
        Array::I64(v) => (
            "i64",
            v.iter().map(|&x| x.into()).collect(),
            le(v, |x| x.to_le_bytes()),
        ),
        Array::F32(v) => (
            "f32",
            v.iter().map(|&x| f64::from(x).into()).collect(),
            le(v, |x| x.to_le_bytes()),
        ),
        Array::F64(v) => (
            "f64",
            v.iter().map(|&x| x.into()).collect(),
            le(v, |x| x.to_le_bytes()),
        ),
    };
    let label = format!("arr[{label}]");
    if items.len() > LONG_ARRAY {
        let mut m = serde_json::Map::new();
        m.insert("len".into(), items.len().into());
        m.insert("sha256".into(), sha256_hex(&raw).into());
        (label, Json::Object(m))
    } else {
        (label, Json::Array(items))
    }
}

fn le<T: Copy, const N: usize>(v: &[T], f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
    v.iter().flat_map(|&x| f(x)).collect()
}

/// Metadata as the manifests list it: [key, type label, value].
pub fn kv_json(md: &Metadata) -> Vec<Json> {
    md.iter()
        .map(|(k, v)| {
            let (label, value) = scalar_json(v);
            Json::Array(vec![k.into(), label.into(), value])
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Running ggforge on a run and comparing with llama-quantize
// ---------------------------------------------------------------------------------------------

/// Differences between our output file and llama-quantize's manifest (empty when identical).
pub fn compare_output(run: &Run, out: &Path) -> Vec<String> {
    let bytes = std::fs::read(out).expect("read our output");
    let mut problems = Vec::new();
    let h = match Header::parse(&bytes) {
        Ok(h) => h,
        Err(e) => return vec![format!("{}: our output does not parse: {e}", run.name)],
    };
    let ours_kv = kv_json(&h.metadata);
    if ours_kv != run.kvs {
        problems.push(format!("{}: metadata differs", run.name));
    }
    if h.tensors.len() != run.tensors.len() {
        problems.push(format!(
            "{}: {} tensors, llama-quantize wrote {}",
            run.name,
            h.tensors.len(),
            run.tensors.len()
        ));
    }
    for (t, r) in h.tensors.iter().zip(&run.tensors) {
        let start = (h.data_offset + t.offset) as usize;
        let data = &bytes[start..start + t.n_bytes() as usize];
        if t.name != r.name || t.ggml_type.id() != r.type_id || t.dims != r.dims {
            problems.push(format!(
                "{}: tensor {} {} {:?} vs llama-quantize {} {} {:?}",
                run.name, t.name, t.ggml_type, t.dims, r.name, r.type_name, r.dims
            ));
        } else if sha256_hex(data) != r.sha256 {
            problems.push(format!(
                "{}: bytes of {} ({}) differ",
                run.name, t.name, r.type_name
            ));
        }
    }
    let header_bytes = &bytes[..h.data_offset as usize];
    if sha256_hex(header_bytes) != run.header_sha256 {
        problems.push(format!("{}: header bytes differ", run.name));
    }
    if bytes.len() as u64 != run.size {
        problems.push(format!(
            "{}: {} bytes, llama-quantize wrote {}",
            run.name,
            bytes.len(),
            run.size
        ));
    } else if problems.is_empty() && sha256_hex(&bytes) != run.sha256 {
        problems.push(format!("{}: file bytes differ", run.name));
    }
    problems
}

/// Quantizes `model`'s input (or, for requantize runs, our output of the source run) with the
/// run's options into `scratch`, and returns the output path or the error.
pub fn run_ours(
    model: &str,
    run: &Run,
    all: &[Run],
    scratch: &Scratch,
    threads: Option<usize>,
) -> Result<PathBuf, quantize::model::QuantizeFileError> {
    run_ours_with(model, run, all, scratch, threads, None)
}

/// [`run_ours`] with a slab size (values expanded at a time) other than the default.
pub fn run_ours_with(
    model: &str,
    run: &Run,
    all: &[Run],
    scratch: &Scratch,
    threads: Option<usize>,
    slab_values: Option<u64>,
) -> Result<PathBuf, quantize::model::QuantizeFileError> {
    let input = match &run.source_run {
        None => input(model),
        Some(src) => {
            let src_run = all.iter().find(|r| &r.name == src).expect("source run");
            let p = scratch.path(&format!("src-{src}.gguf"));
            if !p.exists() {
                run_ours(model, src_run, all, scratch, threads)
                    .and_then(|out| std::fs::rename(&out, &p).map_err(|e| panic!("{e}")))?;
            }
            p
        }
    };
    let mut opts = options_for(model, run);
    opts.threads = threads;
    if let Some(v) = slab_values {
        opts.slab_values = v;
    }
    let out = scratch.path(&format!("{}.gguf", run.name));
    quantize::model::quantize_file(&input, &out, &opts).map(|_| out)
}

/// Runs every selected run of `model` and returns the differences.
pub fn check_runs(model: &str, select: impl Fn(&Run) -> bool) -> (usize, Vec<String>) {
    let all = runs(model);
    let scratch = Scratch::new(model);
    let mut problems = Vec::new();
    let mut n = 0;
    for run in all.iter().filter(|r| select(r)) {
        n += 1;
        match (run_ours(model, run, &all, &scratch, None), run.exit_code) {
            (Ok(out), 0) => {
                problems.extend(compare_output(run, &out));
                let _ = std::fs::remove_file(out);
            }
            (Ok(_), code) => problems.push(format!(
                "{}: we succeeded, llama-quantize failed ({code}): {:?}",
                run.name, run.errors
            )),
            (Err(e), 0) => problems.push(format!("{}: we failed: {e}", run.name)),
            (Err(_), _) => {} // both refused; the error tests check the messages
        }
    }
    (n, problems)
}

/// Panics with a per-run summary when anything differs.
pub fn assert_identical(model: &str, what: &str, n: usize, problems: &[String]) {
    assert!(n > 0, "{model} {what}: no runs selected");
    assert!(
        problems.is_empty(),
        "{model} {what}: {} differences from llama-quantize over {n} runs:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
