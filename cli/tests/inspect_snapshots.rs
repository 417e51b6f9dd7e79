//! Snapshots of `ggforge inspect` on llama.cpp-written fixture files: the metadata dump and
//! tensor table are part of the user interface, so changes to them must be deliberate.

use std::path::Path;
use std::process::Command;

fn inspect(rel: &str, json: bool) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ggforge"));
    cmd.current_dir(&dir).arg("inspect").arg(rel);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn inspect_llama3_f16_table() {
    insta::assert_snapshot!(inspect("fixtures/tiny/llama3/llamacpp/f16.gguf", false));
}

#[test]
fn inspect_gemma2_q8_0_table() {
    insta::assert_snapshot!(inspect("fixtures/tiny/gemma2/llamacpp/q8_0.gguf", false));
}

#[test]
fn inspect_qwen3_bf16_json() {
    insta::assert_snapshot!(inspect("fixtures/tiny/qwen3/llamacpp/bf16.gguf", true));
}

#[test]
fn inspect_rejects_a_non_gguf_file_with_exit_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_ggforge"))
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .args([
            "inspect",
            "fixtures/tiny/llama3/Tiny-Llama-3-Instruct/config.json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a GGUF file"), "{stderr}");
}
