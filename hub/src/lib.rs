//! Downloads what a conversion needs from the Hugging Face Hub, into the cache that Python's
//! `huggingface_hub` uses, so a model downloaded by either tool is found by the other.
//!
//! [`fetch`] resolves `org/name@revision` to a commit, picks the files a conversion reads
//! ([`select`]: config, tokenizer, model card, safetensors weights; never pickles), downloads
//! the missing ones with resume and checks each against the Hub's size and hash, and returns
//! the snapshot folder, which the converter then reads like any local model folder.
//!
//! The environment is read as huggingface_hub reads it ([`HubConfig::from_env`]): `HF_HOME`,
//! `HF_HUB_CACHE`, `HF_TOKEN`, `HF_ENDPOINT`, `HF_HUB_OFFLINE`. See docs/hub.md.

mod bars;
mod cache;
mod config;
mod error;
mod http;
pub mod select;

/// The two content hashes the Hub uses as ETags.
pub mod hash {
    use sha1::Digest as _;

    /// sha256 of `bytes`, lowercase hex: an LFS file's ETag.
    pub fn sha256_hex(bytes: &[u8]) -> String {
        crate::http::hex(&sha2::Sha256::digest(bytes))
    }

    /// sha1 of the git blob of `bytes` (`git hash-object`): a regular file's ETag.
    pub fn git_blob_sha1_hex(bytes: &[u8]) -> String {
        let mut h = sha1::Sha1::new();
        h.update(format!("blob {}\0", bytes.len()).as_bytes());
        h.update(bytes);
        crate::http::hex(&h.finalize())
    }
}

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

pub use bars::ProgressBars;
pub use cache::{is_commit_hash, RepoCache};
pub use config::{HubConfig, DEFAULT_ENDPOINT};
pub use error::HubError;

use http::{Checker, Client, Subject};

/// A model on the Hub: `org/name` (or a bare `name`) and a branch, tag or commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoRef {
    pub repo_id: String,
    pub revision: String,
}

/// The branch used when none is given.
pub const DEFAULT_REVISION: &str = "main";

/// huggingface_hub's `validate_repo_id` rules for one part of an id.
fn valid_part(s: &str) -> Result<(), String> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    if s.is_empty() {
        return Err("empty name".into());
    }
    if !s.bytes().all(|b| word(b) || b == b'-' || b == b'.') {
        return Err("only letters, digits, '-', '_' and '.' are allowed".into());
    }
    if !word(s.as_bytes()[0]) || !word(s.as_bytes()[s.len() - 1]) {
        return Err("names start and end with a letter, digit or '_'".into());
    }
    if s.contains("--") || s.contains("..") {
        return Err("'--' and '..' are not allowed".into());
    }
    Ok(())
}

impl RepoRef {
    /// Parses `org/name`, `name`, optionally followed by `@revision` (a branch, tag, or
    /// commit; `refs/pr/N` for a pull request).
    pub fn parse(input: &str) -> Result<RepoRef, HubError> {
        let bad = |message: String| HubError::BadRepoId {
            input: input.to_string(),
            message,
        };
        let (id, revision) = match input.split_once('@') {
            Some((id, rev)) => (id, rev),
            None => (input, DEFAULT_REVISION),
        };
        let parts: Vec<&str> = id.split('/').collect();
        if parts.len() > 2 {
            return Err(bad("expected 'org/name' or 'name'".into()));
        }
        for p in &parts {
            valid_part(p).map_err(bad)?;
        }
        if id.len() > 96 {
            return Err(bad("longer than 96 characters".into()));
        }
        if id.ends_with(".git") {
            return Err(bad("ends with '.git'".into()));
        }
        if revision.is_empty()
            || revision.starts_with('/')
            || revision.ends_with('/')
            || revision
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == "..")
            || revision
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(bad(format!("'{revision}' is not a valid revision")));
        }
        Ok(RepoRef {
            repo_id: id.to_string(),
            revision: revision.to_string(),
        })
    }
}

impl std::fmt::Display for RepoRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.revision == DEFAULT_REVISION {
            write!(f, "{}", self.repo_id)
        } else {
            write!(f, "{}@{}", self.repo_id, self.revision)
        }
    }
}

/// What a model argument on the command line names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelArg {
    Local(PathBuf),
    Hub(RepoRef),
}

impl ModelArg {
    /// An existing path is a local folder. Otherwise `org/name[@revision]` is a Hub repo; a
    /// bare `name` stays a (missing) local path, so a mistyped folder name never goes to the
    /// network.
    pub fn classify(arg: &std::path::Path) -> ModelArg {
        if arg.exists() {
            return ModelArg::Local(arg.to_path_buf());
        }
        match arg.to_str() {
            Some(s) if s.split('@').next().is_some_and(|id| id.contains('/')) => {
                match RepoRef::parse(s) {
                    Ok(r) => ModelArg::Hub(r),
                    Err(_) => ModelArg::Local(arg.to_path_buf()),
                }
            }
            _ => ModelArg::Local(arg.to_path_buf()),
        }
    }
}

/// Download progress, one file at a time. Every method has a no-op default.
pub trait Progress: Sync {
    /// A download starts: `total` bytes, of which `done` are already there (a resume).
    fn file_started(&self, _file: &str, _total: u64, _done: u64) {}
    fn file_advanced(&self, _file: &str, _bytes: u64) {}
    /// The file is complete and verified (`downloaded == false`: it was already cached).
    fn file_finished(&self, _file: &str, _downloaded: bool) {}
    /// A note for the user (a retry, a fallback to the cache).
    fn note(&self, _text: &str) {}
}

/// No progress reporting.
pub struct Quiet;
impl Progress for Quiet {}

/// How [`fetch`] behaves besides the configuration.
pub struct FetchOptions<'a> {
    pub progress: &'a dyn Progress,
    /// Polled between chunks and retries; `true` stops with [`HubError::Interrupted`], keeping
    /// partial downloads for a later resume.
    pub should_stop: &'a (dyn Fn() -> bool + Sync),
    /// Attempts per file after a network error or a 5xx answer, resuming each time.
    pub attempts: u32,
    /// Pause before the second attempt; doubled for each further one.
    pub retry_pause: Duration,
}

impl Default for FetchOptions<'_> {
    fn default() -> Self {
        FetchOptions {
            progress: &Quiet,
            should_stop: &|| false,
            attempts: 5,
            retry_pause: Duration::from_millis(500),
        }
    }
}

/// A complete local copy of the files a conversion needs.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub repo: RepoRef,
    pub commit: String,
    /// `<cache>/models--ORG--NAME/snapshots/<commit>`: a model folder.
    pub dir: PathBuf,
    /// The selected files (relative to `dir`).
    pub files: Vec<String>,
    /// Bytes downloaded by this call (0 when everything was cached).
    pub downloaded: u64,
    /// True when the Hub was not asked (offline mode, or unreachable and the cache had it).
    pub from_cache: bool,
}

/// Makes sure the files a conversion needs for `repo` are in the cache, downloading what is
/// missing, and returns the snapshot folder.
pub fn fetch(cfg: &HubConfig, repo: &RepoRef, opts: &FetchOptions) -> Result<Snapshot, HubError> {
    let cache = RepoCache::new(&cfg.cache_dir, &repo.repo_id);
    if cfg.offline {
        return from_cache(&cache, repo);
    }
    let client = Client::new(cfg);
    let info = match with_retries(opts, || client.repo_info(&repo.repo_id, &repo.revision)) {
        Ok(info) => info,
        Err(e @ HubError::Network { .. }) => {
            // Unreachable Hub: like huggingface_hub, fall back to a complete cached snapshot.
            return match from_cache(&cache, repo) {
                Ok(s) => {
                    opts.progress.note(&format!(
                        "{e}; using the cached snapshot {} of {repo}",
                        s.commit
                    ));
                    Ok(s)
                }
                Err(_) => Err(e),
            };
        }
        Err(e) => return Err(e),
    };
    let commit = info.commit;
    let mut wanted = select::initial(&info.files);
    if !info
        .files
        .iter()
        .any(|f| select::is_weight(f) || f == select::INDEX)
    {
        return Err(HubError::NoWeights {
            repo: repo.repo_id.clone(),
            revision: repo.revision.clone(),
            found_bin: info
                .files
                .iter()
                .filter(|f| select::is_pickle(f))
                .cloned()
                .collect(),
        });
    }
    cache.write_ref(&repo.revision, &commit)?;
    let mut downloaded = 0;
    let mut i = 0;
    // The index (fetched before the weights) decides which shards are needed.
    while i < wanted.len() {
        let file = wanted[i].clone();
        downloaded += fetch_file(&client, &cache, repo, &commit, &file, opts)?;
        if file == select::INDEX {
            let index = cache.pointer(&commit, &file);
            let shards = select::index_shards(&index)?;
            for s in shards {
                if !info.files.contains(&s) {
                    return Err(HubError::NotFound {
                        what: format!(
                            "shard '{s}' (listed in {}) in '{}'@{}",
                            select::INDEX,
                            repo.repo_id,
                            repo.revision
                        ),
                        endpoint: client.endpoint.clone(),
                        message: None,
                        token_sent: client.token_sent(),
                    });
                }
                if !wanted.contains(&s) {
                    wanted.push(s);
                }
            }
        }
        i += 1;
    }
    Ok(Snapshot {
        repo: repo.clone(),
        dir: cache.snapshot(&commit),
        commit,
        files: wanted,
        downloaded,
        from_cache: false,
    })
}

/// Runs `f` up to `opts.attempts` times while it fails with a transient error.
fn with_retries<T>(
    opts: &FetchOptions,
    mut f: impl FnMut() -> Result<T, HubError>,
) -> Result<T, HubError> {
    let mut pause = opts.retry_pause;
    let mut attempt = 1;
    loop {
        match f() {
            Err(e) if e.is_transient() && attempt < opts.attempts.max(1) => {
                opts.progress.note(&format!(
                    "{e}; retrying ({}/{})",
                    attempt + 1,
                    opts.attempts
                ));
                let until = std::time::Instant::now() + pause;
                while std::time::Instant::now() < until {
                    if (opts.should_stop)() {
                        return Err(HubError::Interrupted);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                pause = pause.saturating_mul(2);
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Makes `file` of `commit` present in the cache; returns the bytes downloaded.
fn fetch_file(
    client: &Client,
    cache: &RepoCache,
    repo: &RepoRef,
    commit: &str,
    file: &str,
    opts: &FetchOptions,
) -> Result<u64, HubError> {
    // Files of a commit never change: a pointer that resolves is the file.
    if cache.has(commit, file) {
        opts.progress.file_finished(file, false);
        return Ok(0);
    }
    if (opts.should_stop)() {
        return Err(HubError::Interrupted);
    }
    let subj = Subject {
        repo: &repo.repo_id,
        revision: commit,
        file: Some(file),
    };
    let url = client.resolve_url(&repo.repo_id, commit, file);
    let meta = with_retries(opts, || client.file_meta(&url, &subj))?;
    if let Some(c) = &meta.commit {
        if c != commit {
            return Err(HubError::BadResponse {
                url,
                message: format!("asked for commit {commit}, the answer is for {c}"),
            });
        }
    }
    let blob = cache.blob(&meta.etag);
    if blob.metadata().ok().map(|m| m.len()) == Some(meta.size) {
        // Another revision (or a Python user) already has these bytes.
        cache.link(commit, file, &meta.etag)?;
        opts.progress.file_finished(file, false);
        return Ok(0);
    }
    let blobs = blob
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| cache.dir.join("blobs"));
    fs::create_dir_all(&blobs).map_err(|e| HubError::io(&blobs, e))?;
    let partial = cache.incomplete(&meta.etag);
    let before = fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
    let mut check = Checker::new(&meta);
    with_retries(opts, || {
        client.download(&url, &subj, &meta, &partial, &mut check, opts)
    })?;
    if let Err(message) = check.verify() {
        // Corrupt bytes must not be resumed from.
        let _ = fs::remove_file(&partial);
        return Err(HubError::Integrity {
            file: file.to_string(),
            message,
        });
    }
    fs::rename(&partial, &blob).map_err(|e| HubError::io(&blob, e))?;
    cache.link(commit, file, &meta.etag)?;
    opts.progress.file_finished(file, true);
    Ok(meta.size.saturating_sub(before.min(meta.size)))
}

/// The snapshot of `repo` as the cache has it, without asking the Hub.
fn from_cache(cache: &RepoCache, repo: &RepoRef) -> Result<Snapshot, HubError> {
    let offline = |message: String| HubError::Offline {
        repo: repo.repo_id.clone(),
        message,
    };
    let commit = cache.read_ref(&repo.revision).ok_or_else(|| {
        offline(format!(
            "the cache has no record of {repo} ({} is missing)",
            cache.dir.join("refs").join(&repo.revision).display()
        ))
    })?;
    let dir = cache.snapshot(&commit);
    if !dir.is_dir() {
        return Err(offline(format!(
            "the cache has no snapshot {} of {repo} ({} is missing)",
            commit,
            dir.display()
        )));
    }
    let files = select::complete_in(&dir).map_err(|missing| {
        offline(format!(
            "the cached snapshot {} of {repo} lacks {}",
            dir.display(),
            missing
        ))
    })?;
    Ok(Snapshot {
        repo: repo.clone(),
        commit,
        dir,
        files,
        downloaded: 0,
        from_cache: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_refs() {
        let r = RepoRef::parse("org/name").unwrap();
        assert_eq!(
            (r.repo_id.as_str(), r.revision.as_str()),
            ("org/name", "main")
        );
        let r = RepoRef::parse("Qwen/Qwen2.5-0.5B-Instruct@refs/pr/12").unwrap();
        assert_eq!(r.repo_id, "Qwen/Qwen2.5-0.5B-Instruct");
        assert_eq!(r.revision, "refs/pr/12");
        assert_eq!(r.to_string(), "Qwen/Qwen2.5-0.5B-Instruct@refs/pr/12");
        assert_eq!(RepoRef::parse("gpt2").unwrap().to_string(), "gpt2");
        assert_eq!(
            ModelArg::classify(std::path::Path::new("org/name@v2")),
            ModelArg::Hub(RepoRef::parse("org/name@v2").unwrap())
        );
        for local in ["name", "./org/name", "/no/such/dir", "a/b/c", "org/x@"] {
            assert!(
                matches!(
                    ModelArg::classify(std::path::Path::new(local)),
                    ModelArg::Local(_)
                ),
                "{local}"
            );
        }
        let here = std::env::temp_dir();
        assert_eq!(ModelArg::classify(&here), ModelArg::Local(here.clone()));
        for bad in [
            "",
            "a/b/c",
            "/abs/path",
            "./rel",
            "../up",
            "org/",
            "org/na me",
            "org/-x",
            "org/a--b",
            "org/a..b",
            "org/x.git",
            "org/x@",
            "org/x@a b",
            "org/x@../../etc",
            "org/x@/abs",
        ] {
            assert!(RepoRef::parse(bad).is_err(), "{bad}");
        }
    }
}
