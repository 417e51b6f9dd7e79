//! The numbers layer: run the GGUF in the reference runtime and compare its logits with a
//! reference, position by position.
//!
//! References:
//! - `--fixture F`: transformers' float32 logits recorded by `fixtures/make_fixture.py` for a
//!   few prompts (the tokens are in the fixture). This is independent of ggforge: a converter
//!   bug in a tensor's layout shows.
//! - `--against HF_DIR`: the HF weights themselves, converted to a temporary F32 GGUF by
//!   ggforge's converter and run by the same runtime. No Python needed, but the reference goes
//!   through the same converter, so a layout bug in the converter (a missing Q/K permutation,
//!   a wrong tensor mapping) is in both files and cancels out. It does catch everything that
//!   happens after conversion (quantization, hand edits, corrupted downloads) and metadata the
//!   converter did not write into the file under test. Prefer fixtures for converter changes.

use std::path::{Path, PathBuf};

use gguf::{GgufFile, GgufModel};
use serde::Serialize;

use super::thresholds::{defaults, top1_required_matches, FileTypeInfo, Thresholds, TypeClass};
use super::{Check, Layer, Options, Status};
use crate::compare::{Comparison, Report};
use crate::error::RuntimeError;
use crate::fixture::LogitsFixture;
use crate::model::Model;
use crate::tokcheck::{GgufTokenizer, HfTokenizer};

/// Prompts for `--against` (tokenized by the GGUF's own llama.cpp tokenizer, BOS included when
/// the file asks for it): English prose, code, digits and non-Latin text.
pub const AGAINST_PROMPTS: &[&str] = &[
    "The quick brown fox jumps over the lazy dog. To build the project, run cmake with the release configuration and then copy the binaries.",
    "def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n\nprint(fibonacci(30))  # 832040\n",
    "In 1969, 3 astronauts flew 384,400 km to the Moon. Привет, мир! 你好，世界！ こんにちは。",
];

/// Two candidates whose reference logits differ by at most this much (a probability ratio of
/// e^0.01 ≈ 1.01) are a tie: picking either is not a disagreement. Rounding alone flips such
/// positions (F16 and BF16 files of SmolLM2 flip 1 and 3 of 277 positions, all with reference
/// gaps of 0.0014 to 0.0093 logits), so an exact-argmax rule would fail correct files.
pub const TIE_TOLERANCE: f32 = 0.01;

/// Counts argmax agreement with near-ties excused.
#[derive(Default)]
struct TopOne {
    positions: usize,
    agree: usize,
    ties: usize,
}

impl TopOne {
    fn add(&mut self, reference: &crate::model::Logits, test: &crate::model::Logits) {
        if reference.n_tokens != test.n_tokens || reference.n_vocab != test.n_vocab {
            return;
        }
        for t in 0..reference.n_tokens {
            let (r, q) = (reference.row(t), test.row(t));
            let (ar, aq) = (crate::compare::argmax(r), crate::compare::argmax(q));
            self.positions += 1;
            if ar == aq {
                self.agree += 1;
            } else if r[ar] - r[aq] <= TIE_TOLERANCE {
                self.ties += 1;
            }
        }
    }
}

/// The measured agreement and the bounds it was judged by.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NumbersResult {
    /// What the logits were compared with.
    pub reference: String,
    pub n_prompts: usize,
    pub n_positions: usize,
    pub nmse: f64,
    pub max_position_nmse: f64,
    pub max_abs_diff: f64,
    /// Exact argmax agreement.
    pub top1: f64,
    pub top1_matches: usize,
    /// Disagreements where the reference's two candidates are within [`TIE_TOLERANCE`].
    pub top1_near_ties: usize,
    /// Argmax agreement counting near-ties as agreement; `min_top1` bounds this one.
    pub top1_tie_aware: f64,
    pub mean_kld: f64,
    pub p99_kld: f64,
    pub p999_kld: f64,
    pub max_kld: f64,
    pub thresholds: Thresholds,
}

impl NumbersResult {
    fn new(
        reference: String,
        n_prompts: usize,
        r: &Report,
        top: &TopOne,
        thresholds: Thresholds,
    ) -> Self {
        let n = top.positions.max(1) as f64;
        NumbersResult {
            reference,
            n_prompts,
            n_positions: r.n_positions,
            nmse: r.nmse,
            max_position_nmse: r.max_position_nmse,
            max_abs_diff: r.max_abs_diff,
            top1: r.top1,
            top1_matches: r.top1_matches,
            top1_near_ties: top.ties,
            top1_tie_aware: (top.agree + top.ties) as f64 / n,
            mean_kld: r.mean_kld,
            p99_kld: r.p99_kld,
            p999_kld: r.p999_kld,
            max_kld: r.max_kld,
            thresholds,
        }
    }

    /// (metric name, value, bound, higher-is-better) rows, for the checks and the table.
    pub fn rows(&self) -> Vec<(&'static str, f64, Option<f64>, bool)> {
        let t = &self.thresholds;
        vec![
            ("NMSE", self.nmse, t.max_nmse, false),
            ("max |Δ|", self.max_abs_diff, t.max_abs_diff, false),
            ("top-1 agreement", self.top1_tie_aware, t.min_top1, true),
            ("mean KLD", self.mean_kld, t.max_mean_kld, false),
            ("p99 KLD", self.p99_kld, t.max_p99_kld, false),
            ("p99.9 KLD", self.p999_kld, t.max_p999_kld, false),
        ]
    }
}

/// A load or evaluation error: the file is wrong (Fail) or the runtime cannot evaluate it
/// (Error: the verdict is inconclusive).
fn runtime_status(e: &RuntimeError) -> Status {
    match e {
        RuntimeError::UnsupportedArchitecture(_) | RuntimeError::EmptyInput => Status::Error,
        RuntimeError::TooManyPositions { .. } | RuntimeError::Fixture { .. } => Status::Error,
        // llama.cpp refuses files with tensors its graph does not use; anything else
        // unimplemented is the runtime's limitation.
        RuntimeError::Unsupported { feature, .. } => {
            if *feature == "tensors outside the graph" {
                Status::Fail
            } else {
                Status::Error
            }
        }
        _ => Status::Fail,
    }
}

/// Runs the numbers layer. `fixture` is the opened `--fixture`, if any.
pub fn run(
    file: &dyn GgufModel,
    ft: Option<&FileTypeInfo>,
    opts: &Options,
    fixture: Option<&Result<LogitsFixture, RuntimeError>>,
) -> Layer {
    if fixture.is_none() && opts.against.is_none() {
        return Layer::skipped(
            "numbers",
            "no reference: pass --fixture FILE or --against HF_DIR",
        );
    }
    let mut layer = Layer::new("numbers");
    let ft = ft.cloned().unwrap_or(FileTypeInfo {
        name: "F32".into(),
        ftype: None,
        class: TypeClass::Float,
        guessed: true,
    });
    let thresholds = defaults(&ft).with(&opts.thresholds);
    let model = match Model::load(file) {
        Ok(m) => m,
        Err(e) => {
            layer.push(Check::new("load", runtime_status(&e), e.to_string()));
            return layer;
        }
    };
    layer.push(Check::new(
        "load",
        Status::Pass,
        format!(
            "reference runtime: {} graph, {} layers, vocab {}",
            model.hp.arch.name(),
            model.hp.n_layer,
            model.n_vocab
        ),
    ));

    if fixture.is_some() && opts.against.is_some() {
        layer.push(Check::new(
            "--against",
            Status::Skip,
            "the fixture is the numbers reference; the HF folder serves the tokenizer layer",
        ));
    }
    let outcome = match (fixture, &opts.against) {
        (Some(fx), _) => against_fixture(&model, fx, &mut layer),
        (None, Some(dir)) => against_hf(file, &model, dir, opts, &mut layer),
        (None, None) => None,
    };
    let Some((reference, n_prompts, report, top)) = outcome else {
        return layer;
    };
    let result = NumbersResult::new(reference, n_prompts, &report, &top, thresholds);
    for (name, value, bound, higher_better) in result.rows() {
        let Some(b) = bound else { continue };
        let required = top1_required_matches(result.n_positions, b);
        let ok = if name == "top-1 agreement" {
            (result.top1_matches + result.top1_near_ties) as f64 >= required - 1e-9
        } else if higher_better {
            value >= b
        } else {
            value <= b
        };
        let rel = if higher_better { "≥" } else { "≤" };
        let detail = if name == "top-1 agreement" {
            let ties = if result.top1_near_ties > 0 {
                format!(
                    " + {} near-tie{} (reference gap ≤ {TIE_TOLERANCE} logits)",
                    result.top1_near_ties,
                    if result.top1_near_ties == 1 { "" } else { "s" }
                )
            } else {
                String::new()
            };
            let slack = if b < 1.0 {
                format!(
                    " (at least {:.1} of {} positions, allowing 2 binomial s.d. of sampling noise)",
                    required, result.n_positions
                )
            } else {
                String::new()
            };
            format!(
                "{}/{} positions agree{ties}: {:.2}%, required {rel} {:.2}%{slack}",
                result.top1_matches,
                result.n_positions,
                100.0 * value,
                100.0 * b
            )
        } else {
            format!("{value:.3e}, required {rel} {b:.1e}")
        };
        layer.push(Check::new(
            name,
            if ok { Status::Pass } else { Status::Fail },
            detail,
        ));
    }
    layer.numbers = Some(result);
    layer
}

fn against_fixture(
    model: &Model<'_>,
    fx: &Result<LogitsFixture, RuntimeError>,
    layer: &mut Layer,
) -> Option<(String, usize, Report, TopOne)> {
    let fx = match fx {
        Ok(f) => f,
        Err(e) => {
            layer.push(Check::new("fixture", Status::Error, e.to_string()));
            return None;
        }
    };
    let overrides = fx.config_overrides();
    if overrides != "{}" {
        layer.push(Check::new(
            "fixture config",
            Status::Warn,
            format!("the fixture was made with config overrides {overrides}; the GGUF must carry the same change"),
        ));
    }
    let mut cmp = Comparison::new();
    let mut top = TopOne::default();
    for (i, p) in fx.prompts.iter().enumerate() {
        let logits = match model.forward(&p.tokens) {
            Ok(l) => l,
            Err(e) => {
                layer.push(Check::new(
                    format!("prompt {i}"),
                    runtime_status(&e),
                    e.to_string(),
                ));
                return None;
            }
        };
        top.add(&p.logits, &logits);
        if let Err(e) = cmp.add(&p.logits, &logits) {
            layer.push(Check::new(
                "logit width",
                Status::Fail,
                format!("prompt {i}: {e} (the GGUF's vocabulary does not match the model the fixture was made from)"),
            ));
            return None;
        }
    }
    let source = fx
        .metadata
        .get("source")
        .map(String::as_str)
        .unwrap_or("unknown source");
    let model_name = fx.metadata.get("model").map(String::as_str).unwrap_or("?");
    let reference = format!(
        "fixture {} ({model_name}, {source}, {} logits)",
        fx.path.display(),
        fx.metadata.get("dtype").map(String::as_str).unwrap_or("?")
    );
    layer.push(Check::new(
        "reference",
        Status::Pass,
        format!(
            "{reference}: {} prompts, {} positions",
            fx.prompts.len(),
            cmp.report().n_positions
        ),
    ));
    Some((reference, fx.prompts.len(), cmp.report(), top))
}

/// Text → token ids for the `--against` prompts.
type Tokenize = Box<dyn Fn(&str) -> Option<Vec<u32>>>;

/// Removes the temporary conversion however the layer ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Converts the HF folder `dir` to an F32 GGUF inside `tmp` with ggforge's own converter and
/// opens it: the reference side of `--against`.
fn convert_reference(dir: &Path, tmp: &Path) -> Result<GgufFile, String> {
    std::fs::create_dir_all(tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    let out = tmp.join("reference-f32.gguf");
    convert::plan(
        dir,
        &convert::ConvertOptions {
            outtype: convert::OutType::F32,
            outfile: Some(out.clone()),
            ..Default::default()
        },
    )
    .and_then(|plan| plan.write(&|_| {}))
    .map_err(|e| e.to_string())?;
    GgufFile::open(&out).map_err(|e| e.to_string())
}

fn against_hf(
    file: &dyn GgufModel,
    model: &Model<'_>,
    dir: &Path,
    opts: &Options,
    layer: &mut Layer,
) -> Option<(String, usize, Report, TopOne)> {
    let base = opts.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = TempDir(base.join(format!("ggforge-verify-{}-{nanos}", std::process::id())));
    let ref_file = match convert_reference(dir, &tmp.0) {
        Ok(f) => f,
        Err(e) => {
            layer.push(Check::new("convert reference", Status::Error, e));
            return None;
        }
    };
    let ref_model = match Model::load(&ref_file) {
        Ok(m) => m,
        Err(e) => {
            layer.push(Check::new(
                "convert reference",
                Status::Error,
                e.to_string(),
            ));
            return None;
        }
    };
    // Tokens: the file's own llama.cpp tokenizer, else the HF tokenizer.json.
    let tokenize: Tokenize = match GgufTokenizer::from_metadata(file.metadata()) {
        Ok(t) => Box::new(move |s| t.encode(s, true).ok()),
        Err(_) => match HfTokenizer::open(dir) {
            Ok(h) => Box::new(move |s| h.encode(s, true).ok().map(|e| e.ids)),
            Err(e) => {
                layer.push(Check::new(
                    "prompts",
                    Status::Error,
                    format!("no tokenizer for the prompts: {e}"),
                ));
                return None;
            }
        },
    };
    let mut cmp = Comparison::new();
    let mut top = TopOne::default();
    for (i, text) in AGAINST_PROMPTS.iter().enumerate() {
        let Some(ids) = tokenize(text) else {
            layer.push(Check::new(
                format!("prompt {i}"),
                Status::Error,
                "cannot tokenize the prompt",
            ));
            return None;
        };
        let (r, t) = match (ref_model.forward(&ids), model.forward(&ids)) {
            (Ok(r), Ok(t)) => (r, t),
            (Err(e), _) => {
                layer.push(Check::new(
                    format!("prompt {i}"),
                    Status::Error,
                    format!("reference: {e}"),
                ));
                return None;
            }
            (_, Err(e)) => {
                layer.push(Check::new(
                    format!("prompt {i}"),
                    runtime_status(&e),
                    e.to_string(),
                ));
                return None;
            }
        };
        top.add(&r, &t);
        if let Err(e) = cmp.add(&r, &t) {
            layer.push(Check::new(
                "logit width",
                Status::Fail,
                format!("prompt {i}: {e} (the GGUF's vocabulary does not match the HF model)"),
            ));
            return None;
        }
    }
    let reference = format!(
        "HF weights {} converted to F32 by ggforge (same converter: tensor-layout bugs cancel out)",
        dir.display()
    );
    layer.push(Check::new(
        "reference",
        Status::Pass,
        format!(
            "{reference}: {} prompts, {} positions",
            AGAINST_PROMPTS.len(),
            cmp.report().n_positions
        ),
    ));
    Some((reference, AGAINST_PROMPTS.len(), cmp.report(), top))
}
