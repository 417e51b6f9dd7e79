//! Fuzzes the tokenizer-metadata checks (`gguf::vocab_check`) through the reader. The input is a
//! metadata section: one byte of key count, then the key–value bytes, wrapped here in a GGUF
//! header with no tensors so that the fuzzer spends its time on `tokenizer.ggml.*` values rather
//! than on the container. An accepted file must satisfy what llama.cpp relies on.
#![no_main]

use gguf::vocab_check::{KEY_SCORES, KEY_TOKENS, KEY_TOKEN_TYPE, SPECIAL_ID_KEYS};
use gguf::{Array, Header, Value};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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
});
