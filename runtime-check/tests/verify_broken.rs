//! Deliberately broken files are caught, each by the layer that should catch it.
//!
//! Every broken file is built here from llama.cpp's own GGUF of a tiny fixture model
//! (fixtures/tiny/<short>/llamacpp/*.gguf) by rewriting one thing, the way a converter or
//! quantizer bug would: a Q/K permutation left out, norm weights off by one, two tensors
//! swapped, a wrong rope base, a wrong pre-tokenizer, a flipped bit in a block scale, and
//! metadata that contradicts the tensors. The references are transformers' logits
//! (fixtures/logits/tiny-<short>.safetensors) and the HF folders' tokenizer.json.

use std::path::{Path, PathBuf};

use gguf::{Array, GgmlType, GgufFile, Metadata, TensorDesc, Value};
use runtime_check::verify::{verify, Check, Options, Status, VerifyReport};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tiny(short: &str, outtype: &str) -> PathBuf {
    root().join(format!("fixtures/tiny/{short}/llamacpp/{outtype}.gguf"))
}

fn fixture(short: &str) -> PathBuf {
    root().join(format!("fixtures/logits/tiny-{short}.safetensors"))
}

fn hf_dir(short: &str) -> PathBuf {
    let name = match short {
        "llama3" => "Tiny-Llama-3-Instruct",
        "gemma2" => "Tiny-Gemma-2-it",
        "qwen2" => "Tiny-Qwen2.5-Instruct",
        other => panic!("no HF dir for {other}"),
    };
    root().join(format!("fixtures/tiny/{short}/{name}"))
}

/// A GGUF held in memory for editing.
struct Edit {
    md: Metadata,
    tensors: Vec<(TensorDesc, Vec<u8>)>,
}

impl Edit {
    fn open(path: &Path) -> Edit {
        let f = GgufFile::open(path).unwrap();
        Edit {
            md: f.metadata().clone(),
            tensors: f
                .tensors()
                .iter()
                .map(|t| {
                    (
                        TensorDesc::new(t.name.clone(), t.dims.clone(), t.ggml_type),
                        f.tensor_data(t).to_vec(),
                    )
                })
                .collect(),
        }
    }

    fn data(&mut self, name: &str) -> &mut Vec<u8> {
        &mut self
            .tensors
            .iter_mut()
            .find(|(d, _)| d.name == name)
            .unwrap_or_else(|| panic!("no tensor {name}"))
            .1
    }

    fn map_f32(&mut self, name: &str, f: impl Fn(&mut [f32])) {
        let bytes = self.data(name);
        let mut v: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        f(&mut v);
        *bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    }

    fn write(&self, tag: &str) -> TempFile {
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("verify-broken-{tag}-{}.gguf", std::process::id()));
        gguf::write_file(&out, &self.md, &self.tensors).unwrap();
        TempFile(out)
    }
}

/// A file under the test temp dir, removed when dropped.
struct TempFile(PathBuf);

impl std::ops::Deref for TempFile {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn with_fixture(short: &str) -> Options {
    Options {
        fixture: Some(fixture(short)),
        ..Default::default()
    }
}

fn layer_status(r: &VerifyReport, layer: &str) -> Status {
    r.layers.iter().find(|l| l.name == layer).unwrap().status
}

fn check<'a>(r: &'a VerifyReport, layer: &str, name: &str) -> &'a Check {
    r.layers
        .iter()
        .find(|l| l.name == layer)
        .unwrap()
        .checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no check {layer}/{name} in\n{}", r.render_text()))
}

/// The unbroken file passes with the same options (so the failure below is the breakage).
fn assert_control_passes(path: &Path, opts: &Options) {
    let r = verify(path, opts);
    assert_eq!(r.exit_code, 0, "{}", r.render_text());
}

/// The tiny models have random 0.02-scale weights, so their attention is nearly uniform
/// (scores q·k/√d of a few hundredths) and RoPE hardly matters to their logits: on tiny Llama-3
/// a 50× smaller rope base moves the logits by NMSE < 1e-5, and an unpermuted Q/K by 5e-5. Real
/// models attend sharply. So the rope and Q/K tests use a sharpened variant: attn_q and attn_k
/// ×8 (scores ×64). Its reference logits are the runtime's own on the correct file, written as a
/// logits fixture — the runtime reproduces transformers on the tiny f32 files to NMSE ≤ 1e-6
/// (tests/tiny_logits.rs), so this stands in for re-running transformers.
fn sharpened_llama3() -> (Edit, TempFile) {
    let mut e = Edit::open(&tiny("llama3", "f32"));
    for il in 0..2 {
        for t in ["attn_q", "attn_k"] {
            e.map_f32(&format!("blk.{il}.{t}.weight"), |v| {
                v.iter_mut().for_each(|x| *x *= 8.0)
            });
        }
    }
    let path = e.write("sharp");
    let file = GgufFile::open(&*path).unwrap();
    let model = runtime_check::Model::load(&file).unwrap();
    let fx = runtime_check::LogitsFixture::open(fixture("llama3")).unwrap();
    let mut bufs: Vec<(String, Vec<usize>, Vec<u8>, safetensors::Dtype)> = Vec::new();
    for (i, p) in fx.prompts.iter().enumerate() {
        let logits = model.forward(&p.tokens).unwrap();
        let tok: Vec<u8> = p
            .tokens
            .iter()
            .flat_map(|&t| (t as i32).to_le_bytes())
            .collect();
        let lg: Vec<u8> = logits.data.iter().flat_map(|x| x.to_le_bytes()).collect();
        bufs.push((
            format!("prompt.{i}.tokens"),
            vec![p.tokens.len()],
            tok,
            safetensors::Dtype::I32,
        ));
        bufs.push((
            format!("prompt.{i}.logits"),
            vec![logits.n_tokens, logits.n_vocab],
            lg,
            safetensors::Dtype::F32,
        ));
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bufs
        .iter()
        .map(|(n, shape, b, dt)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*dt, shape.clone(), b).unwrap(),
            )
        })
        .collect();
    let mut meta = std::collections::HashMap::new();
    meta.insert("format".to_string(), "ggforge-logits/1".to_string());
    meta.insert("model".to_string(), "tiny-llama3-sharpened".to_string());
    meta.insert(
        "source".to_string(),
        "runtime-check on the correct sharpened GGUF".to_string(),
    );
    meta.insert("dtype".to_string(), "float32".to_string());
    meta.insert("n_prompts".to_string(), fx.prompts.len().to_string());
    let bytes = safetensors::serialize(views, Some(meta)).unwrap();
    let fx_path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("verify-sharp-{}.safetensors", std::process::id()));
    std::fs::write(&fx_path, bytes).unwrap();
    (e, TempFile(fx_path))
}

/// Undoes llama.cpp's Q/K row permutation: GGUF row 2i of a head is HF row i and row 2i + 1 is
/// HF row head_dim/2 + i, so this rewrites the rows in HF order, as a converter that forgot the
/// permutation would have written them.
fn unpermute(rows: &[f32], row_len: usize, n_head: usize) -> Vec<f32> {
    let n_rows = rows.len() / row_len;
    let hd = n_rows / n_head;
    let mut out = vec![0f32; rows.len()];
    for h in 0..n_head {
        for i in 0..hd / 2 {
            for (dst, src) in [(i, 2 * i), (hd / 2 + i, 2 * i + 1)] {
                let d = (h * hd + dst) * row_len;
                let s = (h * hd + src) * row_len;
                out[d..d + row_len].copy_from_slice(&rows[s..s + row_len]);
            }
        }
    }
    out
}

#[test]
fn qk_permutation_left_out_fails_the_numbers() {
    let (mut e, fx) = sharpened_llama3();
    let opts = Options {
        fixture: Some(fx.to_path_buf()),
        ..Default::default()
    };
    assert_control_passes(&e.write("qk-control"), &opts);
    for il in 0..2 {
        e.map_f32(&format!("blk.{il}.attn_q.weight"), |v| {
            let u = unpermute(v, 64, 4);
            v.copy_from_slice(&u)
        });
        e.map_f32(&format!("blk.{il}.attn_k.weight"), |v| {
            let u = unpermute(v, 64, 2);
            v.copy_from_slice(&u)
        });
    }
    let broken = e.write("qk");
    let r = verify(&broken, &opts);
    assert_eq!(
        layer_status(&r, "structure"),
        Status::Pass,
        "{}",
        r.render_text()
    );
    assert_eq!(
        check(&r, "numbers", "NMSE").status,
        Status::Fail,
        "{}",
        r.render_text()
    );
    assert_eq!(r.exit_code, 1);
    let n = r.layers[2].numbers.as_ref().unwrap();
    assert!(n.nmse > 1e-3, "{}", n.nmse);

    // On the unsharpened model with transformers' own logits the effect is small but still
    // above the F32 bound.
    let mut plain = Edit::open(&tiny("llama3", "f32"));
    for il in 0..2 {
        plain.map_f32(&format!("blk.{il}.attn_q.weight"), |v| {
            let u = unpermute(v, 64, 4);
            v.copy_from_slice(&u)
        });
        plain.map_f32(&format!("blk.{il}.attn_k.weight"), |v| {
            let u = unpermute(v, 64, 2);
            v.copy_from_slice(&u)
        });
    }
    let plain = plain.write("qk-plain");
    let r = verify(&plain, &with_fixture("llama3"));
    assert_eq!(
        check(&r, "numbers", "NMSE").status,
        Status::Fail,
        "{}",
        r.render_text()
    );

    // The HF weights as reference catch it too: ggforge's converter permutes correctly, so
    // only the file under test is wrong.
    let r = verify(
        &plain,
        &Options {
            against: Some(hf_dir("llama3")),
            ..Default::default()
        },
    );
    assert_eq!(
        check(&r, "numbers", "NMSE").status,
        Status::Fail,
        "{}",
        r.render_text()
    );
}

#[test]
fn norm_weights_off_by_one_fail_the_numbers() {
    // llama.cpp's converter adds 1 to Gemma's norm weights (HF stores weight - 1); a converter
    // that forgets it writes weights one too small.
    let src = tiny("gemma2", "f32");
    let opts = with_fixture("gemma2");
    assert_control_passes(&src, &opts);
    let mut e = Edit::open(&src);
    let norms: Vec<String> = e
        .tensors
        .iter()
        .map(|(d, _)| d.name.clone())
        .filter(|n| n.ends_with("norm.weight"))
        .collect();
    assert!(norms.len() >= 9);
    for n in &norms {
        e.map_f32(n, |v| v.iter_mut().for_each(|x| *x -= 1.0));
    }
    let r = verify(&e.write("norm"), &opts);
    assert_eq!(
        layer_status(&r, "structure"),
        Status::Pass,
        "{}",
        r.render_text()
    );
    assert_eq!(
        check(&r, "numbers", "NMSE").status,
        Status::Fail,
        "{}",
        r.render_text()
    );
    assert_eq!(r.exit_code, 1);
}

#[test]
fn swapped_tensors_fail_the_numbers() {
    // K and V have the same shape under GQA, so nothing structural can notice.
    let src = tiny("llama3", "f32");
    let opts = with_fixture("llama3");
    let mut e = Edit::open(&src);
    let k = e.data("blk.1.attn_k.weight").clone();
    let v = e.data("blk.1.attn_v.weight").clone();
    *e.data("blk.1.attn_k.weight") = v;
    *e.data("blk.1.attn_v.weight") = k;
    let r = verify(&e.write("swap"), &opts);
    assert_eq!(
        layer_status(&r, "structure"),
        Status::Pass,
        "{}",
        r.render_text()
    );
    assert_eq!(
        check(&r, "numbers", "NMSE").status,
        Status::Fail,
        "{}",
        r.render_text()
    );
    assert_eq!(r.exit_code, 1);
}

#[test]
fn wrong_rope_freq_base_fails_the_numbers() {
    let (mut e, fx) = sharpened_llama3();
    let opts = Options {
        fixture: Some(fx.to_path_buf()),
        ..Default::default()
    };
    assert_control_passes(&e.write("rope-control"), &opts);
    assert_eq!(e.md.get_f64("llama.rope.freq_base"), Some(500000.0));
    // Llama-2's base instead of Llama-3's.
    e.md.set("llama.rope.freq_base", 10000.0f32);
    let r = verify(&e.write("rope"), &opts);
    assert_eq!(
        layer_status(&r, "structure"),
        Status::Pass,
        "{}",
        r.render_text()
    );
    assert_eq!(
        check(&r, "numbers", "NMSE").status,
        Status::Fail,
        "{}",
        r.render_text()
    );
    assert_eq!(r.exit_code, 1);
}

#[test]
fn wrong_pre_tokenizer_fails_the_tokenizer_layer() {
    // 'gpt-2' is a valid name, so the file loads; llama.cpp then splits digits and
    // contractions differently from the model's tokenizer.json.
    let src = tiny("llama3", "f32");
    let opts = Options {
        against: Some(hf_dir("llama3")),
        ..Default::default()
    };
    assert_control_passes(&src, &opts);
    let mut e = Edit::open(&src);
    e.md.set("tokenizer.ggml.pre", "gpt-2");
    let r = verify(&e.write("pre"), &opts);
    assert_eq!(
        layer_status(&r, "structure"),
        Status::Pass,
        "{}",
        r.render_text()
    );
    assert_eq!(layer_status(&r, "tokenizer"), Status::Fail);
    let numbers = check(&r, "tokenizer", "numbers");
    assert_eq!(numbers.status, Status::Fail);
    assert!(
        numbers.detail.contains("first difference at token"),
        "{}",
        numbers.detail
    );
    // Both sides of --against run on the same (wrong) token ids, so the logits agree: the
    // tokenizer layer is what catches this.
    assert_eq!(
        layer_status(&r, "numbers"),
        Status::Pass,
        "{}",
        r.render_text()
    );
    assert_eq!(r.exit_code, 1);
}

#[test]
fn unknown_pre_tokenizer_fails_structure_and_tokenizer() {
    let mut e = Edit::open(&tiny("llama3", "f32"));
    e.md.set("tokenizer.ggml.pre", "llama-bpe-v9");
    let r = verify(
        &e.write("unknown-pre"),
        &Options {
            tokenizer: Some(hf_dir("llama3")),
            ..Default::default()
        },
    );
    assert_eq!(check(&r, "structure", "pre-tokenizer").status, Status::Fail);
    assert_eq!(check(&r, "tokenizer", "rebuild").status, Status::Fail);
    assert_eq!(r.exit_code, 1);
}

#[test]
fn bos_flag_and_token_types_are_checked() {
    let opts = Options {
        tokenizer: Some(hf_dir("llama3")),
        ..Default::default()
    };
    // add_bos_token flipped: every text differs at position 0.
    let mut e = Edit::open(&tiny("llama3", "f32"));
    e.md.set("tokenizer.ggml.add_bos_token", false);
    let r = verify(&e.write("bos"), &opts);
    let c = check(&r, "tokenizer", "english");
    assert_eq!(c.status, Status::Fail);
    assert!(
        c.detail.contains("first difference at token 0"),
        "{}",
        c.detail
    );

    // A chat token typed NORMAL: llama.cpp no longer cuts it out of the text.
    let mut e = Edit::open(&tiny("llama3", "f32"));
    let tokens = match e.md.get("tokenizer.ggml.tokens") {
        Some(Value::Array(Array::String(t))) => t.clone(),
        _ => panic!("no tokens"),
    };
    let id = tokens
        .iter()
        .position(|t| t == "<|start_header_id|>")
        .unwrap();
    let Some(Value::Array(Array::I32(types))) = e.md.get("tokenizer.ggml.token_type").cloned()
    else {
        panic!("no token types");
    };
    let mut types = types;
    assert_eq!(types[id], 3);
    types[id] = 1;
    e.md.set("tokenizer.ggml.token_type", Array::I32(types));
    let r = verify(&e.write("ttype"), &opts);
    assert_eq!(
        check(&r, "tokenizer", "special").status,
        Status::Fail,
        "{}",
        r.render_text()
    );
    assert_eq!(check(&r, "tokenizer", "english").status, Status::Pass);
}

/// Quantizes deterministic values into a Q4_K tensor of 4 rows of 256.
fn q4_k_tensor() -> Vec<u8> {
    let mut x = 12345u32;
    let vals: Vec<f32> = (0..1024)
        .map(|_| {
            x = x.wrapping_mul(1664525).wrapping_add(1013904223);
            ((x >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 0.04
        })
        .collect();
    let q = quantize::quantize(GgmlType::Q4_K, &vals, 256, None).unwrap();
    assert_eq!(q.len(), 4 * 144);
    q
}

#[test]
fn flipped_bit_in_a_q4_k_scale_is_caught_by_the_scan() {
    // A Q4_K super-block starts with its f16 scale d. With d = 1.0 (0x3C00), flipping bit 14
    // sets every exponent bit: 0x7C00 = +Inf, and all 256 weights of the block decode to
    // ±Inf or NaN.
    let mut e = Edit::open(&tiny("llama3", "f32"));
    let mut q = q4_k_tensor();
    q[144..146].copy_from_slice(&0x3C00u16.to_le_bytes());
    e.tensors = vec![(
        TensorDesc::new("blk.0.ffn_up.weight", vec![256, 4], GgmlType::Q4_K),
        q.clone(),
    )];
    let r = verify(&e.write("q4k-ok"), &Options::default());
    assert_eq!(check(&r, "structure", "finite values").status, Status::Pass);

    let bits = u16::from_le_bytes([q[144], q[145]]) ^ (1 << 14);
    assert_eq!(bits, 0x7C00);
    q[144..146].copy_from_slice(&bits.to_le_bytes());
    e.tensors[0].1 = q;
    let r = verify(&e.write("q4k-inf"), &Options::default());
    let c = check(&r, "structure", "finite values");
    assert_eq!(c.status, Status::Fail);
    for part in ["blk.0.ffn_up.weight", "q4_K", "block 1", "scale d = inf"] {
        assert!(c.detail.contains(part), "{part}: {}", c.detail);
    }
    assert_eq!(r.exit_code, 1);
}

#[test]
fn flipped_exponent_bit_in_a_q8_0_scale_fails_the_numbers() {
    // In a real file the scales are small, so the same flip gives a huge but finite scale
    // (×2^16): the scan cannot object, the logits can.
    let src = tiny("llama3", "q8_0");
    let opts = with_fixture("llama3");
    assert_control_passes(&src, &opts);
    let mut e = Edit::open(&src);
    let q = e.data("blk.0.attn_q.weight");
    let block = 5 * 34;
    let bits = u16::from_le_bytes([q[block], q[block + 1]]);
    assert_eq!(bits & (1 << 14), 0);
    q[block..block + 2].copy_from_slice(&(bits ^ (1 << 14)).to_le_bytes());
    let r = verify(&e.write("q8"), &opts);
    assert_eq!(check(&r, "structure", "finite values").status, Status::Pass);
    assert_eq!(
        layer_status(&r, "numbers"),
        Status::Fail,
        "{}",
        r.render_text()
    );
}

type EditFn = Box<dyn Fn(&mut Edit)>;

#[test]
fn metadata_that_contradicts_the_tensors_fails_structure() {
    let src = tiny("llama3", "f32");
    let cases: Vec<(&str, &str, EditFn)> = vec![
        (
            "special token outside the vocabulary",
            "tokenizer metadata",
            Box::new(|e| e.md.set("tokenizer.ggml.eos_token_id", 2000u32)),
        ),
        (
            "one token short",
            "vocab size",
            Box::new(|e| {
                for key in ["tokenizer.ggml.tokens", "tokenizer.ggml.token_type"] {
                    let v = match e.md.get(key).cloned() {
                        Some(Value::Array(Array::String(mut t))) => {
                            t.pop();
                            Array::String(t)
                        }
                        Some(Value::Array(Array::I32(mut t))) => {
                            t.pop();
                            Array::I32(t)
                        }
                        other => panic!("{key}: {other:?}"),
                    };
                    e.md.set(key, v);
                }
            }),
        ),
        (
            "KV head count",
            "attention shapes",
            Box::new(|e| e.md.set("llama.attention.head_count_kv", 4u32)),
        ),
        (
            "block count",
            "layer count",
            Box::new(|e| e.md.set("llama.block_count", 3u32)),
        ),
        (
            "embedding length",
            "embedding length",
            Box::new(|e| e.md.set("llama.embedding_length", 128u32)),
        ),
        (
            "feed-forward length",
            "feed-forward shapes",
            Box::new(|e| e.md.set("llama.feed_forward_length", 256u32)),
        ),
    ];
    for (what, check_name, edit) in cases {
        let mut e = Edit::open(&src);
        edit(&mut e);
        let r = verify(&e.write(&check_name.replace(' ', "-")), &Options::default());
        let c = check(&r, "structure", check_name);
        assert_eq!(c.status, Status::Fail, "{what}: {}", r.render_text());
        assert_eq!(r.exit_code, 1, "{what}");
    }
}

#[test]
fn chat_tokens_without_a_template_warn() {
    let mut e = Edit::open(&tiny("llama3", "f32"));
    e.md.remove("tokenizer.chat_template");
    let r = verify(&e.write("no-template"), &Options::default());
    let c = check(&r, "structure", "chat template");
    assert_eq!(c.status, Status::Warn);
    assert!(c.detail.contains("<|start_header_id|>"), "{}", c.detail);
    assert_eq!(r.exit_code, 0);
}

#[test]
fn a_file_that_is_not_gguf_fails_and_a_missing_one_cannot_run() {
    let junk = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("verify-junk.gguf");
    std::fs::write(&junk, b"not a gguf file at all").unwrap();
    let r = verify(&junk, &Options::default());
    let _ = std::fs::remove_file(&junk);
    assert_eq!(check(&r, "structure", "parse").status, Status::Fail);
    assert_eq!(r.exit_code, 1);
    let r = verify(Path::new("/nonexistent/model.gguf"), &Options::default());
    assert_eq!(r.exit_code, 2);
}
