//! `ggforge verify` from the command line: report on stdout, exit 0 pass / 1 fail / 2 could
//! not run, `--json` for CI.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ggforge")
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("run ggforge")
}

fn path(rel: &str) -> String {
    root().join(rel).to_string_lossy().into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn a_correct_file_passes_with_a_table() {
    let o = run(&[
        "verify",
        &path("fixtures/tiny/llama3/llamacpp/q8_0.gguf"),
        "--fixture",
        &path("fixtures/logits/tiny-llama3.safetensors"),
        "--tokenizer",
        &path("fixtures/tiny/llama3/Tiny-Llama-3-Instruct"),
    ]);
    let out = stdout(&o);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for part in [
        "STRUCTURE  ok",
        "TOKENIZER  ok",
        "NUMBERS    ok",
        "mean KLD",
        "p99.9 KLD",
        "top-1 agreement",
        "Q8_0: measured table",
        "verdict: PASS (exit 0)",
    ] {
        assert!(out.contains(part), "missing {part:?} in\n{out}");
    }
}

#[test]
fn json_output_and_exit_code_on_failure() {
    // Thresholds from the command line: an impossible KLD bound fails the file.
    let o = run(&[
        "verify",
        &path("fixtures/tiny/llama3/llamacpp/q8_0.gguf"),
        "--fixture",
        &path("fixtures/logits/tiny-llama3.safetensors"),
        "--max-mean-kld",
        "1e-12",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON on stdout");
    assert_eq!(v["verdict"], "fail");
    assert_eq!(v["exit_code"], 1);
    let numbers = &v["layers"][2];
    assert_eq!(numbers["name"], "numbers");
    assert_eq!(numbers["numbers"]["thresholds"]["max_mean_kld"], 1e-12);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("failed verification"), "{stderr}");
}

#[test]
fn could_not_run_is_exit_2() {
    // A missing file, and a fixture that does not exist.
    let o = run(&["verify", "/nonexistent/model.gguf"]);
    assert_eq!(o.status.code(), Some(2));
    let o = run(&[
        "verify",
        &path("fixtures/tiny/llama3/llamacpp/f32.gguf"),
        "--fixture",
        "/nonexistent/fixture.safetensors",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert!(stdout(&o).contains("INCONCLUSIVE"));
}

#[test]
fn bad_bounds_are_refused() {
    let o = run(&[
        "verify",
        &path("fixtures/tiny/llama3/llamacpp/f32.gguf"),
        "--min-top1",
        "1.5",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--min-top1"));
}

#[test]
fn without_references_only_structure_runs() {
    let o = run(&["verify", &path("fixtures/tiny/gpt2/llamacpp/f16.gguf")]);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    assert!(
        out.contains("TOKENIZER  skip") && out.contains("NUMBERS    skip"),
        "{out}"
    );
    assert!(out.contains("finite values"), "{out}");
}
