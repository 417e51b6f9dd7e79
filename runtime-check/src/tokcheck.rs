//! Tokenizer check: rebuild llama.cpp's tokenizer from a GGUF's `tokenizer.ggml.*` metadata and
//! compare its token ids with the Hugging Face `tokenizer.json` on a fixed multilingual text.
//!
//! Why: a converter that writes the wrong pre-tokenizer name, drops merges, mislabels token types
//! or flips `add_bos_token` produces a file that loads, runs and generates plausible text, only
//! worse. Nothing fails loudly; the ids fed to the model are simply not the ones it was trained
//! on. Comparing ids on text that exercises every pre-tokenizer rule (code, digits, CJK, emoji,
//! runs of spaces, special tokens) catches that, and the first differing position says where.
//!
//! The GGUF side follows llama.cpp (src/llama-vocab.cpp), not transformers, because the question
//! is "what will llama.cpp feed the model":
//! - special tokens (CONTROL, USER_DEFINED and UNKNOWN types, plus the control-looking texts
//!   llama.cpp promotes) are cut out of the text first, longest first, with Phi-3's right-strip;
//! - `gpt2` vocabularies: the regex list llama.cpp runs for `tokenizer.ggml.pre` (from
//!   [`convert::vocab::pre::llamacpp_regexes`]), GPT-2 byte-to-unicode encoding, then BPE merges
//!   by rank (`tokenizer.ggml.merges` index), with `ignore_merges` where llama.cpp sets it;
//! - `llama` (SentencePiece) vocabularies: spaces escaped to `▁`, a `▁` prefix on every text
//!   fragment that starts the input or follows a special token (when `add_space_prefix`), then
//!   llama.cpp's bigram merging by piece score (ties: leftmost) and `<0xXX>` byte fallback.
//!
//! These are implemented here rather than with the `tokenizers` crate's BPE model because two
//! llama.cpp behaviours cannot be expressed with merge ranks: SentencePiece merging by *score*
//! with leftmost tie-breaking (a vocabulary converted from a `tokenizer.json` BPE has every score
//! equal, so llama.cpp merges leftmost-first), and the space prefix after every special token.
//! The HF side is `tokenizers` running `tokenizer.json`, which is what transformers' fast
//! tokenizers run.
//!
//! Some differences are llama.cpp's own and appear with a correctly converted file; they are
//! reported as findings, not failures, when re-running the GGUF tokenizer with that one llama.cpp
//! behaviour replaced by HF's makes the ids agree (see [`Divergence`]).

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::path::{Path, PathBuf};

use gguf::{Array, Metadata, Value};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TokCheckError {
    #[error("tokenizer metadata: {0}")]
    Metadata(String),
    #[error(
        "tokenizer model '{0}' is not supported by the tokenizer check (supported: llama, gpt2)"
    )]
    UnsupportedModel(String),
    #[error("tokenizer.ggml.pre = '{0}' is not a pre-tokenizer llama.cpp knows (llama.cpp refuses to load this file)")]
    UnknownPre(String),
    #[error("pre-tokenizer regex {regex:?} does not compile: {reason}")]
    Regex { regex: String, reason: String },
    #[error("cannot tokenize: {0}")]
    Encode(String),
    #[error("cannot read the Hugging Face tokenizer {path}: {reason}")]
    Reference { path: PathBuf, reason: String },
}

// llama_token_attr bits (llama.h).
const ATTR_UNKNOWN: u32 = 1 << 1;
const ATTR_UNUSED: u32 = 1 << 2;
const ATTR_NORMAL: u32 = 1 << 3;
const ATTR_CONTROL: u32 = 1 << 4;
const ATTR_USER_DEFINED: u32 = 1 << 5;
const ATTR_BYTE: u32 = 1 << 6;
const ATTR_LSTRIP: u32 = 1 << 8;
const ATTR_RSTRIP: u32 = 1 << 9;

/// Token texts llama.cpp always treats as end-of-generation and forces to CONTROL
/// (`special_eog_ids` detection in `llama_vocab::impl::load`).
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

/// FIM token texts llama.cpp forces to CONTROL when the file does not set the id key.
const FIM_TEXTS: &[(&str, &[&str])] = &[
    (
        "tokenizer.ggml.fim_pre_token_id",
        &[
            "<|fim_prefix|>",
            "<fim-prefix>",
            "<fim_prefix>",
            "<｜fim▁begin｜>",
            "<PRE>",
            "▁<PRE>",
            "<|code_prefix|>",
            "<|prefix|>",
        ],
    ),
    (
        "tokenizer.ggml.fim_suf_token_id",
        &[
            "<|fim_suffix|>",
            "<fim-suffix>",
            "<fim_suffix>",
            "<｜fim▁hole｜>",
            "<SUF>",
            "▁<SUF>",
            "<|code_suffix|>",
            "<|suffix|>",
        ],
    ),
    (
        "tokenizer.ggml.fim_mid_token_id",
        &[
            "<|fim_middle|>",
            "<fim-middle>",
            "<fim_middle>",
            "<｜fim▁end｜>",
            "<MID>",
            "▁<MID>",
            "<|code_middle|>",
            "<|middle|>",
        ],
    ),
    (
        "tokenizer.ggml.fim_pad_token_id",
        &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"],
    ),
    (
        "tokenizer.ggml.fim_rep_token_id",
        &[
            "<|fim_repo|>",
            "<|repo_name|>",
            "<fim-repo>",
            "<REPO>",
            "<reponame>",
        ],
    ),
    ("tokenizer.ggml.fim_sep_token_id", &["<|file_sep|>"]),
];

/// Which of llama.cpp's tokenizer algorithms a vocabulary uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VocabKind {
    /// `tokenizer.ggml.model = llama`: SentencePiece-style bigram merging by score.
    Spm,
    /// `tokenizer.ggml.model = gpt2`: regex pre-tokenizer + rank-ordered BPE merges.
    Bpe,
}

struct BpeSetup {
    regexes: Vec<fancy_regex::Regex>,
    byte_encode: bool,
    ignore_merges: bool,
    escape_whitespace: bool,
    /// Gemma-4's pre type keeps all-newline words whole.
    newline_words: bool,
}

/// Behaviour switches for diagnosing a divergence: each replaces one llama.cpp behaviour by
/// transformers' so that the cause of a difference can be named.
#[derive(Clone, Copy, Debug, Default)]
pub struct Variant<'a> {
    /// SentencePiece: add the `▁` prefix the way tokenizer.json's Metaspace (`prepend_scheme:
    /// first`) does — only to text at the very start of the input, and only when it does not
    /// already begin with a space — instead of llama.cpp's "every fragment that starts the input
    /// or follows a special token".
    pub hf_space_prefix: bool,
    /// SentencePiece: merge by these BPE ranks (`left ++ 0xFF ++ right`, from tokenizer.json's
    /// merge list) instead of by piece score.
    pub merge_ranks: Option<&'a HashMap<Vec<u8>, u32>>,
    /// Strip whitespace next to added tokens as tokenizer.json's `lstrip`/`rstrip` flags say
    /// (token text → (lstrip, rstrip)) instead of by llama.cpp's name-based attributes.
    pub strip: Option<&'a HashMap<String, (bool, bool)>>,
    /// Apply this Unicode normalization form (tokenizer.json's normalizer) to the text first.
    pub normalization: Option<&'a str>,
}

/// llama.cpp's tokenizer for one GGUF vocabulary.
pub struct GgufTokenizer {
    pub kind: VocabKind,
    /// `tokenizer.ggml.pre` as llama.cpp resolves it ("default" when absent).
    pub pre: String,
    tokens: Vec<String>,
    ids: HashMap<Vec<u8>, u32>,
    scores: Vec<f32>,
    attrs: Vec<u32>,
    /// BPE ranks keyed by `left ++ 0xFF ++ right` (0xFF never occurs in UTF-8).
    ranks: HashMap<Vec<u8>, u32>,
    bpe: Option<BpeSetup>,
    /// Special-token cache: CONTROL, USER_DEFINED and UNKNOWN tokens, longest text first.
    special: Vec<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub add_space_prefix: bool,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
}

fn meta_err(msg: impl Into<String>) -> TokCheckError {
    TokCheckError::Metadata(msg.into())
}

fn flag(flags: &[(&str, &str)], key: &str) -> bool {
    flags.iter().any(|(k, v)| *k == key && *v == "true")
}

impl GgufTokenizer {
    /// Builds the tokenizer llama.cpp would build from this metadata.
    pub fn from_metadata(md: &Metadata) -> Result<GgufTokenizer, TokCheckError> {
        let model = md
            .get_str("tokenizer.ggml.model")
            .ok_or_else(|| meta_err("tokenizer.ggml.model is missing"))?;
        let kind = match model {
            "llama" => VocabKind::Spm,
            "gpt2" => VocabKind::Bpe,
            other => return Err(TokCheckError::UnsupportedModel(other.to_string())),
        };
        let tokens: Vec<String> = match md.get("tokenizer.ggml.tokens") {
            Some(Value::Array(Array::String(t))) => t
                .iter()
                .enumerate()
                // llama.cpp renames empty tokens so that they can never match.
                .map(|(i, s)| {
                    if s.is_empty() {
                        format!("[EMPTY_{i}]")
                    } else {
                        s.clone()
                    }
                })
                .collect(),
            _ => {
                return Err(meta_err(
                    "tokenizer.ggml.tokens is missing or not a string array",
                ))
            }
        };
        let n = tokens.len();
        let mut ids = HashMap::with_capacity(n);
        for (i, t) in tokens.iter().enumerate() {
            if let Some(prev) = ids.insert(t.as_bytes().to_vec(), i as u32) {
                return Err(meta_err(format!(
                    "token text {t:?} appears at ids {prev} and {i} (llama.cpp refuses duplicate token texts)"
                )));
            }
        }
        let scores: Vec<f32> = match md.get("tokenizer.ggml.scores") {
            None => vec![0.0; n],
            Some(Value::Array(Array::F32(s))) if s.len() >= n => s[..n].to_vec(),
            Some(Value::Array(Array::I32(s))) if s.len() >= n => {
                s[..n].iter().map(|&v| v as f32).collect()
            }
            Some(_) => {
                return Err(meta_err(format!(
                    "tokenizer.ggml.scores must be an f32 or i32 array of at least {n} entries"
                )))
            }
        };
        let mut attrs: Vec<u32> = match md.get("tokenizer.ggml.token_type") {
            None => vec![ATTR_NORMAL; n],
            Some(Value::Array(Array::I32(t))) if t.len() >= n => t[..n]
                .iter()
                .map(|&ty| match ty {
                    1 => ATTR_NORMAL,
                    2 => ATTR_UNKNOWN,
                    3 => ATTR_CONTROL,
                    4 => ATTR_USER_DEFINED,
                    5 => ATTR_UNUSED,
                    6 => ATTR_BYTE,
                    _ => 0,
                })
                .collect(),
            Some(_) => {
                return Err(meta_err(format!(
                    "tokenizer.ggml.token_type must be an i32 array of at least {n} entries"
                )))
            }
        };

        let pre = md.get_str("tokenizer.ggml.pre").unwrap_or("").to_string();
        let (mut add_bos, mut add_eos, mut add_space_prefix);
        let (mut bos, mut eos): (Option<u32>, Option<u32>);
        let mut ranks = HashMap::new();
        let mut bpe = None;
        match kind {
            VocabKind::Spm => {
                add_bos = true;
                add_eos = false;
                add_space_prefix = true;
                bos = Some(1);
                eos = Some(2);
            }
            VocabKind::Bpe => {
                let merges = match md.get("tokenizer.ggml.merges") {
                    Some(Value::Array(Array::String(m))) => m,
                    _ => {
                        return Err(meta_err(
                            "tokenizer.ggml.merges is missing or not a string array (llama.cpp refuses gpt2 vocabularies without merges)",
                        ))
                    }
                };
                for (rank, m) in merges.iter().enumerate() {
                    // llama.cpp splits at the first space after the first byte.
                    let b = m.as_bytes();
                    let key = match b.iter().skip(1).position(|&c| c == b' ') {
                        Some(p) => {
                            let p = p + 1;
                            let mut k = b[..p].to_vec();
                            k.push(0xFF);
                            k.extend_from_slice(&b[p + 1..]);
                            k
                        }
                        None => vec![0xFF],
                    };
                    // `emplace` keeps the first rank of a duplicated merge.
                    ranks.entry(key).or_insert(rank as u32);
                }
                let regexes = convert::vocab::pre::llamacpp_regexes(&pre)
                    .ok_or_else(|| TokCheckError::UnknownPre(pre.clone()))?;
                let (byte_encode, flags) = convert::vocab::pre::llamacpp_pre_config(&pre)
                    .ok_or_else(|| TokCheckError::UnknownPre(pre.clone()))?;
                let regexes = regexes
                    .iter()
                    .map(|r| {
                        fancy_regex::Regex::new(r).map_err(|e| TokCheckError::Regex {
                            regex: r.to_string(),
                            reason: e.to_string(),
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                add_bos = flag(flags, "add_bos");
                add_eos = false;
                add_space_prefix = false;
                bos = Some(11);
                eos = Some(11);
                bpe = Some(BpeSetup {
                    regexes,
                    byte_encode,
                    ignore_merges: flag(flags, "ignore_merges"),
                    escape_whitespace: flag(flags, "escape_whitespaces"),
                    newline_words: pre == "gemma4" || pre == "granite-embed-multi-311m",
                });
            }
        }
        if let Some(v) = md
            .get("tokenizer.ggml.add_space_prefix")
            .and_then(Value::as_bool)
        {
            add_space_prefix = v;
        }
        // Default ids outside the vocabulary are disabled; ids from the file replace them when
        // they are inside it.
        let in_range = |id: Option<u32>| id.filter(|&i| (i as usize) < n);
        bos = in_range(bos);
        eos = in_range(eos);
        if let Some(v) = md.get_u64("tokenizer.ggml.bos_token_id") {
            if (v as usize) < n {
                bos = Some(v as u32);
            }
        }
        if let Some(v) = md.get_u64("tokenizer.ggml.eos_token_id") {
            if (v as usize) < n {
                eos = Some(v as u32);
            }
        }
        if let Some(v) = md
            .get("tokenizer.ggml.add_bos_token")
            .and_then(Value::as_bool)
        {
            add_bos = v;
        }
        if let Some(v) = md
            .get("tokenizer.ggml.add_eos_token")
            .and_then(Value::as_bool)
        {
            add_eos = v;
        }
        if pre == "gemma4" {
            add_bos = true;
        }

        // Control-looking texts llama.cpp promotes to CONTROL.
        for (i, t) in tokens.iter().enumerate() {
            if EOG_TEXTS.contains(&t.as_str()) {
                attrs[i] |= ATTR_CONTROL;
            }
            for (key, texts) in FIM_TEXTS {
                if !md.contains(key) && texts.contains(&t.as_str()) {
                    attrs[i] |= ATTR_CONTROL;
                }
            }
            if matches!(
                t.as_str(),
                "<|channel|>" | "<|message|>" | "<|start|>" | "<|constrain|>"
            ) {
                attrs[i] = ATTR_USER_DEFINED;
            }
        }
        let mut special: Vec<u32> = (0..n as u32)
            .filter(|&i| attrs[i as usize] & (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN) != 0)
            .collect();
        special.sort_by(|&a, &b| {
            tokens[b as usize]
                .len()
                .cmp(&tokens[a as usize].len())
                .then(a.cmp(&b))
        });

        // Per-model strip attributes (set after the cache is built, as llama.cpp does).
        let name = md
            .get_str("general.name")
            .unwrap_or("")
            .to_ascii_lowercase();
        let arch = md.get_str("general.architecture").unwrap_or("");
        let set = |attrs: &mut Vec<u32>, text: &str, bit: u32, on: bool| {
            if let Some(&id) = ids.get(text.as_bytes()) {
                if on {
                    attrs[id as usize] |= bit;
                } else {
                    attrs[id as usize] &= !bit;
                }
            }
        };
        if ["jina-v2-de", "jina-v2-es", "jina-v2-code"]
            .iter()
            .any(|p| pre.contains(p))
            || ["nomic-bert-moe", "jina-bert-v3"]
                .iter()
                .any(|a| arch.contains(a))
        {
            set(&mut attrs, "<mask>", ATTR_LSTRIP, true);
        } else if name.contains("phi-3") || name.contains("phi3") {
            for &id in &special {
                attrs[id as usize] |= ATTR_RSTRIP;
            }
            set(&mut attrs, "</s>", ATTR_RSTRIP, true);
            for t in ["<unk>", "<s>", "<|endoftext|>"] {
                set(&mut attrs, t, ATTR_RSTRIP, false);
            }
        } else if name.contains("modern-bert") {
            set(&mut attrs, "[MASK]", ATTR_LSTRIP, true);
        }

        Ok(GgufTokenizer {
            kind,
            pre: if pre.is_empty() {
                "default".into()
            } else {
                pre
            },
            tokens,
            ids,
            scores,
            attrs,
            ranks,
            bpe,
            special,
            add_bos,
            add_eos,
            add_space_prefix,
            bos,
            eos,
        })
    }

    pub fn n_tokens(&self) -> usize {
        self.tokens.len()
    }

    /// The text of a token id (empty for ids outside the vocabulary).
    pub fn token_text(&self, id: u32) -> &str {
        self.tokens
            .get(id as usize)
            .map(String::as_str)
            .unwrap_or("")
    }

    /// Is this id one llama.cpp cuts out of the text before tokenizing (CONTROL, USER_DEFINED,
    /// UNKNOWN)?
    pub fn is_special(&self, id: u32) -> bool {
        self.attrs
            .get(id as usize)
            .is_some_and(|a| a & (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN) != 0)
    }

    /// Is this a CONTROL token (after llama.cpp's promotions)?
    pub fn is_control(&self, id: u32) -> bool {
        self.attrs
            .get(id as usize)
            .is_some_and(|a| a & ATTR_CONTROL != 0)
    }

    /// The id of a token text, if the vocabulary has it.
    pub fn id_of(&self, text: &str) -> Option<u32> {
        self.lookup(text.as_bytes())
    }

    /// The special-token cache, longest text first.
    pub fn special_tokens(&self) -> &[u32] {
        &self.special
    }

    /// `llama_tokenize(text, add_special, parse_special = true)`.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>, TokCheckError> {
        self.encode_variant(text, add_special, Variant::default())
    }

    /// [`GgufTokenizer::encode`] with some llama.cpp behaviours replaced (diagnosis only).
    pub fn encode_variant(
        &self,
        text: &str,
        add_special: bool,
        variant: Variant<'_>,
    ) -> Result<Vec<u32>, TokCheckError> {
        let normalized;
        let text = match variant.normalization {
            Some(form) => {
                normalized = normalize(form, text);
                normalized.as_str()
            }
            None => text,
        };
        let frags = self.partition(text, variant.strip);
        let mut out = Vec::new();
        if add_special && self.add_bos {
            out.push(self.bos.ok_or_else(|| {
                TokCheckError::Encode("add_bos is set but there is no BOS token".into())
            })?);
        }
        match self.kind {
            VocabKind::Spm => {
                let mut prev_special = true;
                for f in &frags {
                    match f {
                        Frag::Text(s) => {
                            let mut t = String::new();
                            let prefix = if variant.hf_space_prefix {
                                // Offset 0 of the input, and not already starting with a space.
                                s.as_ptr() == text.as_ptr() && !s.starts_with(' ')
                            } else {
                                prev_special
                            };
                            if self.add_space_prefix && prefix {
                                t.push(' ');
                            }
                            t.push_str(s);
                            let t = t.replace(' ', "\u{2581}");
                            self.spm_tokenize(t.as_bytes(), variant.merge_ranks, &mut out)?;
                            prev_special = false;
                        }
                        Frag::Token(id) => {
                            out.push(*id);
                            prev_special = true;
                        }
                    }
                }
            }
            VocabKind::Bpe => {
                for f in &frags {
                    match f {
                        Frag::Text(s) => self.bpe_tokenize(s, &mut out)?,
                        Frag::Token(id) => out.push(*id),
                    }
                }
            }
        }
        if add_special && self.add_eos {
            out.push(self.eos.ok_or_else(|| {
                TokCheckError::Encode("add_eos is set but there is no EOS token".into())
            })?);
        }
        Ok(out)
    }

    /// `tokenizer_st_partition`: cut special tokens out of the text, longest first.
    fn partition<'t>(
        &self,
        text: &'t str,
        strip: Option<&HashMap<String, (bool, bool)>>,
    ) -> Vec<Frag<'t>> {
        let mut frags = if text.is_empty() {
            Vec::new()
        } else {
            vec![Frag::Text(text)]
        };
        for &id in &self.special {
            let tok = self.tokens[id as usize].as_str();
            let (lstrip, rstrip) = match strip {
                Some(map) => map.get(tok).copied().unwrap_or((false, false)),
                None => {
                    let attr = self.attrs[id as usize];
                    (attr & ATTR_LSTRIP != 0, attr & ATTR_RSTRIP != 0)
                }
            };
            let mut next = Vec::with_capacity(frags.len());
            for f in frags {
                let Frag::Text(mut rest) = f else {
                    next.push(f);
                    continue;
                };
                while let Some(pos) = rest.find(tok) {
                    let mut left = &rest[..pos];
                    if lstrip {
                        left = left.trim_end_matches(is_c_space);
                    }
                    if !left.is_empty() {
                        next.push(Frag::Text(left));
                    }
                    next.push(Frag::Token(id));
                    rest = &rest[pos + tok.len()..];
                    if rstrip {
                        rest = rest.trim_start_matches(is_c_space);
                    }
                }
                if !rest.is_empty() {
                    next.push(Frag::Text(rest));
                }
            }
            frags = next;
        }
        frags
    }

    fn lookup(&self, bytes: &[u8]) -> Option<u32> {
        self.ids.get(bytes).copied()
    }

    /// `llm_tokenizer_spm_session::tokenize` on an already escaped fragment.
    fn spm_tokenize(
        &self,
        text: &[u8],
        merge_ranks: Option<&HashMap<Vec<u8>, u32>>,
        out: &mut Vec<u32>,
    ) -> Result<(), TokCheckError> {
        let mut syms: Vec<Sym> = Vec::new();
        push_utf8_symbols(&mut syms, text, 0);
        if syms.is_empty() {
            return Ok(());
        }
        // Max-heap on (score, then the leftmost position).
        #[derive(PartialEq)]
        struct Bigram {
            score: f64,
            left: usize,
            right: usize,
            size: usize,
        }
        impl Eq for Bigram {}
        impl PartialOrd for Bigram {
            fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
                Some(self.cmp(o))
            }
        }
        impl Ord for Bigram {
            fn cmp(&self, o: &Self) -> Ordering {
                self.score
                    .total_cmp(&o.score)
                    .then_with(|| o.left.cmp(&self.left))
            }
        }
        let mut queue = BinaryHeap::new();
        let try_add = |queue: &mut BinaryHeap<Bigram>, syms: &[Sym], l: usize, r: usize| {
            let s = syms[l].start;
            let size = syms[l].n + syms[r].n;
            let score = match merge_ranks {
                None => self
                    .lookup(&text[s..s + size])
                    .map(|id| self.scores[id as usize] as f64),
                Some(ranks) => {
                    let mut key = text[s..s + syms[l].n].to_vec();
                    key.push(0xFF);
                    key.extend_from_slice(&text[s + syms[l].n..s + size]);
                    ranks.get(&key).map(|&r| -(r as f64))
                }
            };
            if let Some(score) = score {
                queue.push(Bigram {
                    score,
                    left: l,
                    right: r,
                    size,
                });
            }
        };
        for i in 1..syms.len() {
            try_add(&mut queue, &syms, i - 1, i);
        }
        while let Some(b) = queue.pop() {
            let (l, r) = (b.left, b.right);
            if syms[l].n == 0 || syms[r].n == 0 || syms[l].n + syms[r].n != b.size {
                continue;
            }
            syms[l].n += syms[r].n;
            syms[r].n = 0;
            syms[l].next = syms[r].next;
            if let Some(nx) = syms[r].next {
                syms[nx].prev = Some(l);
            }
            if let Some(p) = syms[l].prev {
                try_add(&mut queue, &syms, p, l);
            }
            if let Some(nx) = syms[l].next {
                try_add(&mut queue, &syms, l, nx);
            }
        }
        // Merged symbols are always vocabulary pieces; llama.cpp's `rev_merge` recursion is only
        // reached for text outside the vocabulary, which no merge produced, so unknown symbols
        // go straight to byte fallback.
        let mut i = Some(0);
        while let Some(k) = i {
            let s = &syms[k];
            let piece = &text[s.start..s.start + s.n];
            match self.lookup(piece) {
                Some(id) => out.push(id),
                None => {
                    for &byte in piece {
                        out.push(self.spm_byte_token(byte)?);
                    }
                }
            }
            i = s.next;
        }
        Ok(())
    }

    /// `llama_vocab::byte_to_token` for SentencePiece vocabularies.
    fn spm_byte_token(&self, byte: u8) -> Result<u32, TokCheckError> {
        self.lookup(format!("<0x{byte:02X}>").as_bytes())
            .or_else(|| self.lookup(&[byte]))
            .ok_or_else(|| {
                TokCheckError::Encode(format!(
                    "no byte-fallback token <0x{byte:02X}> in the vocabulary (llama.cpp throws here)"
                ))
            })
    }

    /// `llm_tokenizer_bpe_session::tokenize` on one raw-text fragment.
    fn bpe_tokenize(&self, text: &str, out: &mut Vec<u32>) -> Result<(), TokCheckError> {
        let Some(setup) = &self.bpe else {
            return Err(TokCheckError::Encode(
                "BPE tokenizer without a pre-tokenizer".into(),
            ));
        };
        let escaped;
        let text = if setup.escape_whitespace {
            escaped = text.replace(' ', "\u{2581}");
            escaped.as_str()
        } else {
            text
        };
        let mut pieces: Vec<&str> = vec![text];
        for re in &setup.regexes {
            let mut next = Vec::with_capacity(pieces.len() * 2);
            for p in pieces {
                let mut last = 0;
                for m in re.find_iter(p) {
                    let m = m.map_err(|e| {
                        TokCheckError::Encode(format!("regex {}: {e}", re.as_str()))
                    })?;
                    if m.start() == m.end() {
                        continue;
                    }
                    if m.start() > last {
                        next.push(&p[last..m.start()]);
                    }
                    next.push(&p[m.start()..m.end()]);
                    last = m.end();
                }
                if last < p.len() {
                    next.push(&p[last..]);
                }
            }
            pieces = next;
        }
        for word in pieces {
            let word: Vec<u8> = if setup.byte_encode {
                let mut s = String::with_capacity(word.len() * 2);
                for &b in word.as_bytes() {
                    s.push(byte_to_unicode(b));
                }
                s.into_bytes()
            } else {
                word.as_bytes().to_vec()
            };
            self.bpe_word(setup, &word, out);
        }
        Ok(())
    }

    fn bpe_word(&self, setup: &BpeSetup, word: &[u8], out: &mut Vec<u32>) {
        let mut syms: Vec<Sym> = Vec::new();
        let mut offset = 0;
        let whole = (setup.ignore_merges && self.lookup(word).is_some())
            || (setup.newline_words
                && word.iter().all(|&c| c == b'\n')
                && self.lookup(word).is_some());
        if whole {
            syms.push(Sym {
                start: 0,
                n: word.len(),
                prev: None,
                next: None,
            });
            offset = word.len();
        }
        push_utf8_symbols(&mut syms, word, offset);
        // Min-heap on (rank, left); the merged text detects stale entries.
        let mut queue: BpeQueue = BinaryHeap::new();
        let add = |queue: &mut BpeQueue, syms: &[Sym], l: usize, r: usize| {
            let lt = &word[syms[l].start..syms[l].start + syms[l].n];
            let rt = &word[syms[r].start..syms[r].start + syms[r].n];
            let mut key = Vec::with_capacity(lt.len() + rt.len() + 1);
            key.extend_from_slice(lt);
            key.push(0xFF);
            key.extend_from_slice(rt);
            if let Some(&rank) = self.ranks.get(&key) {
                let mut merged = lt.to_vec();
                merged.extend_from_slice(rt);
                queue.push(Reverse((rank, l, r, merged)));
            }
        };
        for i in 1..syms.len() {
            add(&mut queue, &syms, i - 1, i);
        }
        while let Some(Reverse((_, l, r, merged))) = queue.pop() {
            if syms[l].n == 0 || syms[r].n == 0 {
                continue;
            }
            let cur_l = &word[syms[l].start..syms[l].start + syms[l].n];
            let cur_r = &word[syms[r].start..syms[r].start + syms[r].n];
            if cur_l.len() + cur_r.len() != merged.len()
                || merged[..cur_l.len()] != *cur_l
                || merged[cur_l.len()..] != *cur_r
            {
                continue;
            }
            syms[l].n += syms[r].n;
            syms[r].n = 0;
            syms[l].next = syms[r].next;
            if let Some(nx) = syms[r].next {
                syms[nx].prev = Some(l);
            }
            if let Some(p) = syms[l].prev {
                add(&mut queue, &syms, p, l);
            }
            if let Some(nx) = syms[l].next {
                add(&mut queue, &syms, l, nx);
            }
        }
        for s in syms.iter().filter(|s| s.n > 0) {
            let piece = &word[s.start..s.start + s.n];
            match self.lookup(piece) {
                Some(id) => out.push(id),
                None => {
                    // llama.cpp looks each raw byte up on its own and drops the ones it lacks.
                    for &b in piece {
                        let id = if setup.byte_encode {
                            self.lookup(&[b])
                        } else {
                            self.lookup(format!("<0x{b:02X}>").as_bytes())
                        };
                        if let Some(id) = id {
                            out.push(id);
                        }
                    }
                }
            }
        }
    }
}

/// BPE merge candidates: min-heap on (rank, left index), with the right index and the merged
/// text (which detects entries made stale by an earlier merge).
type BpeQueue = BinaryHeap<Reverse<(u32, usize, usize, Vec<u8>)>>;

#[derive(Clone, Copy, Debug)]
enum Frag<'t> {
    Text(&'t str),
    Token(u32),
}

/// C's `isspace` in the "C" locale.
fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\u{0B}' | '\u{0C}' | '\r')
}

/// `unicode_len_utf8`: the sequence length announced by a lead byte (1 for stray bytes).
/// One symbol of llama.cpp's merge loops (SPM and BPE): a byte range of the text, linked to its
/// neighbours so that merging two is O(1).
struct Sym {
    start: usize,
    n: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// Appends one symbol per UTF-8 character of `text[from..]` (a truncated sequence at the end
/// stays one symbol), linked as a list, as both of llama.cpp's tokenizers start.
fn push_utf8_symbols(syms: &mut Vec<Sym>, text: &[u8], mut from: usize) {
    while from < text.len() {
        let len = utf8_len(text[from]).min(text.len() - from);
        let idx = syms.len();
        syms.push(Sym {
            start: from,
            n: len,
            prev: idx.checked_sub(1),
            next: (from + len < text.len()).then_some(idx + 1),
        });
        from += len;
    }
}

fn utf8_len(b: u8) -> usize {
    match b >> 4 {
        0xC | 0xD => 2,
        0xE => 3,
        0xF => 4,
        _ => 1,
    }
}

/// GPT-2's reversible byte → printable character map.
fn byte_to_unicode(b: u8) -> char {
    let printable = (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
    if printable {
        char::from(b)
    } else {
        // The 68 other bytes map to U+0100.. in byte order.
        let rank = (0..b)
            .filter(|&x| !((b'!'..=b'~').contains(&x) || (0xA1..=0xAC).contains(&x) || x >= 0xAE))
            .count() as u32;
        char::from_u32(0x100 + rank).unwrap_or('\u{FFFD}')
    }
}

/// The fixed texts of the tokenizer check, each aimed at one family of pre-tokenizer rules.
pub const TEST_TEXTS: &[(&str, &str)] = &[
    (
        "english",
        "Hello world! The quick brown fox jumps over the lazy dog. I've been 'told he's there, 'RE you sure? We'Ve a'lL",
    ),
    (
        "code",
        "def add(a, b):\n    return a + b  # sum\n\nfor i in range(10):\n\tprint(f\"{i:>3}\")\n}}]]);\n",
    ),
    (
        "numbers",
        "The year 2024 had 366 days; 3.14159 ≈ π, 1,000,000 and 12345678901234 or 0x1F, 1e-5, 3..3",
    ),
    (
        "cjk",
        "你好，世界！我想在apple工作1314151天～ こんにちは、世界。カタカナ 안녕하세요 세계",
    ),
    (
        "scripts",
        "Привет, мир! нещо на Български مرحبا بالعالم Γειά σου κόσμε ñandú Straße កាន់តែពិសេស",
    ),
    (
        "emoji",
        "🚀 (normal) 😶‍🌫️ (multiple emojis concatenated) ✅ 🦙🦙 👍🏽 🇫🇷 ❤️",
    ),
    (
        "whitespace",
        "  leading\t\ttabs   and    runs\n\n\n   \n trailing   \r\n  \n\n \n\n\n \t \t\t \t\n",
    ),
    (
        "punctuation",
        "------======= ''''''```````\"\"\"\"......!!!!!!?????? (a)[b]{c} <tag attr=\"v\"/> a/b\\c @user #tag $5 100%",
    ),
    (
        "accents",
        // "é" precomposed and decomposed (e + U+0301): NFC normalizers merge them.
        "café cafe\u{301} naïve nai\u{308}ve Ångström",
    ),
];

/// A text case: the fixed texts plus one built from the vocabulary's own special tokens.
#[derive(Clone, Debug)]
pub struct TextCase {
    pub name: String,
    pub text: String,
}

/// Texts of chat-format tokens, used to pick special tokens for the test text and by the
/// structure check (a vocabulary with these needs a chat template).
pub const CHAT_TOKEN_TEXTS: &[&str] = &[
    "<|im_start|>",
    "<|im_end|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<start_of_turn>",
    "<end_of_turn>",
    "[INST]",
    "[/INST]",
    "<|user|>",
    "<|assistant|>",
    "<|system|>",
    "<|end|>",
];

impl GgufTokenizer {
    /// [`TEST_TEXTS`] and a "special" case that embeds BOS/EOS and up to four chat or control
    /// tokens of this vocabulary between ordinary words.
    pub fn test_cases(&self) -> Vec<TextCase> {
        let mut cases: Vec<TextCase> = TEST_TEXTS
            .iter()
            .map(|(n, t)| TextCase {
                name: n.to_string(),
                text: t.to_string(),
            })
            .collect();
        let mut picked: Vec<u32> = Vec::new();
        for id in [self.bos, self.eos].into_iter().flatten() {
            if self.is_special(id) && !picked.contains(&id) {
                picked.push(id);
            }
        }
        let mut chat: Vec<u32> = self
            .special
            .iter()
            .copied()
            .filter(|&id| CHAT_TOKEN_TEXTS.contains(&self.token_text(id)))
            .collect();
        chat.sort_unstable();
        let mut control: Vec<u32> = self
            .special
            .iter()
            .copied()
            .filter(|&id| self.is_control(id) && !self.token_text(id).contains("unused"))
            .collect();
        control.sort_unstable();
        for id in chat.into_iter().chain(control) {
            if picked.len() >= 6 {
                break;
            }
            if !picked.contains(&id) {
                picked.push(id);
            }
        }
        if !picked.is_empty() {
            let texts: Vec<&str> = picked.iter().map(|&id| self.token_text(id)).collect();
            cases.push(TextCase {
                name: "special".into(),
                text: special_text(&texts),
            });
        }
        cases
    }

    /// The cases for a comparison with `hf`: [`TEST_TEXTS`], a "special" case built from the
    /// *reference's* special tokens (so that a token the GGUF wrongly types as normal is still
    /// exercised), and, when it differs, the case built from the GGUF's own special tokens
    /// (which catches the reverse: a normal token typed as control).
    pub fn test_cases_for(&self, hf: &HfTokenizer) -> Vec<TextCase> {
        let mut cases = self.test_cases();
        let own = cases
            .iter()
            .position(|c| c.name == "special")
            .map(|i| cases.remove(i));
        let bos_eos: Vec<&str> = [self.bos, self.eos]
            .into_iter()
            .flatten()
            .map(|id| self.token_text(id))
            .collect();
        let filler = |t: &str| {
            ["unused", "reserved", "placeholder"]
                .iter()
                .any(|w| t.contains(w))
        };
        let mut picked: Vec<&str> = Vec::new();
        let groups: [&dyn Fn(&str) -> bool; 3] = [
            &|t| bos_eos.contains(&t),
            &|t| CHAT_TOKEN_TEXTS.contains(&t),
            &|t| !filler(t),
        ];
        for group in groups {
            for t in &hf.special_tokens {
                if picked.len() < 6 && group(t) && !picked.contains(&t.as_str()) {
                    picked.push(t);
                }
            }
        }
        let hf_case = (!picked.is_empty()).then(|| TextCase {
            name: "special".into(),
            text: special_text(&picked),
        });
        match (hf_case, own) {
            (Some(h), Some(o)) => {
                let differs = h.text != o.text;
                cases.push(h);
                if differs {
                    cases.push(TextCase {
                        name: "special (GGUF's tokens)".into(),
                        text: o.text,
                    });
                }
            }
            (Some(h), None) => cases.push(h),
            (None, Some(o)) => cases.push(o),
            (None, None) => {}
        }
        cases
    }
}

/// Special-token texts interleaved with ordinary words.
fn special_text(texts: &[&str]) -> String {
    let words = [
        "Hello",
        " user\nHi there",
        "\n",
        " Sure!",
        "assistant\n",
        " ok",
    ];
    let mut text = String::new();
    for (i, t) in texts.iter().enumerate() {
        text.push_str(t);
        text.push_str(words[i % words.len()]);
    }
    text
}

/// The Hugging Face reference: `tokenizer.json` run by the `tokenizers` crate.
pub struct HfTokenizer {
    pub path: PathBuf,
    pub tokenizer: tokenizers::Tokenizer,
    /// The `normalizer` of tokenizer.json, as JSON (for diagnosing divergences).
    normalizer: Option<serde_json::Value>,
    /// The BPE merge list of tokenizer.json as ranks (`left ++ 0xFF ++ right`), if it has one.
    merge_ranks: Option<HashMap<Vec<u8>, u32>>,
    /// Added tokens with `lstrip` or `rstrip` set: content → (lstrip, rstrip).
    strip: HashMap<String, (bool, bool)>,
    /// The texts of the added tokens marked `special`, in id order.
    pub special_tokens: Vec<String>,
}

/// One HF encoding with what is needed to point at a difference.
pub struct HfEncoding {
    pub ids: Vec<u32>,
    pub tokens: Vec<String>,
    /// Byte offsets in the input text.
    pub offsets: Vec<(usize, usize)>,
}

impl HfTokenizer {
    /// Loads `tokenizer.json` from a file or from an HF model folder.
    pub fn open(path: &Path) -> Result<HfTokenizer, TokCheckError> {
        let file = if path.is_dir() {
            path.join("tokenizer.json")
        } else {
            path.to_path_buf()
        };
        let err = |reason: String| TokCheckError::Reference {
            path: file.clone(),
            reason,
        };
        if !file.is_file() {
            return Err(err(
                "no tokenizer.json (SentencePiece-only checkpoints need a tokenizer.json for the tokenizer check)".into(),
            ));
        }
        let text = std::fs::read_to_string(&file).map_err(|e| err(e.to_string()))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| err(format!("invalid JSON: {e}")))?;
        let tokenizer = <tokenizers::Tokenizer as std::str::FromStr>::from_str(&text)
            .map_err(|e| err(e.to_string()))?;
        let merge_ranks = json
            .get("model")
            .and_then(|m| m.get("merges"))
            .and_then(|m| m.as_array())
            .map(|merges| {
                let mut ranks = HashMap::with_capacity(merges.len());
                for (rank, m) in merges.iter().enumerate() {
                    // Either "left right" or ["left", "right"].
                    let pair = match m {
                        serde_json::Value::String(s) => s
                            .split_once(' ')
                            .map(|(a, b)| (a.to_string(), b.to_string())),
                        serde_json::Value::Array(a) if a.len() == 2 => {
                            match (a[0].as_str(), a[1].as_str()) {
                                (Some(x), Some(y)) => Some((x.to_string(), y.to_string())),
                                _ => None,
                            }
                        }
                        _ => None,
                    };
                    if let Some((a, b)) = pair {
                        let mut key = a.into_bytes();
                        key.push(0xFF);
                        key.extend_from_slice(b.as_bytes());
                        ranks.entry(key).or_insert(rank as u32);
                    }
                }
                ranks
            });
        let mut strip = HashMap::new();
        let mut specials: Vec<(u64, String)> = Vec::new();
        for t in json
            .get("added_tokens")
            .and_then(|a| a.as_array())
            .into_iter()
            .flatten()
        {
            let flag = |k: &str| t.get(k).and_then(|v| v.as_bool()).unwrap_or(false);
            if let Some(content) = t.get("content").and_then(|c| c.as_str()) {
                if flag("special") {
                    let id = t.get("id").and_then(|i| i.as_u64()).unwrap_or(u64::MAX);
                    specials.push((id, content.to_string()));
                }
                if flag("lstrip") || flag("rstrip") {
                    strip.insert(content.to_string(), (flag("lstrip"), flag("rstrip")));
                }
            }
        }
        Ok(HfTokenizer {
            path: file,
            tokenizer,
            normalizer: json.get("normalizer").filter(|n| !n.is_null()).cloned(),
            merge_ranks,
            strip,
            special_tokens: {
                specials.sort();
                specials.into_iter().map(|(_, t)| t).collect()
            },
        })
    }

    pub fn encode(&self, text: &str, add_special: bool) -> Result<HfEncoding, TokCheckError> {
        let enc = self
            .tokenizer
            .encode(text, add_special)
            .map_err(|e| TokCheckError::Encode(format!("tokenizers: {e}")))?;
        Ok(HfEncoding {
            ids: enc.get_ids().to_vec(),
            tokens: enc.get_tokens().to_vec(),
            offsets: enc.get_offsets().to_vec(),
        })
    }

    /// The Unicode normalization forms tokenizer.json applies (NFC, NFKC, ...), if any.
    pub fn unicode_normalizations(&self) -> Vec<String> {
        fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
            match v.get("type").and_then(|t| t.as_str()) {
                Some(t @ ("NFC" | "NFD" | "NFKC" | "NFKD")) => out.push(t.to_string()),
                Some("Sequence") => {
                    if let Some(items) = v.get("normalizers").and_then(|n| n.as_array()) {
                        for i in items {
                            walk(i, out);
                        }
                    }
                }
                _ => {}
            }
        }
        let mut out = Vec::new();
        if let Some(n) = &self.normalizer {
            walk(n, &mut out);
        }
        out
    }
}

/// Applies a Unicode normalization form the way tokenizers' normalizers do.
fn normalize(form: &str, text: &str) -> String {
    use tokenizers::normalizers::unicode::{NFC, NFD, NFKC, NFKD};
    use tokenizers::{NormalizedString, Normalizer};
    let mut n = NormalizedString::from(text);
    let r = match form {
        "NFC" => NFC.normalize(&mut n),
        "NFD" => NFD.normalize(&mut n),
        "NFKC" => NFKC.normalize(&mut n),
        "NFKD" => NFKD.normalize(&mut n),
        _ => Ok(()),
    };
    match r {
        Ok(()) => n.get().to_string(),
        Err(_) => text.to_string(),
    }
}

/// Why the GGUF tokenizer and the reference disagree, when the cause is a known llama.cpp
/// behaviour rather than the file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Divergence {
    /// tokenizer.json normalizes (NFC/NFKC...); llama.cpp's BPE does not normalize at all.
    Normalization(String),
    /// llama.cpp adds the SentencePiece `▁` prefix to every text fragment that starts the input
    /// or follows a special token, even one that already begins with a space; tokenizer.json's
    /// Metaspace (`prepend_scheme: first`) adds it only at the start of the input, and only
    /// when the text does not begin with a space.
    SpacePrefix,
    /// The GGUF's SentencePiece scores are all equal (the converter writes -1000 for vocabularies
    /// that come from a tokenizer.json BPE), so llama.cpp merges leftmost-first where HF follows
    /// its merge list.
    EqualScores,
    /// tokenizer.json strips whitespace next to some added tokens (`lstrip`/`rstrip`); a GGUF
    /// has no place for these flags and llama.cpp sets them only for models it recognizes by
    /// name (Phi-3 by `general.name`, a few BERTs).
    TokenStrip,
}

impl Divergence {
    pub fn describe(&self) -> String {
        match self {
            Divergence::Normalization(f) => format!(
                "tokenizer.json applies {f} normalization; llama.cpp does not normalize, so text that {f} changes tokenizes differently"
            ),
            Divergence::SpacePrefix => "llama.cpp adds the SentencePiece '▁' prefix after every special token and before text that already starts with a space; tokenizer.json's Metaspace adds it only at the start of the input, and not before a space".into(),
            Divergence::EqualScores => "all SentencePiece scores in the GGUF are equal (the converter writes -1000 for tokenizer.json BPE vocabularies), so llama.cpp merges leftmost-first instead of by HF's merge list".into(),
            Divergence::TokenStrip => "tokenizer.json strips whitespace next to some added tokens (lstrip/rstrip); GGUF cannot record that and llama.cpp strips only for models it recognizes by name".into(),
        }
    }
}

/// The first position where two id sequences differ.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct FirstDifference {
    pub position: usize,
    pub reference_id: Option<u32>,
    pub reference_token: Option<String>,
    pub gguf_id: Option<u32>,
    pub gguf_token: Option<String>,
    /// Byte offset in the text where the reference token starts (when known).
    pub text_offset: Option<usize>,
    /// Up to 24 characters of text around that offset.
    pub context: Option<String>,
}

/// The outcome of one text case.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CaseResult {
    pub name: String,
    pub n_reference: usize,
    pub n_gguf: usize,
    /// `None` when the ids agree.
    pub first_difference: Option<FirstDifference>,
    /// The known llama.cpp behaviours that explain the difference (a finding, not a failure);
    /// empty when the ids agree or nothing explains the difference.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub known_divergence: Vec<Divergence>,
    /// For an unexplained difference: the first difference that remains once every known
    /// llama.cpp behaviour is replaced by HF's (positions in that re-encoding). This is where
    /// the file is wrong when the first difference itself is a known behaviour.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining_difference: Option<FirstDifference>,
    /// The reference ids are a prefix (a fixture prompt truncated to its first N tokens).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub prefix_only: bool,
}

impl CaseResult {
    pub fn agrees(&self) -> bool {
        self.first_difference.is_none()
    }

    pub fn fails(&self) -> bool {
        self.first_difference.is_some() && self.known_divergence.is_empty()
    }
}

fn first_difference(a: &[u32], b: &[u32]) -> Option<usize> {
    let n = a.len().min(b.len());
    (0..n)
        .find(|&i| a[i] != b[i])
        .or(if a.len() != b.len() { Some(n) } else { None })
}

fn context_at(text: &str, offset: usize) -> String {
    let mut start = offset.saturating_sub(8).min(text.len());
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    text[start..].chars().take(24).collect()
}

/// Compares the GGUF tokenizer with the HF reference on one text (special tokens added, special
/// texts parsed, as llama.cpp's `llama-tokenize` and transformers' `encode` do by default).
pub fn compare_case(
    gguf: &GgufTokenizer,
    hf: &HfTokenizer,
    case: &TextCase,
) -> Result<CaseResult, TokCheckError> {
    let reference = hf.encode(&case.text, true)?;
    let ours = gguf.encode(&case.text, true)?;
    let mut result = CaseResult {
        name: case.name.clone(),
        n_reference: reference.ids.len(),
        n_gguf: ours.len(),
        first_difference: None,
        known_divergence: Vec::new(),
        remaining_difference: None,
        prefix_only: false,
    };
    let Some(pos) = first_difference(&reference.ids, &ours) else {
        return Ok(result);
    };
    let describe = |pos: usize, ids: &[u32]| {
        let text_offset = reference.offsets.get(pos).map(|o| o.0);
        FirstDifference {
            position: pos,
            reference_id: reference.ids.get(pos).copied(),
            reference_token: reference.tokens.get(pos).cloned(),
            gguf_id: ids.get(pos).copied(),
            gguf_token: ids.get(pos).map(|&id| gguf.token_text(id).to_string()),
            text_offset,
            context: text_offset.map(|o| context_at(&case.text, o)),
        }
    };
    result.first_difference = Some(describe(pos, &ours));
    let (why, all_replaced) = explain(gguf, hf, case, &reference.ids)?;
    result.known_divergence = why;
    if let Some(ids) = all_replaced {
        if let Some(p) = first_difference(&reference.ids, &ids) {
            if p != pos {
                result.remaining_difference = Some(describe(p, &ids));
            }
        }
    }
    Ok(result)
}

/// Tries the known llama.cpp behaviours, alone and then together: if replacing them by HF's
/// makes the ids agree, they are the cause. The replacements only ever use information of the
/// HF side (its normalizer, its merge list), so a vocabulary that differs from HF's (wrong pieces,
/// types, byte tokens, pre-tokenizer) is never explained away.
fn explain(
    gguf: &GgufTokenizer,
    hf: &HfTokenizer,
    case: &TextCase,
    reference: &[u32],
) -> Result<(Vec<Divergence>, Option<Vec<u32>>), TokCheckError> {
    let forms = hf.unicode_normalizations();
    // Merging by HF's merge list is only a llama.cpp behaviour when the GGUF cannot carry the
    // order: every score equal.
    let ranks = hf
        .merge_ranks
        .as_ref()
        .filter(|_| gguf.kind == VocabKind::Spm && gguf.equal_scores());
    let mut options: Vec<Divergence> = Vec::new();
    if gguf.kind == VocabKind::Bpe {
        if let Some(form) = forms.first() {
            options.push(Divergence::Normalization(form.clone()));
        }
    }
    if gguf.kind == VocabKind::Spm && gguf.add_space_prefix {
        options.push(Divergence::SpacePrefix);
    }
    if ranks.is_some() {
        options.push(Divergence::EqualScores);
    }
    if !hf.strip.is_empty() {
        options.push(Divergence::TokenStrip);
    }
    // Every non-empty subset, smallest first (at most 3 options: 7 re-encodings).
    let mut subsets: Vec<Vec<usize>> = (1u32..(1 << options.len()))
        .map(|mask| {
            (0..options.len())
                .filter(|i| mask & (1 << i) != 0)
                .collect()
        })
        .collect();
    subsets.sort_by_key(Vec::len);
    let variant = |subset: &[usize]| {
        let mut v = Variant::default();
        for &i in subset {
            match &options[i] {
                Divergence::Normalization(f) => v.normalization = Some(f.as_str()),
                Divergence::SpacePrefix => v.hf_space_prefix = true,
                Divergence::EqualScores => v.merge_ranks = ranks,
                Divergence::TokenStrip => v.strip = Some(&hf.strip),
            }
        }
        v
    };
    let mut all_replaced = None;
    for subset in &subsets {
        let v = variant(subset);
        if v.normalization
            .is_some_and(|f| normalize(f, &case.text) == case.text)
        {
            continue;
        }
        let ids = gguf.encode_variant(&case.text, true, v)?;
        if ids == reference {
            return Ok((subset.iter().map(|&i| options[i].clone()).collect(), None));
        }
        if subset.len() == options.len() {
            all_replaced = Some(ids);
        }
    }
    Ok((Vec::new(), all_replaced))
}

impl GgufTokenizer {
    /// Every normal piece has the same score (llama.cpp then merges leftmost-first).
    pub fn equal_scores(&self) -> bool {
        let mut normal = self
            .scores
            .iter()
            .zip(&self.attrs)
            .filter(|(_, &a)| a & ATTR_NORMAL != 0)
            .map(|(s, _)| *s);
        match normal.next() {
            Some(first) => normal.all(|s| s == first),
            None => false,
        }
    }
}

/// Compares against a fixture prompt: the reference ids are what transformers produced when the
/// fixture was made (possibly truncated, so they only have to be a prefix).
pub fn compare_fixture_prompt(
    gguf: &GgufTokenizer,
    name: &str,
    text: &str,
    add_special: bool,
    reference: &[u32],
) -> Result<CaseResult, TokCheckError> {
    let ours = gguf.encode(text, add_special)?;
    let truncated = ours.len() > reference.len() && ours[..reference.len()] == *reference;
    let mut result = CaseResult {
        name: name.to_string(),
        n_reference: reference.len(),
        n_gguf: ours.len(),
        first_difference: None,
        known_divergence: Vec::new(),
        remaining_difference: None,
        prefix_only: truncated,
    };
    if truncated {
        return Ok(result);
    }
    if let Some(pos) = first_difference(reference, &ours) {
        result.first_difference = Some(FirstDifference {
            position: pos,
            reference_id: reference.get(pos).copied(),
            reference_token: reference
                .get(pos)
                .map(|&id| gguf.token_text(id).to_string()),
            gguf_id: ours.get(pos).copied(),
            gguf_token: ours.get(pos).map(|&id| gguf.token_text(id).to_string()),
            text_offset: None,
            context: None,
        });
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_byte_map_matches_the_published_table() {
        // bytes_to_unicode(): '!' stays, space → 'Ġ' (U+0120), newline → 'Ċ' (U+010A),
        // 0xAD → U+0143, 0x7F → U+0121.
        assert_eq!(byte_to_unicode(b'!'), '!');
        assert_eq!(byte_to_unicode(b' '), '\u{120}');
        assert_eq!(byte_to_unicode(b'\n'), '\u{10A}');
        assert_eq!(byte_to_unicode(0xAD), '\u{143}');
        assert_eq!(byte_to_unicode(0x7F), '\u{121}');
        assert_eq!(byte_to_unicode(0), '\u{100}');
        let all: std::collections::HashSet<char> = (0..=255u8).map(byte_to_unicode).collect();
        assert_eq!(all.len(), 256);
    }

    fn spm_vocab(pieces: &[(&str, f32, i32)]) -> Metadata {
        let mut md = Metadata::new();
        md.set("tokenizer.ggml.model", "llama");
        md.set(
            "tokenizer.ggml.tokens",
            Array::String(pieces.iter().map(|p| p.0.to_string()).collect()),
        );
        md.set(
            "tokenizer.ggml.scores",
            Array::F32(pieces.iter().map(|p| p.1).collect()),
        );
        md.set(
            "tokenizer.ggml.token_type",
            Array::I32(pieces.iter().map(|p| p.2).collect()),
        );
        md
    }

    #[test]
    fn spm_merges_by_score_and_prefixes_after_special_tokens() {
        let md = spm_vocab(&[
            ("<unk>", 0.0, 2),
            ("<s>", 0.0, 3),
            ("</s>", 0.0, 3),
            ("▁", -1.0, 1),
            ("a", -1.0, 1),
            ("b", -1.0, 1),
            ("ab", -3.0, 1),
            ("▁a", -2.0, 1),
            ("<0x21>", 0.0, 6),
        ]);
        let t = GgufTokenizer::from_metadata(&md).unwrap();
        // "▁ab": "▁a" (score -2) wins over "ab" (-3); then "b".
        assert_eq!(t.encode("ab", false).unwrap(), vec![7, 5]);
        // BOS added by default; '!' falls back to its byte token.
        assert_eq!(t.encode("a!", true).unwrap(), vec![1, 7, 8]);
        // After a special token the prefix comes back.
        assert_eq!(t.encode("a</s>a", false).unwrap(), vec![7, 2, 7]);
        let v = Variant {
            hf_space_prefix: true,
            ..Variant::default()
        };
        assert_eq!(t.encode_variant("a</s>a", false, v).unwrap(), vec![7, 2, 4]);
        // HF's Metaspace does not add a second space before a leading one; llama.cpp does.
        assert_eq!(t.encode(" a", false).unwrap(), vec![3, 7]);
        assert_eq!(t.encode_variant(" a", false, v).unwrap(), vec![7]);
    }

    #[test]
    fn spm_ties_merge_leftmost() {
        let md = spm_vocab(&[
            ("<unk>", 0.0, 2),
            ("<s>", 0.0, 3),
            ("</s>", 0.0, 3),
            ("a", -1.0, 1),
            ("aa", -1.0, 1),
        ]);
        let mut md = md;
        md.set("tokenizer.ggml.add_space_prefix", false);
        let t = GgufTokenizer::from_metadata(&md).unwrap();
        assert_eq!(t.encode("aaa", false).unwrap(), vec![4, 3]);
    }

    #[test]
    fn bpe_uses_ranks_and_the_pre_tokenizer() {
        let mut md = Metadata::new();
        md.set("tokenizer.ggml.model", "gpt2");
        md.set("tokenizer.ggml.pre", "gpt-2");
        // 'Ġ' is the byte-level space.
        let toks = ["a", "b", "Ġ", "ab", "Ġa", "Ġab", "<|endoftext|>"];
        md.set(
            "tokenizer.ggml.tokens",
            Array::String(toks.iter().map(|s| s.to_string()).collect()),
        );
        md.set(
            "tokenizer.ggml.token_type",
            Array::I32(vec![1, 1, 1, 1, 1, 1, 3]),
        );
        md.set(
            "tokenizer.ggml.merges",
            Array::String(vec![
                "a b".into(),
                "Ġ a".into(),
                "Ġa b".into(),
                "Ġ ab".into(),
            ]),
        );
        let t = GgufTokenizer::from_metadata(&md).unwrap();
        // "ab ab": words "ab", " ab"; " ab" → Ġ a b → (a b rank 0) Ġ ab → (Ġ ab rank 3) Ġab.
        assert_eq!(t.encode("ab ab", true).unwrap(), vec![3, 5]);
        assert_eq!(t.encode("ab<|endoftext|>b", false).unwrap(), vec![3, 6, 1]);
        assert!(!t.add_bos);
    }

    #[test]
    fn unknown_pre_is_refused_like_llama_cpp() {
        let mut md = Metadata::new();
        md.set("tokenizer.ggml.model", "gpt2");
        md.set("tokenizer.ggml.pre", "no-such-pre");
        md.set("tokenizer.ggml.tokens", Array::String(vec!["a".into()]));
        md.set("tokenizer.ggml.merges", Array::String(vec![]));
        assert!(matches!(
            GgufTokenizer::from_metadata(&md),
            Err(TokCheckError::UnknownPre(_))
        ));
    }
}
