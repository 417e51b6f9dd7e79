//! `convert --quant P` in one pass equals `convert` followed by `quantize P`, byte for byte.
//!
//! `quantize` itself is checked against llama-quantize's own outputs (quantize/tests/mix_bytes.rs),
//! so this ties the one-pass path to llama.cpp's two-step path.

use std::path::{Path, PathBuf};

use convert::pipeline::QuantSpec;
use convert::{ConvertOptions, OutType};
use quantize::mix::{FileTypePreset, MixOptions};
use quantize::model::{quantize_file, QuantizeOptions};

fn model(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/tiny")
        .join(rel)
}

fn convert(dir: &Path, outtype: OutType, quant: Option<FileTypePreset>, out: &Path) -> PathBuf {
    let opts = ConvertOptions {
        outtype,
        outfile: Some(out.to_path_buf()),
        quant: quant.map(|preset| QuantSpec {
            preset,
            mix: MixOptions::default(),
            imatrix: None,
        }),
        ..ConvertOptions::default()
    };
    let plan = convert::plan(dir, &opts).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    plan.write(&|_| {})
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .output
}

#[test]
fn one_pass_equals_convert_then_quantize() {
    let tmp = std::env::temp_dir().join(format!("ggforge-onepass-{}", std::process::id()));
    let mut checked = 0;
    for (fam, outtype) in [
        ("llama3/Tiny-Llama-3-Instruct", OutType::Auto),
        ("qwen2/Tiny-Qwen2.5-Instruct", OutType::F16),
        ("gemma2/Tiny-Gemma-2-it", OutType::BF16),
        ("phi3/Tiny-Phi-3.5-mini-instruct", OutType::F32),
    ] {
        let dir = model(fam);
        let two = tmp.join(fam.replace('/', "_")).join("two");
        std::fs::create_dir_all(&two).unwrap();
        let intermediate = convert(&dir, outtype, None, &two);
        for preset in [
            FileTypePreset::Q4_K_M,
            FileTypePreset::Q8_0,
            FileTypePreset::Q4_0,
            FileTypePreset::Q6_K,
        ] {
            let one = tmp.join(fam.replace('/', "_")).join(preset.name());
            std::fs::create_dir_all(&one).unwrap();
            let one_pass = convert(&dir, outtype, Some(preset), &one);
            let two_step = two.join(format!("q-{}.gguf", preset.name()));
            quantize_file(&intermediate, &two_step, &QuantizeOptions::new(preset)).unwrap();
            let (a, b) = (
                std::fs::read(&one_pass).unwrap(),
                std::fs::read(&two_step).unwrap(),
            );
            assert!(
                a == b,
                "{fam} {}: one-pass output differs from convert + quantize",
                preset.name()
            );
            checked += 1;
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    assert_eq!(checked, 16);
}
