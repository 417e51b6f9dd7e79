//! The structure layer: everything that can be checked from the file alone.
//!
//! These checks catch what a converter gets wrong without any reference: a header llama.cpp
//! cannot parse, metadata that contradicts the tensors it describes (a vocabulary one token
//! short of the embedding, a head count that does not divide the projection, a layer missing
//! from `block_count`), special ids pointing outside the vocabulary, a pre-tokenizer name
//! llama.cpp refuses, and NaN/Inf values — most often a corrupted f16 block scale, which turns a
//! whole block of weights into Inf and every logit after it into NaN.

use std::collections::BTreeSet;
use std::path::Path;

use gguf::{
    Array, GgmlType, GgufModel, Metadata, ReadError, SplitError, SplitModel, TensorInfo, Value,
};
use rayon::prelude::*;

use super::thresholds::FileTypeInfo;
use super::{Check, Layer, Status};
use crate::tokcheck::CHAT_TOKEN_TEXTS;

/// The structure layer's result, plus what the other layers need.
pub struct StructureOutcome {
    pub layer: Layer,
    /// The model opened with the hardened reader (`None` when it does not parse): one file, or
    /// every shard of a split model.
    pub file: Option<SplitModel>,
    pub architecture: Option<String>,
    pub file_type: Option<FileTypeInfo>,
}

/// The "parse" check for a model that could not be opened. A file that cannot be read, or a
/// missing shard, leaves the verdict open (Error); bytes the hardened reader rejects, or shards
/// that do not form one model, are a wrong file (Fail).
fn open_failure(path: &Path, e: &SplitError) -> Check {
    let (status, detail) = match e {
        SplitError::Read(ReadError::Io { .. }) | SplitError::MissingShard { .. } => {
            (Status::Error, e.to_string())
        }
        SplitError::Read(ReadError::Parse { path: p, source }) if p == path => (
            Status::Fail,
            format!("the hardened reader rejects the file: {source}"),
        ),
        SplitError::Read(ReadError::Parse { path: p, source }) => (
            Status::Fail,
            format!(
                "the hardened reader rejects shard {}: {source}",
                p.display()
            ),
        ),
        _ => (
            Status::Fail,
            format!("the shards do not form one model: {e}"),
        ),
    };
    Check::new("parse", status, detail)
}

/// Runs every structure check. `scan` reads every tensor for NaN/Inf. A shard of a split model
/// is checked as the whole model (the first shard's metadata, every shard's tensors), so the
/// results equal those of the unsplit file.
pub fn run(path: &Path, scan: bool) -> StructureOutcome {
    let mut layer = Layer::new("structure");
    let mut out = StructureOutcome {
        layer: Layer::new("structure"),
        file: None,
        architecture: None,
        file_type: None,
    };
    // The container checks only: broken tokenizer metadata is reported below as a check of its
    // own rather than as a file that does not parse.
    let model = match SplitModel::open_container(path) {
        Ok(m) => m,
        Err(e) => {
            layer.push(open_failure(path, &e));
            out.layer = layer;
            return out;
        }
    };
    let split = if model.is_split() {
        format!(", split into {} files", model.files().len())
    } else {
        String::new()
    };
    let tensors = model.tensors();
    layer.push(Check::new(
        "parse",
        Status::Pass,
        format!(
            "GGUF v{}, {} tensors, {} metadata keys, {} bytes{split}",
            model.first().header.version,
            tensors.len(),
            model.metadata().len(),
            model.total_len()
        ),
    ));
    let md = model.metadata();
    out.architecture = md.get_str("general.architecture").map(str::to_string);
    out.file_type = Some(FileTypeInfo::of(md, tensors));

    layer.push(tokenizer_metadata(md));
    let arch = architecture(md);
    let arch_name = out.architecture.clone();
    layer.push(arch);
    if let Some(a) = &arch_name {
        let facts = Facts::new(md, a, tensors);
        layer.push(facts.vocab_size());
        layer.push(facts.embedding_length());
        layer.push(facts.layer_count());
        layer.push(facts.attention_shapes());
        layer.push(facts.ffn_shapes());
    }
    layer.push(pre_tokenizer(md));
    layer.push(chat_template(md));
    if scan {
        layer.push(finite_values(&model));
    } else {
        layer.push(Check::new(
            "finite values",
            Status::Skip,
            "not scanned (--no-scan)",
        ));
    }
    drop(model);

    // The other layers use the full reader, which also runs the tokenizer-metadata checks, so a
    // file that failed them is not evaluated further.
    match SplitModel::open(path) {
        Ok(f) => out.file = Some(f),
        Err(e) => {
            if layer.status != Status::Fail {
                layer.push(Check::new("open", Status::Fail, e.to_string()));
            }
        }
    }
    out.layer = layer;
    out
}

/// `gguf::vocab_check`: array lengths and types, token types, special ids inside the vocabulary.
fn tokenizer_metadata(md: &Metadata) -> Check {
    const NAME: &str = "tokenizer metadata";
    if md.get_str("tokenizer.ggml.model").is_none() {
        return Check::new(
            NAME,
            Status::Fail,
            "tokenizer.ggml.model is missing: llama.cpp cannot load a model without a tokenizer",
        );
    }
    if let Err(e) = gguf::vocab_check::check(md) {
        return Check::new(NAME, Status::Fail, e.to_string());
    }
    let n = match md.get("tokenizer.ggml.tokens") {
        Some(Value::Array(a)) => a.len(),
        _ => 0,
    };
    let specials: Vec<String> = gguf::vocab_check::SPECIAL_ID_KEYS
        .iter()
        .filter_map(|k| {
            md.get_u64(k).map(|id| {
                let short = k
                    .trim_start_matches("tokenizer.ggml.")
                    .trim_end_matches("_token_id");
                format!("{short}={id}")
            })
        })
        .collect();
    Check::new(
        NAME,
        Status::Pass,
        format!(
            "{n} tokens ({}), arrays consistent; special ids inside the vocabulary: {}",
            md.get_str("tokenizer.ggml.model").unwrap_or("?"),
            if specials.is_empty() {
                "none set".to_string()
            } else {
                specials.join(", ")
            }
        ),
    )
}

fn architecture(md: &Metadata) -> Check {
    match md.get("general.architecture") {
        Some(Value::String(a)) => Check::new("architecture", Status::Pass, a.clone()),
        Some(v) => Check::new(
            "architecture",
            Status::Fail,
            format!("general.architecture is {v}, expected a string"),
        ),
        None => Check::new(
            "architecture",
            Status::Fail,
            "general.architecture is missing: llama.cpp cannot pick a graph",
        ),
    }
}

/// Architectures whose attention and feed-forward tensors follow the standard layout these
/// checks know; for others the shape checks are skipped rather than guessed.
const STANDARD_ARCHS: &[&str] = &[
    "llama",
    "qwen2",
    "qwen3",
    "gemma",
    "gemma2",
    "gemma3",
    "phi3",
    "gpt2",
    "starcoder2",
    "granite",
    "olmo2",
    "mistral3",
];

/// The metadata values and tensor shapes the consistency checks compare.
struct Facts<'a> {
    md: &'a Metadata,
    arch: &'a str,
    tensors: &'a [TensorInfo],
}

/// A scalar key or a per-layer array, expanded to one value per layer.
fn per_layer(md: &Metadata, key: &str, n_layer: usize) -> Option<Vec<u64>> {
    match md.get(key)? {
        Value::Array(Array::U32(v)) => Some(v.iter().map(|&x| x as u64).collect()),
        Value::Array(Array::I32(v)) => Some(v.iter().map(|&x| x.max(0) as u64).collect()),
        Value::Array(Array::U64(v)) => Some(v.clone()),
        v => v.as_u64().map(|x| vec![x; n_layer]),
    }
}

impl<'a> Facts<'a> {
    fn new(md: &'a Metadata, arch: &'a str, tensors: &'a [TensorInfo]) -> Facts<'a> {
        Facts { md, arch, tensors }
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.arch)
    }

    fn u64(&self, suffix: &str) -> Option<u64> {
        self.md.get_u64(&self.key(suffix))
    }

    fn tensor(&self, name: &str) -> Option<&'a TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    fn n_embd(&self) -> Option<u64> {
        self.u64("embedding_length")
    }

    fn vocab_size(&self) -> Check {
        const NAME: &str = "vocab size";
        let n_tokens = match self.md.get("tokenizer.ggml.tokens") {
            Some(Value::Array(a)) => Some(a.len() as u64),
            _ => None,
        };
        let Some(embd) = self.tensor("token_embd.weight") else {
            return Check::new(NAME, Status::Skip, "no token_embd.weight");
        };
        let rows = embd.dims.get(1).copied().unwrap_or(0);
        let mut problems = Vec::new();
        if let Some(n) = n_tokens {
            if n != rows {
                problems.push(format!(
                    "tokenizer.ggml.tokens has {n} entries but token_embd.weight has {rows} rows"
                ));
            }
        }
        if let Some(v) = self.u64("vocab_size") {
            if v != rows {
                problems.push(format!(
                    "{} = {v} but token_embd.weight has {rows} rows",
                    self.key("vocab_size")
                ));
            }
        }
        if let Some(out) = self.tensor("output.weight") {
            let o = out.dims.get(1).copied().unwrap_or(0);
            if o != rows {
                problems.push(format!(
                    "output.weight has {o} rows, token_embd.weight {rows}"
                ));
            }
        }
        if problems.is_empty() {
            Check::new(
                NAME,
                Status::Pass,
                format!(
                    "{rows} tokens = token_embd rows{}",
                    if self.tensor("output.weight").is_some() {
                        " = output rows"
                    } else {
                        " (output tied to the embeddings)"
                    }
                ),
            )
        } else {
            Check::new(NAME, Status::Fail, problems.join("; "))
        }
    }

    fn embedding_length(&self) -> Check {
        const NAME: &str = "embedding length";
        let Some(n_embd) = self.n_embd() else {
            return Check::new(
                NAME,
                Status::Fail,
                format!("{} is missing", self.key("embedding_length")),
            );
        };
        let Some(embd) = self.tensor("token_embd.weight") else {
            return Check::new(NAME, Status::Skip, "no token_embd.weight");
        };
        if embd.dims.first() == Some(&n_embd) {
            Check::new(
                NAME,
                Status::Pass,
                format!("{n_embd} = token_embd row length"),
            )
        } else {
            Check::new(
                NAME,
                Status::Fail,
                format!(
                    "{} = {n_embd} but token_embd.weight rows have {} values",
                    self.key("embedding_length"),
                    embd.dims.first().copied().unwrap_or(0)
                ),
            )
        }
    }

    fn layer_indices(&self) -> BTreeSet<u64> {
        self.tensors
            .iter()
            .filter_map(|t| {
                let rest = t.name.strip_prefix("blk.")?;
                rest.split('.').next()?.parse::<u64>().ok()
            })
            .collect()
    }

    fn layer_count(&self) -> Check {
        const NAME: &str = "layer count";
        let Some(n) = self.u64("block_count") else {
            return Check::new(
                NAME,
                Status::Fail,
                format!("{} is missing", self.key("block_count")),
            );
        };
        if n > self.tensors.len() as u64 {
            return Check::new(
                NAME,
                Status::Fail,
                format!(
                    "block_count = {n}, but the file has only {} tensors",
                    self.tensors.len()
                ),
            );
        }
        let seen = self.layer_indices();
        let missing: Vec<u64> = (0..n).filter(|i| !seen.contains(i)).collect();
        let extra: Vec<u64> = seen.iter().copied().filter(|&i| i >= n).collect();
        if missing.is_empty() && extra.is_empty() {
            Check::new(
                NAME,
                Status::Pass,
                format!("{n} layers, blk.0 to blk.{}", n.saturating_sub(1)),
            )
        } else {
            let mut p = Vec::new();
            if !missing.is_empty() {
                p.push(format!("no tensors for layers {missing:?}"));
            }
            if !extra.is_empty() {
                p.push(format!("tensors for layers {extra:?} beyond block_count"));
            }
            Check::new(
                NAME,
                Status::Fail,
                format!("block_count = {n}, but {}", p.join(" and ")),
            )
        }
    }

    fn standard(&self) -> bool {
        STANDARD_ARCHS.contains(&self.arch)
    }

    /// What both shape checks need: a standard architecture, `embedding_length` and a plausible
    /// `block_count`; otherwise the check named `name` is skipped, with the reason.
    fn shape_basics(&self, name: &'static str) -> Result<(u64, usize), Check> {
        if !self.standard() {
            return Err(Check::new(
                name,
                Status::Skip,
                format!("no shape rules for architecture '{}'", self.arch),
            ));
        }
        let (Some(n_embd), Some(n_layer)) = (self.n_embd(), self.u64("block_count")) else {
            return Err(Check::new(
                name,
                Status::Skip,
                "embedding_length or block_count missing",
            ));
        };
        if n_layer > self.tensors.len() as u64 {
            return Err(Check::new(
                name,
                Status::Skip,
                "block_count is implausible (see layer count)",
            ));
        }
        Ok((n_embd, n_layer as usize))
    }

    fn attention_shapes(&self) -> Check {
        const NAME: &str = "attention shapes";
        let (n_embd, n_layer) = match self.shape_basics(NAME) {
            Ok(v) => v,
            Err(skip) => return skip,
        };
        let Some(n_head) = per_layer(self.md, &self.key("attention.head_count"), n_layer) else {
            return Check::new(
                NAME,
                Status::Fail,
                format!("{} is missing", self.key("attention.head_count")),
            );
        };
        let n_head_kv = per_layer(self.md, &self.key("attention.head_count_kv"), n_layer)
            .unwrap_or_else(|| n_head.clone());
        if n_head.len() != n_layer || n_head_kv.len() != n_layer {
            return Check::new(
                NAME,
                Status::Fail,
                format!(
                    "per-layer head counts have {} / {} entries for {n_layer} layers",
                    n_head.len(),
                    n_head_kv.len()
                ),
            );
        }
        let mut problems = Vec::new();
        let mut summary = String::new();
        for il in 0..n_layer {
            let (nh, nkv) = (n_head[il], n_head_kv[il]);
            if nh == 0 {
                continue;
            }
            if nkv == 0 || nh % nkv != 0 {
                problems.push(format!(
                    "layer {il}: head_count {nh} is not a multiple of head_count_kv {nkv}"
                ));
                continue;
            }
            let hd_k = self.u64("attention.key_length").unwrap_or(n_embd / nh);
            let hd_v = self.u64("attention.value_length").unwrap_or(n_embd / nh);
            if il == 0 {
                summary = format!("{nh} heads, {nkv} KV heads, head dim {hd_k}");
                if let Some(rot) = self.u64("rope.dimension_count") {
                    if rot > hd_k || rot % 2 != 0 {
                        problems.push(format!(
                            "rope.dimension_count {rot} must be even and at most the head dim {hd_k}"
                        ));
                    }
                }
            }
            let p = |s: &str| format!("blk.{il}.{s}");
            let require_shape = |problems: &mut Vec<String>, name: String, dims: [u64; 2]| {
                if let Some(t) = self.tensor(&name) {
                    if t.dims != dims {
                        problems.push(format!(
                            "{name} is {:?}, expected {dims:?} from the head counts",
                            t.dims
                        ));
                    }
                }
            };
            let pr = &mut problems;
            if self.tensor(&p("attn_qkv.weight")).is_some() {
                require_shape(
                    pr,
                    p("attn_qkv.weight"),
                    [
                        n_embd,
                        nh.saturating_mul(hd_k)
                            .saturating_add(nkv.saturating_mul(hd_k.saturating_add(hd_v))),
                    ],
                );
            } else {
                if self.tensor(&p("attn_q.weight")).is_none() {
                    pr.push(format!("layer {il} has neither attn_q nor attn_qkv"));
                }
                require_shape(pr, p("attn_q.weight"), [n_embd, nh.saturating_mul(hd_k)]);
                require_shape(pr, p("attn_k.weight"), [n_embd, nkv.saturating_mul(hd_k)]);
                require_shape(pr, p("attn_v.weight"), [n_embd, nkv.saturating_mul(hd_v)]);
            }
            require_shape(
                pr,
                p("attn_output.weight"),
                [nh.saturating_mul(hd_v), n_embd],
            );
            for norm in ["attn_q_norm.weight", "attn_k_norm.weight"] {
                if let Some(t) = self.tensor(&p(norm)) {
                    if t.dims != [hd_k] {
                        problems.push(format!("{} is {:?}, expected [{hd_k}]", p(norm), t.dims));
                    }
                }
            }
        }
        if problems.is_empty() {
            Check::new(
                NAME,
                Status::Pass,
                format!("{summary}: Q/K/V/output shapes agree in all {n_layer} layers"),
            )
        } else {
            Check::new(NAME, Status::Fail, summarize(problems))
        }
    }

    fn ffn_shapes(&self) -> Check {
        const NAME: &str = "feed-forward shapes";
        let (n_embd, n_layer) = match self.shape_basics(NAME) {
            Ok(v) => v,
            Err(skip) => return skip,
        };
        let Some(n_ff) = per_layer(self.md, &self.key("feed_forward_length"), n_layer) else {
            return Check::new(
                NAME,
                Status::Fail,
                format!("{} is missing", self.key("feed_forward_length")),
            );
        };
        if n_ff.len() != n_layer {
            return Check::new(
                NAME,
                Status::Fail,
                format!(
                    "feed_forward_length has {} entries for {n_layer} layers",
                    n_ff.len()
                ),
            );
        }
        let mut problems = Vec::new();
        for (il, &ff) in n_ff.iter().enumerate() {
            let p = |s: &str| format!("blk.{il}.{s}");
            let gate = self.tensor(&p("ffn_gate.weight"));
            if let Some(t) = gate {
                if t.dims != [n_embd, ff] {
                    problems.push(format!(
                        "{} is {:?}, expected [{n_embd}, {ff}]",
                        p("ffn_gate.weight"),
                        t.dims
                    ));
                }
            }
            if let Some(t) = self.tensor(&p("ffn_up.weight")) {
                // Without a gate tensor, a gated FFN stores [gate | up] in ffn_up (Phi-3).
                let fused = gate.is_none() && t.dims == [n_embd, ff.saturating_mul(2)];
                if t.dims != [n_embd, ff] && !fused {
                    problems.push(format!(
                        "{} is {:?}, expected [{n_embd}, {ff}]",
                        p("ffn_up.weight"),
                        t.dims
                    ));
                }
            }
            if let Some(t) = self.tensor(&p("ffn_down.weight")) {
                if t.dims != [ff, n_embd] {
                    problems.push(format!(
                        "{} is {:?}, expected [{ff}, {n_embd}]",
                        p("ffn_down.weight"),
                        t.dims
                    ));
                }
            }
        }
        if problems.is_empty() {
            Check::new(
                NAME,
                Status::Pass,
                format!("feed_forward_length {} matches ffn_gate/up/down", n_ff[0]),
            )
        } else {
            Check::new(NAME, Status::Fail, summarize(problems))
        }
    }
}

fn summarize(mut problems: Vec<String>) -> String {
    let n = problems.len();
    if n > 3 {
        problems.truncate(3);
        problems.push(format!("… {} more", n - 3));
    }
    problems.join("; ")
}

/// A gpt2 (BPE) vocabulary needs a pre-tokenizer name llama.cpp knows.
fn pre_tokenizer(md: &Metadata) -> Check {
    const NAME: &str = "pre-tokenizer";
    if md.get_str("tokenizer.ggml.model") != Some("gpt2") {
        return Check::new(NAME, Status::Skip, "not a BPE (gpt2) vocabulary");
    }
    match md.get_str("tokenizer.ggml.pre") {
        None => Check::new(
            NAME,
            Status::Warn,
            "tokenizer.ggml.pre is missing: llama.cpp falls back to 'default' and warns that generation quality will be degraded",
        ),
        Some(p) if convert::vocab::pre::is_known_name(p) => {
            Check::new(NAME, Status::Pass, format!("'{p}' is a pre-tokenizer llama.cpp implements"))
        }
        Some(p) => Check::new(
            NAME,
            Status::Fail,
            format!("tokenizer.ggml.pre = '{p}' is not a name llama.cpp knows: it refuses to load the file"),
        ),
    }
}

/// Chat-format tokens without a template make chat front-ends fall back to a generic format.
fn chat_template(md: &Metadata) -> Check {
    const NAME: &str = "chat template";
    let tokens = match md.get("tokenizer.ggml.tokens") {
        Some(Value::Array(Array::String(t))) => t,
        _ => return Check::new(NAME, Status::Skip, "no vocabulary"),
    };
    let found: Vec<&str> = tokens
        .iter()
        .filter(|t| CHAT_TOKEN_TEXTS.contains(&t.as_str()))
        .map(String::as_str)
        .take(3)
        .collect();
    match (md.get_str("tokenizer.chat_template"), found.is_empty()) {
        (Some(t), _) => Check::new(NAME, Status::Pass, format!("present ({} bytes)", t.len())),
        (None, true) => Check::new(
            NAME,
            Status::Pass,
            "none, and no chat-format tokens in the vocabulary",
        ),
        (None, false) => Check::new(
            NAME,
            Status::Warn,
            format!(
                "the vocabulary has chat tokens ({}) but tokenizer.chat_template is missing",
                found.join(", ")
            ),
        ),
    }
}

/// Where the f16 scales of a block format sit: (block bytes, [(offset, field name)]).
fn scale_layout(ty: GgmlType) -> Option<(usize, &'static [(usize, &'static str)])> {
    use GgmlType::*;
    let l: (usize, &'static [(usize, &'static str)]) = match ty {
        Q4_0 => (18, &[(0, "d")]),
        Q4_1 => (20, &[(0, "d"), (2, "m")]),
        Q5_0 => (22, &[(0, "d")]),
        Q5_1 => (24, &[(0, "d"), (2, "m")]),
        Q8_0 => (34, &[(0, "d")]),
        Q2_K => (84, &[(80, "d"), (82, "dmin")]),
        Q3_K => (110, &[(108, "d")]),
        Q4_K => (144, &[(0, "d"), (2, "dmin")]),
        Q5_K => (176, &[(0, "d"), (2, "dmin")]),
        Q6_K => (210, &[(208, "d")]),
        IQ4_NL => (18, &[(0, "d")]),
        IQ4_XS => (136, &[(0, "d")]),
        _ => return None,
    };
    // Guard against a table drifting from the type definitions.
    (ty.block_bytes() == l.0).then_some(l)
}

fn f16_finite(bits: u16) -> bool {
    bits & 0x7C00 != 0x7C00
}

/// The first non-finite value of a tensor, described for a human.
fn scan_tensor(t: &TensorInfo, data: &[u8]) -> Result<Option<String>, String> {
    let bad_count =
        |n: usize, first: String| Some(format!("{first} ({n} non-finite in this tensor)"));
    match t.ggml_type {
        GgmlType::F32 => {
            let mut first = None;
            let mut n = 0usize;
            for (i, c) in data.chunks_exact(4).enumerate() {
                let v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                if !v.is_finite() {
                    n += 1;
                    first.get_or_insert_with(|| format!("element {i} = {v}"));
                }
            }
            Ok(first.and_then(|f| bad_count(n, f)))
        }
        GgmlType::F16 | GgmlType::BF16 => {
            let mask = if t.ggml_type == GgmlType::F16 {
                0x7C00
            } else {
                0x7F80
            };
            let mut first = None;
            let mut n = 0usize;
            for (i, c) in data.chunks_exact(2).enumerate() {
                let bits = u16::from_le_bytes([c[0], c[1]]);
                if bits & mask == mask {
                    n += 1;
                    first.get_or_insert_with(|| {
                        let v = if t.ggml_type == GgmlType::F16 {
                            quantize::f16_bits_to_f32(bits)
                        } else {
                            quantize::bf16_bits_to_f32(bits)
                        };
                        format!("element {i} = {v}")
                    });
                }
            }
            Ok(first.and_then(|f| bad_count(n, f)))
        }
        ty if ty.is_quantized() => {
            if let Some((block_bytes, fields)) = scale_layout(ty) {
                let mut first = None;
                let mut n = 0usize;
                for (b, block) in data.chunks_exact(block_bytes).enumerate() {
                    for &(off, field) in fields {
                        let bits = u16::from_le_bytes([block[off], block[off + 1]]);
                        if !f16_finite(bits) {
                            n += 1;
                            first.get_or_insert_with(|| {
                                format!(
                                    "block {b} (elements {}..{}): scale {field} = {} (f16 bits 0x{bits:04X})",
                                    b * ty.block_size(),
                                    (b + 1) * ty.block_size(),
                                    quantize::f16_bits_to_f32(bits)
                                )
                            });
                        }
                    }
                }
                return Ok(first.and_then(|f| bad_count(n, f)));
            }
            // Other block formats: decode row groups and look at the values.
            let row_len = t.row_len() as usize;
            let row_bytes = ty.row_bytes(t.row_len()).unwrap_or(0) as usize;
            if row_bytes == 0 {
                return Ok(None);
            }
            let rows_per_chunk = (1 << 20) / row_len.max(1) + 1;
            let mut buf = vec![0f32; rows_per_chunk * row_len];
            for (ci, chunk) in data.chunks(rows_per_chunk * row_bytes).enumerate() {
                let rows = chunk.len() / row_bytes;
                let dst = &mut buf[..rows * row_len];
                quantize::dequantize_into(ty, chunk, dst).map_err(|e| e.to_string())?;
                if let Some(i) = dst.iter().position(|v| !v.is_finite()) {
                    let e = ci * rows_per_chunk * row_len + i;
                    return Ok(Some(format!(
                        "element {e} (block {}) decodes to {}",
                        e / ty.block_size(),
                        dst[i]
                    )));
                }
            }
            Ok(None)
        }
        _ => Ok(None),
    }
}

/// Scans every tensor of `model`, in whichever file it is (the reader checked every tensor's
/// byte range against its file).
fn finite_values(model: &dyn GgufModel) -> Check {
    const NAME: &str = "finite values";
    let tensors = model.tensors();
    let found: Vec<(usize, Result<Option<String>, String>)> = tensors
        .par_iter()
        .enumerate()
        .map(|(i, t)| (i, scan_tensor(t, model.tensor_data(t))))
        .collect();
    let mut bad = Vec::new();
    for (i, r) in found {
        match r {
            Ok(None) => {}
            Ok(Some(what)) => bad.push(format!(
                "{} ({}): {what}",
                tensors[i].name, tensors[i].ggml_type
            )),
            Err(e) => bad.push(format!("{}: cannot decode: {e}", tensors[i].name)),
        }
    }
    if bad.is_empty() {
        Check::new(
            NAME,
            Status::Pass,
            format!(
                "no NaN or Inf in the weights and block scales of {} tensors",
                tensors.len()
            ),
        )
    } else {
        Check::new(NAME, Status::Fail, summarize(bad))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_layouts_match_the_block_sizes() {
        use GgmlType::*;
        for ty in [
            Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS,
        ] {
            assert!(scale_layout(ty).is_some(), "{ty}");
        }
    }

    #[test]
    fn finds_an_infinite_q8_0_scale() {
        // Two Q8_0 blocks of zeros; the second gets d = +Inf.
        let mut data = vec![0u8; 68];
        data[34..36].copy_from_slice(&0x7C00u16.to_le_bytes());
        let t = TensorInfo {
            name: "w".into(),
            dims: vec![64],
            ggml_type: GgmlType::Q8_0,
            offset: 0,
        };
        let msg = scan_tensor(&t, &data).unwrap().unwrap();
        assert!(
            msg.contains("block 1") && msg.contains("scale d = inf"),
            "{msg}"
        );
        data[34..36].copy_from_slice(&0x3C00u16.to_le_bytes());
        assert_eq!(scan_tensor(&t, &data).unwrap(), None);
    }

    #[test]
    fn finds_nan_in_f16_and_f32() {
        let t16 = TensorInfo {
            name: "w".into(),
            dims: vec![2],
            ggml_type: GgmlType::F16,
            offset: 0,
        };
        let d16 = [0x00, 0x3C, 0x01, 0x7E];
        assert!(scan_tensor(&t16, &d16)
            .unwrap()
            .unwrap()
            .contains("element 1"));
        let t32 = TensorInfo {
            ggml_type: GgmlType::F32,
            ..t16.clone()
        };
        let mut d32 = 1f32.to_le_bytes().to_vec();
        d32.extend_from_slice(&f32::INFINITY.to_le_bytes());
        assert!(scan_tensor(&t32, &d32)
            .unwrap()
            .unwrap()
            .contains("element 1 = inf"));
    }
}
