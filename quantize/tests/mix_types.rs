//! Type choice and metadata layout against llama-quantize, for every run in fixtures/quant-mix/.
//!
//! No tensor data is needed: the plan (each tensor's type, the output order, the output KVs) is
//! compared with what llama-quantize wrote, for every preset, with and without an imatrix, and for
//! the option runs (--pure, --output-tensor-type, --token-embedding-type, --tensor-type,
//! --leave-output-tensor, requantizing).

mod mix_common;

use gguf::{GgmlType, Header};
use mix_common::{fixture_dir, kv_json, options_for, runs, Run};
use quantize::mix::{self, ModelInfo, TensorSpec};

fn input_header(model: &str) -> Header {
    let dir = fixture_dir(model);
    let header = std::fs::read(dir.join("input.header")).expect("input.header");
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("input.json")).expect("json"))
            .expect("input.json");
    let mut bytes = header;
    bytes.resize(
        bytes.len() + info["data_size"].as_u64().expect("size") as usize,
        0,
    );
    Header::parse(&bytes).expect("header parses")
}

/// The input tensors of a run: the F16 input, or the tensors (and types) of its source run.
fn input_specs(header: &Header, run: &Run, all: &[Run]) -> Vec<TensorSpec> {
    match &run.source_run {
        None => header
            .tensors
            .iter()
            .map(|t| TensorSpec {
                name: t.name.clone(),
                dims: t.dims.clone(),
                ggml_type: t.ggml_type,
            })
            .collect(),
        Some(src) => {
            let src = all.iter().find(|r| &r.name == src).expect("source run");
            src.tensors
                .iter()
                .map(|t| TensorSpec {
                    name: t.name.clone(),
                    dims: t.dims.clone(),
                    ggml_type: GgmlType::from_id(t.type_id).expect("type id"),
                })
                .collect()
        }
    }
}

fn check_model(model: &str) {
    let header = input_header(model);
    let info = ModelInfo::from_metadata(&header.metadata).expect("model info");
    let all = runs(model);
    let mut problems = Vec::new();
    let mut checked = 0;
    for run in all.iter().filter(|r| r.exit_code == 0) {
        let opts = options_for(model, run);
        let mut mix_opts = opts.mix.clone();
        mix_opts.has_imatrix = opts.imatrix.is_some();
        let specs = input_specs(&header, run, &all);
        let plan = match mix::plan(&info, &specs, opts.preset, &mix_opts) {
            Ok(p) => p,
            Err(e) => {
                problems.push(format!("{}: plan failed: {e}", run.name));
                continue;
            }
        };
        let ours: Vec<(String, u32, Vec<u64>)> = plan
            .tensors
            .iter()
            .map(|t| {
                let nd = mix::ggml_n_dims(&t.dims);
                (t.name.clone(), t.target_type.id(), t.dims[..nd].to_vec())
            })
            .collect();
        let theirs: Vec<(String, u32, Vec<u64>)> = run
            .tensors
            .iter()
            .map(|t| (t.name.clone(), t.type_id, t.dims.clone()))
            .collect();
        if ours.len() != theirs.len() {
            problems.push(format!(
                "{}: {} tensors planned, llama-quantize wrote {}",
                run.name,
                ours.len(),
                theirs.len()
            ));
        }
        for (o, t) in ours.iter().zip(&theirs) {
            if o != t {
                problems.push(format!(
                    "{}: ours {} {} {:?}, llama-quantize {} {} {:?}",
                    run.name,
                    o.0,
                    GgmlType::from_id(o.1).map_or("?", |t| t.name()),
                    o.2,
                    t.0,
                    GgmlType::from_id(t.1).map_or("?", |t| t.name()),
                    t.2
                ));
            }
        }
        let input_md = match &run.source_run {
            // The source run's output metadata is what the requantize run read.
            Some(src) => {
                let src_run = all.iter().find(|r| &r.name == src).expect("source run");
                let src_opts = options_for(model, src_run);
                mix::output_metadata(&header.metadata, src_opts.preset, None)
            }
            None => header.metadata.clone(),
        };
        let kv = opts.imatrix.as_ref().map(|i| i.imatrix.kv(&i.label));
        let md = mix::output_metadata(&input_md, opts.preset, kv.as_ref());
        let ours_kv = kv_json(&md);
        if ours_kv != run.kvs {
            let first = ours_kv
                .iter()
                .zip(&run.kvs)
                .position(|(a, b)| a != b)
                .unwrap_or(ours_kv.len().min(run.kvs.len()));
            problems.push(format!(
                "{}: metadata differs at entry {first}: ours {:?}, llama-quantize {:?} ({} vs {} keys)",
                run.name,
                ours_kv.get(first),
                run.kvs.get(first),
                ours_kv.len(),
                run.kvs.len()
            ));
        }
        checked += 1;
    }
    assert!(
        checked >= 57,
        "{model}: only {checked} successful runs in the fixture"
    );
    assert!(
        problems.is_empty(),
        "{model}: {} differences from llama-quantize:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn dense_types_and_metadata_match_llama_quantize() {
    check_model("dense");
}

#[test]
fn odd_shapes_types_and_metadata_match_llama_quantize() {
    check_model("odd");
}

#[test]
fn moe_types_and_metadata_match_llama_quantize() {
    check_model("moe");
}

/// The fixtures exercise the rules they are meant to: shape fallbacks down to F16 (odd), the
/// n_expert == 8 bumps (moe), tied embeddings, imatrix-only rules (dense Q4_0 ffn_down → Q4_1).
#[test]
fn fixtures_cover_the_interesting_rules() {
    let find = |model: &str, run: &str, tensor: &str| -> String {
        let r = runs(model)
            .into_iter()
            .find(|r| r.name == run)
            .unwrap_or_else(|| panic!("{model} run {run}"));
        r.tensors
            .iter()
            .find(|t| t.name == tensor)
            .unwrap_or_else(|| panic!("{model} {run} {tensor}"))
            .type_name
            .clone()
    };
    assert_eq!(find("odd", "Q4_K_M", "blk.0.ffn_down.weight"), "f16");
    assert_eq!(find("odd", "Q4_K_M", "blk.0.attn_q.weight"), "q5_0");
    assert_eq!(find("odd", "Q4_K_M", "token_embd.weight"), "q8_0");
    assert_eq!(find("odd", "Q2_K", "blk.0.attn_v.weight"), "q5_0");
    assert_eq!(find("moe", "Q4_K_M", "blk.0.attn_k.weight"), "q8_0");
    assert_eq!(find("moe", "Q4_K_M", "blk.0.attn_output.weight"), "q5_K");
    assert_eq!(
        find("dense", "Q4_0.imatrix-gguf", "blk.0.ffn_down.weight"),
        "q4_1"
    );
    assert_eq!(find("dense", "Q4_0", "blk.0.ffn_down.weight"), "q4_0");
    assert_eq!(find("dense", "Q4_K_M", "blk.3.ffn_down.weight"), "q6_K");
    assert_eq!(find("dense", "Q4_K_M", "blk.4.ffn_down.weight"), "q4_K");
}
