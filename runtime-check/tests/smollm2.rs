//! SmolLM2-135M-Instruct (a real trained model): llama.cpp's GGUFs against transformers' logits
//! (fixtures/logits/smollm2-135m.safetensors, 9 positions). The GGUFs are large and git-ignored
//! (made by fixtures/smollm2/make_refs.sh), so this test is ignored by default:
//! `cargo test -p runtime-check --release --test smollm2 -- --ignored --nocapture`.

use std::path::PathBuf;

use gguf::GgufFile;
use runtime_check::{Comparison, LogitsFixture, Model, Report};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn evaluate(name: &str) -> Report {
    let path = root()
        .join("fixtures/large/smollm2/llamacpp/from-f32")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: run fixtures/smollm2/make_refs.sh first",
        path.display()
    );
    let fx = LogitsFixture::open(root().join("fixtures/logits/smollm2-135m.safetensors")).unwrap();
    let file = GgufFile::open(&path).unwrap();
    let model = Model::load(&file).unwrap();
    let mut cmp = Comparison::new();
    for p in &fx.prompts {
        cmp.add(&p.logits, &model.forward(&p.tokens).unwrap())
            .unwrap();
    }
    let r = cmp.report();
    eprintln!("{name}: {r}");
    r
}

#[test]
#[ignore = "needs the git-ignored GGUFs under fixtures/large/smollm2"]
fn smollm2_matches_transformers() {
    // Measured when written: F32 NMSE 4.8e-12; F16 5.7e-7; Q8_0 3.0e-4 (KLD 3.0e-3);
    // Q4_K_M 1.5e-2 with 6/9 top-1 (KLD 0.12; most of its tensors are Q5_0, since 576-wide rows
    // cannot hold 256-value K-quant blocks).
    let r = evaluate("SmolLM2-135M-Instruct-F32.gguf");
    assert!(r.nmse <= 1e-6 && r.top1 == 1.0, "F32: {r}");
    let r = evaluate("SmolLM2-135M-Instruct-F16.gguf");
    assert!(r.nmse <= 5e-6 && r.top1 == 1.0, "F16: {r}");
    let r = evaluate("SmolLM2-135M-Instruct-Q8_0.gguf");
    assert!(r.nmse <= 2e-3 && r.mean_kld <= 2e-2, "Q8_0: {r}");
    let r = evaluate("SmolLM2-135M-Instruct-F16-Q4_K_M.gguf");
    assert!(r.nmse <= 5e-2 && r.mean_kld <= 0.3, "Q4_K_M: {r}");
}
