//! Fuzzes the safetensors header reader and the shard-index reader of `convert::source`. The
//! first byte picks the reader (even: a safetensors file, odd: `model.safetensors.index.json`).
//! An accepted file must describe ranges that tile its data section exactly.
#![no_main]

use convert::source::{parse_index, parse_safetensors};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    if which % 2 == 1 {
        if let Ok(wm) = parse_index(rest) {
            for file in wm.values() {
                assert!(!file.is_empty() && !file.contains('/') && file != "..");
            }
        }
        return;
    }
    let Ok(h) = parse_safetensors(rest) else {
        return;
    };
    let data_len = rest.len() - h.data_start;
    let mut ranges: Vec<(usize, usize)> = h.entries.iter().map(|e| (e.begin, e.end)).collect();
    ranges.sort();
    let mut at = 0;
    for (b, e) in ranges {
        assert_eq!(b, at, "ranges do not tile the data");
        assert!(e >= b);
        at = e;
    }
    assert_eq!(at, data_len);
    for e in &h.entries {
        let n: u64 = e.shape.iter().map(|&d| d as u64).product();
        assert_eq!(n * e.dtype.bitsize() as u64, 8 * (e.end - e.begin) as u64);
    }
});
