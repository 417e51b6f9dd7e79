//! Our tokenizer KVs must equal llama.cpp's, key for key (order, types, values), for
//! * every tiny fixture under `fixtures/tiny/<short>/` (an HF checkpoint directory plus the GGUFs
//!   llama.cpp's converter produced for it in `llamacpp/`),
//! * every tokenizer edge case under `convert/tests/vocab_cases/<case>/` (`model/` plus
//!   `llamacpp.gguf`, made by `vocab_cases/gen.py`),
//! * the rebuilt SmolLM2-135M-Instruct checkpoint, a real trained tokenizer, when
//!   `fixtures/large/smollm2` exists (it is not committed; `fixtures/smollm2/rebuild.py` makes it).

#[path = "vocab_common.rs"]
mod common;

use std::path::{Path, PathBuf};

use convert::vocab::VocabOptions;

/// `(checkpoint dir, llama.cpp GGUF)` for every fixture that has both.
fn fixture_pairs(root: &Path) -> Vec<(String, PathBuf, PathBuf)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(root) else {
        return out;
    };
    let mut shorts: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    shorts.sort();
    for short in shorts {
        let Ok(children) = std::fs::read_dir(&short) else {
            continue;
        };
        let mut model_dir = None;
        for c in children.filter_map(|c| c.ok().map(|c| c.path())) {
            if c.join("config.json").is_file() {
                model_dir = Some(c);
            }
        }
        let Some(model_dir) = model_dir else { continue };
        let mut ggufs: Vec<PathBuf> = std::fs::read_dir(short.join("llamacpp"))
            .map(|rd| {
                rd.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
                    .collect()
            })
            .unwrap_or_default();
        ggufs.sort();
        if let Some(g) = ggufs.into_iter().next() {
            let name = short
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            out.push((name, model_dir, g));
        }
    }
    out
}

#[test]
fn tiny_fixtures_match_llamacpp() {
    let root = common::workspace_root().join("fixtures/tiny");
    assert!(root.is_dir(), "{} is committed", root.display());
    let pairs = fixture_pairs(&root);
    assert!(
        !pairs.is_empty(),
        "no fixture with a checkpoint and a GGUF in {}",
        root.display()
    );
    let mut failures = Vec::new();
    for (name, dir, gguf) in &pairs {
        let diffs = common::compare_with_gguf(dir, gguf, &VocabOptions::default());
        if diffs.is_empty() {
            eprintln!("{name}: tokenizer KVs identical to {}", gguf.display());
        } else {
            failures.push(format!(
                "{name} ({}):\n  {}",
                gguf.display(),
                diffs.join("\n  ")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn tokenizer_edge_cases_match_llamacpp() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vocab_cases");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("convert/tests/vocab_cases exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("llamacpp.gguf").is_file())
        .collect();
    cases.sort();
    let names: Vec<String> = cases
        .iter()
        .filter_map(|c| c.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    for expected in [
        "codellama",
        "gemma1",
        "gpt2_roberta",
        "gpt2_tc_added",
        "granite_small",
        "llama_spm",
        "llama_spm_json",
        "mistral_llamahf",
        "mistral_spm",
        "phi3_gpt2tok",
        "qwen2_spm",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "case {expected} missing: {names:?}"
        );
    }
    let mut failures = Vec::new();
    for case in &cases {
        let diffs = common::compare_with_gguf(
            &case.join("model"),
            &case.join("llamacpp.gguf"),
            &VocabOptions::default(),
        );
        if !diffs.is_empty() {
            failures.push(format!("{}:\n  {}", case.display(), diffs.join("\n  ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
#[ignore = "needs the git-ignored fixtures/large/smollm2 (fixtures/smollm2/make_refs.sh)"]
fn smollm2_real_tokenizer_matches_llamacpp() {
    let root = common::workspace_root().join("fixtures/large/smollm2");
    let model = root.join("hf-f32/SmolLM2-135M-Instruct");
    let gguf = ["F32", "BF16", "F16"]
        .iter()
        .map(|t| root.join(format!("llamacpp/from-f32/SmolLM2-135M-Instruct-{t}.gguf")))
        .find(|p| p.is_file());
    let (true, Some(gguf)) = (model.join("tokenizer.json").is_file(), gguf) else {
        panic!(
            "{} not built: run fixtures/smollm2/make_refs.sh",
            root.display()
        );
    };
    let diffs = common::compare_with_gguf(&model, &gguf, &VocabOptions::default());
    assert!(
        diffs.is_empty(),
        "{}:\n  {}",
        gguf.display(),
        diffs.join("\n  ")
    );
}

/// Ad-hoc comparisons: `GGFORGE_VOCAB_CASES="model_dir=file.gguf;..."` (e.g. checkpoints made
/// outside the repository and converted with llama.cpp's `--vocab-only`).
#[test]
#[ignore = "ad hoc: set GGFORGE_VOCAB_CASES"]
fn adhoc_cases_match_llamacpp() {
    let Ok(spec) = std::env::var("GGFORGE_VOCAB_CASES") else {
        panic!("set GGFORGE_VOCAB_CASES=\"model_dir=file.gguf;...\"");
    };
    let mut failures = Vec::new();
    for case in spec.split(';').filter(|c| !c.is_empty()) {
        let Some((dir, gguf)) = case.split_once('=') else {
            panic!("bad case {case:?}");
        };
        let diffs =
            common::compare_with_gguf(Path::new(dir), Path::new(gguf), &VocabOptions::default());
        if diffs.is_empty() {
            eprintln!("OK   {dir}");
        } else {
            eprintln!("DIFF {dir}\n  {}", diffs.join("\n  "));
            failures.push(dir.to_owned());
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}
