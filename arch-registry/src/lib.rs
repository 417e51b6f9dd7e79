//! arch-registry
