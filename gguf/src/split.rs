//! Split GGUF models: one model written as several files ("shards") that llama.cpp loads, merges
//! (`llama-gguf-split --merge`) and writes (`convert_hf_to_gguf.py --split-max-size/-tensors`).
//!
//! The rules, read from gguf-py's `GGUFWriter` (which the converter uses) and llama.cpp's
//! `tools/gguf-split`:
//! - Shard `i` of `n` (1-based) is named `<stem>-<i:05>-of-<n:05>.gguf`, where `<stem>` is the
//!   output file name without its extension.
//! - Tensors keep their order and are cut into consecutive runs. A new shard starts before a
//!   tensor when the current shard already has a tensor and either holds `max_tensors` tensors
//!   or would exceed `max_bytes` of (unpadded) tensor data with it. A single tensor larger than
//!   `max_bytes` gets a shard of its own. `--no-tensor-first-split` leaves the first shard with
//!   metadata only.
//! - When that gives one shard, the output is a plain file (no split keys, no suffix).
//! - The first shard has all the metadata, then `split.no` (u16, 0-based), `split.count` (u16)
//!   and `split.tensors.count` (i32, tensors in all shards); the other shards have only those
//!   three keys. Every shard's header is padded to the alignment, and so is every tensor.
//!
//! Because padding restarts at each shard's (aligned) data section, the data section of a shard
//! is exactly a slice of the unsplit file's data section. [`SplitOutput`] relies on that: it is a
//! byte sink for the *unsplit* stream that [`crate::GgufWriter`] writes, and re-cuts it into
//! shards, so any code that streams a file through `GgufWriter` can write shards unchanged.
//!
//! Outputs are whole or absent: every shard is written to a hidden temporary file beside its
//! destination, and all of them are renamed into place only by [`Commit::commit`], after every
//! byte was written and synced. Dropping an uncommitted [`SplitOutput`] (an error, a full disk,
//! an interrupt) removes the temporary files and leaves the destinations untouched.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::error::{ParseError, ReadError, WriteError};
use crate::metadata::Metadata;
use crate::reader::GgufFile;
use crate::tensor::{TensorDesc, TensorInfo};
use crate::value::Value;
use crate::writer::{encode_header, layout};
use crate::{pad_to, AtomicFile};

/// Shard number, 0-based (u16).
pub const KEY_SPLIT_NO: &str = "split.no";
/// Number of shards (u16).
pub const KEY_SPLIT_COUNT: &str = "split.count";
/// Tensors in all shards together (i32).
pub const KEY_SPLIT_TENSORS_COUNT: &str = "split.tensors.count";

/// The most shards a model can have: `split.count` is a u16.
pub const MAX_SHARDS: usize = u16::MAX as usize;

/// How to cut a model into shards (`--split-max-tensors`, `--split-max-size`,
/// `--no-tensor-first-split`). The default cuts nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SplitRule {
    /// At most this many tensors per shard; 0 for no limit.
    pub max_tensors: usize,
    /// At most this many bytes of tensor data per shard (headers and padding not counted);
    /// 0 for no limit.
    pub max_bytes: u64,
    /// Put no tensors in the first shard (metadata only).
    pub no_tensors_in_first: bool,
}

impl SplitRule {
    /// Whether any option asks for shards.
    pub fn is_active(&self) -> bool {
        self.max_tensors != 0 || self.max_bytes != 0 || self.no_tensors_in_first
    }

    /// Cuts `tensors` into shards, as ranges of tensor indices (the first may be empty).
    pub fn plan(&self, tensors: &[TensorDesc]) -> Result<Vec<Range<usize>>, ParseError> {
        // The first shard; `--no-tensor-first-split` adds a second one that takes the tensors.
        let mut shards: Vec<Range<usize>> = Vec::with_capacity(2);
        shards.push(0..0);
        if self.no_tensors_in_first {
            shards.push(0..0);
        }
        let mut bytes = 0u64;
        for (i, t) in tensors.iter().enumerate() {
            let n = t.info(0).checked_n_bytes()?;
            let cur = shards.len() - 1;
            let count = shards[cur].len();
            if count > 0
                && ((self.max_tensors != 0 && count >= self.max_tensors)
                    || (self.max_bytes != 0 && bytes.saturating_add(n) > self.max_bytes))
            {
                shards.push(i..i);
                bytes = 0;
            }
            let cur = shards.len() - 1;
            shards[cur].end = i + 1;
            bytes = bytes.saturating_add(n);
        }
        Ok(shards)
    }
}

/// Parses a `--split-max-size` value the way `convert_hf_to_gguf.py` does: a number of bytes,
/// optionally followed by `K`, `M` or `G` (powers of 1000).
pub fn parse_size(s: &str) -> Option<u64> {
    let (digits, mult) = match s.as_bytes().last()? {
        b'K' => (&s[..s.len() - 1], 1_000),
        b'M' => (&s[..s.len() - 1], 1_000_000),
        b'G' => (&s[..s.len() - 1], 1_000_000_000),
        _ => (s, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(mult)
}

/// The path of shard `no` (1-based) of `count` for the unsplit output path `base`.
pub fn shard_path(base: &Path, no: usize, count: usize) -> PathBuf {
    let stem = base
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    base.with_file_name(format!("{stem}-{no:05}-of-{count:05}.gguf"))
}

/// Splits a shard path into `(prefix, no, count)` (`no` 1-based), or `None` when the name does
/// not end in `-NNNNN-of-NNNNN.gguf`. `shard_path(prefix + ".gguf", no, count)` gives it back.
pub fn parse_shard_path(path: &Path) -> Option<(PathBuf, usize, usize)> {
    let name = path.file_name()?.to_str()?;
    let rest = name.strip_suffix(".gguf")?;
    // "-00001-of-00003" is 15 bytes.
    let cut = rest.len().checked_sub(15)?;
    let (prefix, tail) = (rest.get(..cut)?, rest.get(cut..)?);
    let tail = tail.as_bytes();
    let digits = |r: Range<usize>| -> Option<usize> {
        let s = std::str::from_utf8(&tail[r]).ok()?;
        s.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    if tail[0] != b'-' || &tail[6..10] != b"-of-" {
        return None;
    }
    let no = digits(1..6)?;
    let count = digits(10..15)?;
    if prefix.is_empty() || no == 0 || no > count {
        return None;
    }
    Some((path.with_file_name(prefix), no, count))
}

/// The metadata of shard `index` (0-based) of `count`: everything plus the split keys for the
/// first, the split keys only for the others.
pub fn shard_metadata(
    metadata: &Metadata,
    index: usize,
    count: usize,
    total_tensors: usize,
) -> Metadata {
    let mut m = if index == 0 {
        metadata.clone()
    } else {
        let mut m = Metadata::new();
        // Keep a non-default alignment in every shard, so each one is read as it was written.
        if let Some(a) = metadata.get(crate::KEY_ALIGNMENT) {
            m.set(crate::KEY_ALIGNMENT, a.clone());
        }
        m
    };
    m.set(KEY_SPLIT_NO, Value::U16(index as u16));
    m.set(KEY_SPLIT_COUNT, Value::U16(count as u16));
    m.set(KEY_SPLIT_TENSORS_COUNT, Value::I32(total_tensors as i32));
    m
}

/// A byte sink that can be made final: [`AtomicFile`] (one file) or [`SplitOutput`] (shards).
/// Writers stream into it, and nothing appears at the destination until `commit` succeeds.
pub trait Commit: Write + Send {
    /// Flushes, syncs and renames the output into place.
    fn commit(self) -> io::Result<()>;
}

impl Commit for AtomicFile {
    fn commit(self) -> io::Result<()> {
        AtomicFile::commit(self)
    }
}

/// One planned output file.
#[derive(Debug)]
struct ShardPlan {
    path: PathBuf,
    header: Vec<u8>,
    /// Tensor data bytes, padding included.
    data_len: u64,
    n_tensors: usize,
}

/// What one output file will hold (for progress messages and summaries).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardInfo {
    pub path: PathBuf,
    pub n_tensors: usize,
    /// The file's size once written.
    pub file_len: u64,
}

/// Writes a model as shards (or one plain file when the rule gives one shard), fed with the
/// byte stream of the *unsplit* file. See the module documentation.
pub struct SplitOutput {
    shards: Vec<ShardPlan>,
    /// Bytes of the unsplit header still to be swallowed.
    skip: u64,
    /// The shard being written, or the next one to open.
    next: usize,
    /// Data bytes the open shard still expects.
    left: u64,
    open: Option<BufWriter<File>>,
    /// Temporary files created so far, by shard index.
    temps: Vec<PathBuf>,
    committed: bool,
}

impl SplitOutput {
    /// Plans the shards of a model with this metadata and these tensors, for the unsplit
    /// output path `base`, and creates the first temporary file (so an unwritable directory
    /// fails before any work is done).
    pub fn create(
        base: &Path,
        metadata: &Metadata,
        tensors: &[TensorDesc],
        rule: &SplitRule,
    ) -> Result<SplitOutput, WriteError> {
        let ranges = rule.plan(tensors)?;
        let alignment = metadata.alignment();
        let unsplit_header = encode_header(metadata, &layout(tensors, alignment)?).len() as u64;
        let count = ranges.len();
        if count > MAX_SHARDS {
            return Err(WriteError::Sequence {
                tensor: String::new(),
                message: format!("{count} shards would be needed; at most {MAX_SHARDS} are possible (raise --split-max-size or --split-max-tensors)"),
            });
        }
        let mut shards = Vec::with_capacity(count);
        for (i, range) in ranges.iter().enumerate() {
            let descs = &tensors[range.clone()];
            let (path, md) = if count == 1 {
                (base.to_path_buf(), metadata.clone())
            } else {
                (
                    shard_path(base, i + 1, count),
                    shard_metadata(metadata, i, count, tensors.len()),
                )
            };
            let infos = layout(descs, alignment)?;
            let mut header = encode_header(&md, &infos);
            // gguf-py pads every shard's header, even one without tensors.
            let padded = pad_to(header.len() as u64, alignment).unwrap_or(header.len() as u64);
            header.resize(padded as usize, 0);
            let data_len = match infos.last() {
                Some(last) => pad_to(last.offset + last.n_bytes(), alignment).ok_or_else(|| {
                    ParseError::SizeOverflow {
                        tensor: last.name.clone(),
                    }
                })?,
                None => 0,
            };
            shards.push(ShardPlan {
                path,
                header,
                data_len,
                n_tensors: descs.len(),
            });
        }
        let mut out = SplitOutput {
            shards,
            skip: unsplit_header,
            next: 0,
            left: 0,
            open: None,
            temps: Vec::with_capacity(count),
            committed: false,
        };
        out.open_next().map_err(|source| WriteError::Io {
            path: out.shards[0].path.clone(),
            source,
        })?;
        Ok(out)
    }

    /// The files this output will produce, in order.
    pub fn shards(&self) -> Vec<ShardInfo> {
        self.shards
            .iter()
            .map(|s| ShardInfo {
                path: s.path.clone(),
                n_tensors: s.n_tensors,
                file_len: s.header.len() as u64 + s.data_len,
            })
            .collect()
    }

    /// Whether more than one file is written.
    pub fn is_split(&self) -> bool {
        self.shards.len() > 1
    }

    /// Opens the next shard that expects data, writing its header; shards without tensors are
    /// written whole on the way.
    fn open_next(&mut self) -> io::Result<()> {
        loop {
            let Some(shard) = self.shards.get(self.next) else {
                return Err(io::Error::other(
                    "more tensor data than the planned shards hold",
                ));
            };
            let tmp = temp_path(&shard.path)?;
            let file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)?;
            self.temps.push(tmp);
            let mut w = BufWriter::with_capacity(1 << 20, file);
            w.write_all(&shard.header)?;
            if shard.data_len > 0 {
                self.left = shard.data_len;
                self.open = Some(w);
                return Ok(());
            }
            finish_file(w)?;
            self.next += 1;
        }
    }

    /// Flushes and syncs the complete open shard.
    fn close_current(&mut self) -> io::Result<()> {
        if let Some(w) = self.open.take() {
            finish_file(w)?;
            self.next += 1;
        }
        Ok(())
    }
}

/// `.<name>.<pid>.tmp` beside `dest`, as [`AtomicFile`] names its temporary files.
fn temp_path(dest: &Path) -> io::Result<PathBuf> {
    let name = dest.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "output path has no file name")
    })?;
    Ok(dest.with_file_name(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    )))
}

fn finish_file(w: BufWriter<File>) -> io::Result<()> {
    let file = w.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()
}

impl Write for SplitOutput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if crate::atomic::interrupt_requested() {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "interrupted by signal",
            ));
        }
        if self.committed {
            return Err(io::Error::other("already committed"));
        }
        let n = buf.len();
        let skip = self.skip.min(n as u64) as usize;
        self.skip -= skip as u64;
        let mut rest = &buf[skip..];
        while !rest.is_empty() {
            if self.open.is_none() {
                self.open_next()?;
            }
            let take = self.left.min(rest.len() as u64) as usize;
            if let Some(w) = self.open.as_mut() {
                w.write_all(&rest[..take])?;
            }
            self.left -= take as u64;
            rest = &rest[take..];
            if self.left == 0 {
                self.close_current()?;
            }
        }
        Ok(n)
    }

    /// `write` takes the whole buffer or fails. The default `write_all` would retry an
    /// `ErrorKind::Interrupted` forever, and after [`crate::atomic::request_interrupt`] every
    /// `write` fails with that kind: Ctrl-C must stop the writer, not hang it.
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.write(buf).map(|_| ())
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.open.as_mut() {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }
}

impl Commit for SplitOutput {
    /// Checks that every shard is complete, then renames them into place, the first shard last
    /// (it is the one users open). If a rename fails, the shards already renamed are removed
    /// again, so the model is absent rather than a mix of old and new shards.
    fn commit(mut self) -> io::Result<()> {
        if self.skip > 0 || self.open.is_some() {
            let shard = self
                .shards
                .get(self.next)
                .map(|s| s.path.display().to_string());
            return Err(io::Error::other(format!(
                "output incomplete: {} still expected {} bytes",
                shard.unwrap_or_default(),
                self.left.max(self.skip)
            )));
        }
        // Trailing shards without tensors (none in practice) are written now.
        while self.next < self.shards.len() {
            if self.shards[self.next].data_len > 0 {
                return Err(io::Error::other(format!(
                    "output incomplete: no data for {}",
                    self.shards[self.next].path.display()
                )));
            }
            self.open_next()?;
        }
        let mut renamed: Vec<&Path> = Vec::new();
        for (tmp, shard) in self.temps.iter().zip(&self.shards).rev() {
            if let Err(e) = fs::rename(tmp, &shard.path) {
                for p in renamed {
                    let _ = fs::remove_file(p);
                }
                return Err(io::Error::new(
                    e.kind(),
                    format!("renaming into {}: {e}", shard.path.display()),
                ));
            }
            renamed.push(&shard.path);
        }
        self.committed = true;
        Ok(())
    }
}

impl Drop for SplitOutput {
    fn drop(&mut self) {
        if !self.committed {
            self.open = None;
            for t in &self.temps {
                let _ = fs::remove_file(t);
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// Reading
// ------------------------------------------------------------------------------------------

/// What every reader of a model needs (`inspect`, `diff`, `quantize`, `verify`, the reference
/// runtime): the metadata, every tensor in order, and each tensor's bytes, whether the model is
/// one file ([`GgufFile`]) or all the shards of a split model ([`SplitModel`]).
///
/// Readers take `&dyn GgufModel` so that one code path serves both: a `&GgufFile` coerces to it,
/// so callers that open a single file keep working, and the commands open models with
/// [`SplitModel::open`], which accepts a plain file or any shard. The method names are
/// `GgufFile`'s own, so a reader switches by changing a parameter type, not its body.
pub trait GgufModel: Send + Sync {
    /// The path the model was opened from (for a split model, the shard that was named).
    fn path(&self) -> &Path;

    /// The model's metadata: the file's, or the first shard's (split keys included).
    fn metadata(&self) -> &Metadata;

    /// Every tensor in model order (the shards' tensors one after the other). Each offset is
    /// relative to the data section of the file the tensor is in.
    fn tensors(&self) -> &[TensorInfo];

    /// The bytes of `info`, one of [`GgufModel::tensors`] (bounds were checked when the files
    /// were opened).
    fn tensor_data(&self, info: &TensorInfo) -> &[u8];

    /// A tensor by name.
    fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors().iter().find(|t| t.name == name)
    }

    /// The files: one, or every shard in order.
    fn files(&self) -> &[GgufFile];

    /// Whether the model is split over several files.
    fn is_split(&self) -> bool {
        self.files().len() > 1
    }

    /// Size of all the model's files together.
    fn file_len(&self) -> u64 {
        self.files().iter().map(|f| f.file_len()).sum()
    }
}

impl GgufModel for GgufFile {
    fn path(&self) -> &Path {
        GgufFile::path(self)
    }
    fn metadata(&self) -> &Metadata {
        GgufFile::metadata(self)
    }
    fn tensors(&self) -> &[TensorInfo] {
        GgufFile::tensors(self)
    }
    fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        GgufFile::tensor_data(self, info)
    }
    fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.header.tensor(name)
    }
    fn files(&self) -> &[GgufFile] {
        std::slice::from_ref(self)
    }
    fn file_len(&self) -> u64 {
        GgufFile::file_len(self)
    }
}

/// Opening a (possibly split) model failed. Every variant names the file it is about; all but
/// `Read` with an I/O error mean the input is unusable as a model.
#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    /// A file (the one named, or a shard) cannot be read or fails the hardened reader.
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("{}: shard {no} of {count} ({}) is missing: {source}", first.display(), missing.display())]
    MissingShard {
        /// The first shard's path (the model's name, as users know it).
        first: PathBuf,
        missing: PathBuf,
        /// 1-based.
        no: usize,
        count: usize,
        source: io::Error,
    },
    #[error("{}: '{key}' has type {found}, expected an integer", path.display())]
    BadSplitKey {
        path: PathBuf,
        key: &'static str,
        found: &'static str,
    },
    /// `split.count` says the file is a shard, but its name does not say which one, so the
    /// other shards cannot be found.
    #[error("{}: '{KEY_SPLIT_COUNT}' is {count}, but the file name does not end in -NNNNN-of-{count:05}.gguf, so the other shards cannot be found", path.display())]
    UnnamedShard { path: PathBuf, count: u64 },
    #[error("{}: the name says {name_count} shards, '{KEY_SPLIT_COUNT}' says {count}", path.display())]
    NameCountMismatch {
        path: PathBuf,
        name_count: usize,
        count: usize,
    },
    /// A shard's split keys do not fit its place: a shard of another model, or one renamed.
    #[error("{}: '{key}' is {}, expected {expected} for shard {no} of {count} (a renamed shard, or one of another model?)", path.display(), found.map_or("absent".to_string(), |v| v.to_string()))]
    WrongShard {
        path: PathBuf,
        key: &'static str,
        found: Option<u64>,
        expected: u64,
        /// 1-based.
        no: usize,
        count: usize,
    },
    #[error("{}: tensor '{tensor}' is also in an earlier shard", path.display())]
    DuplicateTensor { path: PathBuf, tensor: String },
    #[error("{}: '{KEY_SPLIT_TENSORS_COUNT}' is {declared}, but the shards hold {found} tensors", path.display())]
    TensorCountMismatch {
        path: PathBuf,
        declared: u64,
        found: usize,
    },
}

impl SplitError {
    /// The read error, when a file could not be read or parsed (as opposed to a set of shards
    /// that do not fit together).
    pub fn read_error(&self) -> Option<&ReadError> {
        match self {
            SplitError::Read(e) => Some(e),
            _ => None,
        }
    }
}

/// A model as one file or as all the shards of a split model, seen as one: the first shard's
/// metadata and every shard's tensors, in order. See [`GgufModel`] for what readers use.
pub struct SplitModel {
    /// The path that was opened.
    path: PathBuf,
    files: Vec<GgufFile>,
    /// Every tensor in model order (copies of the files' infos).
    infos: Vec<TensorInfo>,
    /// For each of `infos`, the index of the file it is in.
    file_of: Vec<usize>,
    by_name: HashMap<String, usize>,
}

fn split_u64(file: &GgufFile, key: &'static str) -> Result<Option<u64>, SplitError> {
    match file.metadata().get(key) {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| SplitError::BadSplitKey {
            path: file.path().to_path_buf(),
            key,
            found: v.value_type().name(),
        }),
    }
}

impl SplitModel {
    /// Opens `path`. A plain file (no `split.count`, or a count of 0 or 1 as in merged files)
    /// is a model of one file. A shard (any of them; named `…-NNNNN-of-NNNNN.gguf`) opens all
    /// shards, which must agree on their numbering and tensor count. Every file passes the
    /// hardened reader ([`GgufFile::open`]).
    pub fn open(path: impl AsRef<Path>) -> Result<SplitModel, SplitError> {
        SplitModel::open_with(path.as_ref(), |p| GgufFile::open(p))
    }

    /// [`SplitModel::open`] with the container checks only ([`GgufFile::open_container`]), for
    /// `verify`'s structure layer, which reports broken tokenizer metadata as a check of its own.
    pub fn open_container(path: impl AsRef<Path>) -> Result<SplitModel, SplitError> {
        SplitModel::open_with(path.as_ref(), |p| GgufFile::open_container(p))
    }

    fn open_with(
        path: &Path,
        open: fn(&Path) -> Result<GgufFile, ReadError>,
    ) -> Result<SplitModel, SplitError> {
        let given = open(path)?;
        let count = split_u64(&given, KEY_SPLIT_COUNT)?.unwrap_or(0);
        if count <= 1 {
            return SplitModel::from_files(path, vec![given]);
        }
        // Checked against the name (at most 99999) before anything is sized by it.
        let (prefix, no, name_count) =
            parse_shard_path(path).ok_or_else(|| SplitError::UnnamedShard {
                path: path.to_path_buf(),
                count,
            })?;
        if name_count as u64 != count {
            return Err(SplitError::NameCountMismatch {
                path: path.to_path_buf(),
                name_count,
                count: count as usize,
            });
        }
        let count = name_count;
        let base = prefix.with_file_name(format!(
            "{}.gguf",
            prefix
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ));
        let first_path = shard_path(&base, 1, count);
        let mut files: Vec<GgufFile> = Vec::with_capacity(count);
        let mut given = Some(given);
        for i in 1..=count {
            let p = shard_path(&base, i, count);
            let f = match given.take_if(|_| i == no) {
                Some(f) => f,
                None => match open(&p) {
                    Ok(f) => f,
                    Err(ReadError::Io { source, .. })
                        if source.kind() == io::ErrorKind::NotFound =>
                    {
                        return Err(SplitError::MissingShard {
                            first: first_path,
                            missing: p,
                            no: i,
                            count,
                            source,
                        })
                    }
                    Err(e) => return Err(e.into()),
                },
            };
            // Every shard carries the three split keys; they must describe this place in this
            // model (the tensor total is the first shard's).
            let expected_total = match files.first() {
                Some(first) => split_u64(first, KEY_SPLIT_TENSORS_COUNT)?,
                None => None,
            };
            let checks = [
                (KEY_SPLIT_NO, Some(i as u64 - 1)),
                (KEY_SPLIT_COUNT, Some(count as u64)),
                (KEY_SPLIT_TENSORS_COUNT, expected_total),
            ];
            for (key, expected) in checks {
                let Some(expected) = expected else { continue };
                let found = split_u64(&f, key)?;
                if found != Some(expected) {
                    return Err(SplitError::WrongShard {
                        path: f.path().to_path_buf(),
                        key,
                        found,
                        expected,
                        no: i,
                        count,
                    });
                }
            }
            files.push(f);
        }
        let model = SplitModel::from_files(path, files)?;
        if let Some(declared) = split_u64(model.first(), KEY_SPLIT_TENSORS_COUNT)? {
            if declared != model.infos.len() as u64 {
                return Err(SplitError::TensorCountMismatch {
                    path: first_path,
                    declared,
                    found: model.infos.len(),
                });
            }
        }
        Ok(model)
    }

    fn from_files(path: &Path, files: Vec<GgufFile>) -> Result<SplitModel, SplitError> {
        let n: usize = files.iter().map(|f| f.tensors().len()).sum();
        let mut infos = Vec::with_capacity(n);
        let mut file_of = Vec::with_capacity(n);
        let mut by_name = HashMap::with_capacity(n);
        for (fi, f) in files.iter().enumerate() {
            for t in f.tensors() {
                if by_name.insert(t.name.clone(), infos.len()).is_some() {
                    return Err(SplitError::DuplicateTensor {
                        path: f.path().to_path_buf(),
                        tensor: t.name.clone(),
                    });
                }
                infos.push(t.clone());
                file_of.push(fi);
            }
        }
        Ok(SplitModel {
            path: path.to_path_buf(),
            files,
            infos,
            file_of,
            by_name,
        })
    }

    /// The files: one, or every shard in order.
    pub fn files(&self) -> &[GgufFile] {
        &self.files
    }

    /// Whether the model is split over several files.
    pub fn is_split(&self) -> bool {
        self.files.len() > 1
    }

    /// The first file (the one holding the model's metadata).
    pub fn first(&self) -> &GgufFile {
        &self.files[0]
    }

    /// The path that was opened.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The model's metadata (the first shard's, split keys included).
    pub fn metadata(&self) -> &Metadata {
        self.files[0].metadata()
    }

    /// Number of tensors in all shards.
    pub fn n_tensors(&self) -> usize {
        self.infos.len()
    }

    /// Every tensor in model order. Offsets are relative to the data section of the file the
    /// tensor is in ([`SplitModel::file_index`]).
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.infos
    }

    /// The index (in [`SplitModel::files`]) of the file holding tensor `i` of
    /// [`SplitModel::tensors`].
    pub fn file_index(&self, i: usize) -> Option<usize> {
        self.file_of.get(i).copied()
    }

    /// A tensor by name, with its bytes.
    pub fn tensor(&self, name: &str) -> Option<(&TensorInfo, &[u8])> {
        let i = *self.by_name.get(name)?;
        let info = self.infos.get(i)?;
        let file = self.files.get(*self.file_of.get(i)?)?;
        Some((info, file.tensor_data(info)))
    }

    /// The bytes of tensor `info`, found by name: the file that holds it is not part of the
    /// info. An info not from this model (no tensor of that name) has no bytes.
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        self.tensor(&info.name).map_or(&[], |(_, data)| data)
    }

    /// Total size of all files.
    pub fn total_len(&self) -> u64 {
        self.files.iter().map(|f| f.file_len()).sum()
    }
}

impl GgufModel for SplitModel {
    fn path(&self) -> &Path {
        SplitModel::path(self)
    }
    fn metadata(&self) -> &Metadata {
        SplitModel::metadata(self)
    }
    fn tensors(&self) -> &[TensorInfo] {
        SplitModel::tensors(self)
    }
    fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        SplitModel::tensor_data(self, info)
    }
    fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.infos.get(*self.by_name.get(name)?)
    }
    fn files(&self) -> &[GgufFile] {
        SplitModel::files(self)
    }
    fn file_len(&self) -> u64 {
        self.total_len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::GgmlType;
    use crate::GgufWriter;

    struct Scratch(PathBuf);
    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let p = std::env::temp_dir().join(format!("gguf-split-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            Scratch(p)
        }
        fn names(&self) -> Vec<String> {
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

    /// Five f32 tensors of 10, 3, 20, 1 and 8 elements (40, 12, 80, 4, 32 bytes).
    fn model() -> (Metadata, Vec<(TensorDesc, Vec<u8>)>) {
        let mut md = Metadata::new();
        md.set("general.architecture", "llama");
        md.set("general.name", "t");
        let tensors = [10u64, 3, 20, 1, 8]
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let d = TensorDesc::new(format!("t{i}"), vec![n], GgmlType::F32);
                let bytes = (0..n * 4)
                    .map(|b| (b as u8).wrapping_add(i as u8))
                    .collect();
                (d, bytes)
            })
            .collect();
        (md, tensors)
    }

    fn write(dir: &Path, rule: &SplitRule) -> Vec<ShardInfo> {
        let (md, tensors) = model();
        write_model(&dir.join("m-F32.gguf"), &md, &tensors, rule)
    }

    fn write_model(
        path: &Path,
        md: &Metadata,
        tensors: &[(TensorDesc, Vec<u8>)],
        rule: &SplitRule,
    ) -> Vec<ShardInfo> {
        let descs: Vec<TensorDesc> = tensors.iter().map(|(d, _)| d.clone()).collect();
        let out = SplitOutput::create(path, md, &descs, rule).unwrap();
        let shards = out.shards();
        let mut w = GgufWriter::new(out, md, &descs).unwrap();
        for (_, b) in tensors {
            // In odd pieces, as the streaming converter does.
            for piece in b.chunks(7) {
                w.write_bytes(piece).unwrap();
            }
        }
        w.finish().unwrap().commit().unwrap();
        shards
    }

    #[test]
    fn plan_follows_gguf_py() {
        let (_, t) = model();
        let d: Vec<TensorDesc> = t.into_iter().map(|(d, _)| d).collect();
        let plan = |max_tensors, max_bytes, no_first| {
            SplitRule {
                max_tensors,
                max_bytes,
                no_tensors_in_first: no_first,
            }
            .plan(&d)
            .unwrap()
        };
        assert_eq!(plan(0, 0, false), vec![0..5]);
        assert_eq!(plan(2, 0, false), vec![0..2, 2..4, 4..5]);
        // 40+12 = 52 fits in 60; +80 does not; 80 alone exceeds but a shard needs one tensor;
        // 4+32 fits.
        assert_eq!(plan(0, 60, false), vec![0..2, 2..3, 3..5]);
        assert_eq!(plan(0, 52, false), vec![0..2, 2..3, 3..5]);
        assert_eq!(plan(0, 51, false), vec![0..1, 1..2, 2..3, 3..5]);
        assert_eq!(plan(0, 0, true), vec![0..0, 0..5]);
        assert_eq!(plan(3, 0, true), vec![0..0, 0..3, 3..5]);
    }

    #[test]
    fn sizes_and_names() {
        assert_eq!(parse_size("0"), Some(0));
        assert_eq!(parse_size("123"), Some(123));
        assert_eq!(parse_size("200K"), Some(200_000));
        assert_eq!(parse_size("5M"), Some(5_000_000));
        assert_eq!(parse_size("2G"), Some(2_000_000_000));
        for bad in ["", "G", "1.5G", "5k", "-1", "5MB", "1 G"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
        let p = shard_path(Path::new("/o/Model-7B-F16.gguf"), 2, 13);
        assert_eq!(p, Path::new("/o/Model-7B-F16-00002-of-00013.gguf"));
        assert_eq!(
            parse_shard_path(&p),
            Some((PathBuf::from("/o/Model-7B-F16"), 2, 13))
        );
        assert_eq!(
            shard_path(Path::new("x"), 1, 2),
            Path::new("x-00001-of-00002.gguf")
        );
        for bad in [
            "/o/m.gguf",
            "/o/m-00000-of-00002.gguf",
            "/o/m-00003-of-00002.gguf",
            "/o/m-0001-of-00002.gguf",
            "/o/-00001-of-00002.gguf",
            "/o/m-00001_of-00002.gguf",
        ] {
            assert_eq!(parse_shard_path(Path::new(bad)), None, "{bad}");
        }
    }

    #[test]
    fn one_shard_is_a_plain_file() {
        let s = Scratch::new("plain");
        let shards = write(&s.0, &SplitRule::default());
        assert_eq!(shards.len(), 1);
        assert_eq!(s.names(), vec!["m-F32.gguf"]);
        // Byte-identical to the unsplit writer's file.
        let (md, t) = model();
        let plain = s.0.join("plain.gguf");
        crate::write_file(&plain, &md, &t).unwrap();
        assert_eq!(
            fs::read(s.0.join("m-F32.gguf")).unwrap(),
            fs::read(&plain).unwrap()
        );
        let m = SplitModel::open(s.0.join("m-F32.gguf")).unwrap();
        assert!(!m.is_split());
        assert_eq!(m.n_tensors(), 5);
    }

    #[test]
    fn shards_read_back_as_one_model() {
        let s = Scratch::new("shards");
        let rule = SplitRule {
            max_tensors: 2,
            max_bytes: 0,
            no_tensors_in_first: true,
        };
        let shards = write(&s.0, &rule);
        assert_eq!(
            s.names(),
            vec![
                "m-F32-00001-of-00004.gguf",
                "m-F32-00002-of-00004.gguf",
                "m-F32-00003-of-00004.gguf",
                "m-F32-00004-of-00004.gguf"
            ]
        );
        for sh in &shards {
            assert_eq!(fs::metadata(&sh.path).unwrap().len(), sh.file_len);
        }
        let (md, tensors) = model();
        for name in s.names() {
            let m = SplitModel::open(s.0.join(&name)).unwrap();
            assert!(m.is_split());
            assert_eq!(m.n_tensors(), 5);
            let names: Vec<&str> = m.tensors().iter().map(|t| t.name.as_str()).collect();
            assert_eq!(names, ["t0", "t1", "t2", "t3", "t4"]);
            for (d, bytes) in &tensors {
                assert_eq!(m.tensor(&d.name).unwrap().1, &bytes[..], "{}", d.name);
            }
            // First shard: every key, then the split keys; the others: only the split keys.
            let first: Vec<&str> = m.metadata().iter().map(|(k, _)| k).collect();
            assert_eq!(
                first,
                [
                    "general.architecture",
                    "general.name",
                    KEY_SPLIT_NO,
                    KEY_SPLIT_COUNT,
                    KEY_SPLIT_TENSORS_COUNT
                ]
            );
            assert_eq!(m.files()[0].tensors().len(), 0);
            let f2 = &m.files()[2];
            assert_eq!(f2.metadata().get(KEY_SPLIT_NO), Some(&Value::U16(2)));
            assert_eq!(f2.metadata().get(KEY_SPLIT_COUNT), Some(&Value::U16(4)));
            assert_eq!(
                f2.metadata().get(KEY_SPLIT_TENSORS_COUNT),
                Some(&Value::I32(5))
            );
            assert_eq!(f2.metadata().len(), 3);
            assert_eq!(md.len() + 3, m.metadata().len());
        }
    }

    #[test]
    fn missing_or_inconsistent_shards_are_named() {
        let s = Scratch::new("missing");
        let rule = SplitRule {
            max_tensors: 2,
            ..SplitRule::default()
        };
        write(&s.0, &rule);
        let first = s.0.join("m-F32-00001-of-00003.gguf");
        let second = s.0.join("m-F32-00002-of-00003.gguf");
        let third = s.0.join("m-F32-00003-of-00003.gguf");
        fs::rename(&third, s.0.join("elsewhere.gguf")).unwrap();
        let e = SplitModel::open(&first).err().unwrap().to_string();
        assert!(
            e.contains("shard 3 of 3") && e.contains("00003-of-00003"),
            "{e}"
        );
        // A shard in the wrong place.
        fs::copy(&second, &third).unwrap();
        let e = SplitModel::open(&first).err().unwrap().to_string();
        assert!(
            e.contains("'split.no' is 1, expected 2 for shard 3 of 3")
                && e.contains("00003-of-00003"),
            "{e}"
        );
        // A renamed first shard cannot find its siblings.
        let renamed = s.0.join("renamed.gguf");
        fs::copy(&first, &renamed).unwrap();
        let e = SplitModel::open(&renamed).err().unwrap().to_string();
        assert!(e.contains("file name does not end in"), "{e}");
    }

    #[test]
    fn a_shard_of_another_model_is_named() {
        let s = Scratch::new("foreign");
        let rule = SplitRule {
            max_tensors: 2,
            ..SplitRule::default()
        };
        write(&s.0, &rule);
        // Another model cut into as many shards, with one tensor more.
        let other = s.0.join("other");
        fs::create_dir_all(&other).unwrap();
        let (md, mut tensors) = model();
        tensors.push((TensorDesc::new("t5", vec![2], GgmlType::F32), vec![0; 8]));
        write_model(&other.join("m-F32.gguf"), &md, &tensors, &rule);
        let second = s.0.join("m-F32-00002-of-00003.gguf");
        fs::copy(other.join("m-F32-00002-of-00003.gguf"), &second).unwrap();
        let e = SplitModel::open(s.0.join("m-F32-00001-of-00003.gguf"))
            .err()
            .unwrap();
        assert!(
            matches!(&e, SplitError::WrongShard { path, key: KEY_SPLIT_TENSORS_COUNT, found: Some(6), expected: 5, no: 2, count: 3 } if *path == second),
            "{e}"
        );
        assert!(e.to_string().contains("m-F32-00002-of-00003.gguf"), "{e}");
        // A shard whose name and split.count disagree.
        let renamed = s.0.join("m-F32-00001-of-00004.gguf");
        fs::copy(s.0.join("m-F32-00001-of-00003.gguf"), &renamed).unwrap();
        let e = SplitModel::open(&renamed).err().unwrap();
        assert!(
            matches!(
                e,
                SplitError::NameCountMismatch {
                    name_count: 4,
                    count: 3,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn readers_see_one_model_through_the_trait() {
        let s = Scratch::new("trait");
        let rule = SplitRule {
            max_tensors: 2,
            ..SplitRule::default()
        };
        write(&s.0, &rule);
        let (md, tensors) = model();
        let plain_path = s.0.join("plain.gguf");
        crate::write_file(&plain_path, &md, &tensors).unwrap();
        let plain = GgufFile::open(&plain_path).unwrap();
        let split = SplitModel::open(s.0.join("m-F32-00003-of-00003.gguf")).unwrap();
        let lenient = SplitModel::open_container(s.0.join("m-F32-00002-of-00003.gguf")).unwrap();
        for m in [&split as &dyn GgufModel, &lenient] {
            assert!(m.is_split());
            assert_eq!(m.files().len(), 3);
            assert_eq!(m.tensors().len(), 5);
            for t in GgufModel::tensors(&plain) {
                let info = m.tensor_info(&t.name).unwrap();
                assert_eq!((&info.dims, info.ggml_type), (&t.dims, t.ggml_type));
                assert_eq!(m.tensor_data(info), GgufModel::tensor_data(&plain, t));
            }
            let total: u64 = (1..=3)
                .map(|i| {
                    fs::metadata(s.0.join(format!("m-F32-0000{i}-of-00003.gguf")))
                        .unwrap()
                        .len()
                })
                .sum();
            assert_eq!(m.file_len(), total);
        }
        assert_eq!(split.file_index(4), Some(2));
        assert_eq!(split.file_index(5), None);
        // A plain file is a model of one file.
        assert!(!GgufModel::is_split(&plain));
        assert_eq!(GgufModel::files(&plain).len(), 1);

        // Diffed whole, the split model and the plain file differ only in the split keys.
        let d = crate::diff::diff_models(&split, &plain, &Default::default());
        assert_eq!(d.model, vec![]);
        assert_eq!(
            d.layout,
            crate::diff::SPLIT_KEYS
                .map(|k| crate::diff::Difference::KeyOnlyInA(k.to_string()))
                .to_vec()
        );
        let all = crate::diff::diff(&split, &plain, &Default::default());
        assert_eq!(all, d.layout);
    }

    #[test]
    fn uncommitted_output_leaves_nothing() {
        let s = Scratch::new("abort");
        let (md, tensors) = model();
        let descs: Vec<TensorDesc> = tensors.iter().map(|(d, _)| d.clone()).collect();
        let rule = SplitRule {
            max_tensors: 1,
            ..SplitRule::default()
        };
        // An old model at the destination must survive a failed run.
        let old = s.0.join("m-F32-00001-of-00005.gguf");
        fs::write(&old, b"old").unwrap();
        {
            let out = SplitOutput::create(&s.0.join("m-F32.gguf"), &md, &descs, &rule).unwrap();
            let mut w = GgufWriter::new(out, &md, &descs).unwrap();
            for (d, b) in &tensors[..3] {
                w.write_tensor(&d.name, b).unwrap();
            }
            assert!(s.names().iter().filter(|n| n.ends_with(".tmp")).count() >= 3);
            // Committing early is refused, and the sink is dropped uncommitted.
            let out = w.finish().err().map(|_| ());
            assert!(out.is_some());
        }
        assert_eq!(s.names(), vec!["m-F32-00001-of-00005.gguf"]);
        assert_eq!(fs::read(&old).unwrap(), b"old");

        let mut out = SplitOutput::create(&s.0.join("m-F32.gguf"), &md, &descs, &rule).unwrap();
        let header = encode_header(&md, &layout(&descs, 32).unwrap());
        out.write_all(&header).unwrap();
        out.write_all(&tensors[0].1).unwrap();
        let e = out.commit().err().unwrap().to_string();
        assert!(e.contains("incomplete"), "{e}");
        assert_eq!(s.names(), vec!["m-F32-00001-of-00005.gguf"]);
    }
}
