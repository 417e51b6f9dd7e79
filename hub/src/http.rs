//! The few Hub endpoints a download needs, over blocking HTTP/1.1:
//!
//! - `GET  {endpoint}/api/models/{repo}/revision/{rev}`: the commit a revision points to and
//!   the repo's file list (`sha`, `siblings[].rfilename`);
//! - `HEAD {endpoint}/{repo}/resolve/{commit}/{file}`: the file's ETag (`X-Linked-Etag` for LFS
//!   files: their sha256; else `ETag`: the git blob sha1), size (`X-Linked-Size` or
//!   `Content-Length`) and commit (`X-Repo-Commit`). Like huggingface_hub, relative redirects
//!   (a renamed repo) are followed and an absolute one (LFS files live on a CDN) is not: its
//!   headers are the answer;
//! - `GET` of the same URL, redirects followed, with `Range: bytes=N-` to resume.
//!
//! Redirects are followed here rather than by ureq so that the token is sent to the Hub's own
//! host only, never to the CDN (or any other host) a redirect points to.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::time::Duration;

use sha1::Digest as _;
use ureq::http::Response;
use ureq::Body;

use crate::error::HubError;
use crate::{FetchOptions, HubConfig};

const MAX_REDIRECTS: usize = 10;
/// Repo listings of the largest repos are a few MB.
const MAX_JSON: u64 = 64 << 20;
const CHUNK: usize = 256 << 10;

pub(crate) struct Client {
    agent: ureq::Agent,
    token: Option<String>,
    pub endpoint: String,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Method {
    Get,
    Head,
}

/// What a HEAD of a file says about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FileMeta {
    pub etag: String,
    pub size: u64,
    pub commit: Option<String>,
}

/// The answer to the repo listing.
pub(crate) struct RepoInfo {
    pub commit: String,
    pub files: Vec<String>,
}

/// Which repo and file a request is about, for error messages.
pub(crate) struct Subject<'a> {
    pub repo: &'a str,
    pub revision: &'a str,
    pub file: Option<&'a str>,
}

/// `scheme://host[:port]` of a URL.
fn origin(url: &str) -> &str {
    let after = url.find("://").map(|i| i + 3).unwrap_or(0);
    match url[after..].find('/') {
        Some(i) => &url[..after + i],
        None => url,
    }
}

/// Resolves a `Location` header against the URL it came from.
fn join_location(base: &str, loc: &str) -> String {
    if loc.starts_with("http://") || loc.starts_with("https://") {
        loc.to_string()
    } else if loc.starts_with('/') {
        format!("{}{loc}", origin(base))
    } else {
        let path_end = base.split('?').next().unwrap_or(base);
        match path_end.rfind('/') {
            Some(i) if i >= origin(base).len() => format!("{}{loc}", &path_end[..=i]),
            _ => format!("{}/{loc}", origin(base)),
        }
    }
}

/// Percent-encodes everything but unreserved characters (and `/` when `keep_slash`), as
/// Python's `urllib.parse.quote` does for the Hub's URLs.
pub(crate) fn quote(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        let plain = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && b == b'/');
        if plain {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// huggingface_hub's `_normalize_etag`: drop a weak-validator prefix and the quotes.
fn normalize_etag(e: &str) -> String {
    e.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_string()
}

fn header<'r>(resp: &'r Response<Body>, name: &str) -> Option<&'r str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

impl Client {
    pub fn new(cfg: &HubConfig) -> Client {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .max_redirects(0)
            .http_status_as_error(false)
            .user_agent(concat!("ggforge-hub/", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(Duration::from_secs(20)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .build()
            .into();
        Client {
            agent,
            token: cfg.token.clone(),
            endpoint: cfg.endpoint.clone(),
        }
    }

    pub fn token_sent(&self) -> bool {
        self.token.is_some()
    }

    pub fn resolve_url(&self, repo: &str, revision: &str, file: &str) -> String {
        format!(
            "{}/{repo}/resolve/{}/{}",
            self.endpoint,
            quote(revision, false),
            quote(file, true)
        )
    }

    /// One request, following redirects by hand (see the module documentation). With
    /// `follow_absolute == false` an absolute redirect is returned as the answer.
    fn send(
        &self,
        method: Method,
        url: &str,
        range_from: Option<u64>,
        follow_absolute: bool,
    ) -> Result<(String, Response<Body>), HubError> {
        let hub_origin = origin(&self.endpoint).to_string();
        let mut url = url.to_string();
        for _ in 0..=MAX_REDIRECTS {
            let same_host = origin(&url) == hub_origin;
            let resp = match method {
                Method::Get => {
                    let mut rb = self.agent.get(&url).header("Accept-Encoding", "identity");
                    if let Some(n) = range_from {
                        rb = rb.header("Range", &format!("bytes={n}-"));
                    }
                    if let (Some(t), true) = (&self.token, same_host) {
                        rb = rb.header("Authorization", &format!("Bearer {t}"));
                    }
                    rb.call()
                }
                Method::Head => {
                    let mut rb = self.agent.head(&url).header("Accept-Encoding", "identity");
                    if let (Some(t), true) = (&self.token, same_host) {
                        rb = rb.header("Authorization", &format!("Bearer {t}"));
                    }
                    rb.call()
                }
            }
            .map_err(|e| HubError::Network {
                url: url.clone(),
                message: e.to_string(),
            })?;
            let status = resp.status().as_u16();
            if !(300..400).contains(&status) || status == 304 {
                return Ok((url, resp));
            }
            let Some(loc) = header(&resp, "location") else {
                return Ok((url, resp));
            };
            let relative = !(loc.starts_with("http://") || loc.starts_with("https://"));
            if !relative && !follow_absolute {
                return Ok((url, resp));
            }
            url = join_location(&url, loc);
        }
        Err(HubError::Network {
            url,
            message: format!("more than {MAX_REDIRECTS} redirects"),
        })
    }

    /// Maps an error status to a [`HubError`] that says what was not found or not allowed.
    fn status_error(&self, url: &str, resp: &Response<Body>, subj: &Subject) -> HubError {
        let status = resp.status().as_u16();
        let code = header(resp, "x-error-code").unwrap_or("");
        let message = header(resp, "x-error-message").map(str::to_string);
        let not_found = |what: String| HubError::NotFound {
            what,
            endpoint: self.endpoint.clone(),
            message: message.clone(),
            token_sent: self.token_sent(),
        };
        match (status, code) {
            (401, "RepoNotFound") => not_found(format!("repository '{}'", subj.repo)),
            (401 | 403, _) => HubError::Unauthorized {
                repo: subj.repo.to_string(),
                status,
                message,
                token_sent: self.token_sent(),
            },
            (404, "RevisionNotFound") => {
                not_found(format!("revision '{}' of '{}'", subj.revision, subj.repo))
            }
            (404, _) if subj.file.is_some() && code != "RepoNotFound" => not_found(format!(
                "file '{}' in '{}'@{}",
                subj.file.unwrap_or_default(),
                subj.repo,
                subj.revision
            )),
            (404, _) => not_found(format!("repository '{}'", subj.repo)),
            _ => HubError::Http {
                url: url.to_string(),
                status,
                message,
            },
        }
    }

    /// The commit `revision` points to, and the repo's files.
    pub fn repo_info(&self, repo: &str, revision: &str) -> Result<RepoInfo, HubError> {
        let url = format!(
            "{}/api/models/{repo}/revision/{}",
            self.endpoint,
            quote(revision, false)
        );
        let subj = Subject {
            repo,
            revision,
            file: None,
        };
        let (url, resp) = self.send(Method::Get, &url, None, true)?;
        if !resp.status().is_success() {
            return Err(self.status_error(&url, &resp, &subj));
        }
        let bad = |message: String| HubError::BadResponse {
            url: url.clone(),
            message,
        };
        let text = resp
            .into_body()
            .into_with_config()
            .limit(MAX_JSON)
            .read_to_string()
            .map_err(|e| HubError::Network {
                url: url.clone(),
                message: e.to_string(),
            })?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        let commit = json
            .get("sha")
            .and_then(|v| v.as_str())
            .filter(|s| crate::cache::is_commit_hash(s))
            .ok_or_else(|| bad("no commit hash ('sha')".into()))?
            .to_string();
        let files = json
            .get("siblings")
            .and_then(|v| v.as_array())
            .ok_or_else(|| bad("no file list ('siblings')".into()))?
            .iter()
            .filter_map(|s| s.get("rfilename").and_then(|n| n.as_str()))
            .map(str::to_string)
            .collect();
        Ok(RepoInfo { commit, files })
    }

    /// HEAD of a file: its ETag, size and commit.
    pub fn file_meta(&self, url: &str, subj: &Subject) -> Result<FileMeta, HubError> {
        let (final_url, resp) = self.send(Method::Head, url, None, false)?;
        let status = resp.status().as_u16();
        if !(200..400).contains(&status) {
            return Err(self.status_error(&final_url, &resp, subj));
        }
        let bad = |message: &str| HubError::BadResponse {
            url: final_url.clone(),
            message: format!("{message} (is HF_ENDPOINT a Hugging Face Hub or mirror?)"),
        };
        let etag = header(&resp, "x-linked-etag")
            .or_else(|| header(&resp, "etag"))
            .map(normalize_etag)
            .filter(|e| !e.is_empty() && !e.contains(['/', '\\']) && e != "." && e != "..")
            .ok_or_else(|| bad("no usable ETag header"))?;
        let size = header(&resp, "x-linked-size")
            .or_else(|| header(&resp, "content-length"))
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| bad("no file size (X-Linked-Size or Content-Length)"))?;
        let commit = header(&resp, "x-repo-commit").map(str::to_string);
        Ok(FileMeta { etag, size, commit })
    }

    /// One download attempt into `partial`, appending to what it already holds when the server
    /// honours a range request. `check` has hashed exactly the bytes already in `partial` (or
    /// is reset here). Returns when the file has `meta.size` bytes; a dropped connection is a
    /// [`HubError::Network`] with the bytes received so far kept on disk.
    pub fn download(
        &self,
        url: &str,
        subj: &Subject,
        meta: &FileMeta,
        partial: &Path,
        check: &mut Checker,
        opts: &FetchOptions,
    ) -> Result<(), HubError> {
        let (progress, should_stop) = (opts.progress, opts.should_stop);
        let name = subj.file.unwrap_or_default();
        let mut have = fs::metadata(partial).map(|m| m.len()).unwrap_or(0);
        if have > meta.size || have != check.count {
            // Rehash what is on disk (a resume from an earlier run), or start over.
            check.reset();
            if have > meta.size {
                truncate(partial)?;
                have = 0;
            } else if have > 0 {
                check.hash_file(partial)?;
            }
        }
        if have == meta.size {
            return Ok(());
        }
        let (final_url, resp) = self.send(Method::Get, url, (have > 0).then_some(have), true)?;
        let status = resp.status().as_u16();
        match status {
            206 => {
                let start = header(&resp, "content-range")
                    .and_then(|r| r.trim().strip_prefix("bytes "))
                    .and_then(|r| r.split('-').next())
                    .and_then(|s| s.trim().parse::<u64>().ok());
                if start != Some(have) {
                    return Err(HubError::BadResponse {
                        url: final_url,
                        message: format!(
                            "asked for bytes {have}- and got Content-Range {:?}",
                            header(&resp, "content-range")
                        ),
                    });
                }
            }
            200 => {
                if have > 0 {
                    // The server ignored the range: start over.
                    truncate(partial)?;
                    check.reset();
                    have = 0;
                }
            }
            _ => return Err(self.status_error(&final_url, &resp, subj)),
        }
        progress.file_started(name, meta.size, have);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(partial)
            .map_err(|e| HubError::io(partial, e))?;
        let mut out = BufWriter::with_capacity(CHUNK, file);
        let mut body = resp.into_body().into_reader();
        let mut buf = vec![0u8; CHUNK];
        let result = loop {
            if should_stop() {
                break Err(HubError::Interrupted);
            }
            let n = match body.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    break Err(HubError::Network {
                        url: final_url.clone(),
                        message: format!(
                            "connection lost after {} of {} bytes: {e}",
                            have, meta.size
                        ),
                    })
                }
            };
            // Never write past the announced size.
            let n = n.min((meta.size - have) as usize);
            if let Err(e) = out.write_all(&buf[..n]) {
                break Err(HubError::io(partial, e));
            }
            check.update(&buf[..n]);
            have += n as u64;
            progress.file_advanced(name, n as u64);
            if have == meta.size {
                break Ok(());
            }
        };
        // Keep what arrived, whatever happened, so the next attempt resumes from it.
        let flushed = out
            .into_inner()
            .map_err(|e| HubError::io(partial, e.into_error()))
            .and_then(|f| f.sync_data().map_err(|e| HubError::io(partial, e)));
        if let Err(e) = flushed {
            // What is on disk no longer matches the hash state.
            check.reset();
            return Err(e);
        }
        result?;
        if have < meta.size {
            return Err(HubError::Network {
                url: final_url,
                message: format!("connection closed after {have} of {} bytes", meta.size),
            });
        }
        Ok(())
    }
}

fn truncate(path: &Path) -> Result<(), HubError> {
    File::create(path)
        .map(|_| ())
        .map_err(|e| HubError::io(path, e))
}

/// Checks a download against its ETag: an LFS ETag is the file's sha256; a regular file's is
/// the sha1 of its git blob (`"blob <len>\0"` + bytes). Any other ETag (some mirrors) is only
/// a name, and the size is all that can be checked.
pub(crate) struct Checker {
    etag: String,
    size: u64,
    count: u64,
    sha256: Option<sha2::Sha256>,
    git_sha1: Option<sha1::Sha1>,
    plain_sha1: Option<sha1::Sha1>,
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Checker {
    pub fn new(meta: &FileMeta) -> Checker {
        let mut c = Checker {
            etag: meta.etag.to_ascii_lowercase(),
            size: meta.size,
            count: 0,
            sha256: None,
            git_sha1: None,
            plain_sha1: None,
        };
        c.reset();
        c
    }

    fn reset(&mut self) {
        self.count = 0;
        self.sha256 = is_hex(&self.etag, 64).then(sha2::Sha256::new);
        if is_hex(&self.etag, 40) {
            let mut g = sha1::Sha1::new();
            g.update(format!("blob {}\0", self.size).as_bytes());
            self.git_sha1 = Some(g);
            self.plain_sha1 = Some(sha1::Sha1::new());
        } else {
            self.git_sha1 = None;
            self.plain_sha1 = None;
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        self.count += bytes.len() as u64;
        if let Some(h) = &mut self.sha256 {
            h.update(bytes);
        }
        if let Some(h) = &mut self.git_sha1 {
            h.update(bytes);
        }
        if let Some(h) = &mut self.plain_sha1 {
            h.update(bytes);
        }
    }

    fn hash_file(&mut self, path: &Path) -> Result<(), HubError> {
        let mut f = File::open(path).map_err(|e| HubError::io(path, e))?;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = f.read(&mut buf).map_err(|e| HubError::io(path, e))?;
            if n == 0 {
                return Ok(());
            }
            self.update(&buf[..n]);
        }
    }

    /// `Err(why)` when the bytes do not match the size or the hash the ETag names.
    pub fn verify(self) -> Result<(), String> {
        if self.count != self.size {
            return Err(format!(
                "{} bytes received, the Hub announced {}",
                self.count, self.size
            ));
        }
        if let Some(h) = self.sha256 {
            let got = hex(&h.finalize());
            if got != self.etag {
                return Err(format!("sha256 is {got}, the Hub says {}", self.etag));
            }
        }
        if let (Some(g), Some(p)) = (self.git_sha1, self.plain_sha1) {
            let (g, p) = (hex(&g.finalize()), hex(&p.finalize()));
            if g != self.etag && p != self.etag {
                return Err(format!("git blob sha1 is {g}, the Hub says {}", self.etag));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(origin("http://127.0.0.1:8/a/b"), "http://127.0.0.1:8");
        assert_eq!(origin("https://h"), "https://h");
        assert_eq!(join_location("http://h:1/a/b?x", "/c"), "http://h:1/c");
        assert_eq!(join_location("http://h:1/a/b", "c"), "http://h:1/a/c");
        assert_eq!(
            join_location("http://h:1/a", "https://cdn/x"),
            "https://cdn/x"
        );
        assert_eq!(quote("refs/pr/1", false), "refs%2Fpr%2F1");
        assert_eq!(quote("a b/ü.json", true), "a%20b/%C3%BC.json");
        assert_eq!(normalize_etag("W/\"abc\""), "abc");
    }

    #[test]
    fn checker_knows_both_etag_kinds() {
        let data = b"hello world\n";
        // `git hash-object` of the data, and its sha256.
        let git = "3b18e512dba79e4c8300dd08aeb37f8e728b8dad";
        let sha = "a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447";
        for etag in [git, sha] {
            let meta = FileMeta {
                etag: etag.into(),
                size: data.len() as u64,
                commit: None,
            };
            let mut c = Checker::new(&meta);
            c.update(&data[..5]);
            c.update(&data[5..]);
            assert_eq!(c.verify(), Ok(()), "{etag}");
            let mut c = Checker::new(&meta);
            c.update(b"hello World\n");
            assert!(c.verify().is_err(), "{etag}");
        }
        let meta = FileMeta {
            etag: "opaque-mirror-etag".into(),
            size: 3,
            commit: None,
        };
        let mut c = Checker::new(&meta);
        c.update(b"abcd");
        assert!(c.verify().unwrap_err().contains("4 bytes received"));
    }
}
