//! Splitting a model id such as `HuggingFaceTB/SmolLM2-135M-Instruct` into the GGUF naming
//! components (basename, size label, finetune, version), as gguf-py's
//! `Metadata.get_model_id_components` and `Metadata.id_to_title` do.
//!
//! The exact algorithm matters: these components become `general.basename` / `general.finetune`
//! / `general.version` / `general.size_label` and the default output file name, which users
//! (and scripts) compare against llama.cpp's.

use super::pystr;
use regex::Regex;
use std::sync::OnceLock;

/// What `get_model_id_components` returns, in its order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct IdComponents {
    /// The part after the first `/` (the whole id when there is no `/`), or the whole id when it
    /// contains a space.
    pub full_name: Option<String>,
    pub org: Option<String>,
    pub basename: Option<String>,
    pub finetune: Option<String>,
    pub version: Option<String>,
    pub size_label: Option<String>,
}

fn re(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    // Fixed literals: a failure is a programming error that the unit tests catch.
    cell.get_or_init(|| {
        Regex::new(pattern).unwrap_or_else(|e| panic!("bad built-in regex {pattern}: {e}"))
    })
}

fn version_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    re(&RE, r"(?i)^(?:(?:v|iter)?\d+(?:[.]\d+)*)$")
}

fn quant_type_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    re(&RE, r"(?i)^(?:i?q\d(?:_\w)*|b?fp?(?:16|32))$")
}

fn size_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    re(
        &RE,
        r"(?i)^(?:(?:[A]|\d+[x])?\d+(?:[._]\d+)?[KMBT][\d]?|small|mini|medium|large|x?xl)$",
    )
}

fn finetune_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    re(&RE, r"(?i)^(?:chat|instruct|vision|lora)$")
}

fn title_keep_re() -> &'static Regex {
    // `re.match(r'^(v\d+(?:\.\d+)*|\d.*)$', w)`: `.` stops at a newline, and `$` may match
    // before a final newline; words never contain whitespace, so neither case arises.
    static RE: OnceLock<Regex> = OnceLock::new();
    re(&RE, r"^(?:v\d+(?:\.\d+)*|\d.*)$")
}

/// `Metadata.id_to_title`: dashes become spaces and all-lowercase words are title-cased, except
/// version-like words (`v1.2`) and words starting with a digit (`7b`).
pub(crate) fn id_to_title(s: &str) -> String {
    let replaced = pystr::strip(s).replace('-', " ");
    pystr::split_whitespace(&replaced)
        .into_iter()
        .map(|w| {
            if pystr::is_lower(w) && !title_keep_re().is_match(w) {
                pystr::title(w)
            } else {
                w.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Clone, Copy, Default)]
struct Kinds {
    basename: bool,
    size_label: bool,
    finetune: bool,
    version: bool,
    quant_type: bool,
}

impl Kinds {
    fn count(&self) -> usize {
        [
            self.basename,
            self.size_label,
            self.finetune,
            self.version,
            self.quant_type,
        ]
        .iter()
        .filter(|b| **b)
        .count()
    }
}

/// Python's `float()` for the number in front of a size suffix (`"7.1"` of `"7.1B"`). Returns
/// `None` where Python raises `ValueError` (e.g. `"8x7"`, `"A3"`).
fn py_float(s: &str) -> Option<f64> {
    let t = pystr::strip(s);
    let body = t.strip_prefix(['+', '-']).unwrap_or(t);
    // Rust accepts forms Python rejects ("inf" is fine in both; Python also takes "1_0", which
    // cannot occur here because underscores were turned into dots).
    if body.is_empty() || !body.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return None;
    }
    t.parse::<f64>().ok()
}

/// `Metadata.get_model_id_components(model_id, total_params)`.
///
/// `total_params` decides whether a size-looking part (`135M`) is the model size or something
/// else (a context length such as `16K`): a label more than 7/8 of the real count away is
/// demoted to the finetune part and lowercased.
pub(crate) fn model_id_components(model_id: &str, total_params: i64) -> IdComponents {
    if model_id.contains(' ') {
        // A human-written name, not a Hugging Face id.
        return IdComponents {
            full_name: Some(model_id.to_owned()),
            ..Default::default()
        };
    }
    let (mut org, full_name) = match model_id.split_once('/') {
        Some((o, n)) => (Some(o.to_owned()), n.to_owned()),
        None => (None, model_id.to_owned()),
    };
    // "./model" or "../model" is a path, not an organization.
    if org.as_deref().is_some_and(|o| o.starts_with('.')) {
        org = None;
    }

    let mut parts: Vec<String> = full_name
        .split('-')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    let mut kinds: Vec<Kinds> = vec![Kinds::default(); parts.len()];

    for i in 0..parts.len() {
        let part = parts[i].clone();
        if version_re().is_match(&part) {
            kinds[i].version = true;
        } else if quant_type_re().is_match(&part) {
            kinds[i].quant_type = true;
            parts[i] = part.to_uppercase();
        } else if i > 0 && size_re().is_match(&part) {
            let mut p: Vec<char> = part.replace('_', ".").chars().collect();
            // bloom-7b1 notation: "7b1" means "7.1b".
            if p.last().copied().is_some_and(pystr::is_decimal) {
                let n = p.len();
                let (last, before) = (p[n - 1], p[n - 2]);
                p.truncate(n - 2);
                p.extend(['.', last, before]);
            }
            // Normalize the suffix of numeric sizes to uppercase.
            let n = p.len();
            if n > 1 && pystr::is_decimal(p[n - 2]) && matches!(p[n - 1], 'k' | 'm' | 'b' | 't') {
                p[n - 1] = p[n - 1].to_ascii_uppercase();
            }
            if total_params != 0 {
                let number: String = p[..p.len() - 1].iter().collect();
                if let Some(value) = py_float(&number) {
                    let exponent = " KMBT".find(p[p.len() - 1]).map(|k| k as i32).unwrap_or(-1);
                    let label_params = value * 1000f64.powi(exponent);
                    let total = total_params as f64;
                    let demote = (total_params < 0
                        && label_params < (total_params.unsigned_abs() / 8) as f64)
                        || (total_params > 0
                            && (label_params - total).abs()
                                > (7 * (total_params as i128) / 8) as f64);
                    if demote {
                        // Probably a context length: keep it in the finetune, lowercased.
                        kinds[i].finetune = true;
                        let last = p.len() - 1;
                        let lower: Vec<char> = p[last].to_lowercase().collect();
                        p.truncate(last);
                        p.extend(lower);
                    }
                }
            }
            if kinds[i].count() == 0 {
                kinds[i].size_label = true;
            }
            parts[i] = p.into_iter().collect();
        } else if i > 0 && finetune_re().is_match(&part) {
            if total_params < 0 && part.to_lowercase() == "lora" {
                // A LoRA adapter's own "lora" is redundant.
                kinds[i].quant_type = true;
            } else {
                kinds[i].finetune = true;
            }
        }
    }

    // Word sizes ("mini") give way when a numeric size is present.
    let numeric_size = parts
        .iter()
        .zip(&kinds)
        .any(|(p, k)| k.size_label && p.chars().any(pystr::is_decimal));
    if numeric_size {
        for (p, k) in parts.iter().zip(kinds.iter_mut()) {
            if k.size_label && p.chars().all(pystr::is_alpha) {
                k.size_label = false;
            }
        }
    }

    // The basename is the leading run of plain words and versions; later plain words are
    // finetune words.
    let mut at_start = true;
    for (p, k) in parts.iter().zip(kinds.iter_mut()) {
        let starts_alpha = p.chars().next().is_some_and(pystr::is_alpha);
        if at_start && ((k.count() == 0 && starts_alpha) || k.version) {
            k.basename = true;
        } else {
            at_start = false;
            if k.count() == 0 {
                k.finetune = true;
            }
        }
    }
    // A trailing version belongs to the version, not the basename.
    for k in kinds.iter_mut().rev() {
        if k.basename && k.count() > 1 {
            k.basename = false;
        } else {
            break;
        }
    }

    let join = |pick: &dyn Fn(&Kinds) -> bool| -> Option<String> {
        let s = parts
            .iter()
            .zip(&kinds)
            .filter(|(_, k)| pick(k))
            .map(|(p, _)| p.as_str())
            .collect::<Vec<_>>()
            .join("-");
        (!s.is_empty()).then_some(s)
    };
    let mut basename = join(&|k| k.basename);
    let size_label = {
        let mut seen: Vec<&str> = Vec::new();
        for (p, k) in parts.iter().zip(&kinds) {
            if k.size_label && !seen.contains(&p.as_str()) {
                seen.push(p);
            }
        }
        let s = seen.join("-");
        (!s.is_empty()).then_some(s)
    };
    let finetune = join(&|k| k.finetune);
    let version = join(&|k| k.version && !k.basename);

    if size_label.is_none() && finetune.is_none() && version.is_none() {
        // Too ambiguous to call anything a basename.
        basename = None;
    }

    IdComponents {
        full_name: Some(full_name),
        org,
        basename,
        finetune,
        version,
        size_label,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(id: &str, total: i64) -> [Option<String>; 6] {
        let c = model_id_components(id, total);
        [
            c.full_name,
            c.org,
            c.basename,
            c.finetune,
            c.version,
            c.size_label,
        ]
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_owned())
    }

    // Expected values below were produced by gguf-py's Metadata.get_model_id_components
    // (llama.cpp vendored in llama-cpp-python 0.3.36); fixtures/general/units.json holds many more.
    #[test]
    fn plain_hub_ids() {
        assert_eq!(
            parts("HuggingFaceTB/SmolLM2-135M-Instruct", 134_515_008),
            [
                s("SmolLM2-135M-Instruct"),
                s("HuggingFaceTB"),
                s("SmolLM2"),
                s("Instruct"),
                None,
                s("135M")
            ]
        );
        assert_eq!(
            parts("mistral-7b-v0.1", 7_241_732_096),
            [
                s("mistral-7b-v0.1"),
                None,
                s("mistral"),
                None,
                s("v0.1"),
                s("7B")
            ]
        );
    }

    #[test]
    fn size_far_from_the_count_becomes_finetune() {
        assert_eq!(
            parts("SmolLM2-135M-Instruct", 13_408),
            [
                s("SmolLM2-135M-Instruct"),
                None,
                s("SmolLM2"),
                s("135m-Instruct"),
                None,
                None
            ]
        );
        assert_eq!(
            parts("Yi-1.5-9B-Chat-16K", 8_829_407_232),
            [
                s("Yi-1.5-9B-Chat-16K"),
                None,
                s("Yi-1.5"),
                s("Chat-16k"),
                None,
                s("9B")
            ]
        );
    }

    #[test]
    fn bloom_notation_and_word_sizes() {
        assert_eq!(
            parts("bloom-7b1", 7_069_016_064),
            [s("bloom-7b1"), None, s("bloom"), None, None, s("7.1B")]
        );
        assert_eq!(
            parts("Phi-3-mini-4k-instruct", 3_821_079_552),
            [
                s("Phi-3-mini-4k-instruct"),
                None,
                s("Phi-3"),
                s("4k-instruct"),
                None,
                s("mini")
            ]
        );
    }

    #[test]
    fn ambiguous_and_special_ids() {
        assert_eq!(
            parts("my_model", 0),
            [s("my_model"), None, None, None, None, None]
        );
        assert_eq!(
            parts("My Model 7B", 0),
            [s("My Model 7B"), None, None, None, None, None]
        );
        assert_eq!(
            parts("./local-7B", 0),
            [s("local-7B"), None, s("local"), None, None, s("7B")]
        );
    }

    #[test]
    fn all_fixture_ids_match_gguf_py() {
        let units = crate::general::units_fixture();
        let list = units["model_id_components"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(list.len() > 400, "only {} cases", list.len());
        let mut bad = Vec::new();
        for case in &list {
            let id = case["id"].as_str().unwrap_or_default();
            let total = case["total"].as_i64().unwrap_or_default();
            let want: Vec<Option<String>> = case["result"]
                .as_array()
                .map(|r| r.iter().map(|v| v.as_str().map(str::to_owned)).collect())
                .unwrap_or_default();
            let got = parts(id, total).to_vec();
            if got != want {
                bad.push(format!(
                    "{id:?} total={total}: got {got:?}, gguf-py {want:?}"
                ));
            }
        }
        assert!(bad.is_empty(), "{} differ:\n{}", bad.len(), bad.join("\n"));
        for pair in units["id_to_title"].as_array().cloned().unwrap_or_default() {
            let (s, want) = (
                pair[0].as_str().unwrap_or_default(),
                pair[1].as_str().unwrap_or_default(),
            );
            assert_eq!(id_to_title(s), want, "{s:?}");
        }
    }

    #[test]
    fn titles() {
        assert_eq!(
            id_to_title("SmolLM2-135M-Instruct"),
            "SmolLM2 135M Instruct"
        );
        assert_eq!(id_to_title("gemma-2-2b-it"), "Gemma 2 2b It");
        assert_eq!(id_to_title("mistral-7b-v0.1"), "Mistral 7b v0.1");
        assert_eq!(id_to_title("my_model"), "My_Model");
        assert_eq!(id_to_title("e5a1f9c0d3b2"), "E5A1F9C0D3B2");
    }
}
