//! Tokenizer → GGUF vocabulary metadata (`tokenizer.*` KVs), as llama.cpp's
//! `convert_hf_to_gguf.py` writes them.
//!
//! # What is reproduced
//!
//! [`vocab_metadata`] returns the tokenizer KVs of one checkpoint in the order and with the value
//! types llama.cpp's converter writes them (they follow `general.quantization_version`). Each
//! supported Hugging Face architecture maps to a small [`Recipe`] (see [`RECIPES`]) that mirrors
//! its `set_vocab`: which vocabulary sources are tried in which order and what extra keys are
//! written around them. The sources are:
//!
//! * **SentencePiece** (`tokenizer.model`; model `llama`, pre `default`): pieces, scores and types
//!   read from the protobuf by a small hand-written reader ([`spm`]), padded to the config's
//!   `vocab_size` with `[PAD{i}]`, overridden by `added_tokens.json` and `tokenizer_config.json`'s
//!   `added_tokens_decoder` (Phi-3 has its own variant that also applies `tokenizer.json`'s
//!   `added_tokens`).
//! * **LlamaHfVocab** (`tokenizer.json` BPE with byte fallback and a `Sequence` decoder; model
//!   `llama`): tokens by id, score −1000, `<0xNN>` → BYTE, special tokens → CONTROL, added tokens
//!   appended.
//! * **GPT-2 BPE** (`tokenizer.json` byte-level BPE; model `gpt2`): tokens by id with holes as
//!   `[PAD{i}]`, added tokens CONTROL when special or special-looking else USER_DEFINED (after
//!   llama.cpp's encode/decode round trip of non-normalized ones), merges in llama.cpp's string
//!   form, and `tokenizer.ggml.pre`.
//!
//! then gguf-py's `SpecialVocab` ([`special`]): special token ids, `add_{bos,eos,sep}_token`,
//! chat template(s) and normalizer flags, in discovery order. Where llama.cpp reads tokenizer
//! data through `transformers.AutoTokenizer`, [`hf`] models the parts of transformers' loading
//! that change the output (default special tokens of the resolved tokenizer class).
//!
//! # `tokenizer.ggml.pre`: from the definition, not from a hash
//!
//! llama.cpp identifies a BPE pre-tokenizer by hashing the ids of a test string, so any
//! retrained vocabulary fails with "BPE pre-tokenizer was not recognized" even when its
//! pre-tokenizer is a stock one. We instead read the pre-tokenizer *definition* in
//! `tokenizer.json` (Split regexes, `ByteLevel` `use_regex`, `Digits`, …), translate it to the
//! regex list llama.cpp's runtime would need, and compare it with the regex list llama.cpp
//! implements for every pre name (extracted from `src/llama-vocab.cpp`). The hash table
//! (extracted from `get_vocab_base_pre`) is consulted only to pick llama.cpp's exact name among
//! equivalent candidates and as a fallback when the definition matches nothing; an unknown
//! definition yields an error naming the closest known names and suggesting `--pre NAME`, and
//! `VocabOptions::pre_override` always wins. Details in [`pre`].

mod bpe;
mod error;
mod hf;
pub mod pre;
mod special;
mod spm;
mod util;

use std::path::Path;

use gguf::{Array, Value};
use serde_json::Value as Json;

pub use error::VocabError;
use special::SpecialVocab;
use util::{hparam, read_json_opt, KvList, ModelFiles};

/// Options of [`vocab_metadata`].
#[derive(Clone, Debug, Default)]
pub struct VocabOptions {
    /// `--pre NAME`: the `tokenizer.ggml.pre` value to write for BPE vocabularies, bypassing
    /// detection. Must be a name llama.cpp accepts.
    pub pre_override: Option<String>,
}

/// `gguf.TokenType` / `llama_token_type`, stored as INT32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub(crate) enum TokenType {
    Normal = 1,
    Unknown = 2,
    Control = 3,
    UserDefined = 4,
    Unused = 5,
    Byte = 6,
}

fn type_array(types: &[TokenType]) -> Array {
    Array::I32(types.iter().map(|t| *t as i32).collect())
}

/// `TextModel.does_token_look_special`: added tokens some models forget to mark as special.
pub(crate) fn does_token_look_special(token: &str) -> bool {
    matches!(token, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (token.starts_with("<|") && token.ends_with("|>"))
        || (token.starts_with("<\u{ff5c}") && token.ends_with("\u{ff5c}>"))
        || (token.starts_with("<unused") && token.ends_with('>'))
}

/// Where a vocabulary comes from, in the terms of llama.cpp's `set_vocab` helpers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `_set_vocab_sentencepiece` (skipped when `tokenizer.model` is absent).
    SentencePiece,
    /// `_set_vocab_llama_hf` (skipped unless `tokenizer.json` is a byte-fallback BPE).
    LlamaHf,
    /// `_set_vocab_gpt2`.
    Gpt2,
    /// `Phi3MiniModel.set_vocab`: GPT-2 BPE when `tokenizer_class` is `GPT2Tokenizer`, else its
    /// own SentencePiece loop.
    Phi3,
}

/// One architecture's `set_vocab`, as data.
#[derive(Clone, Copy, Debug)]
pub struct Recipe {
    /// Write `tokenizer.ggml.add_space_prefix` from `tokenizer_config.json`'s
    /// `add_prefix_space` before anything else (`LlamaModel`).
    pub space_prefix_from_tokenizer_config: bool,
    /// Sources tried in order; a source that does not apply falls through to the next one, the
    /// last one must apply.
    pub chain: &'static [Source],
    /// `add_add_space_prefix(False)` after a SentencePiece vocabulary (Gemma).
    pub no_space_prefix_after_spm: bool,
    /// Gemma 1's CodeGemma FIM ids: a second `SpecialVocab` pass with these preset types/ids
    /// (only types gguf-py has a writer for end up in the file).
    pub extra_special: Option<&'static [(&'static str, u32)]>,
    /// `LlamaModel`'s `vocab_size` special cases: 32016 (CodeLlama FIM ids), 49152 (granite
    /// small: `add_bos_token = false`).
    pub llama_vocab_size_rules: bool,
}

const LLAMA: Recipe = Recipe {
    space_prefix_from_tokenizer_config: true,
    chain: &[Source::SentencePiece, Source::LlamaHf, Source::Gpt2],
    no_space_prefix_after_spm: false,
    extra_special: None,
    llama_vocab_size_rules: true,
};
const QWEN2: Recipe = Recipe {
    space_prefix_from_tokenizer_config: false,
    chain: &[Source::SentencePiece, Source::Gpt2],
    no_space_prefix_after_spm: false,
    extra_special: None,
    llama_vocab_size_rules: false,
};
const GEMMA: Recipe = Recipe {
    space_prefix_from_tokenizer_config: false,
    chain: &[Source::SentencePiece],
    no_space_prefix_after_spm: true,
    extra_special: Some(&[
        ("prefix", 67),
        ("suffix", 69),
        ("middle", 68),
        ("fsep", 70),
        ("eot", 107),
    ]),
    llama_vocab_size_rules: false,
};
const GEMMA2: Recipe = Recipe {
    space_prefix_from_tokenizer_config: false,
    chain: &[Source::SentencePiece],
    no_space_prefix_after_spm: true,
    extra_special: None,
    llama_vocab_size_rules: false,
};
const GEMMA3: Recipe = Recipe {
    space_prefix_from_tokenizer_config: false,
    chain: &[Source::SentencePiece, Source::Gpt2],
    no_space_prefix_after_spm: true,
    extra_special: None,
    llama_vocab_size_rules: false,
};
const PHI3: Recipe = Recipe {
    space_prefix_from_tokenizer_config: false,
    chain: &[Source::Phi3],
    no_space_prefix_after_spm: false,
    extra_special: None,
    llama_vocab_size_rules: false,
};
const GPT2: Recipe = Recipe {
    space_prefix_from_tokenizer_config: false,
    chain: &[Source::Gpt2],
    no_space_prefix_after_spm: false,
    extra_special: None,
    llama_vocab_size_rules: false,
};

/// Hugging Face architecture → tokenizer recipe.
pub const RECIPES: &[(&str, Recipe)] = &[
    ("LlamaForCausalLM", LLAMA),
    ("MistralForCausalLM", LLAMA),
    ("Qwen2ForCausalLM", QWEN2),
    ("Qwen3ForCausalLM", QWEN2),
    ("GemmaForCausalLM", GEMMA),
    ("Gemma2ForCausalLM", GEMMA2),
    ("Gemma3ForCausalLM", GEMMA3),
    ("Phi3ForCausalLM", PHI3),
    ("GPT2LMHeadModel", GPT2),
];

pub fn recipe_for(hf_arch: &str) -> Result<&'static Recipe, VocabError> {
    RECIPES
        .iter()
        .find(|(a, _)| *a == hf_arch)
        .map(|(_, r)| r)
        .ok_or_else(|| VocabError::UnsupportedArchitecture {
            arch: hf_arch.to_owned(),
            supported: RECIPES.iter().map(|(a, _)| *a).collect(),
        })
}

/// The tokenizer KVs llama.cpp's converter writes for `hf_arch`, in its order and types.
///
/// `config` is the model's hyperparameters as the converter sees them: `config.json` with
/// transformers' defaults filled in (`vocab_size` in particular); a `text_config` object is
/// looked into as llama.cpp merges it over the root. `config.json` on disk is also read, as
/// gguf-py's `SpecialVocab` does, for `*_token_id`.
///
/// All keys are `tokenizer.*`; none of the supported architectures writes a tokenizer key from
/// its hyperparameter code, so the caller can append the result after
/// `general.quantization_version`.
pub fn vocab_metadata(
    model_dir: &Path,
    hf_arch: &str,
    config: &Json,
    opts: &VocabOptions,
) -> Result<Vec<(String, Value)>, VocabError> {
    let recipe = recipe_for(hf_arch)?;
    let files = ModelFiles::new(model_dir);
    let mut kv = KvList::default();

    if recipe.space_prefix_from_tokenizer_config {
        if files.path("tekken.json").is_file() && !files.tokenizer_json().is_file() {
            return Err(VocabError::Missing {
                path: files.tokenizer_json(),
                why: "Mistral tekken.json-only checkpoints are not supported; convert a checkpoint with tokenizer.json".into(),
            });
        }
        if let Some(tc) = read_json_opt(&files.tokenizer_config())? {
            match tc.get("add_prefix_space") {
                None | Some(Json::Null) => {}
                Some(Json::Bool(b)) => kv.bool("tokenizer.ggml.add_space_prefix", *b),
                Some(other) => {
                    return Err(VocabError::bad(
                        files.tokenizer_config(),
                        format!("add_prefix_space must be a boolean, found {other}"),
                    ))
                }
            }
            if tc.get("tokenizer_class").and_then(Json::as_str) == Some("HybridDNATokenizer") {
                return Err(VocabError::bad(
                    files.tokenizer_config(),
                    "HybridDNATokenizer vocabularies are not supported",
                ));
            }
        }
    }

    let used = run_chain(recipe, &files, config, opts, &mut kv)?;

    if recipe.no_space_prefix_after_spm && used == Source::SentencePiece {
        if let Some(extra) = recipe.extra_special {
            let types: Vec<&str> = extra.iter().map(|(t, _)| *t).collect();
            let mut sv = SpecialVocab::load(model_dir, false, Some(&types), None)?;
            for (typ, id) in extra {
                sv.set_special_token(typ, Some(&Json::from(*id)))?;
            }
            sv.chat_template = None; // "do not add it twice"
            sv.add_to_gguf(&mut kv)?;
        }
        kv.bool("tokenizer.ggml.add_space_prefix", false);
    }

    if recipe.llama_vocab_size_rules {
        let vocab_size = match hparam(config, "vocab_size") {
            None => Some(32000),
            Some(v) => util::json_int(v),
        };
        if vocab_size == Some(32016) {
            let types = ["prefix", "suffix", "middle", "eot"];
            let mut sv = SpecialVocab::load(model_dir, false, Some(&types), None)?;
            for (typ, id) in [
                ("prefix", 32007),
                ("suffix", 32008),
                ("middle", 32009),
                ("eot", 32010),
            ] {
                sv.set_special_token(typ, Some(&Json::from(id)))?;
            }
            sv.add_to_gguf(&mut kv)?;
        }
        if vocab_size == Some(49152) {
            kv.bool("tokenizer.ggml.add_bos_token", false);
        }
    }
    Ok(kv.into_vec())
}

/// How `tokenizer.ggml.pre` would be chosen for the byte-level BPE `tokenizer.json` in
/// `model_dir` (for diagnostics and tests). With `use_hash == false` only the definition is
/// consulted, as for a retrained vocabulary whose hash no table can know.
pub fn detect_pre(
    model_dir: &Path,
    config: &Json,
    use_hash: bool,
) -> Result<pre::PreChoice, VocabError> {
    let hf = hf::HfTokenizer::load(model_dir, config)?;
    let runtime = if use_hash { Some(hf.runtime()?) } else { None };
    pre::choose_pre(&hf.path, &hf.json, runtime.as_ref(), None)
}

/// Runs the recipe's sources in order; returns the one that produced the vocabulary.
fn run_chain(
    recipe: &Recipe,
    files: &ModelFiles,
    config: &Json,
    opts: &VocabOptions,
    kv: &mut KvList,
) -> Result<Source, VocabError> {
    let last = recipe.chain.len().saturating_sub(1);
    for (i, source) in recipe.chain.iter().enumerate() {
        let is_last = i == last;
        match source {
            Source::SentencePiece => {
                if !files.tokenizer_model().is_file() && !is_last {
                    continue;
                }
                let v = spm::create_vocab_sentencepiece(&files.dir, config)?;
                write_llama_vocab(kv, &files.dir, v.tokens, v.scores, &v.types)?;
                return Ok(Source::SentencePiece);
            }
            Source::LlamaHf => {
                let tj = read_json_opt(&files.tokenizer_json())?;
                if let Err(why) = bpe::llama_hf_applies(tj.as_ref()) {
                    if !is_last {
                        continue;
                    }
                    return Err(VocabError::bad(
                        files.tokenizer_json(),
                        format!("not a Llama byte-fallback BPE tokenizer ({why:?})"),
                    ));
                }
                let hf = hf::HfTokenizer::load(&files.dir, config)?;
                let t = bpe::llama_hf_tokens(&hf)?;
                write_llama_vocab(kv, &files.dir, t.tokens, t.scores, &t.types)?;
                return Ok(Source::LlamaHf);
            }
            Source::Gpt2 => {
                write_gpt2_vocab(kv, files, config, opts)?;
                return Ok(Source::Gpt2);
            }
            Source::Phi3 => {
                if let Some(tc) = read_json_opt(&files.tokenizer_config())? {
                    let class = tc.get("tokenizer_class").ok_or_else(|| {
                        VocabError::bad(
                            files.tokenizer_config(),
                            "no tokenizer_class (llama.cpp's Phi-3 converter requires it)",
                        )
                    })?;
                    if class.as_str() == Some("GPT2Tokenizer") {
                        write_gpt2_vocab(kv, files, config, opts)?;
                        return Ok(Source::Gpt2);
                    }
                }
                let v = spm::create_vocab_phi3(&files.dir, config)?;
                write_llama_vocab(kv, &files.dir, v.tokens, v.scores, &v.types)?;
                return Ok(Source::SentencePiece);
            }
        }
    }
    Err(VocabError::Missing {
        path: files.dir.clone(),
        why: "no tokenizer files this architecture can use".into(),
    })
}

/// Model "llama" (SentencePiece or LlamaHfVocab) vocabularies, then `SpecialVocab(n_vocab)`.
fn write_llama_vocab(
    kv: &mut KvList,
    dir: &Path,
    tokens: Vec<String>,
    scores: Vec<f32>,
    types: &[TokenType],
) -> Result<(), VocabError> {
    let n = tokens.len();
    kv.string("tokenizer.ggml.model", "llama");
    kv.string("tokenizer.ggml.pre", "default");
    kv.array("tokenizer.ggml.tokens", Array::String(tokens));
    kv.array("tokenizer.ggml.scores", Array::F32(scores));
    kv.array("tokenizer.ggml.token_type", type_array(types));
    SpecialVocab::load(dir, false, None, Some(n))?.add_to_gguf(kv)
}

/// `_set_vocab_gpt2`.
fn write_gpt2_vocab(
    kv: &mut KvList,
    files: &ModelFiles,
    config: &Json,
    opts: &VocabOptions,
) -> Result<(), VocabError> {
    if !files.tokenizer_json().is_file() {
        return Err(VocabError::Missing {
            path: files.tokenizer_json(),
            why: "a BPE vocabulary needs tokenizer.json".into(),
        });
    }
    let hf = hf::HfTokenizer::load(&files.dir, config)?;
    // The hash only refines or backs up the definition, so a tokenizer.json the `tokenizers`
    // crate cannot run does not stop a conversion whose definition is recognized.
    let (runtime, runtime_err) = match opts.pre_override {
        Some(_) => (None, None),
        None => match hf.runtime() {
            Ok(t) => (Some(t), None),
            Err(e) => (None, Some(e.to_string())),
        },
    };
    let choice = match pre::choose_pre(
        &hf.path,
        &hf.json,
        runtime.as_ref(),
        opts.pre_override.as_deref(),
    ) {
        Err(VocabError::UnknownPreTokenizer {
            path,
            definition,
            closest,
            ..
        }) if runtime_err.is_some() => Err(VocabError::UnknownPreTokenizer {
            path,
            definition,
            chkhsh: format!("not computed: {}", runtime_err.unwrap_or_default()),
            closest,
        }),
        other => other,
    }?;
    let base = bpe::get_vocab_base(&hf, config)?;
    kv.string("tokenizer.ggml.model", "gpt2");
    kv.string("tokenizer.ggml.pre", &choice.name);
    kv.array("tokenizer.ggml.tokens", Array::String(base.tokens));
    kv.array("tokenizer.ggml.token_type", type_array(&base.types));
    SpecialVocab::load(&files.dir, true, None, None)?.add_to_gguf(kv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_looking_tokens() {
        for t in [
            "<pad>",
            "<mask>",
            "<|im_start|>",
            "<｜begin▁of▁sentence｜>",
            "<unused12>",
            "[@BOS@]",
        ] {
            assert!(does_token_look_special(t), "{t}");
        }
        for t in ["<s>", "<|im_start", "hello", "<tool_call>"] {
            assert!(!does_token_look_special(t), "{t}");
        }
    }

    #[test]
    fn recipes_cover_required_architectures() {
        for a in [
            "LlamaForCausalLM",
            "MistralForCausalLM",
            "Qwen2ForCausalLM",
            "Qwen3ForCausalLM",
            "Gemma2ForCausalLM",
            "Gemma3ForCausalLM",
            "Phi3ForCausalLM",
            "GPT2LMHeadModel",
        ] {
            assert!(recipe_for(a).is_ok(), "{a}");
        }
        assert!(matches!(
            recipe_for("BertModel"),
            Err(VocabError::UnsupportedArchitecture { .. })
        ));
    }
}
