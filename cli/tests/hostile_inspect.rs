//! `ggforge inspect` on a hostile file prints the reader's typed error on one line and exits 2:
//! never a panic message or a backtrace, even with RUST_BACKTRACE set.

use std::path::{Path, PathBuf};
use std::process::Command;

fn hostile_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/hostile/gguf");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

#[test]
fn inspect_reports_hostile_files_with_exit_code_2() {
    let files = hostile_files();
    assert!(files.len() >= 40, "only {} hostile files", files.len());
    let mut failures = Vec::new();
    for (i, file) in files.iter().enumerate() {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ggforge"));
        cmd.arg("inspect").arg(file).env("RUST_BACKTRACE", "1");
        // Half the files through the JSON output path as well.
        if i % 2 == 1 {
            cmd.arg("--json");
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let name = file.file_name().unwrap().to_string_lossy();
        let lines: Vec<&str> = stderr.lines().collect();
        let ok = out.status.code() == Some(2)
            && out.stdout.is_empty()
            && lines.len() == 1
            && lines[0].starts_with("error: ")
            && lines[0].contains(name.as_ref())
            && !stderr.contains("panicked")
            && !stderr.contains("backtrace");
        if !ok {
            failures.push(format!(
                "{name}: exit {:?}, stderr {stderr:?}",
                out.status.code()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn inspect_names_the_problem() {
    // Spot checks that the one line says what is wrong, in the reader's words.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/hostile/gguf");
    for (file, needle) in [
        ("exabyte_tensor.gguf", "past the end of the file"),
        ("offset_overlapping.gguf", "overlaps the previous tensor"),
        (
            "vocab_special_id_out_of_range.gguf",
            "outside the vocabulary of 4 tokens",
        ),
        ("array_of_arrays.gguf", "array of arrays"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_ggforge"))
            .arg("inspect")
            .arg(dir.join(file))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file}");
        assert!(stderr.contains(needle), "{file}: {stderr}");
    }
}
