//! gguf-py's `Metadata`: gathering the authorship fields from the model card, the model id,
//! `generation_config.json` and a `--metadata` override file, and writing them as `general.*`
//! KVs (`Metadata.load`, `apply_metadata_heuristic`, `set_gguf_meta_model`).
//!
//! Values keep their Python shape ([`Py`]) until they are written, because llama.cpp only checks
//! types at that point: a non-null card value blocks later fallbacks even when it is unusable.

use super::model_id::{id_to_title, model_id_components};
use super::pyvalue::Py;
use super::GeneralError;
use gguf::{Array, Value};
use regex::Regex;
use std::sync::OnceLock;

/// One metadata value and where it came from (for error messages).
#[derive(Clone, Debug)]
pub(crate) struct Val {
    pub v: Py,
    pub src: String,
}

impl Val {
    fn new(v: Py, src: impl Into<String>) -> Val {
        Val { v, src: src.into() }
    }

    fn str(s: impl Into<String>, src: impl Into<String>) -> Val {
        Val::new(Py::Str(s.into()), src)
    }
}

/// The scalar fields, in `set_gguf_meta_model`'s write order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum F {
    SamplingSequence,
    SamplingTopK,
    SamplingTopP,
    SamplingMinP,
    SamplingXtcProbability,
    SamplingXtcThreshold,
    SamplingTemp,
    SamplingPenaltyLastN,
    SamplingPenaltyRepeat,
    SamplingMirostat,
    SamplingMirostatTau,
    SamplingMirostatEta,
    Name,
    Author,
    Version,
    Organization,
    Finetune,
    Basename,
    Description,
    QuantizedBy,
    SizeLabel,
    License,
    LicenseName,
    LicenseLink,
    Url,
    Doi,
    Uuid,
    RepoUrl,
    SourceUrl,
    SourceDoi,
    SourceUuid,
    SourceRepoUrl,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    I32,
    F32,
    /// A string, or a list of strings joined with ",".
    License,
}

/// Field, GGUF key, value kind, and whether a `--metadata` file may set it (llama.cpp's
/// override list omits `general.license`).
const FIELDS: [(F, &str, Kind, bool); 32] = [
    (
        F::SamplingSequence,
        "general.sampling.sequence",
        Kind::Str,
        true,
    ),
    (F::SamplingTopK, "general.sampling.top_k", Kind::I32, true),
    (F::SamplingTopP, "general.sampling.top_p", Kind::F32, true),
    (F::SamplingMinP, "general.sampling.min_p", Kind::F32, true),
    (
        F::SamplingXtcProbability,
        "general.sampling.xtc_probability",
        Kind::F32,
        true,
    ),
    (
        F::SamplingXtcThreshold,
        "general.sampling.xtc_threshold",
        Kind::F32,
        true,
    ),
    (F::SamplingTemp, "general.sampling.temp", Kind::F32, true),
    (
        F::SamplingPenaltyLastN,
        "general.sampling.penalty_last_n",
        Kind::I32,
        true,
    ),
    (
        F::SamplingPenaltyRepeat,
        "general.sampling.penalty_repeat",
        Kind::F32,
        true,
    ),
    (
        F::SamplingMirostat,
        "general.sampling.mirostat",
        Kind::I32,
        true,
    ),
    (
        F::SamplingMirostatTau,
        "general.sampling.mirostat_tau",
        Kind::F32,
        true,
    ),
    (
        F::SamplingMirostatEta,
        "general.sampling.mirostat_eta",
        Kind::F32,
        true,
    ),
    (F::Name, "general.name", Kind::Str, true),
    (F::Author, "general.author", Kind::Str, true),
    (F::Version, "general.version", Kind::Str, true),
    (F::Organization, "general.organization", Kind::Str, true),
    (F::Finetune, "general.finetune", Kind::Str, true),
    (F::Basename, "general.basename", Kind::Str, true),
    (F::Description, "general.description", Kind::Str, true),
    (F::QuantizedBy, "general.quantized_by", Kind::Str, true),
    (F::SizeLabel, "general.size_label", Kind::Str, true),
    (F::License, "general.license", Kind::License, false),
    (F::LicenseName, "general.license.name", Kind::Str, true),
    (F::LicenseLink, "general.license.link", Kind::Str, true),
    (F::Url, "general.url", Kind::Str, true),
    (F::Doi, "general.doi", Kind::Str, true),
    (F::Uuid, "general.uuid", Kind::Str, true),
    (F::RepoUrl, "general.repo_url", Kind::Str, true),
    (F::SourceUrl, "general.source.url", Kind::Str, true),
    (F::SourceDoi, "general.source.doi", Kind::Str, true),
    (F::SourceUuid, "general.source.uuid", Kind::Str, true),
    (F::SourceRepoUrl, "general.source.repo_url", Kind::Str, true),
];

/// The base model / dataset entry fields, in write order.
const ENTRY_FIELDS: [&str; 9] = [
    "name",
    "author",
    "version",
    "organization",
    "description",
    "url",
    "doi",
    "uuid",
    "repo_url",
];

#[derive(Clone, Debug, Default)]
pub(crate) struct Metadata {
    fields: [Option<Val>; 32],
    pub base_models: Option<Vec<Val>>,
    pub datasets: Option<Vec<Val>>,
    pub tags: Option<Vec<Val>>,
    pub languages: Option<Vec<Val>>,
}

impl Metadata {
    pub fn get(&self, f: F) -> Option<&Val> {
        self.fields[f as usize].as_ref()
    }

    pub fn is_none(&self, f: F) -> bool {
        self.fields[f as usize].is_none()
    }

    /// Python's `setattr(metadata, f, value)`: a `None` value clears the field.
    pub fn set(&mut self, f: F, value: Option<Val>) {
        self.fields[f as usize] = value.filter(|v| v.v != Py::None);
    }

    /// The field as a string for the file name; llama.cpp calls `.strip()` on it, which fails
    /// for anything but a string.
    pub fn str_for_name(&self, f: F) -> Result<Option<&str>, GeneralError> {
        match self.get(f) {
            None => Ok(None),
            Some(Val { v: Py::Str(s), .. }) => Ok(Some(s)),
            Some(val) => Err(bad_value(val, key_of(f), "a string")),
        }
    }
}

fn key_of(f: F) -> &'static str {
    FIELDS[f as usize].1
}

fn bad_value(val: &Val, key: &str, expected: &str) -> GeneralError {
    GeneralError::Value {
        key: key.to_owned(),
        source_desc: val.src.clone(),
        message: format!("expected {expected}, found {} {}", val.v.type_name(), val.v),
    }
}

fn hf_url_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    // `re.match(r"https?://huggingface.co/([^/]+/[^/]+)$", s)` (the dot is a wildcard there too).
    RE.get_or_init(|| {
        Regex::new(r"^https?://huggingface.co/([^/]+/[^/]+)$")
            .unwrap_or_else(|e| panic!("bad built-in regex: {e}"))
    })
}

/// Model card heuristics (`apply_metadata_heuristic`, the "model_card is not None" part).
pub(crate) fn apply_card(md: &mut Metadata, card: &Py, total_params: i64) {
    // `use_model_card_metadata`: fill a field that is still empty.
    let use_card = |md: &mut Metadata, f: F, key: &'static str| {
        if let Some(v) = card.get(key) {
            if md.is_none(f) {
                md.set(f, Some(Val::new(v.clone(), format!("README.md `{key}`"))));
            }
        }
    };
    // llama.cpp's own keys, then the same with a `model_` prefix, then TheBloke-style keys.
    for (f, key) in [
        (F::Name, "name"),
        (F::Author, "author"),
        (F::Version, "version"),
        (F::Organization, "organization"),
        (F::Description, "description"),
        (F::Finetune, "finetune"),
        (F::Basename, "basename"),
        (F::SizeLabel, "size_label"),
        (F::SourceUrl, "url"),
        (F::SourceDoi, "doi"),
        (F::SourceUuid, "uuid"),
        (F::SourceRepoUrl, "repo_url"),
        (F::Name, "model_name"),
        (F::Author, "model_author"),
        (F::Version, "model_version"),
        (F::Organization, "model_organization"),
        (F::Description, "model_description"),
        (F::Finetune, "model_finetune"),
        (F::Basename, "model_basename"),
        (F::SizeLabel, "model_size_label"),
        (F::SourceUrl, "model_url"),
        (F::SourceDoi, "model_doi"),
        (F::SourceUuid, "model_uuid"),
        (F::SourceRepoUrl, "model_repo_url"),
        (F::Name, "model_name"),
        (F::Author, "model_creator"),
        (F::Basename, "model_type"),
    ] {
        use_card(md, f, key);
    }

    // Base models: a repo id, a URL, a dict of fields, or a list of those.
    if let Some(items) = card_list(card, &["base_model", "base_models", "base_model_sources"]) {
        let list = md.base_models.get_or_insert_with(Vec::new);
        for (item, key) in items {
            list.push(Val::new(
                lineage_entry(&item, total_params),
                format!("README.md `{key}`"),
            ));
        }
    }
    if let Some(items) = card_list(card, &["datasets", "dataset", "dataset_sources"]) {
        let list = md.datasets.get_or_insert_with(Vec::new);
        for (item, key) in items {
            list.push(Val::new(
                lineage_entry(&item, total_params),
                format!("README.md `{key}`"),
            ));
        }
    }

    use_card(md, F::License, "license");
    use_card(md, F::LicenseName, "license_name");
    use_card(md, F::LicenseLink, "license_link");

    // `use_array_model_card_metadata`: append a string or the items of a list.
    let use_array = |target: &mut Option<Vec<Val>>, key: &'static str| {
        let Some(value) = card.get(key) else { return };
        if *value == Py::None {
            return;
        }
        let current = target.get_or_insert_with(Vec::new);
        let src = format!("README.md `{key}`");
        match value {
            Py::Str(_) => current.push(Val::new(value.clone(), src)),
            Py::List(items) => {
                current.extend(items.iter().map(|v| Val::new(v.clone(), src.clone())))
            }
            _ => {}
        }
    };
    use_array(&mut md.tags, "tags");
    use_array(&mut md.tags, "pipeline_tag");
    use_array(&mut md.languages, "languages");
    use_array(&mut md.languages, "language");
}

/// `model_card.get(k0, model_card.get(k1, model_card.get(k2)))` when any key is present:
/// the items (a string counts as one), each with the key it came from. `Some(empty)` still
/// creates the (empty) list, which makes llama.cpp write a count of 0.
fn card_list(card: &Py, keys: &[&'static str]) -> Option<Vec<(Py, &'static str)>> {
    let key = keys.iter().copied().find(|k| card.contains_key(k))?;
    Some(match card.get(key) {
        Some(s @ Py::Str(_)) => vec![(s.clone(), key)],
        Some(Py::List(items)) => items.iter().map(|v| (v.clone(), key)).collect(),
        _ => Vec::new(),
    })
}

/// One base model or dataset entry as the dict llama.cpp builds for it.
fn lineage_entry(item: &Py, total_params: i64) -> Py {
    let mut d: Vec<(Py, Py)> = Vec::new();
    let mut put = |k: &str, v: String| Py::dict_insert(&mut d, Py::Str(k.to_owned()), Py::Str(v));
    match item {
        Py::Str(id)
            if id.starts_with("http://")
                || id.starts_with("https://")
                || id.starts_with("ssh://") =>
        {
            put("repo_url", id.clone());
            if id.contains("huggingface.co") {
                if let Some(m) = hf_url_re().captures(id).and_then(|c| c.get(1)) {
                    let c = model_id_components(m.as_str(), total_params);
                    if let Some(n) = &c.full_name {
                        put("name", id_to_title(n));
                    }
                    if let Some(o) = &c.org {
                        put("organization", id_to_title(o));
                    }
                    if let Some(v) = c.version {
                        put("version", v);
                    }
                }
            }
        }
        Py::Str(id) => {
            let c = model_id_components(id, total_params);
            if let Some(n) = &c.full_name {
                put("name", id_to_title(n));
            }
            if let Some(o) = &c.org {
                put("organization", id_to_title(o));
            }
            if let Some(v) = c.version {
                put("version", v);
            }
            if let (Some(o), Some(n)) = (&c.org, &c.full_name) {
                put("repo_url", format!("https://huggingface.co/{o}/{n}"));
            }
        }
        Py::Dict(_) => return item.clone(),
        // llama.cpp logs "not in a known format" and still appends an empty entry.
        _ => {}
    }
    Py::Dict(d)
}

/// Fill the still-empty identity fields from a model id ("org/name" or a folder name), as the
/// `_name_or_path` and folder-name steps of `apply_metadata_heuristic` do.
pub(crate) fn apply_id(md: &mut Metadata, model_id: &str, total_params: i64, src: &str) {
    let c = model_id_components(model_id, total_params);
    let mut fill = |f: F, v: Option<String>| {
        if md.is_none(f) {
            if let Some(v) = v {
                md.set(f, Some(Val::str(v, src)));
            }
        }
    };
    fill(F::Name, c.full_name.as_deref().map(id_to_title));
    fill(F::Organization, c.org.as_deref().map(id_to_title));
    fill(F::Basename, c.basename);
    fill(F::Finetune, c.finetune);
    fill(F::Version, c.version);
    fill(F::SizeLabel, c.size_label);
}

/// Sampling defaults from `generation_config.json` (only when it is a non-empty object).
pub(crate) fn apply_generation_config(md: &mut Metadata, gen: &Py) {
    let Py::Dict(items) = gen else { return };
    if items.is_empty() {
        return;
    }
    let src = |k: &str| format!("generation_config.json `{k}`");
    for (f, key) in [
        (F::SamplingSequence, "sequence"),
        (F::SamplingTopK, "top_k"),
        (F::SamplingTopP, "top_p"),
        (F::SamplingMinP, "min_p"),
        (F::SamplingXtcProbability, "xtc_probability"),
        (F::SamplingXtcThreshold, "xtc_threshold"),
        (F::SamplingTemp, "temperature"),
        (F::SamplingPenaltyLastN, "penalty_last_n"),
        (F::SamplingMirostat, "mirostat"),
        (F::SamplingMirostatTau, "mirostat_tau"),
        (F::SamplingMirostatEta, "mirostat_eta"),
    ] {
        if let Some(v) = gen.get(key) {
            md.set(f, Some(Val::new(v.clone(), src(key))));
        }
    }
    // `penalty_repeat`, falling back to transformers' `repetition_penalty`.
    if let Some(v) = gen.get("penalty_repeat") {
        md.set(
            F::SamplingPenaltyRepeat,
            Some(Val::new(v.clone(), src("penalty_repeat"))),
        );
    } else if let Some(v) = gen.get("repetition_penalty") {
        md.set(
            F::SamplingPenaltyRepeat,
            Some(Val::new(v.clone(), src("repetition_penalty"))),
        );
    }
}

/// A `--metadata` override file: its keys replace the gathered values (`null` clears one).
pub(crate) fn apply_override(md: &mut Metadata, ov: &Py, file: &str) -> Result<(), GeneralError> {
    for (f, key, _, overridable) in FIELDS {
        if overridable {
            if let Some(v) = ov.get(key) {
                md.set(f, Some(Val::new(v.clone(), format!("{file} `{key}`"))));
            }
        }
    }
    let list = |key: &str| -> Result<Option<Option<Vec<Val>>>, GeneralError> {
        let src = format!("{file} `{key}`");
        match ov.get(key) {
            None => Ok(None),
            Some(Py::None) => Ok(Some(None)),
            Some(Py::List(items)) => Ok(Some(Some(
                items
                    .iter()
                    .map(|v| Val::new(v.clone(), src.clone()))
                    .collect(),
            ))),
            Some(other) => Err(bad_value(&Val::new(other.clone(), src), key, "a list")),
        }
    };
    if let Some(v) = list("general.base_models")? {
        md.base_models = v;
    }
    if let Some(v) = list("general.datasets")? {
        md.datasets = v;
    }
    if let Some(v) = list("general.tags")? {
        md.tags = v;
    }
    if let Some(v) = list("general.languages")? {
        md.languages = v;
    }
    Ok(())
}

/// `GGUFWriter.add_string`: empty and other "falsy" values are skipped; any other non-string
/// fails (llama.cpp crashes with a TypeError there).
fn push_str(out: &mut Vec<(String, Value)>, key: String, val: &Val) -> Result<(), GeneralError> {
    match &val.v {
        Py::Str(s) if !s.is_empty() => out.push((key, Value::String(s.clone()))),
        v if !v.is_truthy() => {}
        _ => return Err(bad_value(val, &key, "a string")),
    }
    Ok(())
}

fn to_i32(val: &Val, key: &str) -> Result<i32, GeneralError> {
    match val.v {
        Py::Bool(b) => Ok(b as i32),
        Py::Int(i) => {
            i32::try_from(i).map_err(|_| bad_value(val, key, "an integer in the int32 range"))
        }
        _ => Err(bad_value(val, key, "an integer")),
    }
}

/// Python's `struct.pack("<f", x)`: round to nearest, error when a finite value overflows.
fn to_f32(val: &Val, key: &str) -> Result<f32, GeneralError> {
    let x = match val.v {
        Py::Bool(b) => b as i32 as f64,
        Py::Int(i) => i as f64,
        Py::Float(x) => x,
        _ => return Err(bad_value(val, key, "a number")),
    };
    let y = x as f32;
    if x.is_finite() && y.is_infinite() {
        return Err(bad_value(val, key, "a number in the float32 range"));
    }
    Ok(y)
}

/// `GGUFWriter.add_array`: empty lists are skipped; the element type is the Python type of the
/// items (all strings in practice), and mixed types are an error.
fn push_array(
    out: &mut Vec<(String, Value)>,
    key: &str,
    items: &[Val],
) -> Result<(), GeneralError> {
    let Some(first) = items.first() else {
        return Ok(());
    };
    let kind = |v: &Py| -> Option<u8> {
        match v {
            Py::Str(_) => Some(0),
            Py::Float(_) => Some(1),
            Py::Bool(_) => Some(2),
            Py::Int(_) => Some(3),
            _ => None,
        }
    };
    let Some(k0) = kind(&first.v) else {
        return Err(bad_value(first, key, "a list of strings"));
    };
    if let Some(odd) = items.iter().find(|i| kind(&i.v) != Some(k0)) {
        return Err(bad_value(odd, key, "list items of one type (all strings)"));
    }
    let array = match k0 {
        0 => Array::String(
            items
                .iter()
                .map(|i| {
                    if let Py::Str(s) = &i.v {
                        s.clone()
                    } else {
                        String::new()
                    }
                })
                .collect(),
        ),
        1 => Array::F32(
            items
                .iter()
                .map(|i| to_f32(i, key))
                .collect::<Result<_, _>>()?,
        ),
        2 => Array::Bool(
            items
                .iter()
                .map(|i| matches!(i.v, Py::Bool(true)))
                .collect(),
        ),
        _ => Array::I32(
            items
                .iter()
                .map(|i| to_i32(i, key))
                .collect::<Result<_, _>>()?,
        ),
    };
    out.push((key.to_owned(), Value::Array(array)));
    Ok(())
}

fn push_entries(
    out: &mut Vec<(String, Value)>,
    what: &str,
    entries: &[Val],
) -> Result<(), GeneralError> {
    out.push((
        format!("general.{what}.count"),
        Value::U32(entries.len() as u32),
    ));
    for (i, entry) in entries.iter().enumerate() {
        if !matches!(entry.v, Py::Dict(_)) {
            return Err(bad_value(
                entry,
                &format!("general.{what}s"),
                "a list of objects",
            ));
        }
        for field in ENTRY_FIELDS {
            if let Some(v) = entry.v.get(field) {
                push_str(
                    out,
                    format!("general.{what}.{i}.{field}"),
                    &Val::new(v.clone(), entry.src.clone()),
                )?;
            }
        }
    }
    Ok(())
}

/// `Metadata.set_gguf_meta_model`: the KVs in llama.cpp's order and types.
pub(crate) fn to_kvs(md: &Metadata) -> Result<Vec<(String, Value)>, GeneralError> {
    let mut out = Vec::new();
    for (f, key, kind, _) in FIELDS {
        let Some(val) = md.get(f) else { continue };
        match kind {
            Kind::Str => push_str(&mut out, key.to_owned(), val)?,
            Kind::I32 => out.push((key.to_owned(), Value::I32(to_i32(val, key)?))),
            Kind::F32 => out.push((key.to_owned(), Value::F32(to_f32(val, key)?))),
            Kind::License => match &val.v {
                Py::List(items) => {
                    let mut parts = Vec::with_capacity(items.len());
                    for item in items {
                        match item {
                            Py::Str(s) => parts.push(s.as_str()),
                            _ => {
                                return Err(bad_value(
                                    &Val::new(item.clone(), val.src.clone()),
                                    key,
                                    "a list of strings",
                                ))
                            }
                        }
                    }
                    push_str(
                        &mut out,
                        key.to_owned(),
                        &Val::str(parts.join(","), val.src.clone()),
                    )?;
                }
                _ => push_str(&mut out, key.to_owned(), val)?,
            },
        }
    }
    if let Some(entries) = &md.base_models {
        push_entries(&mut out, "base_model", entries)?;
    }
    if let Some(entries) = &md.datasets {
        push_entries(&mut out, "dataset", entries)?;
    }
    if let Some(tags) = &md.tags {
        push_array(&mut out, "general.tags", tags)?;
    }
    if let Some(languages) = &md.languages {
        push_array(&mut out, "general.languages", languages)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_table_is_in_enum_order() {
        for (i, (f, ..)) in FIELDS.iter().enumerate() {
            assert_eq!(*f as usize, i, "{f:?}");
        }
    }

    #[test]
    fn falsy_values_are_skipped_and_truthy_non_strings_rejected() {
        let mut md = Metadata::default();
        md.set(
            F::Description,
            Some(Val::new(Py::Bool(false), "README.md `description`")),
        );
        md.set(F::Author, Some(Val::str("", "test")));
        assert!(to_kvs(&md).map(|k| k.is_empty()).unwrap_or(false));
        md.set(
            F::Version,
            Some(Val::new(Py::Float(1.5), "README.md `version`")),
        );
        let err = to_kvs(&md).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            err.contains("general.version") && err.contains("README.md `version`"),
            "{err}"
        );
    }

    #[test]
    fn sampling_types_follow_struct_pack() {
        let mut md = Metadata::default();
        md.set(F::SamplingTopK, Some(Val::new(Py::Bool(true), "g")));
        md.set(F::SamplingTemp, Some(Val::new(Py::Int(1), "g")));
        let kvs = to_kvs(&md).unwrap_or_default();
        assert_eq!(kvs[0], ("general.sampling.top_k".to_owned(), Value::I32(1)));
        assert_eq!(
            kvs[1],
            ("general.sampling.temp".to_owned(), Value::F32(1.0))
        );
        md.set(F::SamplingTopK, Some(Val::new(Py::Float(50.0), "g")));
        assert!(to_kvs(&md).is_err());
        md.set(F::SamplingTopK, Some(Val::new(Py::Int(1 << 40), "g")));
        assert!(to_kvs(&md).is_err());
        md.set(F::SamplingTopK, None);
        md.set(F::SamplingTemp, Some(Val::new(Py::Float(1e300), "g")));
        assert!(to_kvs(&md).is_err());
    }

    #[test]
    fn arrays_take_the_python_item_type() {
        let mut md = Metadata {
            tags: Some(vec![
                Val::new(Py::Int(2024), "t"),
                Val::new(Py::Int(7), "t"),
            ]),
            languages: Some(vec![]),
            ..Default::default()
        };
        let kvs = to_kvs(&md).unwrap_or_default();
        assert_eq!(
            kvs,
            vec![(
                "general.tags".to_owned(),
                Value::Array(Array::I32(vec![2024, 7]))
            )]
        );
        md.tags = Some(vec![Val::str("en", "t"), Val::new(Py::Bool(false), "t")]);
        assert!(to_kvs(&md).is_err());
    }
}
