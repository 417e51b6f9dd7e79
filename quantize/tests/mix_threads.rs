//! The output depends neither on the number of worker threads nor on the slab size (how many
//! rows are expanded to f32 at a time).

mod mix_common;

use mix_common::{compare_output, run_ours_with, runs, sha256_hex, Scratch};

#[test]
fn one_and_many_threads_write_the_same_bytes() {
    for (model, run_name) in [
        ("dense", "Q4_K_M.imatrix-gguf"),
        ("moe", "Q3_K_M.imatrix-dat"),
        ("odd", "IQ4_XS"),
    ] {
        let all = runs(model);
        let run = all
            .iter()
            .find(|r| r.name == run_name)
            .unwrap_or_else(|| panic!("{model} {run_name}"));
        let scratch = Scratch::new(&format!("threads-{model}"));
        let mut hashes = Vec::new();
        // 1000 values: a few rows per slab, slabs that end mid-matrix and at expert boundaries.
        for (threads, slab) in [
            (1, None),
            (3, None),
            (8, None),
            (2, Some(1000)),
            (1, Some(1)),
        ] {
            let out = run_ours_with(model, run, &all, &scratch, Some(threads), slab)
                .unwrap_or_else(|e| panic!("{model} {run_name} with {threads} threads: {e}"));
            let bytes = std::fs::read(&out).expect("read output");
            hashes.push((threads, sha256_hex(&bytes)));
            assert_eq!(
                compare_output(run, &out),
                Vec::<String>::new(),
                "{model} {run_name} with {threads} threads, slab {slab:?}"
            );
            std::fs::remove_file(out).expect("remove");
        }
        assert!(
            hashes.windows(2).all(|w| w[0].1 == w[1].1),
            "{model} {run_name}: {hashes:?}"
        );
    }
}
