//! Replays the fuzzers' seed corpora and every saved crash input (fuzz/regressions/<target>/)
//! through the same checks the fuzz targets make, so a crash found once stays fixed without
//! needing cargo-fuzz. (The safetensors target's inputs are replayed in convert's source.rs.)

use std::path::{Path, PathBuf};

use gguf::{fuzz_checks, Header};

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut out = Vec::new();
    for dir in [
        fuzz.join("seeds").join(target),
        fuzz.join("regressions").join(target),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_file() && p.extension().is_none_or(|x| x != "md") {
                let bytes = std::fs::read(&p).unwrap();
                out.push((p, bytes));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn gguf_header_inputs_replay_cleanly() {
    let inputs = inputs("gguf_header");
    assert!(inputs.len() >= 40, "seed corpus missing");
    let mut accepted = 0;
    for (path, bytes) in &inputs {
        let r = std::panic::catch_unwind(|| fuzz_checks::gguf_header(bytes));
        assert!(r.is_ok(), "{} panics", path.display());
        accepted += Header::parse(bytes).is_ok() as usize;
    }
    // The valid seeds reach the re-encoding checks.
    assert!(accepted >= 3, "{accepted}");
}

#[test]
fn tokenizer_metadata_inputs_replay_cleanly() {
    let inputs = inputs("tokenizer_metadata");
    assert!(inputs.len() >= 10, "seed corpus missing");
    for (path, bytes) in &inputs {
        let r = std::panic::catch_unwind(|| fuzz_checks::tokenizer_metadata(bytes));
        assert!(r.is_ok(), "{} panics", path.display());
    }
}
