//! `--split-max-size` / `--split-max-tensors` / `--no-tensor-first-split`: shards byte-identical
//! to llama.cpp's converter's, read back as one model, and mergeable by `llama-gguf-split`.

mod common;

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use common::{convert, root, stderr, Scratch};
use gguf::split::SplitModel;
use gguf::{GgufFile, Metadata, TensorDesc, Value};

/// (output name, options, [(file, sha256)]).
type Case = (
    &'static str,
    &'static [&'static str],
    &'static [(&'static str, &'static str)],
);

/// sha256 of every file `convert_hf_to_gguf.py` writes for the tiny Llama 3 fixture with these
/// options (run through fixtures/tiny/gen.py's `convert` wrapper):
/// `--outtype f16 --split-max-tensors 7`, `--outtype q8_0 --split-max-size 200K`,
/// `--outtype f16 --split-max-tensors 10 --no-tensor-first-split`. With
/// `--split-max-tensors 100` it writes one plain file, identical to fixtures' f16.gguf.
const REFERENCE: &[Case] = &[
    (
        "Tiny-F16.gguf",
        &["--outtype", "f16", "--split-max-tensors", "7"],
        &[
            (
                "Tiny-F16-00001-of-00004.gguf",
                "e8fb5de77ef744c539233fb61bb02e29e3fd4214cab1900399aee997c7536afe",
            ),
            (
                "Tiny-F16-00002-of-00004.gguf",
                "7978341263a41c2d9c5af00cedc80c59afce8875edadb8ae9d672c0f4ec9a5b9",
            ),
            (
                "Tiny-F16-00003-of-00004.gguf",
                "e99249bddb882483e32caad3873e537d25b044dc57a455b6a6835f20e88fa192",
            ),
            (
                "Tiny-F16-00004-of-00004.gguf",
                "3e6f6099f657cd87a0edd5bebcc9e484d8016e0152285cf0b0a97e5d17bd41a9",
            ),
        ],
    ),
    (
        "Tiny-Q8_0.gguf",
        &["--outtype", "q8_0", "--split-max-size", "200K"],
        &[
            (
                "Tiny-Q8_0-00001-of-00003.gguf",
                "7dd89e743b0fe158a53acebf3f9e605a6a937e9dfe020b4ba8b1b06175ece0b5",
            ),
            (
                "Tiny-Q8_0-00002-of-00003.gguf",
                "c6eab87a1361c2f4d89a453d4505616812fd1038afde2819e06e33c918872299",
            ),
            (
                "Tiny-Q8_0-00003-of-00003.gguf",
                "9ae55a9922f218027a2c97a1e7b0e74b720e6ad9da1dbba12ccca9fd9a25a8e8",
            ),
        ],
    ),
    (
        "Tiny-F16.gguf",
        &[
            "--outtype",
            "f16",
            "--split-max-tensors",
            "10",
            "--no-tensor-first-split",
        ],
        &[
            (
                "Tiny-F16-00001-of-00004.gguf",
                "074076ac541461c1ac510c02e5303eefcc4f673e69f72c52d6a9c6c345b71eca",
            ),
            (
                "Tiny-F16-00002-of-00004.gguf",
                "a92ba04e53d6379516317e03b2764da859c94b752af29181542509a1354b97b0",
            ),
            (
                "Tiny-F16-00003-of-00004.gguf",
                "6f02afdc49fd0c25ebd3d2b34f6d2bf9cc5b72c17609e18765691d0ec51bc045",
            ),
            (
                "Tiny-F16-00004-of-00004.gguf",
                "c0065f4103b52d205b1db078e44de880ce2844b8d9fbfd6f2e12eaf10dd105b3",
            ),
        ],
    ),
];

#[test]
fn shards_are_byte_identical_to_llama_cpp() {
    for (i, (name, args, files)) in REFERENCE.iter().enumerate() {
        let s = Scratch::new(&format!("ref{i}"));
        let o = convert(&s.0.join(name), args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        let want: Vec<String> = files.iter().map(|(f, _)| f.to_string()).collect();
        assert_eq!(s.listing(), want, "{args:?}");
        for (f, sha) in files.iter() {
            let bytes = fs::read(s.0.join(f)).unwrap();
            assert_eq!(hub::hash::sha256_hex(&bytes), *sha, "{args:?} {f}");
        }
    }
}

#[test]
fn limits_that_fit_one_file_write_a_plain_file() {
    let s = Scratch::new("one");
    let o = convert(
        &s.0.join("Tiny-F16.gguf"),
        &["--outtype", "f16", "--split-max-tensors", "100"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("not splitting"), "{}", stderr(&o));
    assert_eq!(s.listing(), vec!["Tiny-F16.gguf"]);
    assert_eq!(
        fs::read(s.0.join("Tiny-F16.gguf")).unwrap(),
        fs::read(root().join("../fixtures/tiny/llama3/llamacpp/f16.gguf")).unwrap()
    );
}

#[test]
fn any_shard_opens_the_whole_model() {
    let s = Scratch::new("read");
    let o = convert(
        &s.0.join("Tiny-F16.gguf"),
        &["--outtype", "f16", "--split-max-tensors", "7", "--json"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let shards = json["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 4);
    assert_eq!(shards[3]["n_tensors"], 1);

    let reference =
        GgufFile::open(root().join("../fixtures/tiny/llama3/llamacpp/f16.gguf")).unwrap();
    for shard in s.listing() {
        let model = SplitModel::open(s.0.join(&shard)).unwrap();
        assert!(model.is_split());
        assert_eq!(model.files().len(), 4);
        assert_eq!(model.n_tensors(), reference.tensors().len());
        for (t, r) in model.tensors().iter().zip(reference.tensors()) {
            assert_eq!(
                (&t.name, &t.dims, t.ggml_type),
                (&r.name, &r.dims, r.ggml_type)
            );
            assert_eq!(
                model.tensor(&t.name).unwrap().1,
                reference.tensor_data(r),
                "{}",
                t.name
            );
        }
        // The first shard's metadata is the unsplit file's, then the three split keys.
        let keys: Vec<&str> = model.metadata().iter().map(|(k, _)| k).collect();
        let mut want: Vec<&str> = reference.metadata().iter().map(|(k, _)| k).collect();
        want.extend(["split.no", "split.count", "split.tensors.count"]);
        assert_eq!(keys, want);
        assert_eq!(model.metadata().get("split.count"), Some(&Value::U16(4)));
        assert_eq!(
            model.metadata().get("split.tensors.count"),
            Some(&Value::I32(22))
        );
    }
}

#[test]
fn bad_split_options_exit_2() {
    let s = Scratch::new("bad");
    for size in ["1.5G", "10GB", "-1", "M"] {
        let o = convert(&s.0.join("x.gguf"), &[&format!("--split-max-size={size}")]);
        assert_eq!(o.status.code(), Some(2), "{size}: {}", stderr(&o));
        assert!(stderr(&o).contains("--split-max-size"), "{}", stderr(&o));
    }
    assert!(s.listing().is_empty());
}

/// `llama-gguf-split --merge` of our shards gives the unsplit conversion plus the three keys
/// the merge tool always leaves (`split.no` = 0, `split.tensors.count`, then `split.count` = 0,
/// moved last because the tool sets it after copying the first shard's keys).
///
/// Needs llama.cpp's tools: set LLAMA_CPP_BIN_DIR to the folder with `llama-gguf-split`
/// (e.g. `<llama.cpp>/build/bin`) and run it with `--ignored`.
#[test]
#[ignore = "needs llama.cpp's llama-gguf-split: set LLAMA_CPP_BIN_DIR"]
fn llama_gguf_split_merges_our_shards() {
    let Some(bin_dir) = std::env::var_os("LLAMA_CPP_BIN_DIR").map(PathBuf::from) else {
        panic!("set LLAMA_CPP_BIN_DIR to the folder holding llama-gguf-split");
    };
    let s = Scratch::new("merge");
    let o = convert(
        &s.0.join("Tiny-F16.gguf"),
        &[
            "--outtype",
            "f16",
            "--split-max-tensors",
            "5",
            "--no-tensor-first-split",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let merged = s.0.join("merged.gguf");
    let m = Command::new(bin_dir.join("llama-gguf-split"))
        .env("LD_LIBRARY_PATH", &bin_dir)
        .arg("--merge")
        .arg(s.0.join("Tiny-F16-00001-of-00006.gguf"))
        .arg(&merged)
        .output()
        .unwrap();
    assert!(m.status.success(), "{}", stderr(&m));

    let unsplit = GgufFile::open(root().join("../fixtures/tiny/llama3/llamacpp/f16.gguf")).unwrap();
    let mut md: Metadata = unsplit.metadata().clone();
    md.set("split.no", Value::U16(0));
    md.set(
        "split.tensors.count",
        Value::I32(unsplit.tensors().len() as i32),
    );
    md.set("split.count", Value::U16(0));
    let tensors: Vec<(TensorDesc, Vec<u8>)> = unsplit
        .tensors()
        .iter()
        .map(|t| {
            (
                TensorDesc::new(t.name.clone(), t.dims.clone(), t.ggml_type),
                unsplit.tensor_data(t).to_vec(),
            )
        })
        .collect();
    let expected = s.0.join("expected.gguf");
    gguf::write_file(&expected, &md, &tensors).unwrap();
    assert!(
        fs::read(&merged).unwrap() == fs::read(&expected).unwrap(),
        "merged file differs from the unsplit conversion plus the split keys"
    );
}
