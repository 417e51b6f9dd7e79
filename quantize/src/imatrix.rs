//! Importance matrices as llama-quantize reads them.
//!
//! `llama-imatrix` records, for every matrix multiplication weight, the sum of squared input
//! activations per column. The quantizers weight their rounding error by it. Two file formats
//! exist (common/imatrix-loader.cpp, tools/imatrix/imatrix.cpp):
//!
//! * GGUF (current default): `general.type = "imatrix"`, `imatrix.datasets` (string array),
//!   `imatrix.chunk_count` / `imatrix.chunk_size` (u32), and per weight two F32 tensors,
//!   `<name>.in_sum2` (ne = [columns, n_mat]) and `<name>.counts` (ne = [1, n_mat]); n_mat is
//!   the number of experts for MoE weights, 1 otherwise.
//! * legacy `.dat`: i32 n_entries, then per entry i32 name length, name, i32 ncall, i32 nval,
//!   f32[nval] holding (Σx² / count) · ncall; optionally a trailer i32 chunk count, i32 length,
//!   dataset name.
//!
//! llama-quantize turns them into one weight per column (per expert column for MoE): Σx²/count
//! in f32, with 1.0 for matrices that saw no tokens (GGUF), or value/ncall (legacy). [`Imatrix`]
//! holds exactly those f32 values.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use gguf::{Array, GgmlType, Header, Value};

/// Why an importance matrix could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ImatrixError {
    #[error("cannot read imatrix {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("imatrix {}: {message}", path.display())]
    Malformed { path: PathBuf, message: String },
    #[error("imatrix {}: missing imatrix metadata (imatrix.datasets, imatrix.chunk_count and imatrix.chunk_size are all required)", path.display())]
    MissingMetadata { path: PathBuf },
    #[error("imatrix entry '{name}' contains a non-finite value ({value}) at index {index}")]
    NonFinite {
        name: String,
        index: usize,
        value: f32,
    },
    #[error("imatrix entry '{name}' has {values} values, tensor has {columns} columns{experts}")]
    SizeMismatch {
        name: String,
        values: usize,
        columns: u64,
        /// " (ne[0] × N experts)" for expert tensors, else empty.
        experts: String,
    },
}

/// Which file format an importance matrix came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImatrixFormat {
    Gguf,
    Legacy,
}

/// Per-tensor importance weights, as llama-quantize computes them from the file.
#[derive(Clone, Debug, PartialEq)]
pub struct Imatrix {
    pub format: ImatrixFormat,
    /// Weight name → one f32 per column (columns × n_mat for expert tensors), sorted by name.
    pub entries: BTreeMap<String, Vec<f32>>,
    /// Dataset names (GGUF: `imatrix.datasets`; legacy: the trailer's name).
    pub datasets: Vec<String>,
    /// Chunks the matrix was computed on (GGUF `imatrix.chunk_count`, legacy trailer), 0 if unknown.
    pub chunk_count: i64,
    /// GGUF `imatrix.chunk_size` (0 for legacy files).
    pub chunk_size: i64,
}

impl Imatrix {
    /// Loads a GGUF imatrix (recognized by its magic) or a legacy `.dat` file.
    pub fn load(path: &Path) -> Result<Imatrix, ImatrixError> {
        let bytes = std::fs::read(path).map_err(|source| ImatrixError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let m = if bytes.starts_with(gguf::GGUF_MAGIC) {
            Self::from_gguf_bytes(&bytes, path)?
        } else {
            Self::from_legacy_bytes(&bytes, path)?
        };
        m.check_finite()?;
        Ok(m)
    }

    /// Parses the GGUF format; `path` only names the file in errors.
    pub fn from_gguf_bytes(bytes: &[u8], path: &Path) -> Result<Imatrix, ImatrixError> {
        let bad = |message: String| ImatrixError::Malformed {
            path: path.to_path_buf(),
            message,
        };
        let header = Header::parse(bytes).map_err(|e| bad(e.to_string()))?;
        if header.tensors.is_empty() {
            return Err(bad("no data (the file has no tensors)".into()));
        }
        let md = &header.metadata;
        let has_metadata = md.contains("imatrix.datasets")
            && md.contains("imatrix.chunk_count")
            && md.contains("imatrix.chunk_size");
        if !has_metadata {
            return Err(ImatrixError::MissingMetadata {
                path: path.to_path_buf(),
            });
        }
        let datasets = match md.get("imatrix.datasets") {
            Some(Value::Array(Array::String(v))) => v.clone(),
            _ => Vec::new(),
        };
        let u32_key = |key: &str| -> Result<i64, ImatrixError> {
            match md.get(key) {
                Some(Value::U32(v)) => Ok(i64::from(*v)),
                Some(other) => Err(bad(format!(
                    "{key} has type {}, expected u32",
                    other.value_type().name()
                ))),
                None => Ok(0),
            }
        };
        // llama.cpp stores the u32 in an int32_t.
        let chunk_count = i64::from(u32_key("imatrix.chunk_count")? as u32 as i32);
        let chunk_size = i64::from(u32_key("imatrix.chunk_size")? as u32 as i32);

        // name -> (in_sum2, counts)
        let mut pairs: BTreeMap<String, (Option<usize>, Option<usize>)> = BTreeMap::new();
        for (i, t) in header.tensors.iter().enumerate() {
            if let Some(base) = t.name.strip_suffix(".in_sum2") {
                pairs.entry(base.to_string()).or_default().0 = Some(i);
            } else if let Some(base) = t.name.strip_suffix(".counts") {
                pairs.entry(base.to_string()).or_default().1 = Some(i);
            }
        }
        let f32_data = |i: usize| -> Result<Vec<f32>, ImatrixError> {
            let t = &header.tensors[i];
            if t.ggml_type != GgmlType::F32 {
                return Err(bad(format!(
                    "tensor '{}' is {}, expected f32",
                    t.name, t.ggml_type
                )));
            }
            let start = (header.data_offset + t.offset) as usize;
            let raw = &bytes[start..start + t.n_bytes() as usize];
            Ok(raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect())
        };
        let mut entries = BTreeMap::new();
        for (name, (sums, counts)) in pairs {
            let (Some(si), Some(ci)) = (sums, counts) else {
                return Err(bad(format!(
                    "mismatched sums and counts for '{name}' (need both {name}.in_sum2 and {name}.counts)"
                )));
            };
            let sums = f32_data(si)?;
            let counts: Vec<i64> = f32_data(ci)?.iter().map(|&c| lround(c)).collect();
            if counts.is_empty() || sums.len() % counts.len() != 0 {
                return Err(bad(format!(
                    "entry '{name}': {} sums are not a whole number of rows for {} counts",
                    sums.len(),
                    counts.len()
                )));
            }
            let ne0 = sums.len() / counts.len();
            let mut w = vec![0f32; sums.len()];
            for (j, &count) in counts.iter().enumerate() {
                let c = count as f32;
                let (src, dst) = (
                    &sums[j * ne0..(j + 1) * ne0],
                    &mut w[j * ne0..(j + 1) * ne0],
                );
                if c > 0.0 {
                    for (d, s) in dst.iter_mut().zip(src) {
                        *d = s / c;
                    }
                } else {
                    dst.fill(1.0);
                }
            }
            entries.insert(name, w);
        }
        Ok(Imatrix {
            format: ImatrixFormat::Gguf,
            entries,
            datasets,
            chunk_count,
            chunk_size,
        })
    }

    /// Parses the legacy `.dat` format; `path` only names the file in errors.
    pub fn from_legacy_bytes(bytes: &[u8], path: &Path) -> Result<Imatrix, ImatrixError> {
        let bad = |message: String| ImatrixError::Malformed {
            path: path.to_path_buf(),
            message: format!("{message} (read as a legacy .dat imatrix: not a GGUF file)"),
        };
        let mut pos = 0usize;
        let mut take = |n: usize| -> Option<&[u8]> {
            let s = bytes.get(pos..pos.checked_add(n)?)?;
            pos += n;
            Some(s)
        };
        fn i32_of(b: &[u8]) -> i32 {
            i32::from_le_bytes([b[0], b[1], b[2], b[3]])
        }
        let n_entries = take(4).map(i32_of).ok_or_else(|| bad("no data".into()))?;
        if n_entries < 1 {
            return Err(bad(format!("no data ({n_entries} entries)")));
        }
        let mut entries = BTreeMap::new();
        for i in 0..n_entries {
            let len = take(4)
                .map(i32_of)
                .ok_or_else(|| bad(format!("failed reading name for entry {}", i + 1)))?;
            let name = usize::try_from(len)
                .ok()
                .and_then(&mut take)
                .ok_or_else(|| bad(format!("failed reading name for entry {}", i + 1)))?;
            // std::string from a C string: cut at the first NUL.
            let name = name.split(|&b| b == 0).next().unwrap_or(&[]);
            let name = String::from_utf8_lossy(name).into_owned();
            let ncall = take(4)
                .map(i32_of)
                .ok_or_else(|| bad(format!("failed reading entry '{name}'")))?;
            let nval = take(4)
                .map(i32_of)
                .ok_or_else(|| bad(format!("failed reading entry '{name}'")))?;
            if nval < 1 {
                return Err(bad(format!("entry '{name}' has {nval} values")));
            }
            let raw = take(nval as usize * 4)
                .ok_or_else(|| bad(format!("failed reading data for entry '{name}'")))?;
            let w: Vec<f32> = raw
                .chunks_exact(4)
                .map(|b| {
                    let v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    if ncall > 0 {
                        v / ncall as f32
                    } else {
                        v
                    }
                })
                .collect();
            entries.insert(name, w);
        }
        // Optional trailer: chunk count, then the dataset name.
        let mut chunk_count = 0i64;
        let mut datasets = Vec::new();
        if let Some(b) = take(4) {
            chunk_count = i64::from(i32_of(b));
            if let Some(len) = take(4).map(i32_of) {
                if len > 0 {
                    if let Some(name) = take(len as usize) {
                        let name = name.split(|&b| b == 0).next().unwrap_or(&[]);
                        datasets.push(String::from_utf8_lossy(name).into_owned());
                    }
                }
            }
        }
        Ok(Imatrix {
            format: ImatrixFormat::Legacy,
            entries,
            datasets,
            chunk_count,
            chunk_size: 0,
        })
    }

    /// llama-quantize refuses an imatrix with any NaN/Inf weight, used or not.
    fn check_finite(&self) -> Result<(), ImatrixError> {
        for (name, w) in &self.entries {
            if let Some((index, &value)) = w.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                return Err(ImatrixError::NonFinite {
                    name: name.clone(),
                    index,
                    value,
                });
            }
        }
        Ok(())
    }

    /// The weights for a tensor with rows of `ne0` and `n_mat` matrices (ne[2], experts), as
    /// llama-quantize selects them: `None` when the file has no entry for it, an error when the
    /// entry's size differs — except for token embeddings, which llama-quantize then quantizes
    /// without weights (imatrix files often carry a mismatched one).
    pub fn weights_for(
        &self,
        name: &str,
        ne0: u64,
        n_mat: u64,
    ) -> Result<Option<&[f32]>, ImatrixError> {
        let Some(w) = self.entries.get(name) else {
            return Ok(None);
        };
        let columns = ne0.saturating_mul(n_mat);
        if w.len() as u64 == columns {
            return Ok(Some(w));
        }
        if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
            return Ok(None);
        }
        Err(ImatrixError::SizeMismatch {
            name: name.to_string(),
            values: w.len(),
            columns,
            experts: if n_mat > 1 {
                format!(" ({ne0} × {n_mat} experts)")
            } else {
                String::new()
            },
        })
    }

    /// The `quantize.imatrix.*` metadata llama-quantize writes for this file.
    pub fn kv(&self, file_label: &str) -> crate::mix::ImatrixKv {
        crate::mix::ImatrixKv {
            file: file_label.to_string(),
            dataset: self.datasets.first().cloned(),
            entries: self.entries.len() as u32,
            chunks: self.chunk_count,
        }
    }
}

/// C `lround`: round half away from zero (out-of-range values saturate).
fn lround(x: f32) -> i64 {
    let r = x.round();
    if r.is_nan() {
        0
    } else {
        r as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn legacy(entries: &[(&str, i32, &[f32])], trailer: Option<(i32, &str)>) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&(entries.len() as i32).to_le_bytes());
        for (name, ncall, vals) in entries {
            b.extend_from_slice(&(name.len() as i32).to_le_bytes());
            b.extend_from_slice(name.as_bytes());
            b.extend_from_slice(&ncall.to_le_bytes());
            b.extend_from_slice(&(vals.len() as i32).to_le_bytes());
            for v in *vals {
                b.extend_from_slice(&v.to_le_bytes());
            }
        }
        if let Some((chunks, ds)) = trailer {
            b.extend_from_slice(&chunks.to_le_bytes());
            b.extend_from_slice(&(ds.len() as i32).to_le_bytes());
            b.extend_from_slice(ds.as_bytes());
        }
        b
    }

    #[test]
    fn legacy_values_are_divided_by_ncall() {
        let b = legacy(
            &[("a.weight", 3, &[3.0, 6.0, 1.0]), ("b.weight", 0, &[2.0])],
            Some((7, "wiki.txt")),
        );
        let m = Imatrix::from_legacy_bytes(&b, Path::new("x.dat")).unwrap();
        assert_eq!(m.entries["a.weight"], vec![1.0, 2.0, 1.0 / 3.0]);
        assert_eq!(m.entries["b.weight"], vec![2.0]);
        assert_eq!(m.chunk_count, 7);
        assert_eq!(m.datasets, vec!["wiki.txt".to_string()]);
        let no_trailer = legacy(&[("a.weight", 1, &[1.0])], None);
        let m = Imatrix::from_legacy_bytes(&no_trailer, Path::new("x.dat")).unwrap();
        assert_eq!(m.chunk_count, 0);
        assert!(m.datasets.is_empty());
    }

    #[test]
    fn legacy_errors_are_clear() {
        let e = Imatrix::from_legacy_bytes(&0i32.to_le_bytes(), Path::new("x.dat")).unwrap_err();
        assert!(e.to_string().contains("no data"), "{e}");
        let mut b = legacy(&[("a.weight", 1, &[1.0, 2.0])], None);
        b.truncate(b.len() - 2);
        let e = Imatrix::from_legacy_bytes(&b, Path::new("x.dat")).unwrap_err();
        assert!(e.to_string().contains("a.weight"), "{e}");
    }

    #[test]
    fn size_mismatch_names_the_entry() {
        let b = legacy(&[("blk.0.attn_q.weight", 1, &[1.0; 8])], None);
        let m = Imatrix::from_legacy_bytes(&b, Path::new("x.dat")).unwrap();
        assert_eq!(
            m.weights_for("blk.0.attn_q.weight", 8, 1)
                .unwrap()
                .map(<[f32]>::len),
            Some(8)
        );
        assert_eq!(m.weights_for("blk.0.attn_k.weight", 16, 1).unwrap(), None);
        let e = m.weights_for("blk.0.attn_q.weight", 16, 1).unwrap_err();
        assert_eq!(
            e.to_string(),
            "imatrix entry 'blk.0.attn_q.weight' has 8 values, tensor has 16 columns"
        );
        // Expert tensors need ne[0] values per expert.
        assert_eq!(
            m.weights_for("blk.0.attn_q.weight", 4, 2)
                .unwrap()
                .map(<[f32]>::len),
            Some(8)
        );
        let e = m.weights_for("blk.0.attn_q.weight", 8, 4).unwrap_err();
        assert_eq!(
            e.to_string(),
            "imatrix entry 'blk.0.attn_q.weight' has 8 values, tensor has 32 columns (8 × 4 experts)"
        );
        // Token embeddings with a mismatched entry are quantized without weights.
        let b = legacy(&[("token_embd.weight", 1, &[1.0; 3])], None);
        let m = Imatrix::from_legacy_bytes(&b, Path::new("x.dat")).unwrap();
        assert_eq!(m.weights_for("token_embd.weight", 8, 1).unwrap(), None);
    }
}
