//! Hugging Face checkpoint → GGUF conversion.
//!
//! [`source`] reads the checkpoint (memory-mapped safetensors), [`pipeline`] plans and streams
//! the conversion using the architecture data of `arch-registry`, [`vocab`] turns the tokenizer
//! into GGUF metadata and [`general`] names the model.

pub mod error;
#[doc(hidden)]
pub mod fuzz_checks;
pub mod general;
pub mod pipeline;
pub mod source;
mod stream;
pub mod vocab;

pub use error::ConvertError;
pub use pipeline::{plan, ConvertOptions, FileType, OutType, Plan, Summary};
