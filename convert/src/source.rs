//! Reading a Hugging Face checkpoint: `config.json` and (sharded) safetensors, memory-mapped.
//!
//! Tensors are listed in the order llama.cpp's converter visits them — shard files in sorted
//! order, and within a shard the tensor names sorted as strings — because that order decides the
//! tensor order of the GGUF file. Nothing is read until a tensor is asked for, and then only
//! that tensor's bytes.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::tensor::Dtype;
use serde::de::{
    DeserializeSeed, Deserializer, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use serde::Deserialize;
use thiserror::Error;

use crate::error::ConvertError;

/// Element types we can read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceDtype {
    F32,
    F16,
    BF16,
}

impl SourceDtype {
    pub fn size(self) -> usize {
        match self {
            SourceDtype::F32 => 4,
            SourceDtype::F16 | SourceDtype::BF16 => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SourceDtype::F32 => "F32",
            SourceDtype::F16 => "F16",
            SourceDtype::BF16 => "BF16",
        }
    }
}

/// One tensor of the checkpoint.
#[derive(Clone, Debug)]
pub struct SourceTensor {
    pub name: String,
    pub dtype: SourceDtype,
    /// PyTorch order (outermost first).
    pub shape: Vec<usize>,
    part: usize,
    /// Byte range inside the shard file.
    start: usize,
    end: usize,
}

impl SourceTensor {
    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn n_bytes(&self) -> usize {
        self.end - self.start
    }
}

struct Part {
    path: PathBuf,
    mmap: Mmap,
}

/// A checkpoint's safetensors files.
pub struct Checkpoint {
    dir: PathBuf,
    parts: Vec<Part>,
    tensors: Vec<SourceTensor>,
}

/// Largest safetensors JSON header we accept (the format's own reference limit is 100 MB).
const MAX_HEADER: u64 = 100_000_000;
/// Largest shard index we read. Real indexes are a few hundred kilobytes even for the biggest
/// models; the cap keeps a hostile index from making us allocate without bound.
const MAX_INDEX: u64 = 64 << 20;
const INDEX_NAME: &str = "model.safetensors.index.json";

/// What is wrong with a safetensors file, a shard index, or the agreement between them.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum SafetensorsError {
    #[error("file is {len} bytes, too short to be safetensors")]
    TooShort { len: u64 },
    #[error("header length {header_len} is larger than the file ({file_len} bytes) or the 100 MB limit: the file is truncated or not safetensors")]
    HeaderTooLarge { header_len: u64, file_len: u64 },
    #[error("the JSON header is not valid UTF-8")]
    HeaderNotUtf8,
    #[error("invalid safetensors header: {0}")]
    BadJson(String),
    #[error("key '{0}' appears twice in the safetensors header")]
    DuplicateKey(String),
    #[error("tensor '{tensor}' has an invalid header entry: {message}")]
    BadEntry { tensor: String, message: String },
    #[error("the __metadata__ entry is invalid: {0}")]
    BadMetadata(String),
    #[error("tensor '{tensor}' has unknown dtype '{dtype}'")]
    UnknownDtype { tensor: String, dtype: String },
    #[error("tensor '{tensor}' has data_offsets [{begin}, {end}]: begin is after end")]
    BeginAfterEnd {
        tensor: String,
        begin: u64,
        end: u64,
    },
    #[error("tensor '{tensor}' has data range {begin}..{end}, outside the {data_len} data bytes")]
    PastEof {
        tensor: String,
        begin: u64,
        end: u64,
        data_len: u64,
    },
    #[error("tensor '{tensor}' has shape {shape:?} ({dtype}) but {actual} data bytes")]
    SizeMismatch {
        tensor: String,
        shape: Vec<u64>,
        dtype: String,
        actual: u64,
    },
    #[error("tensor '{tensor}' starts at data byte {begin}, but the previous tensor ends at {expected}: the data has a gap")]
    Gap {
        tensor: String,
        begin: u64,
        expected: u64,
    },
    #[error("tensor '{tensor}' starts at data byte {begin}, inside the previous tensor (which ends at {expected})")]
    Overlap {
        tensor: String,
        begin: u64,
        expected: u64,
    },
    #[error("the tensors end at data byte {end}, but the file has {data_len} data bytes after the header")]
    TrailingBytes { end: u64, data_len: u64 },
    #[error("{INDEX_NAME} is {len} bytes, over the {max}-byte limit")]
    IndexTooLarge { len: u64, max: u64 },
    #[error("invalid JSON: {0}")]
    IndexBadJson(String),
    #[error("no \"weight_map\" object")]
    IndexNoWeightMap,
    #[error("key '{0}' appears twice in the index")]
    IndexDuplicateKey(String),
    #[error("weight_map entry for '{tensor}' is not a file name")]
    IndexBadEntry { tensor: String },
    #[error("weight_map names '{file}', which is not a file in the model folder")]
    IndexBadFileName { file: String },
    #[error("shard is missing (named in {INDEX_NAME})")]
    ShardMissing { file: String },
    #[error("this shard is not listed in {INDEX_NAME}")]
    ShardNotInIndex { file: String },
    #[error("tensor '{tensor}' is named in the index but no shard holds it")]
    IndexTensorMissing { tensor: String, file: String },
    #[error("tensor '{tensor}' is here, but the index says it is in {file}")]
    TensorInWrongShard {
        tensor: String,
        shard: String,
        file: String,
    },
    #[error("tensor '{tensor}' is not listed in {INDEX_NAME}")]
    TensorNotInIndex { tensor: String },
    #[error("tensor '{tensor}' is also in {other}")]
    DuplicateTensor { tensor: String, other: String },
}

/// Why [`Checkpoint::open_checked`] failed: a malformed file (typed, with the file it is in) or
/// anything else (I/O, unsupported dtype).
#[derive(Debug)]
pub enum CheckpointError {
    Format {
        path: PathBuf,
        error: SafetensorsError,
    },
    Other(ConvertError),
}

impl From<ConvertError> for CheckpointError {
    fn from(e: ConvertError) -> Self {
        CheckpointError::Other(e)
    }
}

impl From<CheckpointError> for ConvertError {
    fn from(e: CheckpointError) -> Self {
        match e {
            CheckpointError::Format { path, error } => ConvertError::BadInput {
                path,
                message: error.to_string(),
            },
            CheckpointError::Other(e) => e,
        }
    }
}

fn format_err(path: &Path, error: SafetensorsError) -> CheckpointError {
    CheckpointError::Format {
        path: path.to_path_buf(),
        error,
    }
}

impl Checkpoint {
    /// Opens `model.safetensors`, or the shards named by `model.safetensors.index.json`, or
    /// every `model*.safetensors` in the directory.
    pub fn open(dir: &Path) -> Result<Checkpoint, ConvertError> {
        Checkpoint::open_checked(dir).map_err(ConvertError::from)
    }

    /// [`Checkpoint::open`] with malformed files reported as typed [`SafetensorsError`]s, so
    /// callers (and the hostile-input tests) can tell the kinds apart.
    pub fn open_checked(dir: &Path) -> Result<Checkpoint, CheckpointError> {
        let index_path = dir.join(INDEX_NAME);
        let mut weight_map: Option<BTreeMap<String, String>> = None;
        let part_names: Vec<String> = if index_path.is_file() {
            let len = std::fs::metadata(&index_path)
                .map_err(|e| ConvertError::io(&index_path, e))?
                .len();
            if len > MAX_INDEX {
                return Err(format_err(
                    &index_path,
                    SafetensorsError::IndexTooLarge {
                        len,
                        max: MAX_INDEX,
                    },
                ));
            }
            let bytes = std::fs::read(&index_path).map_err(|e| ConvertError::io(&index_path, e))?;
            let wm = parse_index(&bytes).map_err(|e| format_err(&index_path, e))?;
            let files: BTreeSet<String> = wm.values().cloned().collect();
            weight_map = Some(wm);
            files.into_iter().collect()
        } else {
            let mut names = Vec::new();
            let entries = std::fs::read_dir(dir).map_err(|e| ConvertError::io(dir, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| ConvertError::io(dir, e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with("model") && name.ends_with(".safetensors") {
                    names.push(name);
                }
            }
            names.sort();
            names
        };
        if part_names.is_empty() {
            let has_bin = dir.join("pytorch_model.bin").exists()
                || dir.join("pytorch_model.bin.index.json").exists();
            let hint = if has_bin {
                " (only PyTorch pickles were found; ggforge reads safetensors only, because pickles can run code)"
            } else {
                ""
            };
            return Err(ConvertError::BadInput {
                path: dir.to_path_buf(),
                message: format!("no model.safetensors or model-*.safetensors files{hint}"),
            }
            .into());
        }
        if let Some(wm) = &weight_map {
            // A shard on disk that the index does not mention means the index and the files
            // disagree; refuse rather than silently ignore weights.
            let listed: BTreeSet<&String> = wm.values().collect();
            if let Ok(entries) = std::fs::read_dir(dir) {
                let mut unlisted: Vec<String> = entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|name| {
                        name.starts_with("model-")
                            && name.ends_with(".safetensors")
                            && !listed.contains(name)
                    })
                    .collect();
                unlisted.sort();
                if let Some(name) = unlisted.into_iter().next() {
                    return Err(format_err(
                        &dir.join(&name),
                        SafetensorsError::ShardNotInIndex { file: name },
                    ));
                }
            }
        }

        let mut parts = Vec::new();
        let mut tensors = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (pi, part_name) in part_names.iter().enumerate() {
            let path = dir.join(part_name);
            if !path.is_file() {
                return Err(format_err(
                    &path,
                    SafetensorsError::ShardMissing {
                        file: part_name.clone(),
                    },
                ));
            }
            let file = File::open(&path).map_err(|e| ConvertError::io(&path, e))?;
            // SAFETY: read-only map of a file we do not modify; see gguf::GgufFile::open.
            let mmap = unsafe { Mmap::map(&file) }.map_err(|e| ConvertError::io(&path, e))?;
            let mut names = list_tensors(&path, &mmap, pi)?;
            names.sort_by(|a, b| a.name.cmp(&b.name));
            for t in &names {
                if let Some(prev) = seen.insert(t.name.clone(), pi) {
                    return Err(format_err(
                        &path,
                        SafetensorsError::DuplicateTensor {
                            tensor: t.name.clone(),
                            other: part_names[prev].clone(),
                        },
                    ));
                }
            }
            tensors.extend(names);
            parts.push(Part { path, mmap });
        }
        if let Some(wm) = &weight_map {
            for (tensor, file) in wm {
                match seen.get(tensor) {
                    None => {
                        return Err(format_err(
                            &dir.join(file),
                            SafetensorsError::IndexTensorMissing {
                                tensor: tensor.clone(),
                                file: file.clone(),
                            },
                        ))
                    }
                    Some(&pi) if &part_names[pi] != file => {
                        return Err(format_err(
                            &dir.join(&part_names[pi]),
                            SafetensorsError::TensorInWrongShard {
                                tensor: tensor.clone(),
                                shard: part_names[pi].clone(),
                                file: file.clone(),
                            },
                        ))
                    }
                    _ => {}
                }
            }
            for t in &tensors {
                if !wm.contains_key(&t.name) {
                    return Err(format_err(
                        &parts[t.part].path,
                        SafetensorsError::TensorNotInIndex {
                            tensor: t.name.clone(),
                        },
                    ));
                }
            }
        }
        Ok(Checkpoint {
            dir: dir.to_path_buf(),
            parts,
            tensors,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Tensors in llama.cpp's visiting order.
    pub fn tensors(&self) -> &[SourceTensor] {
        &self.tensors
    }

    pub fn part_path(&self, t: &SourceTensor) -> &Path {
        &self.parts[t.part].path
    }

    /// The raw little-endian bytes of a tensor.
    pub fn bytes(&self, t: &SourceTensor) -> &[u8] {
        &self.parts[t.part].mmap[t.start..t.end]
    }

    /// Total bytes of tensor data.
    pub fn total_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.n_bytes() as u64).sum()
    }
}

/// Parses one shard's header and maps its entries to the dtypes the converter reads.
fn list_tensors(
    path: &Path,
    mmap: &[u8],
    part: usize,
) -> Result<Vec<SourceTensor>, CheckpointError> {
    let header = parse_safetensors(mmap).map_err(|e| format_err(path, e))?;
    let mut out = Vec::with_capacity(header.entries.len());
    for e in header.entries {
        let dtype = match e.dtype {
            Dtype::F32 => SourceDtype::F32,
            Dtype::F16 => SourceDtype::F16,
            Dtype::BF16 => SourceDtype::BF16,
            other => {
                return Err(ConvertError::UnsupportedDtype {
                    path: path.to_path_buf(),
                    tensor: e.name,
                    dtype: format!("{other:?}"),
                }
                .into())
            }
        };
        out.push(SourceTensor {
            name: e.name,
            dtype,
            shape: e.shape,
            part,
            start: header.data_start + e.begin,
            end: header.data_start + e.end,
        });
    }
    Ok(out)
}

/// One validated entry of a safetensors header.
#[derive(Clone, Debug, PartialEq)]
pub struct HeaderEntry {
    pub name: String,
    pub dtype: Dtype,
    /// PyTorch order (outermost first).
    pub shape: Vec<usize>,
    /// Byte range relative to the start of the data section.
    pub begin: usize,
    pub end: usize,
}

/// A validated safetensors header.
#[derive(Clone, Debug, PartialEq)]
pub struct SafetensorsHeader {
    /// File offset of the data section (8 + header length).
    pub data_start: usize,
    /// Entries in header order.
    pub entries: Vec<HeaderEntry>,
}

/// The fields of one tensor entry. Derived deserialization rejects missing and duplicate fields.
#[derive(Deserialize)]
struct RawEntry {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: (u64, u64),
}

/// What the header visitor found before it stopped: the JSON error alone does not say which
/// tensor was bad or which key was repeated.
#[derive(Default)]
struct Found {
    problem: Option<SafetensorsError>,
}

struct HeaderVisitor<'a> {
    found: &'a RefCell<Found>,
}

struct EntrySeed<'a> {
    name: &'a str,
    found: &'a RefCell<Found>,
}

impl<'de> DeserializeSeed<'de> for EntrySeed<'_> {
    type Value = RawEntry;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<RawEntry, D::Error> {
        RawEntry::deserialize(d).inspect_err(|e| {
            self.found.borrow_mut().problem = Some(SafetensorsError::BadEntry {
                tensor: self.name.to_string(),
                message: e.to_string(),
            });
        })
    }
}

struct MetadataSeed<'a> {
    found: &'a RefCell<Found>,
}

impl<'de> DeserializeSeed<'de> for MetadataSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        HashMap::<String, String>::deserialize(d)
            .map(|_| ())
            .inspect_err(|e| {
                self.found.borrow_mut().problem =
                    Some(SafetensorsError::BadMetadata(e.to_string()));
            })
    }
}

impl<'de> Visitor<'de> for HeaderVisitor<'_> {
    type Value = Vec<(String, RawEntry)>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object of tensor entries")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut keys = HashSet::new();
        let mut out = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if !keys.insert(key.clone()) {
                self.found.borrow_mut().problem = Some(SafetensorsError::DuplicateKey(key));
                return Err(A::Error::custom("duplicate key"));
            }
            if key == "__metadata__" {
                map.next_value_seed(MetadataSeed { found: self.found })?;
                continue;
            }
            let entry = map.next_value_seed(EntrySeed {
                name: &key,
                found: self.found,
            })?;
            out.push((key, entry));
        }
        Ok(out)
    }
}

/// The typed problem behind a JSON error: a syntax error (including a truncated document or
/// nesting past serde_json's recursion limit) is always `syntax`; a data error is what the
/// visitors recorded when they stopped.
fn json_problem(
    e: serde_json::Error,
    found: RefCell<Found>,
    syntax: fn(String) -> SafetensorsError,
) -> SafetensorsError {
    match e.classify() {
        serde_json::error::Category::Data => found
            .into_inner()
            .problem
            .unwrap_or_else(|| syntax(e.to_string())),
        _ => syntax(e.to_string()),
    }
}

/// Parses and validates a whole safetensors file (header and the layout of its data section).
///
/// Everything the safetensors format promises is checked before any tensor is touched: the
/// header length fits the file before anything is allocated; the JSON has no repeated keys (a
/// plain map would keep the last silently); each range is ordered and inside the file; each
/// size equals shape × dtype; and the ranges tile the data section with no gap, overlap or
/// trailing bytes.
pub fn parse_safetensors(bytes: &[u8]) -> Result<SafetensorsHeader, SafetensorsError> {
    let file_len = bytes.len() as u64;
    let Some(len_bytes) = bytes.get(..8) else {
        return Err(SafetensorsError::TooShort { len: file_len });
    };
    let mut le = [0u8; 8];
    le.copy_from_slice(len_bytes);
    let header_len = u64::from_le_bytes(le);
    if header_len > MAX_HEADER || header_len > file_len - 8 {
        return Err(SafetensorsError::HeaderTooLarge {
            header_len,
            file_len,
        });
    }
    let data_start = 8 + header_len as usize;
    let text =
        std::str::from_utf8(&bytes[8..data_start]).map_err(|_| SafetensorsError::HeaderNotUtf8)?;
    let found = RefCell::new(Found::default());
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = de
        .deserialize_map(HeaderVisitor { found: &found })
        .and_then(|v| de.end().map(|()| v));
    let raw = parsed.map_err(|e| json_problem(e, found, SafetensorsError::BadJson))?;

    let data_len = file_len - data_start as u64;
    let mut entries = Vec::with_capacity(raw.len());
    for (name, e) in raw {
        let dtype: Dtype = serde_json::from_value(serde_json::Value::String(e.dtype.clone()))
            .map_err(|_| SafetensorsError::UnknownDtype {
                tensor: name.clone(),
                dtype: e.dtype.clone(),
            })?;
        let (begin, end) = e.data_offsets;
        if begin > end {
            return Err(SafetensorsError::BeginAfterEnd {
                tensor: name,
                begin,
                end,
            });
        }
        if end > data_len {
            return Err(SafetensorsError::PastEof {
                tensor: name,
                begin,
                end,
                data_len,
            });
        }
        let bits = e
            .shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .and_then(|n| n.checked_mul(dtype.bitsize() as u64));
        let size_ok = matches!(bits, Some(b) if b % 8 == 0 && b / 8 == end - begin);
        if !size_ok {
            return Err(SafetensorsError::SizeMismatch {
                tensor: name,
                shape: e.shape,
                dtype: e.dtype,
                actual: end - begin,
            });
        }
        // Both fit in usize: end <= data_len <= file length, and each dimension divides a
        // product bounded by the byte size (or is a zero-element tensor's factor, bounded by u64).
        let shape: Option<Vec<usize>> = e.shape.iter().map(|&d| usize::try_from(d).ok()).collect();
        let Some(shape) = shape else {
            return Err(SafetensorsError::SizeMismatch {
                tensor: name,
                shape: e.shape,
                dtype: e.dtype,
                actual: end - begin,
            });
        };
        entries.push(HeaderEntry {
            name,
            dtype,
            shape,
            begin: begin as usize,
            end: end as usize,
        });
    }

    // The ranges must tile the data section exactly, in offset order.
    let mut order: Vec<&HeaderEntry> = entries.iter().collect();
    order.sort_by_key(|e| (e.begin, e.end));
    let mut expected = 0usize;
    for e in order {
        if e.begin > expected {
            return Err(SafetensorsError::Gap {
                tensor: e.name.clone(),
                begin: e.begin as u64,
                expected: expected as u64,
            });
        }
        if e.begin < expected {
            return Err(SafetensorsError::Overlap {
                tensor: e.name.clone(),
                begin: e.begin as u64,
                expected: expected as u64,
            });
        }
        expected = e.end;
    }
    if expected as u64 != data_len {
        return Err(SafetensorsError::TrailingBytes {
            end: expected as u64,
            data_len,
        });
    }
    Ok(SafetensorsHeader {
        data_start,
        entries,
    })
}

struct IndexVisitor<'a> {
    found: &'a RefCell<Found>,
}

struct WeightMapSeed<'a> {
    found: &'a RefCell<Found>,
}

impl WeightMapSeed<'_> {
    /// The `weight_map` value is not an object.
    fn not_object<T, E: serde::de::Error>(&self) -> Result<T, E> {
        self.found.borrow_mut().problem = Some(SafetensorsError::IndexNoWeightMap);
        Err(E::custom("weight_map is not an object"))
    }
}

impl<'de> DeserializeSeed<'de> for WeightMapSeed<'_> {
    type Value = BTreeMap<String, String>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        // `deserialize_any` lets the visitor see (and name) a value of the wrong kind.
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for WeightMapSeed<'_> {
    type Value = BTreeMap<String, String>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a weight_map object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = BTreeMap::new();
        while let Some(tensor) = map.next_key::<String>()? {
            let file = match map.next_value::<serde_json::Value>()? {
                serde_json::Value::String(f) => f,
                _ => {
                    self.found.borrow_mut().problem =
                        Some(SafetensorsError::IndexBadEntry { tensor });
                    return Err(A::Error::custom("weight_map entry is not a string"));
                }
            };
            if out.contains_key(&tensor) {
                self.found.borrow_mut().problem = Some(SafetensorsError::IndexDuplicateKey(tensor));
                return Err(A::Error::custom("duplicate key"));
            }
            out.insert(tensor, file);
        }
        Ok(out)
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
        self.not_object()
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
        self.not_object()
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
        self.not_object()
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
        self.not_object()
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Self::Value, E> {
        self.not_object()
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        self.not_object()
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        self.not_object()
    }
}

impl<'de> Visitor<'de> for IndexVisitor<'_> {
    type Value = Option<BTreeMap<String, String>>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object with a weight_map")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut keys = HashSet::new();
        let mut weight_map = None;
        while let Some(key) = map.next_key::<String>()? {
            if !keys.insert(key.clone()) {
                self.found.borrow_mut().problem = Some(SafetensorsError::IndexDuplicateKey(key));
                return Err(A::Error::custom("duplicate key"));
            }
            if key == "weight_map" {
                weight_map = Some(map.next_value_seed(WeightMapSeed { found: self.found })?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(weight_map)
    }
}

/// Parses `model.safetensors.index.json` into its weight map (tensor name → shard file name).
///
/// A repeated tensor name (which a plain JSON map would resolve silently to the last entry), a
/// non-string entry, or a file name that is not a plain name in the model folder is an error.
pub fn parse_index(bytes: &[u8]) -> Result<BTreeMap<String, String>, SafetensorsError> {
    let text =
        std::str::from_utf8(bytes).map_err(|e| SafetensorsError::IndexBadJson(e.to_string()))?;
    let found = RefCell::new(Found::default());
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = de
        .deserialize_map(IndexVisitor { found: &found })
        .and_then(|v| de.end().map(|()| v));
    let wm = parsed
        .map_err(|e| json_problem(e, found, SafetensorsError::IndexBadJson))?
        .ok_or(SafetensorsError::IndexNoWeightMap)?;
    for file in wm.values() {
        let plain = !file.is_empty()
            && file != "."
            && file != ".."
            && !file.contains(['/', '\\', '\0'])
            && !file.contains(':');
        if !plain {
            return Err(SafetensorsError::IndexBadFileName { file: file.clone() });
        }
    }
    Ok(wm)
}

#[cfg(test)]
mod hostile_tests {
    //! Every file under fixtures/hostile/safetensors and every folder under fixtures/hostile/index
    //! (written by fixtures/hostile/make_hostile.py) must be rejected with exactly this error.

    use super::*;
    use SafetensorsError as E;

    fn hostile(sub: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/hostile")
            .join(sub)
    }

    type Check = fn(&SafetensorsError) -> bool;

    fn file_cases() -> Vec<(&'static str, Check)> {
        vec![
            ("too_short", |e| *e == E::TooShort { len: 4 }),
            (
                "header_len_huge",
                |e| matches!(e, E::HeaderTooLarge { header_len, .. } if *header_len == u64::MAX),
            ),
            (
                "header_len_past_eof",
                |e| matches!(e, E::HeaderTooLarge { header_len: 4096, file_len } if *file_len < 4096),
            ),
            ("header_not_utf8", |e| *e == E::HeaderNotUtf8),
            (
                "header_not_json",
                |e| matches!(e, E::BadJson(m) if m.contains("EOF")),
            ),
            (
                "header_not_object",
                |e| matches!(e, E::BadJson(m) if m.contains("invalid type")),
            ),
            ("header_deep_nesting", |e| {
                // Rejected at the first level: nothing recurses 5000 deep.
                matches!(e, E::BadEntry { tensor, message } if tensor == "a" && message.contains("invalid type: sequence"))
            }),
            ("duplicate_tensor_key", |e| {
                *e == E::DuplicateKey("a".into())
            }),
            (
                "entry_missing_field",
                |e| matches!(e, E::BadEntry { tensor, message } if tensor == "a" && message.contains("missing field `data_offsets`")),
            ),
            (
                "entry_duplicate_field",
                |e| matches!(e, E::BadEntry { tensor, message } if tensor == "a" && message.contains("duplicate field `dtype`")),
            ),
            (
                "entry_negative_offset",
                |e| matches!(e, E::BadEntry { tensor, message } if tensor == "a" && message.contains("-8")),
            ),
            (
                "metadata_not_strings",
                |e| matches!(e, E::BadMetadata(m) if m.contains("invalid type: integer")),
            ),
            ("unknown_dtype", |e| {
                *e == E::UnknownDtype {
                    tensor: "a".into(),
                    dtype: "Q4".into(),
                }
            }),
            ("begin_after_end", |e| {
                *e == E::BeginAfterEnd {
                    tensor: "a".into(),
                    begin: 16,
                    end: 0,
                }
            }),
            ("end_past_eof", |e| {
                *e == E::PastEof {
                    tensor: "a".into(),
                    begin: 0,
                    end: 16,
                    data_len: 8,
                }
            }),
            ("size_mismatch", |e| {
                *e == E::SizeMismatch {
                    tensor: "a".into(),
                    shape: vec![3, 2],
                    dtype: "F32".into(),
                    actual: 16,
                }
            }),
            (
                "shape_overflow",
                |e| matches!(e, E::SizeMismatch { tensor, shape, .. } if tensor == "a" && shape.len() == 3),
            ),
            ("data_gap", |e| {
                *e == E::Gap {
                    tensor: "b".into(),
                    begin: 16,
                    expected: 8,
                }
            }),
            ("data_overlap", |e| {
                *e == E::Overlap {
                    tensor: "b".into(),
                    begin: 8,
                    expected: 16,
                }
            }),
            ("trailing_bytes", |e| {
                *e == E::TrailingBytes {
                    end: 16,
                    data_len: 32,
                }
            }),
        ]
    }

    const S1: &str = "model-00001-of-00002.safetensors";
    const S2: &str = "model-00002-of-00002.safetensors";

    /// Folder → (file the error is reported against, error).
    fn index_cases() -> Vec<(&'static str, &'static str, Check)> {
        vec![
            (
                "index_not_json",
                INDEX_NAME,
                |e| matches!(e, E::IndexBadJson(m) if m.contains("EOF")),
            ),
            ("index_no_weight_map", INDEX_NAME, |e| {
                *e == E::IndexNoWeightMap
            }),
            (
                "index_deep_nesting",
                INDEX_NAME,
                |e| matches!(e, E::IndexBadJson(m) if m.contains("recursion limit exceeded")),
            ),
            ("index_weight_map_not_object", INDEX_NAME, |e| {
                *e == E::IndexNoWeightMap
            }),
            ("index_duplicate_key", INDEX_NAME, |e| {
                *e == E::IndexDuplicateKey("a".into())
            }),
            ("index_entry_not_string", INDEX_NAME, |e| {
                *e == E::IndexBadEntry { tensor: "a".into() }
            }),
            ("index_path_traversal", INDEX_NAME, |e| {
                *e == E::IndexBadFileName {
                    file: format!("../{S1}"),
                }
            }),
            ("index_shard_missing", S2, |e| {
                *e == E::ShardMissing { file: S2.into() }
            }),
            ("index_tensor_not_in_shard", S2, |e| {
                *e == E::IndexTensorMissing {
                    tensor: "c".into(),
                    file: S2.into(),
                }
            }),
            ("index_tensor_in_other_shard", S1, |e| {
                *e == E::TensorInWrongShard {
                    tensor: "a".into(),
                    shard: S1.into(),
                    file: S2.into(),
                }
            }),
            ("index_shard_tensor_unlisted", S1, |e| {
                *e == E::TensorNotInIndex { tensor: "z".into() }
            }),
            (
                "index_unlisted_shard",
                "model-00003-of-00003.safetensors",
                |e| {
                    *e == E::ShardNotInIndex {
                        file: "model-00003-of-00003.safetensors".into(),
                    }
                },
            ),
            ("index_tensor_in_two_shards", S2, |e| {
                *e == E::DuplicateTensor {
                    tensor: "b".into(),
                    other: S1.into(),
                }
            }),
            ("index_bad_shard", S2, |e| {
                matches!(e, E::HeaderTooLarge { file_len: 16, .. })
            }),
        ]
    }

    fn names_in(dir: &Path) -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .expect("fixture folder")
            .map(|e| {
                let p = e.expect("entry").path();
                p.file_stem().expect("name").to_string_lossy().into_owned()
            })
            .collect()
    }

    #[test]
    fn every_hostile_safetensors_file_is_rejected_with_its_error() {
        let cases = file_cases();
        let listed: BTreeSet<String> = cases.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(names_in(&hostile("safetensors")), listed);
        let mut failures = Vec::new();
        for (name, check) in cases {
            let bytes = std::fs::read(hostile("safetensors").join(format!("{name}.safetensors")))
                .expect("fixture");
            assert!(bytes.len() < 16 << 10, "{name} is not tiny");
            match parse_safetensors(&bytes) {
                Ok(_) => failures.push(format!("{name}: accepted")),
                Err(e) if !check(&e) => failures.push(format!("{name}: wrong error {e:?}")),
                Err(_) => {}
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn a_hostile_single_file_checkpoint_is_refused_by_open() {
        let dir = std::env::temp_dir().join(format!("ggforge-hostile-st-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::copy(
            hostile("safetensors").join("data_overlap.safetensors"),
            dir.join("model.safetensors"),
        )
        .expect("copy");
        let r = Checkpoint::open_checked(&dir);
        let ok = matches!(&r, Err(CheckpointError::Format { path, error: E::Overlap { .. } })
            if path.ends_with("model.safetensors"));
        let msg = Checkpoint::open(&dir).err().map(|e| e.to_string());
        let _ = std::fs::remove_dir_all(&dir);
        assert!(ok, "{:?}", r.err());
        assert!(msg.is_some_and(|m| m.contains("inside the previous tensor")));
    }

    #[test]
    fn every_hostile_index_folder_is_rejected_with_its_error() {
        let cases = index_cases();
        let listed: BTreeSet<String> = cases.iter().map(|(n, _, _)| n.to_string()).collect();
        assert_eq!(names_in(&hostile("index")), listed);
        let mut failures = Vec::new();
        for (name, file, check) in cases {
            match Checkpoint::open_checked(&hostile("index").join(name)) {
                Ok(_) => failures.push(format!("{name}: accepted")),
                Err(CheckpointError::Format { path, error }) => {
                    if !check(&error) || !path.ends_with(file) {
                        failures.push(format!("{name}: {} {error:?}", path.display()));
                    }
                }
                Err(CheckpointError::Other(e)) => failures.push(format!("{name}: untyped {e}")),
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn fuzz_seeds_and_crash_inputs_replay_cleanly() {
        // fuzz/regressions/safetensors_header holds every crash input the fuzzer ever found.
        let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
        let mut n = 0;
        for sub in ["seeds", "regressions"] {
            let Ok(entries) = std::fs::read_dir(fuzz.join(sub).join("safetensors_header")) else {
                continue;
            };
            for e in entries {
                let p = e.expect("entry").path();
                if !p.is_file() || p.extension().is_some_and(|x| x == "md") {
                    continue;
                }
                let bytes = std::fs::read(&p).expect("readable");
                let r = std::panic::catch_unwind(|| crate::fuzz_checks::safetensors_header(&bytes));
                assert!(r.is_ok(), "{} panics", p.display());
                n += 1;
            }
        }
        assert!(n >= 30, "seed corpus missing ({n} inputs)");
    }

    #[test]
    fn valid_files_parse() {
        // A header written by hand in the layout the safetensors library produces.
        let json = br#"{"__metadata__":{"format":"pt"},"b":{"dtype":"BF16","shape":[3],"data_offsets":[16,22]},"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#;
        let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(json);
        bytes.extend_from_slice(&[0u8; 22]);
        let h = parse_safetensors(&bytes).expect("valid");
        assert_eq!(h.data_start, 8 + json.len());
        assert_eq!(h.entries.len(), 2);
        assert_eq!(h.entries[0].name, "b");
        assert_eq!((h.entries[0].begin, h.entries[0].end), (16, 22));
        assert_eq!(h.entries[1].shape, vec![2, 2]);
        let idx = br#"{"metadata":{"total_size":22},"weight_map":{"a":"m-1.safetensors","b":"m-2.safetensors"}}"#;
        let wm = parse_index(idx).expect("valid index");
        assert_eq!(wm.get("b").map(String::as_str), Some("m-2.safetensors"));
    }
}
