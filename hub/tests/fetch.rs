//! `hub::fetch` against a mock Hub on 127.0.0.1: the cache layout, what is (not) downloaded,
//! resume after a dropped connection, checksums, gated and missing repos, offline mode.

mod common {
    pub mod mock_hub;
}

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use common::mock_hub::{Faults, MockFile, MockHub, MockRepo};
use hub::{fetch, FetchOptions, HubConfig, HubError, Progress, RepoRef};

const C1: &str = "1111111111111111111111111111111111111111";
const C2: &str = "2222222222222222222222222222222222222222";

struct Scratch(PathBuf);
impl Scratch {
    fn new(tag: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("hub-fetch-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
}
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Deterministic pseudo-random bytes.
fn noise(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2654435761).max(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

const INDEX: &str = r#"{"metadata": {"total_size": 4194304}, "weight_map": {"a.weight": "model-00001-of-00002.safetensors", "b.weight": "model-00002-of-00002.safetensors"}}"#;

fn sharded_repo(id: &str) -> MockRepo {
    MockRepo::new(
        id,
        C1,
        vec![
            MockFile::new(
                ".gitattributes",
                b"*.safetensors filter=lfs\n".to_vec(),
                false,
            ),
            MockFile::new(
                "config.json",
                br#"{"architectures": ["LlamaForCausalLM"]}"#.to_vec(),
                false,
            ),
            MockFile::new(
                "README.md",
                b"---\nlicense: mit\n---\n# A model\n".to_vec(),
                false,
            ),
            MockFile::new("tokenizer.json", noise(40_000, 1), false),
            MockFile::new(
                "model.safetensors.index.json",
                INDEX.as_bytes().to_vec(),
                false,
            ),
            MockFile::new("model-00001-of-00002.safetensors", noise(3 << 20, 2), true),
            MockFile::new("model-00002-of-00002.safetensors", noise(1 << 20, 3), true),
            MockFile::new("consolidated.safetensors", noise(4 << 20, 4), true),
            MockFile::new("pytorch_model.bin", noise(1000, 5), true),
            MockFile::new("onnx/model.onnx", noise(1000, 6), true),
        ],
    )
}

fn config(hub: &MockHub, cache: &Path, token: Option<&str>) -> HubConfig {
    HubConfig {
        endpoint: hub.url.clone(),
        cache_dir: cache.to_path_buf(),
        token: token.map(str::to_string),
        offline: false,
    }
}

fn fast() -> FetchOptions<'static> {
    FetchOptions {
        retry_pause: Duration::from_millis(10),
        ..FetchOptions::default()
    }
}

fn repo_ref(s: &str) -> RepoRef {
    RepoRef::parse(s).unwrap()
}

const WANTED: [&str; 6] = [
    "config.json",
    "README.md",
    "tokenizer.json",
    "model.safetensors.index.json",
    "model-00001-of-00002.safetensors",
    "model-00002-of-00002.safetensors",
];

#[test]
fn downloads_what_conversion_needs_into_the_hf_cache() {
    let s = Scratch::new("layout");
    let repo = sharded_repo("org/model");
    let expected: Vec<(String, Vec<u8>, String)> = WANTED
        .iter()
        .map(|n| {
            let f = repo.file(n);
            (n.to_string(), f.bytes.to_vec(), f.etag())
        })
        .collect();
    let hub = MockHub::start(vec![repo], Faults::default());
    let snap = fetch(
        &config(&hub, &s.0, Some("hf_tok")),
        &repo_ref("org/model"),
        &fast(),
    )
    .unwrap();

    let repo_dir = s.0.join("models--org--model");
    assert_eq!(snap.dir, repo_dir.join("snapshots").join(C1));
    assert_eq!(snap.commit, C1);
    assert_eq!(snap.files, WANTED);
    assert!(!snap.from_cache);
    assert_eq!(fs::read_to_string(repo_dir.join("refs/main")).unwrap(), C1);
    for (name, bytes, etag) in &expected {
        let pointer = snap.dir.join(name);
        assert_eq!(&fs::read(&pointer).unwrap(), bytes, "{name}");
        // Relative symlinks into blobs/<etag>, as huggingface_hub makes them.
        let target = fs::read_link(&pointer).unwrap();
        assert_eq!(target, Path::new("../../blobs").join(etag), "{name}");
    }
    let mut blobs: Vec<String> = fs::read_dir(repo_dir.join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    blobs.sort();
    let mut etags: Vec<String> = expected.iter().map(|e| e.2.clone()).collect();
    etags.sort();
    assert_eq!(blobs, etags, "no extra or partial blobs");
    let total: u64 = expected.iter().map(|e| e.1.len() as u64).sum();
    assert_eq!(snap.downloaded, total);

    // Never the pickles, the ONNX export or the duplicate consolidated weights.
    let log = hub.log();
    for l in &log {
        for skipped in [
            "pytorch_model.bin",
            "onnx",
            "consolidated",
            ".gitattributes",
        ] {
            assert!(!l.path.contains(skipped), "{l:?}");
        }
    }
    // The token goes to the Hub, never to the CDN the LFS files redirect to.
    assert!(log.iter().any(|l| l.server == "cdn"));
    for l in &log {
        match l.server {
            "hub" => assert_eq!(l.authorization.as_deref(), Some("Bearer hf_tok"), "{l:?}"),
            _ => assert_eq!(l.authorization, None, "{l:?}"),
        }
    }

    // A second run finds everything in the cache: one listing call, no HEAD, no content.
    hub.clear_log();
    let again = fetch(&config(&hub, &s.0, None), &repo_ref("org/model"), &fast()).unwrap();
    assert_eq!(again.downloaded, 0);
    assert_eq!(again.dir, snap.dir);
    let log = hub.log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert!(log[0]
        .path
        .starts_with("/api/models/org/model/revision/main"));
}

#[derive(Default)]
struct Recorder {
    started: Mutex<Vec<(String, u64, u64)>>,
    notes: Mutex<Vec<String>>,
}
impl Progress for Recorder {
    fn file_started(&self, file: &str, total: u64, done: u64) {
        self.started
            .lock()
            .unwrap()
            .push((file.to_string(), total, done));
    }
    fn note(&self, text: &str) {
        self.notes.lock().unwrap().push(text.to_string());
    }
}

#[test]
fn a_dropped_connection_resumes_with_a_range_request() {
    let s = Scratch::new("drop");
    let repo = sharded_repo("org/model");
    let shard = "model-00001-of-00002.safetensors";
    let bytes = repo.file(shard).bytes.clone();
    let regular = "tokenizer.json";
    let tok = repo.file(regular).bytes.clone();
    let mut faults = Faults::default();
    faults.drop_after.insert(shard.to_string(), 1_000_000);
    faults.drop_after.insert(regular.to_string(), 12_345);
    let hub = MockHub::start(vec![repo], faults);
    let rec = Recorder::default();
    let opts = FetchOptions {
        progress: &rec,
        ..fast()
    };
    let snap = fetch(&config(&hub, &s.0, None), &repo_ref("org/model"), &opts).unwrap();
    assert_eq!(fs::read(snap.dir.join(shard)).unwrap(), bytes[..]);
    assert_eq!(fs::read(snap.dir.join(regular)).unwrap(), tok[..]);

    let gets: Vec<_> = hub
        .content_gets()
        .into_iter()
        .filter(|l| l.path.contains(&hub::hash::sha256_hex(&bytes)))
        .collect();
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(gets[0].range, None);
    assert_eq!(gets[1].range.as_deref(), Some("bytes=1000000-"));
    let tok_gets: Vec<_> = hub
        .content_gets()
        .into_iter()
        .filter(|l| l.path.ends_with("/tokenizer.json"))
        .collect();
    assert_eq!(tok_gets.len(), 2);
    assert_eq!(tok_gets[1].range.as_deref(), Some("bytes=12345-"));
    let started = rec.started.lock().unwrap().clone();
    assert!(started.contains(&(shard.to_string(), 3 << 20, 0)));
    assert!(started.contains(&(shard.to_string(), 3 << 20, 1_000_000)));
    assert!(rec
        .notes
        .lock()
        .unwrap()
        .iter()
        .any(|n| n.contains("retrying")));
}

#[test]
fn a_partial_file_from_an_earlier_run_is_resumed_and_verified() {
    let s = Scratch::new("partial");
    let repo = sharded_repo("org/model");
    let shard = "model-00002-of-00002.safetensors";
    let f = repo.file(shard);
    let (bytes, etag) = (f.bytes.clone(), f.etag());
    let hub = MockHub::start(vec![repo], Faults::default());
    let blobs = s.0.join("models--org--model/blobs");
    fs::create_dir_all(&blobs).unwrap();
    let partial = blobs.join(format!("{etag}.incomplete"));
    fs::write(&partial, &bytes[..300_000]).unwrap();
    let snap = fetch(&config(&hub, &s.0, None), &repo_ref("org/model"), &fast()).unwrap();
    assert_eq!(fs::read(snap.dir.join(shard)).unwrap(), bytes[..]);
    assert!(!partial.exists());
    let get = hub
        .content_gets()
        .into_iter()
        .find(|l| l.path.contains(&etag))
        .unwrap();
    assert_eq!(get.range.as_deref(), Some("bytes=300000-"));

    // A partial file with wrong bytes fails the sha256 check, is discarded, and the next run
    // downloads the file whole.
    let s2 = Scratch::new("partial-bad");
    let blobs = s2.0.join("models--org--model/blobs");
    fs::create_dir_all(&blobs).unwrap();
    let partial = blobs.join(format!("{etag}.incomplete"));
    fs::write(&partial, vec![0u8; 300_000]).unwrap();
    let e = fetch(&config(&hub, &s2.0, None), &repo_ref("org/model"), &fast())
        .err()
        .unwrap();
    assert!(matches!(e, HubError::Integrity { .. }), "{e}");
    assert!(
        e.to_string().contains(shard) && e.to_string().contains("sha256"),
        "{e}"
    );
    assert!(!partial.exists());
    assert!(!blobs.join(&etag).exists());
    let snap = fetch(&config(&hub, &s2.0, None), &repo_ref("org/model"), &fast()).unwrap();
    assert_eq!(fs::read(snap.dir.join(shard)).unwrap(), bytes[..]);
}

#[test]
fn corrupted_downloads_are_refused() {
    let s = Scratch::new("corrupt");
    let faults = Faults {
        corrupt: vec![
            "config.json".into(),
            "model-00002-of-00002.safetensors".into(),
        ],
        ..Faults::default()
    };
    let hub = MockHub::start(vec![sharded_repo("org/model")], faults);
    let e = fetch(&config(&hub, &s.0, None), &repo_ref("org/model"), &fast())
        .err()
        .unwrap();
    let msg = e.to_string();
    assert!(
        msg.contains("config.json") && msg.contains("git blob sha1"),
        "{msg}"
    );
    let snap = s.0.join("models--org--model/snapshots").join(C1);
    assert!(!snap.join("config.json").exists());
    hub.faults().corrupt = vec!["model-00002-of-00002.safetensors".into()];
    let e = fetch(&config(&hub, &s.0, None), &repo_ref("org/model"), &fast())
        .err()
        .unwrap();
    assert!(e.to_string().contains("model-00002-of-00002.safetensors: the download does not match the Hub's metadata: sha256 is"), "{e}");
    assert!(!snap.join("model-00002-of-00002.safetensors").exists());
}

#[test]
fn server_errors_are_retried() {
    let s = Scratch::new("retry");
    let faults = Faults {
        unavailable_once: vec![
            "/api/models/org/model/revision/main".into(),
            format!("/org/model/resolve/{C1}/config.json"),
        ],
        ..Faults::default()
    };
    let hub = MockHub::start(vec![sharded_repo("org/model")], faults);
    let snap = fetch(&config(&hub, &s.0, None), &repo_ref("org/model"), &fast()).unwrap();
    assert!(snap.dir.join("config.json").is_file());
    let api_calls = hub
        .log()
        .iter()
        .filter(|l| l.path.starts_with("/api/"))
        .count();
    assert_eq!(api_calls, 2);
}

#[test]
fn gated_repos_need_a_token() {
    let s = Scratch::new("gated");
    let mut repo = sharded_repo("org/gated");
    repo.token = Some("hf_good".into());
    let hub = MockHub::start(vec![repo], Faults::default());
    let e = fetch(&config(&hub, &s.0, None), &repo_ref("org/gated"), &fast())
        .err()
        .unwrap();
    let msg = e.to_string();
    assert!(
        matches!(e, HubError::Unauthorized { status: 401, .. }),
        "{msg}"
    );
    assert!(e.is_input_error());
    assert!(
        msg.contains("org/gated") && msg.contains("HF_TOKEN") && msg.contains("restricted"),
        "{msg}"
    );
    let e = fetch(
        &config(&hub, &s.0, Some("hf_bad")),
        &repo_ref("org/gated"),
        &fast(),
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("was refused"), "{e}");
    assert!(
        !e.to_string().contains("hf_bad"),
        "the token is never printed: {e}"
    );
    let snap = fetch(
        &config(&hub, &s.0, Some("hf_good")),
        &repo_ref("org/gated"),
        &fast(),
    )
    .unwrap();
    assert!(snap.dir.join("model-00001-of-00002.safetensors").is_file());
}

#[test]
fn missing_repos_revisions_and_weights_are_named() {
    let s = Scratch::new("missing");
    let pickles = MockRepo::new(
        "org/old",
        C2,
        vec![
            MockFile::new("config.json", b"{}".to_vec(), false),
            MockFile::new("pytorch_model.bin", noise(100, 9), true),
        ],
    );
    let hub = MockHub::start(vec![sharded_repo("org/model"), pickles], Faults::default());
    let cfg = config(&hub, &s.0, None);
    let e = fetch(&cfg, &repo_ref("org/nope"), &fast()).err().unwrap();
    assert!(matches!(e, HubError::NotFound { .. }));
    assert!(
        e.to_string().contains("repository 'org/nope' not found"),
        "{e}"
    );
    assert!(e.to_string().contains("HF_TOKEN"), "{e}");
    let e = fetch(&cfg, &repo_ref("org/model@v9"), &fast())
        .err()
        .unwrap();
    assert!(
        e.to_string()
            .contains("revision 'v9' of 'org/model' not found"),
        "{e}"
    );
    let e = fetch(&cfg, &repo_ref("org/old"), &fast()).err().unwrap();
    assert!(
        e.to_string().contains("no safetensors weights")
            && e.to_string().contains("pytorch_model.bin"),
        "{e}"
    );
    // Nothing was cached for the failures.
    assert!(!s.0.join("models--org--nope").exists());
    assert!(!s.0.join("models--org--old/blobs").exists());
}

#[test]
fn revisions_and_renamed_repos() {
    let s = Scratch::new("revs");
    let mut repo = sharded_repo("org/model");
    repo.refs.push(("v1.0".into(), C1.into()));
    repo.old_names = vec!["oldorg/model".into()];
    let hub = MockHub::start(vec![repo], Faults::default());
    let cfg = config(&hub, &s.0, None);
    let snap = fetch(&cfg, &repo_ref(&format!("org/model@{C1}")), &fast()).unwrap();
    assert!(
        !s.0.join("models--org--model/refs").exists(),
        "a commit needs no ref"
    );
    assert_eq!(snap.commit, C1);
    fetch(&cfg, &repo_ref("org/model@v1.0"), &fast()).unwrap();
    assert_eq!(
        fs::read_to_string(s.0.join("models--org--model/refs/v1.0")).unwrap(),
        C1
    );
    // The old name redirects (relative Location) and is cached under the name asked for, as
    // huggingface_hub does.
    let snap = fetch(&cfg, &repo_ref("oldorg/model"), &fast()).unwrap();
    assert!(snap.dir.starts_with(s.0.join("models--oldorg--model")));
    assert!(snap.dir.join("config.json").is_file());
}

#[test]
fn offline_mode_uses_the_cache_only() {
    let s = Scratch::new("offline");
    let hub = MockHub::start(vec![sharded_repo("org/model")], Faults::default());
    let mut cfg = config(&hub, &s.0, None);
    cfg.offline = true;
    let e = fetch(&cfg, &repo_ref("org/model"), &fast()).err().unwrap();
    assert!(matches!(e, HubError::Offline { .. }));
    assert!(
        e.to_string().contains("HF_HUB_OFFLINE") && e.to_string().contains("refs/main"),
        "{e}"
    );
    assert!(hub.log().is_empty(), "offline mode sent requests");

    cfg.offline = false;
    fetch(&cfg, &repo_ref("org/model"), &fast()).unwrap();
    hub.clear_log();
    cfg.offline = true;
    let snap = fetch(&cfg, &repo_ref("org/model"), &fast()).unwrap();
    assert!(snap.from_cache);
    assert_eq!(snap.files, WANTED);
    assert!(hub.log().is_empty());

    // A snapshot that lost a shard is a miss, naming the shard.
    fs::remove_file(snap.dir.join("model-00002-of-00002.safetensors")).unwrap();
    let e = fetch(&cfg, &repo_ref("org/model"), &fast()).err().unwrap();
    assert!(
        e.to_string()
            .contains("lacks model-00002-of-00002.safetensors"),
        "{e}"
    );
}

#[test]
fn an_unreachable_hub_falls_back_to_a_complete_cache() {
    let s = Scratch::new("unreachable");
    let hub = MockHub::start(vec![sharded_repo("org/model")], Faults::default());
    fetch(&config(&hub, &s.0, None), &repo_ref("org/model"), &fast()).unwrap();
    let endpoint = hub.url.clone();
    drop(hub);
    let cfg = HubConfig {
        endpoint,
        cache_dir: s.0.clone(),
        token: None,
        offline: false,
    };
    let rec = Recorder::default();
    let opts = FetchOptions {
        progress: &rec,
        attempts: 2,
        ..fast()
    };
    let snap = fetch(&cfg, &repo_ref("org/model"), &opts).unwrap();
    assert!(snap.from_cache);
    assert!(rec
        .notes
        .lock()
        .unwrap()
        .iter()
        .any(|n| n.contains("using the cached snapshot")));
    // Without a cache the network error is reported.
    let empty = Scratch::new("unreachable-empty");
    let cfg = HubConfig {
        cache_dir: empty.0.clone(),
        ..cfg
    };
    let e = fetch(&cfg, &repo_ref("org/model"), &opts).err().unwrap();
    assert!(matches!(e, HubError::Network { .. }), "{e}");
}

#[test]
fn a_stop_request_keeps_the_partial_download() {
    let s = Scratch::new("stop");
    let repo = sharded_repo("org/model");
    let shard = repo.file("model-00001-of-00002.safetensors");
    let (etag, bytes) = (shard.etag(), shard.bytes.clone());
    let faults = Faults {
        chunk_pause: Some(Duration::from_millis(20)),
        ..Faults::default()
    };
    let hub = MockHub::start(vec![repo], faults);
    let stop = std::sync::atomic::AtomicBool::new(false);
    struct StopAfter<'a>(&'a std::sync::atomic::AtomicBool);
    impl Progress for StopAfter<'_> {
        fn file_advanced(&self, file: &str, _: u64) {
            if file.starts_with("model-00001") {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
    }
    let progress = StopAfter(&stop);
    let should_stop = || stop.load(std::sync::atomic::Ordering::SeqCst);
    let opts = FetchOptions {
        progress: &progress,
        should_stop: &should_stop,
        ..fast()
    };
    let e = fetch(&config(&hub, &s.0, None), &repo_ref("org/model"), &opts)
        .err()
        .unwrap();
    assert!(matches!(e, HubError::Interrupted), "{e}");
    let partial =
        s.0.join("models--org--model/blobs")
            .join(format!("{etag}.incomplete"));
    let kept = fs::metadata(&partial).unwrap().len();
    assert!(kept > 0 && kept < bytes.len() as u64, "{kept}");
    hub.faults().chunk_pause = None;
    hub.clear_log();
    let snap = fetch(&config(&hub, &s.0, None), &repo_ref("org/model"), &fast()).unwrap();
    assert_eq!(
        fs::read(snap.dir.join("model-00001-of-00002.safetensors")).unwrap(),
        bytes[..]
    );
    let get = hub
        .content_gets()
        .into_iter()
        .find(|l| l.path.contains(&etag))
        .unwrap();
    assert_eq!(get.range, Some(format!("bytes={kept}-")));
}
