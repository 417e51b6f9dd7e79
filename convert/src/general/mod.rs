//! TEMPORARY PLACEHOLDER (written by the lead so the workspace compiles for the other helpers).
//! The general-metadata helper owns this file: replace it entirely with the real module
//! (declaring card/model_id/naming/pystr/pyvalue and the real API below).

use std::path::Path;

pub struct ParamCounts {
    pub total: u64,
    pub shared: u64,
    pub expert: u64,
    pub expert_count: u64,
}

pub fn count_params<'a>(tensors: impl IntoIterator<Item = (&'a str, u64)>) -> ParamCounts {
    let total = tensors.into_iter().map(|(_, n)| n).sum();
    ParamCounts { total, shared: 0, expert: 0, expert_count: 0 }
}

pub struct GeneralInput<'a> {
    pub model_dir: &'a Path,
    pub config: &'a serde_json::Value,
    pub params: ParamCounts,
    pub output_type: &'a str,
    pub name_override: Option<&'a str>,
    pub repo_id: Option<&'a str>,
}

pub struct General {
    pub kvs: Vec<(String, gguf::Value)>,
    pub default_file_name: String,
}

#[derive(Debug)]
pub struct GeneralError(pub String);

impl std::fmt::Display for GeneralError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub fn general_metadata(input: &GeneralInput) -> Result<General, GeneralError> {
    let name = input.model_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(General {
        kvs: vec![("general.name".into(), gguf::Value::String(name.clone()))],
        default_file_name: format!("{name}-{}.gguf", input.output_type),
    })
}

pub fn fill_templated_filename(name: &str, output_type: &str) -> String {
    name.replace("{ftype}", &output_type.to_lowercase()).replace("{FTYPE}", output_type)
}
