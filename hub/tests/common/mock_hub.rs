//! A mock Hugging Face Hub on 127.0.0.1 for tests: the model-info API, the `resolve` endpoint
//! (HEAD and GET, with ETag / X-Repo-Commit / X-Linked-* headers, range requests), a separate
//! "CDN" origin that LFS files redirect to, gated repos (401 without the right token), 404s
//! with the Hub's X-Error-Code, renamed repos (relative redirects), and injected faults: a
//! connection dropped mid-file, corrupted bytes, a 503.
//!
//! Shared by hub/tests and cli/tests (`#[path]`). Plain std: a thread per connection, one
//! request per connection (`Connection: close`). Dropping the `MockHub` stops both servers.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub struct MockFile {
    pub name: String,
    pub bytes: Arc<Vec<u8>>,
    /// Served through the CDN redirect, with a sha256 ETag (else a git-sha1 ETag, inline).
    pub lfs: bool,
}

impl MockFile {
    pub fn new(name: &str, bytes: Vec<u8>, lfs: bool) -> MockFile {
        MockFile {
            name: name.to_string(),
            bytes: Arc::new(bytes),
            lfs,
        }
    }

    pub fn sha256(&self) -> String {
        hub::hash::sha256_hex(&self.bytes)
    }

    pub fn git_sha1(&self) -> String {
        hub::hash::git_blob_sha1_hex(&self.bytes)
    }

    /// The ETag the Hub gives this file (also its blob name in the cache).
    pub fn etag(&self) -> String {
        if self.lfs {
            self.sha256()
        } else {
            self.git_sha1()
        }
    }
}

pub struct MockRepo {
    pub id: String,
    pub commit: String,
    /// Branch or tag → commit (the commit itself always resolves).
    pub refs: Vec<(String, String)>,
    pub files: Vec<MockFile>,
    /// A gated repo: requests need `Authorization: Bearer <this>`.
    pub token: Option<String>,
    /// Old names that redirect (relative `Location`) to this repo.
    pub old_names: Vec<String>,
}

impl MockRepo {
    pub fn new(id: &str, commit: &str, files: Vec<MockFile>) -> MockRepo {
        MockRepo {
            id: id.to_string(),
            commit: commit.to_string(),
            refs: vec![("main".to_string(), commit.to_string())],
            files,
            token: None,
            old_names: Vec::new(),
        }
    }

    pub fn file(&self, name: &str) -> &MockFile {
        self.files
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("no mock file {name}"))
    }
}

/// One request as the servers saw it.
#[derive(Clone, Debug)]
pub struct Logged {
    /// "hub" or "cdn".
    pub server: &'static str,
    pub method: String,
    pub path: String,
    pub range: Option<String>,
    pub authorization: Option<String>,
}

#[derive(Default)]
pub struct Faults {
    /// File name → after how many body bytes the next GET of it drops the connection (once).
    pub drop_after: HashMap<String, usize>,
    /// Files whose bytes are served with one byte flipped.
    pub corrupt: Vec<String>,
    /// Request paths answered once with 503.
    pub unavailable_once: Vec<String>,
    /// Pause between body chunks of 64 KiB (a slow link).
    pub chunk_pause: Option<Duration>,
}

struct State {
    repos: Vec<MockRepo>,
    faults: Mutex<Faults>,
    log: Mutex<Vec<Logged>>,
    cdn_url: String,
}

pub struct MockHub {
    pub url: String,
    pub cdn_url: String,
    state: Arc<State>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    addrs: Vec<std::net::SocketAddr>,
}

impl MockHub {
    pub fn start(repos: Vec<MockRepo>, faults: Faults) -> MockHub {
        let hub = TcpListener::bind("127.0.0.1:0").expect("bind mock hub");
        let cdn = TcpListener::bind("127.0.0.1:0").expect("bind mock cdn");
        let (ha, ca) = (hub.local_addr().unwrap(), cdn.local_addr().unwrap());
        let cdn_url = format!("http://{ca}");
        let state = Arc::new(State {
            repos,
            faults: Mutex::new(faults),
            log: Mutex::new(Vec::new()),
            cdn_url: cdn_url.clone(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (listener, server) in [(hub, "hub"), (cdn, "cdn")] {
            let state = state.clone();
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let state = state.clone();
                    std::thread::spawn(move || {
                        let _ = handle(&state, server, conn);
                    });
                }
            }));
        }
        MockHub {
            url: format!("http://{ha}"),
            cdn_url,
            state,
            stop,
            threads,
            addrs: vec![ha, ca],
        }
    }

    pub fn log(&self) -> Vec<Logged> {
        self.state.log.lock().unwrap().clone()
    }

    pub fn clear_log(&self) {
        self.state.log.lock().unwrap().clear();
    }

    /// GETs that transferred file contents (resolve of a non-LFS file, or the CDN).
    pub fn content_gets(&self) -> Vec<Logged> {
        self.log()
            .into_iter()
            .filter(|l| l.method == "GET" && (l.server == "cdn" || l.path.contains("/resolve/")))
            .collect()
    }

    pub fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.state.faults.lock().unwrap()
    }
}

impl Drop for MockHub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for a in &self.addrs {
            let _ = TcpStream::connect_timeout(a, Duration::from_secs(1));
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Answer {
    status: u16,
    reason: &'static str,
    headers: Vec<(String, String)>,
    body: Option<(Arc<Vec<u8>>, String)>,
}

impl Answer {
    fn new(status: u16, reason: &'static str) -> Answer {
        Answer {
            status,
            reason,
            headers: Vec::new(),
            body: None,
        }
    }
    fn header(mut self, k: &str, v: impl Into<String>) -> Answer {
        self.headers.push((k.to_string(), v.into()));
        self
    }
    fn error(status: u16, reason: &'static str, code: &str, message: &str) -> Answer {
        Answer::new(status, reason)
            .header("X-Error-Code", code)
            .header("X-Error-Message", message)
    }
}

fn handle(state: &State, server: &'static str, mut conn: TcpStream) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    if method.is_empty() {
        return Ok(());
    }
    state.log.lock().unwrap().push(Logged {
        server,
        method: method.clone(),
        path: path.clone(),
        range: headers.get("range").cloned(),
        authorization: headers.get("authorization").cloned(),
    });
    let auth = headers.get("authorization").cloned();
    let unavailable = {
        let mut f = state.faults.lock().unwrap();
        match f.unavailable_once.iter().position(|p| *p == path) {
            Some(i) => {
                f.unavailable_once.remove(i);
                true
            }
            None => false,
        }
    };
    let answer = if unavailable {
        Answer::new(503, "Service Unavailable")
    } else if server == "cdn" {
        cdn(state, &path)
    } else {
        hub(state, &method, &path, auth.as_deref())
    };
    send(state, &mut conn, &method, answer, headers.get("range"))
}

fn cdn(state: &State, path: &str) -> Answer {
    let Some(sha) = path.strip_prefix("/blobs/") else {
        return Answer::new(404, "Not Found");
    };
    for r in &state.repos {
        for f in &r.files {
            if f.lfs && f.sha256() == sha {
                let mut a = Answer::new(200, "OK").header("ETag", format!("\"{sha}\""));
                a.body = Some((f.bytes.clone(), f.name.clone()));
                return a;
            }
        }
    }
    Answer::new(404, "Not Found")
}

fn hub(state: &State, method: &str, path: &str, auth: Option<&str>) -> Answer {
    // /api/models/{org}/{name}/revision/{rev}  or  /{org}/{name}/resolve/{rev}/{file}
    let (api, rest) = match path.strip_prefix("/api/models/") {
        Some(rest) => (true, rest),
        None => (false, path.trim_start_matches('/')),
    };
    let marker = if api { "/revision/" } else { "/resolve/" };
    let Some((repo_id, tail)) = rest.split_once(marker) else {
        return Answer::new(404, "Not Found");
    };
    let Some(repo) = state
        .repos
        .iter()
        .find(|r| r.id == repo_id || r.old_names.iter().any(|o| o == repo_id))
    else {
        return Answer::error(404, "Not Found", "RepoNotFound", "Repository not found");
    };
    if repo.id != repo_id {
        let to = if api {
            format!("/api/models/{}{marker}{tail}", repo.id)
        } else {
            format!("/{}{marker}{tail}", repo.id)
        };
        return Answer::new(307, "Temporary Redirect").header("Location", to);
    }
    if let Some(t) = &repo.token {
        if auth != Some(format!("Bearer {t}").as_str()) {
            return Answer::error(
                401,
                "Unauthorized",
                "GatedRepo",
                &format!("Access to model {} is restricted. You must have access to it and be authenticated to access it. Please log in.", repo.id),
            );
        }
    }
    let (rev, file) = match tail.split_once('/') {
        Some((r, f)) if !api => (percent_decode(r), Some(percent_decode(f))),
        _ => (percent_decode(tail), None),
    };
    let commit = if rev == repo.commit {
        Some(repo.commit.clone())
    } else {
        repo.refs
            .iter()
            .find(|(n, _)| *n == rev)
            .map(|(_, c)| c.clone())
    };
    let Some(commit) = commit else {
        return Answer::error(
            404,
            "Not Found",
            "RevisionNotFound",
            &format!("Invalid rev id: {rev}"),
        );
    };
    if api {
        let siblings: Vec<String> = repo
            .files
            .iter()
            .map(|f| format!("{{\"rfilename\":\"{}\"}}", f.name))
            .collect();
        let json = format!(
            "{{\"id\":\"{}\",\"sha\":\"{commit}\",\"private\":false,\"siblings\":[{}]}}",
            repo.id,
            siblings.join(",")
        );
        let mut a = Answer::new(200, "OK").header("Content-Type", "application/json");
        a.body = Some((Arc::new(json.into_bytes()), String::new()));
        return a;
    }
    let file = file.unwrap_or_default();
    let Some(f) = repo.files.iter().find(|f| f.name == file) else {
        return Answer::error(
            404,
            "Not Found",
            "EntryNotFound",
            &format!("{file} does not exist on \"{rev}\""),
        );
    };
    let _ = method;
    if f.lfs {
        Answer::new(302, "Found")
            .header(
                "Location",
                format!("{}/blobs/{}", state.cdn_url, f.sha256()),
            )
            .header("X-Repo-Commit", commit)
            .header("X-Linked-Etag", format!("\"{}\"", f.sha256()))
            .header("X-Linked-Size", f.bytes.len().to_string())
            .header("ETag", "\"not-the-content-hash\"")
    } else {
        let mut a = Answer::new(200, "OK")
            .header("X-Repo-Commit", commit)
            .header("ETag", format!("\"{}\"", f.git_sha1()));
        a.body = Some((f.bytes.clone(), f.name.clone()));
        a
    }
}

fn send(
    state: &State,
    conn: &mut TcpStream,
    method: &str,
    answer: Answer,
    range: Option<&String>,
) -> std::io::Result<()> {
    let mut status = (answer.status, answer.reason);
    let mut headers = answer.headers;
    let mut body: &[u8] = &[];
    let mut drop_after = None;
    let mut pause = None;
    let owned;
    if let Some((bytes, name)) = &answer.body {
        let faults = state.faults.lock().unwrap();
        pause = faults.chunk_pause;
        let corrupt = faults.corrupt.contains(name);
        drop(faults);
        owned = if corrupt {
            let mut v = bytes.to_vec();
            let mid = v.len() / 2;
            if let Some(b) = v.get_mut(mid) {
                *b ^= 0x55;
            }
            Arc::new(v)
        } else {
            bytes.clone()
        };
        let total = owned.len();
        let start = range
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|n| n.parse::<usize>().ok());
        body = &owned[..];
        if let Some(start) = start {
            if start >= total {
                status = (416, "Range Not Satisfiable");
                headers.push(("Content-Range".into(), format!("bytes */{total}")));
                body = &[];
            } else {
                status = (206, "Partial Content");
                headers.push((
                    "Content-Range".into(),
                    format!("bytes {start}-{}/{total}", total - 1),
                ));
                body = &owned[start..];
            }
        }
        if method == "GET" && status.0 < 300 {
            drop_after = state.faults.lock().unwrap().drop_after.remove(name);
        }
    }
    let mut head = format!("HTTP/1.1 {} {}\r\n", status.0, status.1);
    for (k, v) in &headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    conn.write_all(head.as_bytes())?;
    if method == "HEAD" {
        return conn.flush();
    }
    let limit = drop_after.unwrap_or(usize::MAX).min(body.len());
    for chunk in body[..limit].chunks(64 << 10) {
        conn.write_all(chunk)?;
        if let Some(p) = pause {
            conn.flush()?;
            std::thread::sleep(p);
        }
    }
    conn.flush()?;
    if drop_after.is_some() {
        // Let the client see the bytes, then cut the connection mid-body.
        std::thread::sleep(Duration::from_millis(50));
        let _ = conn.shutdown(Shutdown::Both);
        return Ok(());
    }
    // Drain anything left so the client sees a clean close.
    let _ = conn.shutdown(Shutdown::Write);
    let mut sink = [0u8; 1024];
    let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = conn.read(&mut sink);
    Ok(())
}
