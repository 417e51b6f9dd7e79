//! SentencePiece `tokenizer.model` → token list, scores and types, the way llama.cpp's
//! `_create_vocab_sentencepiece` (and Phi-3's variant of it) builds them.
//!
//! The file is a protobuf `ModelProto`. We read it with a hand-written wire-format reader rather
//! than a protobuf crate: llama.cpp only needs `pieces[i].{piece, score, type}` for the families
//! converted here (it never looks at `trainer_spec`/`normalizer_spec` on these paths; only its T5
//! converter does), the wire format for those three fields is a few dozen lines, and pulling in a
//! code generator plus `.proto` files (or the C++ sentencepiece library) for that would add far
//! more surface than it removes.

use std::path::Path;

use serde_json::Value as Json;

use super::util::{hparam, hparam_usize, json_int, read_json_opt};
use super::{does_token_look_special, TokenType, VocabError};

/// `ModelProto.SentencePiece.Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PieceType {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
    Other(u64),
}

impl PieceType {
    fn from_proto(v: u64) -> PieceType {
        match v {
            1 => PieceType::Normal,
            2 => PieceType::Unknown,
            3 => PieceType::Control,
            4 => PieceType::UserDefined,
            5 => PieceType::Unused,
            6 => PieceType::Byte,
            other => PieceType::Other(other),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Piece {
    pub piece: String,
    pub score: f32,
    pub kind: PieceType,
}

/// A cursor over protobuf wire-format bytes.
struct Wire<'a> {
    buf: &'a [u8],
    pos: usize,
}

enum Field<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32(u32),
}

impl<'a> Wire<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Wire { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut out = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| format!("truncated varint at byte {}", self.pos))?;
            self.pos += 1;
            out |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(out);
            }
        }
        Err(format!("varint longer than 10 bytes at byte {}", self.pos))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| format!("field of {n} bytes at byte {} runs past the end", self.pos))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// Next `(field number, value)`, or `None` at the end of the message.
    fn next(&mut self) -> Result<Option<(u64, Field<'a>)>, String> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let (num, wt) = (key >> 3, key & 7);
        let field = match wt {
            0 => Field::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Field::Fixed64
            }
            2 => {
                let len = usize::try_from(self.varint()?)
                    .map_err(|_| "length does not fit in memory".to_string())?;
                Field::Bytes(self.take(len)?)
            }
            5 => {
                let b = self.take(4)?;
                Field::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            other => {
                return Err(format!(
                    "unsupported wire type {other} (field {num}) at byte {}",
                    self.pos
                ))
            }
        };
        Ok(Some((num, field)))
    }
}

/// Parses the `pieces` of a serialized `ModelProto` (field 1; inside it piece = 1, score = 2,
/// type = 3 with the proto defaults score 0 and type NORMAL).
pub(crate) fn parse_pieces(bytes: &[u8]) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut top = Wire::new(bytes);
    while let Some((num, field)) = top.next()? {
        let (1, Field::Bytes(msg)) = (num, field) else {
            continue;
        };
        let mut piece: Option<String> = None;
        let mut score = 0.0f32;
        let mut kind = PieceType::Normal;
        let mut w = Wire::new(msg);
        while let Some((n, f)) = w.next()? {
            match (n, f) {
                (1, Field::Bytes(b)) => {
                    piece = Some(
                        String::from_utf8(b.to_vec())
                            .map_err(|_| format!("piece {} is not valid UTF-8", pieces.len()))?,
                    )
                }
                (2, Field::Fixed32(bits)) => score = f32::from_bits(bits),
                (3, Field::Varint(v)) => kind = PieceType::from_proto(v),
                _ => {}
            }
        }
        pieces.push(Piece {
            piece: piece.unwrap_or_default(),
            score,
            kind,
        });
    }
    if pieces.is_empty() {
        return Err("no pieces found (is this a SentencePiece model?)".into());
    }
    Ok(pieces)
}

pub(crate) fn load_pieces(path: &Path) -> Result<Vec<Piece>, VocabError> {
    let bytes = std::fs::read(path).map_err(|source| VocabError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_pieces(&bytes).map_err(|m| VocabError::bad(path, m))
}

/// The three parallel arrays of an SPM vocabulary.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct SpmVocab {
    pub tokens: Vec<String>,
    pub scores: Vec<f32>,
    pub types: Vec<TokenType>,
}

fn piece_token_type(kind: PieceType) -> TokenType {
    // sentencepiece's IsUnknown/IsControl/IsUnused/IsByte, checked in that order; USER_DEFINED
    // pieces are not special-cased by llama.cpp and stay NORMAL.
    match kind {
        PieceType::Unknown => TokenType::Unknown,
        PieceType::Control => TokenType::Control,
        PieceType::Unused => TokenType::Unused,
        PieceType::Byte => TokenType::Byte,
        _ => TokenType::Normal,
    }
}

/// `TextModel._create_vocab_sentencepiece`.
pub(crate) fn create_vocab_sentencepiece(
    dir: &Path,
    config: &Json,
) -> Result<SpmVocab, VocabError> {
    let model_path = dir.join("tokenizer.model");
    if !model_path.is_file() {
        return Err(VocabError::Missing {
            path: model_path,
            why: "SentencePiece vocabulary".into(),
        });
    }
    let pieces = load_pieces(&model_path)?;

    // `find_hparam(["vocab_size_per_layer_input", "vocab_size"], optional=True) or sp.vocab_size()`
    // (`find_hparam` stops at the first key present, even if its value is null)
    let mut vocab_size = None;
    for key in ["vocab_size_per_layer_input", "vocab_size"] {
        if hparam(config, key).is_some() {
            vocab_size = hparam_usize(config, key)?;
            break;
        }
    }
    let vocab_size = match vocab_size {
        Some(0) | None => pieces.len(),
        Some(n) => n,
    };

    let mut v = SpmVocab {
        tokens: (0..vocab_size).map(|i| format!("[PAD{i}]")).collect(),
        scores: vec![-10000.0; vocab_size],
        types: vec![TokenType::Unused; vocab_size],
    };
    for (id, p) in pieces.iter().enumerate().take(vocab_size) {
        v.tokens[id] = p.piece.clone();
        v.scores[id] = p.score;
        v.types[id] = piece_token_type(p.kind);
    }

    let added_tokens_path = dir.join("added_tokens.json");
    if let Some(added) = read_json_opt(&added_tokens_path)? {
        let obj = added
            .as_object()
            .ok_or_else(|| VocabError::bad(&added_tokens_path, "expected an object"))?;
        for (key, id) in obj {
            let id = added_token_id(&added_tokens_path, key, id)?;
            if id >= vocab_size {
                continue;
            }
            v.tokens[id] = key.clone();
            v.scores[id] = -1000.0;
            v.types[id] = TokenType::UserDefined;
        }
    }

    let tc_path = dir.join("tokenizer_config.json");
    if let Some(tc) = read_json_opt(&tc_path)? {
        for (id, content, special) in added_tokens_decoder(&tc_path, &tc)? {
            if id >= vocab_size {
                continue;
            }
            let mut token = content;
            if special || does_token_look_special(&token) {
                v.types[id] = TokenType::Control;
            } else {
                // pre-normalize user-defined spaces, as llama.cpp does
                token = token.replace('\u{2581}', " ");
                v.types[id] = TokenType::UserDefined;
            }
            v.scores[id] = -1000.0;
            v.tokens[id] = token;
        }
    }
    // llama.cpp's trailing "pad to vocab_size" step can never trigger (the arrays already have
    // vocab_size entries), so there is nothing more to do.
    Ok(v)
}

fn added_token_id(path: &Path, key: &str, id: &Json) -> Result<usize, VocabError> {
    json_int(id)
        .and_then(|i| usize::try_from(i).ok())
        .ok_or_else(|| {
            VocabError::bad(
                path,
                format!("id of {key:?} must be a non-negative integer, found {id}"),
            )
        })
}

/// `tokenizer_config.json` `added_tokens_decoder` entries as `(id, content, special)`, in file
/// order (Python iterates the dict in insertion order).
pub(crate) fn added_tokens_decoder(
    path: &Path,
    tc: &Json,
) -> Result<Vec<(usize, String, bool)>, VocabError> {
    let Some(dec) = tc.get("added_tokens_decoder") else {
        return Ok(Vec::new());
    };
    let obj = dec
        .as_object()
        .ok_or_else(|| VocabError::bad(path, "added_tokens_decoder must be an object"))?;
    let mut out = Vec::with_capacity(obj.len());
    for (k, data) in obj {
        let id: usize = k.trim().parse().map_err(|_| {
            VocabError::bad(path, format!("added_tokens_decoder key {k:?} is not an id"))
        })?;
        let content = data.get("content").and_then(Json::as_str).ok_or_else(|| {
            VocabError::bad(
                path,
                format!("added_tokens_decoder[{k}] has no string content"),
            )
        })?;
        let special = super::util::truthy(data.get("special"));
        out.push((id, content.to_owned(), special));
    }
    Ok(out)
}

/// `Phi3MiniModel.set_vocab`'s own SentencePiece loop: like the generic one but with
/// `hparams.get('vocab_size', sp_size)`, no `does_token_look_special` and no '▁' rewrite, no
/// range checks on `added_tokens_decoder`, and a final override pass from `tokenizer.json`'s
/// `added_tokens`.
pub(crate) fn create_vocab_phi3(dir: &Path, config: &Json) -> Result<SpmVocab, VocabError> {
    let model_path = dir.join("tokenizer.model");
    if !model_path.is_file() {
        return Err(VocabError::Missing {
            path: model_path,
            why: "Phi-3 needs tokenizer.model unless tokenizer_class is GPT2Tokenizer".into(),
        });
    }
    let pieces = load_pieces(&model_path)?;
    let vocab_size = match hparam(config, "vocab_size") {
        Some(Json::Null) | None => pieces.len(),
        Some(_) => hparam_usize(config, "vocab_size")?.unwrap_or(pieces.len()),
    };
    let mut v = SpmVocab {
        tokens: (0..vocab_size).map(|i| format!("[PAD{i}]")).collect(),
        scores: vec![-10000.0; vocab_size],
        types: vec![TokenType::Unused; vocab_size],
    };
    for (id, p) in pieces.iter().enumerate() {
        if id >= vocab_size {
            return Err(VocabError::bad(
                &model_path,
                format!(
                    "has {} pieces but config vocab_size is {vocab_size}",
                    pieces.len()
                ),
            ));
        }
        v.tokens[id] = p.piece.clone();
        v.scores[id] = p.score;
        v.types[id] = piece_token_type(p.kind);
    }

    let added_tokens_path = dir.join("added_tokens.json");
    if let Some(added) = read_json_opt(&added_tokens_path)? {
        let obj = added
            .as_object()
            .ok_or_else(|| VocabError::bad(&added_tokens_path, "expected an object"))?;
        for (key, id) in obj {
            let id = added_token_id(&added_tokens_path, key, id)?;
            if id >= vocab_size {
                continue;
            }
            v.tokens[id] = key.clone();
            v.scores[id] = -1000.0;
            v.types[id] = TokenType::UserDefined;
        }
    }

    let mut set = |path: &Path, id: usize, content: String, special: bool| {
        if id >= vocab_size {
            return Err(VocabError::bad(
                path,
                format!("added token {content:?} has id {id}, outside vocab_size {vocab_size}"),
            ));
        }
        v.tokens[id] = content;
        v.scores[id] = -1000.0;
        v.types[id] = if special {
            TokenType::Control
        } else {
            TokenType::UserDefined
        };
        Ok(())
    };

    let tc_path = dir.join("tokenizer_config.json");
    if let Some(tc) = read_json_opt(&tc_path)? {
        for (id, content, special) in added_tokens_decoder(&tc_path, &tc)? {
            set(&tc_path, id, content, special)?;
        }
    }
    let tj_path = dir.join("tokenizer.json");
    if let Some(tj) = read_json_opt(&tj_path)? {
        if let Some(list) = tj.get("added_tokens").and_then(Json::as_array) {
            for t in list {
                let id = t
                    .get("id")
                    .and_then(json_int)
                    .and_then(|i| usize::try_from(i).ok())
                    .ok_or_else(|| VocabError::bad(&tj_path, "added token without a valid id"))?;
                let content = t
                    .get("content")
                    .and_then(Json::as_str)
                    .ok_or_else(|| VocabError::bad(&tj_path, "added token without content"))?;
                let special = super::util::truthy(t.get("special"));
                set(&tj_path, id, content.to_owned(), special)?;
            }
        }
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn piece_msg(piece: &str, score: Option<f32>, kind: Option<u64>) -> Vec<u8> {
        let mut m = Vec::new();
        m.push(0x0a);
        varint(piece.len() as u64, &mut m);
        m.extend_from_slice(piece.as_bytes());
        if let Some(s) = score {
            m.push(0x15);
            m.extend_from_slice(&s.to_le_bytes());
        }
        if let Some(k) = kind {
            m.push(0x18);
            varint(k, &mut m);
        }
        m
    }

    fn model(pieces: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in pieces {
            out.push(0x0a);
            varint(p.len() as u64, &mut out);
            out.extend_from_slice(p);
        }
        // a trainer_spec (field 2) with a varint field inside, which must be skipped
        out.extend_from_slice(&[0x12, 0x02, 0x08, 0x01]);
        out
    }

    #[test]
    fn parses_pieces_with_proto_defaults() {
        let bytes = model(&[
            piece_msg("<unk>", Some(0.0), Some(2)),
            piece_msg("<s>", None, Some(3)),
            piece_msg("<0x0A>", Some(0.0), Some(6)),
            piece_msg("▁the", Some(-1.5), None),
        ]);
        let p = parse_pieces(&bytes).unwrap();
        assert_eq!(p.len(), 4);
        assert_eq!(p[0].kind, PieceType::Unknown);
        assert_eq!(p[1].score, 0.0);
        assert_eq!(p[2].kind, PieceType::Byte);
        assert_eq!(p[3].piece, "▁the");
        assert_eq!(p[3].score, -1.5);
        assert_eq!(p[3].kind, PieceType::Normal);
    }

    #[test]
    fn rejects_truncated_input() {
        let mut bytes = model(&[piece_msg("abc", Some(1.0), Some(1))]);
        bytes.truncate(bytes.len() - 6);
        assert!(parse_pieces(&bytes).is_err());
        assert!(parse_pieces(&[]).is_err());
    }
}
