//! "Never allocates more than the file size justifies": a counting allocator measures the peak
//! heap growth while parsing every hostile fixture and thousands of mutated files, and checks it
//! stays within a small multiple of the file size. A reader that trusted a count or a length
//! (`Vec::with_capacity(n_tensors)`, an exabyte tensor) would blow far past the bound.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;

use gguf::Header;

struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn add(n: usize) {
    LIVE.with(|l| {
        let v = l.get() + n;
        l.set(v);
        PEAK.with(|p| p.set(p.get().max(v)));
    });
}

fn sub(n: usize) {
    LIVE.with(|l| l.set(l.get().saturating_sub(n)));
}

// SAFETY: forwards to the system allocator; the bookkeeping touches only const-initialized
// thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size());
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        sub(layout.size());
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Count the moment both blocks may exist.
        add(new_size);
        let p = System.realloc(ptr, layout, new_size);
        sub(layout.size());
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Peak bytes allocated (above the level at entry) while parsing `bytes`.
fn peak_while_parsing(bytes: &[u8]) -> usize {
    let base = LIVE.with(|l| l.get());
    PEAK.with(|p| p.set(base));
    let r = Header::parse(bytes);
    let peak = PEAK.with(|p| p.get()) - base;
    drop(r);
    peak
}

/// Each byte of header can become a few dozen bytes of structures (a 14-byte metadata entry
/// becomes a `(String, Value)` plus a hash-set entry), plus a fixed allowance.
fn bound(len: usize) -> usize {
    48 * len + (64 << 10)
}

#[test]
fn parsing_allocates_in_proportion_to_the_file() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/hostile/gguf");
    let mut files: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .expect("fixtures")
        .map(|e| std::fs::read(e.expect("entry").path()).expect("readable"))
        .collect();
    let mut rng = common::Rng::new(7);
    for _ in 0..200 {
        let original = common::write(&common::model(&mut rng));
        for _ in 0..20 {
            files.push(common::mutate(&mut rng, &original));
        }
        files.push(original);
    }
    files.extend(dense_files());
    let mut worst = 0f64;
    for bytes in &files {
        let peak = peak_while_parsing(bytes);
        assert!(
            peak <= bound(bytes.len()),
            "{peak} bytes allocated for a {}-byte file",
            bytes.len()
        );
        worst = worst.max(peak as f64 / bytes.len().max(1) as f64);
    }
    // The check above must be able to fail: a real file allocates something.
    assert!(worst > 0.0);
}

/// Files packed with the smallest possible entries, where the in-memory size per file byte is
/// largest: many one-byte metadata values, many empty strings, many one-element tensors.
fn dense_files() -> Vec<Vec<u8>> {
    fn head(n_tensors: u64, n_kv: u64) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&n_tensors.to_le_bytes());
        b.extend_from_slice(&n_kv.to_le_bytes());
        b
    }
    fn key(b: &mut Vec<u8>, k: &str) {
        b.extend_from_slice(&(k.len() as u64).to_le_bytes());
        b.extend_from_slice(k.as_bytes());
    }
    let n = 20_000u64;
    let mut kvs = head(0, n);
    for i in 0..n {
        key(&mut kvs, &format!("{i:x}"));
        kvs.extend_from_slice(&0u32.to_le_bytes()); // u8
        kvs.push(1);
    }
    let mut strings = head(0, 1);
    key(&mut strings, "s");
    strings.extend_from_slice(&9u32.to_le_bytes()); // array
    strings.extend_from_slice(&8u32.to_le_bytes()); // of strings
    strings.extend_from_slice(&n.to_le_bytes());
    for _ in 0..n {
        strings.extend_from_slice(&0u64.to_le_bytes());
    }
    let mut tensors = head(n, 0);
    for i in 0..n {
        key(&mut tensors, &format!("{i:x}"));
        tensors.extend_from_slice(&1u32.to_le_bytes());
        tensors.extend_from_slice(&1u64.to_le_bytes());
        tensors.extend_from_slice(&24u32.to_le_bytes()); // i8
        tensors.extend_from_slice(&(32 * i).to_le_bytes());
    }
    // Claims one tensor more than it holds: the reader must not reserve for the claim first.
    let mut lying = tensors.clone();
    lying[8..16].copy_from_slice(&(n + 1).to_le_bytes());
    vec![kvs, strings, tensors, lying]
}
