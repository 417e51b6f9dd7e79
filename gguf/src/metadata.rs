//! The ordered key–value metadata of a GGUF file.

use crate::value::Value;

/// Metadata in file order. Order matters for byte identity with llama.cpp's writers, so this is a
/// list, not a map; lookups are linear, which is fine for the few dozen keys a model has.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metadata {
    entries: Vec<(String, Value)>,
}

impl Metadata {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Sets `key`, keeping its position when it already exists (what `gguf-py`'s writer does).
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<Value>) {
        let key = key.into();
        let value = value.into();
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.entries.push((key, value)),
        }
    }

    /// Appends a key the caller has already checked is new. The reader detects duplicates with a
    /// hash set, so a hostile file with many keys cannot make loading quadratic through `set`.
    pub(crate) fn push_new(&mut self, key: String, value: Value) {
        self.entries.push((key, value));
    }

    /// Removes `key` and appends it at the end (what ggml's `gguf_set_val_*` does).
    pub fn set_last(&mut self, key: impl Into<String>, value: impl Into<Value>) {
        let key = key.into();
        self.remove(&key);
        self.entries.push((key, value.into()));
    }

    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let i = self.entries.iter().position(|(k, _)| k == key)?;
        Some(self.entries.remove(i).1)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(Value::as_u64)
    }

    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(Value::as_f64)
    }

    /// The tensor data alignment this metadata implies (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        match self.get(crate::KEY_ALIGNMENT) {
            Some(Value::U32(a)) => *a as u64,
            _ => crate::DEFAULT_ALIGNMENT,
        }
    }
}

impl FromIterator<(String, Value)> for Metadata {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(iter: I) -> Self {
        let mut m = Metadata::new();
        for (k, v) in iter {
            m.set(k, v);
        }
        m
    }
}
