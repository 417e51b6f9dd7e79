//! The two `tokenizer.json` BPE paths of llama.cpp's converter:
//! * `get_vocab_base` (model "gpt2": byte-level BPE, tokens by id, holes as `[PAD{i}]`), and
//! * `LlamaHfVocab` (model "llama": SentencePiece-style BPE with byte fallback).

use std::collections::HashMap;

use serde_json::Value as Json;

use super::hf::HfTokenizer;
use super::util::hparam_usize;
use super::{does_token_look_special, TokenType, VocabError};

/// Result of `get_vocab_base` (without the pre-tokenizer name, detected separately).
pub(crate) struct BaseVocab {
    pub tokens: Vec<String>,
    pub types: Vec<TokenType>,
}

/// `TextModel.get_vocab_base` (the token/type part).
pub(crate) fn get_vocab_base(hf: &HfTokenizer, config: &Json) -> Result<BaseVocab, VocabError> {
    let vocab = hf.vocab();
    let vocab_size = match hparam_usize(config, "vocab_size")? {
        Some(n) => n,
        None => vocab.len(),
    };
    if let Some(max) = vocab.values().max() {
        if *max as usize >= vocab_size {
            return Err(VocabError::Config(format!(
                "vocab_size {vocab_size} is smaller than the tokenizer's largest id {max} ({})",
                hf.path.display()
            )));
        }
    }
    // reverse vocab: for an id claimed by both a model token and an added token, the added
    // token's content is what transformers reports
    let mut reverse: HashMap<u32, &str> = HashMap::with_capacity(vocab.len());
    for (tok, &id) in &hf.model_vocab {
        reverse.insert(id, tok.as_str());
    }
    for a in &hf.added {
        reverse.insert(a.id, a.content.as_str());
    }
    let added_vocab = hf.added_vocab();
    let mut runtime: Option<tokenizers::Tokenizer> = None;

    let mut tokens = Vec::with_capacity(vocab_size);
    let mut types = Vec::with_capacity(vocab_size);
    for i in 0..vocab_size {
        let id = i as u32;
        let Some(&tok) = reverse.get(&id) else {
            tokens.push(format!("[PAD{i}]"));
            types.push(TokenType::Unused);
            continue;
        };
        let mut token = tok.to_owned();
        if added_vocab.contains_key(tok) {
            let info = hf.added_by_id(id).ok_or_else(|| {
                VocabError::bad(
                    &hf.path,
                    format!("added token {tok:?} is also the text of token {i}, which is not an added token"),
                )
            })?;
            if !info.normalized {
                // llama.cpp re-encodes and decodes non-normalized added tokens so that they are
                // in the pre-normalized form its tokenizer expects
                if runtime.is_none() {
                    runtime = Some(hf.runtime()?);
                }
                if let Some(rt) = &runtime {
                    token = roundtrip(rt, &hf.path, &token)?;
                }
            }
            if info.special || does_token_look_special(&token) {
                types.push(TokenType::Control);
            } else {
                token = token.replace('\u{2581}', " ");
                types.push(TokenType::UserDefined);
            }
        } else {
            types.push(TokenType::Normal);
        }
        tokens.push(token);
    }
    Ok(BaseVocab { tokens, types })
}

/// `tokenizer.decode(tokenizer.encode(token, add_special_tokens=False))`.
fn roundtrip(
    rt: &tokenizers::Tokenizer,
    path: &std::path::Path,
    token: &str,
) -> Result<String, VocabError> {
    let err = |e: tokenizers::Error| VocabError::Tokenizers {
        path: path.to_path_buf(),
        message: format!("re-encoding added token {token:?}: {e}"),
    };
    let enc = rt.encode(token, false).map_err(err)?;
    rt.decode(enc.get_ids(), false).map_err(err)
}

/// Why `LlamaHfVocab` refuses a `tokenizer.json` (llama.cpp then falls back to the gpt2 path).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NotLlamaHf {
    /// No tokenizer.json (FileNotFoundError).
    Missing,
    /// Llama-3 style byte-level BPE (TypeError).
    Llama3,
    /// Not a byte-fallback BPE with a Sequence decoder (FileNotFoundError / TypeError).
    NotLlamaBpe,
}

/// The pre-check at the top of `LlamaHfVocab.__init__`.
pub(crate) fn llama_hf_applies(tokenizer_json: Option<&Json>) -> Result<(), NotLlamaHf> {
    let Some(tj) = tokenizer_json else {
        return Err(NotLlamaHf::Missing);
    };
    let model = tj.get("model").ok_or(NotLlamaHf::NotLlamaBpe)?;
    let is_bpe = model.get("type").and_then(Json::as_str) == Some("BPE");
    let flag = |k: &str, default: bool| {
        model
            .get(k)
            .map_or(default, |v| super::util::truthy(Some(v)))
    };
    if is_bpe && flag("ignore_merges", false) && !flag("byte_fallback", true) {
        return Err(NotLlamaHf::Llama3);
    }
    let decoder_is_sequence = match tj.get("decoder") {
        Some(Json::Object(d)) => d.get("type").and_then(Json::as_str) == Some("Sequence"),
        _ => false,
    };
    if !is_bpe || !flag("byte_fallback", false) || !decoder_is_sequence {
        return Err(NotLlamaHf::NotLlamaBpe);
    }
    Ok(())
}

pub(crate) struct LlamaHfTokens {
    pub tokens: Vec<String>,
    pub scores: Vec<f32>,
    pub types: Vec<TokenType>,
}

fn is_byte_token(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 6
        && b.starts_with(b"<0x")
        && b[5] == b'>'
        && b[3].is_ascii_hexdigit()
        && b[4].is_ascii_hexdigit()
}

/// `LlamaHfVocab.all_tokens()`: base tokens by id, then added tokens past the base vocabulary in
/// id order (appended, so gaps in their ids are not preserved — as in llama.cpp).
pub(crate) fn llama_hf_tokens(hf: &HfTokenizer) -> Result<LlamaHfTokens, VocabError> {
    let base = hf.base_vocab_size();
    let vocab = hf.vocab();
    let mut reverse: HashMap<u32, &str> = HashMap::with_capacity(vocab.len());
    for (tok, &id) in &hf.model_vocab {
        reverse.insert(id, tok.as_str());
    }
    for a in &hf.added {
        reverse.insert(a.id, a.content.as_str());
    }
    let special_ids = hf.all_special_ids();
    let specials: HashMap<&str, u32> = hf
        .all_special_tokens
        .iter()
        .filter_map(|t| vocab.get(t.as_str()).map(|&id| (t.as_str(), id)))
        .collect();

    let mut sorted_added: Vec<(&str, u32)> = hf.added_vocab().into_iter().collect();
    sorted_added.sort_by_key(|&(_, id)| id);
    let added_list: Vec<&str> = sorted_added
        .iter()
        .filter(|&&(_, id)| id as usize >= base)
        .map(|&(t, _)| t)
        .collect();

    let mut out = LlamaHfTokens {
        tokens: Vec::with_capacity(base + added_list.len()),
        scores: Vec::with_capacity(base + added_list.len()),
        types: Vec::with_capacity(base + added_list.len()),
    };
    for id in 0..base as u32 {
        let text = reverse.get(&id).ok_or_else(|| {
            VocabError::bad(
                &hf.path,
                format!("the vocabulary has no token with id {id}"),
            )
        })?;
        let ty = if is_byte_token(text) {
            TokenType::Byte
        } else if special_ids.contains(&id) {
            TokenType::Control
        } else {
            TokenType::Normal
        };
        out.tokens.push((*text).to_owned());
        out.scores.push(-1000.0);
        out.types.push(ty);
    }
    for text in added_list {
        let ty = match specials.get(text) {
            Some(id) if special_ids.contains(id) => TokenType::Control,
            Some(_) => TokenType::Normal,
            None => TokenType::UserDefined,
        };
        out.tokens.push(text.to_owned());
        out.scores.push(-1000.0);
        out.types.push(ty);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn byte_tokens() {
        assert!(is_byte_token("<0x0A>"));
        assert!(is_byte_token("<0xfF>"));
        assert!(!is_byte_token("<0x0G>"));
        assert!(!is_byte_token("<0x0A>x"));
    }

    #[test]
    fn llama_hf_precheck() {
        let llama2 = json!({"model": {"type": "BPE", "byte_fallback": true}, "decoder": {"type": "Sequence"}});
        assert_eq!(llama_hf_applies(Some(&llama2)), Ok(()));
        let llama3 = json!({"model": {"type": "BPE", "ignore_merges": true, "byte_fallback": false}, "decoder": {"type": "ByteLevel"}});
        assert_eq!(llama_hf_applies(Some(&llama3)), Err(NotLlamaHf::Llama3));
        let gpt2 = json!({"model": {"type": "BPE"}, "decoder": {"type": "ByteLevel"}});
        assert_eq!(llama_hf_applies(Some(&gpt2)), Err(NotLlamaHf::NotLlamaBpe));
        let no_decoder = json!({"model": {"type": "BPE", "byte_fallback": true}, "decoder": null});
        assert_eq!(
            llama_hf_applies(Some(&no_decoder)),
            Err(NotLlamaHf::NotLlamaBpe)
        );
        assert_eq!(llama_hf_applies(None), Err(NotLlamaHf::Missing));
    }
}
