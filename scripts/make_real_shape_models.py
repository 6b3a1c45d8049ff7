#!/usr/bin/env python3
"""Random-weight models in the shapes of real ones, for memory and time measurements.

Reads a published config.json (crates/qevo/tests/fixtures/real_configs/) and writes an
HF model directory with that config, bf16 random weights (normal, std 0.02; norms 1.0)
named as transformers names them, and the embedded model's tokenizer.json (its 2048
tokens fit any of these vocabularies, so `eval`, `quantize` and `search` can tokenize).
The weights are random: quality figures on these models mean nothing, shapes, bytes,
memory and time do.

Output: ${QEVO_MODELS:-~/.cache/qevo/models}/shapes/<name>/ (outside the tree; CI never
runs this). Tensors are written one at a time, in chunks, so making an 8B model needs
little memory, but 16 GB of disk.

    scripts/make_real_shape_models.py                      # smollm2-135m, llama-3.2-1b
    scripts/make_real_shape_models.py llama-3.1-8b qwen2.5-1.5b
    scripts/make_real_shape_models.py --list

`rope_scaling` is dropped by default (qevo's forward pass does not run every rope type
yet, and the rope does not change memory or time); `--keep-rope-scaling` keeps it.
`qwen3-30b-a3b-w4` is Qwen3-30B-A3B with every width (hidden, intermediate, expert
intermediate, heads) divided by 4 and the experts cut to 32, about 0.9B parameters.

Needs numpy only (the safetensors file is written directly).
"""

import argparse
import hashlib
import json
import os
import shutil
import struct
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "crates/qevo/tests/fixtures/real_configs"
TOKENIZER = ROOT / "assets/tokenizer.json"
DEFAULT = ["smollm2-135m", "llama-3.2-1b"]
CHUNK = 1 << 24  # elements generated at a time


def scaled_qwen3_moe(cfg):
    """Qwen3-30B-A3B narrowed: widths / 4, 32 experts (8 active)."""
    cfg = dict(cfg)
    for k in ["hidden_size", "intermediate_size", "moe_intermediate_size",
              "num_attention_heads", "num_key_value_heads"]:
        cfg[k] = max(1, cfg[k] // 4)
    cfg["num_experts"] = 32
    return cfg


PRESETS = {
    "smollm2-135m": ("smollm2-135m.json", None),
    "llama-3.2-1b": ("llama-3.2-1b.json", None),
    "llama-3.1-8b": ("llama-3.1-8b.json", None),
    "qwen2.5-1.5b": ("qwen2.5-1.5b.json", None),
    "qwen2.5-7b": ("qwen2.5-7b.json", None),
    "mistral-7b": ("mistral-7b-v0.1.json", None),
    "qwen3-30b-a3b-w4": ("qwen3-30b-a3b.json", scaled_qwen3_moe),
}


def tensors(cfg):
    """(name, shape, is_norm) in transformers' order for the Llama/Qwen/MoE families."""
    h, v = cfg["hidden_size"], cfg["vocab_size"]
    nh = cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads", nh)
    hd = cfg.get("head_dim") or h // nh
    mt = cfg.get("model_type", "llama")
    qkv_bias = mt == "qwen2" or cfg.get("attention_bias", False)
    qk_norm = mt in ("qwen3", "qwen3_moe")
    out = [("model.embed_tokens.weight", (v, h), False)]
    for b in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{b}."
        out.append((p + "input_layernorm.weight", (h,), True))
        for name, rows, cols in [("q_proj", nh * hd, h), ("k_proj", nkv * hd, h),
                                 ("v_proj", nkv * hd, h), ("o_proj", h, nh * hd)]:
            out.append((p + f"self_attn.{name}.weight", (rows, cols), False))
            if qkv_bias and name != "o_proj":
                out.append((p + f"self_attn.{name}.bias", (rows,), False))
        if qk_norm:
            out.append((p + "self_attn.q_norm.weight", (hd,), True))
            out.append((p + "self_attn.k_norm.weight", (hd,), True))
        out.append((p + "post_attention_layernorm.weight", (h,), True))
        if "num_experts" in cfg:
            e, ff = cfg["num_experts"], cfg["moe_intermediate_size"]
            out.append((p + "mlp.gate.weight", (e, h), False))
            for x in range(e):
                q = p + f"mlp.experts.{x}."
                out += [(q + "gate_proj.weight", (ff, h), False),
                        (q + "up_proj.weight", (ff, h), False),
                        (q + "down_proj.weight", (h, ff), False)]
        else:
            ff = cfg["intermediate_size"]
            out += [(p + "mlp.gate_proj.weight", (ff, h), False),
                    (p + "mlp.up_proj.weight", (ff, h), False),
                    (p + "mlp.down_proj.weight", (h, ff), False)]
    out.append(("model.norm.weight", (h,), True))
    if not cfg.get("tie_word_embeddings", False):
        out.append(("lm_head.weight", (v, h), False))
    return out


def bf16_bits(x):
    """float32 → bf16 bit patterns, rounded to nearest even."""
    u = x.astype(np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2")


def write_tensor(f, name, shape, is_norm):
    n = int(np.prod(shape))
    if is_norm:
        f.write(bf16_bits(np.ones(n, np.float32)).tobytes())
        return
    seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    for start in range(0, n, CHUNK):
        k = min(CHUNK, n - start)
        x = rng.standard_normal(k, dtype=np.float32) * np.float32(0.02)
        f.write(bf16_bits(x).tobytes())


def write_safetensors(path, entries):
    header, offset = {}, 0
    for name, shape, _ in entries:
        size = 2 * int(np.prod(shape))
        header[name] = {"dtype": "BF16", "shape": list(shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    header["__metadata__"] = {"format": "pt"}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    tmp = path.with_suffix(".partial")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name, shape, is_norm in entries:
            write_tensor(f, name, shape, is_norm)
    os.replace(tmp, path)
    return offset


def make(name, out_root, keep_rope):
    file, transform = PRESETS[name]
    cfg = json.loads((CONFIGS / file).read_text())
    if transform:
        cfg = transform(cfg)
    if not keep_rope:
        cfg.pop("rope_scaling", None)
    cfg["torch_dtype"] = "bfloat16"
    d = out_root / name
    st = d / "model.safetensors"
    if st.exists():
        print(f"{d}: exists, kept")
        return
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    shutil.copy(TOKENIZER, d / "tokenizer.json")
    entries = tensors(cfg)
    params = sum(int(np.prod(s)) for _, s, _ in entries)
    print(f"{d}: {params / 1e9:.2f}B parameters, {2 * params / 1e9:.2f} GB ...", flush=True)
    write_safetensors(st, entries)
    print(f"{d}: done")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", help=f"presets (default: {' '.join(DEFAULT)})")
    ap.add_argument("--list", action="store_true", help="list the presets")
    ap.add_argument("--keep-rope-scaling", action="store_true")
    a = ap.parse_args()
    if a.list:
        for k, (f, t) in PRESETS.items():
            print(f"{k:20} {f}{' (scaled down)' if t else ''}")
        return
    models = a.models or DEFAULT
    unknown = [m for m in models if m not in PRESETS]
    if unknown:
        sys.exit(f"unknown preset(s): {', '.join(unknown)} (--list shows them)")
    base = Path(os.environ.get("QEVO_MODELS", Path.home() / ".cache/qevo/models"))
    for m in models:
        make(m, base / "shapes", a.keep_rope_scaling)


if __name__ == "__main__":
    main()
