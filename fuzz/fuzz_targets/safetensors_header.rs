//! Fuzzes the safetensors header reader and the shard-index reader of `convert::source`. The
//! first byte picks the reader (even: a safetensors file, odd: `model.safetensors.index.json`).
//! An accepted file must describe ranges that tile its data section exactly.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| convert::fuzz_checks::safetensors_header(data));
