//! Comparing two GGUF files key by key and tensor by tensor.
//!
//! Used by the compatibility tests (our file vs llama.cpp's) and by `ggforge diff`. Both sides
//! are [`GgufModel`]s, so a split model is compared whole, tensor by tensor, whatever shard
//! each tensor is in.

use std::fmt;

use crate::metadata::Metadata;
use crate::split::{GgufModel, KEY_SPLIT_COUNT, KEY_SPLIT_NO, KEY_SPLIT_TENSORS_COUNT};

/// One difference between file A and file B.
#[derive(Clone, Debug, PartialEq)]
pub enum Difference {
    KeyOnlyInA(String),
    KeyOnlyInB(String),
    KeyValue {
        key: String,
        a: String,
        b: String,
    },
    /// Same key set, different order: the position of the first key that differs.
    KeyOrder {
        index: usize,
        a: String,
        b: String,
    },
    TensorOnlyInA(String),
    TensorOnlyInB(String),
    TensorOrder {
        index: usize,
        a: String,
        b: String,
    },
    TensorShape {
        name: String,
        a: Vec<u64>,
        b: Vec<u64>,
    },
    TensorType {
        name: String,
        a: String,
        b: String,
    },
    /// Byte contents differ: the first differing byte and how many bytes differ.
    TensorData {
        name: String,
        first: usize,
        n_diff: usize,
    },
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Difference::KeyOnlyInA(k) => write!(f, "key {k} only in A"),
            Difference::KeyOnlyInB(k) => write!(f, "key {k} only in B"),
            Difference::KeyValue { key, a, b } => write!(f, "key {key}: A = {a}, B = {b}"),
            Difference::KeyOrder { index, a, b } => {
                write!(f, "key order differs at #{index}: A has {a}, B has {b}")
            }
            Difference::TensorOnlyInA(t) => write!(f, "tensor {t} only in A"),
            Difference::TensorOnlyInB(t) => write!(f, "tensor {t} only in B"),
            Difference::TensorOrder { index, a, b } => {
                write!(f, "tensor order differs at #{index}: A has {a}, B has {b}")
            }
            Difference::TensorShape { name, a, b } => {
                write!(f, "tensor {name}: shape A {a:?}, B {b:?}")
            }
            Difference::TensorType { name, a, b } => write!(f, "tensor {name}: type A {a}, B {b}"),
            Difference::TensorData {
                name,
                first,
                n_diff,
            } => {
                write!(
                    f,
                    "tensor {name}: {n_diff} bytes differ, first at byte {first}"
                )
            }
        }
    }
}

/// Which parts of the files to compare.
#[derive(Clone, Debug, Default)]
pub struct DiffOptions {
    /// Keys to leave out of the comparison (e.g. `general.name`).
    pub ignore_keys: Vec<String>,
    /// Compare key order as well as values.
    pub key_order: bool,
    /// Compare tensor order as well as contents.
    pub tensor_order: bool,
}

/// The keys that say how a model is cut into files (`split.no`, `split.count`,
/// `split.tensors.count`): they differ between a split model and the same model in one file.
pub const SPLIT_KEYS: [&str; 3] = [KEY_SPLIT_NO, KEY_SPLIT_COUNT, KEY_SPLIT_TENSORS_COUNT];

/// [`diff_models`]' result: the models' differences, and the file layout's apart.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelDiff {
    /// Every difference but the split keys'.
    pub model: Vec<Difference>,
    /// Differences in the [`SPLIT_KEYS`] only.
    pub layout: Vec<Difference>,
}

/// Compares two models whole (either may be split) and sets the split keys apart: a split
/// model and the unsplit file of the same conversion have the same model, and their only
/// differences, in `layout`, are about the files. `ggforge diff` uses this.
pub fn diff_models(a: &dyn GgufModel, b: &dyn GgufModel, opts: &DiffOptions) -> ModelDiff {
    let mut model_opts = opts.clone();
    model_opts
        .ignore_keys
        .extend(SPLIT_KEYS.iter().map(|k| k.to_string()));
    let model = diff(a, b, &model_opts);
    let mut layout = Vec::new();
    let not_layout = |k: &str| !SPLIT_KEYS.contains(&k) || opts.ignore_keys.iter().any(|i| i == k);
    key_differences(a.metadata(), b.metadata(), &not_layout, &mut layout);
    ModelDiff { model, layout }
}

/// Key presence and value differences, in A's key order then B's.
fn key_differences(
    ma: &Metadata,
    mb: &Metadata,
    ignored: &dyn Fn(&str) -> bool,
    out: &mut Vec<Difference>,
) {
    for (k, va) in ma.iter().filter(|(k, _)| !ignored(k)) {
        match mb.get(k) {
            None => out.push(Difference::KeyOnlyInA(k.to_string())),
            Some(vb) if vb != va || vb.value_type() != va.value_type() => {
                out.push(Difference::KeyValue {
                    key: k.to_string(),
                    a: format!("{} {va}", va.value_type().name()),
                    b: format!("{} {vb}", vb.value_type().name()),
                })
            }
            _ => {}
        }
    }
    for (k, _) in mb.iter().filter(|(k, _)| !ignored(k)) {
        if ma.get(k).is_none() {
            out.push(Difference::KeyOnlyInB(k.to_string()));
        }
    }
}

/// Lists every difference between `a` and `b` (split keys included; see [`diff_models`]).
pub fn diff(a: &dyn GgufModel, b: &dyn GgufModel, opts: &DiffOptions) -> Vec<Difference> {
    let mut out = Vec::new();
    let ignored = |k: &str| opts.ignore_keys.iter().any(|i| i == k);
    let (ma, mb) = (a.metadata(), b.metadata());
    key_differences(ma, mb, &ignored, &mut out);
    if opts.key_order {
        let ka: Vec<&str> = ma.iter().map(|(k, _)| k).filter(|k| !ignored(k)).collect();
        let kb: Vec<&str> = mb.iter().map(|(k, _)| k).filter(|k| !ignored(k)).collect();
        if let Some(i) = ka.iter().zip(&kb).position(|(x, y)| x != y) {
            out.push(Difference::KeyOrder {
                index: i,
                a: ka[i].to_string(),
                b: kb[i].to_string(),
            });
        }
    }
    for ta in a.tensors() {
        let Some(tb) = b.tensor_info(&ta.name) else {
            out.push(Difference::TensorOnlyInA(ta.name.clone()));
            continue;
        };
        if ta.dims != tb.dims {
            out.push(Difference::TensorShape {
                name: ta.name.clone(),
                a: ta.dims.clone(),
                b: tb.dims.clone(),
            });
            continue;
        }
        if ta.ggml_type != tb.ggml_type {
            out.push(Difference::TensorType {
                name: ta.name.clone(),
                a: ta.ggml_type.name().into(),
                b: tb.ggml_type.name().into(),
            });
            continue;
        }
        let (da, db) = (a.tensor_data(ta), b.tensor_data(tb));
        if da != db {
            let first = da.iter().zip(db).position(|(x, y)| x != y).unwrap_or(0);
            let n_diff = da.iter().zip(db).filter(|(x, y)| x != y).count();
            out.push(Difference::TensorData {
                name: ta.name.clone(),
                first,
                n_diff,
            });
        }
    }
    for tb in b.tensors() {
        if a.tensor_info(&tb.name).is_none() {
            out.push(Difference::TensorOnlyInB(tb.name.clone()));
        }
    }
    if opts.tensor_order {
        let (na, nb) = (a.tensors(), b.tensors());
        if let Some(i) = na.iter().zip(nb).position(|(x, y)| x.name != y.name) {
            out.push(Difference::TensorOrder {
                index: i,
                a: na[i].name.clone(),
                b: nb[i].name.clone(),
            });
        }
    }
    out
}
