//! The tiny fixture models: llama.cpp's own GGUFs (fixtures/tiny/<short>/llamacpp/*.gguf),
//! evaluated by our runtime, against transformers' float32 logits
//! (fixtures/logits/tiny-<short>.safetensors, written by fixtures/make_fixture.py).
//!
//! f32 files must reproduce transformers to NMSE ≤ 1e-6 with the same argmax everywhere: at that
//! level any wrong rope layout, scaling, norm or attention detail shows (they give 1e-3 and up).
//! The lossy encodings get bounds a few times above what was measured when the test was written
//! (recorded next to each bound), so a regression in decoding or in the matmul shows too.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use gguf::{Array, GgufFile, TensorDesc, Value};
use runtime_check::{Comparison, LogitsFixture, Model, Report};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixture(name: &str) -> LogitsFixture {
    LogitsFixture::open(root().join(format!("fixtures/logits/{name}.safetensors"))).unwrap()
}

fn tiny_gguf(short: &str, outtype: &str) -> PathBuf {
    root().join(format!("fixtures/tiny/{short}/llamacpp/{outtype}.gguf"))
}

fn evaluate(gguf_path: &Path, fx: &LogitsFixture) -> Report {
    let file = GgufFile::open(gguf_path).unwrap();
    let model = Model::load(&file).unwrap();
    let mut cmp = Comparison::new();
    for p in &fx.prompts {
        let logits = model.forward(&p.tokens).unwrap();
        cmp.add(&p.logits, &logits).unwrap();
    }
    let r = cmp.report();
    eprintln!("{} vs {}: {r}", gguf_path.display(), fx.path.display());
    r
}

/// A GGUF written for one test, deleted when dropped.
struct TempGguf(PathBuf);

impl Drop for TempGguf {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl AsRef<Path> for TempGguf {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl std::ops::Deref for TempGguf {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

/// Copies a GGUF with some metadata keys set (tests that need a property llama.cpp's converter
/// did not write, or a smaller sliding window than the tiny configs have).
fn patched(src: &Path, tag: &str, edits: &[(&str, Value)]) -> TempGguf {
    patched_with(src, tag, edits, &[])
}

/// [`patched`], also replacing whole tensors by F32 vectors.
fn patched_with(
    src: &Path,
    tag: &str,
    edits: &[(&str, Value)],
    replace: &[(&str, Vec<f32>)],
) -> TempGguf {
    let file = GgufFile::open(src).unwrap();
    let mut md = file.metadata().clone();
    for (k, v) in edits {
        md.set(*k, v.clone());
    }
    let tensors: Vec<(TensorDesc, Vec<u8>)> = file
        .tensors()
        .iter()
        .map(|t| match replace.iter().find(|(n, _)| *n == t.name) {
            Some((_, v)) => (
                TensorDesc::new(t.name.clone(), vec![v.len() as u64], gguf::GgmlType::F32),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            None => (
                TensorDesc::new(t.name.clone(), t.dims.clone(), t.ggml_type),
                file.tensor_data(t).to_vec(),
            ),
        })
        .collect();
    // Tests run in parallel and may patch the same source: a counter keeps names apart.
    static SERIAL: AtomicUsize = AtomicUsize::new(0);
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "runtime-check-{tag}-{}-{}-{}",
        std::process::id(),
        SERIAL.fetch_add(1, Ordering::Relaxed),
        src.file_name().unwrap().to_string_lossy()
    ));
    gguf::write_file(&out, &md, &tensors).unwrap();
    TempGguf(out)
}

/// The tiny Gemma-3 config lists its layers as [sliding, full], but llama.cpp's converter does
/// not write the layer pattern and llama.cpp then assumes Gemma-3's period of 6 (layers 0–4 of
/// every 6 slide), which makes both tiny layers sliding: layer 1 gets the local rope (base 1e4,
/// no scaling) instead of the global one (base 1e6, linear ×8). llama.cpp's own log shows it
/// ("creating non-SWA KV cache ... 0 layers"). The GGUF is therefore a different model from the
/// HF checkpoint. To compare with transformers we add the pattern key llama.cpp reads,
/// `gemma3.attention.sliding_window_pattern`, as the converter would if it wrote `layer_types`.
fn gemma3_with_layer_types(src: &Path) -> TempGguf {
    patched(
        src,
        "gemma3-pattern",
        &[(
            "gemma3.attention.sliding_window_pattern",
            Value::Array(Array::Bool(vec![true, false])),
        )],
    )
}

/// The file a family is checked with: llama.cpp's own, except Gemma-3 (see above).
enum Gguf {
    Committed(PathBuf),
    Temp(TempGguf),
}

impl std::ops::Deref for Gguf {
    type Target = Path;
    fn deref(&self) -> &Path {
        match self {
            Gguf::Committed(p) => p,
            Gguf::Temp(t) => t,
        }
    }
}

fn gguf_for(short: &str, outtype: &str) -> Gguf {
    let p = tiny_gguf(short, outtype);
    if short == "gemma3" {
        Gguf::Temp(gemma3_with_layer_types(&p))
    } else {
        Gguf::Committed(p)
    }
}

fn assert_f32_exact(short: &str) {
    let r = evaluate(&gguf_for(short, "f32"), &fixture(&format!("tiny-{short}")));
    assert!(r.n_positions >= 20, "{short}: fixture too small");
    assert!(
        r.nmse <= 1e-6,
        "{short} f32: NMSE {:.3e} > 1e-6 ({r})",
        r.nmse
    );
    assert!(
        r.max_position_nmse <= 1e-6,
        "{short} f32: worst position NMSE {:.3e} ({r})",
        r.max_position_nmse
    );
    assert_eq!(r.top1, 1.0, "{short} f32: top-1 disagreement ({r})");
}

#[test]
fn llama3_f32_matches_transformers() {
    assert_f32_exact("llama3");
}

#[test]
fn mistral_f32_matches_transformers() {
    assert_f32_exact("mistral");
}

#[test]
fn qwen2_f32_matches_transformers() {
    assert_f32_exact("qwen2");
}

#[test]
fn qwen3_f32_matches_transformers() {
    assert_f32_exact("qwen3");
}

#[test]
fn gemma2_f32_matches_transformers() {
    assert_f32_exact("gemma2");
}

#[test]
fn gemma3_f32_matches_transformers_with_the_layer_pattern_key() {
    assert_f32_exact("gemma3");
}

#[test]
fn phi3_f32_matches_transformers() {
    assert_f32_exact("phi3");
}

#[test]
fn gpt2_f32_matches_transformers() {
    assert_f32_exact("gpt2");
}

/// Without the pattern key we evaluate the file as llama.cpp does (period 6: both layers slide),
/// which is measurably not the HF model; if this starts matching, the runtime no longer follows
/// llama.cpp's default (or the converter started writing the pattern).
#[test]
fn gemma3_without_pattern_key_follows_llama_cpp_not_layer_types() {
    let r = evaluate(&tiny_gguf("gemma3", "f32"), &fixture("tiny-gemma3"));
    assert!(r.nmse > 1e-3, "unexpected agreement: {r}");
}

const FAMILIES: [&str; 8] = [
    "llama3", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3", "gpt2",
];

/// Checkpoints saved in bfloat16: their bf16 GGUF holds the same numbers as the f32 one.
const BF16_CHECKPOINTS: [&str; 5] = ["llama3", "mistral", "qwen3", "gemma3", "phi3"];

#[test]
fn lossy_encodings_stay_within_measured_bounds() {
    // Measured maxima over the 8 families when written: f16 NMSE 4.2e-7 and bf16 2.6e-5
    // (gemma2, an f32 checkpoint; the bf16 checkpoints are exact in bf16 and f16), q8_0 NMSE
    // 4.7e-4 and mean KLD 5.9e-6 (gemma3), q8_0 top-1 down to 23/25 (gemma3; random-weight
    // models have nearly flat distributions, so argmax ties flip easily).
    let mut failures = Vec::new();
    for short in FAMILIES {
        let fx = fixture(&format!("tiny-{short}"));
        for (outtype, max_nmse, min_top1, max_mean_kld) in [
            ("f16", 4e-6, 1.0, 1e-7),
            ("bf16", 2e-4, 1.0, 4e-6),
            ("q8_0", 2e-3, 0.85, 4e-5),
        ] {
            let r = evaluate(&gguf_for(short, outtype), &fx);
            let exact = outtype == "bf16" && BF16_CHECKPOINTS.contains(&short);
            let max_nmse = if exact { 1e-6 } else { max_nmse };
            let min_top1 = if exact { 1.0 } else { min_top1 };
            if r.nmse > max_nmse || r.top1 < min_top1 || r.mean_kld > max_mean_kld {
                failures.push(format!("{short} {outtype}: {r}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Gemma's sliding window, exercised with a 4-token window on a 16-token prompt (the tiny configs
/// have windows of 4096 and 512, longer than any committed prompt). The fixtures were made with
/// `make_fixture.py --set sliding_window=4`; the GGUF gets the same change in its metadata.
fn sliding_window_case(short: &str) {
    let fx = fixture(&format!("tiny-{short}-swa4"));
    assert!(fx.config_overrides().contains("\"sliding_window\": 4"));
    let n = fx.prompts[0].tokens.len();
    assert!(n > 8, "prompt must be well past the window");
    let key = format!("{short}.attention.sliding_window");
    let base = gguf_for(short, "f32");
    let windowed = patched(&base, &format!("{short}-swa4"), &[(&key, Value::U32(4))]);
    let r = evaluate(&windowed, &fx);
    assert!(
        r.nmse <= 1e-6 && r.top1 == 1.0,
        "{short} with window 4: {r}"
    );
    // The window really changes the result: without it the same file misses the fixture.
    let r_full = evaluate(&base, &fx);
    assert!(
        r_full.nmse > 1e-4,
        "{short}: window made no difference: {r_full}"
    );
}

#[test]
fn gemma2_sliding_window_matches_transformers() {
    sliding_window_case("gemma2");
}

#[test]
fn gemma3_sliding_window_matches_transformers() {
    sliding_window_case("gemma3");
}

/// YaRN (ggml's ramp between interpolated and extrapolated angles, plus the 1 + 0.1 ln s
/// magnitude factor), against transformers' "yarn" rope with factor 4 from 64 positions. The
/// fixture was made with `--set rope_parameters=...`; the GGUF gets the keys the converter writes
/// for such a config (`rope.scaling.type`, `.factor`, `.original_context_length`).
#[test]
fn qwen2_yarn_matches_transformers() {
    let fx = fixture("tiny-qwen2-yarn");
    assert!(fx.config_overrides().contains("yarn"));
    let yarn = patched(
        &tiny_gguf("qwen2", "f32"),
        "qwen2-yarn",
        &[
            ("qwen2.rope.scaling.type", Value::String("yarn".into())),
            ("qwen2.rope.scaling.factor", Value::F32(4.0)),
            ("qwen2.rope.scaling.original_context_length", Value::U32(64)),
        ],
    );
    let r = evaluate(&yarn, &fx);
    assert!(r.nmse <= 1e-6 && r.top1 == 1.0, "yarn: {r}");
    let r_plain = evaluate(&tiny_gguf("qwen2", "f32"), &fx);
    assert!(
        r_plain.nmse > 100.0 * r.nmse,
        "yarn made no difference: {r_plain}"
    );
}

/// Phi-3 long-rope: the long factors apply when the context exceeds the original training
/// context. The fixture shrinks that context to 8 (`--set ... original_max_position_embeddings
/// = 8`), so transformers uses the long factors for the 16-token prompt and the short ones for
/// the 4-token prompt, with attention factor sqrt(1 + ln(131072 / 8) / ln 8) = 2.3804762 on
/// both; the GGUF gets the two keys the converter derives from that config.
#[test]
fn phi3_long_rope_factors_match_transformers() {
    let fx = fixture("tiny-phi3-long");
    assert_eq!(fx.prompts.len(), 2);
    assert!(fx.prompts[0].tokens.len() > 8 && fx.prompts[1].tokens.len() <= 8);
    let long = patched(
        &tiny_gguf("phi3", "f32"),
        "phi3-long",
        &[
            ("phi3.rope.scaling.original_context_length", Value::U32(8)),
            ("phi3.rope.scaling.attn_factor", Value::F32(2.380_476_2)),
        ],
    );
    let r = evaluate(&long, &fx);
    assert!(r.nmse <= 1e-6 && r.top1 == 1.0, "phi3 long rope: {r}");

    // A context of 16 (as `llama-cli -c 16` would have) switches the short prompt to the long
    // factors too, which transformers did not use for it. At positions 0..3 the angles differ
    // little (NMSE 4e-7 when written), but far above the 1e-13 of the exact evaluation.
    let file = GgufFile::open(&*long).unwrap();
    let mut model = Model::load(&file).unwrap();
    model.set_context_length(Some(16));
    let p = &fx.prompts[1];
    let r16 = runtime_check::compare(&p.logits, &model.forward(&p.tokens).unwrap()).unwrap();
    assert!(r16.nmse > 1e-9, "context length had no effect: {r16}");
}

/// Partial rotary embeddings (Phi-4-mini style, `partial_rotary_factor` 0.5): only the first 8
/// of each head's 16 values rotate, in NEOX pairs within those 8. The GGUF gets the converter's
/// `rope.dimension_count` and the 4-entry factor tensors of that config.
#[test]
fn phi3_partial_rotary_matches_transformers() {
    let fx = fixture("tiny-phi3-partial");
    assert!(fx
        .config_overrides()
        .contains("\"partial_rotary_factor\": 0.5"));
    let partial = patched_with(
        &tiny_gguf("phi3", "f32"),
        "phi3-partial",
        &[("phi3.rope.dimension_count", Value::U32(8))],
        &[
            ("rope_factors_long.weight", vec![1.0, 1.5, 3.0, 8.0]),
            ("rope_factors_short.weight", vec![1.0, 1.02, 1.1, 1.3]),
        ],
    );
    let r = evaluate(&partial, &fx);
    assert!(r.nmse <= 1e-6 && r.top1 == 1.0, "phi3 partial rotary: {r}");
    let r_full = evaluate(&tiny_gguf("phi3", "f32"), &fx);
    assert!(
        r_full.nmse > 1e-4,
        "partial rotary made no difference: {r_full}"
    );
}

#[test]
fn fixtures_record_their_provenance() {
    for short in FAMILIES {
        let fx = fixture(&format!("tiny-{short}"));
        assert_eq!(
            fx.metadata.get("dtype").map(String::as_str),
            Some("float32")
        );
        assert!(fx.metadata["source"].starts_with("transformers "));
        assert!(fx.prompts.len() >= 2 && fx.prompts.iter().all(|p| p.text.is_some()));
    }
}

#[test]
fn refuses_token_ids_outside_the_vocabulary() {
    let file = GgufFile::open(tiny_gguf("qwen2", "q8_0")).unwrap();
    let model = Model::load(&file).unwrap();
    let err = model.forward(&[1, 2, 5000]).unwrap_err().to_string();
    assert!(err.contains("5000") && err.contains("position 2"), "{err}");
    assert!(model.forward(&[]).is_err());
}

#[test]
fn refuses_gpt2_prompts_longer_than_its_positions() {
    let file = GgufFile::open(tiny_gguf("gpt2", "q8_0")).unwrap();
    let model = Model::load(&file).unwrap();
    let err = model.forward(&vec![1; 257]).unwrap_err().to_string();
    assert!(err.contains("256"), "{err}");
}

#[test]
fn names_missing_tensors_and_extra_tensors() {
    let src = tiny_gguf("qwen3", "f32");
    let file = GgufFile::open(&src).unwrap();
    let keep = |drop: &str| -> Vec<(TensorDesc, Vec<u8>)> {
        file.tensors()
            .iter()
            .filter(|t| t.name != drop)
            .map(|t| {
                (
                    TensorDesc::new(t.name.clone(), t.dims.clone(), t.ggml_type),
                    file.tensor_data(t).to_vec(),
                )
            })
            .collect()
    };
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let missing = TempGguf(tmp.join(format!("runtime-check-missing-{}.gguf", std::process::id())));
    gguf::write_file(&missing, file.metadata(), &keep("blk.1.attn_k_norm.weight")).unwrap();
    let f = GgufFile::open(&missing).unwrap();
    let err = Model::load(&f).err().unwrap().to_string();
    assert!(err.contains("blk.1.attn_k_norm.weight"), "{err}");

    let mut extra = keep("");
    extra.push((
        TensorDesc::new("blk.0.mystery.weight", vec![4], gguf::GgmlType::F32),
        vec![0u8; 16],
    ));
    let extra_path = TempGguf(tmp.join(format!("runtime-check-extra-{}.gguf", std::process::id())));
    gguf::write_file(&extra_path, file.metadata(), &extra).unwrap();
    let f = GgufFile::open(&extra_path).unwrap();
    let err = Model::load(&f).err().unwrap().to_string();
    assert!(err.contains("blk.0.mystery.weight"), "{err}");
}
