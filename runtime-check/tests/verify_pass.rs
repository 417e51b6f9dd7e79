//! Correct files pass: llama.cpp's own GGUFs of the tiny fixture models, in every type its
//! converter writes, against transformers' logits and the HF tokenizer.json — except where
//! llama.cpp's file really differs from the HF model, which verify must report.

use std::path::PathBuf;

use gguf::{Array, GgufFile, TensorDesc, Value};
use runtime_check::verify::{verify, Options, Status, VerifyReport};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

const MODELS: [(&str, &str); 8] = [
    ("llama3", "Tiny-Llama-3-Instruct"),
    ("mistral", "Tiny-Mistral-v0.3-Instruct"),
    ("qwen2", "Tiny-Qwen2.5-Instruct"),
    ("qwen3", "Tiny-Qwen3"),
    ("gemma2", "Tiny-Gemma-2-it"),
    ("gemma3", "Tiny-Gemma-3-it"),
    ("phi3", "Tiny-Phi-3.5-mini-instruct"),
    ("gpt2", "Tiny-GPT-2"),
];

fn opts(short: &str, dir: &str) -> Options {
    Options {
        fixture: Some(root().join(format!("fixtures/logits/tiny-{short}.safetensors"))),
        // gemma2 has no tokenizer.json (SentencePiece only).
        tokenizer: (short != "gemma2").then(|| root().join(format!("fixtures/tiny/{short}/{dir}"))),
        ..Default::default()
    }
}

fn failing(r: &VerifyReport) -> Vec<String> {
    r.layers
        .iter()
        .flat_map(|l| {
            l.checks
                .iter()
                .filter(|c| c.status >= Status::Error)
                .map(move |c| format!("{}/{}", l.name, c.name))
        })
        .collect()
}

#[test]
fn llama_cpp_files_pass_in_every_type() {
    for (short, dir) in MODELS {
        for outtype in ["f32", "f16", "bf16", "q8_0"] {
            let path = root().join(format!("fixtures/tiny/{short}/llamacpp/{outtype}.gguf"));
            let r = verify(&path, &opts(short, dir));
            let numbers = r.layers.iter().find(|l| l.name == "numbers").unwrap();
            match short {
                // llama.cpp writes Gemma-3 without its layer pattern and then assumes the default
                // one: its file is a different model from the HF checkpoint
                // (see gemma3_layer_pattern_is_what_differs below).
                "gemma3" => assert_eq!(numbers.status, Status::Fail, "{short} {outtype}"),
                _ => assert_eq!(
                    numbers.status,
                    Status::Pass,
                    "{short} {outtype}: {}",
                    r.render_text()
                ),
            }
            let fails = failing(&r);
            match short {
                // llama.cpp's converter types [INST] & co. as NORMAL (tests/verify_tokenizer.rs).
                "mistral" => assert_eq!(
                    fails,
                    ["tokenizer/special tokens", "tokenizer/special"],
                    "{outtype}"
                ),
                "gemma3" => assert!(
                    fails.contains(&"numbers/NMSE".to_string())
                        && fails.iter().all(|f| f.starts_with("numbers/")),
                    "{outtype}: {fails:?}"
                ),
                _ => assert!(fails.is_empty(), "{short} {outtype}:\n{}", r.render_text()),
            }
            let structure = &r.layers[0];
            assert_eq!(structure.status, Status::Pass, "{short} {outtype}");
        }
    }
}

#[test]
fn gemma3_layer_pattern_is_what_differs() {
    // With the pattern key llama.cpp reads (as a converter honouring `layer_types` would
    // write it), the same tensors match transformers.
    let src = root().join("fixtures/tiny/gemma3/llamacpp/f32.gguf");
    let f = GgufFile::open(&src).unwrap();
    let mut md = f.metadata().clone();
    md.set(
        "gemma3.attention.sliding_window_pattern",
        Value::Array(Array::Bool(vec![true, false])),
    );
    let tensors: Vec<(TensorDesc, Vec<u8>)> = f
        .tensors()
        .iter()
        .map(|t| {
            (
                TensorDesc::new(t.name.clone(), t.dims.clone(), t.ggml_type),
                f.tensor_data(t).to_vec(),
            )
        })
        .collect();
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("verify-gemma3-pattern-{}.gguf", std::process::id()));
    gguf::write_file(&out, &md, &tensors).unwrap();
    let r = verify(&out, &opts("gemma3", "Tiny-Gemma-3-it"));
    let _ = std::fs::remove_file(&out);
    assert!(failing(&r).is_empty(), "{}", r.render_text());
    let n = r.layers[2].numbers.as_ref().unwrap();
    assert!(n.nmse < 1e-10, "{}", n.nmse);
}

#[test]
fn known_llama_cpp_tokenizer_behaviours_are_findings() {
    // Qwen's NFC normalizer: a warning, not a failure; the verdict stays a pass (exit 0).
    let r = verify(
        &root().join("fixtures/tiny/qwen2/llamacpp/q8_0.gguf"),
        &opts("qwen2", "Tiny-Qwen2.5-Instruct"),
    );
    assert_eq!(r.verdict, Status::Warn);
    assert_eq!(r.exit_code, 0);
    let tok = &r.layers[1];
    let accents = tok.checks.iter().find(|c| c.name == "accents").unwrap();
    assert_eq!(accents.status, Status::Warn);
    assert!(accents.detail.contains("NFC"), "{}", accents.detail);
    assert!(r.render_text().contains("PASS with findings"));
}

#[test]
fn against_hf_weights_passes_and_cleans_up() {
    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("verify-against-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    for (short, dir, outtype) in [
        ("llama3", "Tiny-Llama-3-Instruct", "q8_0"),
        ("gemma2", "Tiny-Gemma-2-it", "f16"),
        ("gpt2", "Tiny-GPT-2", "f32"),
    ] {
        let r = verify(
            &root().join(format!("fixtures/tiny/{short}/llamacpp/{outtype}.gguf")),
            &Options {
                against: Some(root().join(format!("fixtures/tiny/{short}/{dir}"))),
                work_dir: Some(work.clone()),
                ..Default::default()
            },
        );
        assert_eq!(r.exit_code, 0, "{short}: {}", r.render_text());
        let n = r.layers[2].numbers.as_ref().unwrap();
        assert!(n.reference.contains("converted to F32 by ggforge"));
        assert!(n.n_positions > 50, "{}", n.n_positions);
        if outtype == "f32" {
            assert!(
                n.nmse < 1e-12,
                "{short}: the same converter output: {}",
                n.nmse
            );
        }
        // gemma2's folder has no tokenizer.json: the tokenizer part is skipped, not an error.
        if short == "gemma2" {
            let c = r.layers[1]
                .checks
                .iter()
                .find(|c| c.name == "tokenizer.json")
                .unwrap();
            assert_eq!(c.status, Status::Skip, "{}", r.render_text());
        }
    }
    assert_eq!(
        std::fs::read_dir(&work).unwrap().count(),
        0,
        "temporary conversion left behind"
    );
    std::fs::remove_dir(&work).unwrap();
}

#[test]
fn json_report_carries_every_layer_and_metric() {
    let r = verify(
        &root().join("fixtures/tiny/llama3/llamacpp/q8_0.gguf"),
        &opts("llama3", "Tiny-Llama-3-Instruct"),
    );
    let v: serde_json::Value = serde_json::from_str(&r.render_json()).unwrap();
    assert_eq!(v["verdict"], "pass");
    assert_eq!(v["exit_code"], 0);
    assert_eq!(v["file_type"], "Q8_0");
    let layers = v["layers"].as_array().unwrap();
    let names: Vec<&str> = layers.iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["structure", "tokenizer", "numbers"]);
    let n = &layers[2]["numbers"];
    for key in [
        "nmse",
        "max_abs_diff",
        "top1",
        "top1_tie_aware",
        "mean_kld",
        "p99_kld",
        "p999_kld",
    ] {
        assert!(n[key].is_number(), "{key}");
    }
    assert_eq!(n["thresholds"]["max_mean_kld"], 2.1e-2);
    let cases = layers[1]["tokenizer_cases"].as_array().unwrap();
    assert!(cases
        .iter()
        .any(|c| c["name"] == "cjk" && c["reference"] == "tokenizer.json"));
    assert!(cases.iter().any(|c| c["reference"] == "fixture"));
}

#[test]
fn threshold_overrides_change_the_verdict() {
    let path = root().join("fixtures/tiny/llama3/llamacpp/q8_0.gguf");
    let mut o = opts("llama3", "Tiny-Llama-3-Instruct");
    o.thresholds.max_mean_kld = Some(1e-9);
    let r = verify(&path, &o);
    assert_eq!(r.exit_code, 1, "{}", r.render_text());
    let c = r.layers[2]
        .checks
        .iter()
        .find(|c| c.name == "mean KLD")
        .unwrap();
    assert_eq!(c.status, Status::Fail);
    assert!(r.layers[2]
        .numbers
        .as_ref()
        .unwrap()
        .thresholds
        .source
        .contains("--max-mean-kld"));
}
