//! Page-cache advice for read-only memory-mapped inputs (GGUF files, safetensors shards).
//!
//! The converter and the quantizer stream a mapped input front to back. Left alone, every page
//! they touch stays mapped and counts in the process's resident size, which then grows to the
//! size of the whole input. Telling the kernel which pages come next (`WillNeed`, read-ahead)
//! and which are done (`DontNeed`) keeps the resident size near one tensor. It lives here, next
//! to the reader that maps files, so that both crates share one audited `unsafe` block.

/// Hints to the kernel about bytes of a read-only file mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Advice {
    /// Start reading them from disk now (asynchronously).
    WillNeed,
    /// We are done with them: drop them from this process's page tables. The data stays in the
    /// page cache and is read again transparently if touched.
    DontNeed,
}

/// Applies `advice` to the pages that hold `bytes` (best effort: errors are ignored, since the
/// advice never changes what is read). `WillNeed` covers whole pages around the range (reading a
/// little more is harmless); `DontNeed` only the pages entirely inside it, so that a neighbour
/// being read by another thread keeps its mapping.
///
/// # Safety
/// `bytes` must lie in a live, read-only, file-backed mapping (e.g. a `memmap2::Mmap` of a
/// file that is not written meanwhile). On such a mapping `MADV_DONTNEED` only drops page-table
/// entries and the next access faults the same file contents back in; on anonymous or written
/// private memory it would *zero* the pages.
#[cfg(target_os = "linux")]
pub unsafe fn advise(bytes: &[u8], advice: Advice) {
    use std::ffi::{c_int, c_long, c_void};
    extern "C" {
        fn madvise(addr: *mut c_void, len: usize, advice: c_int) -> c_int;
        fn sysconf(name: c_int) -> c_long;
    }
    const SC_PAGESIZE: c_int = 30;
    const MADV_WILLNEED: c_int = 3;
    const MADV_DONTNEED: c_int = 4;
    if bytes.is_empty() {
        return;
    }
    // SAFETY: sysconf only reads a constant of the system.
    let page = unsafe { sysconf(SC_PAGESIZE) };
    let page = if page > 0 { page as usize } else { 4096 };
    let start = bytes.as_ptr() as usize;
    let end = start + bytes.len();
    let (start, end, flag) = match advice {
        Advice::WillNeed => (start / page * page, end, MADV_WILLNEED),
        Advice::DontNeed => (
            start.div_ceil(page) * page,
            end / page * page,
            MADV_DONTNEED,
        ),
    };
    if end <= start {
        return;
    }
    // SAFETY: the caller guarantees a read-only file-backed mapping; the range is within the
    // pages `bytes` borrows (rounded outward only for WILLNEED, which just schedules reads).
    unsafe {
        madvise(start as *mut c_void, end - start, flag);
    }
}

/// No-op where `madvise` is not wired up: the advice only affects memory use, never results.
///
/// # Safety
/// None needed here; kept `unsafe` so that callers are written for the Linux contract.
#[cfg(not(target_os = "linux"))]
pub unsafe fn advise(_bytes: &[u8], _advice: Advice) {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn dropped_pages_of_a_file_mapping_read_back_unchanged() {
        let path = std::env::temp_dir().join(format!("gguf-pages-{}", std::process::id()));
        let data: Vec<u8> = (0..3 * 65536u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(&data))
            .unwrap();
        let file = std::fs::File::open(&path).unwrap();
        // SAFETY: the file is not modified while mapped.
        let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
        // SAFETY: `map` is a read-only file mapping.
        unsafe {
            advise(&map[100..150_000], Advice::WillNeed);
            advise(&map[100..150_000], Advice::DontNeed);
            advise(&map[..0], Advice::DontNeed);
        }
        assert_eq!(&map[..], &data[..]);
        drop(map);
        let _ = std::fs::remove_file(&path);
    }
}
