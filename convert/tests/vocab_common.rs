//! Shared helpers for the `vocab_*` end-to-end tests (included with `#[path]`; as a test crate of
//! its own it contains no tests).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use convert::vocab::{vocab_metadata, VocabOptions};
use gguf::{Array, Value};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `architectures[0]` of a checkpoint's config.json, and the parsed config.
pub fn read_config(model_dir: &Path) -> (String, serde_json::Value) {
    let text = std::fs::read_to_string(model_dir.join("config.json"))
        .unwrap_or_else(|e| panic!("{}: {e}", model_dir.display()));
    let config: serde_json::Value = serde_json::from_str(&text).expect("config.json parses");
    let arch = config["architectures"][0]
        .as_str()
        .expect("architectures[0]")
        .to_owned();
    (arch, config)
}

/// The `tokenizer.*` KVs of a GGUF file, in file order.
pub fn tokenizer_kvs(gguf_path: &Path) -> Vec<(String, Value)> {
    let f =
        gguf::GgufFile::open(gguf_path).unwrap_or_else(|e| panic!("{}: {e}", gguf_path.display()));
    f.metadata()
        .iter()
        .filter(|(k, _)| k.starts_with("tokenizer."))
        .map(|(k, v)| (k.to_owned(), v.clone()))
        .collect()
}

fn first_array_diff(a: &Array, b: &Array) -> Option<String> {
    macro_rules! cmp {
        ($x:expr, $y:expr) => {{
            if $x.len() != $y.len() {
                return Some(format!("length {} vs {}", $x.len(), $y.len()));
            }
            for (i, (p, q)) in $x.iter().zip($y.iter()).enumerate() {
                if p != q {
                    return Some(format!("element {i}: {p:?} vs {q:?}"));
                }
            }
            None
        }};
    }
    match (a, b) {
        (Array::String(x), Array::String(y)) => cmp!(x, y),
        (Array::I32(x), Array::I32(y)) => cmp!(x, y),
        (Array::F32(x), Array::F32(y)) => {
            if x.len() != y.len() {
                return Some(format!("length {} vs {}", x.len(), y.len()));
            }
            x.iter()
                .zip(y)
                .position(|(p, q)| p.to_bits() != q.to_bits())
                .map(|i| format!("element {i}: {:?} vs {:?}", x[i], y[i]))
        }
        (Array::U32(x), Array::U32(y)) => cmp!(x, y),
        (Array::U8(x), Array::U8(y)) => cmp!(x, y),
        _ => Some(format!(
            "element types {:?} vs {:?}",
            a.element_type(),
            b.element_type()
        )),
    }
}

/// Compares our KVs with llama.cpp's: same keys in the same order, same types, same values
/// (floats bit for bit). Returns a description of every difference.
pub fn diff_kvs(ours: &[(String, Value)], theirs: &[(String, Value)]) -> Vec<String> {
    let mut out = Vec::new();
    let ok: Vec<&str> = ours.iter().map(|(k, _)| k.as_str()).collect();
    let tk: Vec<&str> = theirs.iter().map(|(k, _)| k.as_str()).collect();
    if ok != tk {
        out.push(format!(
            "key order differs:\n  ours:  {ok:?}\n  llama: {tk:?}"
        ));
    }
    for (k, tv) in theirs {
        let Some((_, ov)) = ours.iter().find(|(ok, _)| ok == k) else {
            continue;
        };
        if ov.value_type() != tv.value_type() {
            out.push(format!(
                "{k}: type {:?} vs {:?}",
                ov.value_type(),
                tv.value_type()
            ));
            continue;
        }
        match (ov, tv) {
            (Value::Array(a), Value::Array(b)) => {
                if let Some(d) = first_array_diff(a, b) {
                    out.push(format!("{k}: {d}"));
                }
            }
            (Value::F32(a), Value::F32(b)) if a.to_bits() != b.to_bits() => {
                out.push(format!("{k}: {a:?} vs {b:?}"))
            }
            (a, b) if a != b => out.push(format!("{k}: {a} vs {b}")),
            _ => {}
        }
    }
    out
}

/// Converts `model_dir`'s tokenizer and compares it with the `tokenizer.*` KVs of `gguf_path`.
pub fn compare_with_gguf(model_dir: &Path, gguf_path: &Path, opts: &VocabOptions) -> Vec<String> {
    let (arch, config) = read_config(model_dir);
    let ours = match vocab_metadata(model_dir, &arch, &config, opts) {
        Ok(v) => v,
        Err(e) => return vec![format!("conversion failed: {e}")],
    };
    diff_kvs(&ours, &tokenizer_kvs(gguf_path))
}

/// A scratch directory removed on drop (no tempfile crate in the workspace).
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    pub fn new(tag: &str) -> ScratchDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "ggforge-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create scratch dir");
        ScratchDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The value of one KV.
pub fn kv<'a>(kvs: &'a [(String, Value)], key: &str) -> Option<&'a Value> {
    kvs.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}
