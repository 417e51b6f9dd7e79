//! Hugging Face checkpoint → GGUF conversion.

pub mod vocab;
