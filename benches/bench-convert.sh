#!/usr/bin/env bash
# Conversion benchmark: ggforge vs llama.cpp's convert_hf_to_gguf.py vs `cp` of the same bytes,
# on a synthetic llama-shaped bf16 checkpoint of 1.1 B parameters in 3 safetensors shards.
#
# For every --outtype (default: f16 q8_0) and every repetition, each tool runs once, in a
# rotating order; the table shows the median wall time, the median peak RSS and the ratios.
#
# An upper-case entry in -t is a llama-quantize preset (e.g. -t Q4_K_M): ggforge then converts
# and quantizes in one pass (`convert --quant Q4_K_M`, intermediate type auto = bf16 here),
# llama.cpp takes its two steps (`convert_hf_to_gguf.py --outtype bf16` into a temporary file,
# then `llama-quantize TMP OUT Q4_K_M THREADS`, the temporary file deleted inside the timing),
# and cp copies the checkpoint as usual. The two outputs are byte-identical. llama-quantize is
# LLAMA_QUANTIZE, else LLAMA_CPP_DIR/build/bin/llama-quantize; THREADS is --threads or nproc.
# Every timed command ends with `sync`, so all three pay for getting their bytes to disk
# (ggforge fsyncs its output anyway before renaming it into place).
#
# Cache: "cold" (default when possible) drops the page cache before each run
# (`sync; echo 3 > /proc/sys/vm/drop_caches`, needs root); "warm" reads the checkpoint once
# before each run instead. The header of the output says which one was used.
#
# Requirements:
#   - cargo (builds target/release/ggforge unless GGFORGE points to a binary)
#   - a Python with numpy for the generator, and for the llama.cpp column the converter's
#     dependencies (see fixtures/tiny/gen.py: torch, transformers, tokenizers, sentencepiece,
#     safetensors, protobuf, numpy): PYTHON=/path/to/venv/bin/python
#   - a llama.cpp source tree: LLAMA_CPP_DIR=.../llama_cpp_python-0.3.36/vendor/llama.cpp
#     (without it the llama.cpp column is skipped)
#   - GNU time at /usr/bin/time
#
# Usage:
#   PYTHON=venv/bin/python LLAMA_CPP_DIR=... benches/bench-convert.sh [-n REPS] [-t "f16 q8_0"]
#       [--cache cold|warm] [--work DIR] [--out DIR] [--threads N] [--no-llamacpp]
#   --work: where the checkpoint is generated (default /tmp/ggforge-bench; ~2.2 GB)
#   --out:  where outputs are written (default: the work dir; e.g. /dev/shm takes the output
#           disk out of the measurement)
# The raw measurements go to WORK/results-<time>.tsv.

set -euo pipefail

REPS=5
OUTTYPES="f16 q8_0"
CACHE=auto
WORK=/tmp/ggforge-bench
OUT=""
THREADS=""
LLAMACPP=1
while [ $# -gt 0 ]; do
    case "$1" in
        -n) REPS=$2; shift 2 ;;
        -t) OUTTYPES=$2; shift 2 ;;
        --cache) CACHE=$2; shift 2 ;;
        --work) WORK=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --threads) THREADS=$2; shift 2 ;;
        --no-llamacpp) LLAMACPP=0; shift ;;
        -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
OUT=${OUT:-$WORK}
MODEL=$WORK/Synth-Llama-1B
mkdir -p "$WORK" "$OUT"

if [ ! -x /usr/bin/time ]; then
    echo "error: GNU time (/usr/bin/time) is needed for wall time and peak RSS" >&2
    exit 1
fi

# --- ggforge binary -------------------------------------------------------------------------
if [ -z "${GGFORGE:-}" ]; then
    (cd "$ROOT" && cargo build --release -p ggforge >&2)
    GGFORGE=$ROOT/target/release/ggforge
fi

# --- checkpoint ------------------------------------------------------------------------------
GEN_ARGS="--hidden 2048 --layers 22 --ffn 5632 --heads 32 --kv-heads 4 --vocab 32000 --shards 3 --seed 1234"
if [ ! -f "$MODEL/.generated" ] || [ "$(cat "$MODEL/.generated")" != "$GEN_ARGS" ]; then
    echo "generating $MODEL ..." >&2
    # shellcheck disable=SC2086
    "$PYTHON" "$ROOT/benches/make_synthetic_llama.py" "$MODEL" $GEN_ARGS >&2
    echo "$GEN_ARGS" > "$MODEL/.generated"
fi

# --- llama.cpp -------------------------------------------------------------------------------
if [ "$LLAMACPP" = 1 ]; then
    if [ -z "${LLAMA_CPP_DIR:-}" ] || [ ! -f "$LLAMA_CPP_DIR/convert_hf_to_gguf.py" ]; then
        echo "note: LLAMA_CPP_DIR is not a llama.cpp tree; skipping the llama.cpp column" >&2
        LLAMACPP=0
    fi
fi

# --- cache policy ----------------------------------------------------------------------------
can_drop() { sync && echo 3 > /proc/sys/vm/drop_caches; } 2>/dev/null
if [ "$CACHE" = auto ]; then
    if can_drop; then CACHE=cold; else CACHE=warm; fi
elif [ "$CACHE" = cold ] && ! can_drop; then
    echo "error: cannot drop the page cache (needs root); use --cache warm" >&2
    exit 1
fi
prepare() {
    sync
    if [ "$CACHE" = cold ]; then
        echo 3 > /proc/sys/vm/drop_caches
    else
        cat "$MODEL"/*.safetensors > /dev/null
    fi
}

TOOLS="ggforge"
[ "$LLAMACPP" = 1 ] && TOOLS="$TOOLS llama.cpp"
TOOLS="$TOOLS cp"
THREAD_ARG=""
[ -n "$THREADS" ] && THREAD_ARG="--threads $THREADS"

LLAMA_QUANTIZE=${LLAMA_QUANTIZE:-${LLAMA_CPP_DIR:+$LLAMA_CPP_DIR/build/bin/llama-quantize}}
is_preset() { case "$1" in [A-Z]*) return 0 ;; *) return 1 ;; esac; }
if [ "$LLAMACPP" = 1 ]; then
    for ot in $OUTTYPES; do
        if is_preset "$ot" && [ ! -x "${LLAMA_QUANTIZE:-}" ]; then
            echo "error: -t $ot needs llama-quantize (LLAMA_QUANTIZE or LLAMA_CPP_DIR/build/bin)" >&2
            exit 1
        fi
    done
fi

command_for() { # tool outtype output
    local llama_convert="\"$PYTHON\" \"$ROOT/fixtures/tiny/gen.py\" convert --llama-cpp \"$LLAMA_CPP_DIR\" -- \"$MODEL\""
    if is_preset "$2"; then
        case "$1" in
            ggforge) echo "\"$GGFORGE\" convert \"$MODEL\" --quant $2 --outfile \"$3\" $THREAD_ARG" ;;
            llama.cpp) echo "$llama_convert --outtype bf16 --outfile \"$3.bf16\" && \"$LLAMA_QUANTIZE\" \"$3.bf16\" \"$3\" $2 ${THREADS:-$(nproc)} && rm -f \"$3.bf16\"" ;;
            cp) echo "mkdir -p \"$3\" && cp --reflink=never \"$MODEL\"/*.safetensors \"$3\"/" ;;
        esac
        return
    fi
    case "$1" in
        ggforge) echo "\"$GGFORGE\" convert \"$MODEL\" --outtype $2 --outfile \"$3\" $THREAD_ARG" ;;
        llama.cpp) echo "$llama_convert --outtype $2 --outfile \"$3\"" ;;
        cp) echo "mkdir -p \"$3\" && cp --reflink=never \"$MODEL\"/*.safetensors \"$3\"/" ;;
    esac
}

STAMP=$(date +%Y%m%d-%H%M%S)
RESULTS=$WORK/results-$STAMP.tsv
LOG=$WORK/bench-$STAMP.log
printf "outtype\ttool\trep\twall_s\tmaxrss_kb\tuser_s\tsys_s\n" > "$RESULTS"

{
    echo "# ggforge conversion benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/{print $2}') GB RAM, kernel $(uname -r)"
    echo "# checkpoint: $MODEL ($(du -sh "$MODEL" | cut -f1), $(ls "$MODEL"/*.safetensors | wc -l) shards)"
    echo "# output dir: $OUT ($(df -T "$OUT" | awk 'NR==2{print $2}'))"
    echo "# page cache: $CACHE; reps: $REPS; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$LOG"

read -r -a TOOL_ARR <<< "$TOOLS"
NTOOLS=${#TOOL_ARR[@]}
for ot in $OUTTYPES; do
    for rep in $(seq 1 "$REPS"); do
        # Rotate the order so that slow drifts (other load, disk state) hit every tool alike.
        rotated=""
        for k in $(seq 0 $((NTOOLS - 1))); do
            rotated="$rotated ${TOOL_ARR[(k + rep - 1) % NTOOLS]}"
        done
        for tool in $rotated; do
            dest=$OUT/bench-$tool-$ot.gguf
            [ "$tool" = cp ] && dest=$OUT/bench-cp
            rm -rf "$dest"
            prepare
            cmd=$(command_for "$tool" "$ot" "$dest")
            tfile=$(mktemp)
            if ! /usr/bin/time -o "$tfile" -f "%e %M %U %S" sh -c "$cmd && sync" > "$WORK/last-$tool.log" 2>&1; then
                echo "error: $tool failed (rep $rep, $ot); see $WORK/last-$tool.log" >&2
                cat "$tfile" >&2
                exit 1
            fi
            read -r wall rss user sys < <(tail -1 "$tfile")
            rm -f "$tfile"
            printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\n" "$ot" "$tool" "$rep" "$wall" "$rss" "$user" "$sys" >> "$RESULTS"
            printf "  %-5s rep %d %-10s %7.2f s wall %7.2f s cpu %8.0f MB   (load %s)\n" "$ot" "$rep" "$tool" "$wall" \
                "$(awk -v a="$user" -v b="$sys" 'BEGIN { print a + b }')" "$((rss / 1024))" "$(cut -d' ' -f1 /proc/loadavg)" | tee -a "$LOG" >&2
        done
        # Same tensors as llama.cpp? (checked once per outtype; metadata included)
        if [ "$rep" = 1 ] && [ "$LLAMACPP" = 1 ]; then
            if "$GGFORGE" diff "$OUT/bench-ggforge-$ot.gguf" "$OUT/bench-llama.cpp-$ot.gguf" > "$WORK/diff-$ot.txt" 2>&1; then
                echo "  $ot: ggforge output identical to llama.cpp's ($(tail -1 "$WORK/diff-$ot.txt"))" | tee -a "$LOG" >&2
            else
                echo "  $ot: ggforge output DIFFERS from llama.cpp's; see $WORK/diff-$ot.txt" | tee -a "$LOG" >&2
            fi
        fi
        rm -rf "$OUT"/bench-*
    done
done
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$LOG"

# --- summary: medians and ratios -------------------------------------------------------------
awk -F'\t' -v tools="$TOOLS" -v outtypes="$OUTTYPES" '
function median(list,   a, n, i, j, t) {
    n = split(list, a, " ")
    for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
NR > 1 { w[$1 SUBSEP $2] = w[$1 SUBSEP $2] " " $4; r[$1 SUBSEP $2] = r[$1 SUBSEP $2] " " $5
         c[$1 SUBSEP $2] = c[$1 SUBSEP $2] " " ($6 + $7)
         if (!($1 SUBSEP $2 in lo) || $4 < lo[$1 SUBSEP $2]) lo[$1 SUBSEP $2] = $4
         if ($4 > hi[$1 SUBSEP $2]) hi[$1 SUBSEP $2] = $4 }
END {
    nt = split(tools, T, " "); no = split(outtypes, O, " ")
    printf "\n| outtype | tool | median wall (s) | min–max (s) | time ÷ ggforge | median CPU user+sys (s) | median peak RSS (MB) |\n"
    printf "|---|---|---:|---:|---:|---:|---:|\n"
    for (o = 1; o <= no; o++) {
        g = median(w[O[o] SUBSEP "ggforge"])
        for (t = 1; t <= nt; t++) {
            k = O[o] SUBSEP T[t]; m = median(w[k])
            printf "| %s | %s | %.2f | %.2f–%.2f | %s | %.2f | %.0f |\n", O[o], T[t], m, lo[k], hi[k], \
                (T[t] == "ggforge") ? "1" : sprintf("%.2f×", m / g), median(c[k]), median(r[k]) / 1024
        }
    }
    printf "\n"
    for (o = 1; o <= no; o++) {
        g = median(w[O[o] SUBSEP "ggforge"])
        printf "%s: ggforge takes %.2f× the time of cp", O[o], g / median(w[O[o] SUBSEP "cp"])
        if ((O[o] SUBSEP "llama.cpp") in w)
            printf " and is %.1f× faster than convert_hf_to_gguf.py", median(w[O[o] SUBSEP "llama.cpp"]) / g
        printf "\n"
    }
}' "$RESULTS" | tee -a "$LOG"
echo "raw: $RESULTS; log: $LOG" >&2
