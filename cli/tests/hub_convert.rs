//! `ggforge convert org/name[@rev]` against a mock Hub on 127.0.0.1 (no real network): the
//! download into the huggingface_hub cache, the output named from the repo id, the environment
//! variables, exit codes, and Ctrl-C during a download.

#[path = "../../hub/tests/common/mock_hub.rs"]
mod mock_hub;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use mock_hub::{Faults, MockFile, MockHub, MockRepo};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const FIXTURE: &str = "../fixtures/tiny/llama3/Tiny-Llama-3-Instruct";

/// sha256 of what llama.cpp's `convert_hf_to_gguf.py --outtype f16` writes for the same
/// files when it knows the repo id: the fixture folder `Tiny-Llama-3-Instruct` with
/// `"_name_or_path": "ggforge-test/Tiny-Llama-3-Instruct"` added to its config.json (run through
/// fixtures/tiny/gen.py's `convert` wrapper, which registers the fixture's pre-tokenizer hash).
/// ggforge takes the repo id of a Hub download in place of `_name_or_path` (see
/// convert/src/general/mod.rs), so the two files must be identical. (Run on the cache snapshot
/// folder itself, llama.cpp would name the model after the commit hash.)
const LLAMA_CPP_F16_SHA256: &str =
    "2fb39c51a1ef57704dd1da15bee8eccdaf98933e7ecbdca9edf6ad24bf74b688";
/// The file name llama.cpp's converter chooses for it.
const LLAMA_CPP_NAME: &str = "Tiny-Llama-3-330K-Instruct-F16.gguf";

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ggforge")
}

struct Scratch(PathBuf);
impl Scratch {
    fn new(tag: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("ggforge-hub-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(p.join("out")).unwrap();
        Scratch(p)
    }
    fn out(&self) -> PathBuf {
        self.0.join("out")
    }
    fn hf_home(&self) -> PathBuf {
        self.0.join("hf")
    }
    fn listing(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.out())
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

/// The tiny Llama 3 fixture as a Hub repo (weights via the LFS redirect), plus files that
/// must not be downloaded.
fn fixture_repo(id: &str) -> MockRepo {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE);
    let mut files = Vec::new();
    for e in fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let lfs = name.ends_with(".safetensors");
        files.push(MockFile::new(&name, fs::read(e.path()).unwrap(), lfs));
    }
    files.push(MockFile::new("pytorch_model.bin", vec![7u8; 5000], true));
    files.push(MockFile::new(
        "original/consolidated.pth",
        vec![7u8; 5000],
        true,
    ));
    MockRepo::new(id, COMMIT, files)
}

/// `ggforge convert` with a clean Hub environment pointing at the mock.
fn ggforge(s: &Scratch, hub_url: &str, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(bin());
    c.arg("convert").args(args).current_dir(s.out());
    for k in [
        "HF_TOKEN",
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "HF_TOKEN_PATH",
        "HUGGING_FACE_HUB_TOKEN",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        c.env_remove(k);
    }
    c.env("HF_HOME", s.hf_home()).env("HF_ENDPOINT", hub_url);
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

fn run(s: &Scratch, hub_url: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    ggforge(s, hub_url, args, env).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn converts_a_hub_repo_like_llama_cpp_converts_its_snapshot() {
    let s = Scratch::new("convert");
    let hub = MockHub::start(
        vec![fixture_repo("ggforge-test/Tiny-Llama-3-Instruct")],
        Faults::default(),
    );
    let o = run(
        &s,
        &hub.url,
        &["ggforge-test/Tiny-Llama-3-Instruct", "--outtype", "f16"],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // Named from the repo id, in the current directory, as llama.cpp names it.
    assert_eq!(s.listing(), vec![LLAMA_CPP_NAME]);
    let bytes = fs::read(s.out().join(LLAMA_CPP_NAME)).unwrap();
    assert_eq!(hub::hash::sha256_hex(&bytes), LLAMA_CPP_F16_SHA256);

    // The cache is huggingface_hub's, under HF_HOME/hub.
    let snap = s
        .hf_home()
        .join("hub/models--ggforge-test--Tiny-Llama-3-Instruct/snapshots")
        .join(COMMIT);
    assert!(snap.join("model.safetensors").is_file());
    assert!(snap.join("README.md").is_file());
    assert!(!snap.join("pytorch_model.bin").exists());
    assert!(!snap.join("original").exists());
    for l in hub.log() {
        assert!(
            !l.path.contains(".bin") && !l.path.contains(".pth"),
            "{l:?}"
        );
    }

    // A second run converts from the cache: only the listing call reaches the Hub.
    hub.clear_log();
    fs::remove_file(s.out().join(LLAMA_CPP_NAME)).unwrap();
    let o = run(
        &s,
        &hub.url,
        &[
            "ggforge-test/Tiny-Llama-3-Instruct@main",
            "--outtype",
            "f16",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("all files cached"), "{}", stderr(&o));
    assert_eq!(hub.log().len(), 1);
    assert_eq!(fs::read(s.out().join(LLAMA_CPP_NAME)).unwrap(), bytes);

    // HF_HUB_OFFLINE: the cache alone, no request at all; HF_HUB_CACHE moves the cache.
    hub.clear_log();
    fs::remove_file(s.out().join(LLAMA_CPP_NAME)).unwrap();
    let o = run(
        &s,
        &hub.url,
        &["ggforge-test/Tiny-Llama-3-Instruct", "--outtype", "f16"],
        &[("HF_HUB_OFFLINE", "1")],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(hub.log().is_empty());
    let elsewhere = s.0.join("other-cache");
    let o = run(
        &s,
        &hub.url,
        &["ggforge-test/Tiny-Llama-3-Instruct", "--outtype", "f16"],
        &[
            ("HF_HUB_OFFLINE", "1"),
            ("HF_HUB_CACHE", elsewhere.to_str().unwrap()),
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("HF_HUB_OFFLINE") && e.contains("other-cache"),
        "{e}"
    );
    assert_eq!(e.matches("error:").count(), 1, "{e}");
}

#[test]
fn gated_missing_and_offline_errors_exit_2_with_one_clear_line() {
    let s = Scratch::new("errors");
    let mut gated = fixture_repo("org/gated");
    gated.token = Some("hf_granted".into());
    let hub = MockHub::start(vec![gated], Faults::default());
    let check = |o: &Output, code: i32, needles: &[&str]| {
        let e = stderr(o);
        assert_eq!(o.status.code(), Some(code), "{e}");
        assert_eq!(e.matches("error:").count(), 1, "{e}");
        for n in needles {
            assert!(e.contains(n), "{n:?} not in {e}");
        }
        assert!(s.listing().is_empty(), "{:?}", s.listing());
    };
    let o = run(&s, &hub.url, &["org/gated"], &[]);
    check(&o, 2, &["org/gated", "401", "HF_TOKEN", "restricted"]);
    let o = run(&s, &hub.url, &["org/gated"], &[("HF_TOKEN", "hf_wrong")]);
    check(&o, 2, &["was refused"]);
    assert!(!stderr(&o).contains("hf_wrong"));
    let o = run(&s, &hub.url, &["org/nope"], &[]);
    check(
        &o,
        2,
        &[
            "repository 'org/nope' not found",
            "no local folder 'org/nope'",
        ],
    );
    let o = run(
        &s,
        &hub.url,
        &["org/gated@v7"],
        &[("HF_TOKEN", "hf_granted")],
    );
    check(&o, 2, &["revision 'v7' of 'org/gated' not found"]);
    // The token file `huggingface-cli login` writes, under HF_HOME.
    fs::create_dir_all(s.hf_home()).unwrap();
    fs::write(s.hf_home().join("token"), "hf_granted\n").unwrap();
    let o = run(&s, &hub.url, &["org/gated", "--outfile", "g.gguf"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // A bare name is a local path, never a Hub request.
    hub.clear_log();
    let o = run(&s, &hub.url, &["gpt2"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(hub.log().is_empty());
}

#[test]
fn an_unreachable_hub_is_a_network_failure_exit_1() {
    let s = Scratch::new("unreachable");
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let o = run(&s, &dead, &["org/model"], &[]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("127.0.0.1") && e.contains("api/models/org/model"),
        "{e}"
    );
}

#[test]
fn ctrl_c_during_a_download_exits_130_and_the_rerun_resumes() {
    let s = Scratch::new("sigint");
    let mut repo = fixture_repo("org/slow");
    // A bigger weights file, so the download is still running when the signal arrives.
    repo.files.retain(|f| f.name != "model.safetensors");
    let weights = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(FIXTURE)
        .join("model.safetensors");
    let real = fs::read(&weights).unwrap();
    repo.files
        .push(MockFile::new("model.safetensors", real.clone(), true));
    let etag = repo.file("model.safetensors").etag();
    let faults = Faults {
        chunk_pause: Some(Duration::from_millis(150)),
        ..Faults::default()
    };
    let hub = MockHub::start(vec![repo], faults);
    let child = ggforge(&s, &hub.url, &["org/slow"], &[])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let partial = s
        .hf_home()
        .join("hub/models--org--slow/blobs")
        .join(format!("{etag}.incomplete"));
    let t0 = Instant::now();
    while fs::metadata(&partial).map(|m| m.len()).unwrap_or(0) == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "download never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    assert!(stderr(&o).contains("interrupted"), "{}", stderr(&o));
    let kept = fs::metadata(&partial).unwrap().len();
    assert!(kept > 0 && kept < real.len() as u64);
    assert!(s.listing().is_empty(), "{:?}", s.listing());

    hub.faults().chunk_pause = None;
    hub.clear_log();
    let o = run(&s, &hub.url, &["org/slow", "--outtype", "f16"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let get = hub
        .content_gets()
        .into_iter()
        .find(|l| l.path.contains(&etag))
        .unwrap();
    assert_eq!(get.range, Some(format!("bytes={kept}-")));
    let out = s.listing();
    assert!(out.len() == 1 && out[0].ends_with("-F16.gguf"), "{out:?}");
}
