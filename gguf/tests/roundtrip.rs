//! Property tests: for random valid files written by our writer, read(write(x)) == x; and for
//! random mutations of valid files the reader returns `Ok` (with a header whose every tensor lies
//! inside the file) or a typed error, never a panic.

mod common;

use common::{model, mutate, write, Rng};
use gguf::{GgufFile, Header};

const CASES: u64 = 400;
const MUTATIONS_PER_CASE: u64 = 60;

#[test]
fn read_of_write_is_identity() {
    for seed in 0..CASES {
        let mut rng = Rng::new(seed);
        let m = model(&mut rng);
        let bytes = write(&m);
        let h = Header::parse(&bytes).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_eq!(h.metadata, m.metadata, "seed {seed}");
        assert_eq!(h.alignment, m.metadata.alignment(), "seed {seed}");
        assert_eq!(h.tensors.len(), m.tensors.len(), "seed {seed}");
        for (info, (desc, data)) in h.tensors.iter().zip(&m.tensors) {
            assert_eq!(info.name, desc.name, "seed {seed}");
            assert_eq!(info.dims, desc.dims, "seed {seed}");
            assert_eq!(info.ggml_type, desc.ggml_type, "seed {seed}");
            let start = (h.data_offset + info.offset) as usize;
            assert_eq!(
                &bytes[start..start + info.n_bytes() as usize],
                data.as_slice(),
                "seed {seed}: data of {}",
                info.name
            );
        }
    }
}

#[test]
fn files_on_disk_round_trip_through_mmap() {
    let dir = std::env::temp_dir().join(format!("gguf-roundtrip-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for seed in 0..20 {
        let mut rng = Rng::new(1000 + seed);
        let m = model(&mut rng);
        let path = dir.join(format!("{seed}.gguf"));
        gguf::write_file(&path, &m.metadata, &m.tensors).expect("write");
        let f = GgufFile::open(&path).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_eq!(f.metadata(), &m.metadata);
        for (info, (_, data)) in f.tensors().iter().zip(&m.tensors) {
            assert_eq!(f.tensor_data(info), data.as_slice(), "seed {seed}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn mutated_files_give_ok_or_a_typed_error() {
    let mut accepted = 0u64;
    let mut rejected = 0u64;
    for seed in 0..CASES {
        let mut rng = Rng::new(seed);
        let original = write(&model(&mut rng));
        for k in 0..MUTATIONS_PER_CASE {
            let bytes = mutate(&mut rng, &original);
            match Header::parse(&bytes) {
                Ok(h) => {
                    accepted += 1;
                    // Whatever is accepted must be safe to use: every tensor inside the file,
                    // in order, without overlap.
                    let mut end = 0u64;
                    for t in &h.tensors {
                        assert!(t.offset >= end, "seed {seed}/{k}: overlap at {}", t.name);
                        assert_eq!(t.offset % h.alignment, 0, "seed {seed}/{k}");
                        end = t.offset + t.n_bytes();
                        assert!(
                            h.data_offset + end <= bytes.len() as u64,
                            "seed {seed}/{k}: {} past EOF",
                            t.name
                        );
                    }
                }
                Err(e) => {
                    rejected += 1;
                    assert!(!e.to_string().is_empty());
                }
            }
        }
    }
    // The mutations must actually exercise both outcomes.
    assert!(accepted > 100, "only {accepted} mutants accepted");
    assert!(rejected > 1000, "only {rejected} mutants rejected");
}
