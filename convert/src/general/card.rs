//! The model card (`README.md`) YAML front matter, read the way gguf-py's
//! `Metadata.load_model_card` reads it.
//!
//! llama.cpp parses the front matter with PyYAML's `safe_load`, i.e. YAML 1.1 scalar rules:
//! unquoted `no`/`yes`/`on`/`off` are booleans, `1.0` is a float, `2024-01-01` a date, `1e5` a
//! string. Those rules decide which card values are usable strings, so this module parses with
//! `yaml-rust2` (structure only) and resolves plain scalars itself with PyYAML's regular
//! expressions. It also reproduces llama.cpp's two text patches (the "Norway" fix and tabs).

use super::pystr;
use super::pyvalue::Py;
use super::GeneralError;
use regex::Regex;
use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// The front matter of `dir/README.md` as a dict; an empty dict when there is no card, no
/// front matter, or the front matter is not a mapping (llama.cpp logs and ignores that case).
pub(crate) fn load_model_card(dir: &Path) -> Result<Py, GeneralError> {
    let path = dir.join("README.md");
    if !dir.is_dir() || !path.is_file() {
        return Ok(Py::Dict(Vec::new()));
    }
    let bytes = std::fs::read(&path).map_err(|e| GeneralError::Io {
        path: path.clone(),
        source: e,
    })?;
    let text = String::from_utf8(bytes).map_err(|e| GeneralError::Card {
        path: path.clone(),
        message: format!(
            "not valid UTF-8 (byte {}); llama.cpp cannot read it either",
            e.utf8_error().valid_up_to()
        ),
    })?;
    let Some(yaml) = front_matter(&text) else {
        return Ok(Py::Dict(Vec::new()));
    };
    match parse_yaml(&yaml).map_err(|message| GeneralError::Card { path, message })? {
        Some(map @ Py::Dict(_)) => Ok(map),
        _ => Ok(Py::Dict(Vec::new())),
    }
}

/// The YAML text between a first line `---` and the next `---` line (or the end of the file),
/// patched as llama.cpp patches it. `None` when the card has no front matter.
pub(crate) fn front_matter(text: &str) -> Option<String> {
    let lines = pystr::splitlines(text);
    if lines.first().map(String::as_str) != Some("---") {
        return None;
    }
    let body: Vec<&str> = lines[1..]
        .iter()
        .map(String::as_str)
        .take_while(|l| *l != "---")
        .collect();
    let mut yaml = body.join("\n");
    yaml.push('\n');
    // llama.cpp's "Norway problem" patch: a block-list item `- no` is the language code, not
    // false. Flow lists (`[en, no]`) are not patched, so there `no` stays a boolean.
    let yaml = yaml.replace("- no\n", "- \"no\"\n");
    // And it turns tabs (invalid YAML indentation) into two spaces, everywhere.
    Some(yaml.replace('\t', "  "))
}

/// Parse one YAML document into Python values. `Ok(None)` for an empty document.
pub(crate) fn parse_yaml(text: &str) -> Result<Option<Py>, String> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    parser
        .load(&mut builder, false)
        .map_err(|e| e.to_string())?;
    if let Some(err) = builder.error {
        return Err(err);
    }
    Ok(builder.root)
}

enum Frame {
    Seq {
        items: Vec<Py>,
        anchor: usize,
    },
    Map {
        items: Vec<(Py, Py)>,
        key: Option<Py>,
        anchor: usize,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Py>,
    root: Option<Py>,
    done: bool,
    error: Option<String>,
}

impl Builder {
    fn fail(&mut self, mark: Marker, msg: String) {
        if self.error.is_none() {
            // Lines count from the first line after the opening `---`.
            self.error = Some(format!(
                "{msg} at front-matter line {} column {}",
                mark.line(),
                mark.col() + 1
            ));
        }
    }

    fn add(&mut self, value: Py, anchor: usize, mark: Marker) {
        if anchor > 0 {
            self.anchors.insert(anchor, value.clone());
        }
        match self.stack.last_mut() {
            None => {
                if !self.done {
                    self.root = Some(value);
                    self.done = true;
                }
            }
            Some(Frame::Seq { items, .. }) => items.push(value),
            Some(Frame::Map { items, key, .. }) => match key.take() {
                None => {
                    let unhashable = matches!(value, Py::List(_) | Py::Dict(_));
                    *key = Some(value);
                    if unhashable {
                        self.fail(
                            mark,
                            "a list or mapping used as a mapping key (PyYAML: unhashable key)"
                                .into(),
                        );
                    }
                }
                Some(k) => Py::dict_insert(items, k, value),
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        match ev {
            Event::Scalar(text, style, anchor, tag) => match scalar(&text, style, tag.as_ref()) {
                Ok(v) => self.add(v, anchor, mark),
                Err(msg) => self.fail(mark, msg),
            },
            Event::SequenceStart(anchor, tag) => {
                if let Some(t) = tag.as_ref().filter(|t| !is_std_tag(t, "seq")) {
                    self.fail(
                        mark,
                        format!("unsupported YAML tag {}{} on a list", t.handle, t.suffix),
                    );
                }
                self.stack.push(Frame::Seq {
                    items: Vec::new(),
                    anchor,
                });
            }
            Event::MappingStart(anchor, tag) => {
                if let Some(t) = tag.as_ref().filter(|t| !is_std_tag(t, "map")) {
                    self.fail(
                        mark,
                        format!("unsupported YAML tag {}{} on a mapping", t.handle, t.suffix),
                    );
                }
                self.stack.push(Frame::Map {
                    items: Vec::new(),
                    key: None,
                    anchor,
                });
            }
            Event::SequenceEnd => {
                if let Some(Frame::Seq { items, anchor }) = self.stack.pop() {
                    self.add(Py::List(items), anchor, mark);
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map { items, anchor, .. }) = self.stack.pop() {
                    self.add(Py::Dict(items), anchor, mark);
                }
            }
            Event::Alias(id) => match self.anchors.get(&id).cloned() {
                Some(v) => self.add(v, 0, mark),
                None => self.fail(mark, "alias to an unknown anchor".into()),
            },
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

fn is_std_tag(tag: &Tag, suffix: &str) -> bool {
    tag.handle == "tag:yaml.org,2002:" && tag.suffix == suffix
}

/// Build the Python value of one scalar. Quoted and block scalars are strings; plain ones go
/// through PyYAML's implicit resolvers; explicit standard tags are honoured.
fn scalar(text: &str, style: TScalarStyle, tag: Option<&Tag>) -> Result<Py, String> {
    if let Some(t) = tag {
        if t.handle.is_empty() && t.suffix == "!" {
            return Ok(Py::Str(text.to_owned())); // the non-specific tag `!`: a string
        }
        if t.handle != "tag:yaml.org,2002:" {
            return Err(format!("unsupported YAML tag {}{}", t.handle, t.suffix));
        }
        return match t.suffix.as_str() {
            "str" => Ok(Py::Str(text.to_owned())),
            "null" => Ok(Py::None),
            "bool" => construct_bool(text).ok_or_else(|| format!("{text:?} is not a YAML boolean")),
            "int" => construct_int(text).ok_or_else(|| format!("{text:?} is not a YAML integer")),
            "float" => construct_float(text).ok_or_else(|| format!("{text:?} is not a YAML float")),
            "timestamp" => Ok(Py::Other("datetime", text.to_owned())),
            other => Err(format!("unsupported YAML tag !!{other}")),
        };
    }
    if style != TScalarStyle::Plain {
        return Ok(Py::Str(text.to_owned()));
    }
    Ok(resolve_plain(text))
}

fn re(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    cell.get_or_init(|| {
        Regex::new(pattern).unwrap_or_else(|e| panic!("bad built-in regex {pattern}: {e}"))
    })
}

/// PyYAML's implicit resolvers (yaml/resolver.py), tried in its order for plain scalars.
fn resolve_plain(text: &str) -> Py {
    static BOOL: OnceLock<Regex> = OnceLock::new();
    static FLOAT: OnceLock<Regex> = OnceLock::new();
    static INT: OnceLock<Regex> = OnceLock::new();
    static NULL: OnceLock<Regex> = OnceLock::new();
    static TIMESTAMP: OnceLock<Regex> = OnceLock::new();
    let bool_re = re(
        &BOOL,
        r"^(?:yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$",
    );
    let float_re = re(
        &FLOAT,
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
    );
    let int_re = re(
        &INT,
        r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$",
    );
    let null_re = re(&NULL, r"^(?:~|null|Null|NULL|)$");
    let ts_re = re(
        &TIMESTAMP,
        r"^(?:[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]|[0-9][0-9][0-9][0-9]-[0-9][0-9]?-[0-9][0-9]?(?:[Tt]|[ \t]+)[0-9][0-9]?:[0-9][0-9]:[0-9][0-9](?:\.[0-9]*)?(?:[ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?)$",
    );
    // PyYAML only tries the resolvers registered for the first character; the regexes above
    // already fail on other first characters, except that the empty string is null.
    if bool_re.is_match(text) {
        if let Some(b) = construct_bool(text) {
            return b;
        }
    }
    if float_re.is_match(text) {
        if let Some(f) = construct_float(text) {
            return f;
        }
    }
    if int_re.is_match(text) {
        // The regex guarantees the syntax; only an integer beyond i128 fails to convert. Python
        // would hold it exactly, and writing it would fail with a range error; keep that outcome.
        return construct_int(text).unwrap_or(Py::Int(i128::MAX));
    }
    if null_re.is_match(text) {
        return Py::None;
    }
    if ts_re.is_match(text) {
        return Py::Other("datetime", text.to_owned());
    }
    Py::Str(text.to_owned())
}

fn construct_bool(text: &str) -> Option<Py> {
    match text.to_lowercase().as_str() {
        "yes" | "true" | "on" => Some(Py::Bool(true)),
        "no" | "false" | "off" => Some(Py::Bool(false)),
        _ => None,
    }
}

/// PyYAML `construct_yaml_int`: underscores ignored, 0b/0x/0 (octal) prefixes, sexagesimal.
fn construct_int(text: &str) -> Option<Py> {
    let mut v = text.replace('_', "");
    let mut sign: i128 = 1;
    if let Some(rest) = v.strip_prefix('-') {
        sign = -1;
        v = rest.to_owned();
    } else if let Some(rest) = v.strip_prefix('+') {
        v = rest.to_owned();
    }
    let parsed = if v == "0" {
        Some(0)
    } else if let Some(b) = v.strip_prefix("0b") {
        i128::from_str_radix(b, 2).ok()
    } else if let Some(h) = v.strip_prefix("0x") {
        i128::from_str_radix(h, 16).ok()
    } else if v.starts_with('0') {
        i128::from_str_radix(&v, 8).ok()
    } else if v.contains(':') {
        let mut value: i128 = 0;
        let mut base: i128 = 1;
        for digit in v.split(':').rev() {
            value = value.checked_add(digit.parse::<i128>().ok()?.checked_mul(base)?)?;
            base = base.checked_mul(60)?;
        }
        Some(value)
    } else {
        v.parse::<i128>().ok()
    };
    parsed.map(|p| Py::Int(sign * p))
}

/// PyYAML `construct_yaml_float`.
fn construct_float(text: &str) -> Option<Py> {
    let mut v = text.replace('_', "").to_lowercase();
    let mut sign = 1.0;
    if let Some(rest) = v.strip_prefix('-') {
        sign = -1.0;
        v = rest.to_owned();
    } else if let Some(rest) = v.strip_prefix('+') {
        v = rest.to_owned();
    }
    let value = if v == ".inf" {
        f64::INFINITY
    } else if v == ".nan" {
        f64::NAN
    } else if v.contains(':') {
        let mut value = 0.0;
        let mut base = 1.0;
        for digit in v.split(':').rev() {
            value += digit.parse::<f64>().ok()? * base;
            base *= 60.0;
        }
        value
    } else {
        v.parse::<f64>().ok()?
    };
    Some(Py::Float(sign * value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Py {
        Py::Str(v.to_owned())
    }

    #[test]
    fn yaml_11_scalars_like_pyyaml() {
        // Expected values: PyYAML 6.0.3 safe_load.
        let doc = "a: no\nb: 'no'\nc: 1.0\nd: 1e5\ne: 0o17\nf: 017\ng: 2024-01-02\nh: ~\ni:\nj: On\nk: 1_000\nl: apache-2.0\nm: 1:30\nn: .5\n";
        let v = parse_yaml(doc).unwrap_or_default().unwrap_or(Py::None);
        assert_eq!(v.get("a"), Some(&Py::Bool(false)));
        assert_eq!(v.get("b"), Some(&s("no")));
        assert_eq!(v.get("c"), Some(&Py::Float(1.0)));
        assert_eq!(v.get("d"), Some(&s("1e5")));
        assert_eq!(v.get("e"), Some(&s("0o17")));
        assert_eq!(v.get("f"), Some(&Py::Int(15)));
        assert_eq!(
            v.get("g"),
            Some(&Py::Other("datetime", "2024-01-02".into()))
        );
        assert_eq!(v.get("h"), Some(&Py::None));
        assert_eq!(v.get("i"), Some(&Py::None));
        assert_eq!(v.get("j"), Some(&Py::Bool(true)));
        assert_eq!(v.get("k"), Some(&Py::Int(1000)));
        assert_eq!(v.get("l"), Some(&s("apache-2.0")));
        assert_eq!(v.get("m"), Some(&Py::Int(90)));
        assert_eq!(v.get("n"), Some(&Py::Float(0.5)));
    }

    #[test]
    fn anchors_duplicates_and_tags() {
        let doc = "t: &x [a, b]\nu: *x\nt2: !!str 12\nk: 1\nk: 2\n";
        let v = parse_yaml(doc).unwrap_or_default().unwrap_or(Py::None);
        assert_eq!(v.get("u"), Some(&Py::List(vec![s("a"), s("b")])));
        assert_eq!(v.get("t2"), Some(&s("12")));
        assert_eq!(v.get("k"), Some(&Py::Int(2)));
        assert!(parse_yaml("a: [b\n").is_err());
        assert!(parse_yaml("? [a]\n: b\n").is_err());
        assert_eq!(parse_yaml("\n"), Ok(None));
    }

    #[test]
    fn front_matter_extraction_and_patches() {
        assert_eq!(front_matter("# title\n---\na: b\n"), None);
        assert_eq!(front_matter("\u{feff}---\na: b\n---\n"), None); // Python keeps the BOM
        assert_eq!(
            front_matter("---\r\nlanguage:\r\n- no\r\n---\r\nbody").as_deref(),
            Some("language:\n- \"no\"\n")
        );
        assert_eq!(
            front_matter("---\ntags:\n\t- x\n").as_deref(),
            Some("tags:\n  - x\n")
        );
        assert_eq!(front_matter("---\n---\n").as_deref(), Some("\n"));
    }
}
