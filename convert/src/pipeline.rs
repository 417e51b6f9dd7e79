//! The conversion pipeline: plan every tensor (name, shape, type) from the checkpoint's header
//! alone, write the GGUF header, then stream each tensor through its transforms and type
//! conversion into the file. Only one tensor is in memory at a time.

use std::path::{Path, PathBuf};

use arch_registry::{ArchSpec, ExtraTensor, Hparams, Transform};
use gguf::{AtomicFile, GgmlType, GgufWriter, Metadata, TensorDesc, Value};
use rayon::prelude::*;

use crate::error::ConvertError;
use crate::source::{Checkpoint, SourceDtype, SourceTensor};

/// `--outtype`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutType {
    F32,
    F16,
    BF16,
    Q8_0,
    /// Like llama.cpp: BF16 if the first ≥2-D tensor is bf16, F16 otherwise.
    Auto,
}

impl OutType {
    pub const NAMES: &'static [&'static str] = &["f32", "f16", "bf16", "q8_0", "auto"];

    pub fn parse(s: &str) -> Option<OutType> {
        Some(match s.to_ascii_lowercase().as_str() {
            "f32" => OutType::F32,
            "f16" => OutType::F16,
            "bf16" => OutType::BF16,
            "q8_0" => OutType::Q8_0,
            "auto" => OutType::Auto,
            _ => return None,
        })
    }
}

/// A resolved output file type (`llama_ftype`), as written to `general.file_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileType {
    pub id: u32,
    /// The default tensor type for quantizable tensors.
    pub tensor_type: GgmlType,
    /// Name used in file names (`F16`, `Q8_0`).
    pub label: &'static str,
}

impl FileType {
    pub const ALL_F32: FileType = FileType {
        id: 0,
        tensor_type: GgmlType::F32,
        label: "F32",
    };
    pub const MOSTLY_F16: FileType = FileType {
        id: 1,
        tensor_type: GgmlType::F16,
        label: "F16",
    };
    pub const MOSTLY_Q8_0: FileType = FileType {
        id: 7,
        tensor_type: GgmlType::Q8_0,
        label: "Q8_0",
    };
    pub const MOSTLY_BF16: FileType = FileType {
        id: 32,
        tensor_type: GgmlType::BF16,
        label: "BF16",
    };
}

/// Options of one conversion.
#[derive(Clone, Debug)]
pub struct ConvertOptions {
    pub outtype: OutType,
    /// A file, a directory (default name inside it), or a `{ftype}` template. `None`: the current
    /// directory with the default name.
    pub outfile: Option<PathBuf>,
    /// `--pre NAME`: force `tokenizer.ggml.pre`.
    pub pre_override: Option<String>,
    /// `--model-name`.
    pub model_name: Option<String>,
    /// The Hub repo id the checkpoint came from, if any (names the model).
    pub repo_id: Option<String>,
    /// `--quant PRESET`: quantize in the same pass, as `llama-quantize` would quantize the file
    /// this conversion writes without it.
    pub quant: Option<QuantSpec>,
}

/// One-pass quantization: the result equals `convert --outtype T` followed by
/// `quantize PRESET`. The values are rounded through `T` (the intermediate file's type) before
/// they are quantized, exactly as the two-step path does; `--outtype f32` skips that rounding.
#[derive(Clone, Debug)]
pub struct QuantSpec {
    pub preset: quantize::mix::FileTypePreset,
    pub mix: quantize::mix::MixOptions,
    pub imatrix: Option<quantize::model::ImatrixInput>,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions {
            outtype: OutType::Auto,
            outfile: None,
            pre_override: None,
            model_name: None,
            repo_id: None,
            quant: None,
        }
    }
}

/// Where a planned tensor's values come from.
#[derive(Clone, Debug)]
enum Origin {
    Hf(usize),
    Extra(ExtraTensor),
}

/// One tensor of the output, decided before any data is read.
#[derive(Clone, Debug)]
pub struct PlannedTensor {
    origin: Origin,
    pub name: String,
    /// PyTorch order.
    pub shape: Vec<usize>,
    pub ggml_type: GgmlType,
    transforms: Vec<Transform>,
    /// One-pass quantization: the type the intermediate file would hold; values are rounded
    /// through it before being quantized to `ggml_type`.
    via: Option<GgmlType>,
    /// Importance-matrix weights (one per column) for the quantizer.
    imatrix: Option<Vec<f32>>,
}

/// Everything needed to write the file.
pub struct Plan {
    pub arch: &'static ArchSpec,
    pub hparams: Hparams,
    pub ftype: FileType,
    pub metadata: Metadata,
    pub tensors: Vec<PlannedTensor>,
    pub outfile: PathBuf,
    /// What `general.file_type` says, by name (`F16`, `Q4_K_M`).
    pub file_type_label: &'static str,
    /// llama-quantize writes `ggml_n_dims` dimensions (trailing 1s dropped); the converter writes
    /// every dimension.
    trim_dims: bool,
    n_vocab: Option<usize>,
    checkpoint: Checkpoint,
}

/// What a finished conversion reports.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Summary {
    pub output: PathBuf,
    pub architecture: String,
    pub file_type: String,
    pub n_tensors: usize,
    pub n_params: u64,
    pub bytes_written: u64,
    pub bytes_read: u64,
}

/// Reads `config.json` as JSON.
pub fn read_config(dir: &Path) -> Result<serde_json::Value, ConvertError> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| ConvertError::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| ConvertError::BadInput {
        path,
        message: format!("invalid JSON: {e}"),
    })
}

/// Plans a conversion of the HF folder `dir`.
pub fn plan(dir: &Path, opts: &ConvertOptions) -> Result<Plan, ConvertError> {
    let config_path = dir.join("config.json");
    let reg = |source| ConvertError::Registry {
        path: config_path.clone(),
        source,
    };
    let config = read_config(dir)?;
    let hf_arch = arch_registry::hf_architecture(&config).map_err(reg)?;
    let arch = arch_registry::lookup(hf_arch).map_err(reg)?;
    let hparams = Hparams::from_config(&config, arch.config_class().map_err(reg)?).map_err(reg)?;
    let checkpoint = Checkpoint::open(dir)?;

    let ftype = resolve_ftype(opts.outtype, checkpoint.tensors());
    let n_vocab = if arch
        .tensors
        .iter()
        .any(|r| r.weight.contains(&Transform::TruncateToVocab))
    {
        Some(real_vocab_len(dir, &hparams)?)
    } else {
        None
    };

    let mut tensors = Vec::new();
    for extra in arch.extra {
        if let Some(t) = plan_extra(*extra, &hparams)? {
            tensors.push(t);
        }
    }
    for (i, src) in checkpoint.tensors().iter().enumerate() {
        let Some(mapped) =
            arch.map_tensor(&src.name)
                .map_err(|message| ConvertError::BadInput {
                    path: checkpoint.part_path(src).to_path_buf(),
                    message,
                })?
        else {
            continue;
        };
        let mut shape = src.shape.clone();
        for t in &mapped.transforms {
            match t {
                Transform::Transpose => {
                    if shape.len() != 2 {
                        return Err(ConvertError::Tensor {
                            tensor: src.name.clone(),
                            message: format!("expected a 2-D Conv1D weight, found shape {shape:?}"),
                        });
                    }
                    shape.swap(0, 1);
                }
                Transform::TruncateToVocab => {
                    if let (Some(n), Some(rows)) = (n_vocab, shape.first_mut()) {
                        *rows = (*rows).min(n);
                    }
                }
                Transform::PermuteQ | Transform::PermuteK | Transform::AddOne => {}
            }
        }
        let ggml_type = tensor_type(&mapped.gguf_name, &shape, ftype);
        tensors.push(PlannedTensor {
            origin: Origin::Hf(i),
            name: mapped.gguf_name,
            shape,
            ggml_type,
            transforms: mapped.transforms,
            via: None,
            imatrix: None,
        });
    }
    check_unique(&tensors)?;

    // Metadata, in llama.cpp's write order.
    let mut metadata = Metadata::new();
    metadata.set("general.architecture", arch.gguf_arch);
    for (k, v) in arch.early_kvs(&hparams).map_err(reg)? {
        metadata.set(k, v);
    }
    metadata.set("general.type", "model");
    let params = crate::general::count_params(tensors.iter().map(|t| (t.name.as_str(), &t.shape)));
    let label = opts.quant.as_ref().map_or(ftype.label, |q| q.preset.name());
    let general = crate::general::general_metadata(&crate::general::GeneralInput {
        model_dir: dir,
        config: &config,
        params,
        output_type: label,
        name_override: opts.model_name.as_deref(),
        repo_id: opts.repo_id.as_deref(),
    })
    .map_err(|e| ConvertError::General(e.to_string()))?;
    for (k, v) in general.kvs {
        metadata.set(k, v);
    }
    for (k, v) in arch.hparam_kvs(&hparams, ftype.id).map_err(reg)? {
        metadata.set(k, v);
    }
    metadata.set("general.quantization_version", Value::U32(2));
    let vocab_opts = crate::vocab::VocabOptions {
        pre_override: opts.pre_override.clone(),
    };
    let vocab = crate::vocab::vocab_metadata(dir, hf_arch, &hparams.to_json(), &vocab_opts)
        .map_err(|e| ConvertError::Vocab(e.to_string()))?;
    for (k, v) in vocab {
        metadata.set(k, v);
    }

    let outfile = match &opts.outfile {
        None => PathBuf::from(&general.default_file_name),
        Some(p) if p.is_dir() => p.join(&general.default_file_name),
        Some(p) => {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            p.with_file_name(crate::general::fill_templated_filename(&name, label))
        }
    };
    if let Some(q) = &opts.quant {
        (tensors, metadata) = plan_quant(tensors, &metadata, q)?;
    }
    Ok(Plan {
        arch,
        hparams,
        ftype,
        metadata,
        tensors,
        outfile,
        file_type_label: label,
        trim_dims: opts.quant.is_some(),
        n_vocab,
        checkpoint,
    })
}

/// Applies llama-quantize's decisions to a planned conversion: its tensor order, its per-tensor
/// types (the mix), its metadata layout, and the imatrix weights of each tensor.
fn plan_quant(
    tensors: Vec<PlannedTensor>,
    metadata: &Metadata,
    q: &QuantSpec,
) -> Result<(Vec<PlannedTensor>, Metadata), ConvertError> {
    use quantize::mix;
    let mix_err = |e: mix::MixError| ConvertError::Quant(e.to_string());
    let model = mix::ModelInfo::from_metadata(metadata).map_err(mix_err)?;
    let specs: Vec<mix::TensorSpec> = tensors
        .iter()
        .map(|t| mix::TensorSpec {
            name: t.name.clone(),
            dims: TensorDesc::from_shape(&t.name, &t.shape, t.ggml_type).dims,
            ggml_type: t.ggml_type,
        })
        .collect();
    let mut opts = q.mix.clone();
    opts.has_imatrix = q.imatrix.is_some();
    let mix_plan = mix::plan(&model, &specs, q.preset, &opts).map_err(mix_err)?;
    let mut by_name: std::collections::HashMap<String, PlannedTensor> =
        tensors.into_iter().map(|t| (t.name.clone(), t)).collect();
    let mut out = Vec::with_capacity(mix_plan.tensors.len());
    for tp in &mix_plan.tensors {
        let mut t = by_name
            .remove(&tp.name)
            .ok_or_else(|| ConvertError::Tensor {
                tensor: tp.name.clone(),
                message: "planned by the mix but not by the converter".into(),
            })?;
        if tp.converts() {
            t.via = Some(tp.source_type);
            t.ggml_type = tp.target_type;
            if let Some(im) = &q.imatrix {
                let ne0 = tp.dims.first().copied().unwrap_or(1);
                let n_mat = tp.dims.get(2).copied().unwrap_or(1);
                let w = im
                    .imatrix
                    .weights_for(&tp.name, ne0, n_mat)
                    .map_err(|e| ConvertError::Quant(e.to_string()))?;
                t.imatrix = w
                    .filter(|_| quantize::uses_imatrix(tp.target_type))
                    .map(<[f32]>::to_vec);
            }
        }
        out.push(t);
    }
    let kv = q.imatrix.as_ref().map(|im| im.imatrix.kv(&im.label));
    Ok((out, mix::output_metadata(metadata, q.preset, kv.as_ref())))
}

/// Rounds values to what an intermediate file of type `via` would hold, and checks them as
/// llama-quantize checks its input (no NaN or Inf, e.g. from an f16 overflow).
fn round_through(name: &str, values: &mut [f32], via: GgmlType) -> Result<(), ConvertError> {
    match via {
        GgmlType::F16 => values
            .par_iter_mut()
            .for_each(|v| *v = quantize::f16_bits_to_f32(quantize::f32_to_f16_bits(*v))),
        GgmlType::BF16 => values
            .par_iter_mut()
            .for_each(|v| *v = quantize::bf16_bits_to_f32(quantize::f32_to_bf16_bits(*v))),
        _ => {}
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(ConvertError::Tensor {
            tensor: name.to_string(),
            message: format!(
                "value {} at index {i} is not finite in {} (llama-quantize refuses such input)",
                values[i],
                via.name()
            ),
        });
    }
    Ok(())
}

/// The vocabulary size Gemma 3 truncates its embedding to: llama.cpp takes the SentencePiece
/// vocabulary padded to `vocab_size` (i.e. `vocab_size`), or for `tokenizer.json` the number of
/// vocab entries plus added tokens.
fn real_vocab_len(dir: &Path, hp: &Hparams) -> Result<usize, ConvertError> {
    if dir.join("tokenizer.model").is_file() {
        return hp
            .u64(&["vocab_size"])
            .map(|n| n as usize)
            .ok_or_else(|| ConvertError::Vocab("config.json has no vocab_size".into()));
    }
    let path = dir.join("tokenizer.json");
    let text = std::fs::read_to_string(&path).map_err(|e| ConvertError::io(&path, e))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| ConvertError::BadInput {
            path: path.clone(),
            message: format!("invalid JSON: {e}"),
        })?;
    let vocab = json
        .pointer("/model/vocab")
        .and_then(|v| v.as_object())
        .map(|v| v.len());
    let added = json
        .get("added_tokens")
        .and_then(|v| v.as_array())
        .map(|v| v.len())
        .unwrap_or(0);
    vocab
        .map(|v| v + added)
        .ok_or_else(|| ConvertError::BadInput {
            path,
            message: "no model.vocab object".into(),
        })
}

fn check_unique(tensors: &[PlannedTensor]) -> Result<(), ConvertError> {
    let mut seen = std::collections::HashSet::new();
    for t in tensors {
        if !seen.insert(t.name.as_str()) {
            return Err(ConvertError::Tensor {
                tensor: t.name.clone(),
                message: "two input tensors map to this name".into(),
            });
        }
    }
    Ok(())
}

/// `--outtype auto`: the first tensor with at least two dimensions that is bf16 or f16 decides;
/// otherwise F16 (llama.cpp's heuristic, which skips f32 tensors rather than stopping at them).
fn resolve_ftype(outtype: OutType, tensors: &[SourceTensor]) -> FileType {
    match outtype {
        OutType::F32 => FileType::ALL_F32,
        OutType::F16 => FileType::MOSTLY_F16,
        OutType::BF16 => FileType::MOSTLY_BF16,
        OutType::Q8_0 => FileType::MOSTLY_Q8_0,
        OutType::Auto => tensors
            .iter()
            .filter(|t| t.shape.len() >= 2)
            .find_map(|t| match t.dtype {
                SourceDtype::BF16 => Some(FileType::MOSTLY_BF16),
                SourceDtype::F16 => Some(FileType::MOSTLY_F16),
                SourceDtype::F32 => None,
            })
            .unwrap_or(FileType::MOSTLY_F16),
    }
}

/// GGUF names that llama.cpp always keeps in F32 (routers, position embeddings, …).
const FORCED_F32: &[&str] = &[
    "ffn_gate_inp.weight",
    "ffn_gate_inp_shexp.weight",
    "position_embd.weight",
    "token_types.weight",
];

/// The per-tensor type choice of llama.cpp's `prepare_tensors`.
fn tensor_type(name: &str, shape: &[usize], ftype: FileType) -> GgmlType {
    if shape.len() <= 1 || name.ends_with("_norm.weight") {
        return GgmlType::F32;
    }
    let base = name
        .split('.')
        .skip_while(|p| *p == "blk" || p.bytes().all(|b| b.is_ascii_digit()))
        .collect::<Vec<_>>()
        .join(".");
    if FORCED_F32.contains(&base.as_str())
        || !(name.ends_with(".weight") || name.ends_with(".lora_a") || name.ends_with(".lora_b"))
    {
        return GgmlType::F32;
    }
    let ty = ftype.tensor_type;
    let row = shape.last().copied().unwrap_or(1);
    if ty.is_quantized() && row % ty.block_size() != 0 {
        // llama.cpp: "quantization failed … falling back to F16"
        return GgmlType::F16;
    }
    ty
}

fn plan_extra(extra: ExtraTensor, hp: &Hparams) -> Result<Option<PlannedTensor>, ConvertError> {
    let values = match extra_values(extra, hp)? {
        Some(v) => v,
        None => return Ok(None),
    };
    let name = match extra {
        ExtraTensor::Llama3RopeFreqs => "rope_freqs.weight",
        ExtraTensor::RopeFactorsLong => "rope_factors_long.weight",
        ExtraTensor::RopeFactorsShort => "rope_factors_short.weight",
    };
    Ok(Some(PlannedTensor {
        origin: Origin::Extra(extra),
        name: name.into(),
        shape: vec![values.len()],
        ggml_type: GgmlType::F32,
        transforms: Vec::new(),
        via: None,
        imatrix: None,
    }))
}

/// The values of a generated tensor, or `None` when this model does not have it.
fn extra_values(extra: ExtraTensor, hp: &Hparams) -> Result<Option<Vec<f32>>, ConvertError> {
    let bad = |message: String| ConvertError::Registry {
        path: PathBuf::from("config.json"),
        source: arch_registry::RegistryError::BadHparam(message),
    };
    match extra {
        ExtraTensor::Llama3RopeFreqs => {
            let rp = hp.rope_full();
            let is_llama3 = rp
                .get("rope_type")
                .and_then(|v| v.as_str())
                .is_some_and(|t| t.eq_ignore_ascii_case("llama3"));
            if is_llama3 {
                Ok(Some(llama3_rope_freqs(hp)?))
            } else {
                Ok(None)
            }
        }
        ExtraTensor::RopeFactorsLong | ExtraTensor::RopeFactorsShort => {
            let rp = hp.rope_parameters();
            let list = |k: &str| -> Option<Vec<f64>> {
                rp.get(k)
                    .and_then(|v| v.as_array())
                    .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
            };
            let Some(long) = list("long_factor").filter(|l| !l.is_empty()) else {
                return Ok(None);
            };
            let short = list("short_factor")
                .ok_or_else(|| bad("rope_scaling has long_factor but no short_factor".into()))?;
            let n_embd = hp.u64(&["hidden_size", "n_embd"]).unwrap_or(0);
            let n_head = hp
                .u64(&["num_attention_heads", "n_head"])
                .filter(|n| *n > 0)
                .unwrap_or(1);
            let half = arch_registry::phi3_rope_dims(hp, n_embd, n_head) as usize / 2;
            if long.len() != short.len() || long.len() != half {
                return Err(bad(format!(
                    "rope long/short factors must have {half} entries each, found {} and {}",
                    long.len(),
                    short.len()
                )));
            }
            let v = if extra == ExtraTensor::RopeFactorsLong {
                long
            } else {
                short
            };
            Ok(Some(v.into_iter().map(|x| x as f32).collect()))
        }
    }
}

fn rope_head_dim(hp: &Hparams) -> Result<usize, ConvertError> {
    let missing = |k: &str| ConvertError::Registry {
        path: PathBuf::from("config.json"),
        source: arch_registry::RegistryError::MissingHparam(k.into()),
    };
    if let Some(d) = hp.u64(&["head_dim"]) {
        return Ok(d as usize);
    }
    let hidden = hp
        .u64(&["hidden_size"])
        .ok_or_else(|| missing("hidden_size"))?;
    let heads = hp
        .u64(&["num_attention_heads"])
        .filter(|h| *h > 0)
        .ok_or_else(|| missing("num_attention_heads"))?;
    Ok((hidden / heads) as usize)
}

/// Llama-3 `rope_freqs`, computed in f32 step by step as torch does in llama.cpp's converter.
fn llama3_rope_freqs(hp: &Hparams) -> Result<Vec<f32>, ConvertError> {
    let rp = hp.rope_full();
    let get = |k: &str, d: f64| rp.get(k).and_then(|v| v.as_f64()).unwrap_or(d);
    let base = get("rope_theta", 10000.0) as f32;
    let dim = rope_head_dim(hp)?;
    let factor = get("factor", 8.0) as f32;
    let low_freq_factor = get("low_freq_factor", 1.0);
    let high_freq_factor = get("high_freq_factor", 4.0);
    let old_context_len = get("original_max_position_embeddings", 8192.0);
    // Python floats: these two divisions happen in f64.
    let low_freq_wavelen = old_context_len / low_freq_factor;
    let high_freq_wavelen = old_context_len / high_freq_factor;
    let mut out = Vec::with_capacity(dim / 2);
    for i in (0..dim).step_by(2) {
        let exponent = i as f32 / dim as f32;
        let freq = 1.0f32 / base.powf(exponent);
        let wavelen = (2.0 * std::f64::consts::PI) as f32 / freq;
        let w = wavelen as f64;
        let v = if w < high_freq_wavelen {
            1.0
        } else if w > low_freq_wavelen {
            factor
        } else {
            let smooth = (old_context_len as f32 / wavelen - low_freq_factor as f32)
                / (high_freq_factor as f32 - low_freq_factor as f32);
            1.0f32 / ((1.0f32 - smooth) / factor + smooth)
        };
        out.push(v);
    }
    Ok(out)
}

impl Plan {
    /// Header descriptions of every tensor.
    pub fn descs(&self) -> Vec<TensorDesc> {
        self.tensors
            .iter()
            .map(|t| {
                let mut d = TensorDesc::from_shape(&t.name, &t.shape, t.ggml_type);
                if self.trim_dims {
                    d.dims.truncate(quantize::mix::ggml_n_dims(&d.dims).max(1));
                }
                d
            })
            .collect()
    }

    pub fn input_bytes(&self) -> u64 {
        self.checkpoint.total_bytes()
    }

    /// Streams every tensor into `outfile` (temporary file renamed on success). `progress` is
    /// called with the number of input bytes consumed after each tensor.
    ///
    /// Tensors are converted in buffers of a few MB on the rayon pool (`--threads`) while a
    /// writer thread writes the previous buffer; see [`crate::stream`]. The bytes are the same
    /// whatever the thread count or buffer size.
    pub fn write(&self, progress: &(dyn Fn(u64) + Sync)) -> Result<Summary, ConvertError> {
        let out = &self.outfile;
        let file = AtomicFile::create(out).map_err(|e| ConvertError::io(out, e))?;
        self.write_to(file, out, progress)
    }

    /// [`Plan::write`] into any output that appears only when committed: e.g. the shards of a
    /// split model ([`gguf::split::SplitOutput`], which re-cuts this unsplit byte stream into
    /// files). `out` names the output in errors and in the summary.
    pub fn write_to<S: gguf::split::Commit>(
        &self,
        file: S,
        out: &Path,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<Summary, ConvertError> {
        let descs = self.descs();
        let writer = GgufWriter::new(file, &self.metadata, &descs)
            .map_err(|e| ConvertError::write(out, e))?;
        let names: Vec<&str> = self.tensors.iter().map(|t| t.name.as_str()).collect();
        let on_tensor = |i: usize| {
            if let Some(Origin::Hf(s)) = self.tensors.get(i).map(|t| &t.origin) {
                progress(self.checkpoint.tensors()[*s].n_bytes() as u64);
            }
        };
        let writer = crate::stream::run_writer(
            writer,
            &names,
            &on_tensor,
            |outbox| self.produce_all(outbox),
            |e| ConvertError::write(out, e),
        )?;
        let n_params = self
            .tensors
            .iter()
            .map(|t| t.shape.iter().product::<usize>() as u64)
            .sum();
        let bytes_written = writer.position();
        let file = writer.finish().map_err(|e| ConvertError::write(out, e))?;
        file.commit().map_err(|e| ConvertError::io(out, e))?;
        Ok(Summary {
            output: out.to_path_buf(),
            architecture: self.arch.gguf_arch.to_string(),
            file_type: self.file_type_label.to_string(),
            n_tensors: self.tensors.len(),
            n_params,
            bytes_written,
            bytes_read: self.input_bytes(),
        })
    }

    /// Produces every tensor, in header order, into `outbox`. Returns early (with `Ok`) when
    /// the writer has stopped: its error is the one reported.
    fn produce_all(&self, outbox: &crate::stream::Outbox) -> Result<(), ConvertError> {
        use crate::stream::{advise, Advice, Piece, CHUNK_BYTES};
        const PREFETCH_BYTES: usize = 256 << 20;
        let source_of = |t: &PlannedTensor| match t.origin {
            Origin::Hf(i) => Some(self.checkpoint.bytes(&self.checkpoint.tensors()[i])),
            Origin::Extra(_) => None,
        };
        // Tensors before `prefetched` were handed to the kernel's read-ahead; `window` is the
        // source size of those after the current one.
        let mut prefetched = 0;
        let mut window = 0usize;
        for (i, t) in self.tensors.iter().enumerate() {
            // Let the kernel read the next PREFETCH_BYTES from disk while this tensor is
            // converted. This fills the page cache only, not this process's resident memory.
            if i < prefetched {
                window -= source_of(t).map_or(0, <[u8]>::len);
            } else {
                prefetched = i + 1;
                window = 0;
            }
            while prefetched < self.tensors.len() && window < PREFETCH_BYTES {
                if let Some(next) = source_of(&self.tensors[prefetched]) {
                    advise(next, Advice::WillNeed);
                    window += next.len();
                }
                prefetched += 1;
            }
            match self.row_source(t)? {
                Some(rs) => {
                    let total = rs.n_elements();
                    let step = rs.elements_in(CHUNK_BYTES);
                    let mut first = 0;
                    while first < total {
                        let n = step.min(total - first);
                        let Some(mut bytes) = outbox.buffer(rs.out_bytes(n)) else {
                            return Ok(());
                        };
                        rs.fill(first, &mut bytes);
                        let piece = Piece::Data {
                            tensor: i,
                            bytes,
                            recycle: true,
                        };
                        if !outbox.send(piece) {
                            return Ok(());
                        }
                        first += n;
                    }
                }
                None => {
                    let bytes = self.produce(t)?;
                    let piece = Piece::Data {
                        tensor: i,
                        bytes,
                        recycle: false,
                    };
                    if !outbox.send(piece) {
                        return Ok(());
                    }
                }
            }
            if let Some(src) = source_of(t) {
                advise(src, Advice::DontNeed);
            }
            if !outbox.send(Piece::End { tensor: i }) {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Describes `t` as a selection of source rows for the streaming path, or `None` when it
    /// needs the reference path (`Transpose`, generated tensors, other output types).
    fn row_source(
        &self,
        t: &PlannedTensor,
    ) -> Result<Option<crate::stream::RowSource<'_>>, ConvertError> {
        use crate::stream::{ElemOp, RowSource};
        let Origin::Hf(i) = t.origin else {
            return Ok(None);
        };
        if t.via.is_some() || !crate::stream::supports(t.ggml_type) {
            return Ok(None);
        }
        let src = &self.checkpoint.tensors()[i];
        let n = src.n_elements();
        let mut rows = src.shape.first().copied().unwrap_or(1);
        let row_len = n.checked_div(rows).unwrap_or(0);
        let mut map: Option<Vec<usize>> = None;
        let mut op = ElemOp::Identity;
        for tr in &t.transforms {
            match tr {
                Transform::PermuteQ | Transform::PermuteK => {
                    let perm = self.permute_map(src, *tr, rows)?;
                    map = Some(match map {
                        None => perm,
                        Some(m) => perm.iter().map(|&p| m[p]).collect(),
                    });
                }
                Transform::AddOne if op == ElemOp::Identity => {
                    op = if src.dtype == SourceDtype::F16 {
                        ElemOp::AddOneF16Exact
                    } else {
                        ElemOp::AddOne
                    };
                }
                Transform::AddOne | Transform::Transpose => return Ok(None),
                Transform::TruncateToVocab => {
                    if let Some(nv) = self.n_vocab.filter(|&nv| nv < rows) {
                        rows = nv;
                        if let Some(m) = &mut map {
                            m.truncate(nv);
                        }
                    }
                }
            }
        }
        let rs = RowSource {
            src: self.checkpoint.bytes(src),
            dtype: src.dtype,
            row_len,
            n_rows: rows,
            map,
            op,
            out: t.ggml_type,
        };
        let planned: usize = t.shape.iter().product();
        Ok((rs.is_valid() && rs.n_elements() == planned).then_some(rs))
    }

    /// The row order of a Q/K head permutation of a tensor with `rows` rows (output row `r`
    /// comes from row `map[r]`).
    fn permute_map(
        &self,
        src: &SourceTensor,
        tr: Transform,
        rows: usize,
    ) -> Result<Vec<usize>, ConvertError> {
        let err = |message: String| ConvertError::Tensor {
            tensor: src.name.clone(),
            message,
        };
        let n_head = self
            .hparams
            .u64(&["n_heads", "num_attention_heads"])
            .ok_or_else(|| err("num_attention_heads missing".into()))?;
        let n_kv = self
            .hparams
            .u64(&["n_kv_heads", "num_key_value_heads"])
            .unwrap_or(n_head);
        let heads = if tr == Transform::PermuteK && n_kv != n_head {
            n_kv
        } else {
            n_head
        };
        arch_registry::permute_rows(rows, heads as usize).map_err(err)
    }

    /// Reads, transforms and encodes one tensor.
    fn produce(&self, t: &PlannedTensor) -> Result<Vec<u8>, ConvertError> {
        let (mut values, f16_exact) = match t.origin {
            Origin::Extra(extra) => (
                extra_values(extra, &self.hparams)?.unwrap_or_default(),
                false,
            ),
            Origin::Hf(i) => {
                let src = &self.checkpoint.tensors()[i];
                (
                    widen(self.checkpoint.bytes(src), src.dtype),
                    src.dtype == SourceDtype::F16,
                )
            }
        };
        if let Origin::Hf(i) = t.origin {
            let src = &self.checkpoint.tensors()[i];
            values = self.apply_transforms(src, t, values, f16_exact)?;
        }
        if let Some(via) = t.via {
            round_through(&t.name, &mut values, via)?;
        }
        encode(&values, t, f16_exact)
    }

    fn apply_transforms(
        &self,
        src: &SourceTensor,
        t: &PlannedTensor,
        mut values: Vec<f32>,
        f16_exact: bool,
    ) -> Result<Vec<f32>, ConvertError> {
        let mut shape = src.shape.clone();
        for tr in &t.transforms {
            match tr {
                Transform::PermuteQ | Transform::PermuteK => {
                    let rows = shape.first().copied().unwrap_or(1);
                    let row_len = values.len().checked_div(rows).unwrap_or(0);
                    let map = self.permute_map(src, *tr, rows)?;
                    let mut out = vec![0f32; values.len()];
                    out.par_chunks_mut(row_len.max(1))
                        .zip(map.par_iter())
                        .for_each(|(dst, &from)| {
                            dst.copy_from_slice(&values[from * row_len..(from + 1) * row_len]);
                        });
                    values = out;
                }
                Transform::AddOne => {
                    if f16_exact {
                        values.par_iter_mut().for_each(|v| {
                            *v = quantize::f16_bits_to_f32(quantize::f32_to_f16_bits(*v + 1.0))
                        });
                    } else {
                        values.par_iter_mut().for_each(|v| *v += 1.0);
                    }
                }
                Transform::Transpose => {
                    let (a, b) = (shape[0], shape[1]);
                    let mut out = vec![0f32; values.len()];
                    out.par_chunks_mut(a.max(1))
                        .enumerate()
                        .for_each(|(j, row)| {
                            for (i, v) in row.iter_mut().enumerate() {
                                *v = values[i * b + j];
                            }
                        });
                    values = out;
                    shape.swap(0, 1);
                }
                Transform::TruncateToVocab => {
                    if let (Some(n), Some(&rows)) = (self.n_vocab, shape.first()) {
                        if n < rows {
                            let row_len = values.len() / rows.max(1);
                            values.truncate(n * row_len);
                            shape[0] = n;
                        }
                    }
                }
            }
        }
        Ok(values)
    }
}

/// Source bytes → f32 (exact for all three dtypes).
fn widen(bytes: &[u8], dtype: SourceDtype) -> Vec<f32> {
    match dtype {
        SourceDtype::F32 => bytes
            .par_chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        SourceDtype::F16 => bytes
            .par_chunks_exact(2)
            .map(|b| quantize::f16_bits_to_f32(u16::from_le_bytes([b[0], b[1]])))
            .collect(),
        SourceDtype::BF16 => bytes
            .par_chunks_exact(2)
            .map(|b| quantize::bf16_bits_to_f32(u16::from_le_bytes([b[0], b[1]])))
            .collect(),
    }
}

/// f32 values → the tensor's GGUF bytes.
fn encode(values: &[f32], t: &PlannedTensor, _f16_exact: bool) -> Result<Vec<u8>, ConvertError> {
    let err = |e: quantize::QuantizeError| ConvertError::Tensor {
        tensor: t.name.clone(),
        message: e.to_string(),
    };
    Ok(match t.ggml_type {
        GgmlType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        GgmlType::F16 => {
            let mut out = vec![0u8; values.len() * 2];
            out.par_chunks_exact_mut(2)
                .zip(values.par_iter())
                .for_each(|(o, v)| o.copy_from_slice(&quantize::f32_to_f16_bits(*v).to_le_bytes()));
            out
        }
        GgmlType::BF16 => {
            let mut out = vec![0u8; values.len() * 2];
            out.par_chunks_exact_mut(2)
                .zip(values.par_iter())
                .for_each(|(o, v)| {
                    o.copy_from_slice(&quantize::f32_to_bf16_bits(*v).to_le_bytes())
                });
            out
        }
        ty => {
            let row = t.shape.last().copied().unwrap_or(1);
            quantize::quantize(ty, values, row, t.imatrix.as_deref()).map_err(err)?
        }
    })
}
