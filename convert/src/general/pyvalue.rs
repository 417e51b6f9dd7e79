//! A dynamically typed value with Python's semantics, for model-card YAML and JSON files.
//!
//! llama.cpp copies whatever the model card says into its metadata object and only checks types
//! when it writes the file (and then often by crashing or by silently skipping "falsy" values).
//! Keeping the Python shape of the data lets ggforge make the same decisions in the same places.

use std::fmt;

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Py {
    None,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    List(Vec<Py>),
    /// Insertion-ordered; keys are unique (a repeated key replaces the value in place, as a
    /// Python dict does).
    Dict(Vec<(Py, Py)>),
    /// A value llama.cpp cannot store at all (a YAML timestamp), named by its Python type.
    Other(&'static str, String),
}

impl Py {
    /// `d.get(key)` for string keys; `None` when absent.
    pub fn get(&self, key: &str) -> Option<&Py> {
        match self {
            Py::Dict(items) => items
                .iter()
                .find(|(k, _)| matches!(k, Py::Str(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Insert with Python dict semantics (replace in place when the key exists).
    pub fn dict_insert(items: &mut Vec<(Py, Py)>, key: Py, value: Py) {
        match items.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => items.push((key, value)),
        }
    }

    /// Python truthiness (`if not val:` in gguf-py's `add_string`).
    pub fn is_truthy(&self) -> bool {
        match self {
            Py::None => false,
            Py::Bool(b) => *b,
            Py::Int(i) => *i != 0,
            Py::Float(f) => *f != 0.0,
            Py::Str(s) => !s.is_empty(),
            Py::List(v) => !v.is_empty(),
            Py::Dict(v) => !v.is_empty(),
            Py::Other(..) => true,
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Py::None => "null",
            Py::Bool(_) => "bool",
            Py::Int(_) => "int",
            Py::Float(_) => "float",
            Py::Str(_) => "str",
            Py::List(_) => "list",
            Py::Dict(_) => "dict",
            Py::Other(t, _) => t,
        }
    }

    pub fn from_json(v: &serde_json::Value) -> Py {
        use serde_json::Value as J;
        match v {
            J::Null => Py::None,
            J::Bool(b) => Py::Bool(*b),
            J::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Py::Int(i as i128)
                } else if let Some(u) = n.as_u64() {
                    Py::Int(u as i128)
                } else {
                    Py::Float(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            J::String(s) => Py::Str(s.clone()),
            J::Array(a) => Py::List(a.iter().map(Py::from_json).collect()),
            J::Object(m) => Py::Dict(
                m.iter()
                    .map(|(k, v)| (Py::Str(k.clone()), Py::from_json(v)))
                    .collect(),
            ),
        }
    }
}

/// Python's `repr()`, shortened; used in error messages only.
impl fmt::Display for Py {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Py::None => f.write_str("None"),
            Py::Bool(true) => f.write_str("True"),
            Py::Bool(false) => f.write_str("False"),
            Py::Int(i) => write!(f, "{i}"),
            Py::Float(x) => write!(f, "{x:?}"),
            Py::Str(s) => {
                let short: String = s.chars().take(60).collect();
                write!(f, "{short:?}")
            }
            Py::List(v) => write!(f, "[list of {}]", v.len()),
            Py::Dict(v) => write!(f, "{{dict of {}}}", v.len()),
            Py::Other(t, s) => write!(f, "{t} {s}"),
        }
    }
}
