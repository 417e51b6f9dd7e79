//! Benchmark-style check on a real model (not a test: the GGUFs are git-ignored and large).
//!
//! For each GGUF given (default: SmolLM2-135M-Instruct F16 and Q4_K_M made by llama.cpp under
//! fixtures/large/smollm2/llamacpp/from-f32/), prints
//!   - agreement with transformers' float32 logits for every fixture given (default: the committed
//!     fixtures/logits/smollm2-135m.safetensors and, when present, the 256-token
//!     fixtures/large/smollm2/logits-256.safetensors),
//!   - prompt throughput: one forward pass over N tokens (default 256, logits for every position,
//!     as verify needs them), median and best of R runs (thread count: RAYON_NUM_THREADS),
//!   - peak resident memory of the process (VmHWM; it includes the mmap'd file pages touched).
//!
//! With `--llama-logits FILE` (written by `llama-perplexity -m SAME.gguf -f TEXT -c N
//! --kl-divergence-base FILE`), it also evaluates llama.cpp's chunks with our runtime and compares
//! our distributions with llama.cpp's own for the same GGUF (llama.cpp stores log-probabilities
//! of the second half of each chunk, quantized to 16 bits within 16 nats of the maximum).
//!
//! Usage:
//!   cargo run --release -p runtime-check --example smollm2_bench -- \
//!       [--gguf FILE]... [--fixture FILE]... [--tokens N] [--runs R] [--llama-logits FILE]
//!       [--no-compare]
//!
//! `--no-compare` skips the fixture comparisons (throughput and peak RSS only: the comparisons
//! hold every prompt's logits at once, which would inflate the RSS figure).

use std::path::PathBuf;
use std::time::Instant;

use gguf::GgufFile;
use runtime_check::compare::argmax;
use runtime_check::{Comparison, LogitsFixture, Model};

/// llama-perplexity's `--kl-divergence-base` file.
struct LlamaLogits {
    n_ctx: usize,
    n_vocab: usize,
    tokens: Vec<u32>,
    /// Per chunk, per stored position: log-probabilities.
    chunks: Vec<Vec<Vec<f32>>>,
}

fn read_llama_logits(path: &PathBuf) -> Result<LlamaLogits, Box<dyn std::error::Error>> {
    let b = std::fs::read(path)?;
    if b.len() < 20 || &b[..8] != b"_logits_" {
        return Err(format!("{}: not a llama-perplexity logits file", path.display()).into());
    }
    let i32_at = |o: usize| i32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let n_ctx = usize::try_from(i32_at(8))?;
    let n_vocab = usize::try_from(i32_at(12))?;
    let n_chunk = usize::try_from(i32_at(16))?;
    let mut off = 20;
    let n_tok = n_chunk * n_ctx;
    if b.len() < off + 4 * n_tok {
        return Err("truncated token list".into());
    }
    let tokens = (0..n_tok)
        .map(|i| u32::try_from(i32_at(off + 4 * i)))
        .collect::<Result<Vec<_>, _>>()?;
    off += 4 * n_tok;
    let nv = 2 * n_vocab.div_ceil(2) + 4;
    let n_pos = n_ctx - 1 - n_ctx / 2;
    let mut chunks = Vec::new();
    for _ in 0..n_chunk {
        let mut rows = Vec::new();
        for _ in 0..n_pos {
            if b.len() < off + 2 * nv {
                return Err("truncated log-probabilities".into());
            }
            let f = |o: usize| f32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
            let (scale, min_lp) = (f(off), f(off + 4));
            let q = |i: usize| u16::from_le_bytes([b[off + 8 + 2 * i], b[off + 9 + 2 * i]]);
            rows.push((0..n_vocab).map(|i| min_lp + scale * q(i) as f32).collect());
            off += 2 * nv;
        }
        chunks.push(rows);
    }
    Ok(LlamaLogits {
        n_ctx,
        n_vocab,
        tokens,
        chunks,
    })
}

/// Our logits on llama.cpp's chunks vs llama.cpp's stored log-probabilities.
fn compare_with_llama(
    file: &GgufFile,
    model: &Model,
    ll: &LlamaLogits,
) -> Result<String, Box<dyn std::error::Error>> {
    if ll.n_vocab != model.n_vocab {
        return Err("vocabulary sizes differ".into());
    }
    let md = file.metadata();
    let add_bos = md
        .get("tokenizer.ggml.add_bos_token")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    let bos = md.get_u64("tokenizer.ggml.bos_token_id").map(|v| v as u32);
    let (mut kl_sum, mut kl_max, mut n, mut top1) = (0f64, 0f64, 0usize, 0usize);
    for (c, rows) in ll.chunks.iter().enumerate() {
        let mut toks = ll.tokens[c * ll.n_ctx..(c + 1) * ll.n_ctx].to_vec();
        if let (true, Some(b)) = (add_bos, bos) {
            toks[0] = b;
        }
        let ours = model.forward(&toks)?;
        for (k, lp_ref) in rows.iter().enumerate() {
            let row = ours.row(ll.n_ctx / 2 + k);
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
            let lse = row
                .iter()
                .map(|&v| (v as f64 - max).exp())
                .sum::<f64>()
                .ln()
                + max;
            // As llama-perplexity's own KLD: only tokens above the 16-nat floor of the file.
            let kl: f64 = lp_ref
                .iter()
                .zip(row)
                .filter(|(&a, _)| a > -16.0)
                .map(|(&a, &q)| (a as f64).exp() * (a as f64 - (q as f64 - lse)))
                .sum::<f64>()
                .max(0.0);
            kl_sum += kl;
            kl_max = kl_max.max(kl);
            n += 1;
            if argmax(lp_ref) == argmax(row) {
                top1 += 1;
            }
        }
    }
    Ok(format!(
        "positions {n} | top-1 {top1}/{n} | KLD(llama.cpp ‖ ours) mean {:.3e} max {:.3e}",
        kl_sum / n.max(1) as f64,
        kl_max
    ))
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut ggufs: Vec<PathBuf> = Vec::new();
    let mut fixtures: Vec<PathBuf> = Vec::new();
    let mut n_tokens = 256usize;
    let mut runs = 3usize;
    let mut llama_logits: Option<PathBuf> = None;
    let mut compare = true;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--gguf" => ggufs.push(val()?.into()),
            "--fixture" => fixtures.push(val()?.into()),
            "--tokens" => n_tokens = val()?.parse()?,
            "--runs" => runs = val()?.parse()?,
            "--llama-logits" => llama_logits = Some(val()?.into()),
            "--no-compare" => compare = false,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    if ggufs.is_empty() {
        let dir = root.join("fixtures/large/smollm2/llamacpp/from-f32");
        ggufs.push(dir.join("SmolLM2-135M-Instruct-F16.gguf"));
        ggufs.push(dir.join("SmolLM2-135M-Instruct-F16-Q4_K_M.gguf"));
    }
    if fixtures.is_empty() {
        fixtures.push(root.join("fixtures/logits/smollm2-135m.safetensors"));
        let long = root.join("fixtures/large/smollm2/logits-256.safetensors");
        if long.exists() {
            fixtures.push(long);
        }
    }
    let fixtures: Vec<LogitsFixture> = fixtures
        .iter()
        .map(LogitsFixture::open)
        .collect::<Result<_, _>>()?;
    // Throughput tokens: the longest fixture prompt, repeated if needed (content does not
    // change the cost).
    let longest = fixtures
        .iter()
        .flat_map(|f| f.prompts.iter())
        .max_by_key(|p| p.tokens.len())
        .map(|p| p.tokens.clone())
        .unwrap_or_default();
    if longest.is_empty() {
        return Err("no fixture tokens".into());
    }
    let bench_tokens: Vec<u32> = longest.iter().copied().cycle().take(n_tokens).collect();

    println!("threads: {}", rayon::current_num_threads());
    for path in &ggufs {
        let file = GgufFile::open(path)?;
        let t0 = Instant::now();
        let model = Model::load(&file)?;
        println!(
            "\n{} (load {:.0} ms)",
            path.display(),
            t0.elapsed().as_secs_f64() * 1e3
        );
        for fx in fixtures.iter().filter(|_| compare) {
            let mut cmp = Comparison::new();
            for p in &fx.prompts {
                cmp.add(&p.logits, &model.forward(&p.tokens)?)?;
            }
            println!(
                "  vs {}: {}",
                fx.path.file_name().unwrap_or_default().to_string_lossy(),
                cmp.report()
            );
        }
        if let Some(p) = &llama_logits {
            let ll = read_llama_logits(p)?;
            println!(
                "  vs llama.cpp {}: {}",
                p.file_name().unwrap_or_default().to_string_lossy(),
                compare_with_llama(&file, &model, &ll)?
            );
        }
        let mut times = Vec::new();
        for _ in 0..runs.max(1) {
            let t = Instant::now();
            let logits = model.forward(&bench_tokens)?;
            std::hint::black_box(&logits);
            times.push(t.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let (best, median) = (times[0], times[times.len() / 2]);
        let n = bench_tokens.len() as f64;
        println!(
            "  prompt throughput: {} tokens: median {:.3} s = {:.1} tokens/s, best {:.1} tokens/s \
             ({} runs: {:?})",
            bench_tokens.len(),
            median,
            n / median,
            n / best,
            times.len(),
            times
                .iter()
                .map(|t| n / t)
                .map(|v| v.round())
                .collect::<Vec<_>>()
        );
        if let Some(m) = peak_rss_mib() {
            println!("  peak RSS so far: {m:.0} MiB");
        }
    }
    Ok(())
}
