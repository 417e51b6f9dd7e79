#!/usr/bin/env python3
"""Generate the tokenizer edge cases of convert/tests/vocab_cases/ and llama.cpp's output for them.

Why: the tiny model fixtures (fixtures/tiny/) cover one stock tokenizer layout per architecture.
llama.cpp's tokenizer conversion has many more branches (SentencePiece with added_tokens.json and
added_tokens_decoder overrides, CodeLlama's 32016 and granite's 49152 vocab sizes, Gemma 1's
second SpecialVocab pass, the LlamaHfVocab path, RobertaProcessing, chat_template.jinja with
additional templates, tokens transformers adds on load, Phi-3 with GPT2Tokenizer, ...). Each case
here is a tokenizer-only checkpoint (config.json + tokenizer files, no weights) plus
`llamacpp.gguf`, the `--vocab-only` output of llama.cpp's own convert_hf_to_gguf.py, and for
byte-level BPE cases `chkhsh.txt`, the hash llama.cpp computed. The Rust tests compare against
these files and need neither Python nor llama.cpp.

Retrained BPE vocabularies are unknown to llama.cpp's hash table, so the converter is run with
the case's hash registered under the pre-tokenizer name given below, the way
convert_hf_to_gguf_update.py registers a new model.

Python environment (CPU only):
    python3 -m venv venv && venv/bin/pip install torch transformers tokenizers sentencepiece \
        safetensors "protobuf>=5.26" numpy
    [used for the committed files: transformers 5.23.0, tokenizers 0.23.3, sentencepiece 0.2.3]
llama.cpp source tree (its converter, bundled gguf-py, and docs/ as training text):
    pip download --no-deps --no-binary llama-cpp-python llama-cpp-python==0.3.36
    tar xzf llama_cpp_python-0.3.36.tar.gz   # -> llama_cpp_python-0.3.36/vendor/llama.cpp
Usage:
    venv/bin/python convert/tests/vocab_cases/gen.py --llama-cpp DIR [CASE ...]
        (or set LLAMA_CPP_DIR). Rebuilds the named cases (default: all) in place.

Note: for a chat template list llama.cpp writes `tokenizer.chat_templates` from a Python set,
whose order changes from run to run; the cases therefore use at most one named template.
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

TEMPLATE = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
LLAMA3_RE = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"


def corpus(llama_cpp: Path):
    texts = [open(p, encoding="utf-8").read() for p in sorted(glob.glob(str(llama_cpp / "docs/**/*.md"), recursive=True))[:60]]
    texts.append("нещо на Български 我想在apple工作1314151天～ កាន់តែពិសេសអាច😁 🦙🦙 3.3 3..3 I've been 'told he's there")
    for t in texts:
        for line in t.split("\n"):
            yield line + "\n"


def write(d: Path, files: dict):
    d.mkdir(parents=True, exist_ok=True)
    for name, obj in files.items():
        with open(d / name, "w", encoding="utf-8") as f:
            if isinstance(obj, str):
                f.write(obj)
            else:
                json.dump(obj, f, indent=1, ensure_ascii=False)


def cfg(arch, vocab_size, **kw):
    c = {"architectures": [arch], "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
         "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": vocab_size,
         "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "head_dim": 16}
    c.update(kw)
    return c


def bpe_tokenizer(llama_cpp, pre, normalizer, specials, ignore_merges=False, vocab_size=600):
    from tokenizers import Tokenizer, models, decoders, trainers, pre_tokenizers
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    tok.pre_tokenizer = pre
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus(llama_cpp), tr)
    return tok


def spm_model(llama_cpp):
    import sentencepiece as spm
    f = io.BytesIO()
    lines = [l for l in corpus(llama_cpp) if l.strip()][:20000]
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=f, vocab_size=1000, model_type="bpe",
                                   byte_fallback=True, user_defined_symbols=["<|user|>"], control_symbols=["<|ctl|>"],
                                   character_coverage=1.0, normalization_rule_name="identity", minloglevel=2)
    return f.getvalue()


def added(content, special, normalized):
    return {"content": content, "special": special, "normalized": normalized, "lstrip": False, "rstrip": False, "single_word": False}


def spm_case(llama_cpp, d: Path, arch, extra_vocab=3, with_json=False, cfg_extra=None, tc_extra=None):
    import sentencepiece as spm
    d.mkdir(parents=True, exist_ok=True)
    model = spm_model(llama_cpp)
    (d / "tokenizer.model").write_bytes(model)
    n = spm.SentencePieceProcessor(model_proto=model).vocab_size()
    tc = {"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False, "add_prefix_space": False,
          "bos_token": {"__type": "AddedToken", **added("<s>", True, False)}, "eos_token": "</s>", "unk_token": "<unk>",
          "pad_token": None,
          "added_tokens_decoder": {"0": added("<unk>", True, False), "1": added("<s>", True, False),
                                   "2": added("</s>", True, False), str(n): added("<|im_start|>", False, False),
                                   str(n + 1): added("▁▁user▁x", False, True), str(n + 50): added("<far>", True, False)},
          "chat_template": [{"name": "default", "template": TEMPLATE}, {"name": "tool use", "template": "TOOLS {{ x }}"}]}
    tc.update(tc_extra or {})
    c = cfg(arch, n + extra_vocab, bos_token_id=1, eos_token_id=2, pad_token_id=n + 1)
    c.update(cfg_extra or {})
    write(d, {"config.json": c, "tokenizer_config.json": tc,
              "added_tokens.json": {"<|im_start|>": n, "<extra>": n + 2, "<toofar>": n + 999}})
    if with_json:
        from transformers import AutoTokenizer
        tmp = d.parent / (d.name + ".tmpsave")
        AutoTokenizer.from_pretrained(d).save_pretrained(tmp)
        shutil.copy(tmp / "tokenizer.json", d / "tokenizer.json")
        shutil.rmtree(tmp)


def case_llama_spm(lc, d):
    spm_case(lc, d, "LlamaForCausalLM")
    return None


def case_llama_spm_json(lc, d):
    spm_case(lc, d, "LlamaForCausalLM", with_json=True)
    return None


def case_mistral_spm(lc, d):
    spm_case(lc, d, "MistralForCausalLM", tc_extra={"add_prefix_space": None, "chat_template": TEMPLATE})
    return None


def case_codellama(lc, d):
    spm_case(lc, d, "LlamaForCausalLM", cfg_extra={"vocab_size": 32016}, tc_extra={"eot_token": "</s>"})
    return None


def case_gemma1(lc, d):
    spm_case(lc, d, "GemmaForCausalLM", with_json=True)
    return None


def case_qwen2_spm(lc, d):
    spm_case(lc, d, "Qwen2ForCausalLM")
    return None


def case_mistral_llamahf(lc, d):
    src = d.parent / (d.name + ".src")
    spm_case(lc, src, "MistralForCausalLM", extra_vocab=0, with_json=True)
    d.mkdir(parents=True, exist_ok=True)
    tj = json.load(open(src / "tokenizer.json", encoding="utf-8"))
    shutil.rmtree(src)
    n = len(tj["model"]["vocab"])
    tj["added_tokens"].append({"id": n + 5, **added("[INST]", True, False)})
    tj["added_tokens"].append({"id": n + 6, **added("plain added", False, True)})
    write(d, {"tokenizer.json": tj,
              "config.json": cfg("MistralForCausalLM", n + 10, bos_token_id=1, eos_token_id=2),
              "tokenizer_config.json": {"tokenizer_class": "LlamaTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
                                        "unk_token": "<unk>", "additional_special_tokens": ["[INST]", "<|user|>"],
                                        "add_bos_token": True, "add_eos_token": False, "chat_template": TEMPLATE}})
    return None


def case_granite_small(lc, d):
    from tokenizers import pre_tokenizers, processors, Regex, AddedToken
    tok = bpe_tokenizer(lc, pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3_RE), "isolated"),
                                                     pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]),
                        None, ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"], ignore_merges=True)
    tok.add_tokens([AddedToken("<custom_tok>", special=False, normalized=False), AddedToken(" spaced", normalized=True)])
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
                                      special_tokens=[("<|begin_of_text|>", 0)])])
    d.mkdir(parents=True, exist_ok=True)
    tok.save(str(d / "tokenizer.json"))
    write(d, {"config.json": cfg("LlamaForCausalLM", 49152, bos_token_id=0, eos_token_id=[1, 2]),
              "tokenizer_config.json": {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>",
                                        "eos_token": "<|eot_id|>", "chat_template": TEMPLATE, "add_prefix_space": True}})
    return "llama-bpe"


def case_gpt2_roberta(lc, d):
    from tokenizers import pre_tokenizers, processors, AddedToken
    tok = bpe_tokenizer(lc, pre_tokenizers.ByteLevel(add_prefix_space=False), None, ["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tok.add_tokens([AddedToken("café", normalized=False), AddedToken("x▁y", normalized=False),
                    AddedToken("<|look|>", normalized=True)])
    d.mkdir(parents=True, exist_ok=True)
    tok.save(str(d / "tokenizer.json"))
    n = tok.get_vocab_size()
    write(d, {"config.json": {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": 64, "n_head": 4, "n_layer": 2,
                              "n_positions": 256, "n_ctx": 256, "vocab_size": n + 1, "layer_norm_epsilon": 1e-5},
              "tokenizer_config.json": {"tokenizer_class": "GPT2Tokenizer", "bos_token": "<s>", "eos_token": "</s>",
                                        "unk_token": "<unk>", "mask_token": "<mask>", "pad_token": "<pad>", "add_prefix_space": False},
              "chat_template.jinja": "JINJA {{ messages }}"})
    write(d / "additional_chat_templates", {"tool_use.jinja": "TOOL"})
    return "gpt-2"


def gpt2_base(lc, d):
    from tokenizers import pre_tokenizers, processors
    tok = bpe_tokenizer(lc, pre_tokenizers.ByteLevel(add_prefix_space=False), None, ["<|endoftext|>"])
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    d.mkdir(parents=True, exist_ok=True)
    tok.save(str(d / "tokenizer.json"))
    return tok.get_vocab_size()


def case_phi3_gpt2tok(lc, d):
    n = gpt2_base(lc, d)
    write(d, {"config.json": cfg("Phi3ForCausalLM", n, bos_token_id=0, eos_token_id=0, original_max_position_embeddings=512),
              "tokenizer_config.json": {"tokenizer_class": "GPT2Tokenizer", "bos_token": "<|endoftext|>",
                                        "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}})
    return "gpt-2"


def case_gpt2_tc_added(lc, d):
    gpt2_base(lc, d)
    tj = json.load(open(d / "tokenizer.json", encoding="utf-8"))
    n = len(tj["model"]["vocab"])
    tj["added_tokens"] = []  # <|endoftext|> stays in the vocab; transformers re-adds it as special
    write(d, {"tokenizer.json": tj,
              "config.json": {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": 64, "n_head": 4, "n_layer": 2,
                              "n_positions": 256, "n_ctx": 256, "vocab_size": n + 5, "layer_norm_epsilon": 1e-5},
              "tokenizer_config.json": {"tokenizer_class": "GPT2Tokenizer", "add_prefix_space": False,
                                        "added_tokens_decoder": {str(n): added("<|tc_only|>", False, False),
                                                                 str(n + 1): added("tc plain", False, True)},
                                        "additional_special_tokens": ["<extra_sp>"]}})
    return "gpt-2"


CASES = {name[5:]: fn for name, fn in globals().items() if name.startswith("case_")}


def convert(llama_cpp: Path, model: Path, out: Path, pre: str | None):
    """Runs llama.cpp's converter (--vocab-only) in a fresh interpreter, with the case's chkhsh
    registered under `pre` and the computed chkhsh written next to the output."""
    boot = r'''
import os, runpy, sys
from hashlib import sha256
lc, pre, hash_out = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, lc)
sys.path.insert(1, os.path.join(lc, "gguf-py"))
import conversion.base as base
orig = base.TextModel.get_vocab_base_pre
def patched(self, tokenizer):
    src = open(base.__file__, encoding="utf-8").read()
    chktxt = eval(src.split("chktxt = ", 1)[1].split("\n", 1)[0])
    h = sha256(str(tokenizer.encode(chktxt)).encode()).hexdigest()
    open(hash_out, "w").write(h + "\n")
    try:
        return orig(self, tokenizer)
    except NotImplementedError:
        if pre == "-":
            raise
        return pre  # registered as convert_hf_to_gguf_update.py would
base.TextModel.get_vocab_base_pre = patched
import conversion.gpt2 as gpt2
orig_params = gpt2.GPT2Model.set_gguf_parameters
def params(self):
    self.hparams.setdefault("n_ctx", self.hparams.get("n_positions", 1024))  # dropped by transformers 5
    orig_params(self)
gpt2.GPT2Model.set_gguf_parameters = params
sys.argv = [os.path.join(lc, "convert_hf_to_gguf.py")] + sys.argv[4:]
runpy.run_path(sys.argv[0], run_name="__main__")
'''
    hash_out = out.parent / "chkhsh.txt"
    subprocess.run([sys.executable, "-c", boot, str(llama_cpp), pre or "-", str(hash_out),
                    str(model), "--vocab-only", "--outfile", str(out)], check=True)
    if pre is None and hash_out.exists():
        hash_out.unlink()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--llama-cpp", default=os.environ.get("LLAMA_CPP_DIR"))
    ap.add_argument("cases", nargs="*")
    args = ap.parse_args()
    if not args.llama_cpp:
        sys.exit("pass --llama-cpp DIR or set LLAMA_CPP_DIR")
    lc = Path(args.llama_cpp).resolve()
    for name in args.cases or sorted(CASES):
        root = HERE / name
        if root.exists():
            shutil.rmtree(root)
        model = root / "model"
        pre = CASES[name](lc, model)
        convert(lc, model, root / "llamacpp.gguf", pre)
        print(f"{name}: ok")


if __name__ == "__main__":
    main()
