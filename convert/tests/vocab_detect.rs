//! Pre-tokenizer detection end to end: retrained tokenizers (whose hashes llama.cpp cannot know)
//! get llama.cpp's `tokenizer.ggml.pre` from their definition alone, our chkhsh equals the one
//! llama.cpp's converter computed, and an unknown definition fails with the closest names and a
//! `--pre` hint (which then works).

#[path = "vocab_common.rs"]
mod common;

use std::path::{Path, PathBuf};

use convert::vocab::pre::{name_for_hash, PreSource};
use convert::vocab::{detect_pre, vocab_metadata, VocabError, VocabOptions};
use gguf::Value;

/// Byte-level BPE checkpoints with llama.cpp's GGUF and the chkhsh its converter computed.
fn bpe_checkpoints() -> Vec<(PathBuf, PathBuf, String)> {
    let mut out = Vec::new();
    let tiny = common::workspace_root().join("fixtures/tiny");
    for short in ["llama3", "qwen2", "qwen3", "gpt2"] {
        let dir = tiny.join(short);
        let Ok(expected) = std::fs::read_to_string(dir.join("expected.json")) else {
            continue;
        };
        let expected: serde_json::Value = serde_json::from_str(&expected).expect("expected.json");
        let (Some(hf_dir), Some(hash)) = (
            expected["model"]["hf_dir"].as_str(),
            expected["model"]["chkhsh"].as_str(),
        ) else {
            continue;
        };
        out.push((
            tiny.join(hf_dir),
            dir.join("llamacpp/f32.gguf"),
            hash.to_owned(),
        ));
    }
    let cases = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vocab_cases");
    for case in [
        "granite_small",
        "gpt2_roberta",
        "gpt2_tc_added",
        "phi3_gpt2tok",
    ] {
        let c = cases.join(case);
        let hash = std::fs::read_to_string(c.join("chkhsh.txt")).expect("chkhsh.txt");
        out.push((
            c.join("model"),
            c.join("llamacpp.gguf"),
            hash.trim().to_owned(),
        ));
    }
    out
}

fn llamacpp_pre(gguf: &Path) -> String {
    match common::kv(&common::tokenizer_kvs(gguf), "tokenizer.ggml.pre") {
        Some(Value::String(s)) => s.clone(),
        other => panic!("{}: tokenizer.ggml.pre is {other:?}", gguf.display()),
    }
}

#[test]
fn retrained_tokenizers_get_their_pre_from_the_definition() {
    let all = bpe_checkpoints();
    assert!(all.len() >= 4, "{all:?}");
    for (dir, gguf, hash) in &all {
        // llama.cpp's table does not know these vocabularies …
        assert_eq!(name_for_hash(hash), None, "{}", dir.display());
        // … but their definitions name the pre-tokenizer llama.cpp was told to use.
        let (_, config) = common::read_config(dir);
        let choice = detect_pre(dir, &config, false).expect("definition recognized");
        assert_eq!(choice.source, PreSource::Definition);
        assert_eq!(choice.chkhsh, None);
        assert_eq!(choice.name, llamacpp_pre(gguf), "{}", dir.display());
    }
}

#[test]
fn chkhsh_is_computed_like_llamacpp() {
    for (dir, _, hash) in bpe_checkpoints() {
        let (_, config) = common::read_config(&dir);
        let choice = detect_pre(&dir, &config, true).expect("detect");
        assert_eq!(
            choice.chkhsh.as_deref(),
            Some(hash.as_str()),
            "{}",
            dir.display()
        );
        assert_eq!(choice.source, PreSource::Definition);
    }
}

#[test]
#[ignore = "needs the git-ignored fixtures/large/smollm2 (fixtures/smollm2/make_refs.sh)"]
fn real_tokenizer_takes_llamacpp_name_from_hash() {
    // SmolLM2's pre-tokenizer (Digits + ByteLevel) is shared by several llama.cpp names; the
    // hash picks the one llama.cpp writes. Needs the (uncommitted) rebuilt checkpoint.
    let dir = common::workspace_root().join("fixtures/large/smollm2/hf-f32/SmolLM2-135M-Instruct");
    assert!(
        dir.join("tokenizer.json").is_file(),
        "{} not built: run fixtures/smollm2/make_refs.sh",
        dir.display()
    );
    let (_, config) = common::read_config(&dir);
    let with = detect_pre(&dir, &config, true).expect("detect");
    assert_eq!(with.name, "smollm");
    assert_eq!(with.source, PreSource::DefinitionAndHash);
    assert_eq!(
        with.chkhsh.as_deref(),
        Some("855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249")
    );
    let without = detect_pre(&dir, &config, false).expect("detect");
    assert_eq!(without.name, "starcoder");
}

/// Copies a checkpoint's tokenizer files and rewrites its pre-tokenizer regex.
fn with_altered_regex(src: &Path, from: &str, to: &str) -> common::ScratchDir {
    let scratch = common::ScratchDir::new("vocab-detect");
    for f in [
        "config.json",
        "tokenizer_config.json",
        "tokenizer.json",
        "generation_config.json",
    ] {
        if src.join(f).is_file() {
            std::fs::copy(src.join(f), scratch.path().join(f)).expect("copy");
        }
    }
    let p = scratch.path().join("tokenizer.json");
    let text = std::fs::read_to_string(&p).expect("tokenizer.json");
    let mut tj: serde_json::Value = serde_json::from_str(&text).expect("json");
    let split = &mut tj["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"];
    let re = split.as_str().expect("a Split regex").to_owned();
    assert!(re.contains(from), "{re}");
    *split = serde_json::Value::String(re.replace(from, to));
    std::fs::write(&p, serde_json::to_vec(&tj).expect("serialize")).expect("write");
    scratch
}

#[test]
fn unknown_definition_suggests_closest_names_and_pre_override_works() {
    let case = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vocab_cases/granite_small");
    let scratch = with_altered_regex(&case.join("model"), r"\p{N}{1,3}", r"\p{N}{1,5}");
    let (arch, config) = common::read_config(scratch.path());

    let err = vocab_metadata(scratch.path(), &arch, &config, &VocabOptions::default())
        .expect_err("an unknown pre-tokenizer must be refused");
    let msg = err.to_string();
    match &err {
        VocabError::UnknownPreTokenizer {
            closest, chkhsh, ..
        } => {
            assert_eq!(
                closest.first().map(String::as_str),
                Some("llama-bpe"),
                "{closest:?}"
            );
            assert_eq!(chkhsh.len(), 64);
        }
        other => panic!("unexpected error: {other}"),
    }
    assert!(msg.contains("--pre llama-bpe"), "{msg}");
    assert!(
        msg.contains(r"\p{N}{1,5}"),
        "the message shows the definition: {msg}"
    );

    // --pre makes it convert, and everything else is what llama.cpp wrote for the original.
    let opts = VocabOptions {
        pre_override: Some("llama-bpe".into()),
    };
    let ours = vocab_metadata(scratch.path(), &arch, &config, &opts).expect("converts with --pre");
    let diffs = common::diff_kvs(&ours, &common::tokenizer_kvs(&case.join("llamacpp.gguf")));
    assert!(diffs.is_empty(), "{diffs:?}");
}

#[test]
fn pre_override_must_be_a_llamacpp_name() {
    let case = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vocab_cases/gpt2_roberta/model");
    let (arch, config) = common::read_config(&case);
    let opts = VocabOptions {
        pre_override: Some("gpt2".into()),
    };
    let err = vocab_metadata(&case, &arch, &config, &opts).expect_err("gpt2 is not a pre name");
    assert!(
        matches!(err, VocabError::UnknownPreOverride { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("gpt-2"),
        "lists the known names: {err}"
    );
}
