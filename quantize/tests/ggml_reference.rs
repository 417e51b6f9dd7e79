//! Bit-exactness against ggml itself.
//!
//! fixtures/quant-blocks/ holds outputs of ggml's own ggml-quants.c (built by gen.sh from
//! harness.c) for ordinary and adversarial rows, with and without an imatrix. Every byte we
//! produce must equal ggml's, and every float we decode must have the same bits.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use gguf::GgmlType;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/quant-blocks")
}

fn read(name: &str) -> Vec<u8> {
    let p = fixture_dir().join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("reading fixture {}: {e}", p.display()))
}

fn read_f32(name: &str) -> Vec<f32> {
    read(name)
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

struct Entry {
    kind: String,
    ty: GgmlType,
    variant: String,
    count: usize,
    bytes: String,
    deq: Option<String>,
}

struct Manifest {
    n_per_row: usize,
    inputs: Vec<f32>,
    imatrix: Vec<f32>,
    row_desc: BTreeMap<usize, String>,
    entries: Vec<Entry>,
}

fn manifest() -> Manifest {
    let text = String::from_utf8(read("manifest.txt")).expect("manifest is UTF-8");
    let mut m = Manifest {
        n_per_row: 0,
        inputs: Vec::new(),
        imatrix: Vec::new(),
        row_desc: BTreeMap::new(),
        entries: Vec::new(),
    };
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.first().copied() {
            Some("rows") => {
                m.n_per_row = f[3].parse().expect("n_per_row");
                m.inputs = read_f32(f[7]);
                m.imatrix = read_f32(f[9]);
                let rows: usize = f[1].parse().expect("rows");
                assert_eq!(m.inputs.len(), rows * m.n_per_row);
                assert_eq!(m.imatrix.len(), m.n_per_row);
            }
            Some("row") => {
                m.row_desc
                    .insert(f[1].parse().expect("row index"), f[2..].join(" "));
            }
            Some(kind @ ("quant" | "random" | "bytes")) => {
                let ty = GgmlType::from_name(f[1]).unwrap_or_else(|| panic!("type {}", f[1]));
                let (variant, count, bytes, deq) = match kind {
                    "random" => ("random".to_string(), f[2], f[3], Some(f[4])),
                    "bytes" => (f[2].to_string(), f[3], f[4], None),
                    _ => (f[2].to_string(), f[3], f[4], Some(f[5])),
                };
                m.entries.push(Entry {
                    kind: kind.to_string(),
                    ty,
                    variant,
                    count: count.parse().expect("count"),
                    bytes: bytes.to_string(),
                    deq: deq.map(str::to_string),
                });
            }
            _ => {}
        }
    }
    assert!(m.n_per_row > 0 && !m.entries.is_empty(), "empty manifest");
    m
}

/// Same bits, or both NaN (NaN payloads are not part of the contract).
fn same_f32(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

#[test]
fn quantized_bytes_equal_ggml() {
    let m = manifest();
    let mut failures = Vec::new();
    let mut checked = Vec::new();
    for e in m.entries.iter().filter(|e| e.kind == "quant") {
        if !quantize::can_quantize(e.ty) {
            continue;
        }
        let n = e.count * m.n_per_row;
        let imatrix = (e.variant == "imat").then_some(&m.imatrix[..]);
        let ours = quantize::quantize(e.ty, &m.inputs[..n], m.n_per_row, imatrix)
            .unwrap_or_else(|err| panic!("{} {}: {err}", e.ty, e.variant));
        let theirs = read(&e.bytes);
        assert_eq!(ours.len(), theirs.len(), "{} {} size", e.ty, e.variant);
        let row_bytes = theirs.len() / e.count;
        let bad_rows: Vec<usize> = (0..e.count)
            .filter(|r| {
                ours[r * row_bytes..(r + 1) * row_bytes]
                    != theirs[r * row_bytes..(r + 1) * row_bytes]
            })
            .collect();
        if bad_rows.is_empty() {
            checked.push(format!("{} {}", e.ty, e.variant));
        } else {
            for r in bad_rows {
                let off = (0..row_bytes)
                    .find(|&i| ours[r * row_bytes + i] != theirs[r * row_bytes + i])
                    .unwrap_or(0);
                failures.push(format!(
                    "{} {}: row {r} ({}) differs first at byte {off} of the row (block {})",
                    e.ty,
                    e.variant,
                    m.row_desc.get(&r).map(String::as_str).unwrap_or("?"),
                    off / e.ty.block_bytes()
                ));
            }
        }
    }
    eprintln!("bit-exact: {}", checked.join(", "));
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Every type the brief requires is covered with and without an imatrix.
    for name in [
        "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_K", "q3_K", "q4_K", "q5_K", "q6_K", "iq4_nl",
        "iq4_xs",
    ] {
        for v in ["plain", "imat"] {
            assert!(
                checked.contains(&format!("{name} {v}")),
                "{name} {v} not covered"
            );
        }
    }
}

#[test]
fn dequantized_floats_equal_ggml() {
    let m = manifest();
    let mut failures = Vec::new();
    let mut n_checked = 0;
    for e in m.entries.iter().filter(|e| e.deq.is_some()) {
        let bytes = read(&e.bytes);
        let Some(deq_name) = &e.deq else { continue };
        let theirs = read_f32(deq_name);
        let n = if e.kind == "random" {
            e.count
        } else {
            e.count * m.n_per_row
        };
        assert_eq!(theirs.len(), n, "{} {} element count", e.ty, e.variant);
        let ours = quantize::dequantize(e.ty, &bytes, n)
            .unwrap_or_else(|err| panic!("{} {}: {err}", e.ty, e.variant));
        if let Some(i) = (0..n).find(|&i| !same_f32(ours[i], theirs[i])) {
            failures.push(format!(
                "{} {}: element {i}: ours {:e} ({:#010x}), ggml {:e} ({:#010x})",
                e.ty,
                e.variant,
                ours[i],
                ours[i].to_bits(),
                theirs[i],
                theirs[i].to_bits()
            ));
        }
        n_checked += 1;
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Decoders for every block type in the table (random bytes) were exercised.
    let random: Vec<GgmlType> = m
        .entries
        .iter()
        .filter(|e| e.kind == "random")
        .map(|e| e.ty)
        .collect();
    for ty in GgmlType::ALL {
        let decode_only_plain = matches!(
            ty,
            GgmlType::F32
                | GgmlType::Q8_1
                | GgmlType::I8
                | GgmlType::I16
                | GgmlType::I32
                | GgmlType::I64
                | GgmlType::F64
        );
        assert!(
            decode_only_plain || random.contains(&ty),
            "{ty} decoder not covered"
        );
    }
    assert!(n_checked > 60, "only {n_checked} fixture files checked");
}

/// ggml has no Q8_1 decoder; check ours against the rows ggml's `quantize_row_q8_1_ref` encoded.
#[test]
fn q8_1_decodes_ggml_blocks() {
    let m = manifest();
    let e = m
        .entries
        .iter()
        .find(|e| e.kind == "bytes" && e.ty == GgmlType::Q8_1)
        .expect("q8_1 bytes in manifest");
    let bytes = read(&e.bytes);
    let n = e.count * m.n_per_row;
    let ours = quantize::dequantize(GgmlType::Q8_1, &bytes, n).expect("decode");
    // Rows 0-4 are well-behaved: every value within half a step of the input, plus the error of
    // storing d as fp16 (relative 2^-11, times |q| <= 127).
    for (b, blk) in bytes
        .chunks_exact(36)
        .take(5 * m.n_per_row / 32)
        .enumerate()
    {
        let d = quantize::f16_bits_to_f32(u16::from_le_bytes([blk[0], blk[1]]));
        let s = quantize::f16_bits_to_f32(u16::from_le_bytes([blk[2], blk[3]]));
        let sum: f32 = ours[32 * b..32 * b + 32].iter().sum();
        // s = d·Σq as stored by ggml; our decoded sum is the same up to fp16 rounding of s.
        assert!(
            (sum - s).abs() <= s.abs() * 2e-3 + d,
            "block {b}: Σ {sum} vs s {s}"
        );
        for j in 0..32 {
            let x = m.inputs[32 * b + j];
            let tol = d * 0.5 + d * 127.0 / 2048.0;
            assert!((ours[32 * b + j] - x).abs() <= tol, "block {b}[{j}]");
        }
    }
}
