//! Reading a Hugging Face checkpoint: `config.json` and (sharded) safetensors, memory-mapped.
//!
//! Tensors are listed in the order llama.cpp's converter visits them — shard files in sorted
//! order, and within a shard the tensor names sorted as strings — because that order decides the
//! tensor order of the GGUF file. Nothing is read until a tensor is asked for, and then only
//! that tensor's bytes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::tensor::{Dtype, SafeTensors};

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

impl Checkpoint {
    /// Opens `model.safetensors`, or the shards named by `model.safetensors.index.json`, or
    /// every `model*.safetensors` in the directory.
    pub fn open(dir: &Path) -> Result<Checkpoint, ConvertError> {
        let index_path = dir.join("model.safetensors.index.json");
        let mut weight_map: Option<BTreeMap<String, String>> = None;
        let part_names: Vec<String> = if index_path.is_file() {
            let text = std::fs::read_to_string(&index_path)
                .map_err(|e| ConvertError::io(&index_path, e))?;
            let index: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| ConvertError::BadInput {
                    path: index_path.clone(),
                    message: format!("invalid JSON: {e}"),
                })?;
            let map = index
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| ConvertError::BadInput {
                    path: index_path.clone(),
                    message: "no \"weight_map\" object".into(),
                })?;
            let mut wm = BTreeMap::new();
            for (tensor, file) in map {
                let file = file.as_str().ok_or_else(|| ConvertError::BadInput {
                    path: index_path.clone(),
                    message: format!("weight_map entry for '{tensor}' is not a file name"),
                })?;
                if file.contains('/') || file.contains('\\') || file == ".." {
                    return Err(ConvertError::BadInput {
                        path: index_path.clone(),
                        message: format!(
                            "weight_map names '{file}', which is not a file in the model folder"
                        ),
                    });
                }
                wm.insert(tensor.clone(), file.to_string());
            }
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
            });
        }
        if let Some(wm) = &weight_map {
            // A shard on disk that the index does not mention means the index and the files
            // disagree; refuse rather than silently ignore weights.
            let listed: BTreeSet<&String> = wm.values().collect();
            if let Ok(entries) = std::fs::read_dir(dir) {
                for entry in entries.flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if name.starts_with("model-")
                        && name.ends_with(".safetensors")
                        && !listed.contains(&name)
                    {
                        return Err(ConvertError::BadInput {
                            path: dir.join(&name),
                            message: "this shard is not listed in model.safetensors.index.json"
                                .into(),
                        });
                    }
                }
            }
        }

        let mut parts = Vec::new();
        let mut tensors = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (pi, part_name) in part_names.iter().enumerate() {
            let path = dir.join(part_name);
            if !path.is_file() {
                return Err(ConvertError::BadInput {
                    path: path.clone(),
                    message: "shard is missing (named in model.safetensors.index.json)".into(),
                });
            }
            let file = File::open(&path).map_err(|e| ConvertError::io(&path, e))?;
            // SAFETY: read-only map of a file we do not modify; see gguf::GgufFile::open.
            let mmap = unsafe { Mmap::map(&file) }.map_err(|e| ConvertError::io(&path, e))?;
            let mut names = list_tensors(&path, &mmap, pi)?;
            names.sort_by(|a, b| a.name.cmp(&b.name));
            for t in &names {
                if let Some(prev) = seen.insert(t.name.clone(), pi) {
                    return Err(ConvertError::BadInput {
                        path: path.clone(),
                        message: format!("tensor '{}' is also in {}", t.name, part_names[prev]),
                    });
                }
            }
            tensors.extend(names);
            parts.push(Part { path, mmap });
        }
        if let Some(wm) = &weight_map {
            for (tensor, file) in wm {
                match seen.get(tensor) {
                    None => {
                        return Err(ConvertError::BadInput {
                            path: dir.join(file),
                            message: format!(
                                "tensor '{tensor}' is named in the index but no shard holds it"
                            ),
                        })
                    }
                    Some(&pi) if &part_names[pi] != file => {
                        return Err(ConvertError::BadInput {
                            path: dir.join(&part_names[pi]),
                            message: format!(
                                "tensor '{tensor}' is here, but the index says it is in {file}"
                            ),
                        })
                    }
                    _ => {}
                }
            }
            for t in &tensors {
                if !wm.contains_key(&t.name) {
                    return Err(ConvertError::BadInput {
                        path: parts[t.part].path.clone(),
                        message: format!(
                            "tensor '{}' is not listed in model.safetensors.index.json",
                            t.name
                        ),
                    });
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

/// Parses one shard's header and validates every entry against the file.
fn list_tensors(path: &Path, mmap: &[u8], part: usize) -> Result<Vec<SourceTensor>, ConvertError> {
    let bad = |message: String| ConvertError::BadInput {
        path: path.to_path_buf(),
        message,
    };
    if mmap.len() < 8 {
        return Err(bad(format!(
            "file is {} bytes, too short to be safetensors",
            mmap.len()
        )));
    }
    let header_len = u64::from_le_bytes(
        mmap[..8]
            .try_into()
            .map_err(|_| bad("truncated header".into()))?,
    );
    if header_len > MAX_HEADER || header_len > (mmap.len() as u64 - 8) {
        return Err(bad(format!(
            "header length {header_len} is larger than the file ({} bytes): the file is truncated or not safetensors",
            mmap.len()
        )));
    }
    let (_, meta) = SafeTensors::read_metadata(mmap)
        .map_err(|e| bad(format!("invalid safetensors header: {e}")))?;
    let data_start = 8 + header_len as usize;
    let data_len = mmap.len() - data_start;
    let mut out = Vec::new();
    for (name, info) in meta.tensors() {
        let dtype = match info.dtype {
            Dtype::F32 => SourceDtype::F32,
            Dtype::F16 => SourceDtype::F16,
            Dtype::BF16 => SourceDtype::BF16,
            other => {
                return Err(ConvertError::UnsupportedDtype {
                    path: path.to_path_buf(),
                    tensor: name.clone(),
                    dtype: format!("{other:?}"),
                })
            }
        };
        let (begin, end) = info.data_offsets;
        if begin > end || end > data_len {
            return Err(bad(format!(
                "tensor '{name}' has data range {begin}..{end}, outside the {data_len} data bytes"
            )));
        }
        let n: Option<usize> = info
            .shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d));
        let expected = n.and_then(|n| n.checked_mul(dtype.size()));
        if expected != Some(end - begin) {
            return Err(bad(format!(
                "tensor '{name}' has shape {:?} ({}) but {} data bytes",
                info.shape,
                dtype.name(),
                end - begin
            )));
        }
        out.push(SourceTensor {
            name: name.clone(),
            dtype,
            shape: info.shape.clone(),
            part,
            start: data_start + begin,
            end: data_start + end,
        });
    }
    Ok(out)
}
