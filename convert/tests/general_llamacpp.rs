//! `general.*` metadata and default file names compared with llama.cpp's own results.
//!
//! fixtures/general/cases.json: real `convert_hf_to_gguf.py` runs on tiny checkpoints (folder
//! name, model card, generation config, flags → written KVs and file name).
//! fixtures/general/units.json: gguf-py `Metadata.load` + conversion/base.py naming glue on
//! synthetic folders with realistic parameter counts. Both are made by fixtures/general/gen.py.

use convert::general::{
    count_params, fill_templated_filename, general_metadata_with_override, General, GeneralInput,
    ParamCounts,
};
use gguf::{Array, Value};
use serde_json::Value as J;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Keys the converter itself writes (not part of `general_metadata`).
const CONVERTER_KEYS: [&str; 4] = [
    "general.architecture",
    "general.type",
    "general.file_type",
    "general.quantization_version",
];

fn fixture(name: &str) -> J {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/general")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A fresh scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "ggforge-general-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn s<'a>(v: &'a J, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("fixture field {key} is not a string in {v}"))
}

/// The expected general.* KVs of a fixture entry, as gguf values.
fn expected_kvs(entries: &J) -> Vec<(String, Value)> {
    let list = entries
        .as_array()
        .unwrap_or_else(|| panic!("general is not a list"));
    list.iter()
        .filter(|e| !CONVERTER_KEYS.contains(&s(e, "key")))
        .map(|e| {
            let v = &e["value"];
            let value = match s(e, "type") {
                "STRING" => Value::String(s(e, "value").to_owned()),
                "UINT32" => Value::U32(
                    v.as_u64()
                        .and_then(|x| u32::try_from(x).ok())
                        .unwrap_or_else(|| panic!("{e}")),
                ),
                "INT32" => Value::I32(
                    v.as_i64()
                        .and_then(|x| i32::try_from(x).ok())
                        .unwrap_or_else(|| panic!("{e}")),
                ),
                "FLOAT32" => Value::F32(f32::from_bits(
                    e["f32_bits"]
                        .as_u64()
                        .and_then(|x| u32::try_from(x).ok())
                        .unwrap_or_else(|| panic!("{e}")),
                )),
                "ARRAY" => {
                    let items = v.as_array().unwrap_or_else(|| panic!("{e}"));
                    Value::Array(match s(e, "elem_type") {
                        "STRING" => Array::String(
                            items
                                .iter()
                                .map(|i| i.as_str().unwrap_or("?").to_owned())
                                .collect(),
                        ),
                        "INT32" => Array::I32(
                            items
                                .iter()
                                .map(|i| i.as_i64().unwrap_or(i64::MAX) as i32)
                                .collect(),
                        ),
                        "BOOL" => Array::Bool(
                            items.iter().map(|i| i.as_bool().unwrap_or(false)).collect(),
                        ),
                        "FLOAT32" => Array::F32(
                            items
                                .iter()
                                .map(|i| i.as_f64().unwrap_or(f64::NAN) as f32)
                                .collect(),
                        ),
                        other => panic!("unexpected array type {other} in {e}"),
                    })
                }
                other => panic!("unexpected type {other} in {e}"),
            };
            (s(e, "key").to_owned(), value)
        })
        .collect()
}

/// Counts of the tensors llama.cpp wrote (GGUF dims reversed to NumPy order).
fn tensor_params(tensors: &J) -> ParamCounts {
    let list: Vec<(String, Vec<u64>)> = tensors
        .as_array()
        .unwrap_or_else(|| panic!("tensors is not a list"))
        .iter()
        .map(|t| {
            let dims: Vec<u64> = t[1]
                .as_array()
                .map(|d| d.iter().rev().filter_map(J::as_u64).collect())
                .unwrap_or_default();
            assert_eq!(
                dims.iter().product::<u64>(),
                t[2].as_u64().unwrap_or(0),
                "{t}"
            );
            (t[0].as_str().unwrap_or("").to_owned(), dims)
        })
        .collect();
    count_params(list.iter().map(|(n, d)| (n.as_str(), d)))
}

struct Run<'a> {
    folder: &'a str,
    files: &'a J,
    params: ParamCounts,
    output_type: &'a str,
    model_name: Option<&'a str>,
    override_text: Option<&'a str>,
    repo_id: Option<&'a str>,
    /// Replaces config.json (for the deliberate-difference tests).
    config: Option<J>,
}

fn run(r: &Run) -> Result<General, String> {
    let scratch = Scratch::new();
    let dir = scratch.0.join(r.folder);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let files = r.files.as_object().ok_or("files is not an object")?;
    for (name, text) in files {
        std::fs::write(
            dir.join(name),
            text.as_str().ok_or("file text is not a string")?,
        )
        .map_err(|e| e.to_string())?;
    }
    let config = match &r.config {
        Some(c) => c.clone(),
        None => match files.get("config.json").and_then(J::as_str) {
            Some(t) => serde_json::from_str(t).map_err(|e| e.to_string())?,
            None => J::Object(Default::default()),
        },
    };
    let override_path = match r.override_text {
        Some(t) => {
            let p = scratch.0.join("override.json");
            std::fs::write(&p, t).map_err(|e| e.to_string())?;
            Some(p)
        }
        None => None,
    };
    let input = GeneralInput {
        model_dir: &dir,
        config: &config,
        params: r.params,
        output_type: r.output_type,
        name_override: r.model_name,
        repo_id: r.repo_id,
    };
    general_metadata_with_override(&input, override_path.as_deref()).map_err(|e| e.to_string())
}

fn compare(
    id: &str,
    got: &General,
    want_kvs: &[(String, Value)],
    want_file: Option<&str>,
) -> Vec<String> {
    let mut errs = Vec::new();
    let n = got.kvs.len().max(want_kvs.len());
    for i in 0..n {
        let (g, w) = (got.kvs.get(i), want_kvs.get(i));
        if g != w {
            errs.push(format!("{id}: KV #{i}: ggforge {g:?}, llama.cpp {w:?}"));
            break;
        }
    }
    if let Some(f) = want_file {
        if got.default_file_name != f {
            errs.push(format!(
                "{id}: file name: ggforge {:?}, llama.cpp {f:?}",
                got.default_file_name
            ));
        }
    }
    errs
}

fn case<'a>(cases: &'a J, id: &str) -> &'a J {
    cases["cases"]
        .as_array()
        .and_then(|l| l.iter().find(|c| c["id"] == id))
        .unwrap_or_else(|| panic!("no case {id} in cases.json"))
}

fn run_case(
    c: &J,
    folder: &str,
    repo_id: Option<&str>,
    config: Option<J>,
) -> Result<General, String> {
    run(&Run {
        folder,
        files: &c["files"],
        params: tensor_params(&c["tensors"]),
        output_type: s(c, "output_type"),
        model_name: c["model_name"].as_str(),
        override_text: c["metadata_override"].as_str(),
        repo_id,
        config,
    })
}

#[test]
fn conversion_cases_match_llama_cpp() {
    let cases = fixture("cases.json");
    let list = cases["cases"]
        .as_array()
        .unwrap_or_else(|| panic!("no cases"));
    assert!(list.len() >= 25, "cases.json has only {} cases", list.len());
    let mut errs = Vec::new();
    let mut compared = 0;
    for c in list {
        let id = s(c, "id");
        if id == "hub_snapshot" {
            continue; // deliberate difference, see hub_cache_snapshot_uses_the_repo_id
        }
        let got = match run_case(c, s(c, "folder"), None, None) {
            Ok(g) => g,
            Err(e) => {
                errs.push(format!("{id}: {e}"));
                continue;
            }
        };
        let file = s(c, "file_name");
        let want_file = match c["outfile_template"].as_str() {
            Some(template) => {
                let filled = fill_templated_filename(template, s(c, "output_type"));
                if filled != file {
                    errs.push(format!(
                        "{id}: templated name: ggforge {filled:?}, llama.cpp {file:?}"
                    ));
                }
                None
            }
            None => Some(file),
        };
        errs.extend(compare(id, &got, &expected_kvs(&c["general"]), want_file));
        compared += 1;
    }
    assert!(
        errs.is_empty(),
        "{} of {compared} cases differ:\n{}",
        errs.len(),
        errs.join("\n")
    );
}

/// The deliberate difference: a Hub cache snapshot folder is named after the repo, not the hash.
/// Expected = llama.cpp's result for the same files in a hash-named folder whose config.json
/// carries the repo id as `_name_or_path` (which is how llama.cpp itself learns a repo id).
#[test]
fn hub_cache_snapshot_uses_the_repo_id() {
    let cases = fixture("cases.json");
    let hub = case(&cases, "hub_snapshot");
    let reference = case(&cases, "hash_folder_name_or_path");
    // llama.cpp really names the snapshot after its hash.
    assert!(
        s(hub, "file_name").starts_with("E5A1F9C0"),
        "{}",
        s(hub, "file_name")
    );
    let got = run_case(hub, s(hub, "folder"), None, None).unwrap_or_else(|e| panic!("{e}"));
    let errs = compare(
        "hub_snapshot",
        &got,
        &expected_kvs(&reference["general"]),
        Some(s(reference, "file_name")),
    );
    assert!(errs.is_empty(), "{}", errs.join("\n"));
}

fn without_name_or_path(c: &J) -> J {
    let mut config: J =
        serde_json::from_str(s(&c["files"], "config.json")).unwrap_or_else(|e| panic!("{e}"));
    if let Some(o) = config.as_object_mut() {
        o.remove("_name_or_path");
    }
    config
}

/// `repo_id` plays the same role: a hash folder without `_name_or_path` plus the repo id gives
/// what llama.cpp gives with `_name_or_path`.
#[test]
fn repo_id_names_a_hash_folder() {
    let cases = fixture("cases.json");
    let reference = case(&cases, "hash_folder_name_or_path");
    let config = without_name_or_path(reference);
    let got = run_case(
        reference,
        s(reference, "folder"),
        Some("HuggingFaceTB/SmolLM2-135M-Instruct"),
        Some(config),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let errs = compare(
        "repo_id",
        &got,
        &expected_kvs(&reference["general"]),
        Some(s(reference, "file_name")),
    );
    assert!(errs.is_empty(), "{}", errs.join("\n"));
}

/// With a repo id, a `_name_or_path` naming some other (base) model is not used: the result is
/// llama.cpp's for `_name_or_path` = the repo id.
#[test]
fn repo_id_wins_over_name_or_path() {
    let cases = fixture("cases.json");
    let reference = case(&cases, "name_or_path");
    let mut config = without_name_or_path(reference);
    if let Some(o) = config.as_object_mut() {
        o.insert(
            "_name_or_path".into(),
            J::String("mistralai/Mistral-7B-v0.1".into()),
        );
    }
    let got = run_case(
        reference,
        s(reference, "folder"),
        Some("HuggingFaceTB/SmolLM2-360M-Instruct"),
        Some(config),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let errs = compare(
        "repo_id_name_or_path",
        &got,
        &expected_kvs(&reference["general"]),
        Some(s(reference, "file_name")),
    );
    assert!(errs.is_empty(), "{}", errs.join("\n"));
}

#[test]
fn load_cases_match_llama_cpp() {
    let units = fixture("units.json");
    let list = units["load"]
        .as_array()
        .unwrap_or_else(|| panic!("no load cases"));
    assert!(
        list.len() >= 40,
        "units.json has only {} load cases",
        list.len()
    );
    let mut errs = Vec::new();
    for c in list {
        let id = s(c, "id");
        let p: Vec<i64> = c["params"]
            .as_array()
            .map(|a| a.iter().filter_map(J::as_i64).collect())
            .unwrap_or_default();
        let params = ParamCounts {
            total: p[0].unsigned_abs(),
            shared: p[1].unsigned_abs(),
            expert: p[2].unsigned_abs(),
            expert_count: p[3].unsigned_abs(),
        };
        let got = run(&Run {
            folder: s(c, "folder"),
            files: &c["files"],
            params,
            output_type: s(c, "output_type"),
            model_name: c["model_name"].as_str(),
            override_text: c["metadata_override"].as_str(),
            repo_id: None,
            config: None,
        });
        match (got, c.get("error")) {
            (Ok(g), None) => errs.extend(compare(
                id,
                &g,
                &expected_kvs(&c["general"]),
                Some(s(c, "file_name")),
            )),
            (Err(_), Some(_)) => {}
            (Ok(g), Some(e)) => errs.push(format!(
                "{id}: llama.cpp fails ({e}), ggforge gives {:?}",
                g.default_file_name
            )),
            (Err(e), None) => errs.push(format!("{id}: ggforge fails: {e}")),
        }
    }
    assert!(
        errs.is_empty(),
        "{} load cases differ:\n{}",
        errs.len(),
        errs.join("\n")
    );
}

#[test]
fn templated_file_names_match_llama_cpp() {
    let units = fixture("units.json");
    let list = units["fill_templated_filename"]
        .as_array()
        .unwrap_or_else(|| panic!("no template cases"));
    assert!(!list.is_empty());
    for t in list {
        let (name, ty, want) = (t[0][0].as_str(), t[0][1].as_str(), t[1].as_str());
        let (Some(name), Some(ty), Some(want)) = (name, ty, want) else {
            panic!("bad entry {t}")
        };
        assert_eq!(fill_templated_filename(name, ty), want, "{name} {ty}");
    }
}

#[test]
fn errors_name_the_file_and_key() {
    let scratch = Scratch::new();
    let dir = scratch.0.join("Llama-3-8B");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.join("README.md"), "---\nversion: 1.0\n---\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let config = J::Object(Default::default());
    let input = GeneralInput {
        model_dir: &dir,
        config: &config,
        params: ParamCounts {
            total: 8_030_261_248,
            shared: 8_030_261_248,
            expert: 0,
            expert_count: 0,
        },
        output_type: "F16",
        name_override: None,
        repo_id: None,
    };
    let err = convert::general::general_metadata(&input)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("general.version")
            && err.contains("README.md `version`")
            && err.contains("1.0"),
        "{err}"
    );
}
