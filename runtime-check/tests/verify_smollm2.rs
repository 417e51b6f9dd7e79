//! The verifier on a real trained model: SmolLM2-135M-Instruct (fixtures/smollm2/README.md).
//! Its GGUFs are large and git-ignored (fixtures/large/smollm2/, made by
//! fixtures/smollm2/make_refs.sh), and these tests read and write about 1.5 GB, so they are
//! `#[ignore]`d: run them with `cargo test -p runtime-check --test verify_smollm2 -- --ignored
//! --nocapture`. Without the files they print a note and pass. The logits fixture
//! (fixtures/logits/smollm2-135m.safetensors) is committed.
//!
//! Real models attend sharply, so breakages the tiny random models barely register (a wrong
//! rope base, an unpermuted Q/K) are far outside every bound here. The measured values are
//! printed (`--nocapture`) and quoted in docs/verify.md.

use std::path::{Path, PathBuf};

use gguf::{GgufFile, TensorDesc};
use runtime_check::verify::{verify, Options, Status, VerifyReport};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A file under the git-ignored fixtures/large/smollm2; the tests that use it are `#[ignore]`d
/// and run on purpose, so a missing file is a failure, not a skip.
fn large(name: &str) -> PathBuf {
    let p = root().join("fixtures/large/smollm2").join(name);
    assert!(
        p.exists(),
        "{} is not there: run fixtures/smollm2/make_refs.sh (see fixtures/smollm2/README.md)",
        p.display()
    );
    p
}

fn opts() -> Options {
    Options {
        fixture: Some(root().join("fixtures/logits/smollm2-135m.safetensors")),
        tokenizer: Some(large("hf-f32/SmolLM2-135M-Instruct")),
        no_scan: true,
        ..Default::default()
    }
}

fn summary(tag: &str, r: &VerifyReport) {
    let n = r.layers[2].numbers.as_ref();
    let failing: Vec<String> = r
        .layers
        .iter()
        .flat_map(|l| {
            l.checks
                .iter()
                .filter(|c| c.status == Status::Fail)
                .map(move |c| format!("{}/{}", l.name, c.name))
        })
        .collect();
    match n {
        Some(n) => eprintln!(
            "{tag}: verdict {:?}; NMSE {:.3e}, top-1 {:.1}%, mean KLD {:.3e}, max KLD {:.3e}; failing {failing:?}",
            r.verdict,
            n.nmse,
            100.0 * n.top1,
            n.mean_kld,
            n.max_kld
        ),
        None => eprintln!("{tag}: verdict {:?}; failing {failing:?}", r.verdict),
    }
}

/// Copies a GGUF with some edits.
fn edited(
    src: &Path,
    tag: &str,
    edit: impl Fn(&mut gguf::Metadata, &mut Vec<(TensorDesc, Vec<u8>)>),
) -> PathBuf {
    let f = GgufFile::open(src).unwrap();
    let mut md = f.metadata().clone();
    let mut tensors: Vec<(TensorDesc, Vec<u8>)> = f
        .tensors()
        .iter()
        .map(|t| {
            (
                TensorDesc::new(t.name.clone(), t.dims.clone(), t.ggml_type),
                f.tensor_data(t).to_vec(),
            )
        })
        .collect();
    edit(&mut md, &mut tensors);
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("verify-smollm2-{tag}-{}.gguf", std::process::id()));
    gguf::write_file(&out, &md, &tensors).unwrap();
    out
}

#[test]
#[ignore]
fn llama_cpp_files_pass() {
    for name in [
        "SmolLM2-135M-Instruct-F32.gguf",
        "SmolLM2-135M-Instruct-F16.gguf",
        "SmolLM2-135M-Instruct-BF16.gguf",
        "SmolLM2-135M-Instruct-Q8_0.gguf",
        "SmolLM2-135M-Instruct-F16-Q6_K.gguf",
        "SmolLM2-135M-Instruct-F16-Q4_K_M.gguf",
        "SmolLM2-135M-Instruct-F16-Q4_0.gguf",
    ] {
        let p = large(&format!("llamacpp/from-f32/{name}"));
        let r = verify(&p, &opts());
        summary(name, &r);
        assert_eq!(r.exit_code, 0, "{}", r.render_text());
    }
}

#[test]
#[ignore]
fn breakages_of_a_real_model_are_caught() {
    let src = large("llamacpp/from-f32/SmolLM2-135M-Instruct-F16.gguf");
    let f32s = |b: &[u8]| -> Vec<f32> {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let find = |t: &mut Vec<(TensorDesc, Vec<u8>)>, n: &str| -> usize {
        t.iter().position(|(d, _)| d.name == n).unwrap()
    };

    // Q/K permutation left out (9 heads, 3 KV heads, head dim 64; F16 rows of 576 values).
    let qk = edited(&src, "qk", |_, t| {
        for il in 0..30 {
            for (name, n_head) in [("attn_q", 9usize), ("attn_k", 3)] {
                let i = find(t, &format!("blk.{il}.{name}.weight"));
                assert_eq!(t[i].0.ggml_type, gguf::GgmlType::F16);
                let (hd, row) = (64, 576 * 2);
                let v = t[i].1.clone();
                for h in 0..n_head {
                    for j in 0..hd / 2 {
                        for (dst, s) in [(j, 2 * j), (hd / 2 + j, 2 * j + 1)] {
                            let d = (h * hd + dst) * row;
                            let s = (h * hd + s) * row;
                            t[i].1[d..d + row].copy_from_slice(&v[s..s + row]);
                        }
                    }
                }
            }
        }
    });
    // Norm weights off by one.
    let norm = edited(&src, "norm", |_, t| {
        for (d, b) in t.iter_mut() {
            if d.name.ends_with("norm.weight") {
                let v: Vec<f32> = f32s(b).iter().map(|x| x + 1.0).collect();
                *b = bytes(&v);
            }
        }
    });
    // Gate and up swapped in one layer.
    let swap = edited(&src, "swap", |_, t| {
        let (g, u) = (
            find(t, "blk.7.ffn_gate.weight"),
            find(t, "blk.7.ffn_up.weight"),
        );
        let tmp = t[g].1.clone();
        t[g].1 = t[u].1.clone();
        t[u].1 = tmp;
    });
    // Llama-2's rope base instead of SmolLM2's 100000.
    let rope = edited(&src, "rope", |md, _| {
        md.set("llama.rope.freq_base", 10000.0f32)
    });
    // Qwen2's pre-tokenizer instead of 'smollm'. ('gpt-2', which differs from 'smollm' only in
    // splitting digits, changes nothing here: SmolLM2's merges never join two digits.)
    let pre = edited(&src, "pre", |md, _| md.set("tokenizer.ggml.pre", "qwen2"));

    for (tag, path, layer) in [
        ("Q/K permutation left out", qk, "numbers"),
        ("norm weights +1", norm, "numbers"),
        ("ffn_gate/ffn_up swapped in layer 7", swap, "numbers"),
        ("rope.freq_base 10000", rope, "numbers"),
        ("pre-tokenizer qwen2", pre, "tokenizer"),
    ] {
        let r = verify(&path, &opts());
        let _ = std::fs::remove_file(&path);
        summary(tag, &r);
        let l = r.layers.iter().find(|l| l.name == layer).unwrap();
        assert_eq!(l.status, Status::Fail, "{tag}: {}", r.render_text());
        assert_eq!(r.exit_code, 1);
        if tag.starts_with("pre") {
            for c in l.checks.iter().filter(|c| c.status == Status::Fail) {
                eprintln!("  {}: {}", c.name, c.detail);
            }
        }
    }
}
