//! Reader for the logits fixtures written by `fixtures/make_fixture.py` (format
//! "ggforge-logits/1": `prompt.{i}.tokens` I32 `[n]`, `prompt.{i}.logits` F32 `[n, n_vocab]`, and a
//! string `__metadata__` with `model`, `source`, `dtype`, `n_prompts`, `prompt.{i}.text`, ...).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use crate::error::RuntimeError;
use crate::model::Logits;

/// One prompt: its tokens and the reference logits at every position.
#[derive(Clone, Debug)]
pub struct FixturePrompt {
    pub text: Option<String>,
    pub tokens: Vec<u32>,
    pub logits: Logits,
}

/// A whole fixture file.
#[derive(Clone, Debug)]
pub struct LogitsFixture {
    pub path: PathBuf,
    pub metadata: HashMap<String, String>,
    pub prompts: Vec<FixturePrompt>,
}

impl LogitsFixture {
    pub fn open(path: impl AsRef<Path>) -> Result<LogitsFixture, RuntimeError> {
        let path = path.as_ref().to_path_buf();
        let err = |reason: String| RuntimeError::Fixture {
            path: path.clone(),
            reason,
        };
        let bytes = std::fs::read(&path).map_err(|e| err(e.to_string()))?;
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| err(e.to_string()))?;
        let metadata = header.metadata().clone().unwrap_or_default();
        let st = SafeTensors::deserialize(&bytes).map_err(|e| err(e.to_string()))?;
        if let Some(f) = metadata.get("format") {
            if f != "ggforge-logits/1" {
                return Err(err(format!("format '{f}', expected 'ggforge-logits/1'")));
            }
        }
        let n_prompts = match metadata.get("n_prompts") {
            Some(n) => n
                .parse::<usize>()
                .map_err(|_| err(format!("n_prompts '{n}' is not a count")))?,
            // Without the count, take prompts until one is missing.
            None => (0..)
                .take_while(|i| st.tensor(&format!("prompt.{i}.tokens")).is_ok())
                .count(),
        };
        let mut prompts = Vec::with_capacity(n_prompts);
        for i in 0..n_prompts {
            let tname = format!("prompt.{i}.tokens");
            let lname = format!("prompt.{i}.logits");
            let tv = st
                .tensor(&tname)
                .map_err(|_| err(format!("tensor '{tname}' is missing")))?;
            if tv.dtype() != Dtype::I32 || tv.shape().len() != 1 {
                return Err(err(format!(
                    "'{tname}' is {:?} {:?}, expected I32 [n]",
                    tv.dtype(),
                    tv.shape()
                )));
            }
            let tokens = tv
                .data()
                .chunks_exact(4)
                .enumerate()
                .map(|(p, b)| {
                    let v = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    u32::try_from(v).map_err(|_| err(format!("'{tname}'[{p}] = {v} is negative")))
                })
                .collect::<Result<Vec<u32>, _>>()?;
            let lv = st
                .tensor(&lname)
                .map_err(|_| err(format!("tensor '{lname}' is missing")))?;
            let shape = lv.shape();
            if lv.dtype() != Dtype::F32 || shape.len() != 2 || shape[0] != tokens.len() {
                return Err(err(format!(
                    "'{lname}' is {:?} {:?}, expected F32 [{}, n_vocab]",
                    lv.dtype(),
                    shape,
                    tokens.len()
                )));
            }
            let data = lv
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            prompts.push(FixturePrompt {
                text: metadata.get(&format!("prompt.{i}.text")).cloned(),
                tokens,
                logits: Logits {
                    n_tokens: shape[0],
                    n_vocab: shape[1],
                    data,
                },
            });
        }
        if prompts.is_empty() {
            return Err(err("no prompts".into()));
        }
        Ok(LogitsFixture {
            path,
            metadata,
            prompts,
        })
    }

    /// The `--set` config overrides the fixture was made with (JSON text, "{}" when none).
    pub fn config_overrides(&self) -> &str {
        self.metadata
            .get("config_overrides")
            .map(String::as_str)
            .unwrap_or("{}")
    }
}
