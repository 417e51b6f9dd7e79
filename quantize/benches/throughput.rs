//! Quantize/dequantize throughput on a 4096×4096 pseudo-normal matrix.
//!
//! `cargo bench -p quantize` (plain `harness = false` binary: prints MB/s of f32 input per type;
//! pass type names as arguments to restrict the set, e.g. `cargo bench -p quantize -- q4_K q8_0`).

use std::time::Instant;

use gguf::GgmlType;

fn matrix(n: usize) -> Vec<f32> {
    let mut s = 0x1234_5678_9abc_def0u64;
    (0..n)
        .map(|_| {
            let mut acc = 0.0f64;
            for _ in 0..4 {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                acc += (s >> 11) as f64 / (1u64 << 53) as f64;
            }
            ((acc - 2.0) * 0.03) as f32
        })
        .collect()
}

/// CPU seconds used by this process's threads so far (sum of the nanosecond run times in
/// /proc/self/task/*/schedstat; Linux only). Reported beside wall time because the build machine
/// is shared: CPU time is what the work costs when other jobs compete for the cores.
fn cpu_seconds() -> Option<f64> {
    let mut ns = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        ns += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(ns as f64 / 1e9)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let (rows, cols) = (4096, 4096);
    let data = matrix(rows * cols);
    let imatrix: Vec<f32> = matrix(cols).iter().map(|v| v.abs() * 10.0 + 0.1).collect();
    let mb = (rows * cols * 4) as f64 / 1e6;
    println!(
        "{rows}x{cols} f32 ({mb:.0} MB), {} rayon threads",
        rayon::current_num_threads()
    );
    for ty in GgmlType::ALL {
        if !quantize::can_quantize(ty)
            || (!args.is_empty() && !args.iter().any(|a| a.eq_ignore_ascii_case(ty.name())))
        {
            continue;
        }
        let variants: &[Option<&[f32]>] = if quantize::uses_imatrix(ty) {
            &[None, Some(&imatrix)]
        } else {
            &[None]
        };
        for imat in variants {
            let c0 = cpu_seconds();
            let t = Instant::now();
            let q = match quantize::quantize(ty, &data, cols, *imat) {
                Ok(q) => q,
                Err(e) => panic!("{ty}: {e}"),
            };
            let tq = t.elapsed().as_secs_f64();
            let cq = match (c0, cpu_seconds()) {
                (Some(a), Some(b)) => {
                    format!(", cpu {:6.2} s ({:7.1} MB/s/cpu)", b - a, mb / (b - a))
                }
                _ => String::new(),
            };
            let t = Instant::now();
            let back = match quantize::dequantize(ty, &q, rows * cols) {
                Ok(b) => b,
                Err(e) => panic!("{ty}: {e}"),
            };
            let td = t.elapsed().as_secs_f64();
            std::hint::black_box(back);
            println!(
                "{:>8} {:>6}: quantize {:7.3} s ({:7.1} MB/s{}), dequantize {:6.3} s ({:7.1} MB/s)",
                ty.name(),
                if imat.is_some() { "imat" } else { "plain" },
                tq,
                mb / tq,
                cq,
                td,
                mb / td
            );
        }
    }
}
