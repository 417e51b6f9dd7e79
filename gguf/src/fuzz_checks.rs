//! The oracles of the fuzz targets (fuzz/fuzz_targets/): what an *accepted* input must satisfy,
//! beyond "no panic". They live in the library so that the fuzz targets and the regression
//! replay in `cargo test` (gguf/tests/fuzz_regressions.rs) run the same checks. Each function
//! panics when the reader accepted something it should not have; that is the point.

use crate::vocab_check::{KEY_SCORES, KEY_TOKENS, KEY_TOKEN_TYPE, SPECIAL_ID_KEYS};
use crate::writer::encode_header;
use crate::{Array, Header, Value};

/// `data` as a whole GGUF header: every tensor of an accepted header lies inside the buffer, in
/// order and aligned, and re-encoding it with the writer and parsing that gives the same bytes.
pub fn gguf_header(data: &[u8]) {
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
    let h2 = match Header::parse(&again) {
        Ok(h2) => h2,
        Err(e) => panic!("re-encoded header rejected: {e}"),
    };
    assert_eq!(encode_header(&h2.metadata, &h2.tensors), header);
}

/// `data` as a metadata section (one byte of key count, then the key-value bytes) wrapped in a
/// tensor-less GGUF header, so the fuzzer spends its time on `tokenizer.ggml.*` values: an
/// accepted file satisfies what llama.cpp relies on.
pub fn tokenizer_metadata(data: &[u8]) {
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
