//! Inputs llama-quantize refuses are refused here too, with an error that names the problem, and
//! no output file is left behind.

mod mix_common;

use gguf::{GgmlType, Header};
use mix_common::{build_input_bytes, check_runs, fixture_dir, input, run_ours, runs, Scratch};
use quantize::imatrix::{Imatrix, ImatrixError};
use quantize::mix::FileTypePreset;
use quantize::model::{quantize_file, ImatrixInput, QuantizeFileError, QuantizeOptions};

fn only_entry(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("scratch dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}

/// The runs where llama-quantize failed fail here too (the bytes tests skip their messages).
#[test]
fn llama_quantize_failures_fail_here_with_the_same_cause() {
    let all = runs("dense");
    let scratch = Scratch::new("failures");
    let mismatch = all
        .iter()
        .find(|r| r.name == "Q4_0.imatrix-mismatch")
        .expect("mismatch run");
    assert_ne!(mismatch.exit_code, 0);
    assert!(mismatch.errors[0]
        .contains("imatrix size 320 is different from tensor size 256 for blk.0.attn_k.weight"));
    match run_ours("dense", mismatch, &all, &scratch, None) {
        Err(e @ QuantizeFileError::Imatrix(ImatrixError::SizeMismatch { .. })) => {
            assert_eq!(
                e.to_string(),
                "imatrix entry 'blk.0.attn_k.weight' has 320 values, tensor has 256 columns"
            );
            assert!(e.is_input_error());
        }
        other => panic!("expected an imatrix size mismatch, got {other:?}"),
    }

    let refused = all
        .iter()
        .find(|r| r.name == "Q4_K_M.from-Q8_0.refused")
        .expect("refused run");
    assert!(refused.errors[0].contains("requantizing from type q8_0 is disabled"));
    match run_ours("dense", refused, &all, &scratch, None) {
        Err(e @ QuantizeFileError::Requantize { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("'output.weight'") && msg.contains("q8_0"),
                "{msg}"
            );
            assert!(msg.contains("--allow-requantize"), "{msg}");
        }
        other => panic!("expected a requantize refusal, got {other:?}"),
    }
    // Only the Q8_0 source we produced for the requantize run is in the scratch directory.
    assert_eq!(only_entry(&scratch.0), vec!["src-Q8_0.gguf".to_string()]);
    // And both runs are counted as agreed failures by the comparison helper.
    let (n, problems) = check_runs("dense", |r| r.exit_code != 0);
    assert_eq!((n, problems), (2, Vec::<String>::new()));
}

fn tensor_range(bytes: &[u8], name: &str) -> (std::ops::Range<usize>, GgmlType) {
    let h = Header::parse(bytes).expect("parse");
    let t = h.tensor(name).expect("tensor");
    let start = (h.data_offset + t.offset) as usize;
    (start..start + t.n_bytes() as usize, t.ggml_type)
}

#[test]
fn non_finite_input_is_refused_and_nothing_is_written() {
    let scratch = Scratch::new("nan");
    let mut bytes = build_input_bytes("dense");
    let (r, ty) = tensor_range(&bytes, "blk.2.ffn_up.weight");
    assert_eq!(ty, GgmlType::F16);
    // element 1000 := NaN (f16 0x7e00)
    bytes[r.start + 2000..r.start + 2002].copy_from_slice(&0x7e00u16.to_le_bytes());
    let (r, ty) = tensor_range(&bytes, "blk.5.ffn_norm.weight");
    assert_eq!(ty, GgmlType::F32);
    bytes[r.start + 12..r.start + 16].copy_from_slice(&f32::INFINITY.to_le_bytes());
    let inp = scratch.path("in.gguf");
    std::fs::write(&inp, &bytes).expect("write");

    for (preset, bad) in [
        // converted tensor
        (FileTypePreset::Q4_K_M, "blk.2.ffn_up.weight"),
        // copied tensor (F16 -> F16): llama-quantize validates everything it loads
        (FileTypePreset::F16, "blk.2.ffn_up.weight"),
    ] {
        let out = scratch.path("out.gguf");
        let e = quantize_file(&inp, &out, &QuantizeOptions::new(preset)).expect_err("NaN input");
        let msg = e.to_string();
        assert!(
            matches!(e, QuantizeFileError::InvalidInput { ref tensor, .. } if tensor == bad),
            "{msg}"
        );
        assert!(msg.contains(bad) && msg.contains("NaN"), "{msg}");
        assert!(e.is_input_error());
        assert!(!out.exists());
        assert_eq!(only_entry(&scratch.0), vec!["in.gguf".to_string()]);
    }
    // The F32 norm with Inf comes later in tensor order (layer 5): fix the NaN and it is reported.
    let (r, _) = tensor_range(&bytes, "blk.2.ffn_up.weight");
    bytes[r.start + 2000..r.start + 2002].copy_from_slice(&0u16.to_le_bytes());
    std::fs::write(&inp, &bytes).expect("write");
    let out = scratch.path("out.gguf");
    let e = quantize_file(&inp, &out, &QuantizeOptions::new(FileTypePreset::Q8_0))
        .expect_err("Inf input");
    assert!(e.to_string().contains("blk.5.ffn_norm.weight"), "{e}");
    assert!(e.to_string().contains("inf"), "{e}");
    assert!(!out.exists());
}

#[test]
fn values_beyond_f16_fail_validation_like_llama_quantize() {
    // F32 preset of an F16 model cannot overflow; an F32 input with a huge value converted to
    // F16 must fail ("quantized data validation failed" in llama-quantize).
    let scratch = Scratch::new("overflow");
    let q = scratch.path("f32.gguf");
    quantize_file(
        &input("odd"),
        &q,
        &QuantizeOptions::new(FileTypePreset::F32),
    )
    .expect("F32");
    let mut bytes = std::fs::read(&q).expect("read");
    let (r, ty) = tensor_range(&bytes, "blk.1.attn_q.weight");
    assert_eq!(ty, GgmlType::F32);
    bytes[r.start..r.start + 4].copy_from_slice(&1.0e6f32.to_le_bytes());
    std::fs::write(&q, &bytes).expect("write");
    let out = scratch.path("out.gguf");
    let e =
        quantize_file(&q, &out, &QuantizeOptions::new(FileTypePreset::F16)).expect_err("overflow");
    assert!(
        matches!(e, QuantizeFileError::InvalidOutput { ref tensor, ty: GgmlType::F16, .. } if tensor == "blk.1.attn_q.weight"),
        "{e}"
    );
    assert!(!out.exists());

    // A quantized type: a value whose block scale overflows f16 (1e12 / 127 > 65504) fails too,
    // naming the first element of its block (element 70 is in the block of elements 64..96).
    bytes[r.start..r.start + 4].copy_from_slice(&0.5f32.to_le_bytes());
    bytes[r.start + 70 * 4..r.start + 71 * 4].copy_from_slice(&1.0e12f32.to_le_bytes());
    std::fs::write(&q, &bytes).expect("write");
    let mut opts = QuantizeOptions::new(FileTypePreset::Q8_0);
    opts.mix.pure = true;
    let e = quantize_file(&q, &out, &opts).expect_err("scale overflow");
    assert!(
        matches!(e, QuantizeFileError::InvalidOutput { ref tensor, ty: GgmlType::Q8_0, .. } if tensor == "blk.1.attn_q.weight"),
        "{e}"
    );
    assert!(e.to_string().contains("element 64"), "{e}");
    assert!(!out.exists());
}

#[test]
fn same_input_and_output_is_refused() {
    let p = input("odd");
    let e = quantize_file(&p, &p, &QuantizeOptions::new(FileTypePreset::Q8_0)).expect_err("same");
    assert!(matches!(e, QuantizeFileError::SameFile(_)), "{e}");
}

#[test]
fn imatrix_for_another_model_is_refused() {
    let scratch = Scratch::new("imat-moe");
    let imatrix = Imatrix::load(&fixture_dir("odd").join("imatrix.dat")).expect("dat");
    let mut opts = QuantizeOptions::new(FileTypePreset::Q4_K_M);
    opts.imatrix = Some(ImatrixInput {
        imatrix,
        label: "imatrix.dat".into(),
    });
    let out = scratch.path("out.gguf");
    // The odd model's rows have 320 columns, the MoE's 256. (token_embd is exempt, as in
    // llama-quantize, and output.weight has no entry: the first mismatch is attn_k.)
    let e = quantize_file(&input("moe"), &out, &opts).expect_err("mismatch");
    assert_eq!(
        e.to_string(),
        "imatrix entry 'blk.0.attn_k.weight' has 320 values, tensor has 256 columns"
    );
    assert!(!out.exists());
}
