//! `ggforge verify`: checks a GGUF file in layers, each reported on its own.
//!
//! 1. **structure** ([`structure`]): the file parses under the hardened reader, the metadata
//!    agrees with the tensor shapes (vocabulary, embedding width, layer count, attention and
//!    feed-forward shapes), special token ids are inside the vocabulary, the pre-tokenizer is one
//!    llama.cpp knows, a chat template exists when the vocabulary has chat tokens, and no scale or
//!    weight is NaN or ±Inf.
//! 2. **tokenizer** ([`tokenizer`]): llama.cpp's tokenizer rebuilt from the file against the HF
//!    `tokenizer.json` (`--against` / `--tokenizer`) on a fixed multilingual text, and against the
//!    token ids recorded in a logits fixture (`--fixture`).
//! 3. **numbers** ([`numbers`]): the reference runtime evaluates the file and compares its logits
//!    with transformers' (a fixture) or with the HF weights converted to F32 (`--against`):
//!    NMSE, max |Δ|, top-1 agreement and KL divergence, against per-type thresholds
//!    ([`thresholds`]).
//!
//! A layer without a reference is skipped, not failed. The verdict is the worst layer: any
//! failed check fails the file (exit 1); otherwise a layer that could not run (unsupported
//! architecture, unreadable fixture) makes the run inconclusive (exit 2); otherwise it passes.

pub mod numbers;
mod render;
pub mod structure;
pub mod thresholds;
pub mod tokenizer;

use std::path::{Path, PathBuf};

use serde::Serialize;

pub use thresholds::{ThresholdOverrides, Thresholds};

/// The outcome of one check or layer. Ordered by severity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Not applicable or no reference given.
    Skip,
    Pass,
    /// Suspicious but not wrong (e.g. chat tokens without a chat template).
    Warn,
    /// Could not run: the verdict is inconclusive.
    Error,
    /// The file is wrong.
    Fail,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Skip => "skip",
            Status::Pass => "ok",
            Status::Warn => "warn",
            Status::Error => "ERROR",
            Status::Fail => "FAIL",
        }
    }
}

/// One named check with a one-line explanation of what was found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
}

impl Check {
    pub fn new(name: impl Into<String>, status: Status, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status,
            detail: detail.into(),
        }
    }
}

/// One layer: its checks, and the measured numbers when it is the numbers layer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Layer {
    pub name: &'static str,
    pub status: Status,
    pub checks: Vec<Check>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub numbers: Option<numbers::NumbersResult>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tokenizer_cases: Vec<tokenizer::CaseReport>,
}

impl Layer {
    pub fn new(name: &'static str) -> Layer {
        Layer {
            name,
            status: Status::Skip,
            checks: Vec::new(),
            numbers: None,
            tokenizer_cases: Vec::new(),
        }
    }

    pub fn push(&mut self, check: Check) {
        self.checks.push(check);
        self.status = layer_status(&self.checks);
    }

    /// A layer that did not run, with the reason.
    pub fn skipped(name: &'static str, reason: impl Into<String>) -> Layer {
        let mut l = Layer::new(name);
        l.push(Check::new("not run", Status::Skip, reason));
        l
    }
}

/// Skip when every check skipped; otherwise the worst of the others.
fn layer_status(checks: &[Check]) -> Status {
    checks
        .iter()
        .map(|c| c.status)
        .filter(|s| *s != Status::Skip)
        .max()
        .unwrap_or(Status::Skip)
}

/// Everything `ggforge verify` reports.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VerifyReport {
    pub file: PathBuf,
    pub architecture: Option<String>,
    /// The file type (`general.file_type` name, or the dominant tensor type when absent).
    pub file_type: Option<String>,
    pub layers: Vec<Layer>,
    pub verdict: Status,
    pub exit_code: u8,
}

impl VerifyReport {
    fn finish(
        file: &Path,
        architecture: Option<String>,
        file_type: Option<String>,
        layers: Vec<Layer>,
    ) -> VerifyReport {
        let worst = layers
            .iter()
            .map(|l| l.status)
            .max()
            .unwrap_or(Status::Skip);
        let (verdict, exit_code) = match worst {
            Status::Fail => (Status::Fail, 1),
            Status::Error => (Status::Error, 2),
            Status::Warn => (Status::Warn, 0),
            Status::Pass | Status::Skip => (Status::Pass, 0),
        };
        VerifyReport {
            file: file.to_path_buf(),
            architecture,
            file_type,
            layers,
            verdict,
            exit_code,
        }
    }

    /// The human-readable report (what `ggforge verify` prints without `--json`).
    pub fn render_text(&self) -> String {
        render::text(self)
    }

    pub fn render_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}

/// What to verify against.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// A logits fixture written by `fixtures/make_fixture.py`.
    pub fixture: Option<PathBuf>,
    /// An HF model folder: its tokenizer.json is the tokenizer reference and its weights,
    /// converted to F32 by ggforge, the numbers reference.
    pub against: Option<PathBuf>,
    /// An HF folder or tokenizer.json for the tokenizer layer only (default: `against`).
    pub tokenizer: Option<PathBuf>,
    /// Threshold changes for the numbers layer.
    pub thresholds: ThresholdOverrides,
    /// Skip the NaN/Inf scan of every tensor (it reads the whole file).
    pub no_scan: bool,
    /// Where `--against` writes its temporary F32 conversion (default: the system temp dir).
    pub work_dir: Option<PathBuf>,
}

/// Runs every layer on `path`.
pub fn verify(path: &Path, opts: &Options) -> VerifyReport {
    let st = structure::run(path, !opts.no_scan);
    let architecture = st.architecture.clone();
    let file_type = st.file_type.as_ref().map(|t| t.name.clone());
    let mut layers = vec![st.layer];
    let Some(file) = st.file else {
        layers.push(Layer::skipped("tokenizer", "the file could not be read"));
        layers.push(Layer::skipped("numbers", "the file could not be read"));
        return VerifyReport::finish(path, architecture, file_type, layers);
    };
    let fixture = opts
        .fixture
        .as_ref()
        .map(crate::fixture::LogitsFixture::open);
    layers.push(tokenizer::run(&file, opts, fixture.as_ref()));
    layers.push(numbers::run(
        &file,
        st.file_type.as_ref(),
        opts,
        fixture.as_ref(),
    ));
    VerifyReport::finish(path, architecture, file_type, layers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_is_the_worst_layer() {
        let mk = |s: Status| {
            let mut l = Layer::new("x");
            l.push(Check::new("c", s, ""));
            l
        };
        let r = VerifyReport::finish(
            Path::new("f"),
            None,
            None,
            vec![mk(Status::Pass), mk(Status::Skip)],
        );
        assert_eq!((r.verdict, r.exit_code), (Status::Pass, 0));
        let r = VerifyReport::finish(
            Path::new("f"),
            None,
            None,
            vec![mk(Status::Error), mk(Status::Warn)],
        );
        assert_eq!((r.verdict, r.exit_code), (Status::Error, 2));
        let r = VerifyReport::finish(
            Path::new("f"),
            None,
            None,
            vec![mk(Status::Error), mk(Status::Fail)],
        );
        assert_eq!((r.verdict, r.exit_code), (Status::Fail, 1));
        let r = VerifyReport::finish(Path::new("f"), None, None, vec![mk(Status::Warn)]);
        assert_eq!((r.verdict, r.exit_code), (Status::Warn, 0));
    }

    #[test]
    fn a_layer_of_skips_is_skipped() {
        let mut l = Layer::new("x");
        l.push(Check::new("a", Status::Skip, ""));
        assert_eq!(l.status, Status::Skip);
        l.push(Check::new("b", Status::Pass, ""));
        assert_eq!(l.status, Status::Pass);
    }
}
