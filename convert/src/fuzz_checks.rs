//! The oracle of the safetensors fuzz target (fuzz/fuzz_targets/safetensors_header.rs), in the
//! library so that the target and the regression replay in `cargo test` run the same checks.
//! It panics when a reader accepted something it should not have; that is the point.

use crate::source::{parse_index, parse_safetensors};

/// The first byte picks the reader (even: a safetensors file, odd: a shard index). An accepted
/// safetensors header describes ranges that tile its data section exactly, each as long as its
/// shape and dtype say; an accepted index names only plain file names.
pub fn safetensors_header(data: &[u8]) {
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
}
