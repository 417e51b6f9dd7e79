//! Accuracy and determinism checks.
//!
//! The error thresholds are llama.cpp's `tests/test-quantize-fns.cpp` ("absolute quantization
//! error", metric sqrt(Σ diff²)/n in double over 4096 values `0.1 + 2·cos(i)`).

use gguf::GgmlType;
use quantize::{can_quantize, dequantize, quantize, quantize_into, QuantizeError};

const TEST_SIZE: usize = 32 * 128;

/// test-quantize-fns `generate_data`: `0.1 + amplitude*cosf(i + offset)` (double add, float cos).
fn generate_data(offset: f32, n: usize, amplitude: f32) -> Vec<f32> {
    (0..n)
        .map(|i| (0.1f64 + (amplitude * (i as f32 + offset).cos()) as f64) as f32)
        .collect()
}

fn array_rmse(a: &[f32], b: &[f32]) -> f32 {
    let sum: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| {
            let d = (*x - *y) as f64;
            d * d
        })
        .sum();
    (sum.sqrt() as f32) / a.len() as f32
}

/// `MAX_QUANTIZATION_TOTAL_ERROR*` per type, as selected in test-quantize-fns.
fn max_error(ty: GgmlType) -> f32 {
    use GgmlType::*;
    match ty {
        Q1_0 => 0.025,
        TQ1_0 | TQ2_0 | Q2_0 => 0.01,
        Q2_K | IQ2_S => 0.0075,
        Q3_K | IQ3_S => 0.0040,
        IQ3_XXS => 0.0050,
        NVFP4 => 0.0030,
        _ => 0.002,
    }
}

fn quantizable() -> Vec<GgmlType> {
    GgmlType::ALL
        .into_iter()
        .filter(|t| can_quantize(*t))
        .collect()
}

#[test]
fn quantization_error_within_llama_cpp_thresholds() {
    let data = generate_data(0.0, TEST_SIZE, 2.0);
    let mut report = Vec::new();
    for ty in quantizable() {
        let q = quantize(ty, &data, TEST_SIZE, None).expect("quantize");
        let back = dequantize(ty, &q, TEST_SIZE).expect("dequantize");
        let err = array_rmse(&data, &back);
        report.push(format!("{ty}: {err:.6}"));
        assert!(
            err < max_error(ty),
            "{ty}: error {err} >= {}",
            max_error(ty)
        );
    }
    eprintln!("{}", report.join(", "));
}

#[test]
fn imatrix_paths_meet_the_same_thresholds() {
    let data = generate_data(0.0, TEST_SIZE, 2.0);
    // Positive, uneven importance weights.
    let imatrix: Vec<f32> = (0..TEST_SIZE)
        .map(|i| 0.5 + ((i * 7919) % 101) as f32 / 50.0)
        .collect();
    for ty in quantizable()
        .into_iter()
        .filter(|t| quantize::uses_imatrix(*t))
    {
        let q = quantize(ty, &data, TEST_SIZE, Some(&imatrix)).expect("quantize");
        let plain = quantize(ty, &data, TEST_SIZE, None).expect("quantize");
        let back = dequantize(ty, &q, TEST_SIZE).expect("dequantize");
        let err = array_rmse(&data, &back);
        assert!(err < max_error(ty), "{ty} with imatrix: error {err}");
        // The imatrix really selects another algorithm (except for IQ4, where it only changes weights).
        if !matches!(ty, GgmlType::IQ4_NL | GgmlType::IQ4_XS) {
            assert_ne!(q, plain, "{ty}: imatrix ignored");
        }
    }
}

/// A reproducible pseudo-normal matrix (splitmix64 + Irwin–Hall).
fn matrix(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    let mut next = || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..rows * cols)
        .map(|_| ((0..12).map(|_| next()).sum::<f64>() - 6.0) as f32 * 0.05)
        .collect()
}

fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool")
        .install(f)
}

#[test]
fn output_is_independent_of_thread_count() {
    for (rows, cols) in [(67, 512), (9, 4096)] {
        let data = matrix(rows, cols, 42 + cols as u64);
        let imatrix: Vec<f32> = matrix(1, cols, 7).iter().map(|v| v.abs() + 0.01).collect();
        for ty in quantizable() {
            for imat in [None, Some(&imatrix[..])] {
                let one = in_pool(1, || quantize(ty, &data, cols, imat)).expect("quantize");
                let three = in_pool(3, || quantize(ty, &data, cols, imat)).expect("quantize");
                assert!(
                    one == three,
                    "{ty} ({rows}x{cols}, imatrix {}): 1 vs 3 threads",
                    imat.is_some()
                );
                // And each row alone gives the same bytes as in the batch (rows are independent).
                let rb = one.len() / rows;
                for r in [0, rows / 2, rows - 1] {
                    let single =
                        quantize(ty, &data[r * cols..(r + 1) * cols], cols, imat).expect("row");
                    assert_eq!(single, one[r * rb..(r + 1) * rb], "{ty}: row {r} alone");
                }
                let deq1 = in_pool(1, || dequantize(ty, &one, rows * cols)).expect("dequantize");
                let deq3 = in_pool(3, || dequantize(ty, &one, rows * cols)).expect("dequantize");
                assert!(
                    deq1.iter()
                        .zip(&deq3)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{ty}: dequantize differs between thread counts"
                );
            }
        }
    }
}

#[test]
fn argument_errors() {
    let data = vec![0.5f32; 512];
    assert_eq!(
        quantize(GgmlType::Q4_K, &data, 128, None),
        Err(QuantizeError::RowNotBlockMultiple {
            ty: GgmlType::Q4_K,
            n_per_row: 128,
            block: 256
        })
    );
    assert_eq!(
        quantize(GgmlType::Q8_0, &data, 96, None),
        Err(QuantizeError::PartialRow {
            len: 512,
            n_per_row: 96
        })
    );
    assert_eq!(
        quantize(GgmlType::Q8_0, &data, 0, None),
        Err(QuantizeError::EmptyRow)
    );
    assert_eq!(
        quantize(GgmlType::IQ2_XXS, &data, 256, None),
        Err(QuantizeError::CannotQuantize {
            ty: GgmlType::IQ2_XXS
        })
    );
    assert_eq!(
        quantize(GgmlType::Q4_0, &data, 256, Some(&[1.0; 255])),
        Err(QuantizeError::ImatrixLength {
            expected: 256,
            got: 255
        })
    );
    let mut w = vec![1.0f32; 256];
    w[17] = f32::NAN;
    assert!(matches!(
        quantize(GgmlType::Q4_0, &data, 256, Some(&w)),
        Err(QuantizeError::ImatrixNotFinite { column: 17, .. })
    ));
    let mut out = vec![0u8; 10];
    assert_eq!(
        quantize_into(GgmlType::Q8_0, &data, 512, None, &mut out),
        Err(QuantizeError::OutputLength {
            ty: GgmlType::Q8_0,
            expected: 544,
            got: 10
        })
    );
    assert_eq!(
        dequantize(GgmlType::Q8_0, &[0u8; 33], 32),
        Err(QuantizeError::InputLength {
            ty: GgmlType::Q8_0,
            n_elements: 32,
            expected: 34,
            got: 33
        })
    );
    assert_eq!(
        dequantize(GgmlType::Q6_K, &[0u8; 210], 100),
        Err(QuantizeError::ElementsNotBlockMultiple {
            ty: GgmlType::Q6_K,
            n_elements: 100,
            block: 256
        })
    );
    // Empty input is fine.
    assert_eq!(quantize(GgmlType::Q8_0, &[], 32, None), Ok(Vec::new()));
}

#[test]
fn plain_formats_convert_like_ggml() {
    let xs = [
        0.0f32,
        -0.0,
        1.0,
        -2.5,
        65504.0,
        65520.0,
        1e-8,
        3.0e38,
        f32::MIN_POSITIVE / 4.0,
    ];
    let f16 = quantize(GgmlType::F16, &xs, xs.len(), None).expect("f16");
    let want16: Vec<u8> = xs
        .iter()
        .flat_map(|x| quantize::f32_to_f16_bits(*x).to_le_bytes())
        .collect();
    assert_eq!(f16, want16);
    // 65520 is the first value that rounds to +Inf in f16, as ggml_compute_fp32_to_fp16 does.
    assert_eq!(quantize::f32_to_f16_bits(65520.0), 0x7C00);
    // Cross-check the software conversion against the `half` crate on finite values.
    for x in xs {
        assert_eq!(
            quantize::f32_to_f16_bits(x),
            half::f16::from_f32(x).to_bits(),
            "{x}"
        );
    }
    let bf = quantize(GgmlType::BF16, &xs, xs.len(), None).expect("bf16");
    assert_eq!(&bf[4..6], &0x3F80u16.to_le_bytes());
    let f32b = quantize(GgmlType::F32, &xs, xs.len(), None).expect("f32");
    let back = dequantize(GgmlType::F32, &f32b, xs.len()).expect("f32 back");
    assert!(back
        .iter()
        .zip(&xs)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
}

#[test]
fn integer_and_f64_types_decode_by_cast() {
    let i8s = [0x80u8, 0xFF, 0x7F];
    assert_eq!(
        dequantize(GgmlType::I8, &i8s, 3).expect("i8"),
        vec![-128.0, -1.0, 127.0]
    );
    let i16s: Vec<u8> = [-300i16, 7].iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(
        dequantize(GgmlType::I16, &i16s, 2).expect("i16"),
        vec![-300.0, 7.0]
    );
    let i32s: Vec<u8> = [-70000i32, 16777217]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    assert_eq!(
        dequantize(GgmlType::I32, &i32s, 2).expect("i32"),
        vec![-70000.0, 16777216.0]
    );
    let i64s: Vec<u8> = [i64::MIN, 5].iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(
        dequantize(GgmlType::I64, &i64s, 2).expect("i64"),
        vec![-9.223372e18, 5.0]
    );
    let f64s: Vec<u8> = [0.1f64, -1e300]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    assert_eq!(
        dequantize(GgmlType::F64, &f64s, 2).expect("f64"),
        vec![0.1f32, f32::NEG_INFINITY]
    );
}
