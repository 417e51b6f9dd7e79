#!/usr/bin/env bash
# Quality table for ggforge's quantizer: for every preset, quantize the same input GGUF with
# `ggforge quantize` and with llama.cpp's `llama-quantize`, then report per file its size, bits
# per weight, sha256 equality, and llama-perplexity's KL divergence against the F32 model (mean
# KLD and "Same top p", the share of positions where both models rank the same token first).
#
# Why both files get their own KLD run although the bytes are equal: the table is meant to show
# the measurement, not to infer it.
#
# Requirements:
#   - target/release/ggforge (built here unless GGFORGE points to a binary)
#   - llama.cpp built with tools: LLAMA_BIN=.../llama.cpp/build/bin (llama-quantize,
#     llama-perplexity, llama-imatrix); the text is taken from LLAMA_CPP_DIR/docs/*.md
#   - python3 (standard library only) and GNU coreutils
#
# Usage:
#   LLAMA_CPP_DIR=.../vendor/llama.cpp benches/quantize/quality.sh F32.gguf [WORK_DIR]
# Environment:
#   PRESETS   presets to run (default: all 18 below)
#   IMATRIX_PRESETS  presets to run again with an importance matrix computed by llama-imatrix
#             on the same text (default: "Q4_0 Q4_K_M IQ4_XS Q2_K"; empty = skip)
#   CHUNKS    number of 512-token chunks for perplexity/KLD (default 16)
#   THREADS   threads for every tool (default 2)
#   KLD_BOTH  1 (default): run the KLD measurement on both files; 0: on llama-quantize's file only
#             when its sha256 differs from ggforge's (the column then says "same bytes"), which
#             halves the run time on a busy machine
# Presets already in WORK/quality.tsv are skipped, so an interrupted run can be resumed.
# The raw table (TSV) goes to WORK/quality.tsv and a Markdown table to stdout.

set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
IN=${1:?usage: quality.sh F32.gguf [WORK_DIR]}
WORK=${2:-/tmp/ggforge-quality}
LLAMA_CPP_DIR=${LLAMA_CPP_DIR:?set LLAMA_CPP_DIR to a llama.cpp tree}
LLAMA_BIN=${LLAMA_BIN:-$LLAMA_CPP_DIR/build/bin}
PRESETS=${PRESETS:-"Q2_K Q3_K_S Q3_K_M Q3_K_L Q4_0 Q4_1 Q5_0 Q5_1 Q4_K_S Q4_K_M Q5_K_S Q5_K_M Q6_K Q8_0 IQ4_NL IQ4_XS F16 BF16"}
IMATRIX_PRESETS=${IMATRIX_PRESETS-"Q4_0 Q4_K_M IQ4_XS Q2_K"}
CHUNKS=${CHUNKS:-16}
THREADS=${THREADS:-2}
KLD_BOTH=${KLD_BOTH:-1}
mkdir -p "$WORK"

if [ -z "${GGFORGE:-}" ]; then
    (cd "$ROOT" && cargo build --release -p ggforge >&2)
    GGFORGE=$ROOT/target/release/ggforge
fi

# --- fixed evaluation text: llama.cpp's docs/*.md in name order -----------------------------
TEXT=$WORK/eval-text.txt
if [ ! -s "$TEXT" ]; then
    LC_ALL=C ls "$LLAMA_CPP_DIR"/docs/*.md | LC_ALL=C sort | xargs cat > "$TEXT"
fi
echo "text: $TEXT ($(wc -c < "$TEXT") bytes; sha256 $(sha256sum "$TEXT" | cut -c1-16)); $CHUNKS chunks of 512 tokens" >&2

PPL_ARGS=(-f "$TEXT" -c 512 --chunks "$CHUNKS" -t "$THREADS" -b 512)

# --- KLD base: logits of the F32 model ------------------------------------------------------
BASE=$WORK/base.kld
if [ ! -s "$BASE" ]; then
    "$LLAMA_BIN/llama-perplexity" -m "$IN" "${PPL_ARGS[@]}" --kl-divergence-base "$BASE" > "$WORK/base.log" 2>&1
fi
grep -m1 -E "Final estimate" "$WORK/base.log" >&2 || true

# tensor bytes and parameter count of a GGUF -> "bytes params"
tensor_stats() {
    "$GGFORGE" inspect --json "$1" | python3 -c '
import json, sys
d = json.load(sys.stdin)
b = sum(t["bytes"] for t in d["tensors"])
n = 0
for t in d["tensors"]:
    k = 1
    for x in t["dims"]:
        k *= x
    n += k
print(b, n)'
}

# mean KLD and same-top-p of a quantized model -> "kld top"
kld_of() {
    local log=$2
    "$LLAMA_BIN/llama-perplexity" -m "$1" "${PPL_ARGS[@]}" --kl-divergence --kl-divergence-base "$BASE" > "$log" 2>&1
    local kld top
    kld=$(grep -E "^Mean +KLD:" "$log" | awk '{print $3 " ± " $5}')
    top=$(grep -E "^Same top p:" "$log" | awk '{print $4 " ± " $6}')
    echo "$kld|$top"
}

IMAT=$WORK/imatrix.gguf
if [ -n "$IMATRIX_PRESETS" ] && [ ! -s "$IMAT" ]; then
    "$LLAMA_BIN/llama-imatrix" -m "$IN" -f "$TEXT" -c 512 --chunks "$CHUNKS" -t "$THREADS" -o "$IMAT" > "$WORK/imatrix.log" 2>&1
fi

TSV=$WORK/quality.tsv
[ -s "$TSV" ] || printf "preset\timatrix\tsize_bytes\ttensor_bytes\tparams\tbpw\tidentical\tsha256\tkld_ggforge\ttop_ggforge\tkld_llamacpp\ttop_llamacpp\tgg_s\tlc_s\n" > "$TSV"

run_one() { # preset imatrix(0/1)
    local p=$1 im=$2 tag=$1 gg_extra=() lc_extra=()
    if [ "$im" = 1 ]; then
        tag=$p-imat
        gg_extra=(--imatrix "$IMAT")
        lc_extra=(--imatrix "$IMAT")
    fi
    if [ -s "$TSV" ] && awk -F'\t' -v p="$p" -v im="$im" '$1 == p && $2 == im {f = 1} END {exit !f}' "$TSV"; then
        echo "  $tag: already measured" >&2
        return
    fi
    local gg=$WORK/gg-$tag.gguf lc=$WORK/lc-$tag.gguf t0 t1 t2
    t0=$(date +%s.%N)
    "$GGFORGE" quantize "${gg_extra[@]}" --threads "$THREADS" "$IN" "$gg" "$p" > "$WORK/gg-$tag.log" 2>&1
    t1=$(date +%s.%N)
    "$LLAMA_BIN/llama-quantize" "${lc_extra[@]}" "$IN" "$lc" "$p" "$THREADS" > "$WORK/lc-$tag.log" 2>&1
    t2=$(date +%s.%N)
    local hg hl same
    hg=$(sha256sum "$gg" | cut -d' ' -f1)
    hl=$(sha256sum "$lc" | cut -d' ' -f1)
    if [ "$hg" = "$hl" ]; then same=yes; else same=NO; fi
    local size stats bytes params bpw
    size=$(stat -c %s "$gg")
    stats=$(tensor_stats "$gg")
    bytes=${stats% *}
    params=${stats#* }
    bpw=$(python3 -c "print(f'{$bytes * 8 / $params:.3f}')")
    local kg kl
    kg=$(kld_of "$gg" "$WORK/kld-gg-$tag.log")
    if [ "$KLD_BOTH" = 1 ] || [ "$same" != yes ]; then
        kl=$(kld_of "$lc" "$WORK/kld-lc-$tag.log")
    else
        kl="same bytes|same bytes"
    fi
    printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.1f\t%.1f\n" "$p" "$im" "$size" "$bytes" "$params" "$bpw" "$same" "$hg" \
        "${kg%|*}" "${kg#*|}" "${kl%|*}" "${kl#*|}" "$(echo "$t1 - $t0" | bc)" "$(echo "$t2 - $t1" | bc)" >> "$TSV"
    echo "  $tag: ${size} B, $bpw bpw, identical=$same, KLD gg ${kg%|*} / lc ${kl%|*}, top ${kg#*|} / ${kl#*|}" >&2
    rm -f "$gg" "$lc"
}

for p in $PRESETS; do run_one "$p" 0; done
for p in $IMATRIX_PRESETS; do run_one "$p" 1; done

python3 - "$TSV" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
print("| preset | imatrix | file size (MiB) | bpw | ggforge = llama-quantize (sha256) | mean KLD, ggforge file | mean KLD, llama.cpp file | same top p, ggforge file | same top p, llama.cpp file |")
print("|---|---|---:|---:|---|---:|---:|---:|---:|")
for r in rows:
    print(f"| {r['preset']} | {'yes' if r['imatrix']=='1' else 'no'} | {int(r['size_bytes'])/2**20:.1f} | {r['bpw']} | "
          f"{r['identical']} (`{r['sha256'][:12]}`) | {r['kld_ggforge']} | {r['kld_llamacpp']} | {r['top_ggforge']} | {r['top_llamacpp']} |")
EOF
