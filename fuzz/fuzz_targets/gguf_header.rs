//! Fuzzes the GGUF header reader (`gguf::Header::parse`, which `GgufFile::open` runs on the
//! mapped file). Besides "no panic", it checks what acceptance promises: every tensor lies inside
//! the buffer, in order, aligned; and re-encoding the parsed header with ggforge's writer and
//! parsing that again gives the same header bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| gguf::fuzz_checks::gguf_header(data));
