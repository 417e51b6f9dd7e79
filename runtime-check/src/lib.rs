//! runtime-check
