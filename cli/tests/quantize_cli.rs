//! `ggforge quantize` end to end: argument handling, refusals with exit 2 and no output file,
//! and the same bytes as the library (which tests against llama-quantize's outputs).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use gguf::{GgmlType, Metadata, TensorDesc};
use quantize::imatrix::Imatrix;
use quantize::mix::{FileTypePreset, TensorTypeOverride};
use quantize::model::{quantize_file, ImatrixInput, QuantizeOptions};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ggforge")
}

struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("ggforge-cli-q-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn files(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn run(args: &[&str]) -> Output {
    Command::new(bin())
        .arg("quantize")
        .args(args)
        .output()
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Deterministic pseudo-random f16 bytes (values in about ±0.1).
fn f16_data(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut out = Vec::with_capacity(n * 2);
    for _ in 0..n {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let v = ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2;
        out.extend_from_slice(&quantize::f32_to_f16_bits(v).to_le_bytes());
    }
    out
}

/// A small llama-style F16 model: hidden 256, 2 layers, GQA 2, FFN 512, untied output.
fn write_model(path: &Path, nan_in: Option<&str>) {
    let mut md = Metadata::new();
    md.set("general.architecture", "llama");
    md.set("general.name", "cli test");
    md.set("llama.block_count", 2u32);
    md.set("llama.embedding_length", 256u32);
    md.set("llama.attention.head_count", 4u32);
    md.set("llama.attention.head_count_kv", 2u32);
    md.set("general.file_type", 1u32);
    md.set("general.quantization_version", 2u32);
    let mut tensors: Vec<(TensorDesc, Vec<u8>)> = Vec::new();
    let mut add = |name: &str, dims: Vec<u64>, ty: GgmlType| {
        let n: u64 = dims.iter().product();
        let data = match ty {
            GgmlType::F32 => (0..n).flat_map(|_| 1.0f32.to_le_bytes()).collect(),
            _ => {
                let mut d = f16_data(tensors.len() as u64, n as usize);
                if nan_in == Some(name) {
                    d[10..12].copy_from_slice(&0x7e00u16.to_le_bytes());
                }
                d
            }
        };
        tensors.push((TensorDesc::new(name, dims, ty), data));
    };
    add("token_embd.weight", vec![256, 128], GgmlType::F16);
    add("output.weight", vec![256, 128], GgmlType::F16);
    add("output_norm.weight", vec![256], GgmlType::F32);
    for i in 0..2 {
        let b = format!("blk.{i}.");
        add(&(b.clone() + "attn_norm.weight"), vec![256], GgmlType::F32);
        add(
            &(b.clone() + "attn_q.weight"),
            vec![256, 256],
            GgmlType::F16,
        );
        add(
            &(b.clone() + "attn_k.weight"),
            vec![256, 128],
            GgmlType::F16,
        );
        add(
            &(b.clone() + "attn_v.weight"),
            vec![256, 128],
            GgmlType::F16,
        );
        add(
            &(b.clone() + "attn_output.weight"),
            vec![256, 256],
            GgmlType::F16,
        );
        add(
            &(b.clone() + "ffn_gate.weight"),
            vec![256, 512],
            GgmlType::F16,
        );
        add(
            &(b.clone() + "ffn_up.weight"),
            vec![256, 512],
            GgmlType::F16,
        );
        add(
            &(b.clone() + "ffn_down.weight"),
            vec![512, 256],
            GgmlType::F16,
        );
        add(&(b.clone() + "ffn_norm.weight"), vec![256], GgmlType::F32);
    }
    gguf::write_file(path, &md, &tensors).unwrap();
}

/// A legacy .dat imatrix with the given (name, columns) entries, all weights 1.
fn write_legacy_imatrix(path: &Path, entries: &[(&str, usize)]) {
    let mut b = Vec::new();
    b.extend_from_slice(&(entries.len() as i32).to_le_bytes());
    for (name, n) in entries {
        b.extend_from_slice(&(name.len() as i32).to_le_bytes());
        b.extend_from_slice(name.as_bytes());
        b.extend_from_slice(&1i32.to_le_bytes());
        b.extend_from_slice(&(*n as i32).to_le_bytes());
        for i in 0..*n {
            b.extend_from_slice(&(1.0f32 + (i % 7) as f32).to_le_bytes());
        }
    }
    fs::write(path, b).unwrap();
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn bad_type_lists_the_valid_ones() {
    let d = Scratch::new("badtype");
    let inp = d.path("in.gguf");
    write_model(&inp, None);
    for args in [
        vec![s(&inp), "Q9_K"],
        vec![s(&inp), s(&d.path("out.gguf")), "q4_k_x"],
    ] {
        let o = run(&args);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        let e = stderr(&o);
        assert!(e.contains("unknown quantization type"), "{e}");
        for name in ["Q4_K_M", "Q3_K_S", "IQ4_XS", "Q8_0", "BF16", "F32"] {
            assert!(e.contains(name), "{name} missing from: {e}");
        }
    }
    let o = run(&[s(&inp), "Q4_K_M", "--output-tensor-type", "q7_0"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("unknown ggml type 'q7_0'"),
        "{}",
        stderr(&o)
    );
    let o = run(&[s(&inp), "Q4_K_M", "--tensor-type", "attn_v"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("PATTERN=TYPE"), "{}", stderr(&o));
    assert_eq!(d.files(), vec!["in.gguf".to_string()]);
}

#[test]
fn default_output_name_and_same_bytes_as_the_library() {
    let d = Scratch::new("default");
    let inp = d.path("in.gguf");
    write_model(&inp, None);
    // `q4_k` resolves to the table name "Q4_K" (the Q4_K_M preset), like llama-quantize.
    let o = run(&["--threads", "2", s(&inp), "q4_k"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = d.path("ggml-model-Q4_K.gguf");
    let lib = d.path("lib.gguf");
    quantize_file(&inp, &lib, &QuantizeOptions::new(FileTypePreset::Q4_K_M)).unwrap();
    assert_eq!(fs::read(&out).unwrap(), fs::read(&lib).unwrap());
    // llama-quantize's trailing NTHREADS positional is accepted too.
    let o = run(&[s(&inp), "Q8_0", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(d.path("ggml-model-Q8_0.gguf").exists());
}

#[test]
fn options_reach_the_library() {
    let d = Scratch::new("options");
    let inp = d.path("in.gguf");
    write_model(&inp, None);
    let imat = d.path("imatrix.dat");
    write_legacy_imatrix(
        &imat,
        &[("blk.0.attn_q.weight", 256), ("blk.1.ffn_down.weight", 512)],
    );
    let out = d.path("cli.gguf");
    let o = run(&[
        "--pure",
        "--output-tensor-type",
        "Q8_0",
        "--token-embedding-type",
        "q5_1",
        "--tensor-type",
        r"blk\.1\.ffn=q4_0",
        "--tensor-type",
        "ATTN_V=iq4_nl",
        "--imatrix",
        s(&imat),
        "--json",
        s(&inp),
        s(&out),
        "Q5_K_S",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut opts = QuantizeOptions::new(FileTypePreset::Q5_K_S);
    opts.mix.pure = true;
    opts.mix.output_tensor_type = Some(GgmlType::Q8_0);
    opts.mix.token_embedding_type = Some(GgmlType::Q5_1);
    opts.mix.tensor_types = vec![
        TensorTypeOverride::parse(r"blk\.1\.ffn=q4_0").unwrap(),
        TensorTypeOverride::parse("ATTN_V=iq4_nl").unwrap(),
    ];
    opts.imatrix = Some(ImatrixInput {
        imatrix: Imatrix::load(&imat).unwrap(),
        label: s(&imat).to_string(),
    });
    let lib = d.path("lib.gguf");
    quantize_file(&inp, &lib, &opts).unwrap();
    assert_eq!(fs::read(&out).unwrap(), fs::read(&lib).unwrap());

    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON report");
    assert_eq!(report["type"], "Q5_K_S");
    assert_eq!(report["file_type"], 16);
    assert_eq!(report["imatrix"]["entries"], 2);
    let ty = |name: &str| {
        report["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("{name}"))["to"]
            .clone()
    };
    assert_eq!(ty("output.weight"), "q8_0");
    assert_eq!(ty("token_embd.weight"), "q5_1");
    assert_eq!(ty("blk.1.ffn_up.weight"), "q4_0");
    assert_eq!(ty("blk.0.attn_v.weight"), "iq4_nl");
    assert_eq!(ty("blk.0.attn_q.weight"), "q5_K");
    assert_eq!(ty("blk.0.attn_norm.weight"), "f32");
    let used: Vec<&str> = report["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["imatrix"] == true)
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(used, vec!["blk.0.attn_q.weight", "blk.1.ffn_down.weight"]);
}

#[test]
fn quantized_input_needs_allow_requantize() {
    let d = Scratch::new("requant");
    let inp = d.path("in.gguf");
    write_model(&inp, None);
    let q8 = d.path("q8.gguf");
    assert!(run(&[s(&inp), s(&q8), "Q8_0"]).status.success());
    let out = d.path("q4.gguf");
    let o = run(&[s(&q8), s(&out), "Q4_K_M"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("'output.weight'") && e.contains("q8_0"), "{e}");
    assert!(e.contains("--allow-requantize"), "{e}");
    assert!(!out.exists());
    assert_eq!(
        d.files(),
        vec!["in.gguf".to_string(), "q8.gguf".to_string()]
    );
    let o = run(&["--allow-requantize", s(&q8), s(&out), "Q4_K_M"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Requantizing to the same type is a copy and needs no permission (as in llama-quantize).
    let again = d.path("q8-again.gguf");
    let o = run(&[s(&q8), s(&again), "Q8_0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(fs::read(&again).unwrap(), fs::read(&q8).unwrap());
}

#[test]
fn mismatched_imatrix_is_a_clear_error() {
    let d = Scratch::new("imat");
    let inp = d.path("in.gguf");
    write_model(&inp, None);
    let imat = d.path("imatrix.dat");
    write_legacy_imatrix(&imat, &[("blk.1.attn_k.weight", 320)]);
    let out = d.path("out.gguf");
    let o = run(&["--imatrix", s(&imat), s(&inp), s(&out), "IQ4_NL"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o)
            .contains("imatrix entry 'blk.1.attn_k.weight' has 320 values, tensor has 256 columns"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());

    // A real llama-imatrix GGUF file of a 320-wide model (fixtures/quant-mix/odd).
    let odd = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/quant-mix/odd/imatrix.gguf");
    let o = run(&["--imatrix", s(&odd), s(&inp), s(&out), "Q4_K_M"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o)
            .contains("imatrix entry 'blk.0.attn_k.weight' has 320 values, tensor has 256 columns"),
        "{}",
        stderr(&o)
    );

    // Not an imatrix at all.
    fs::write(&imat, b"\x01\x00").unwrap();
    let o = run(&["--imatrix", s(&imat), s(&inp), s(&out), "Q4_K_M"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("imatrix.dat"), "{}", stderr(&o));
    assert!(!out.exists());
}

#[test]
fn nan_input_is_refused() {
    let d = Scratch::new("nan");
    let inp = d.path("in.gguf");
    write_model(&inp, Some("blk.1.attn_v.weight"));
    let out = d.path("out.gguf");
    let o = run(&[s(&inp), s(&out), "Q6_K"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("'blk.1.attn_v.weight'"),
        "{}",
        stderr(&o)
    );
    assert_eq!(d.files(), vec!["in.gguf".to_string()]);
}
