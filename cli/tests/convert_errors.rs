//! Bad input gets one clear error, a non-zero exit, and no file at the output path.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ggforge")
}

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/tiny")
        .join(rel)
}

struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("ggforge-cli-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }

    /// Copies a fixture model folder into the scratch directory.
    fn copy_model(&self, rel: &str) -> PathBuf {
        let src = fixture(rel);
        let dst = self.0.join(src.file_name().unwrap());
        fs::create_dir_all(&dst).unwrap();
        for e in fs::read_dir(&src).unwrap() {
            let e = e.unwrap();
            fs::copy(e.path(), dst.join(e.file_name())).unwrap();
        }
        dst
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn convert(model: &Path, out: &Path) -> Output {
    Command::new(bin())
        .args([
            "convert",
            model.to_str().unwrap(),
            "--outtype",
            "f16",
            "--outfile",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap()
}

/// Exit code, exactly one `error:` line that mentions `needle`, and nothing left in `out_dir`.
fn assert_clean_failure(out: &Output, code: i32, needle: &str, out_dir: &Path) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "expected one error line, got: {stderr}");
    assert!(
        errors[0].contains(needle),
        "error should mention {needle:?}: {}",
        errors[0]
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    if out_dir.is_dir() {
        let left: Vec<_> = fs::read_dir(out_dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "files left behind: {left:?}");
    }
}

#[test]
fn truncated_safetensors() {
    let s = Scratch::new("trunc");
    let model = s.copy_model("llama3/Tiny-Llama-3-Instruct");
    let st = model.join("model.safetensors");
    let len = fs::metadata(&st).unwrap().len();
    let f = fs::OpenOptions::new().write(true).open(&st).unwrap();
    f.set_len(len / 2).unwrap();
    let out_dir = s.0.join("out");
    fs::create_dir_all(&out_dir).unwrap();
    let out = convert(&model, &out_dir.join("x.gguf"));
    assert_clean_failure(&out, 2, "model.safetensors", &out_dir);
}

#[test]
fn missing_shard() {
    let s = Scratch::new("shard");
    let model = s.copy_model("mistral/Tiny-Mistral-v0.3-Instruct");
    let shard = fs::read_dir(&model)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("model-00002")
        })
        .expect("the mistral fixture is sharded");
    fs::remove_file(&shard).unwrap();
    let out_dir = s.0.join("out");
    fs::create_dir_all(&out_dir).unwrap();
    let out = convert(&model, &out_dir.join("x.gguf"));
    assert_clean_failure(
        &out,
        2,
        &shard.file_name().unwrap().to_string_lossy(),
        &out_dir,
    );
}

#[test]
fn config_without_architectures() {
    let s = Scratch::new("noarch");
    let model = s.copy_model("qwen2/Tiny-Qwen2.5-Instruct");
    let cfg_path = model.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg.as_object_mut().unwrap().remove("architectures");
    fs::write(&cfg_path, cfg.to_string()).unwrap();
    let out_dir = s.0.join("out");
    fs::create_dir_all(&out_dir).unwrap();
    let out = convert(&model, &out_dir.join("x.gguf"));
    assert_clean_failure(&out, 2, "architectures", &out_dir);
}

#[test]
fn unknown_architecture_lists_supported() {
    let s = Scratch::new("unkarch");
    let model = s.copy_model("qwen2/Tiny-Qwen2.5-Instruct");
    let cfg_path = model.join("config.json");
    let text = fs::read_to_string(&cfg_path)
        .unwrap()
        .replace("Qwen2ForCausalLM", "FalconForCausalLM");
    fs::write(&cfg_path, text).unwrap();
    let out_dir = s.0.join("out");
    fs::create_dir_all(&out_dir).unwrap();
    let out = convert(&model, &out_dir.join("x.gguf"));
    assert_clean_failure(&out, 2, "FalconForCausalLM", &out_dir);
    assert!(String::from_utf8_lossy(&out.stderr).contains("Qwen3ForCausalLM"));
}

/// Writes a one-tensor safetensors file whose tensor has the given dtype.
fn safetensors_with_dtype(path: &Path, name: &str, dtype: &str, shape: &[usize], elem: usize) {
    let n: usize = shape.iter().product::<usize>() * elem;
    let header =
        serde_json::json!({ name: {"dtype": dtype, "shape": shape, "data_offsets": [0, n]} })
            .to_string();
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend(std::iter::repeat_n(0u8, n));
    fs::write(path, bytes).unwrap();
}

#[test]
fn unsupported_dtype_names_the_tensor() {
    let s = Scratch::new("dtype");
    let model = s.copy_model("llama3/Tiny-Llama-3-Instruct");
    safetensors_with_dtype(
        &model.join("model.safetensors"),
        "model.embed_tokens.weight",
        "F8_E4M3",
        &[4, 4],
        1,
    );
    let out_dir = s.0.join("out");
    fs::create_dir_all(&out_dir).unwrap();
    let out = convert(&model, &out_dir.join("x.gguf"));
    assert_clean_failure(&out, 2, "model.embed_tokens.weight", &out_dir);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not supported yet"));
}

#[test]
fn unwritable_output_directory() {
    let s = Scratch::new("unwritable");
    // A regular file where a directory is expected: not writable even for root.
    let blocker = s.0.join("not-a-dir");
    fs::write(&blocker, b"x").unwrap();
    let out = convert(
        &fixture("llama3/Tiny-Llama-3-Instruct"),
        &blocker.join("x.gguf"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not-a-dir"), "{stderr}");
    assert_eq!(fs::read(&blocker).unwrap(), b"x");
}

#[test]
fn bad_outtype_lists_valid_ones() {
    let out = Command::new(bin())
        .args([
            "convert",
            fixture("llama3/Tiny-Llama-3-Instruct").to_str().unwrap(),
            "--outtype",
            "q4_k",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("f32, f16, bf16, q8_0, auto"), "{stderr}");
}
