//! gguf-py's `SpecialVocab`: merges, special token ids, `add_*_token` flags, chat template and
//! normalizer flags, reproduced step for step because the *order* in which it discovers things is
//! the order of the KVs in the file.

use std::path::{Path, PathBuf};

use gguf::{Array, Value};
use serde_json::{Map, Value as Json};

use super::util::{json_int, read_json_opt, read_text_opt, truthy, KvList};
use super::VocabError;

/// A chat template as `SpecialVocab` holds it: one string, or `[{name, template}, …]`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum ChatTemplate {
    Single(String),
    Named(Vec<(String, Json)>),
}

#[derive(Debug)]
pub(crate) struct SpecialVocab {
    pub merges: Vec<String>,
    load_merges: bool,
    /// `(type, id)` in discovery order.
    pub special_token_ids: Vec<(String, u32)>,
    /// `(type, add?)` in discovery order.
    pub add_special_token: Vec<(String, bool)>,
    pub chat_template: Option<ChatTemplate>,
    pub normalizer_lowercase: Option<bool>,
    pub normalizer_strip_accents: Option<bool>,
    special_token_types: Vec<String>,
    n_vocab: Option<usize>,
}

pub(crate) const DEFAULT_TYPES: &[&str] = &["bos", "eos", "unk", "sep", "pad", "cls", "mask"];

/// Python `x in (a, b)` where `x` is a string and `a`, `b` arbitrary JSON (a dict never equals).
fn str_in(x: &str, cands: &[&Json]) -> bool {
    cands.iter().any(|c| c.as_str() == Some(x))
}

fn special_token_id_of(entry: &Json) -> Option<String> {
    entry
        .get("SpecialToken")
        .and_then(|s| s.get("id"))
        .and_then(Json::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn sequence_id_of(entry: &Json) -> Option<&str> {
    entry
        .get("Sequence")
        .and_then(|s| s.get("id"))
        .and_then(Json::as_str)
}

fn set_flag(flags: &mut Vec<(String, bool)>, typ: &str, v: bool) {
    if let Some(slot) = flags.iter_mut().find(|(k, _)| k == typ) {
        slot.1 = v;
    } else {
        flags.push((typ.to_owned(), v));
    }
}

fn set_default_flag(flags: &mut Vec<(String, bool)>, typ: &str, v: bool) {
    if !flags.iter().any(|(k, _)| k == typ) {
        flags.push((typ.to_owned(), v));
    }
}

impl SpecialVocab {
    /// `SpecialVocab(path, load_merges, special_token_types, n_vocab)`.
    pub(crate) fn load(
        dir: &Path,
        load_merges: bool,
        special_token_types: Option<&[&str]>,
        n_vocab: Option<usize>,
    ) -> Result<SpecialVocab, VocabError> {
        let mut sv = SpecialVocab {
            merges: Vec::new(),
            load_merges,
            special_token_ids: Vec::new(),
            add_special_token: Vec::new(),
            chat_template: None,
            normalizer_lowercase: None,
            normalizer_strip_accents: None,
            special_token_types: special_token_types
                .unwrap_or(DEFAULT_TYPES)
                .iter()
                .map(|s| s.to_string())
                .collect(),
            n_vocab,
        };
        sv.try_load_from_tokenizer_json(dir)?;
        sv.try_load_from_config_json(dir)?;
        if sv.load_merges && sv.merges.is_empty() {
            sv.try_load_merges_txt(&dir.join("merges.txt"))?;
        }
        Ok(sv)
    }

    /// `_set_special_token`: first value wins, ids past `n_vocab` are dropped, non-ints ignored.
    pub(crate) fn set_special_token(
        &mut self,
        typ: &str,
        tid: Option<&Json>,
    ) -> Result<(), VocabError> {
        let Some(tid) = tid.and_then(json_int) else {
            return Ok(());
        };
        if tid < 0 {
            return Err(VocabError::Config(format!(
                "invalid value for special token type {typ}: {tid}"
            )));
        }
        let in_range = match self.n_vocab {
            Some(n) => tid < n as i128,
            None => true,
        };
        if in_range {
            if self.special_token_ids.iter().any(|(k, _)| k == typ) {
                return Ok(());
            }
            let id = u32::try_from(tid).map_err(|_| {
                VocabError::Config(format!("special token {typ} id {tid} does not fit in u32"))
            })?;
            self.special_token_ids.push((typ.to_owned(), id));
        }
        Ok(())
    }

    fn try_load_merges_txt(&mut self, path: &Path) -> Result<(), VocabError> {
        let Some(text) = read_text_opt(path)? else {
            return Ok(());
        };
        let is_space = |c: char| c.is_whitespace() || ('\x1c'..='\x1f').contains(&c);
        // universal newlines: \r\n, \r and \n all end a line
        let text = text.replace("\r\n", "\n").replace('\r', "\n");
        let mut lines = text.split_inclusive('\n').peekable();
        if let Some(first) = lines.peek() {
            if first.trim_matches(is_space).starts_with('#') {
                lines.next();
            }
        }
        let mut merges = Vec::new();
        for line in lines {
            let line = line.trim_matches(is_space);
            if line.is_empty() {
                continue;
            }
            let parts: Vec<&str> = line.split(is_space).filter(|p| !p.is_empty()).collect();
            if parts.len() != 2 {
                continue; // llama.cpp warns "Entry malformed, ignoring"
            }
            merges.push(format!("{} {}", parts[0], parts[1]));
        }
        self.merges = merges;
        Ok(())
    }

    fn parse_normalizer(&mut self, n: &Json) {
        match n.get("type").and_then(Json::as_str) {
            Some("Lowercase") => self.normalizer_lowercase = Some(true),
            Some("StripAccents") => self.normalizer_strip_accents = Some(true),
            Some("BertNormalizer") => {
                if let Some(v) = n.get("lowercase") {
                    self.normalizer_lowercase = v.as_bool();
                }
                if let Some(v) = n.get("strip_accents") {
                    self.normalizer_strip_accents = v.as_bool();
                }
            }
            Some("Sequence") => {
                if let Some(list) = n.get("normalizers").and_then(Json::as_array) {
                    for sub in list {
                        self.parse_normalizer(sub);
                    }
                }
            }
            _ => {}
        }
    }

    fn load_json_merges(&mut self, path: &Path, tokenizer: &Json) -> Result<(), VocabError> {
        let Some(Json::Array(merges)) = tokenizer.get("model").and_then(|m| m.get("merges")) else {
            return Ok(());
        };
        let Some(first) = merges.first() else {
            return Ok(());
        };
        if first.is_string() {
            let mut out = Vec::with_capacity(merges.len());
            for m in merges {
                out.push(
                    m.as_str()
                        .ok_or_else(|| VocabError::bad(path, "merges mix strings and pairs"))?
                        .to_owned(),
                );
            }
            self.merges = out;
        } else if first
            .as_array()
            .is_some_and(|p| p.len() == 2 && p[0].is_string())
        {
            // New pair format (transformers ≥ 4.45): spaces inside a part are written as U+0120.
            let mut out = Vec::with_capacity(merges.len());
            for pair in merges {
                let parts = pair
                    .as_array()
                    .ok_or_else(|| VocabError::bad(path, "merges mix strings and pairs"))?;
                let mut encoded = Vec::with_capacity(parts.len());
                for part in parts {
                    let s = part
                        .as_str()
                        .ok_or_else(|| VocabError::bad(path, "merge part is not a string"))?;
                    encoded.push(s.replace(' ', "\u{120}"));
                }
                out.push(encoded.join(" "));
            }
            self.merges = out;
        } else {
            return Err(VocabError::bad(path, "unknown tokenizer merges format"));
        }
        Ok(())
    }

    fn try_load_from_tokenizer_json(&mut self, dir: &Path) -> Result<(), VocabError> {
        let tj_path = dir.join("tokenizer.json");
        let tokenizer = read_json_opt(&tj_path)?;
        let mut added_tokens: Vec<Json> = Vec::new();
        if let Some(tok) = &tokenizer {
            if self.load_merges {
                self.load_json_merges(&tj_path, tok)?;
            }
            if let Some(n) = tok.get("normalizer").filter(|n| truthy(Some(n))) {
                self.parse_normalizer(n);
            }
            if let Some(Json::Array(a)) = tok.get("added_tokens") {
                added_tokens = a.clone();
            }
        }
        let tc_path = dir.join("tokenizer_config.json");
        let mut tc: Option<Map<String, Json>> = match read_json_opt(&tc_path)? {
            None => None,
            Some(Json::Object(m)) => Some(m),
            Some(_) => return Err(VocabError::bad(&tc_path, "expected a JSON object")),
        };

        if truthy(tokenizer.as_ref()) {
            let tokenizer = tokenizer.as_ref().unwrap_or(&Json::Null);
            self.scan_post_processor(tokenizer, &mut tc);
        }

        let Some(tc) = tc.filter(|m| !m.is_empty()) else {
            return Ok(());
        };
        self.load_chat_template(dir, &tc_path, &tc)?;

        let types = self.special_token_types.clone();
        for typ in &types {
            if let Some(Json::Bool(add)) = tc.get(&format!("add_{typ}_token")) {
                // an explicit post_processor decision wins over tokenizer_config
                set_default_flag(&mut self.add_special_token, typ, *add);
            }
            let content = match tc.get(&format!("{typ}_token")) {
                Some(Json::String(s)) => s.clone(),
                Some(Json::Object(o)) => match o.get("content") {
                    Some(Json::String(s)) => s.clone(),
                    _ => continue,
                },
                _ => continue,
            };
            // first added token with that content
            let id = added_tokens
                .iter()
                .find(|a| a.get("content").and_then(Json::as_str) == Some(content.as_str()))
                .and_then(|a| a.get("id"))
                .cloned();
            self.set_special_token(typ, id.as_ref())?;
        }
        Ok(())
    }

    /// The post_processor scan of `_try_load_from_tokenizer_json`, including its side effects on
    /// the in-memory `tokenizer_config` (which later decide the special token ids).
    fn scan_post_processor(&mut self, tokenizer: &Json, tc: &mut Option<Map<String, Json>>) {
        let tc_get = |tc: &Option<Map<String, Json>>, k: &str| -> Json {
            tc.as_ref()
                .and_then(|m| m.get(k))
                .cloned()
                .unwrap_or(Json::Null)
        };
        let tc_truthy = |tc: &Option<Map<String, Json>>| tc.as_ref().is_some_and(|m| !m.is_empty());
        let tc_set = |tc: &mut Option<Map<String, Json>>, k: &str, v: Json| {
            if let Some(m) = tc.as_mut() {
                m.insert(k.to_owned(), v);
            }
        };

        let mut special_bos = tc_get(tc, "bos_token");
        let mut special_cls = tc_get(tc, "cls_token");
        let mut special_eos = tc_get(tc, "eos_token");
        let mut special_sep = tc_get(tc, "sep_token");
        if !truthy(Some(&special_bos)) && truthy(Some(&special_cls)) && tc_truthy(tc) {
            special_bos = special_cls.clone();
            tc_set(tc, "bos_token", special_bos.clone());
        }
        if !truthy(Some(&special_eos)) && truthy(Some(&special_sep)) && tc_truthy(tc) {
            special_eos = special_sep.clone();
            tc_set(tc, "eos_token", special_eos.clone());
        }

        let Some(pp) = tokenizer.get("post_processor").filter(|p| truthy(Some(p))) else {
            return;
        };
        let processors: Vec<Json> = match pp.get("processors") {
            Some(Json::Array(a)) => a.clone(),
            _ => vec![pp.clone()],
        };
        for processor in &processors {
            match processor.get("type").and_then(Json::as_str) {
                Some("ByteLevel") => {
                    set_default_flag(&mut self.add_special_token, "bos", false);
                    set_default_flag(&mut self.add_special_token, "eos", false);
                }
                Some("RobertaProcessing") => {
                    set_flag(&mut self.add_special_token, "bos", true);
                    set_flag(&mut self.add_special_token, "eos", true);
                    set_flag(&mut self.add_special_token, "sep", true);
                    if !truthy(Some(&special_cls)) && tc_truthy(tc) {
                        special_cls = processor
                            .get("cls")
                            .and_then(|c| c.get(0))
                            .cloned()
                            .unwrap_or_else(|| special_bos.clone());
                        tc_set(tc, "cls_token", special_cls.clone());
                    }
                    if !truthy(Some(&special_sep)) && tc_truthy(tc) {
                        special_sep = processor
                            .get("sep")
                            .and_then(|c| c.get(0))
                            .cloned()
                            .unwrap_or_else(|| special_eos.clone());
                        tc_set(tc, "sep_token", special_sep.clone());
                    }
                }
                Some("TemplateProcessing") => {
                    let empty = Vec::new();
                    let single = processor
                        .get("single")
                        .and_then(Json::as_array)
                        .unwrap_or(&empty);
                    let pair = processor
                        .get("pair")
                        .and_then(Json::as_array)
                        .unwrap_or(&empty);
                    let mut special_first: Option<String> = None;
                    let mut special_last: Option<String> = None;
                    if single.len() > 1 {
                        special_first = special_token_id_of(&single[0]);
                        if let Some(first) = &special_first {
                            if !tc_truthy(tc) {
                                special_bos = Json::String(first.clone());
                            } else if !str_in(first, &[&special_bos, &special_cls]) {
                                if !truthy(Some(&special_bos)) {
                                    special_bos = Json::String(first.clone());
                                    tc_set(tc, "bos_token", special_bos.clone());
                                }
                                if !truthy(Some(&special_cls)) {
                                    special_cls = Json::String(first.clone());
                                    tc_set(tc, "cls_token", special_cls.clone());
                                }
                            }
                            let add = str_in(first, &[&special_bos, &special_cls]);
                            set_flag(&mut self.add_special_token, "bos", add);
                        }
                        special_last = special_token_id_of(&single[single.len() - 1]);
                        if let Some(last) = &special_last {
                            if !tc_truthy(tc) {
                                special_eos = Json::String(last.clone());
                            } else if special_eos.as_str() != Some(last.as_str()) {
                                if !self.special_token_types.iter().any(|t| t == "eot") {
                                    self.special_token_types.push("eot".into());
                                    tc_set(tc, "eot_token", special_eos.clone());
                                } else if !self.special_token_types.iter().any(|t| t == "eom") {
                                    self.special_token_types.push("eom".into());
                                    tc_set(tc, "eom_token", special_eos.clone());
                                }
                                special_eos = Json::String(last.clone());
                                tc_set(tc, "eos_token", special_eos.clone());
                            }
                            let add = special_eos.as_str() == Some(last.as_str());
                            set_flag(&mut self.add_special_token, "eos", add);
                        }
                    }
                    if !pair.is_empty() {
                        let start = usize::from(
                            special_first.is_some()
                                && special_token_id_of(&pair[0]) == special_first,
                        );
                        let stop = if special_last.is_some()
                            && special_token_id_of(&pair[pair.len() - 1]) == special_last
                        {
                            pair.len() - 1
                        } else {
                            pair.len()
                        };
                        let mid: &[Json] = if start < stop {
                            &pair[start..stop]
                        } else {
                            &[]
                        };
                        if let (Some(a), Some(b)) = (mid.first(), mid.last()) {
                            let tmpl_a = sequence_id_of(a);
                            let tmpl_b = sequence_id_of(b);
                            let inner: &[Json] = if mid.len() > 2 {
                                &mid[1..mid.len() - 1]
                            } else {
                                &[]
                            };
                            if tmpl_a == Some("A") && tmpl_b == Some("B") && !inner.is_empty() {
                                let mut add_sep = false;
                                if let Some(entry) = special_token_id_of(&inner[0]) {
                                    if str_in(&entry, &[&special_sep, &special_eos])
                                        && special_last.is_none()
                                    {
                                        add_sep = true;
                                    }
                                }
                                if inner.len() == 2 {
                                    if let Some(entry) = special_token_id_of(&inner[1]) {
                                        if str_in(&entry, &[&special_sep, &special_eos]) {
                                            add_sep = true;
                                        }
                                    }
                                }
                                set_flag(&mut self.add_special_token, "sep", add_sep);
                                if add_sep && !truthy(Some(&special_sep)) && tc_truthy(tc) {
                                    tc_set(tc, "sep_token", special_eos.clone());
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }

    fn load_chat_template(
        &mut self,
        dir: &Path,
        tc_path: &Path,
        tc: &Map<String, Json>,
    ) -> Result<(), VocabError> {
        let jinja = dir.join("chat_template.jinja");
        let json_path = dir.join("chat_template.json");
        let mut alt: Json = Json::Null;
        if let Some(text) = read_text_opt(&jinja)? {
            alt = Json::String(text);
            let extra = additional_templates(&dir.join("additional_chat_templates"))?;
            if !extra.is_empty() {
                let mut list = vec![serde_json::json!({"name": "default", "template": alt})];
                for (name, text) in extra {
                    list.push(serde_json::json!({"name": name, "template": text}));
                }
                alt = Json::Array(list);
            }
        } else if let Some(j) = read_json_opt(&json_path)? {
            alt = j.get("chat_template").cloned().unwrap_or(Json::Null);
        }
        let ct = tc.get("chat_template").cloned().unwrap_or(alt);
        self.chat_template = match ct {
            Json::String(s) => Some(ChatTemplate::Single(s)),
            Json::Array(list) => {
                let mut named = Vec::with_capacity(list.len());
                for choice in list {
                    let obj = choice.as_object().ok_or_else(|| {
                        VocabError::bad(tc_path, "chat_template list entries must be objects")
                    })?;
                    let name = obj.get("name").and_then(Json::as_str).unwrap_or("");
                    named.push((
                        name.to_owned(),
                        obj.get("template").cloned().unwrap_or(Json::Null),
                    ));
                }
                Some(ChatTemplate::Named(named))
            }
            // null, or a bad type llama.cpp warns about and ignores
            _ => None,
        };
        Ok(())
    }

    fn try_load_from_config_json(&mut self, dir: &Path) -> Result<(), VocabError> {
        let Some(config) = read_json_opt(&dir.join("config.json"))? else {
            return Ok(());
        };
        let types = self.special_token_types.clone();
        for typ in &types {
            let key = format!("{typ}_token_id");
            let mut id = config.get(&key).filter(|v| !v.is_null());
            if id.is_none() {
                if let Some(tc) = config.get("text_config") {
                    id = tc.get(&key);
                }
            }
            let id = id.cloned();
            self.set_special_token(typ, id.as_ref())?;
        }
        Ok(())
    }

    /// `SpecialVocab.add_to_gguf`.
    pub(crate) fn add_to_gguf(&self, kv: &mut KvList) -> Result<(), VocabError> {
        if !self.merges.is_empty() {
            kv.array("tokenizer.ggml.merges", Array::String(self.merges.clone()));
        }
        for (typ, id) in &self.special_token_ids {
            if let Some(key) = special_id_key(typ) {
                kv.u32(key, *id);
            }
        }
        for (typ, add) in &self.add_special_token {
            if let Some(key) = add_flag_key(typ) {
                kv.bool(key, *add);
            }
        }
        if let Some(ct) = &self.chat_template {
            add_chat_template(kv, ct)?;
        }
        if let Some(v) = self.normalizer_lowercase {
            kv.bool("tokenizer.ggml.normalizer.lowercase", v);
        }
        if let Some(v) = self.normalizer_strip_accents {
            kv.bool("tokenizer.ggml.normalizer.strip_accents", v);
        }
        Ok(())
    }
}

/// The GGUF key of `GGUFWriter.add_{typ}_token_id`; `None` where gguf-py has no handler (cls,
/// prefix/suffix/middle/fsep), which it logs and skips.
fn special_id_key(typ: &str) -> Option<&'static str> {
    Some(match typ {
        "bos" => "tokenizer.ggml.bos_token_id",
        "eos" => "tokenizer.ggml.eos_token_id",
        "unk" => "tokenizer.ggml.unknown_token_id",
        "sep" => "tokenizer.ggml.seperator_token_id",
        "pad" => "tokenizer.ggml.padding_token_id",
        "mask" => "tokenizer.ggml.mask_token_id",
        "eot" => "tokenizer.ggml.eot_token_id",
        "eom" => "tokenizer.ggml.eom_token_id",
        _ => return None,
    })
}

/// `GGUFWriter.add_add_{typ}_token` exists only for bos, eos and sep.
fn add_flag_key(typ: &str) -> Option<&'static str> {
    Some(match typ {
        "bos" => "tokenizer.ggml.add_bos_token",
        "eos" => "tokenizer.ggml.add_eos_token",
        "sep" => "tokenizer.ggml.add_sep_token",
        _ => return None,
    })
}

/// `additional_chat_templates/*.jinja` as `(stem, text)`. Python takes them in directory-listing
/// order, which is filesystem-dependent; we sort by file name so output is reproducible.
fn additional_templates(dir: &Path) -> Result<Vec<(String, String)>, VocabError> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let rd = std::fs::read_dir(dir).map_err(|source| VocabError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut paths: Vec<PathBuf> = Vec::new();
    for e in rd {
        let e = e.map_err(|source| VocabError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let p = e.path();
        if p.extension().is_some_and(|x| x == "jinja") {
            paths.push(p);
        }
    }
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        let stem = p
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = std::fs::read_to_string(&p).map_err(|source| VocabError::Io {
            path: p.clone(),
            source,
        })?;
        out.push((stem, text));
    }
    Ok(out)
}

/// `GGUFWriter.add_chat_template`. For a named list, gguf-py collects the non-default names in a
/// Python `set`, whose iteration order depends on string hashing (randomized per process); we
/// keep first-appearance order instead, which is one of the orders Python can produce.
fn add_chat_template(kv: &mut KvList, ct: &ChatTemplate) -> Result<(), VocabError> {
    match ct {
        ChatTemplate::Single(s) => kv.string("tokenizer.chat_template", s),
        ChatTemplate::Named(list) => {
            let mut default: Option<String> = None;
            let mut names: Vec<String> = Vec::new();
            for (raw_name, template) in list {
                let name: String = raw_name
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .collect();
                if name.is_empty() || template.is_null() {
                    continue;
                }
                let Some(text) = template.as_str() else {
                    return Err(VocabError::Config(format!(
                        "chat template {raw_name:?} is not a string"
                    )));
                };
                if name == "default" {
                    default = Some(text.to_owned());
                } else {
                    if !names.contains(&name) {
                        names.push(name.clone());
                    }
                    kv.string(&format!("tokenizer.chat_template.{name}"), text);
                }
            }
            if !names.is_empty() {
                kv.array("tokenizer.chat_templates", Array::String(names));
            }
            if let Some(d) = default {
                kv.string("tokenizer.chat_template", &d);
            }
        }
    }
    Ok(())
}

/// Convenience: `Value` of a KV (used by tests).
#[allow(dead_code)]
pub(crate) fn value_of<'a>(kvs: &'a [(String, Value)], key: &str) -> Option<&'a Value> {
    kvs.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dir_with(files: &[(&str, Json)]) -> tempdir::TempDir {
        let d = tempdir::TempDir::new();
        for (name, content) in files {
            std::fs::write(d.path().join(name), serde_json::to_vec(content).unwrap()).unwrap();
        }
        d
    }

    mod tempdir {
        pub struct TempDir(std::path::PathBuf);
        impl TempDir {
            pub fn new() -> Self {
                use std::sync::atomic::{AtomicUsize, Ordering};
                static N: AtomicUsize = AtomicUsize::new(0);
                let p = std::env::temp_dir().join(format!(
                    "ggforge-special-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&p).unwrap();
                TempDir(p)
            }
            pub fn path(&self) -> &std::path::Path {
                &self.0
            }
        }
        impl Drop for TempDir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn template_processing_bos_and_pair_sep() {
        // Llama-3 style: single "<bos> $A", pair "<bos> $A <bos> $B" → add_bos, no sep.
        let d = dir_with(&[
            (
                "tokenizer.json",
                json!({
                    "added_tokens": [{"id": 5, "content": "<bos>"}, {"id": 6, "content": "<eos>"}],
                    "post_processor": {"type": "Sequence", "processors": [
                        {"type": "ByteLevel"},
                        {"type": "TemplateProcessing",
                         "single": [{"SpecialToken": {"id": "<bos>"}}, {"Sequence": {"id": "A"}}],
                         "pair": [{"SpecialToken": {"id": "<bos>"}}, {"Sequence": {"id": "A"}},
                                  {"SpecialToken": {"id": "<bos>"}}, {"Sequence": {"id": "B"}}]}
                    ]}
                }),
            ),
            (
                "tokenizer_config.json",
                json!({"bos_token": "<bos>", "eos_token": "<eos>", "add_eos_token": true}),
            ),
            (
                "config.json",
                json!({"bos_token_id": 99, "pad_token_id": 6}),
            ),
        ]);
        let sv = SpecialVocab::load(d.path(), false, None, None).unwrap();
        assert_eq!(
            sv.add_special_token,
            vec![
                ("bos".into(), true),
                ("eos".into(), false),
                ("sep".into(), false)
            ]
        );
        assert_eq!(
            sv.special_token_ids,
            vec![("bos".into(), 5), ("eos".into(), 6), ("pad".into(), 6)]
        );
    }

    #[test]
    fn merges_pairs_encode_spaces() {
        let d = dir_with(&[(
            "tokenizer.json",
            json!({"model": {"merges": [["a b", "c"], ["Ġ", "t"]]}}),
        )]);
        let sv = SpecialVocab::load(d.path(), true, None, None).unwrap();
        assert_eq!(
            sv.merges,
            vec!["a\u{120}b c".to_string(), "Ġ t".to_string()]
        );
    }

    #[test]
    fn merges_txt_fallback_skips_header_and_malformed() {
        let d = dir_with(&[]);
        std::fs::write(
            d.path().join("merges.txt"),
            "#version: 0.2\r\nĠ t\nbad\n\nh e\n",
        )
        .unwrap();
        let sv = SpecialVocab::load(d.path(), true, None, None).unwrap();
        assert_eq!(sv.merges, vec!["Ġ t".to_string(), "h e".to_string()]);
    }

    #[test]
    fn ids_out_of_range_and_lists_are_ignored() {
        let d = dir_with(&[(
            "config.json",
            json!({"bos_token_id": 10, "eos_token_id": [1, 2], "unk_token_id": 3}),
        )]);
        let sv = SpecialVocab::load(d.path(), false, None, Some(5)).unwrap();
        assert_eq!(sv.special_token_ids, vec![("unk".into(), 3)]);
    }

    #[test]
    fn named_templates() {
        let mut kv = KvList::default();
        add_chat_template(
            &mut kv,
            &ChatTemplate::Named(vec![
                ("default".into(), json!("D")),
                ("tool use".into(), json!("T")),
                ("".into(), json!("X")),
            ]),
        )
        .unwrap();
        assert_eq!(
            kv.keys(),
            vec![
                "tokenizer.chat_template.tool_use",
                "tokenizer.chat_templates",
                "tokenizer.chat_template"
            ]
        );
    }
}
