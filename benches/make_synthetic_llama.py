#!/usr/bin/env python3
"""Write a synthetic, llama-shaped bf16 (or f16) Hugging Face checkpoint for the conversion benchmark.

Why: converter speed only shows on a model of realistic size (≥ 1 B parameters, several
shards, large embedding), and no such model ships with ggforge. The values are random (normal,
σ = 0.02, norms ≈ 1) so that nothing compresses or quantizes unrealistically well; the tokenizer
is copied from a tiny fixture and only has to convert (the embedding keeps `--vocab` rows and
the vocabulary is padded with `[PAD{i}]` tokens, as both converters do for `vocab_size` larger
than the tokenizer).

The default shape is TinyLlama-1.1B's: hidden 2048, 22 layers, ffn 5632, 32 heads (4 KV heads),
vocab 32000, untied output: 1.10 B parameters, 2.2 GB of bf16 in 3 shards.

Needs only numpy (the venv of fixtures/tiny/gen.py has it):
    python3 -m venv venv && venv/bin/pip install numpy
Usage:
    venv/bin/python benches/make_synthetic_llama.py OUT_DIR [--layers 22] [--hidden 2048] ...
The output is deterministic for a given --seed; OUT_DIR is replaced.
"""

from __future__ import annotations

import argparse
import json
import shutil
import struct
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_TOKENIZER = HERE.parent / "fixtures" / "tiny" / "llama3" / "Tiny-Llama-3-Instruct"
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "generation_config.json"]


def to_bf16(x: np.ndarray) -> np.ndarray:
    """f32 → bf16 bits, round to nearest even (what torch's .to(bfloat16) does for finite values)."""
    u = x.astype(np.float32).view(np.uint32)
    return ((u + (np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1)))) >> np.uint32(16)).astype(np.uint16)


def tensor_list(a: argparse.Namespace) -> list[tuple[str, tuple[int, ...], str]]:
    """(HF name, shape, kind) in model order; kind is 'w' (random weight) or 'norm'."""
    head_dim = a.hidden // a.heads
    kv = a.kv_heads * head_dim
    out: list[tuple[str, tuple[int, ...], str]] = [("model.embed_tokens.weight", (a.vocab, a.hidden), "w")]
    for i in range(a.layers):
        p = f"model.layers.{i}."
        out += [
            (p + "input_layernorm.weight", (a.hidden,), "norm"),
            (p + "self_attn.q_proj.weight", (a.hidden, a.hidden), "w"),
            (p + "self_attn.k_proj.weight", (kv, a.hidden), "w"),
            (p + "self_attn.v_proj.weight", (kv, a.hidden), "w"),
            (p + "self_attn.o_proj.weight", (a.hidden, a.hidden), "w"),
            (p + "post_attention_layernorm.weight", (a.hidden,), "norm"),
            (p + "mlp.gate_proj.weight", (a.ffn, a.hidden), "w"),
            (p + "mlp.up_proj.weight", (a.ffn, a.hidden), "w"),
            (p + "mlp.down_proj.weight", (a.hidden, a.ffn), "w"),
        ]
    out += [("model.norm.weight", (a.hidden,), "norm"), ("lm_head.weight", (a.vocab, a.hidden), "w")]
    return out


def write_shard(path: Path, tensors: list[tuple[str, tuple[int, ...], str]], rng: np.random.Generator,
                dtype: str) -> int:
    """Writes one safetensors file (header first, then the data, one tensor at a time)."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape, _ in tensors:
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": dtype.upper(), "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # keep the data 8-byte aligned, as safetensors does
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for _, shape, kind in tensors:
            n = int(np.prod(shape))
            if kind == "norm":
                v = 1.0 + 0.05 * rng.standard_normal(n, dtype=np.float32)
            else:
                v = 0.02 * rng.standard_normal(n, dtype=np.float32)
            f.write((to_bf16(v) if dtype == "bf16" else v.astype("<f2")).tobytes())
    return offset


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--layers", type=int, default=22)
    p.add_argument("--ffn", type=int, default=5632)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--shards", type=int, default=3)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--dtype", choices=["bf16", "f16"], default="bf16")
    p.add_argument("--tokenizer-from", type=Path, default=DEFAULT_TOKENIZER,
                   help="folder whose tokenizer.json / tokenizer_config.json / generation_config.json are copied")
    a = p.parse_args()

    tensors = tensor_list(a)
    n_params = sum(int(np.prod(s)) for _, s, _ in tensors)
    # Split into shards of about equal byte size, keeping model order (as HF's save_pretrained).
    total = n_params * 2
    shards: list[list[tuple[str, tuple[int, ...], str]]] = [[] for _ in range(a.shards)]
    acc = 0
    for t in tensors:
        k = min(acc * a.shards // total, a.shards - 1)
        shards[k].append(t)
        acc += int(np.prod(t[1])) * 2
    shards = [s for s in shards if s]

    if a.out.exists():
        shutil.rmtree(a.out)
    a.out.mkdir(parents=True)
    rng = np.random.default_rng(a.seed)
    weight_map: dict[str, str] = {}
    for i, s in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        write_shard(a.out / fname, s, rng, a.dtype)
        weight_map.update({name: fname for name, _, _ in s})
        print(f"wrote {fname} ({len(s)} tensors)", flush=True)
    (a.out / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, indent=2) + "\n")

    src_cfg = json.loads((a.tokenizer_from / "config.json").read_text())
    cfg = dict(src_cfg)
    cfg.update({
        "hidden_size": a.hidden,
        "intermediate_size": a.ffn,
        "num_hidden_layers": a.layers,
        "num_attention_heads": a.heads,
        "num_key_value_heads": a.kv_heads,
        "head_dim": a.hidden // a.heads,
        "vocab_size": a.vocab,
        "max_position_embeddings": 2048,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16" if a.dtype == "bf16" else "float16",
    })
    cfg.pop("rope_scaling", None)
    cfg["rope_theta"] = 10000.0
    (a.out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    for name in TOKENIZER_FILES:
        if (a.tokenizer_from / name).is_file():
            shutil.copy(a.tokenizer_from / name, a.out / name)
    print(f"{a.out}: {n_params} parameters ({n_params / 1e9:.2f} B), {total} bytes of {a.dtype}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
