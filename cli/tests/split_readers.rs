//! Every reader takes any shard of a split model and reads the whole model: `inspect`, `diff`,
//! `quantize` and `verify` on the tiny Llama 3 cut into 4 shards give what they give on the
//! unsplit file (`UNSPLIT_F16`, which equals `convert --outtype f16`); a missing or foreign
//! shard is named, and exits 2.

mod common;

use std::fs;
use std::path::Path;

use common::{ggforge, root, split_f16, stderr, stdout, Scratch, UNSPLIT_F16};
use serde_json::Value;

fn unsplit() -> std::path::PathBuf {
    root().join(UNSPLIT_F16)
}

fn json(o: &std::process::Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(o), stderr(o)))
}

/// `inspect --json` of a shard is the unsplit file's, plus the split keys, the shards and
/// each tensor's shard.
#[test]
fn inspect_shows_the_whole_model() {
    let s = Scratch::new("inspect");
    let shards = split_f16(&s.0);
    let plain = ggforge([Path::new("inspect"), &unsplit(), Path::new("--json")]);
    assert_eq!(plain.status.code(), Some(0), "{}", stderr(&plain));
    let plain = json(&plain);
    assert!(plain.get("split").is_none());
    let total: u64 = shards.iter().map(|p| fs::metadata(p).unwrap().len()).sum();
    for shard in [&shards[0], &shards[2]] {
        let o = ggforge([Path::new("inspect"), shard, Path::new("--json")]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let v = json(&o);
        assert_eq!(v["split"]["count"], 4);
        let files = v["split"]["files"].as_array().unwrap();
        let per_file: Vec<u64> = files
            .iter()
            .map(|f| f["tensors"].as_u64().unwrap())
            .collect();
        assert_eq!(per_file, [7, 7, 7, 1]);
        assert_eq!(v["file_size"], total);
        // Every tensor, in order, with the unsplit file's name, type and shape.
        let (ts, ps) = (
            v["tensors"].as_array().unwrap(),
            plain["tensors"].as_array().unwrap(),
        );
        assert_eq!(ts.len(), 22);
        assert_eq!(ts.len(), ps.len());
        for (i, (t, p)) in ts.iter().zip(ps).enumerate() {
            for k in ["name", "type", "dims", "bytes"] {
                assert_eq!(t[k], p[k], "tensor {i} {k}");
            }
            assert_eq!(t["shard"], (i / 7 + 1) as u64, "tensor {i}");
        }
        // The first shard's metadata: the unsplit file's, then the three split keys.
        let keys = |v: &Value| -> Vec<String> {
            v["metadata"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["key"].as_str().unwrap().to_string())
                .collect()
        };
        let mut want = keys(&plain);
        want.extend(["split.no", "split.count", "split.tensors.count"].map(String::from));
        assert_eq!(keys(&v), want);
        let (vm, pm) = (
            v["metadata"].as_array().unwrap(),
            plain["metadata"].as_array().unwrap(),
        );
        assert_eq!(vm[..pm.len()], pm[..]);

        let o = ggforge([Path::new("inspect"), shard]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let text = stdout(&o);
        assert!(
            text.starts_with("GGUF v3  ") && text.lines().next().unwrap().contains("22 tensors"),
            "{text}"
        );
        assert!(
            text.contains(&format!("split model of 4 files  {total} bytes in all")),
            "{text}"
        );
        for sh in &shards {
            assert!(text.contains(&sh.display().to_string()), "{text}");
        }
        assert!(text.contains("output.weight"), "{text}");
        assert!(text.contains("  shard 4\n"), "{text}");
    }
}

/// A split model and the unsplit file of the same conversion: the same model; the split keys
/// are listed as layout, not as differences.
#[test]
fn diff_compares_whole_models() {
    let s = Scratch::new("diff");
    let shards = split_f16(&s.0);
    let plain = unsplit();
    for args in [vec![], vec!["--order"]] {
        let mut cmd: Vec<&Path> = vec![Path::new("diff"), &shards[1], &plain];
        cmd.extend(args.iter().map(Path::new));
        let o = ggforge(&cmd);
        let out = stdout(&o);
        assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
        assert!(
            out.starts_with("note: A is a split model of 4 files, B is one file"),
            "{out}"
        );
        for k in ["split.no", "split.count", "split.tensors.count"] {
            assert!(
                out.contains(&format!("layout: key {k} only in A\n")),
                "{out}"
            );
        }
        assert!(
            out.ends_with(" keys, 22 tensors\n") && out.contains("identical: "),
            "{out}"
        );
    }
    // Both ways round, and a split model against itself (another shard).
    let o = ggforge([Path::new("diff"), &plain, &shards[3]]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).contains("layout: key split.count only in B"));
    let o = ggforge([Path::new("diff"), &shards[0], &shards[3]]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(!stdout(&o).contains("layout:"), "{}", stdout(&o));

    // A real difference still counts: the q8_0 conversion differs in every quantized tensor.
    let q8 = root().join("../fixtures/tiny/llama3/llamacpp/q8_0.gguf");
    let o = ggforge([Path::new("diff"), &shards[2], &q8]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("tensor blk.0.attn_q.weight: type A f16, B q8_0"),
        "{}",
        stdout(&o)
    );
}

/// Quantizing any shard quantizes the whole model into one file, byte-identical to quantizing
/// the unsplit file.
#[test]
fn quantize_reads_every_shard() {
    let s = Scratch::new("quantize");
    let shards = split_f16(&s.0);
    let want = s.0.join("plain-Q4_K_M.gguf");
    let o = ggforge([
        Path::new("quantize"),
        &unsplit(),
        &want,
        Path::new("Q4_K_M"),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let want = fs::read(&want).unwrap();
    for (i, shard) in [&shards[0], &shards[3]].into_iter().enumerate() {
        let out = s.0.join(format!("split-{i}-Q4_K_M.gguf"));
        let o = ggforge([Path::new("quantize"), shard, &out, Path::new("Q4_K_M")]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert!(fs::read(&out).unwrap() == want, "{} differs", out.display());
    }
    // Writing over one of the input's shards is refused.
    let o = ggforge([
        Path::new("quantize"),
        &shards[0],
        &shards[2],
        Path::new("Q8_0"),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("same file"), "{}", stderr(&o));
}

/// `verify` on a shard: the same checks, statuses and numbers as on the unsplit file.
#[test]
fn verify_checks_the_whole_model() {
    let s = Scratch::new("verify");
    let shards = split_f16(&s.0);
    let fixture = root().join("../fixtures/logits/tiny-llama3.safetensors");
    let tokenizer = root().join(common::MODEL);
    let run = |file: &Path| {
        let o = ggforge([
            Path::new("verify"),
            file,
            Path::new("--fixture"),
            &fixture,
            Path::new("--tokenizer"),
            &tokenizer,
            Path::new("--json"),
        ]);
        (o.status.code(), json(&o))
    };
    let (code, plain) = run(&unsplit());
    assert_eq!(code, Some(0), "{plain}");
    let (code, split) = run(&shards[1]);
    assert_eq!(code, Some(0), "{split}");
    for k in ["architecture", "file_type", "verdict", "exit_code"] {
        assert_eq!(split[k], plain[k], "{k}");
    }
    let (sl, pl) = (
        split["layers"].as_array().unwrap(),
        plain["layers"].as_array().unwrap(),
    );
    assert_eq!(sl.len(), 3);
    for (a, b) in sl.iter().zip(pl) {
        assert_eq!(a["status"], b["status"], "{}", a["name"]);
        assert_eq!(a["numbers"], b["numbers"], "{}", a["name"]);
        assert_eq!(a["tokenizer_cases"], b["tokenizer_cases"], "{}", a["name"]);
        let (ac, bc) = (
            a["checks"].as_array().unwrap(),
            b["checks"].as_array().unwrap(),
        );
        assert_eq!(ac.len(), bc.len(), "{}", a["name"]);
        for (x, y) in ac.iter().zip(bc) {
            assert_eq!((&x["name"], &x["status"]), (&y["name"], &y["status"]));
            // Only the parse line tells the two apart (sizes, key count, "split into").
            if x["name"] != "parse" {
                assert_eq!(x["detail"], y["detail"], "{}", x["name"]);
            }
        }
    }
    assert!(
        sl[0]["checks"][0]["detail"]
            .as_str()
            .unwrap()
            .ends_with("split into 4 files"),
        "{}",
        sl[0]["checks"][0]
    );
    assert!(plain["numbers"].is_null() && pl[2]["numbers"].is_object());
}

/// A missing shard: every reader names it and exits 2 (inconclusive, for verify); quantize
/// writes nothing.
#[test]
fn a_missing_shard_is_named_and_exits_2() {
    let s = Scratch::new("missing");
    let shards = split_f16(&s.0);
    fs::remove_file(&shards[2]).unwrap();
    let missing = shards[2].display().to_string();
    let out = s.0.join("out.gguf");
    let runs = [
        ggforge([Path::new("inspect"), &shards[0]]),
        ggforge([Path::new("inspect"), &shards[3], Path::new("--json")]),
        ggforge([Path::new("diff"), &unsplit(), &shards[1]]),
        ggforge([Path::new("quantize"), &shards[0], &out, Path::new("Q8_0")]),
        ggforge([Path::new("verify"), &shards[0]]),
    ];
    for o in &runs {
        let all = format!("{}{}", stdout(o), stderr(o));
        assert_eq!(o.status.code(), Some(2), "{all}");
        assert!(
            all.contains("shard 3 of 4") && all.contains(&missing),
            "{all}"
        );
    }
    assert!(!out.exists());
    assert!(
        s.listing().iter().all(|n| !n.ends_with(".tmp")),
        "{:?}",
        s.listing()
    );
}

/// A shard of another model in the set (here: another cut of the same conversion, so a tensor
/// is in two shards) is named; the input is unusable (exit 2).
#[test]
fn a_foreign_shard_is_named() {
    let s = Scratch::new("foreign");
    let shards = split_f16(&s.0);
    let other = Scratch::new("foreign-other");
    let o = common::convert(
        &other.0.join("Tiny-F16.gguf"),
        &["--outtype", "f16", "--split-max-tensors", "6"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    fs::copy(other.0.join("Tiny-F16-00002-of-00004.gguf"), &shards[1]).unwrap();
    let o = ggforge([Path::new("inspect"), &shards[0]]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains(&shards[1].display().to_string()) && e.contains("also in an earlier shard"),
        "{e}"
    );
}
