//! The hostile-file suite: every file under fixtures/hostile/gguf (written by
//! fixtures/hostile/make_hostile.py, each named for the class of bug it attacks) must be rejected
//! with exactly the error kind listed here, through both `Header::parse` and `GgufFile::open`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use gguf::{GgufFile, Header, ParseError};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/hostile/gguf")
}

type Check = fn(&ParseError) -> bool;

/// File stem → the error it must produce.
fn expectations() -> Vec<(&'static str, Check)> {
    use ParseError as E;
    vec![
        ("bad_magic", |e| matches!(e, E::BadMagic(m) if m == b"GGUX")),
        ("truncated_magic", |e| *e == E::Truncated("magic")),
        ("version_1", |e| *e == E::UnsupportedVersion(1)),
        ("version_4", |e| *e == E::UnsupportedVersion(4)),
        ("version_byteswapped", |e| {
            *e == E::WrongEndianness(0x0300_0000)
        }),
        ("truncated_header", |e| *e == E::Truncated("metadata count")),
        ("kv_count_huge", |e| {
            *e == E::CountTooLarge {
                what: "metadata",
                count: 1 << 63,
            }
        }),
        ("tensor_count_huge", |e| {
            *e == E::CountTooLarge {
                what: "tensor",
                count: u64::MAX,
            }
        }),
        ("tensor_count_exceeds_rest", |e| {
            *e == E::CountTooLarge {
                what: "tensor",
                count: 5,
            }
        }),
        ("key_length_past_eof", |e| {
            *e == E::StringTooLong {
                what: "metadata key",
                len: 1000,
            }
        }),
        ("key_length_u64_max", |e| {
            *e == E::StringTooLong {
                what: "metadata key",
                len: u64::MAX,
            }
        }),
        ("key_empty", |e| *e == E::EmptyKey),
        ("key_duplicate", |e| {
            *e == E::DuplicateKey("general.architecture".into())
        }),
        ("key_invalid_utf8", |e| *e == E::InvalidUtf8("metadata key")),
        ("value_type_unknown", |e| {
            *e == E::BadValueType {
                key: "k".into(),
                type_id: 13,
            }
        }),
        ("value_truncated", |e| *e == E::Truncated("metadata value")),
        ("string_value_past_eof", |e| {
            *e == E::StringTooLong {
                what: "metadata value",
                len: 4096,
            }
        }),
        ("array_of_arrays", |e| *e == E::NestedArray("k".into())),
        ("array_element_type_unknown", |e| {
            *e == E::BadValueType {
                key: "k".into(),
                type_id: 99,
            }
        }),
        ("array_length_past_eof", |e| {
            *e == E::ArrayTooLong {
                key: "k".into(),
                len: 1000,
            }
        }),
        ("array_length_over_cap", |e| {
            *e == E::ArrayTooLong {
                key: "k".into(),
                len: 1 << 62,
            }
        }),
        ("string_array_past_eof", |e| {
            *e == E::StringTooLong {
                what: "array string",
                len: 1 << 40,
            }
        }),
        ("alignment_zero", |e| *e == E::BadAlignment(0)),
        ("alignment_not_power_of_two", |e| *e == E::BadAlignment(48)),
        ("alignment_huge", |e| *e == E::BadAlignment(1 << 31)),
        ("alignment_wrong_type", |e| {
            *e == E::WrongKeyType {
                key: "general.alignment".into(),
                expected: "u32",
                found: "u64",
            }
        }),
        ("tensor_name_empty", |e| *e == E::EmptyTensorName),
        ("tensor_name_too_long", |e| {
            *e == E::TensorNameTooLong("t".repeat(64))
        }),
        ("tensor_name_duplicate", |e| {
            *e == E::DuplicateTensor("w".into())
        }),
        ("tensor_info_truncated", |e| {
            *e == E::Truncated("tensor dimension")
        }),
        ("n_dims_zero", |e| {
            *e == E::BadDimCount {
                tensor: "w".into(),
                n_dims: 0,
            }
        }),
        ("n_dims_five", |e| {
            *e == E::BadDimCount {
                tensor: "w".into(),
                n_dims: 5,
            }
        }),
        ("dim_zero", |e| {
            *e == E::BadDimension {
                tensor: "w".into(),
                dim: 0,
            }
        }),
        ("dim_negative", |e| {
            *e == E::BadDimension {
                tensor: "w".into(),
                dim: -4,
            }
        }),
        ("element_count_overflow", |e| {
            *e == E::SizeOverflow { tensor: "w".into() }
        }),
        ("byte_size_overflow", |e| {
            *e == E::SizeOverflow { tensor: "w".into() }
        }),
        (
            "exabyte_tensor",
            |e| matches!(e, E::DataPastEof { tensor, end, .. } if tensor == "w" && *end > 1 << 62),
        ),
        ("offset_wrap", |e| {
            *e == E::SizeOverflow { tensor: "b".into() }
        }),
        ("row_not_block_multiple", |e| {
            *e == E::RowNotBlockMultiple {
                tensor: "w".into(),
                row_len: 33,
                block_size: 32,
            }
        }),
        ("type_id_removed", |e| {
            *e == E::UnknownType {
                tensor: "w".into(),
                type_id: 4,
            }
        }),
        ("type_id_huge", |e| {
            *e == E::UnknownType {
                tensor: "w".into(),
                type_id: u32::MAX,
            }
        }),
        ("offset_misaligned", |e| {
            *e == E::MisalignedOffset {
                tensor: "b".into(),
                offset: 40,
                alignment: 32,
            }
        }),
        ("offset_overlapping", |e| {
            *e == E::OverlappingTensors {
                tensor: "b".into(),
                offset: 32,
                previous_end: 64,
            }
        }),
        ("offset_out_of_order", |e| {
            *e == E::OffsetOutOfOrder {
                tensor: "c".into(),
                offset: 0,
                previous: 32,
            }
        }),
        ("offset_gap", |e| {
            *e == E::OffsetGap {
                tensor: "b".into(),
                offset: 64,
                expected: 32,
            }
        }),
        ("offset_first_nonzero", |e| {
            *e == E::OffsetGap {
                tensor: "a".into(),
                offset: u64::MAX - 31,
                expected: 0,
            }
        }),
        (
            "data_past_eof",
            |e| matches!(e, E::DataPastEof { tensor, end, file_len } if tensor == "w" && *end == *file_len + 8),
        ),
        (
            "data_section_missing",
            |e| matches!(e, E::DataPastEof { tensor, .. } if tensor == "w"),
        ),
        ("vocab_tokens_not_strings", |e| {
            *e == E::WrongKeyType {
                key: "tokenizer.ggml.tokens".into(),
                expected: "arr[str]",
                found: "arr[i32]",
            }
        }),
        ("vocab_scores_short", |e| {
            *e == E::VocabLengthMismatch {
                key: "tokenizer.ggml.scores".into(),
                len: 3,
                n_vocab: 4,
            }
        }),
        ("vocab_scores_wrong_type", |e| {
            *e == E::WrongKeyType {
                key: "tokenizer.ggml.scores".into(),
                expected: "arr[f32]",
                found: "arr[str]",
            }
        }),
        ("vocab_token_type_long", |e| {
            *e == E::VocabLengthMismatch {
                key: "tokenizer.ggml.token_type".into(),
                len: 5,
                n_vocab: 4,
            }
        }),
        ("vocab_token_type_wrong_type", |e| {
            *e == E::WrongKeyType {
                key: "tokenizer.ggml.token_type".into(),
                expected: "arr[i32]",
                found: "arr[u8]",
            }
        }),
        ("vocab_token_type_invalid", |e| {
            *e == E::BadTokenType { index: 2, value: 7 }
        }),
        ("vocab_scores_without_tokens", |e| {
            *e == E::MissingTokenList {
                key: "tokenizer.ggml.scores".into(),
            }
        }),
        ("vocab_special_id_out_of_range", |e| {
            *e == E::SpecialTokenOutOfRange {
                key: "tokenizer.ggml.bos_token_id".into(),
                id: 4,
                n_vocab: 4,
            }
        }),
        ("vocab_special_id_huge", |e| {
            *e == E::SpecialTokenOutOfRange {
                key: "tokenizer.ggml.eos_token_id".into(),
                id: u32::MAX as u64,
                n_vocab: 4,
            }
        }),
        ("vocab_special_id_wrong_type", |e| {
            *e == E::WrongKeyType {
                key: "tokenizer.ggml.padding_token_id".into(),
                expected: "u32",
                found: "i32",
            }
        }),
        ("vocab_merges_not_strings", |e| {
            *e == E::WrongKeyType {
                key: "tokenizer.ggml.merges".into(),
                expected: "arr[str]",
                found: "arr[u32]",
            }
        }),
        ("vocab_model_not_string", |e| {
            *e == E::WrongKeyType {
                key: "tokenizer.ggml.model".into(),
                expected: "str",
                found: "u32",
            }
        }),
        ("vocab_add_bos_not_bool", |e| {
            *e == E::WrongKeyType {
                key: "tokenizer.ggml.add_bos_token".into(),
                expected: "bool",
                found: "u8",
            }
        }),
        ("vocab_charsmap_overflow", |e| {
            *e == E::BadCharsmap {
                len: 6,
                blob_size: u32::MAX as u64,
            }
        }),
    ]
}

fn on_disk() -> BTreeSet<String> {
    std::fs::read_dir(dir())
        .expect("fixtures/hostile/gguf exists")
        .map(|e| {
            let p = e.expect("readable dir entry").path();
            p.file_stem()
                .expect("file name")
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

#[test]
fn suite_is_complete_and_large_enough() {
    let listed: BTreeSet<String> = expectations().iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(listed.len(), expectations().len(), "duplicate expectation");
    assert_eq!(
        on_disk(),
        listed,
        "every hostile file needs an expectation, and every expectation a file"
    );
    assert!(listed.len() >= 40);
}

#[test]
fn every_hostile_file_is_rejected_with_its_error() {
    let mut failures = Vec::new();
    for (name, check) in expectations() {
        let path = dir().join(format!("{name}.gguf"));
        let bytes = std::fs::read(&path).expect("fixture readable");
        // Hostile files are tiny: their danger is in what they claim, not their size.
        assert!(bytes.len() < 4096, "{name} is {} bytes", bytes.len());
        match Header::parse(&bytes) {
            Ok(_) => failures.push(format!("{name}: accepted")),
            Err(e) if !check(&e) => failures.push(format!("{name}: wrong error {e:?}")),
            Err(_) => {}
        }
        match GgufFile::open(&path) {
            Ok(_) => failures.push(format!("{name}: GgufFile::open accepted it")),
            Err(e) => {
                let ok = e.parse_error().is_some_and(check);
                // The message names the file, for the CLI's one-line error.
                let named = e.to_string().contains(&format!("{name}.gguf"));
                if !ok || !named {
                    failures.push(format!("{name}: GgufFile::open gave {e}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn vocab_files_pass_the_container_checks() {
    // The tokenizer cases are well-formed containers: only the vocabulary check rejects them.
    for (name, _) in expectations() {
        if !name.starts_with("vocab_") {
            continue;
        }
        let bytes = std::fs::read(dir().join(format!("{name}.gguf"))).expect("fixture");
        assert!(Header::parse_container(&bytes).is_ok(), "{name}");
    }
}
