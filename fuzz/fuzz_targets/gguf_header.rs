//! Fuzzes the GGUF header reader (`gguf::Header::parse`, which `GgufFile::open` runs on the
//! mapped file). Besides "no panic", it checks what acceptance promises: every tensor lies inside
//! the buffer, in order, aligned; and re-encoding the parsed header with ggforge's writer and
//! parsing that again gives the same header bytes.
#![no_main]

use gguf::writer::encode_header;
use gguf::Header;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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
});
