#!/usr/bin/env bash
# Quantization benchmark: `ggforge quantize` vs llama.cpp's `llama-quantize`, same input, same
# preset, same thread count, on a synthetic llama-shaped F16 GGUF of 1.1 B parameters.
#
# Why synthetic: quantizer speed only shows on a model of realistic size whose rows are a
# multiple of 256 (so the K-quant presets really produce K-quants instead of falling back to
# Q5_0/Q8_0, as they do on SmolLM2's 576-wide rows). The shape is TinyLlama-1.1B's (hidden 2048,
# 22 layers, ffn 5632, 32 heads / 4 KV heads, vocab 32000, untied output), random normal values.
# The checkpoint comes from benches/make_synthetic_llama.py (shared with bench-convert.sh) and is
# turned into the F16 GGUF with `ggforge convert --outtype f16`; both are cached in the work dir.
#
# For every preset, thread count and repetition both tools run once, alternating which goes
# first. Each timed command runs under GNU time (`%e %U %S %M`); the input is read once before
# each run (warm cache). Outputs go to OUT_DIR (default /dev/shm when it has room: a tmpfs takes
# the output disk, and ggforge's fsync, out of the measurement); on a disk OUT_DIR the timed
# command is `TOOL ... && sync`, so both tools pay for getting their bytes to disk.
# The first repetition of each preset also checks that the two outputs have the same sha256.
#
# Requirements:
#   - cargo (builds target/release/ggforge unless GGFORGE points to a binary)
#   - llama-quantize: LLAMA_QUANTIZE=/path/to/llama-quantize, or LLAMA_CPP_DIR=<llama.cpp tree>
#     with a build in LLAMA_CPP_DIR/build/bin (llama.cpp from
#     `pip download --no-deps --no-binary llama-cpp-python llama-cpp-python==0.3.36`, vendor/llama.cpp,
#     built with `cmake -B build && cmake --build build --target llama-quantize`)
#   - a Python with numpy to generate the checkpoint (PYTHON, default python3), only on first use
#   - GNU time at /usr/bin/time
#
# Environment:
#   GGFORGE_BENCH_DIR  cache/work directory (default /tmp/ggforge-bench; ~2.2 GB checkpoint +
#                      2.2 GB F16 GGUF + one output at a time)
#   REPS               repetitions per (preset, threads, tool) (default 3); medians are reported
#   THREADS_LIST       thread counts (default "1 2")
#   TYPES              presets (default "Q8_0 Q4_0 Q4_K_M Q5_K_M Q6_K Q2_K IQ4_XS")
#   SUMMARY_ONLY       space-separated results-*.tsv files: print their combined table and exit
#   OUT_DIR            where outputs are written (one at a time, ≤ 1.2 GB; default: see above)
#
# Usage:
#   LLAMA_CPP_DIR=.../vendor/llama.cpp REPS=3 benches/bench-quantize.sh
# Raw measurements: $GGFORGE_BENCH_DIR/quantize/results-<time>.tsv; the summary is on stdout.

set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${GGFORGE_BENCH_DIR:-/tmp/ggforge-bench}
Q=$DIR/quantize
REPS=${REPS:-3}
THREADS_LIST=${THREADS_LIST:-"1 2"}
TYPES=${TYPES:-"Q8_0 Q4_0 Q4_K_M Q5_K_M Q6_K Q2_K IQ4_XS"}
PYTHON=${PYTHON:-python3}
mkdir -p "$Q"
if [ -z "${OUT_DIR:-}" ]; then
    OUT_DIR=$Q
    if [ -d /dev/shm ] && [ -w /dev/shm ] && [ "$(df -Pk /dev/shm | awk 'NR==2{print $4}')" -gt 3000000 ]; then
        OUT_DIR=/dev/shm/ggforge-bench-quantize
    fi
fi
mkdir -p "$OUT_DIR"
SYNC=" && sync"
[ "$(df -PT "$OUT_DIR" | awk 'NR==2{print $2}')" = tmpfs ] && SYNC=""

if [ ! -x /usr/bin/time ]; then
    echo "error: GNU time (/usr/bin/time) is needed for wall/CPU time and peak RSS" >&2
    exit 1
fi
if [ -z "${LLAMA_QUANTIZE:-}" ]; then
    LLAMA_QUANTIZE=${LLAMA_CPP_DIR:+$LLAMA_CPP_DIR/build/bin/llama-quantize}
fi
if [ -z "${LLAMA_QUANTIZE:-}" ] || [ ! -x "$LLAMA_QUANTIZE" ]; then
    echo "error: set LLAMA_QUANTIZE to llama-quantize, or LLAMA_CPP_DIR to a built llama.cpp tree" >&2
    exit 1
fi

# --- ggforge binary -------------------------------------------------------------------------
if [ -z "${GGFORGE:-}" ]; then
    (cd "$ROOT" && cargo build --release -p ggforge >&2)
    GGFORGE=$ROOT/target/release/ggforge
fi

# --- input: synthetic 1.1 B F16 GGUF (cached) ------------------------------------------------
GEN_ARGS="--hidden 2048 --layers 22 --ffn 5632 --heads 32 --kv-heads 4 --vocab 32000 --shards 3 --seed 1234"
MODEL=$DIR/Synth-Llama-1B
IN=$Q/synth-llama-1b-F16.gguf
if [ ! -f "$IN" ] || [ "$(cat "$IN.generated" 2>/dev/null)" != "$GEN_ARGS" ]; then
    if [ ! -f "$MODEL/.generated" ] || [ "$(cat "$MODEL/.generated")" != "$GEN_ARGS" ]; then
        echo "generating $MODEL ..." >&2
        # shellcheck disable=SC2086
        "$PYTHON" "$ROOT/benches/make_synthetic_llama.py" "$MODEL" $GEN_ARGS >&2
        echo "$GEN_ARGS" > "$MODEL/.generated"
    fi
    echo "converting to $IN ..." >&2
    rm -f "$IN" "$IN.generated"
    "$GGFORGE" convert "$MODEL" --outtype f16 --outfile "$IN" >&2
    echo "$GEN_ARGS" > "$IN.generated"
fi
N_PARAMS=$("$GGFORGE" inspect "$IN" | awk '/ parameters; /{print $1}')

# --- summary: medians, throughput, ratios ----------------------------------------------------
# summarize RESULTS.tsv...: medians per (preset, threads, tool) over all the files given.
summarize() {
    awk -F'\t' -v types="$TYPES" -v threads="$THREADS_LIST" -v np="$N_PARAMS" '
function median(list,   a, n, i, j, t) {
    n = split(list, a, " ")
    for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
FNR == 1 { idf = FILENAME; sub(/results-/, "identical-", idf); sub(/\.tsv$/, ".txt", idf)
           while ((getline line < idf) > 0) { split(line, f, " "); same[f[1]] = (f[2] == "identical") ? "yes" : "NO" } }
FNR > 1 { k = $1 SUBSEP $2 SUBSEP $3; w[k] = w[k] " " $5; c[k] = c[k] " " ($6 + $7); r[k] = r[k] " " $8 }
END {
    nt = split(types, T, " "); nh = split(threads, H, " ")
    printf "\n| preset | threads | ggforge wall (s) | llama-quantize wall (s) | ggforge CPU (s) | llama-quantize CPU (s) | ggforge peak RSS (MB) | llama-quantize peak RSS (MB) | ggforge Mweights/s (wall) | speed-up, wall (llama ÷ ggforge) | speed-up, CPU (llama ÷ ggforge) | target | met? (wall / CPU) | same bytes |\n"
    printf "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|\n"
    for (i = 1; i <= nt; i++) for (h = 1; h <= nh; h++) {
        g = T[i] SUBSEP H[h] SUBSEP "ggforge"; l = T[i] SUBSEP H[h] SUBSEP "llama.cpp"
        if (!(g in w) || !(l in w)) continue
        gw = median(w[g]); lw = median(w[l]); ratio = lw / gw; gc = median(c[g]); lc = median(c[l]); cratio = lc / gc
        target = (T[i] == "Q8_0" || T[i] == "Q4_0") ? 1.0 : (T[i] ~ /_K/ ? 1.5 : 0)
        met = target ? (((ratio >= target) ? "yes" : "no") " / " ((cratio >= target) ? "yes" : "no")) : "n/a"
        printf "| %s | %s | %.2f | %.2f | %.2f | %.2f | %.0f | %.0f | %.0f | %.2f× | %.2f× | %s | %s | %s |\n", T[i], H[h], gw, lw,
            gc, lc, median(r[g]) / 1024, median(r[l]) / 1024, np / gw / 1e6, ratio, cratio,
            target ? sprintf("≥ %.1f×", target) : "—", met, (T[i] in same) ? same[T[i]] : "?"
    }
}' "$@"
}

if [ -n "${SUMMARY_ONLY:-}" ]; then
    # Re-print the table from earlier runs (e.g. runs of different presets) without measuring.
    # shellcheck disable=SC2086
    summarize $SUMMARY_ONLY
    exit 0
fi

STAMP=$(date +%Y%m%d-%H%M%S)
RESULTS=$Q/results-$STAMP.tsv
LOG=$Q/bench-$STAMP.log
printf "type\tthreads\ttool\trep\twall_s\tuser_s\tsys_s\tmaxrss_kb\n" > "$RESULTS"
{
    echo "# ggforge quantize benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/{print $2}') GB RAM"
    echo "# input: $IN ($N_PARAMS parameters, $(du -h "$IN" | cut -f1))"
    echo "# ggforge: $GGFORGE; llama-quantize: $LLAMA_QUANTIZE"
    echo "# outputs: $OUT_DIR ($(df -PT "$OUT_DIR" | awk 'NR==2{print $2}'))${SYNC:+, timed with sync}"
    echo "# reps: $REPS; threads: $THREADS_LIST; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$LOG"

run() { # tool type threads rep
    local tool=$1 ty=$2 th=$3 rep=$4 out=$OUT_DIR/out-$1-$2.gguf cmd tfile
    rm -f "$out"
    cat "$IN" > /dev/null
    case "$tool" in
        ggforge) cmd="\"$GGFORGE\" quantize --threads $th \"$IN\" \"$out\" $ty" ;;
        llama.cpp) cmd="\"$LLAMA_QUANTIZE\" \"$IN\" \"$out\" $ty $th" ;;
    esac
    tfile=$(mktemp)
    if ! /usr/bin/time -o "$tfile" -f "%e %U %S %M" sh -c "$cmd$SYNC" > "$Q/last-$tool.log" 2>&1; then
        echo "error: $tool failed ($ty, $th threads); see $Q/last-$tool.log" >&2
        cat "$tfile" >&2
        exit 1
    fi
    local wall user sys rss
    read -r wall user sys rss < <(tail -1 "$tfile")
    rm -f "$tfile"
    printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n" "$ty" "$th" "$tool" "$rep" "$wall" "$user" "$sys" "$rss" >> "$RESULTS"
    printf "  %-6s t=%s rep %d %-9s %7.2f s wall %7.2f s cpu %6d MB   (load %s)\n" "$ty" "$th" "$rep" "$tool" \
        "$wall" "$(echo "$user + $sys" | bc)" "$((rss / 1024))" "$(cut -d' ' -f1 /proc/loadavg)" | tee -a "$LOG" >&2
}

first_th=${THREADS_LIST%% *}
for ty in $TYPES; do
    for th in $THREADS_LIST; do
        for rep in $(seq 1 "$REPS"); do
            # Alternate which tool goes first, so drifts in machine load hit both alike.
            if [ $(((rep + th) % 2)) = 0 ]; then order="ggforge llama.cpp"; else order="llama.cpp ggforge"; fi
            for tool in $order; do run "$tool" "$ty" "$th" "$rep"; done
            if [ "$rep" = 1 ] && [ "$th" = "$first_th" ]; then
                a=$(sha256sum "$OUT_DIR/out-ggforge-$ty.gguf" | cut -d' ' -f1)
                b=$(sha256sum "$OUT_DIR/out-llama.cpp-$ty.gguf" | cut -d' ' -f1)
                if [ "$a" = "$b" ]; then same="identical (sha256 ${a:0:16})"; else same="DIFFERENT"; fi
                echo "  $ty: outputs $same, $(stat -c %s "$OUT_DIR/out-ggforge-$ty.gguf") bytes" | tee -a "$LOG" >&2
                echo "$ty $same" >> "$Q/identical-$STAMP.txt"
            fi
            rm -f "$OUT_DIR"/out-*.gguf
        done
    done
done
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$LOG"

summarize "$RESULTS" | tee -a "$LOG"
echo "raw: $RESULTS; log: $LOG" >&2
