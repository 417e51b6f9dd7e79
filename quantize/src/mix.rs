//! llama-quantize's type selection: which ggml type each tensor of a model gets for a preset.
//!
//! `llama-quantize` does not quantize every tensor to the preset's type. It keeps norms, routers
//! and small tensors as they are, gives sensitive tensors (output, attention V, the first and last
//! FFN-down layers…) more bits, and falls back to another type when a row length does not fit
//! the block size. The choice depends on running counters over the tensors in the loader's order,
//! so the order itself is part of the contract. This module reproduces `llama_tensor_get_type`
//! and its helpers (src/llama-quant.cpp at llama.cpp 0c1e5709) for the presets ggforge offers, as
//! a pure function of the tensor list, a few hyper-parameters and the options; it also builds the
//! output metadata the way llama-quantize lays it out.
//!
//! Deviations, all outside what llama.cpp users normally write:
//! * `--tensor-type` patterns are compiled with the `regex` crate instead of C++ `std::regex`
//!   (ECMAScript). Both search anywhere in the name and agree on the usual syntax (`.`, `\.`,
//!   classes, groups, alternation, anchors); look-around and back-references are rejected here
//!   with an error, and `\d`/`\w` would also match non-ASCII digits/letters (tensor names are
//!   ASCII). Like llama-quantize, the pattern is lower-cased first (so `\D` becomes `\d`).
//! * String values are copied as ggml copies them (through C strings: cut at the first NUL).

use std::cmp::Ordering;
use std::fmt;

use gguf::{Array, GgmlType, Metadata, Value};

/// `GGML_QNT_VERSION`, written as `general.quantization_version`.
pub const QUANTIZATION_VERSION: u32 = 2;

/// The llama.cpp file types (`enum llama_ftype`) ggforge can produce, named as llama-quantize
/// names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum FileTypePreset {
    Q2_K,
    Q3_K_S,
    Q3_K_M,
    Q3_K_L,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q4_K_S,
    Q4_K_M,
    Q5_K_S,
    Q5_K_M,
    Q6_K,
    Q8_0,
    IQ4_NL,
    IQ4_XS,
    F16,
    BF16,
    F32,
}

/// llama-quantize's `QUANT_OPTIONS` rows for our presets, in its table order (the order decides
/// which name a numeric type resolves to: `15` → "Q4_K", the alias listed first).
const NAME_TABLE: [(&str, FileTypePreset); 22] = [
    ("Q4_0", FileTypePreset::Q4_0),
    ("Q4_1", FileTypePreset::Q4_1),
    ("Q5_0", FileTypePreset::Q5_0),
    ("Q5_1", FileTypePreset::Q5_1),
    ("Q2_K", FileTypePreset::Q2_K),
    ("Q3_K", FileTypePreset::Q3_K_M),
    ("Q3_K_S", FileTypePreset::Q3_K_S),
    ("Q3_K_M", FileTypePreset::Q3_K_M),
    ("Q3_K_L", FileTypePreset::Q3_K_L),
    ("IQ4_NL", FileTypePreset::IQ4_NL),
    ("IQ4_XS", FileTypePreset::IQ4_XS),
    ("Q4_K", FileTypePreset::Q4_K_M),
    ("Q4_K_S", FileTypePreset::Q4_K_S),
    ("Q4_K_M", FileTypePreset::Q4_K_M),
    ("Q5_K", FileTypePreset::Q5_K_M),
    ("Q5_K_S", FileTypePreset::Q5_K_S),
    ("Q5_K_M", FileTypePreset::Q5_K_M),
    ("Q6_K", FileTypePreset::Q6_K),
    ("Q8_0", FileTypePreset::Q8_0),
    ("F16", FileTypePreset::F16),
    ("BF16", FileTypePreset::BF16),
    ("F32", FileTypePreset::F32),
];

impl FileTypePreset {
    /// Every preset, in llama-quantize's help order.
    pub const ALL: [FileTypePreset; 19] = [
        FileTypePreset::Q4_0,
        FileTypePreset::Q4_1,
        FileTypePreset::Q5_0,
        FileTypePreset::Q5_1,
        FileTypePreset::Q2_K,
        FileTypePreset::Q3_K_S,
        FileTypePreset::Q3_K_M,
        FileTypePreset::Q3_K_L,
        FileTypePreset::IQ4_NL,
        FileTypePreset::IQ4_XS,
        FileTypePreset::Q4_K_S,
        FileTypePreset::Q4_K_M,
        FileTypePreset::Q5_K_S,
        FileTypePreset::Q5_K_M,
        FileTypePreset::Q6_K,
        FileTypePreset::Q8_0,
        FileTypePreset::F16,
        FileTypePreset::BF16,
        FileTypePreset::F32,
    ];

    /// The `llama_ftype` id, written as `general.file_type`.
    pub fn ftype(self) -> u32 {
        use FileTypePreset::*;
        match self {
            F32 => 0,
            F16 => 1,
            Q4_0 => 2,
            Q4_1 => 3,
            Q8_0 => 7,
            Q5_0 => 8,
            Q5_1 => 9,
            Q2_K => 10,
            Q3_K_S => 11,
            Q3_K_M => 12,
            Q3_K_L => 13,
            Q4_K_S => 14,
            Q4_K_M => 15,
            Q5_K_S => 16,
            Q5_K_M => 17,
            Q6_K => 18,
            IQ4_NL => 25,
            IQ4_XS => 30,
            BF16 => 32,
        }
    }

    /// The canonical llama-quantize name ("Q4_K_M").
    pub fn name(self) -> &'static str {
        use FileTypePreset::*;
        match self {
            Q2_K => "Q2_K",
            Q3_K_S => "Q3_K_S",
            Q3_K_M => "Q3_K_M",
            Q3_K_L => "Q3_K_L",
            Q4_0 => "Q4_0",
            Q4_1 => "Q4_1",
            Q5_0 => "Q5_0",
            Q5_1 => "Q5_1",
            Q4_K_S => "Q4_K_S",
            Q4_K_M => "Q4_K_M",
            Q5_K_S => "Q5_K_S",
            Q5_K_M => "Q5_K_M",
            Q6_K => "Q6_K",
            Q8_0 => "Q8_0",
            IQ4_NL => "IQ4_NL",
            IQ4_XS => "IQ4_XS",
            F16 => "F16",
            BF16 => "BF16",
            F32 => "F32",
        }
    }

    /// `llama_ftype_get_default_type`: the type most tensors get.
    pub fn default_type(self) -> GgmlType {
        use FileTypePreset as P;
        match self {
            P::Q2_K => GgmlType::Q2_K,
            P::Q3_K_S | P::Q3_K_M | P::Q3_K_L => GgmlType::Q3_K,
            P::Q4_0 => GgmlType::Q4_0,
            P::Q4_1 => GgmlType::Q4_1,
            P::Q5_0 => GgmlType::Q5_0,
            P::Q5_1 => GgmlType::Q5_1,
            P::Q4_K_S | P::Q4_K_M => GgmlType::Q4_K,
            P::Q5_K_S | P::Q5_K_M => GgmlType::Q5_K,
            P::Q6_K => GgmlType::Q6_K,
            P::Q8_0 => GgmlType::Q8_0,
            P::IQ4_NL => GgmlType::IQ4_NL,
            P::IQ4_XS => GgmlType::IQ4_XS,
            P::F16 => GgmlType::F16,
            P::BF16 => GgmlType::BF16,
            P::F32 => GgmlType::F32,
        }
    }

    /// `llama_ftype_name`, for messages.
    pub fn description(self) -> &'static str {
        use FileTypePreset::*;
        match self {
            Q2_K => "Q2_K - Medium",
            Q3_K_S => "Q3_K - Small",
            Q3_K_M => "Q3_K - Medium",
            Q3_K_L => "Q3_K - Large",
            Q4_0 => "Q4_0",
            Q4_1 => "Q4_1",
            Q5_0 => "Q5_0",
            Q5_1 => "Q5_1",
            Q4_K_S => "Q4_K - Small",
            Q4_K_M => "Q4_K - Medium",
            Q5_K_S => "Q5_K - Small",
            Q5_K_M => "Q5_K - Medium",
            Q6_K => "Q6_K",
            Q8_0 => "Q8_0",
            IQ4_NL => "IQ4_NL - 4.5 bpw",
            IQ4_XS => "IQ4_XS - 4.25 bpw",
            F16 => "F16",
            BF16 => "BF16",
            F32 => "all F32",
        }
    }

    /// Parses a preset as llama-quantize does: a name compared case-insensitively (aliases
    /// Q3_K, Q4_K, Q5_K included), or an ftype number. Returns the preset and the table name it
    /// matched, which llama-quantize uses in the default output file name.
    pub fn parse(s: &str) -> Option<(FileTypePreset, &'static str)> {
        if let Some((name, p)) = NAME_TABLE
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(s))
        {
            return Some((*p, name));
        }
        // std::stoi: leading whitespace, an optional sign and digits; trailing text is ignored.
        let n = parse_c_int(s)?;
        NAME_TABLE
            .iter()
            .find(|(_, p)| i64::from(p.ftype()) == n)
            .map(|(name, p)| (*p, *name))
    }

    /// Every accepted name, in llama-quantize's table order (for "valid types" messages).
    pub fn names() -> impl Iterator<Item = &'static str> {
        NAME_TABLE.iter().map(|(n, _)| *n)
    }

    /// The preset whose `llama_ftype` id is `ftype`.
    pub fn from_ftype(ftype: u32) -> Option<FileTypePreset> {
        Self::ALL.iter().copied().find(|p| p.ftype() == ftype)
    }

    /// True when the default type is block-quantized (the mix, overrides and fallbacks apply).
    pub fn is_quantized(self) -> bool {
        self.default_type().is_quantized()
    }
}

impl fmt::Display for FileTypePreset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `std::stoi`-like: optional whitespace and sign, at least one digit, rest ignored.
fn parse_c_int(s: &str) -> Option<i64> {
    let t = s.trim_start();
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let end = digits
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    if end == 0 {
        return None;
    }
    let v: i64 = digits[..end].parse().ok()?;
    Some(if neg { -v } else { v })
}

/// Parses a ggml type name case-insensitively, as llama-quantize's `parse_ggml_type`.
pub fn parse_ggml_type(s: &str) -> Option<GgmlType> {
    GgmlType::from_name(s)
}

/// Why a type plan could not be made.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MixError {
    #[error("malformed --tensor-type '{0}': expected PATTERN=TYPE")]
    MalformedOverride(String),
    #[error("--tensor-type '{spec}': unknown ggml type '{ty}'")]
    UnknownOverrideType { spec: String, ty: String },
    #[error("--tensor-type pattern '{pattern}' is not a supported regular expression: {message}")]
    BadPattern { pattern: String, message: String },
    #[error("metadata key '{key}' is missing or not an unsigned integer (needed to choose tensor types)")]
    MissingKey { key: String },
    #[error("metadata key 'general.architecture' is missing or not a string")]
    MissingArchitecture,
    #[error("cannot determine the layer of tensor '{0}' (MoE models need blk.N. names)")]
    NoLayer(String),
    #[error("tensor '{tensor}' is in layer {layer}, outside the model's {n_layer} layers")]
    BadLayer {
        tensor: String,
        layer: i64,
        n_layer: u32,
    },
    #[error(
        "tensor '{tensor}': no tensor type fallback is defined for type {ty} (row length {ncols})"
    )]
    NoFallback {
        tensor: String,
        ty: GgmlType,
        ncols: u64,
    },
    #[error("tensor '{tensor}' would be quantized to {ty}, which needs an importance matrix (--imatrix)")]
    RequiresImatrix { tensor: String, ty: GgmlType },
}

/// One `--tensor-type PATTERN=TYPE` override.
#[derive(Clone, Debug)]
pub struct TensorTypeOverride {
    /// The pattern as compiled (lower-cased, as llama-quantize does).
    pub pattern: String,
    pub ty: GgmlType,
    regex: regex::Regex,
}

impl TensorTypeOverride {
    /// Parses `PATTERN=TYPE` like llama-quantize: split at the first '=', the pattern is
    /// lower-cased, the type name is matched case-insensitively.
    pub fn parse(spec: &str) -> Result<TensorTypeOverride, MixError> {
        let (pat, ty) = spec
            .split_once('=')
            .ok_or_else(|| MixError::MalformedOverride(spec.to_string()))?;
        if pat.is_empty() || ty.is_empty() {
            return Err(MixError::MalformedOverride(spec.to_string()));
        }
        let ty_parsed = parse_ggml_type(ty).ok_or_else(|| MixError::UnknownOverrideType {
            spec: spec.to_string(),
            ty: ty.to_string(),
        })?;
        Self::new(pat, ty_parsed)
    }

    /// An override from a pattern (lower-cased here) and a type.
    pub fn new(pattern: &str, ty: GgmlType) -> Result<TensorTypeOverride, MixError> {
        let pattern = pattern.to_ascii_lowercase();
        let regex = regex::Regex::new(&pattern).map_err(|e| MixError::BadPattern {
            pattern: pattern.clone(),
            message: e.to_string(),
        })?;
        Ok(TensorTypeOverride { pattern, ty, regex })
    }

    /// `std::regex_search`: does the pattern match anywhere in the name?
    pub fn matches(&self, name: &str) -> bool {
        self.regex.is_match(name)
    }
}

/// The knobs of llama-quantize that influence type choice.
#[derive(Clone, Debug, Default)]
pub struct MixOptions {
    /// `--pure`: no mix; every quantizable tensor gets the default type (fallbacks still apply).
    pub pure: bool,
    /// `--output-tensor-type`.
    pub output_tensor_type: Option<GgmlType>,
    /// `--token-embedding-type`.
    pub token_embedding_type: Option<GgmlType>,
    /// `--tensor-type`, in command-line order (the first match wins).
    pub tensor_types: Vec<TensorTypeOverride>,
    /// `--leave-output-tensor`: output.weight is copied.
    pub leave_output_tensor: bool,
    /// An importance matrix is in use (changes a few Q4_0/Q5_0/IQ4 rules).
    pub has_imatrix: bool,
}

/// The hyper-parameters the mix rules read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelInfo {
    /// `general.architecture`.
    pub arch: String,
    /// `<arch>.block_count` (`n_layer_all`).
    pub n_layer: u32,
    /// `<arch>.nextn_predict_layers` (0 if absent).
    pub n_layer_nextn: u32,
    /// Layer 0's `<arch>.attention.head_count`.
    pub n_head: u32,
    /// Layer 0's `<arch>.attention.head_count_kv` (defaults to `n_head`).
    pub n_head_kv: u32,
    /// `<arch>.expert_count` (0 if absent).
    pub n_expert: u32,
}

impl ModelInfo {
    /// Reads the hyper-parameters from GGUF metadata, with llama.cpp's defaults for optional keys.
    pub fn from_metadata(md: &Metadata) -> Result<ModelInfo, MixError> {
        let arch = md
            .get_str("general.architecture")
            .ok_or(MixError::MissingArchitecture)?
            .to_string();
        let key = |k: &str| format!("{arch}.{k}");
        let req = |k: &str| -> Result<u32, MixError> {
            scalar_or_first(md.get(&key(k))).ok_or_else(|| MixError::MissingKey { key: key(k) })
        };
        let opt = |k: &str| scalar_or_first(md.get(&key(k)));
        let n_layer = req("block_count")?;
        let n_head = opt("attention.head_count").unwrap_or(0);
        Ok(ModelInfo {
            n_layer,
            n_layer_nextn: opt("nextn_predict_layers").unwrap_or(0),
            n_head,
            n_head_kv: opt("attention.head_count_kv").unwrap_or(n_head),
            n_expert: opt("expert_count").unwrap_or(0),
            arch,
        })
    }

    /// `n_gqa()` of layer 0 (0 when there are no KV heads).
    pub fn n_gqa(&self) -> u32 {
        self.n_head.checked_div(self.n_head_kv).unwrap_or(0)
    }

    /// `model.type == LLM_TYPE_70B`: the per-architecture rules that detect a 70B model.
    fn is_70b(&self) -> bool {
        let n_layer = self.n_layer.saturating_sub(self.n_layer_nextn);
        match self.arch.as_str() {
            "llama" => self.n_expert != 8 && n_layer == 80 && self.n_head != self.n_head_kv,
            "qwen2" | "deci" | "olmo" => n_layer == 80,
            "jais2" => n_layer == 68,
            _ => false,
        }
    }
}

/// A u32 hyper-parameter stored as a scalar or, per layer, as an array (layer 0 is used).
fn scalar_or_first(v: Option<&Value>) -> Option<u32> {
    match v? {
        Value::Array(a) => match a {
            Array::U32(x) => x.first().copied(),
            Array::I32(x) => x.first().and_then(|&v| u32::try_from(v).ok()),
            Array::U16(x) => x.first().map(|&v| v.into()),
            Array::U8(x) => x.first().map(|&v| v.into()),
            _ => None,
        },
        other => other.as_u64().and_then(|v| u32::try_from(v).ok()),
    }
}

/// A tensor as the plan needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    /// ggml order: `dims[0]` is the row length.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
}

/// What happens to one tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorPlan {
    pub name: String,
    pub dims: Vec<u64>,
    pub source_type: GgmlType,
    pub target_type: GgmlType,
    /// `tensor_allows_quantization`: false for norms, 1-D tensors, routers…
    pub allows_quantization: bool,
    /// The mix chose a type whose block does not fit the rows: (wanted, used instead).
    pub fallback: Option<(GgmlType, GgmlType)>,
    /// `tensor_requires_imatrix`.
    pub requires_imatrix: bool,
}

impl TensorPlan {
    /// True when the bytes change (llama-quantize copies a tensor whose type stays the same).
    pub fn converts(&self) -> bool {
        self.source_type != self.target_type
    }
}

/// The type of every tensor, in output order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MixPlan {
    pub preset: FileTypePreset,
    pub tensors: Vec<TensorPlan>,
    /// Tensors that needed a shape fallback.
    pub n_fallback: usize,
}

/// The layer number llama.cpp reads with `sscanf(name, "blk.%d.", &layer)`, or -1 when there is
/// none (non-block tensors sort first).
pub fn layer_of(name: &str) -> i64 {
    scan_layer(name).unwrap_or(-1)
}

/// `sscanf(name, "blk.%d.", ...)`: `None` when no number follows "blk.".
fn scan_layer(name: &str) -> Option<i64> {
    let rest = name.strip_prefix("blk.")?;
    let rest = rest.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (neg, digits) = match rest.as_bytes().first() {
        Some(b'-') => (true, &rest[1..]),
        Some(b'+') => (false, &rest[1..]),
        _ => (false, rest),
    };
    let end = digits
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    if end == 0 {
        return None;
    }
    // %d into an int: out-of-range values are undefined in C; clamp so ordering stays sane.
    let v = digits[..end]
        .parse::<i64>()
        .unwrap_or(i64::MAX)
        .min(i64::from(i32::MAX));
    Some(if neg { -v } else { v })
}

/// llama-model-loader's `weight_name_comparer`: by layer number (non-block tensors first), then
/// by name bytes. llama-quantize writes (and counts) tensors in this order.
pub fn compare_tensor_names(a: &str, b: &str) -> Ordering {
    layer_of(a).cmp(&layer_of(b)).then_with(|| a.cmp(b))
}

/// Indices of `names` in llama-quantize's output order.
pub fn output_order<S: AsRef<str>>(names: &[S]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..names.len()).collect();
    idx.sort_by(|&a, &b| compare_tensor_names(names[a].as_ref(), names[b].as_ref()));
    idx
}

/// `ggml_n_dims`: trailing dimensions of size 1 do not count (minimum 1).
pub fn ggml_n_dims(dims: &[u64]) -> usize {
    dims.iter().rposition(|&d| d != 1).map_or(1, |i| i + 1)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Category {
    TokenEmbd,
    AttnQ,
    AttnV,
    AttnK,
    AttnQkv,
    AttnKvB,
    AttnOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Output,
    Other,
}

impl Category {
    /// `tensor_get_category`.
    fn of(name: &str) -> Category {
        if name == "output.weight" {
            return Category::Output;
        }
        if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
            return Category::TokenEmbd;
        }
        const BY_SUBSTRING: [(&str, Category); 9] = [
            ("attn_qkv.weight", Category::AttnQkv),
            ("attn_kv_b.weight", Category::AttnKvB),
            ("attn_v.weight", Category::AttnV),
            ("attn_k.weight", Category::AttnK),
            ("attn_q.weight", Category::AttnQ),
            ("attn_output.weight", Category::AttnOutput),
            ("ffn_up", Category::FfnUp),
            ("ffn_gate", Category::FfnGate),
            ("ffn_down", Category::FfnDown),
        ];
        BY_SUBSTRING
            .iter()
            .find(|(s, _)| name.contains(s))
            .map_or(Category::Other, |(_, c)| *c)
    }

    fn is_attn_v(self) -> bool {
        matches!(
            self,
            Category::AttnV | Category::AttnQkv | Category::AttnKvB
        )
    }
}

/// Substrings that keep a tensor out of quantization (`tensor_allows_quantization`).
const NEVER_QUANTIZED: [&str; 34] = [
    "_norm.weight",
    "ffn_gate_inp.weight",
    "ffn_gate_tid2eid.weight",
    "altup",
    "laurel",
    "per_layer_model_proj",
    "ssm_conv1d",
    "shortconv.conv.weight",
    "indexer.k_proj.weight",
    "indexer.q_proj.weight",
    "time_mix_first.weight",
    "time_mix_w0.weight",
    "time_mix_w1.weight",
    "time_mix_w2.weight",
    "time_mix_v0.weight",
    "time_mix_v1.weight",
    "time_mix_v2.weight",
    "time_mix_a0.weight",
    "time_mix_a1.weight",
    "time_mix_a2.weight",
    "time_mix_g1.weight",
    "time_mix_g2.weight",
    "time_mix_decay_w1.weight",
    "time_mix_decay_w2.weight",
    "time_mix_lerp_fused.weight",
    "attn_rel_b.weight",
    ".position_embd",
    "sam.pos_embd",
    "sam.neck.",
    "sam.net_",
    ".rel_pos",
    ".patch_embd",
    ".patch_merger",
    "a.rvq.codebook",
];

/// GLM-5-Next's extra exclusions.
const NEVER_QUANTIZED_GLM5_NEXT: [&str; 14] = [
    "hc_",
    "indexer.attn_q_b",
    "indexer.attn_k",
    "indexer.proj",
    "indexer_compressor_gate",
    "indexer_compressor_ape",
    "ssm_f_a.weight",
    "ssm_f_b.weight",
    "ssm_g_a.weight",
    "ssm_g_b.weight",
    "ssm_beta.weight",
    "attn_kv_a_mqa.weight",
    "attn_k_b.weight",
    "attn_v_b.weight",
];

/// `tensor_allows_quantization`: may this tensor change type at all?
pub fn allows_quantization(arch: &str, name: &str, dims: &[u64], leave_output: bool) -> bool {
    if ggml_n_dims(dims) < 2 || !name.ends_with("weight") {
        return false;
    }
    if leave_output && name == "output.weight" {
        return false;
    }
    if name == "position_embd.weight" || name == "token_types.weight" {
        return false;
    }
    if NEVER_QUANTIZED.iter().any(|s| name.contains(s)) || name.contains("mm.a.code_embd") {
        return false;
    }
    if arch == "glm5-next" && NEVER_QUANTIZED_GLM5_NEXT.iter().any(|s| name.contains(s)) {
        return false;
    }
    true
}

/// `tensor_requires_imatrix` for our presets: the very-low-bit IQ types (reachable through
/// `--tensor-type`), never for token embeddings and the output.
fn requires_imatrix(name: &str, ty: GgmlType) -> bool {
    if name == "token_embd.weight"
        || name == "per_layer_token_embd.weight"
        || name == "output.weight"
    {
        return false;
    }
    use GgmlType::*;
    matches!(ty, IQ3_XXS | IQ2_XXS | IQ2_XS | IQ2_S | IQ1_M | IQ1_S)
}

/// The running state of `quantize_state_impl`.
struct State<'a> {
    model: &'a ModelInfo,
    opts: &'a MixOptions,
    preset: FileTypePreset,
    n_attention_wv: i32,
    i_attention_wv: i32,
    n_ffn: i32,
    i_ffn_down: i32,
    i_ffn_gate: i32,
    i_ffn_up: i32,
    has_tied_embeddings: bool,
}

/// `use_more_bits`: the first and last eighth of the layers and every third one in between.
pub fn use_more_bits(i: i32, n: i32) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

impl State<'_> {
    /// `layer_info`: the counter for dense models, the name's `blk.N.` for MoE.
    fn layer_info(&self, counter: i32, name: &str) -> Result<(i32, i32), MixError> {
        let n_layer = self.n_ffn;
        if self.model.n_expert.max(1) > 1 {
            let layer = scan_layer(name).ok_or_else(|| MixError::NoLayer(name.to_string()))?;
            if layer < 0 || layer >= i64::from(n_layer) {
                return Err(MixError::BadLayer {
                    tensor: name.to_string(),
                    layer,
                    n_layer: self.model.n_layer,
                });
            }
            return Ok((layer as i32, n_layer));
        }
        Ok((counter, n_layer))
    }

    /// `llama_tensor_get_type_impl` for our presets.
    fn impl_type(
        &mut self,
        mut new_type: GgmlType,
        t: &TensorSpec,
        cat: Category,
    ) -> Result<GgmlType, MixError> {
        use FileTypePreset as P;
        use GgmlType as G;
        let ftype = self.preset;
        let arch = self.model.arch.as_str();
        let falcon = arch == "falcon";
        let n_expert = self.model.n_expert;
        let n_gqa = self.model.n_gqa();
        let name = t.name.as_str();

        if arch == "glm5-next"
            && (name.contains("attn_q_a")
                || name.contains("attn_q_b")
                || name.contains("nextn.eh_proj"))
            && !matches!(new_type, G::F32 | G::BF16 | G::F16)
        {
            return Ok(G::Q8_0);
        }

        if cat == Category::Output || (self.has_tied_embeddings && cat == Category::TokenEmbd) {
            if let Some(ty) = self.opts.output_tensor_type {
                new_type = ty;
            } else {
                let nx = t.dims.first().copied().unwrap_or(1);
                let qk = new_type.block_size() as u64;
                if falcon || nx % qk != 0 {
                    new_type = G::Q8_0;
                } else if new_type != G::Q8_0 {
                    new_type = G::Q6_K;
                }
            }
        } else if cat == Category::TokenEmbd {
            if let Some(ty) = self.opts.token_embedding_type {
                new_type = ty;
            }
        } else if cat.is_attn_v() {
            match ftype {
                P::Q2_K => new_type = if n_gqa >= 4 { G::Q4_K } else { G::Q3_K },
                P::Q3_K_M => {
                    new_type = if self.i_attention_wv < 2 {
                        G::Q5_K
                    } else {
                        G::Q4_K
                    }
                }
                P::Q3_K_L => new_type = G::Q5_K,
                P::IQ4_NL | P::IQ4_XS if n_gqa >= 4 => new_type = G::Q5_K,
                P::Q4_K_M | P::Q5_K_M
                    if use_more_bits(self.i_attention_wv, self.n_attention_wv) =>
                {
                    new_type = G::Q6_K
                }
                P::Q4_K_S if self.i_attention_wv < 4 => new_type = G::Q5_K,
                _ => {}
            }
            if self.model.is_70b() && matches!(new_type, G::Q3_K | G::Q4_K) {
                new_type = G::Q5_K;
            }
            if n_expert == 8 {
                new_type = G::Q8_0;
            }
            self.i_attention_wv += 1;
        } else if cat == Category::AttnK {
            if n_expert == 8 {
                new_type = G::Q8_0;
            }
        } else if cat == Category::AttnQ {
            // Only IQ3 presets change attn_q.
        } else if cat == Category::FfnDown {
            let (i, n) = self.layer_info(self.i_ffn_down, name)?;
            let umb = use_more_bits(i, n);
            match ftype {
                P::Q2_K => new_type = G::Q3_K,
                P::Q3_K_M => {
                    new_type = if i < n / 16 {
                        G::Q5_K
                    } else if !falcon || umb {
                        G::Q4_K
                    } else {
                        G::Q3_K
                    }
                }
                P::Q3_K_L => new_type = if falcon { G::Q4_K } else { G::Q5_K },
                P::Q4_K_M => {
                    if falcon {
                        new_type = if i < n / 16 {
                            G::Q6_K
                        } else if umb {
                            G::Q5_K
                        } else {
                            G::Q4_K
                        };
                    } else if umb {
                        new_type = G::Q6_K;
                    }
                }
                P::IQ4_NL | P::IQ4_XS if i < n / 8 && !self.opts.has_imatrix => new_type = G::Q5_K,
                P::Q5_K_M if umb => new_type = G::Q6_K,
                P::Q4_K_S if !falcon && i < n / 8 => new_type = G::Q5_K,
                P::Q4_0 if self.opts.has_imatrix && i < n / 8 => new_type = G::Q4_1,
                P::Q5_0 if self.opts.has_imatrix && i < n / 8 => new_type = G::Q5_1,
                _ => {}
            }
            self.i_ffn_down += 1;
        } else if cat == Category::AttnOutput {
            if !falcon {
                if n_expert == 8 {
                    if matches!(
                        ftype,
                        P::Q2_K
                            | P::Q3_K_S
                            | P::Q3_K_M
                            | P::IQ4_NL
                            | P::Q4_K_S
                            | P::Q4_K_M
                            | P::IQ4_XS
                    ) {
                        new_type = G::Q5_K;
                    }
                } else {
                    match ftype {
                        P::Q2_K => new_type = G::Q3_K,
                        P::Q3_K_M => new_type = G::Q4_K,
                        P::Q3_K_L => new_type = G::Q5_K,
                        _ => {}
                    }
                }
            } else if ftype == P::Q3_K_L {
                new_type = G::Q4_K;
            }
        } else if cat == Category::AttnQkv {
            match ftype {
                P::Q3_K_M | P::Q3_K_L => new_type = G::Q4_K,
                P::Q4_K_M => new_type = G::Q5_K,
                P::Q5_K_M => new_type = G::Q6_K,
                _ => {}
            }
        } else if cat == Category::FfnGate {
            self.layer_info(self.i_ffn_gate, name)?;
            self.i_ffn_gate += 1;
        } else if cat == Category::FfnUp {
            self.layer_info(self.i_ffn_up, name)?;
            self.i_ffn_up += 1;
        }
        Ok(new_type)
    }

    /// `llama_tensor_get_type` (the outer wrapper) for a tensor that allows quantization.
    fn tensor_type(
        &mut self,
        t: &TensorSpec,
        cat: Category,
    ) -> Result<(GgmlType, Option<(GgmlType, GgmlType)>), MixError> {
        if let (Some(ty), Category::TokenEmbd) = (self.opts.token_embedding_type, cat) {
            // per_layer_token_embd follows --token-embedding-type unless a --tensor-type names it.
            let named = t.name == "per_layer_token_embd.weight"
                && self.opts.tensor_types.iter().any(|o| o.matches(&t.name));
            if !named {
                return Ok((ty, None));
            }
        }
        if let (Some(ty), Category::Output) = (self.opts.output_tensor_type, cat) {
            return Ok((ty, None));
        }
        let default = self.preset.default_type();
        let mut new_type = default;
        if !default.is_quantized() {
            return Ok((new_type, None));
        }
        let manual = self.opts.tensor_types.iter().find(|o| o.matches(&t.name));
        if let Some(o) = manual {
            new_type = o.ty;
        } else if !self.opts.pure {
            new_type = self.impl_type(new_type, t, cat)?;
        }
        let chosen = tensor_type_fallback(t, new_type)?;
        let fallback = (chosen != new_type).then_some((new_type, chosen));
        Ok((chosen, fallback))
    }
}

/// `tensor_type_fallback`: a compatible type when the row length is not a multiple of the block.
fn tensor_type_fallback(t: &TensorSpec, target: GgmlType) -> Result<GgmlType, MixError> {
    use GgmlType as G;
    let ncols = t.dims.first().copied().unwrap_or(1);
    let qk = target.block_size() as u64;
    if ncols % qk == 0 {
        return Ok(target);
    }
    let mut ret = match target {
        G::IQ1_S
        | G::IQ1_M
        | G::IQ2_XXS
        | G::IQ2_XS
        | G::IQ2_S
        | G::IQ3_XXS
        | G::IQ3_S
        | G::IQ4_XS => G::IQ4_NL,
        G::Q2_0 | G::Q2_K | G::Q3_K | G::TQ1_0 | G::TQ2_0 => G::Q4_0,
        G::Q4_K => G::Q5_0,
        G::Q5_K => G::Q5_1,
        G::Q6_K => G::Q8_0,
        _ if qk <= 32 => target,
        _ => {
            return Err(MixError::NoFallback {
                tensor: t.name.clone(),
                ty: target,
                ncols,
            })
        }
    };
    if ncols % ret.block_size() as u64 != 0 {
        ret = G::F16;
    }
    Ok(ret)
}

/// Decides every tensor's type as llama-quantize does, and the output order.
///
/// `tensors` may be in any order: they are sorted into llama-quantize's order first, because its
/// counters (the n-th attention V, the n-th FFN down…) run in that order.
pub fn plan(
    model: &ModelInfo,
    tensors: &[TensorSpec],
    preset: FileTypePreset,
    opts: &MixOptions,
) -> Result<MixPlan, MixError> {
    let order = output_order(&tensors.iter().map(|t| t.name.as_str()).collect::<Vec<_>>());
    let cats: Vec<Category> = order
        .iter()
        .map(|&i| Category::of(&tensors[i].name))
        .collect();
    let mut st = State {
        model,
        opts,
        preset,
        n_attention_wv: cats.iter().filter(|c| c.is_attn_v()).count() as i32,
        i_attention_wv: 0,
        n_ffn: model.n_layer.min(i32::MAX as u32) as i32,
        i_ffn_down: 0,
        i_ffn_gate: 0,
        i_ffn_up: 0,
        has_tied_embeddings: !cats.contains(&Category::Output),
    };
    let mut out = Vec::with_capacity(tensors.len());
    let mut n_fallback = 0;
    for (&i, &cat) in order.iter().zip(&cats) {
        let t = &tensors[i];
        let allows = allows_quantization(&model.arch, &t.name, &t.dims, opts.leave_output_tensor);
        let (target, fallback) = if allows {
            st.tensor_type(t, cat)?
        } else {
            (t.ggml_type, None)
        };
        if fallback.is_some() {
            n_fallback += 1;
        }
        let requires = requires_imatrix(&t.name, target);
        if allows && requires && !opts.has_imatrix {
            return Err(MixError::RequiresImatrix {
                tensor: t.name.clone(),
                ty: target,
            });
        }
        out.push(TensorPlan {
            name: t.name.clone(),
            dims: t.dims.clone(),
            source_type: t.ggml_type,
            target_type: target,
            allows_quantization: allows,
            fallback,
            requires_imatrix: requires,
        });
    }
    Ok(MixPlan {
        preset,
        tensors: out,
        n_fallback,
    })
}

/// What llama-quantize records about the importance matrix in the output metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImatrixKv {
    /// `quantize.imatrix.file`: the path as given on the command line.
    pub file: String,
    /// `quantize.imatrix.dataset`: the first dataset, if the file names any.
    pub dataset: Option<String>,
    /// `quantize.imatrix.entries_count`.
    pub entries: u32,
    /// `quantize.imatrix.chunks_count`, written only when positive.
    pub chunks: i64,
}

/// llama-quantize's output metadata: the input's KVs in order (strings cut at a NUL, as ggml
/// copies them through C strings), `general.quantization_version` and `general.file_type` moved
/// to the end, the split keys dropped, then the imatrix keys (strings cut to 127 bytes).
pub fn output_metadata(
    input: &Metadata,
    preset: FileTypePreset,
    imatrix: Option<&ImatrixKv>,
) -> Metadata {
    let mut md: Metadata = input
        .iter()
        .map(|(k, v)| (k.to_string(), c_string_value(v)))
        .collect();
    md.set_last("general.quantization_version", QUANTIZATION_VERSION);
    md.set_last("general.file_type", preset.ftype());
    for k in ["split.no", "split.count", "split.tensors.count"] {
        md.remove(k);
    }
    if let Some(im) = imatrix {
        md.set_last("quantize.imatrix.file", truncate_127(&im.file));
        if let Some(ds) = &im.dataset {
            md.set_last("quantize.imatrix.dataset", truncate_127(ds));
        }
        md.set_last("quantize.imatrix.entries_count", im.entries);
        if im.chunks > 0 {
            md.set_last(
                "quantize.imatrix.chunks_count",
                im.chunks.unsigned_abs() as u32,
            );
        }
    }
    md
}

fn cut_at_nul(s: &str) -> String {
    s.split('\0').next().unwrap_or("").to_string()
}

fn c_string_value(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(cut_at_nul(s)),
        Value::Array(Array::String(a)) => {
            Value::Array(Array::String(a.iter().map(|s| cut_at_nul(s)).collect()))
        }
        other => other.clone(),
    }
}

/// `strncpy(val_str, s, 127)`: at most 127 bytes (cut back to a character boundary so the value
/// stays valid UTF-8; llama-quantize would cut inside a multi-byte character).
fn truncate_127(s: &str) -> String {
    let s = cut_at_nul(s);
    if s.len() <= 127 {
        return s;
    }
    let mut end = 127;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(n_layer: u32, n_head: u32, n_head_kv: u32, n_expert: u32) -> ModelInfo {
        ModelInfo {
            arch: "llama".into(),
            n_layer,
            n_layer_nextn: 0,
            n_head,
            n_head_kv,
            n_expert,
        }
    }

    fn dense_tensors(n_layer: u32, hidden: u64, tied: bool) -> Vec<TensorSpec> {
        let mut v = vec![
            TensorSpec {
                name: "token_embd.weight".into(),
                dims: vec![hidden, 1000],
                ggml_type: GgmlType::F16,
            },
            TensorSpec {
                name: "output_norm.weight".into(),
                dims: vec![hidden],
                ggml_type: GgmlType::F32,
            },
        ];
        if !tied {
            v.push(TensorSpec {
                name: "output.weight".into(),
                dims: vec![hidden, 1000],
                ggml_type: GgmlType::F16,
            });
        }
        for i in 0..n_layer {
            for (n, d) in [
                ("attn_q", vec![hidden, hidden]),
                ("attn_k", vec![hidden, hidden / 4]),
                ("attn_v", vec![hidden, hidden / 4]),
                ("attn_output", vec![hidden, hidden]),
                ("ffn_gate", vec![hidden, 512]),
                ("ffn_up", vec![hidden, 512]),
                ("ffn_down", vec![512, hidden]),
                ("attn_norm", vec![hidden]),
            ] {
                v.push(TensorSpec {
                    name: format!("blk.{i}.{n}.weight"),
                    dims: d,
                    ggml_type: if n.ends_with("norm") {
                        GgmlType::F32
                    } else {
                        GgmlType::F16
                    },
                });
            }
        }
        v
    }

    fn ty(p: &MixPlan, name: &str) -> GgmlType {
        p.tensors
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.target_type)
            .unwrap_or_else(|| panic!("{name} not planned"))
    }

    #[test]
    fn preset_names_parse_like_llama_quantize() {
        assert_eq!(
            FileTypePreset::parse("q4_k_m"),
            Some((FileTypePreset::Q4_K_M, "Q4_K_M"))
        );
        assert_eq!(
            FileTypePreset::parse("Q4_K"),
            Some((FileTypePreset::Q4_K_M, "Q4_K"))
        );
        assert_eq!(
            FileTypePreset::parse("q3_k"),
            Some((FileTypePreset::Q3_K_M, "Q3_K"))
        );
        // Numbers resolve to the first table row with that ftype.
        assert_eq!(
            FileTypePreset::parse("15"),
            Some((FileTypePreset::Q4_K_M, "Q4_K"))
        );
        assert_eq!(
            FileTypePreset::parse("0"),
            Some((FileTypePreset::F32, "F32"))
        );
        assert_eq!(FileTypePreset::parse("Q4_K_X"), None);
        assert_eq!(FileTypePreset::parse("IQ2_XXS"), None);
        for p in FileTypePreset::ALL {
            assert_eq!(FileTypePreset::parse(p.name()).map(|x| x.0), Some(p));
            assert_eq!(FileTypePreset::from_ftype(p.ftype()), Some(p));
        }
    }

    #[test]
    fn layer_parsing_follows_sscanf() {
        assert_eq!(layer_of("blk.12.attn_q.weight"), 12);
        assert_eq!(layer_of("blk.3x"), 3);
        assert_eq!(layer_of("token_embd.weight"), -1);
        assert_eq!(layer_of("blk..x"), -1);
        let mut names = vec!["blk.10.a", "blk.2.b", "output.weight", "blk.2.a", "a"];
        let order = output_order(&names);
        names = order.iter().map(|&i| names[i]).collect();
        assert_eq!(
            names,
            vec!["a", "output.weight", "blk.2.a", "blk.2.b", "blk.10.a"]
        );
    }

    #[test]
    fn use_more_bits_for_32_layers() {
        let picked: Vec<i32> = (0..32).filter(|&i| use_more_bits(i, 32)).collect();
        assert_eq!(
            picked,
            vec![0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]
        );
    }

    #[test]
    fn tied_embeddings_get_output_rules_and_fallbacks_apply() {
        let m = model(8, 4, 2, 0);
        let p = plan(
            &m,
            &dense_tensors(8, 256, true),
            FileTypePreset::Q4_K_M,
            &MixOptions::default(),
        )
        .unwrap();
        assert_eq!(ty(&p, "token_embd.weight"), GgmlType::Q6_K);
        let p = plan(
            &m,
            &dense_tensors(8, 256, false),
            FileTypePreset::Q4_K_M,
            &MixOptions::default(),
        )
        .unwrap();
        assert_eq!(ty(&p, "token_embd.weight"), GgmlType::Q4_K);
        assert_eq!(ty(&p, "output.weight"), GgmlType::Q6_K);
        assert_eq!(ty(&p, "output_norm.weight"), GgmlType::F32);
        // 320 columns: Q4_K -> Q5_0, output Q8_0.
        let p = plan(
            &m,
            &dense_tensors(8, 320, false),
            FileTypePreset::Q4_K_M,
            &MixOptions::default(),
        )
        .unwrap();
        assert_eq!(ty(&p, "blk.1.attn_q.weight"), GgmlType::Q5_0);
        assert_eq!(ty(&p, "output.weight"), GgmlType::Q8_0);
        assert!(p.n_fallback > 0);
    }

    #[test]
    fn manual_overrides_do_not_advance_counters() {
        let m = model(8, 4, 2, 0);
        let opts = MixOptions {
            tensor_types: vec![TensorTypeOverride::parse(r"BLK\.0\.attn_v=q8_0").unwrap()],
            ..MixOptions::default()
        };
        let p = plan(
            &m,
            &dense_tensors(8, 256, false),
            FileTypePreset::Q3_K_M,
            &opts,
        )
        .unwrap();
        assert_eq!(ty(&p, "blk.0.attn_v.weight"), GgmlType::Q8_0);
        // The first two *mixed* attn_v get Q5_K: layers 1 and 2.
        assert_eq!(ty(&p, "blk.1.attn_v.weight"), GgmlType::Q5_K);
        assert_eq!(ty(&p, "blk.2.attn_v.weight"), GgmlType::Q5_K);
        assert_eq!(ty(&p, "blk.3.attn_v.weight"), GgmlType::Q4_K);
    }

    #[test]
    fn override_syntax_errors_are_reported() {
        assert!(matches!(
            TensorTypeOverride::parse("attn_v"),
            Err(MixError::MalformedOverride(_))
        ));
        assert!(matches!(
            TensorTypeOverride::parse("attn_v=q9_9"),
            Err(MixError::UnknownOverrideType { .. })
        ));
        assert!(matches!(
            TensorTypeOverride::parse(r"(a)\1=q8_0"),
            Err(MixError::BadPattern { .. })
        ));
    }

    #[test]
    fn output_metadata_moves_version_and_file_type_last() {
        let mut md = Metadata::new();
        md.set("general.architecture", "llama");
        md.set("general.file_type", 1u32);
        md.set("general.quantization_version", 2u32);
        md.set("split.count", 1u16);
        md.set("llama.block_count", 8u32);
        let out = output_metadata(
            &md,
            FileTypePreset::Q4_0,
            Some(&ImatrixKv {
                file: "x".repeat(200),
                dataset: Some("d".into()),
                entries: 3,
                chunks: 0,
            }),
        );
        let keys: Vec<&str> = out.iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            vec![
                "general.architecture",
                "llama.block_count",
                "general.quantization_version",
                "general.file_type",
                "quantize.imatrix.file",
                "quantize.imatrix.dataset",
                "quantize.imatrix.entries_count",
            ]
        );
        assert_eq!(out.get("general.file_type"), Some(&Value::U32(2)));
        assert_eq!(
            out.get_str("quantize.imatrix.file").map(str::len),
            Some(127)
        );
    }
}
