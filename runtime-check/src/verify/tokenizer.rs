//! The tokenizer layer: llama.cpp's tokenizer rebuilt from the GGUF ([`crate::tokcheck`])
//! against the HF `tokenizer.json` on the fixed test texts, and against the ids a logits fixture
//! recorded for its prompts.
//!
//! A difference is a failure unless re-running with one of llama.cpp's known behaviours
//! replaced by HF's makes it disappear; then it is a finding (warn): llama.cpp will tokenize
//! that way for any correctly converted file.

use std::path::Path;

use gguf::GgufModel;
use serde::Serialize;

use super::{Check, Layer, Options, Status};
use crate::error::RuntimeError;
use crate::fixture::LogitsFixture;
use crate::tokcheck::{
    compare_case, compare_fixture_prompt, CaseResult, GgufTokenizer, HfTokenizer, TokCheckError,
};

/// One compared text, with where its reference came from.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CaseReport {
    /// "tokenizer.json" or "fixture".
    pub reference: &'static str,
    #[serde(flatten)]
    pub result: CaseResult,
}

fn describe(r: &CaseResult) -> (Status, String) {
    let Some(d) = &r.first_difference else {
        let extra = if r.prefix_only {
            " (the fixture kept only a prefix)"
        } else {
            ""
        };
        return (
            Status::Pass,
            format!("{} tokens agree{extra}", r.n_reference),
        );
    };
    let tok = |id: Option<u32>, t: &Option<String>| match (id, t) {
        (Some(id), Some(t)) => format!("{id} {t:?}"),
        (Some(id), None) => id.to_string(),
        _ => "end of sequence".to_string(),
    };
    let mut s = format!(
        "first difference at token {}: reference {} vs GGUF {}",
        d.position,
        tok(d.reference_id, &d.reference_token),
        tok(d.gguf_id, &d.gguf_token)
    );
    if let (Some(o), Some(c)) = (d.text_offset, &d.context) {
        s.push_str(&format!(", text byte {o}: {c:?}"));
    }
    s.push_str(&format!(" ({} vs {} tokens)", r.n_reference, r.n_gguf));
    if r.known_divergence.is_empty() {
        if let Some(d) = &r.remaining_difference {
            s.push_str(&format!(
                "; with llama.cpp's known differences from HF set aside, the first remaining one is at token {}: reference {} vs GGUF {}",
                d.position,
                tok(d.reference_id, &d.reference_token),
                tok(d.gguf_id, &d.gguf_token)
            ));
            if let (Some(o), Some(c)) = (d.text_offset, &d.context) {
                s.push_str(&format!(", text byte {o}: {c:?}"));
            }
        }
        (Status::Fail, s)
    } else {
        let why: Vec<String> = r.known_divergence.iter().map(|d| d.describe()).collect();
        (
            Status::Warn,
            format!(
                "{s}; llama.cpp's own behaviour, not the file: {}",
                why.join("; and ")
            ),
        )
    }
}

fn tokenizer_error_status(e: &TokCheckError) -> Status {
    match e {
        // llama.cpp itself refuses these files.
        TokCheckError::Metadata(_) | TokCheckError::UnknownPre(_) => Status::Fail,
        _ => Status::Error,
    }
}

/// Runs the tokenizer layer. `fixture` is the opened `--fixture`, if any.
pub fn run(
    file: &dyn GgufModel,
    opts: &Options,
    fixture: Option<&Result<LogitsFixture, RuntimeError>>,
) -> Layer {
    let mut layer = Layer::new("tokenizer");
    let explicit = opts.tokenizer.is_some();
    let reference_path = opts.tokenizer.as_deref().or(opts.against.as_deref());
    if reference_path.is_none() && fixture.is_none() {
        return Layer::skipped(
            "tokenizer",
            "no reference: pass --against HF_DIR, --tokenizer HF_DIR|tokenizer.json or --fixture",
        );
    }
    let gguf = match GgufTokenizer::from_metadata(file.metadata()) {
        Ok(t) => t,
        Err(e @ TokCheckError::UnsupportedModel(_)) => {
            layer.push(Check::new("rebuild", Status::Skip, e.to_string()));
            return layer;
        }
        Err(e) => {
            layer.push(Check::new(
                "rebuild",
                tokenizer_error_status(&e),
                e.to_string(),
            ));
            return layer;
        }
    };
    layer.push(Check::new(
        "rebuild",
        Status::Pass,
        format!(
            "llama.cpp tokenizer from the GGUF: {} tokens, {}, {} special tokens, add_bos={}{}",
            gguf.n_tokens(),
            match gguf.kind {
                crate::tokcheck::VocabKind::Spm => "SentencePiece (llama)".to_string(),
                crate::tokcheck::VocabKind::Bpe => format!("BPE (gpt2), pre '{}'", gguf.pre),
            },
            gguf.special_tokens().len(),
            gguf.add_bos,
            if gguf.kind == crate::tokcheck::VocabKind::Spm {
                format!(", add_space_prefix={}", gguf.add_space_prefix)
            } else {
                String::new()
            }
        ),
    ));

    if let Some(path) = reference_path {
        run_reference(&mut layer, &gguf, path, explicit);
    }
    if let Some(fx) = fixture {
        match fx {
            Ok(fx) => {
                let add_special =
                    fx.metadata.get("add_special").map(String::as_str) == Some("true");
                for (i, p) in fx.prompts.iter().enumerate() {
                    let Some(text) = &p.text else { continue };
                    let name = format!("fixture prompt {i}");
                    match compare_fixture_prompt(&gguf, &name, text, add_special, &p.tokens) {
                        Ok(r) => {
                            let (status, detail) = describe(&r);
                            layer.push(Check::new(&name, status, detail));
                            layer.tokenizer_cases.push(CaseReport {
                                reference: "fixture",
                                result: r,
                            });
                        }
                        Err(e) => layer.push(Check::new(&name, Status::Error, e.to_string())),
                    }
                }
            }
            Err(e) => layer.push(Check::new("fixture", Status::Error, e.to_string())),
        }
    }
    layer
}

fn run_reference(layer: &mut Layer, gguf: &GgufTokenizer, path: &Path, explicit: bool) {
    let hf = match HfTokenizer::open(path) {
        Ok(h) => h,
        Err(e) => {
            // Implied by --against: a folder without tokenizer.json only skips this part.
            let status = if explicit {
                Status::Error
            } else {
                Status::Skip
            };
            layer.push(Check::new("tokenizer.json", status, e.to_string()));
            return;
        }
    };
    // Tokens tokenizer.json treats as special must be special to llama.cpp too, or it splits
    // them into ordinary pieces (a chat template's markers become text).
    let plain: Vec<String> = hf
        .special_tokens
        .iter()
        .filter(|t| gguf.id_of(t).is_none_or(|id| !gguf.is_special(id)))
        .map(|t| match gguf.id_of(t) {
            Some(id) => format!("{t:?} ({id})"),
            None => format!("{t:?} (absent)"),
        })
        .collect();
    if plain.is_empty() {
        layer.push(Check::new(
            "special tokens",
            Status::Pass,
            format!(
                "all {} special tokens of tokenizer.json are special (CONTROL/USER_DEFINED/UNKNOWN) in the GGUF",
                hf.special_tokens.len()
            ),
        ));
    } else {
        let n = plain.len();
        let shown: Vec<String> = plain.into_iter().take(6).collect();
        layer.push(Check::new(
            "special tokens",
            Status::Fail,
            format!(
                "{n} special token{} of tokenizer.json {} plain text to llama.cpp, which splits {} into pieces: {}{}",
                if n == 1 { "" } else { "s" },
                if n == 1 { "is" } else { "are" },
                if n == 1 { "it" } else { "them" },
                shown.join(", "),
                if n > 6 { ", …" } else { "" }
            ),
        ));
    }
    for case in gguf.test_cases_for(&hf) {
        match compare_case(gguf, &hf, &case) {
            Ok(r) => {
                let (status, detail) = describe(&r);
                layer.push(Check::new(&case.name, status, detail));
                layer.tokenizer_cases.push(CaseReport {
                    reference: "tokenizer.json",
                    result: r,
                });
            }
            Err(e) => layer.push(Check::new(&case.name, Status::Error, e.to_string())),
        }
    }
}
