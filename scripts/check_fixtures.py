#!/usr/bin/env python3
"""Cross-checks crates/qevo/tests/fixtures/ independently of transformers.

    python scripts/check_fixtures.py [--dir crates/qevo/tests/fixtures]

1. Runs the tiny Llama GGUF through a plain-numpy forward pass that uses the
   llama.cpp conventions (interleaved-pair rope on the permuted attn_q/attn_k
   rows) and compares its logits with the transformers logits recorded from
   the HF directory. Agreement shows the GGUF's q/k permutation and metadata
   are consistent with the HF model.
2. Re-decodes every gguf_quants fixture with gguf.quants and compares.
"""
import argparse
import json
import os

import numpy as np


def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope_interleaved(x, base):
    # x: [T, H, D]; pairs are (2i, 2i+1), frequency base^(-2i/D)
    t, _, d = x.shape
    inv = base ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    ang = np.arange(t, dtype=np.float64)[:, None] * inv[None, :]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = x0 * cos - x1 * sin
    out[..., 1::2] = x0 * sin + x1 * cos
    return out


def gguf_llama_logits(path, ids):
    from gguf import GGUFReader

    r = GGUFReader(path)

    def kv(name):
        f = r.fields[name]
        v = f.parts[f.data[0]]
        return v.tolist()[0] if hasattr(v, "tolist") else v

    n_layer = kv("llama.block_count")
    n_head = kv("llama.attention.head_count")
    n_kv = kv("llama.attention.head_count_kv")
    eps = kv("llama.attention.layer_norm_rms_epsilon")
    base = kv("llama.rope.freq_base")
    t = {x.name: np.asarray(x.data, dtype=np.float64) for x in r.tensors}
    x = t["token_embd.weight"][ids]
    T, E = x.shape
    hd = E // n_head
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for i in range(n_layer):
        p = f"blk.{i}."
        h = rms_norm(x, t[p + "attn_norm.weight"], eps)
        q = (h @ t[p + "attn_q.weight"].T).reshape(T, n_head, hd)
        k = (h @ t[p + "attn_k.weight"].T).reshape(T, n_kv, hd)
        v = (h @ t[p + "attn_v.weight"].T).reshape(T, n_kv, hd)
        q, k = rope_interleaved(q, base), rope_interleaved(k, base)
        rep = n_head // n_kv
        k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
        s = np.einsum("thd,shd->hts", q, k) / np.sqrt(hd) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        o = np.einsum("hts,shd->thd", s, v).reshape(T, E)
        x = x + o @ t[p + "attn_output.weight"].T
        h = rms_norm(x, t[p + "ffn_norm.weight"], eps)
        g = h @ t[p + "ffn_gate.weight"].T
        u = h @ t[p + "ffn_up.weight"].T
        x = x + ((g / (1 + np.exp(-g))) * u) @ t[p + "ffn_down.weight"].T
    x = rms_norm(x, t["output_norm.weight"], eps)
    return x @ t["output.weight"].T


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="crates/qevo/tests/fixtures")
    a = ap.parse_args()
    d = os.path.join(a.dir, "tiny_llama")
    meta = json.load(open(os.path.join(d, "fixture.json")))
    ids = np.fromfile(os.path.join(d, meta["input_ids_file"]), dtype="<u4").astype(np.int64)
    ref = np.fromfile(os.path.join(d, meta["logits_file"]), dtype="<f4").reshape(meta["logits_shape"])
    got = gguf_llama_logits(os.path.join(d, meta["gguf_file"]), ids)
    err = float(np.max(np.abs(got - ref)))
    print(f"tiny_llama gguf numpy forward vs transformers logits: max abs diff {err:.3e}")
    assert err < 1e-4, err

    # The saved HF directories (with the extra legacy config keys) must reload
    # in transformers and reproduce the recorded logits.
    import torch
    import transformers

    for name in ("tiny_llama", "tiny_gpt2", "tiny_qwen2", "tiny_mistral"):
        dd = os.path.join(a.dir, name)
        m = json.load(open(os.path.join(dd, "fixture.json")))
        model = getattr(transformers, m["model"]).from_pretrained(dd, attn_implementation="eager").eval()
        ids_t = torch.tensor([m["input_ids"]])
        with torch.no_grad():
            lg = model(input_ids=ids_t).logits[0].numpy()
        ref = np.fromfile(os.path.join(dd, m["logits_file"]), dtype="<f4").reshape(m["logits_shape"])
        err = float(np.max(np.abs(lg - ref)))
        print(f"{name}: transformers reload vs recorded logits max abs diff {err:.3e}")
        assert err < 1e-5, (name, err)
    dd = os.path.join(a.dir, "tiny_bert")
    m = json.load(open(os.path.join(dd, "fixture.json")))
    model = transformers.BertModel.from_pretrained(dd, attn_implementation="eager").eval()
    ids_t, mask_t = torch.tensor(m["input_ids"]), torch.tensor(m["attention_mask"])
    with torch.no_grad():
        h = model(input_ids=ids_t, attention_mask=mask_t, token_type_ids=torch.zeros_like(ids_t)).last_hidden_state
    mk = mask_t[..., None].float()
    pooled = ((h * mk).sum(1) / mk.sum(1)).numpy()
    ref = np.fromfile(os.path.join(dd, m["mean_pooled_file"]), dtype="<f4").reshape(m["mean_pooled_shape"])
    err = float(np.max(np.abs(pooled - ref)))
    print(f"tiny_bert: transformers reload vs recorded mean-pooled max abs diff {err:.3e}")
    assert err < 1e-5, err

    import gguf
    from gguf.constants import GGMLQuantizationType
    from gguf.quants import dequantize

    q = os.path.join(a.dir, "gguf_quants")
    idx = json.load(open(os.path.join(q, "index.json")))
    for e in idx["entries"]:
        raw = np.fromfile(os.path.join(q, e["quantized"]), dtype=np.uint8).reshape(idx["rows"], -1)
        deq = dequantize(raw, GGMLQuantizationType[e["type"]]).reshape(e["shape"])
        ref = np.fromfile(os.path.join(q, e["dequantized"]), dtype="<f4").reshape(e["shape"])
        assert np.array_equal(deq, ref), e["type"]
    print(f"gguf_quants: {len(idx['entries'])} entries re-decode identically (gguf {idx['gguf_version']})")


if __name__ == "__main__":
    main()
