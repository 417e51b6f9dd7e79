//! The huggingface_hub cache layout, shared with Python users:
//!
//! ```text
//! <cache>/models--ORG--NAME/
//!   blobs/<etag>                 file contents, named by ETag (sha256 for LFS files, git sha1 else)
//!   blobs/<etag>.incomplete      a download in progress (resumed from its length)
//!   refs/<revision>              the commit a branch or tag pointed to when last resolved
//!   snapshots/<commit>/<file>    relative symlinks into blobs/
//! ```

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::HubError;

/// The folder of one model repo in the cache.
#[derive(Clone, Debug)]
pub struct RepoCache {
    pub dir: PathBuf,
}

/// `true` for a full 40-hex-digit commit id (such revisions need no `refs/` entry).
pub fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl RepoCache {
    pub fn new(cache_dir: &Path, repo_id: &str) -> RepoCache {
        RepoCache {
            dir: cache_dir.join(format!("models--{}", repo_id.replace('/', "--"))),
        }
    }

    pub fn blob(&self, etag: &str) -> PathBuf {
        self.dir.join("blobs").join(etag)
    }

    pub fn incomplete(&self, etag: &str) -> PathBuf {
        self.dir.join("blobs").join(format!("{etag}.incomplete"))
    }

    pub fn snapshot(&self, commit: &str) -> PathBuf {
        self.dir.join("snapshots").join(commit)
    }

    pub fn pointer(&self, commit: &str, file: &str) -> PathBuf {
        self.snapshot(commit).join(file)
    }

    fn ref_path(&self, revision: &str) -> PathBuf {
        self.dir.join("refs").join(revision)
    }

    /// The commit `revision` resolved to last time, if recorded.
    pub fn read_ref(&self, revision: &str) -> Option<String> {
        if is_commit_hash(revision) {
            return Some(revision.to_string());
        }
        let text = fs::read_to_string(self.ref_path(revision)).ok()?;
        let commit = text.trim();
        is_commit_hash(commit).then(|| commit.to_string())
    }

    /// Records that `revision` is `commit` (huggingface_hub writes the bare hash, no newline).
    pub fn write_ref(&self, revision: &str, commit: &str) -> Result<(), HubError> {
        if revision == commit {
            return Ok(());
        }
        let path = self.ref_path(revision);
        if fs::read_to_string(&path).ok().as_deref() == Some(commit) {
            return Ok(());
        }
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| HubError::io(parent, e))?;
        }
        fs::write(&path, commit).map_err(|e| HubError::io(&path, e))
    }

    /// Whether `file` of `commit` is in the cache (a pointer that resolves to a file).
    pub fn has(&self, commit: &str, file: &str) -> bool {
        self.pointer(commit, file).is_file()
    }

    /// Points `snapshots/<commit>/<file>` at `blobs/<etag>` with a relative symlink, as
    /// huggingface_hub does (a copy where symlinks are not available).
    pub fn link(&self, commit: &str, file: &str, etag: &str) -> Result<(), HubError> {
        let pointer = self.pointer(commit, file);
        let blob = self.blob(etag);
        let parent = pointer
            .parent()
            .ok_or_else(|| HubError::io(&pointer, io::Error::other("no parent directory")))?;
        fs::create_dir_all(parent).map_err(|e| HubError::io(parent, e))?;
        // A dangling or stale pointer is replaced.
        if fs::symlink_metadata(&pointer).is_ok() {
            fs::remove_file(&pointer).map_err(|e| HubError::io(&pointer, e))?;
        }
        // snapshots/<commit>/<a/b/file> → ../../(../)*blobs/<etag>
        let depth = 2 + file.matches('/').count();
        let target = PathBuf::from("../".repeat(depth)).join("blobs").join(etag);
        #[cfg(unix)]
        if std::os::unix::fs::symlink(&target, &pointer).is_ok() {
            return Ok(());
        }
        let _ = target;
        fs::copy(&blob, &pointer)
            .map(|_| ())
            .map_err(|e| HubError::io(&pointer, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_huggingface_hub() {
        let c = RepoCache::new(Path::new("/c"), "org/name");
        assert_eq!(c.dir, Path::new("/c/models--org--name"));
        assert_eq!(c.blob("abc"), Path::new("/c/models--org--name/blobs/abc"));
        assert_eq!(
            c.pointer("0123", "sub/x.jinja"),
            Path::new("/c/models--org--name/snapshots/0123/sub/x.jinja")
        );
        assert!(is_commit_hash("0123456789abcdef0123456789abcdef01234567"));
        assert!(!is_commit_hash("main"));
    }

    #[test]
    fn links_are_relative_and_refs_round_trip() {
        let root = std::env::temp_dir().join(format!("hub-cache-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let c = RepoCache::new(&root, "org/name");
        fs::create_dir_all(c.dir.join("blobs")).unwrap();
        fs::write(c.blob("e1"), b"hello").unwrap();
        let commit = "0123456789abcdef0123456789abcdef01234567";
        c.link(commit, "a/b.txt", "e1").unwrap();
        c.link(commit, "top.txt", "e1").unwrap();
        assert_eq!(fs::read(c.pointer(commit, "a/b.txt")).unwrap(), b"hello");
        assert_eq!(fs::read(c.pointer(commit, "top.txt")).unwrap(), b"hello");
        #[cfg(unix)]
        assert_eq!(
            fs::read_link(c.pointer(commit, "a/b.txt")).unwrap(),
            Path::new("../../../blobs/e1")
        );
        assert!(c.has(commit, "top.txt"));
        assert_eq!(c.read_ref("main"), None);
        c.write_ref("main", commit).unwrap();
        c.write_ref("refs/pr/1", commit).unwrap();
        assert_eq!(fs::read_to_string(c.dir.join("refs/main")).unwrap(), commit);
        assert_eq!(c.read_ref("refs/pr/1").as_deref(), Some(commit));
        assert_eq!(c.read_ref(commit).as_deref(), Some(commit));
        fs::remove_dir_all(&root).unwrap();
    }
}
