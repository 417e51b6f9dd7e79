//! Helpers shared by the CLI tests that make and read split models (`atomic_split`,
//! `split_readers`): a scratch folder, the `ggforge convert` of the bundled tiny Llama 3, and
//! its split conversion. Each test binary uses a subset of them, hence `allow(dead_code)`.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The bundled tiny Llama 3 checkpoint, relative to the `cli` crate.
pub const MODEL: &str = "../fixtures/tiny/llama3/Tiny-Llama-3-Instruct";

/// What llama.cpp's converter writes for [`MODEL`] with `--outtype f16`, unsplit: equal to
/// `ggforge convert --outtype f16` (`limits_that_fit_one_file_write_a_plain_file` checks it),
/// so it is the unsplit model that [`split_f16`]'s shards cut up.
pub const UNSPLIT_F16: &str = "../fixtures/tiny/llama3/llamacpp/f16.gguf";

/// The `cli` crate's folder.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh folder under the system temp dir, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("ggforge-split-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }

    /// The file names in the folder, sorted.
    pub fn listing(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Runs `ggforge ARGS`.
pub fn ggforge<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(env!("CARGO_BIN_EXE_ggforge"))
        .args(args)
        .output()
        .unwrap()
}

/// `ggforge convert MODEL --outfile OUT ARGS`.
pub fn convert(out: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ggforge"))
        .arg("convert")
        .arg(root().join(MODEL))
        .arg("--outfile")
        .arg(out)
        .args(args)
        .output()
        .unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Converts [`MODEL`] to f16 in `dir` as a split model of 4 shards (`--split-max-tensors 7`:
/// 7, 7, 7 and 1 tensors) and returns the shard paths in order.
pub fn split_f16(dir: &Path) -> Vec<PathBuf> {
    let o = convert(
        &dir.join("Tiny-F16.gguf"),
        &["--outtype", "f16", "--split-max-tensors", "7"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let shards: Vec<PathBuf> = (1..=4)
        .map(|i| dir.join(format!("Tiny-F16-{i:05}-of-00004.gguf")))
        .collect();
    for s in &shards {
        assert!(s.is_file(), "{} was not written", s.display());
    }
    shards
}
