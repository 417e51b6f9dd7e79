//! Which files of a repo a conversion reads. Everything else (PyTorch pickles, ONNX and GGUF
//! exports, other frameworks' weights, images) is left on the Hub.
//!
//! The weights are chosen the way the converter opens them: the shards named by
//! `model.safetensors.index.json` when there is one, else every top-level
//! `model*.safetensors` (llama.cpp's `model*.safetensors` glob). So a repo that also carries,
//! say, a `consolidated.safetensors` copy of the weights does not cost a second download.

use std::path::Path;

use crate::error::HubError;

/// The safetensors shard index.
pub const INDEX: &str = "model.safetensors.index.json";

/// Top-level files the converter reads when they exist: the config, the generation defaults
/// and model card (general metadata), and every tokenizer format it understands.
pub const METADATA_FILES: &[&str] = &[
    "config.json",
    "generation_config.json",
    "README.md",
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
];

/// A top-level `model*.safetensors` file.
pub fn is_weight(file: &str) -> bool {
    !file.contains('/') && file.starts_with("model") && file.ends_with(".safetensors")
}

/// Pickled PyTorch weights, which can run code when loaded and are never downloaded.
pub fn is_pickle(file: &str) -> bool {
    [".bin", ".pt", ".pth", ".ckpt", ".pkl"]
        .iter()
        .any(|ext| file.ends_with(ext))
}

/// `additional_chat_templates/<name>.jinja` (named templates, `tokenizer.chat_template.<name>`).
fn is_extra_template(file: &str) -> bool {
    file.strip_prefix("additional_chat_templates/")
        .is_some_and(|n| !n.contains('/') && n.ends_with(".jinja"))
}

/// The files to fetch from a repo listing before the index is read: metadata first (small,
/// and the config fails fast on an unsupported model), then the index or the weights.
pub fn initial(listing: &[String]) -> Vec<String> {
    let has = |f: &str| listing.iter().any(|l| l == f);
    let mut out: Vec<String> = METADATA_FILES
        .iter()
        .filter(|f| has(f))
        .map(|f| f.to_string())
        .collect();
    // Only for the converter's clear "tekken.json-only checkpoints are not supported" error.
    if !has("tokenizer.json") && has("tekken.json") {
        out.push("tekken.json".into());
    }
    let mut extra: Vec<String> = listing
        .iter()
        .filter(|f| is_extra_template(f))
        .cloned()
        .collect();
    extra.sort();
    out.extend(extra);
    if has(INDEX) {
        out.push(INDEX.to_string());
    } else {
        let mut weights: Vec<String> = listing.iter().filter(|f| is_weight(f)).cloned().collect();
        weights.sort();
        out.extend(weights);
    }
    out
}

/// A file name from an index, which must stay inside the snapshot folder.
fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('/')
        && !name.contains('\\')
        && name
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != "..")
}

/// The shard files an index names (sorted, each once).
pub fn index_shards(path: &Path) -> Result<Vec<String>, HubError> {
    let bad = |message: String| HubError::Integrity {
        file: INDEX.to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| HubError::io(path, e))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("no 'weight_map' object".into()))?;
    let mut files = std::collections::BTreeSet::new();
    for (tensor, file) in map {
        let file = file
            .as_str()
            .filter(|f| safe_name(f))
            .ok_or_else(|| bad(format!("tensor '{tensor}' maps to {file}, not a file name")))?;
        files.insert(file.to_string());
    }
    Ok(files.into_iter().collect())
}

/// For the cache-only mode: the selected files present in a snapshot folder, or `Err` naming
/// what is missing for a conversion (the config, or weights the index lists).
pub fn complete_in(dir: &Path) -> Result<Vec<String>, String> {
    let mut present: Vec<String> = Vec::new();
    for f in METADATA_FILES {
        if dir.join(f).is_file() {
            present.push(f.to_string());
        }
    }
    if !present.iter().any(|f| f == "config.json") {
        return Err("config.json".into());
    }
    if let Ok(rd) = std::fs::read_dir(dir.join("additional_chat_templates")) {
        let mut extra: Vec<String> = rd
            .filter_map(|e| e.ok())
            .map(|e| {
                format!(
                    "additional_chat_templates/{}",
                    e.file_name().to_string_lossy()
                )
            })
            .filter(|f| is_extra_template(f))
            .collect();
        extra.sort();
        present.extend(extra);
    }
    let index = dir.join(INDEX);
    if index.is_file() {
        let shards = index_shards(&index).map_err(|e| e.to_string())?;
        let missing: Vec<&String> = shards.iter().filter(|s| !dir.join(s).is_file()).collect();
        if !missing.is_empty() {
            return Err(missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "));
        }
        present.push(INDEX.to_string());
        present.extend(shards);
    } else {
        let mut weights: Vec<String> = std::fs::read_dir(dir)
            .map_err(|e| format!("a readable folder ({e})"))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|f| is_weight(f) && dir.join(f).is_file())
            .collect();
        if weights.is_empty() {
            return Err("model*.safetensors weights".into());
        }
        weights.sort();
        present.extend(weights);
    }
    Ok(present)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn picks_what_the_converter_reads() {
        let listing = s(&[
            ".gitattributes",
            "README.md",
            "config.json",
            "consolidated.safetensors",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json",
            "pytorch_model.bin",
            "onnx/model.onnx",
            "tokenizer.json",
            "tekken.json",
            "additional_chat_templates/tool_use.jinja",
            "original/model.safetensors",
        ]);
        assert_eq!(
            initial(&listing),
            s(&[
                "config.json",
                "README.md",
                "tokenizer.json",
                "additional_chat_templates/tool_use.jinja",
                INDEX
            ])
        );
        let listing = s(&[
            "config.json",
            "model.safetensors",
            "consolidated.safetensors",
        ]);
        assert_eq!(initial(&listing), s(&["config.json", "model.safetensors"]));
        assert!(is_pickle("pytorch_model-00001-of-00002.bin"));
        assert!(!is_weight("original/model.safetensors"));
    }

    #[test]
    fn index_names_must_stay_inside() {
        let dir = std::env::temp_dir().join(format!("hub-select-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(INDEX);
        std::fs::write(
            &p,
            r#"{"weight_map": {"a": "model-2.safetensors", "b": "model-1.safetensors", "c": "model-2.safetensors"}}"#,
        )
        .unwrap();
        assert_eq!(
            index_shards(&p).unwrap(),
            s(&["model-1.safetensors", "model-2.safetensors"])
        );
        std::fs::write(&p, r#"{"weight_map": {"a": "../../x.safetensors"}}"#).unwrap();
        assert!(index_shards(&p).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
