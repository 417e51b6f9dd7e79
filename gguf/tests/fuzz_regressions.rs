//! Replays the fuzzers' seed corpora and every saved crash input (fuzz/regressions/<target>/)
//! through the same checks the fuzz targets make, so a crash found once stays fixed without
//! needing cargo-fuzz. (The safetensors target's inputs are replayed in convert's source.rs.)

use std::path::{Path, PathBuf};

use gguf::vocab_check::{KEY_SCORES, KEY_TOKENS, KEY_TOKEN_TYPE, SPECIAL_ID_KEYS};
use gguf::writer::encode_header;
use gguf::{Array, Header, Value};

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

/// The body of fuzz/fuzz_targets/gguf_header.rs.
fn gguf_header(data: &[u8]) {
    let Ok(h) = Header::parse(data) else {
        return;
    };
    let mut end = 0u64;
    for t in &h.tensors {
        assert!(t.offset >= end, "overlap");
        assert_eq!(t.offset % h.alignment, 0, "misaligned");
        end = t.offset + t.n_bytes();
        assert!(h.data_offset + end <= data.len() as u64, "past EOF");
    }
    let header = encode_header(&h.metadata, &h.tensors);
    let mut again = header.clone();
    again.resize(header.len() + end as usize, 0);
    let h2 = Header::parse(&again).unwrap_or_else(|e| panic!("re-encoded header rejected: {e}"));
    assert_eq!(encode_header(&h2.metadata, &h2.tensors), header);
}

/// The body of fuzz/fuzz_targets/tokenizer_metadata.rs.
fn tokenizer_metadata(data: &[u8]) {
    let Some((&n_kv, kvs)) = data.split_first() else {
        return;
    };
    let mut file = b"GGUF".to_vec();
    file.extend_from_slice(&3u32.to_le_bytes());
    file.extend_from_slice(&0u64.to_le_bytes());
    file.extend_from_slice(&(n_kv as u64).to_le_bytes());
    file.extend_from_slice(kvs);
    let Ok(h) = Header::parse(&file) else {
        return;
    };
    let m = &h.metadata;
    let n_vocab = match m.get(KEY_TOKENS) {
        Some(Value::Array(Array::String(t))) => Some(t.len()),
        None => None,
        Some(other) => panic!("accepted tokens of type {:?}", other.value_type()),
    };
    for key in [KEY_SCORES, KEY_TOKEN_TYPE] {
        if let Some(v) = m.get(key) {
            let len = v.as_array().map(|a| a.len());
            assert!(len.is_some() && len == n_vocab, "{key} length");
        }
    }
    if let Some(Value::Array(Array::I32(types))) = m.get(KEY_TOKEN_TYPE) {
        assert!(types.iter().all(|t| (0..=6).contains(t)));
    }
    for key in SPECIAL_ID_KEYS {
        if let (Some(v), Some(n)) = (m.get(key), n_vocab) {
            assert!(matches!(v, Value::U32(id) if (*id as usize) < n), "{key}");
        }
    }
}

#[test]
fn gguf_header_inputs_replay_cleanly() {
    let inputs = inputs("gguf_header");
    assert!(inputs.len() >= 40, "seed corpus missing");
    let mut accepted = 0;
    for (path, bytes) in &inputs {
        let r = std::panic::catch_unwind(|| gguf_header(bytes));
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
        let r = std::panic::catch_unwind(|| tokenizer_metadata(bytes));
        assert!(r.is_ok(), "{} panics", path.display());
    }
}
