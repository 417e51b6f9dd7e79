//! Outputs are whole or absent: a full disk, SIGINT or SIGTERM leave no output and no temporary
//! file, an existing file at the destination is untouched, and the exit code says what
//! happened (1 for a failure, 130 for a signal).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const TINY: &str = "../fixtures/tiny/llama3/Tiny-Llama-3-Instruct";

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ggforge")
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct Scratch(PathBuf);
impl Scratch {
    fn new(tag: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("ggforge-atomic-{tag}-{}", std::process::id()));
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

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `ggforge convert <tiny> --outfile <mnt>/<out> <args>` with a `size`-byte tmpfs mounted
/// at `mnt` in a private mount namespace (`unshare -m`, so nothing leaks into the host's
/// mounts, even if the test dies). `setup` lines run first inside the mount. Returns the exit
/// code, stderr and the mount's listing afterwards. Mounting needs root: the tests that call
/// this are `#[ignore]`d and `.ci/run` runs them where it is root; run on purpose, a mount
/// that fails is a failure, not a skip.
fn convert_on_tmpfs(
    s: &Scratch,
    size: &str,
    setup: &str,
    out: &str,
    args: &[&str],
) -> (i32, String, Vec<String>) {
    let mnt = s.0.join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let script = format!(
        r#"mnt=$1; ggforge=$2; model=$3; shift 3
mount -t tmpfs -o size={size} tmpfs "$mnt" || {{ echo MOUNT_FAILED; exit 0; }}
cd "$mnt" || exit 99
{setup}
"$ggforge" convert "$model" --outfile "$mnt/{out}" "$@" 2>"$mnt/../stderr"
echo "exit=$?"
ls -A "$mnt"
echo "old=$(cat "$mnt/{out}" 2>/dev/null)""#
    );
    let o = Command::new("unshare")
        .args(["-m", "sh", "-c", &script, "sh"])
        .arg(&mnt)
        .arg(bin())
        .arg(root().join(TINY))
        .args(args)
        .output();
    let o = match o {
        Ok(o) if o.status.success() => o,
        Ok(o) => panic!("unshare -m failed (needs root): {}", stderr(&o)),
        Err(e) => panic!("no unshare: {e}"),
    };
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        !text.contains("MOUNT_FAILED"),
        "cannot mount a tmpfs here (needs root)"
    );
    let mut lines = text.lines();
    let code = lines
        .next()
        .and_then(|l| l.strip_prefix("exit="))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("unexpected script output: {text}"));
    let mut files: Vec<String> = lines
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect();
    files.sort();
    let err = fs::read_to_string(s.0.join("stderr")).unwrap_or_default();
    (code, err, files)
}

#[test]
#[ignore = "mounts a tmpfs: needs root (.ci/run runs it where it is root)"]
fn a_full_disk_leaves_the_destination_untouched() {
    let s = Scratch::new("enospc");
    // The f16 file is 721 KB; 400 KB of tmpfs runs out mid-way. An older file at the
    // destination must survive.
    let (code, err, files) = convert_on_tmpfs(
        &s,
        "400k",
        "printf old > out.gguf",
        "out.gguf",
        &["--outtype", "f16"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(err.contains("out.gguf"), "{err}");
    assert_eq!(err.matches("error:").count(), 1, "{err}");
    assert_eq!(
        files,
        vec!["old=old", "out.gguf"],
        "no temporary file is left"
    );
}

#[test]
#[ignore = "mounts a tmpfs: needs root (.ci/run runs it where it is root)"]
fn a_full_disk_while_writing_shards_leaves_no_shard() {
    let s = Scratch::new("enospc-split");
    // Shards of 621 KB, 42 KB, 58 KB, 0.4 KB: 680 KB runs out in the third.
    let (code, err, files) = convert_on_tmpfs(
        &s,
        "680k",
        "",
        "Tiny-F16.gguf",
        &["--outtype", "f16", "--split-max-tensors", "7"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(
        files,
        vec!["old="],
        "no shard and no temporary file is left"
    );
    // The same conversion fits in 1 MB: the mount is not the problem.
    let (code, err, files) = convert_on_tmpfs(
        &s,
        "1m",
        "",
        "Tiny-F16.gguf",
        &["--outtype", "f16", "--split-max-tensors", "7"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(files.len(), 5, "{files:?}");
}

/// The same failure without root: a file-size limit (`ulimit -f`, with SIGXFSZ ignored so the
/// write fails with EFBIG instead of killing the process) stops the write half-way, as a full
/// disk would. Runs everywhere, so the write-error path is always tested.
#[test]
fn a_file_size_limit_mid_write_leaves_the_destination_untouched() {
    let s = Scratch::new("fsize");
    let dest = s.0.join("out.gguf");
    fs::write(&dest, "old").unwrap();
    // 800 blocks of 512 bytes: 400 KB of the 721 KB f16 file.
    let o = Command::new("sh")
        .args(["-c", "trap '' XFSZ; ulimit -f 800 && exec \"$@\"", "sh"])
        .arg(bin())
        .arg("convert")
        .arg(root().join(TINY))
        .arg("--outtype")
        .arg("f16")
        .arg("--outfile")
        .arg(&dest)
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("File too large"), "{err}");
    assert!(err.contains("out.gguf"), "{err}");
    assert_eq!(err.matches("error:").count(), 1, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        err.lines().last().unwrap_or(""),
        format!(
            "error: writing {}: File too large (os error 27)",
            dest.display()
        ),
        "naming the file once"
    );
    assert_eq!(fs::read_to_string(&dest).unwrap(), "old");
    assert_eq!(listing(&s.0), vec!["out.gguf"], "no temporary file is left");

    // The same for `ggforge quantize` of a complete F16 file.
    let input = s.0.join("in.gguf");
    let o = Command::new(bin())
        .arg("convert")
        .arg(root().join(TINY))
        .args(["--outtype", "f16", "--outfile"])
        .arg(&input)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = Command::new("sh")
        .args(["-c", "trap '' XFSZ; ulimit -f 300 && exec \"$@\"", "sh"])
        .arg(bin())
        .arg("quantize")
        .arg(&input)
        .arg(&dest)
        .arg("Q8_0")
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(
        err.lines().last().unwrap_or(""),
        format!(
            "error: cannot write {}: File too large (os error 27)",
            dest.display()
        ),
    );
    assert_eq!(fs::read_to_string(&dest).unwrap(), "old");
    assert_eq!(
        listing(&s.0),
        vec!["in.gguf", "out.gguf"],
        "no temporary file is left"
    );
}

/// The shape of a synthetic Llama checkpoint.
#[derive(Clone, Copy)]
struct Shape {
    hidden: usize,
    ff: usize,
    heads: usize,
    kv: usize,
    layers: usize,
    vocab: usize,
}

/// Hidden size 1024: big enough that converting it takes a while.
const MEDIUM: Shape = Shape {
    hidden: 1024,
    ff: 2816,
    heads: 16,
    kv: 4,
    layers: 16,
    vocab: 2000,
};

/// Llama-2-7B's shape (6.7 B parameters, 13.5 GB in bf16).
const LLAMA_7B: Shape = Shape {
    hidden: 4096,
    ff: 11008,
    heads: 32,
    kv: 32,
    layers: 32,
    vocab: 32000,
};

/// Writes a Llama checkpoint of `shape` with the tiny fixture's tokenizer (the converter pads
/// its vocabulary to `vocab` with `[PAD]` tokens), as a sparse bf16 safetensors file: zeros
/// that take no disk space.
fn synthetic_llama(dir: &Path, shape: &Shape) {
    let tiny = root().join(TINY);
    fs::create_dir_all(dir).unwrap();
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        fs::copy(tiny.join(f), dir.join(f)).unwrap();
    }
    let mut config: serde_json::Value =
        serde_json::from_slice(&fs::read(tiny.join("config.json")).unwrap()).unwrap();
    let Shape {
        hidden,
        ff,
        heads,
        kv,
        layers,
        vocab,
    } = *shape;
    config["hidden_size"] = hidden.into();
    config["intermediate_size"] = ff.into();
    config["num_attention_heads"] = heads.into();
    config["num_key_value_heads"] = kv.into();
    config["head_dim"] = (hidden / heads).into();
    config["num_hidden_layers"] = layers.into();
    config["vocab_size"] = vocab.into();
    fs::write(dir.join("config.json"), config.to_string()).unwrap();

    let kv_dim = hidden / heads * kv;
    let mut tensors: Vec<(String, Vec<usize>)> = vec![
        ("model.embed_tokens.weight".into(), vec![vocab, hidden]),
        ("model.norm.weight".into(), vec![hidden]),
        ("lm_head.weight".into(), vec![vocab, hidden]),
    ];
    for i in 0..layers {
        let p = format!("model.layers.{i}");
        for (n, shape) in [
            ("self_attn.q_proj.weight", vec![hidden, hidden]),
            ("self_attn.k_proj.weight", vec![kv_dim, hidden]),
            ("self_attn.v_proj.weight", vec![kv_dim, hidden]),
            ("self_attn.o_proj.weight", vec![hidden, hidden]),
            ("mlp.gate_proj.weight", vec![ff, hidden]),
            ("mlp.up_proj.weight", vec![ff, hidden]),
            ("mlp.down_proj.weight", vec![hidden, ff]),
            ("input_layernorm.weight", vec![hidden]),
            ("post_attention_layernorm.weight", vec![hidden]),
        ] {
            tensors.push((format!("{p}.{n}"), shape));
        }
    }
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, shape) in &tensors {
        let n: usize = shape.iter().product::<usize>() * 2;
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + n]}),
        );
        offset += n;
    }
    let mut text = serde_json::Value::Object(header).to_string();
    while text.len() % 8 != 0 {
        text.push(' ');
    }
    let mut f = fs::File::create(dir.join("model.safetensors")).unwrap();
    f.write_all(&(text.len() as u64).to_le_bytes()).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f.set_len((8 + text.len() + offset) as u64).unwrap();
}

/// Starts a conversion, waits until its temporary output file has data, sends `signal`, and
/// checks: exit 130, no output, no temporary file, the old destination file untouched.
fn interrupt(signal: &str, extra: &[&str]) {
    let s = Scratch::new(&format!("sig{signal}"));
    let model = s.0.join("Big-Llama");
    synthetic_llama(&model, &MEDIUM);
    let out_dir = s.0.join("out");
    fs::create_dir_all(&out_dir).unwrap();
    let dest = out_dir.join("big.gguf");
    fs::write(&dest, b"previous model").unwrap();
    let mut child = Command::new(bin())
        .arg("convert")
        .arg(&model)
        .args(["--outtype", "f16", "--outfile"])
        .arg(&dest)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    loop {
        let writing = fs::read_dir(&out_dir).unwrap().any(|e| {
            let e = e.unwrap();
            e.file_name().to_string_lossy().ends_with(".tmp")
                && e.metadata().map(|m| m.len() > 1 << 20).unwrap_or(false)
        });
        if writing {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the conversion never started writing"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let kill = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(kill.success());
    // A hung writer must fail the test, not hang it.
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("ggforge did not exit within 60 s of SIG{signal}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert_eq!(err.matches("error:").count(), 1, "{err}");
    assert_eq!(
        listing(&out_dir),
        vec!["big.gguf"],
        "no temporary file is left"
    );
    assert_eq!(fs::read(&dest).unwrap(), b"previous model");
}

#[test]
fn sigint_mid_conversion_exits_130_and_leaves_nothing() {
    interrupt("INT", &[]);
}

#[test]
fn sigterm_mid_split_conversion_exits_130_and_leaves_no_shard() {
    interrupt("TERM", &["--split-max-size", "100M"]);
}

/// Peak memory of converting a 7B-shaped checkpoint, to one file and to 2 GB shards, must
/// stay under three times its largest tensor plus 256 MB. The outputs are f16, 13.5 GB each
/// (removed after each run): run by hand, with that much free disk:
///
/// `cargo test -p ggforge --test atomic_outputs -- --ignored --nocapture seven_b`
///
/// GGFORGE_MEMORY_DIR picks the scratch folder (default: the temp dir).
#[test]
#[ignore]
fn seven_b_conversion_and_quantization_memory_stays_bounded() {
    let base = std::env::var_os("GGFORGE_MEMORY_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("ggforge-7b-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let model = dir.join("Llama-7B-Shaped");
    synthetic_llama(&model, &LLAMA_7B);
    let largest = (LLAMA_7B.vocab * LLAMA_7B.hidden * 2) as u64; // token_embd / output in f16
    let bound = largest * 3 + (256 << 20);
    let out_dir = dir.join("out");
    fs::create_dir_all(&out_dir).unwrap();
    // Runs `ggforge ARGS` under /usr/bin/time and asserts the peak RSS bound.
    let measure = |args: &[&std::ffi::OsStr]| {
        let o = Command::new("/usr/bin/time")
            .arg("-v")
            .arg(bin())
            .args(args)
            .output()
            .unwrap();
        let err = stderr(&o);
        assert!(o.status.success(), "{err}");
        let kb: u64 = err
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("Maximum resident set size (kbytes): ")
            })
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no RSS in: {err}"));
        eprintln!(
            "{args:?}: {} files; peak RSS {} MB; bound {} MB (largest tensor {} MB)\n{err}",
            listing(&out_dir).len(),
            kb / 1024,
            bound >> 20,
            largest >> 20
        );
        assert!(kb * 1024 <= bound, "peak RSS {kb} kB over {bound} bytes");
    };
    let f16 = out_dir.join("out-F16.gguf");
    let split = out_dir.join("split").join("out.gguf");
    let q4 = out_dir.join("out-Q4_K_M.gguf");
    let os = |s: &'static str| std::ffi::OsStr::new(s);
    // Convert: one file, then gguf-split shards.
    measure(&[
        os("convert"),
        model.as_os_str(),
        os("--outtype"),
        os("f16"),
        os("--outfile"),
        f16.as_os_str(),
    ]);
    fs::create_dir_all(split.parent().unwrap()).unwrap();
    measure(&[
        os("convert"),
        model.as_os_str(),
        os("--outtype"),
        os("f16"),
        os("--outfile"),
        split.as_os_str(),
        os("--split-max-size"),
        os("2G"),
    ]);
    fs::remove_dir_all(split.parent().unwrap()).unwrap();
    // Quantize the F16 file, as llama-quantize would.
    measure(&[
        os("quantize"),
        f16.as_os_str(),
        q4.as_os_str(),
        os("Q4_K_M"),
    ]);
    fs::remove_file(&q4).unwrap();
    fs::remove_file(&f16).unwrap();
    // One pass: convert and quantize without an intermediate file.
    measure(&[
        os("convert"),
        model.as_os_str(),
        os("--quant"),
        os("Q4_K_M"),
        os("--outfile"),
        q4.as_os_str(),
    ]);
    let _ = fs::remove_dir_all(&dir);
}
