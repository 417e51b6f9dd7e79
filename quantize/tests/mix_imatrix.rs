//! Loading llama-imatrix's files (GGUF and legacy .dat) as llama-quantize does.

mod mix_common;

use std::path::Path;

use gguf::{Array, GgmlType, Metadata, TensorDesc};
use mix_common::{fixture_dir, runs, Scratch};
use quantize::imatrix::{Imatrix, ImatrixError, ImatrixFormat};

/// The facts llama-quantize recorded about each fixture imatrix (quantize.imatrix.* keys) are
/// what we read from the same files.
#[test]
fn fixture_imatrix_metadata_matches_llama_quantize() {
    for model in ["dense", "odd", "moe"] {
        let all = runs(model);
        for (file, run_name) in [
            ("imatrix.gguf", "Q4_K_M.imatrix-gguf"),
            ("imatrix.dat", "Q4_K_M.imatrix-dat"),
        ] {
            let m = Imatrix::load(&fixture_dir(model).join(file)).expect("loads");
            let run = all.iter().find(|r| r.name == run_name).expect("run");
            let kv = |key: &str| {
                run.kvs
                    .iter()
                    .find(|k| k[0] == key)
                    .map(|k| k[2].clone())
                    .unwrap_or_else(|| panic!("{model} {run_name}: no {key}"))
            };
            assert_eq!(kv("quantize.imatrix.entries_count"), m.entries.len() as u64);
            assert_eq!(kv("quantize.imatrix.chunks_count"), m.chunk_count as u64);
            assert_eq!(kv("quantize.imatrix.dataset"), m.datasets[0].as_str());
            assert_eq!(kv("quantize.imatrix.file"), file);
        }
    }
}

/// The two formats hold the same statistics: per column Σx²/count, stored directly (GGUF) or as
/// (Σx²/count)·ncall then divided by ncall (legacy), so they agree up to that rounding (for these
/// files, ncall = 6, they happen to agree exactly; the bytes tests run both formats anyway).
#[test]
fn gguf_and_legacy_files_agree() {
    for model in ["dense", "odd", "moe"] {
        let g = Imatrix::load(&fixture_dir(model).join("imatrix.gguf")).expect("gguf");
        let d = Imatrix::load(&fixture_dir(model).join("imatrix.dat")).expect("dat");
        assert_eq!(g.format, ImatrixFormat::Gguf);
        assert_eq!(d.format, ImatrixFormat::Legacy);
        assert_eq!(g.chunk_count, d.chunk_count);
        assert_eq!(
            g.entries.keys().collect::<Vec<_>>(),
            d.entries.keys().collect::<Vec<_>>()
        );
        for (name, gw) in &g.entries {
            let dw = &d.entries[name];
            assert_eq!(gw.len(), dw.len(), "{model} {name}");
            for (a, b) in gw.iter().zip(dw) {
                assert!(
                    (a - b).abs() <= 1e-5 * a.abs().max(1e-30),
                    "{model} {name}: {a} vs {b}"
                );
            }
        }
    }
}

fn write_imatrix(path: &Path, md: Metadata, tensors: &[(&str, Vec<u64>, Vec<f32>)]) {
    let t: Vec<(TensorDesc, Vec<u8>)> = tensors
        .iter()
        .map(|(n, dims, v)| {
            (
                TensorDesc::new(*n, dims.clone(), GgmlType::F32),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    gguf::write_file(path, &md, &t).expect("write imatrix");
}

fn full_metadata() -> Metadata {
    let mut md = Metadata::new();
    md.set("general.type", "imatrix");
    md.set(
        "imatrix.datasets",
        gguf::Value::Array(Array::String(vec!["a.txt".into(), "b.txt".into()])),
    );
    md.set("imatrix.chunk_count", 5u32);
    md.set("imatrix.chunk_size", 512u32);
    md
}

#[test]
fn gguf_weights_are_sums_over_counts_per_expert() {
    let s = Scratch::new("imat-gguf");
    let p = s.path("i.gguf");
    write_imatrix(
        &p,
        full_metadata(),
        &[
            // two experts of 2 columns; the second saw no tokens -> 1.0; counts are rounded
            (
                "blk.0.ffn_up_exps.weight.in_sum2",
                vec![2, 2],
                vec![3.0, 6.0, 9.0, 9.0],
            ),
            (
                "blk.0.ffn_up_exps.weight.counts",
                vec![1, 2],
                vec![2.6, 0.4],
            ),
            ("blk.0.attn_q.weight.in_sum2", vec![2, 1], vec![1.0, 2.0]),
            ("blk.0.attn_q.weight.counts", vec![1, 1], vec![4.0]),
        ],
    );
    let m = Imatrix::load(&p).expect("loads");
    assert_eq!(
        m.entries["blk.0.ffn_up_exps.weight"],
        vec![1.0, 2.0, 1.0, 1.0]
    );
    assert_eq!(m.entries["blk.0.attn_q.weight"], vec![0.25, 0.5]);
    assert_eq!(m.datasets, vec!["a.txt".to_string(), "b.txt".to_string()]);
    assert_eq!((m.chunk_count, m.chunk_size), (5, 512));
    let kv = m.kv("i.gguf");
    assert_eq!(kv.dataset.as_deref(), Some("a.txt"));
    assert_eq!(kv.entries, 2);
}

#[test]
fn malformed_gguf_imatrix_files_are_refused_clearly() {
    let s = Scratch::new("imat-bad");
    let p = s.path("i.gguf");

    let mut md = full_metadata();
    md.remove("imatrix.chunk_size");
    write_imatrix(
        &p,
        md,
        &[
            ("x.weight.in_sum2", vec![2, 1], vec![1.0, 2.0]),
            ("x.weight.counts", vec![1, 1], vec![1.0]),
        ],
    );
    let e = Imatrix::load(&p).expect_err("no metadata");
    assert!(matches!(e, ImatrixError::MissingMetadata { .. }), "{e}");
    assert!(e.to_string().contains("missing imatrix metadata"), "{e}");

    write_imatrix(
        &p,
        full_metadata(),
        &[("x.weight.in_sum2", vec![2, 1], vec![1.0, 2.0])],
    );
    let e = Imatrix::load(&p).expect_err("no counts");
    assert!(
        e.to_string()
            .contains("mismatched sums and counts for 'x.weight'"),
        "{e}"
    );

    write_imatrix(
        &p,
        full_metadata(),
        &[
            ("x.weight.in_sum2", vec![2, 1], vec![1.0, f32::NAN]),
            ("x.weight.counts", vec![1, 1], vec![1.0]),
        ],
    );
    let e = Imatrix::load(&p).expect_err("NaN");
    assert!(matches!(e, ImatrixError::NonFinite { index: 1, .. }), "{e}");
    assert!(e.to_string().contains("'x.weight'"), "{e}");

    std::fs::write(&p, b"GGUF\x03\x00\x00\x00").expect("write");
    let e = Imatrix::load(&p).expect_err("truncated");
    assert!(e.to_string().contains("i.gguf"), "{e}");

    let e = Imatrix::load(&s.path("missing.dat")).expect_err("missing");
    assert!(matches!(e, ImatrixError::Io { .. }), "{e}");
}
