//! Fuzzes the tokenizer-metadata checks (`gguf::vocab_check`) through the reader. The input is a
//! metadata section: one byte of key count, then the key–value bytes, wrapped here in a GGUF
//! header with no tensors so that the fuzzer spends its time on `tokenizer.ggml.*` values rather
//! than on the container. An accepted file must satisfy what llama.cpp relies on.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| gguf::fuzz_checks::tokenizer_metadata(data));
