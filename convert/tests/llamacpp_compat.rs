//! Every tiny fixture model converts to the same GGUF as llama.cpp's `convert_hf_to_gguf.py`:
//! same keys (value, type, order), same tensors (name, shape, type, bytes, order).
//!
//! The references under `fixtures/tiny/<family>/llamacpp/<outtype>.gguf` were written by
//! llama.cpp's converter (see `fixtures/tiny/gen.py`).

use std::path::{Path, PathBuf};

use convert::{ConvertOptions, OutType};
use gguf::diff::{diff, DiffOptions};
use gguf::GgufFile;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tiny")
}

/// (family dir, HF model dir, llama.cpp reference dir)
fn families() -> Vec<(String, PathBuf, PathBuf)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(fixtures()) else {
        return out;
    };
    for e in entries.flatten() {
        let fam = e.path();
        let refs = fam.join("llamacpp");
        if !refs.is_dir() {
            continue;
        }
        let model = std::fs::read_dir(&fam)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.join("config.json").is_file());
        if let Some(model) = model {
            out.push((e.file_name().to_string_lossy().into_owned(), model, refs));
        }
    }
    out.sort();
    out
}

fn convert_to(model: &Path, outtype: OutType, dir: &Path) -> PathBuf {
    let opts = ConvertOptions {
        outtype,
        outfile: Some(dir.to_path_buf()),
        ..ConvertOptions::default()
    };
    let plan = convert::plan(model, &opts).unwrap_or_else(|e| panic!("{}: {e}", model.display()));
    plan.write(&|_| {})
        .unwrap_or_else(|e| panic!("{}: {e}", model.display()))
        .output
}

#[test]
fn every_fixture_matches_llama_cpp_for_every_outtype() {
    let fams = families();
    assert!(
        fams.len() >= 8,
        "expected the 8 fixture families under {}, found {}",
        fixtures().display(),
        fams.len()
    );
    let tmp = std::env::temp_dir().join(format!("ggforge-compat-{}", std::process::id()));
    let mut failures = Vec::new();
    let mut compared = 0;
    for (fam, model, refs) in &fams {
        for (name, outtype) in [
            ("f32", OutType::F32),
            ("f16", OutType::F16),
            ("bf16", OutType::BF16),
            ("q8_0", OutType::Q8_0),
            ("auto", OutType::Auto),
        ] {
            let reference = refs.join(format!("{name}.gguf"));
            if !reference.is_file() {
                failures.push(format!(
                    "{fam}/{name}: reference {} missing",
                    reference.display()
                ));
                continue;
            }
            let dir = tmp.join(fam).join(name);
            std::fs::create_dir_all(&dir).unwrap();
            let ours = convert_to(model, outtype, &dir);
            let a = GgufFile::open(&ours).unwrap();
            let b = GgufFile::open(&reference).unwrap();
            let opts = DiffOptions {
                ignore_keys: vec![],
                key_order: true,
                tensor_order: true,
            };
            for d in diff(&a, &b, &opts) {
                failures.push(format!("{fam}/{name}: {d}"));
            }
            compared += 1;
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    assert!(
        failures.is_empty(),
        "{} of {compared} conversions differ from llama.cpp:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
