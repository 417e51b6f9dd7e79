//! ggforge's reference runtime: evaluates a GGUF file the way llama.cpp does, in plain Rust, so
//! converted and quantized files can be checked against Hugging Face transformers' logits
//! without llama.cpp or Python.
//!
//! - [`Model::load`] reads hyperparameters only from GGUF metadata (with llama.cpp's defaults)
//!   and keeps weights in their GGUF encoding; [`Model::forward`] returns logits for every
//!   position of a token sequence.
//! - [`fixture::LogitsFixture`] reads the reference logits written by `fixtures/make_fixture.py`.
//! - [`compare()`] (module [`mod@compare`]) computes NMSE, max |Δ|, top-1 agreement and KL
//!   divergence statistics.
//!
//! Families: llama (Llama 1–3, Mistral, SmolLM2), qwen2, qwen3, gemma2, gemma3, phi3, gpt2.

mod attention;
pub mod compare;
pub mod error;
pub mod fixture;
pub mod hparams;
mod matmul;
pub mod model;
mod ops;
mod qdot;
pub mod rope;
pub mod tokcheck;
pub mod verify;

pub use compare::{compare, Comparison, Report};
pub use error::RuntimeError;
pub use fixture::{FixturePrompt, LogitsFixture};
pub use hparams::{Arch, HParams};
pub use model::{Logits, Model};
