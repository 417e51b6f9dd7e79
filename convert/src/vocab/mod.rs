//! Tokenizer → GGUF vocabulary metadata (being written).
