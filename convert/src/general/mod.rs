//! The `general.*` authorship metadata and the default output file name, as llama.cpp's
//! `convert_hf_to_gguf.py` produces them (gguf-py `metadata.py` / `utility.py`,
//! `conversion/base.py` `prepare_metadata`).
//!
//! Users compare ggforge's files and file names with llama.cpp's, and tools key on
//! `general.name` / `general.basename` / `general.size_label`, so the heuristics are reproduced
//! exactly, including their quirks (a `135M` in the folder name of a model with 13 thousand
//! parameters is treated as a context length and ends up lowercased in the finetune).
//!
//! Sources, in llama.cpp's precedence:
//! 1. the model card front matter (`README.md`: `model_name`, `license`, `base_model`, `tags`,
//!    `language`, `datasets`, ...),
//! 2. the model id: `config.json` `_name_or_path` when it looks like a repo id, then the folder
//!    name (see the deliberate difference below),
//! 3. `generation_config.json` for the `general.sampling.*` keys,
//! 4. a `--metadata` override file ([`general_metadata_with_override`]),
//! 5. `--model-name` ([`GeneralInput::name_override`]) for `general.name` only.
//!
//! # Deliberate differences from llama.cpp
//!
//! * **The model's real name instead of the folder name.** llama.cpp derives the name (and
//!   basename / size label / finetune / version) from the folder name, which is a commit hash for
//!   a Hugging Face cache snapshot (`E5A1F9C0...-13K-F16.gguf`). ggforge first uses the real repo
//!   id: [`GeneralInput::repo_id`], else a Hub cache path
//!   (`.../models--ORG--NAME/snapshots/<hash>/` gives `ORG/NAME`). When one is known it takes the
//!   place of both the `_name_or_path` and the folder-name steps (`_name_or_path` often names the
//!   *base* model of a finetune), and is parsed like llama.cpp parses `_name_or_path`, so
//!   `general.organization` is set from `ORG`. Model card fields keep their precedence. With no
//!   repo id and no cache path (a plain local folder) the result is llama.cpp's, byte for byte.
//!   In llama.cpp's `--remote` mode `general.name` is the raw repo id even over `--model-name`;
//!   ggforge lets `--model-name` win and titles the name as for a folder.
//! * A folder path without a final name (`.`, `..`) is resolved to the real directory name;
//!   llama.cpp uses `""` or `".."` there.
//! * Where llama.cpp crashes (a number as `version` in the card, a string `top_k`, mixed-type
//!   `tags`, invalid YAML or UTF-8 in the card, an unreadable override file) ggforge returns a
//!   [`GeneralError`] naming the file, the key and the value. A non-string value that llama.cpp
//!   would silently put into the file name (`size_label: 0` gives `-0`) is an error too.
//! * `generation_config.json` that is not a JSON object, or that uses Python-only JSON
//!   (`NaN`), is ignored like an unparsable one.
//! * `fill_templated_filename` keeps unknown `{fields}` instead of failing.

mod card;
mod metadata;
mod model_id;
mod naming;
mod pystr;
mod pyvalue;

use metadata::{Metadata, Val, F};
use pyvalue::Py;
use std::path::{Path, PathBuf};

/// Parameter counts as llama.cpp's `GGUFWriter.get_total_parameter_count` reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParamCounts {
    pub total: u64,
    /// Parameters outside the stacked expert tensors.
    pub shared: u64,
    /// Parameters of ONE expert (summed over the `*_exps.*` tensors).
    pub expert: u64,
    /// Average number of experts per expert tensor (0 for dense models).
    pub expert_count: u64,
}

/// A tensor's size for [`count_params`]: its element count, or its shape.
pub trait ParamShape {
    /// Number of elements.
    fn numel(&self) -> u64;
    /// Dimensions in NumPy / PyTorch order (outermost first), when known. llama.cpp needs them
    /// to find the expert count of `*_exps.*` tensors (`[n_expert, rows, cols]`).
    fn dims(&self) -> Option<Vec<u64>>;
}

impl ParamShape for u64 {
    fn numel(&self) -> u64 {
        *self
    }
    fn dims(&self) -> Option<Vec<u64>> {
        None
    }
}

macro_rules! shape_impls {
    ($($t:ty),*) => {$(
        impl ParamShape for $t {
            fn numel(&self) -> u64 {
                self.iter().map(|&d| d as u64).product()
            }
            fn dims(&self) -> Option<Vec<u64>> {
                Some(self.iter().map(|&d| d as u64).collect())
            }
        }
    )*};
}
shape_impls!(
    &[u64],
    &[usize],
    Vec<u64>,
    Vec<usize>,
    &Vec<u64>,
    &Vec<usize>
);

/// llama.cpp's `get_total_parameter_count` over the GGUF tensors that will be written
/// (GGUF name and element count or shape).
///
/// Tensors whose name contains `_exps.` and that have at least 3 dimensions are expert stacks:
/// their expert count is `dims[-3]` (`dims[-2]` for biases) and one expert's share is added to
/// `expert`. With element counts only (no shape) every tensor counts as shared, which is exact
/// for dense models; MoE callers must pass shapes to get llama.cpp's `8x7.2B`-style labels.
/// (LoRA adapters, which llama.cpp counts with a negative total, are not converted by ggforge.)
pub fn count_params<'a, S: ParamShape>(
    tensors: impl IntoIterator<Item = (&'a str, S)>,
) -> ParamCounts {
    let mut c = ParamCounts::default();
    let mut expert_sum = 0u64;
    let mut n_expert_tensors = 0u64;
    for (name, shape) in tensors {
        let size = shape.numel();
        match shape.dims() {
            Some(d) if name.contains("_exps.") && d.len() >= 3 => {
                let n_expert = d[d.len() - if name.contains(".bias") { 2 } else { 3 }];
                c.expert += size.checked_div(n_expert).unwrap_or(0);
                expert_sum += n_expert;
                n_expert_tensors += 1;
            }
            _ => c.shared += size,
        }
        c.total += size;
    }
    c.expert_count = expert_sum.checked_div(n_expert_tensors).unwrap_or(0);
    c
}

/// What [`general_metadata`] needs to know about the conversion.
pub struct GeneralInput<'a> {
    /// The Hugging Face folder (model card `README.md`, `generation_config.json` live here).
    pub model_dir: &'a Path,
    /// The raw `config.json` (for `_name_or_path`).
    pub config: &'a serde_json::Value,
    pub params: ParamCounts,
    /// The file type name as it goes into the file name: "F16", "BF16", "F32", "Q8_0", ...
    pub output_type: &'a str,
    /// Like `--model-name`: replaces `general.name` only (the file name keeps the basename).
    pub name_override: Option<&'a str>,
    /// "org/name" when the model came from the Hub.
    pub repo_id: Option<&'a str>,
}

/// The `general.*` KVs and the default file name.
#[derive(Clone, Debug, PartialEq)]
pub struct General {
    /// The keys llama.cpp writes in `Metadata.set_gguf_meta_model`, in its order and types.
    /// Not included: `general.architecture`, `general.type`, `general.file_type`,
    /// `general.quantization_version` (the converter writes those).
    pub kvs: Vec<(String, gguf::Value)>,
    /// `<Basename-or-Name>[-<Size>][-<Finetune>][-<Version>]-<OUTTYPE>.gguf`,
    /// e.g. `SmolLM2-135M-Instruct-F16.gguf`.
    pub default_file_name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum GeneralError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid model card front matter: {message}")]
    Card { path: PathBuf, message: String },
    #[error("{path}: invalid JSON: {message}")]
    Json { path: PathBuf, message: String },
    #[error("metadata `{key}` from {source_desc}: {message}")]
    Value {
        key: String,
        source_desc: String,
        message: String,
    },
}

/// Compute the `general.*` metadata and default file name (see the module docs for the
/// sources and the deliberate differences from llama.cpp).
pub fn general_metadata(input: &GeneralInput) -> Result<General, GeneralError> {
    general_metadata_with_override(input, None)
}

/// [`general_metadata`] with llama.cpp's `--metadata FILE` override: a JSON object whose
/// `general.*` keys (plus `general.base_models` / `general.datasets` lists of objects) replace
/// the gathered values; `null` clears one. A path that is not a file is ignored, as in llama.cpp.
pub fn general_metadata_with_override(
    input: &GeneralInput,
    metadata_override: Option<&Path>,
) -> Result<General, GeneralError> {
    let p = input.params;
    let total = i64::try_from(p.total).unwrap_or(i64::MAX);
    let dir = input.model_dir;

    let card = card::load_model_card(dir)?;
    let mut md = Metadata::default();
    metadata::apply_card(&mut md, &card, total);

    let folder = folder_name(dir);
    let real_id = input
        .repo_id
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .or_else(|| hub_cache_repo_id(dir));
    match &real_id {
        Some(id) => metadata::apply_id(&mut md, id, total, &format!("the repo id {id}")),
        None => {
            match input.config.get("_name_or_path") {
                None | Some(serde_json::Value::Null) => {}
                // Only a repo-id-like value ("org/name" or "name"), not a filesystem path.
                Some(serde_json::Value::String(s)) => {
                    if s.matches('/').count() <= 1 {
                        metadata::apply_id(&mut md, s, total, "config.json `_name_or_path`");
                    }
                }
                Some(other) => {
                    return Err(GeneralError::Value {
                        key: "_name_or_path".into(),
                        source_desc: "config.json".into(),
                        message: format!("expected a string, found {other}"),
                    })
                }
            }
            metadata::apply_id(&mut md, &folder, total, "the folder name");
        }
    }

    metadata::apply_generation_config(&mut md, &load_generation_config(dir));

    if let Some(path) = metadata_override.filter(|p| p.is_file()) {
        let ov = read_json(path)?;
        if !matches!(ov, Py::Dict(_)) {
            return Err(GeneralError::Json {
                path: path.to_owned(),
                message: "expected a JSON object".into(),
            });
        }
        metadata::apply_override(&mut md, &ov, &path.display().to_string())?;
    }

    if let Some(name) = input.name_override {
        md.set(
            F::Name,
            Some(Val {
                v: Py::Str(name.to_owned()),
                src: "--model-name".into(),
            }),
        );
    }
    if md.is_none(F::Name) {
        // Only reachable when an override file sets `general.name` to null.
        let fallback = real_id.clone().unwrap_or_else(|| folder.clone());
        md.set(
            F::Name,
            Some(Val {
                v: Py::Str(fallback),
                src: "the folder name".into(),
            }),
        );
    }
    if md.is_none(F::SizeLabel) && p.total > 0 {
        let label = naming::size_label(p.total, p.shared, p.expert, p.expert_count);
        md.set(
            F::SizeLabel,
            Some(Val {
                v: Py::Str(label),
                src: "the parameter count".into(),
            }),
        );
    }

    let kvs = metadata::to_kvs(&md)?;

    let basename = md.str_for_name(F::Basename)?;
    let name = if basename.is_none() {
        md.str_for_name(F::Name)?
    } else {
        None
    };
    let stem = naming::naming_convention(
        name,
        basename,
        md.str_for_name(F::Finetune)?,
        md.str_for_name(F::Version)?,
        md.str_for_name(F::SizeLabel)?,
        input.output_type,
    );
    Ok(General {
        kvs,
        default_file_name: format!("{stem}.gguf"),
    })
}

/// Fills `{ftype}`/`{outtype}` (lowercase), `{FTYPE}`/`{OUTTYPE}` (uppercase) and `{}` in a
/// user-given `--outfile` name, like llama.cpp's `fill_templated_filename`.
pub fn fill_templated_filename(name: &str, output_type: &str) -> String {
    naming::fill_templated_filename(name, output_type)
}

/// The folder's own name, as Python's `Path.name`; `.`/`..`/`/` are resolved to the real
/// directory name first (llama.cpp would use "" or "..").
fn folder_name(dir: &Path) -> String {
    let named = dir.file_name().map(|n| n.to_string_lossy().into_owned());
    named
        .or_else(|| {
            std::fs::canonicalize(dir)
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        })
        .unwrap_or_default()
}

/// `ORG/NAME` for a Hugging Face cache snapshot folder `.../models--ORG--NAME/snapshots/<rev>`
/// (checked on the path as given, then on the resolved path).
fn hub_cache_repo_id(dir: &Path) -> Option<String> {
    fn from_path(p: &Path) -> Option<String> {
        p.file_name()?;
        let snapshots = p.parent()?;
        if snapshots.file_name()? != "snapshots" {
            return None;
        }
        let repo = snapshots.parent()?.file_name()?.to_str()?;
        let id = repo.strip_prefix("models--")?;
        // The cache joins "org/name" with "--", which Hub names cannot contain.
        let (org, name) = match id.split_once("--") {
            Some((o, n)) => (Some(o), n),
            None => (None, id),
        };
        if name.is_empty() || org.is_some_and(str::is_empty) {
            return None;
        }
        Some(match org {
            Some(o) => format!("{o}/{name}"),
            None => name.to_owned(),
        })
    }
    from_path(dir).or_else(|| std::fs::canonicalize(dir).ok().and_then(|p| from_path(&p)))
}

/// `generation_config.json` as a Python value; missing, unreadable or invalid files give an
/// empty dict (llama.cpp: "not all models have valid generation_config.json").
fn load_generation_config(dir: &Path) -> Py {
    let path = dir.join("generation_config.json");
    if !dir.is_dir() || !path.is_file() {
        return Py::Dict(Vec::new());
    }
    read_json(&path).unwrap_or(Py::Dict(Vec::new()))
}

fn read_json(path: &Path) -> Result<Py, GeneralError> {
    let text = std::fs::read_to_string(path).map_err(|e| GeneralError::Io {
        path: path.to_owned(),
        source: e,
    })?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| GeneralError::Json {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    Ok(Py::from_json(&v))
}

/// fixtures/general/units.json (gguf-py's answers, made by fixtures/general/gen.py).
#[cfg(test)]
pub(crate) fn units_fixture() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/general/units.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_dense_and_moe_like_llama_cpp() {
        let dense = count_params([
            ("token_embd.weight", 64u64 * 32),
            ("output_norm.weight", 32),
        ]);
        assert_eq!(
            dense,
            ParamCounts {
                total: 2080,
                shared: 2080,
                expert: 0,
                expert_count: 0
            }
        );
        // Mixtral-like layer: 8 experts of [n_ff=4, n_embd=2] (NumPy order), plus a router; the
        // 2-D expert bias counts as shared. Expected: gguf-py get_total_parameter_count.
        let moe = count_params([
            ("blk.0.ffn_gate_inp.weight", vec![8u64, 2]),
            ("blk.0.ffn_up_exps.weight", vec![8, 4, 2]),
            ("blk.0.ffn_down_exps.weight", vec![8, 2, 4]),
            ("blk.0.ffn_down_exps.bias", vec![8, 2]),
        ]);
        assert_eq!(
            moe,
            ParamCounts {
                total: 160,
                shared: 32,
                expert: 16,
                expert_count: 8
            }
        );
    }

    #[test]
    fn hub_cache_paths() {
        let p = Path::new("/root/.cache/huggingface/hub/models--HuggingFaceTB--SmolLM2-135M-Instruct/snapshots/abc123");
        assert_eq!(
            hub_cache_repo_id(p).as_deref(),
            Some("HuggingFaceTB/SmolLM2-135M-Instruct")
        );
        assert_eq!(
            hub_cache_repo_id(Path::new("/c/models--gpt2/snapshots/abc/")).as_deref(),
            Some("gpt2")
        );
        assert_eq!(
            hub_cache_repo_id(Path::new("/c/models--gpt2/refs/abc")),
            None
        );
        assert_eq!(
            hub_cache_repo_id(Path::new("/c/datasets--a--b/snapshots/abc")),
            None
        );
        assert_eq!(
            hub_cache_repo_id(Path::new("/c/models----b/snapshots/abc")),
            None
        );
    }

    #[test]
    fn folder_names() {
        assert_eq!(
            folder_name(Path::new("/x/SmolLM2-135M-Instruct/")),
            "SmolLM2-135M-Instruct"
        );
        assert!(!folder_name(Path::new(".")).is_empty());
    }
}
