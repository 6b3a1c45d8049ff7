#!/usr/bin/env python3
"""Regenerates crates/qevo/tests/fixtures/ (reference data made with Python tools).

    python scripts/make_fixtures.py [--out crates/qevo/tests/fixtures]

Needs: numpy, torch, transformers, tokenizers, safetensors, gguf (versions are
recorded in the fixture indexes). Output is deterministic for fixed package
versions: every random draw comes from numpy/torch generators seeded below.
The file layouts are described in crates/qevo/tests/fixtures/README.md.
"""
import argparse
import json
import os
import shutil

import numpy as np
import torch

SEED = 20261127
EOT = "<|endoftext|>"

# Sentences written for these fixtures; only used to train a ~300-token BPE.
SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "A small model can still tell us whether the loader reads every tensor.",
    "Quantization trades a little accuracy for a much smaller file.",
    "Each layer of the network may choose its own number of bits.",
    "The river runs past the old mill and under the stone bridge.",
    "Weights are stored in blocks, and every block carries its own scale.",
    "Tests compare the numbers from two programs that should agree.",
    "In the morning the market opens and the streets fill with people.",
    "The genetic search keeps the best trade-offs it has seen so far.",
    "Numbers like 3.14, 42 and 1000 appear in text as well as words.",
]


# ----------------------------------------------------------------------------
# helpers


def write_f32(path, arr):
    np.ascontiguousarray(arr, dtype="<f4").tofile(path)


def write_bytes(path, arr):
    np.ascontiguousarray(arr, dtype=np.uint8).tofile(path)


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def versions():
    import importlib.metadata as md

    out = {}
    for p in ("numpy", "torch", "transformers", "tokenizers", "safetensors", "gguf"):
        out[p] = md.version(p)
    return out


# ----------------------------------------------------------------------------
# 1. GGML block formats via gguf.quants

ROWS, COLS = 4, 256


def quant_input():
    rng = np.random.default_rng(SEED)
    x = rng.standard_normal((ROWS, COLS)).astype(np.float32)
    x[1] *= 0.5
    x[1, 37] = 25.0  # one outlier dominates its block's scale
    x[1, 200] = -9.0
    x[2] = 0.0  # all-zero row: scales must come out 0 without NaN
    x[3] = (rng.standard_normal(COLS) * 1e-3).astype(np.float32)  # tiny values
    x[3, :32] = np.linspace(-1.0, 1.0, 32, dtype=np.float32)  # one evenly spread block
    return x


def f16_bytes(values):
    return np.asarray(values, dtype="<f2").view(np.uint8).reshape(-1, 2)


# Byte offsets of the fp16 scale fields inside one block, for the formats whose
# bytes are synthesised (gguf.quants cannot quantize them). Random bytes are a
# valid encoding for every other field of these formats.
F16_FIELDS = {
    "Q2_K": {"d": 80, "dmin": 82},
    "Q3_K": {"d": 108},
    "Q4_K": {"d": 0, "dmin": 2},
    "Q5_K": {"d": 0, "dmin": 2},
    "Q6_K": {"d": 208},
    "IQ2_XXS": {"d": 0},
    "IQ2_XS": {"d": 0},
    "IQ2_S": {"d": 0},
    "IQ3_XXS": {"d": 0},
    "IQ3_S": {"d": 0},
    "IQ1_S": {"d": 0},
    "IQ4_NL": {"d": 0},
    "IQ4_XS": {"d": 0},
}


def synth_blocks(name, n_blocks, type_size, rng):
    b = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    if name in F16_FIELDS:
        for field, off in F16_FIELDS[name].items():
            lo, hi = (0.002, 0.05) if field == "d" else (0.001, 0.02)
            b[:, off : off + 2] = f16_bytes(rng.uniform(lo, hi, n_blocks))
    elif name == "IQ1_M":
        # The fp16 super-block scale is split over the top nibbles of the four
        # u16 words at bytes 48..56 (nibble k of the f16 goes to word k).
        d = np.asarray(rng.uniform(0.002, 0.05, n_blocks), dtype="<f2").view("<u2")
        words = b[:, 48:56].copy().view("<u2").reshape(n_blocks, 4)
        for k in range(4):
            words[:, k] = (words[:, k] & 0x0FFF) | (((d >> (4 * k)) & 0xF) << 12)
        b[:, 48:56] = words.view(np.uint8).reshape(n_blocks, 8)
    elif name == "NVFP4":
        # four unsigned E4M3 sub-block scales at bytes 0..4; keep them moderate
        b[:, 0:4] = rng.integers(0x28, 0x40, size=(n_blocks, 4), dtype=np.uint8)
    return b


def make_quant_fixtures(out):
    import gguf
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
    from gguf.quants import dequantize, quantize

    d = os.path.join(out, "gguf_quants")
    os.makedirs(d, exist_ok=True)
    x = quant_input()
    write_f32(os.path.join(d, "input.f32"), x)
    rng = np.random.default_rng(SEED + 1)
    entries = []
    skipped = []
    for qt in GGMLQuantizationType:
        name = qt.name
        if qt == GGMLQuantizationType.F32 or qt not in GGML_QUANT_SIZES:
            continue
        block_size, type_size = GGML_QUANT_SIZES[qt]
        if COLS % block_size:
            continue
        entry = {
            "type": name,
            "ggml_type_id": int(qt.value),
            "block_size": block_size,
            "type_size": type_size,
            "shape": [ROWS, COLS],
        }
        try:
            q = quantize(x, qt)
        except NotImplementedError:
            q = None
        if q is not None:
            qb = np.ascontiguousarray(q).view(np.uint8).reshape(-1)
            assert qb.size == ROWS * COLS // block_size * type_size, name
            write_bytes(os.path.join(d, f"{name}.quant.bin"), qb)
            deq = dequantize(qb.reshape(ROWS, -1), qt).reshape(ROWS, COLS).astype(np.float32)
            write_f32(os.path.join(d, f"{name}.dequant.f32"), deq)
            entry.update(
                kind="quantize",
                input="input.f32",
                quantized=f"{name}.quant.bin",
                dequantized=f"{name}.dequant.f32",
                max_abs_error=float(np.max(np.abs(deq - x))),
            )
        else:
            n_blocks = ROWS * COLS // block_size
            try:
                qb = synth_blocks(name, n_blocks, type_size, rng).reshape(-1)
                deq = dequantize(qb.reshape(ROWS, -1), qt).reshape(ROWS, COLS).astype(np.float32)
            except NotImplementedError:
                skipped.append({"type": name, "why": "gguf.quants implements neither direction"})
                continue
            if not np.all(np.isfinite(deq)):
                skipped.append({"type": name, "why": "synthesised bytes decoded to non-finite values"})
                continue
            write_bytes(os.path.join(d, f"{name}.quant.bin"), qb)
            write_f32(os.path.join(d, f"{name}.dequant.f32"), deq)
            entry.update(
                kind="dequantize_only",
                quantized=f"{name}.quant.bin",
                dequantized=f"{name}.dequant.f32",
                max_abs_value=float(np.max(np.abs(deq))),
            )
        entries.append(entry)
    write_json(
        os.path.join(d, "index.json"),
        {
            "generator": "scripts/make_fixtures.py",
            "gguf_version": gguf.__version__ if hasattr(gguf, "__version__") else versions()["gguf"],
            "versions": versions(),
            "seed": SEED,
            "rows": ROWS,
            "cols": COLS,
            "entries": entries,
            "skipped": skipped,
        },
    )
    return entries, skipped


# ----------------------------------------------------------------------------
# tiny tokenizer shared by the tiny models


def tiny_tokenizer(vocab_size=300):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(SENTENCES, trainer=trainer)
    assert tok.token_to_id(EOT) == 0
    return tok


def perturb_(model, gen):
    """Random init leaves norms at 1 and biases at 0; make every parameter
    distinctive so a loader that skips one is caught."""
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            if p.dim() == 1:
                p.add_(0.1 * torch.randn(p.shape, generator=gen))


def fixed_ids(n, vocab, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (n,), generator=g)
    ids[0] = 0  # sequences start with <|endoftext|> as BOS
    return ids


def add_legacy_config_keys(d):
    """transformers 5 writes rope_parameters/dtype; readers written against
    4.x look for top-level rope_theta/torch_dtype. Keep both spellings."""
    path = os.path.join(d, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    rp = cfg.get("rope_parameters")
    if isinstance(rp, dict) and "rope_theta" in rp:
        cfg["rope_theta"] = rp["rope_theta"]
    if "dtype" in cfg:
        cfg["torch_dtype"] = cfg["dtype"]
    write_json(path, cfg)


def save_hf(model, tok, d):
    os.makedirs(d, exist_ok=True)
    model.save_pretrained(d, safe_serialization=True)
    add_legacy_config_keys(d)
    if tok is not None:
        tok.save(os.path.join(d, "tokenizer.json"))


def logits_fixture(model, ids, d, name="logits"):
    with torch.no_grad():
        logits = model(input_ids=ids[None]).logits[0].float().numpy()
    write_f32(os.path.join(d, f"{name}.f32"), logits)
    np.asarray(ids.numpy(), dtype="<u4").tofile(os.path.join(d, "input_ids.u32"))
    return {
        "input_ids": [int(i) for i in ids],
        "input_ids_file": "input_ids.u32",
        "logits_file": f"{name}.f32",
        "logits_shape": list(logits.shape),
        "max_abs_logit": float(np.max(np.abs(logits))),
        "logits_std": float(np.std(logits)),
    }


# ----------------------------------------------------------------------------
# 2. tiny Llama: HF dir + GGUF


def permute_qk(w, n_head, n_head_kv=None):
    """HF rotate-half row order -> interleaved-pair order that llama.cpp's
    LLAMA rope expects (same effect as convert_hf_to_gguf's permute)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    out, rest = w.shape[0], w.shape[1:]
    return w.reshape(n_head, 2, out // n_head // 2, *rest).swapaxes(1, 2).reshape(w.shape)


def write_llama_gguf(model, tok, path):
    import gguf

    cfg = model.config
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    n_head, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    head_dim = cfg.hidden_size // n_head
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("qevo-tiny-llama-fixture")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    w.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    w.add_rope_dimension_count(head_dim)
    w.add_vocab_size(cfg.vocab_size)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)

    vocab = tok.get_vocab()
    tokens = [None] * len(vocab)
    for t, i in vocab.items():
        tokens[i] = t
    assert len(tokens) == cfg.vocab_size
    special = {tok.token_to_id(EOT)}
    ttype = [
        int(gguf.TokenType.CONTROL) if i in special else int(gguf.TokenType.NORMAL) for i in range(len(tokens))
    ]
    merges = json.loads(tok.to_str())["model"]["merges"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tokens)
    w.add_token_types(ttype)
    w.add_token_merges(merges)
    w.add_bos_token_id(0)
    w.add_eos_token_id(0)
    w.add_add_bos_token(False)

    names = []

    def put(name, arr):
        names.append((name, list(arr.shape)))
        w.add_tensor(name, np.ascontiguousarray(arr, dtype=np.float32))

    put("token_embd.weight", sd["model.embed_tokens.weight"])
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        put(f"blk.{i}.attn_norm.weight", sd[p + "input_layernorm.weight"])
        put(f"blk.{i}.attn_q.weight", permute_qk(sd[p + "self_attn.q_proj.weight"], n_head, n_head))
        put(f"blk.{i}.attn_k.weight", permute_qk(sd[p + "self_attn.k_proj.weight"], n_head, n_kv))
        put(f"blk.{i}.attn_v.weight", sd[p + "self_attn.v_proj.weight"])
        put(f"blk.{i}.attn_output.weight", sd[p + "self_attn.o_proj.weight"])
        put(f"blk.{i}.ffn_norm.weight", sd[p + "post_attention_layernorm.weight"])
        put(f"blk.{i}.ffn_gate.weight", sd[p + "mlp.gate_proj.weight"])
        put(f"blk.{i}.ffn_up.weight", sd[p + "mlp.up_proj.weight"])
        put(f"blk.{i}.ffn_down.weight", sd[p + "mlp.down_proj.weight"])
    put("output_norm.weight", sd["model.norm.weight"])
    put("output.weight", sd["lm_head.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return names


def make_tiny_llama(out, tok):
    from transformers import LlamaConfig, LlamaForCausalLM

    d = os.path.join(out, "tiny_llama")
    torch.manual_seed(SEED)
    cfg = LlamaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        initializer_range=0.1,
        bos_token_id=0,
        eos_token_id=0,
        attn_implementation="eager",
    )
    model = LlamaForCausalLM(cfg).eval()
    perturb_(model, torch.Generator().manual_seed(SEED + 2))
    save_hf(model, tok, d)
    ids = fixed_ids(16, cfg.vocab_size, SEED + 3)
    meta = logits_fixture(model, ids, d)
    meta["gguf_file"] = "tiny_llama.gguf"
    meta["gguf_tensors"] = write_llama_gguf(model, tok, os.path.join(d, "tiny_llama.gguf"))
    meta["model"] = "LlamaForCausalLM"
    write_json(os.path.join(d, "fixture.json"), meta)
    return meta


# ----------------------------------------------------------------------------
# 2b. tiny Qwen3, Gemma-2, Gemma-3, Phi-3: HF dir + GGUF (llama.cpp's names and keys)

# HF module -> GGUF block part, as llama.cpp's converter maps them (gguf-py
# tensor_mapping.py). Gemma's `post_attention_layernorm` is its post-attention norm;
# Llama's is the pre-MLP norm.
HF_TO_GGUF_BLOCK = {
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.qkv_proj": "attn_qkv",
    "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.gate_up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
GEMMA_BLOCK = {
    "post_attention_layernorm": "post_attention_norm",
    "pre_feedforward_layernorm": "ffn_norm",
    "post_feedforward_layernorm": "post_ffw_norm",
}


def gguf_name(arch, hf):
    top = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    if hf in top:
        return top[hf]
    parts = hf.split(".")
    assert parts[:2] == ["model", "layers"], hf
    b, mod, suffix = parts[2], ".".join(parts[3:-1]), parts[-1]
    table = dict(HF_TO_GGUF_BLOCK)
    if arch.startswith("gemma"):
        table.update(GEMMA_BLOCK)
    return f"blk.{b}.{table[mod]}.{suffix}"


def add_gpt2_tokenizer(w, tok, n_vocab):
    import gguf

    vocab = tok.get_vocab()
    tokens = [None] * len(vocab)
    for t, i in vocab.items():
        tokens[i] = t
    assert len(tokens) == n_vocab
    special = {tok.token_to_id(EOT)}
    ttype = [int(gguf.TokenType.CONTROL) if i in special else int(gguf.TokenType.NORMAL) for i in range(len(tokens))]
    merges = json.loads(tok.to_str())["model"]["merges"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tokens)
    w.add_token_types(ttype)
    w.add_token_merges(merges)
    w.add_bos_token_id(0)
    w.add_eos_token_id(0)
    w.add_add_bos_token(False)


def write_family_gguf(arch, model, tok, path, extra):
    """The model as llama.cpp's convert_hf_to_gguf.py writes `arch`: its tensor
    names, no q/k permutation (these families use NEOX rope), Gemma norms stored
    as 1 + w, and the metadata keys llama.cpp reads. `extra(w)` adds the
    family's own keys."""
    import gguf

    cfg = model.config
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    w = gguf.GGUFWriter(path, arch)
    w.add_name(f"qevo-tiny-{arch}-fixture")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    extra(w)
    add_gpt2_tokenizer(w, tok, cfg.vocab_size)
    names = []
    for hf in sd:
        if hf == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        name = gguf_name(arch, hf)
        arr = sd[hf]
        if arch.startswith("gemma") and name.endswith("norm.weight"):
            arr = arr + 1.0
        names.append((name, list(arr.shape)))
        w.add_tensor(name, np.ascontiguousarray(arr, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return names


def make_family(out, name, cls_name, cfg, tok, arch, extra):
    import transformers

    d = os.path.join(out, name)
    torch.manual_seed(SEED)
    model = getattr(transformers, cls_name)(cfg).eval()
    perturb_(model, torch.Generator().manual_seed(SEED + 2))
    save_hf(model, tok, d)
    ids = fixed_ids(16, cfg.vocab_size, SEED + 3)
    meta = logits_fixture(model, ids, d)
    meta["model"] = cls_name
    meta["gguf_file"] = f"{name}.gguf"
    meta["gguf_tensors"] = write_family_gguf(arch, model, tok, os.path.join(d, f"{name}.gguf"), extra)
    write_json(os.path.join(d, "fixture.json"), meta)
    return meta


def make_new_families(out, tok):
    """Small configs where every family feature changes the logits: head_dim 32
    with hidden 64 and 4 heads (q width 128 != hidden), GQA, sliding window 4 on a
    16-token input, soft-caps below the raw score/logit range, a global layer
    beside a sliding one with different rope bases."""
    from transformers import Gemma2Config, Gemma3TextConfig, Phi3Config, Qwen3Config

    common = dict(
        vocab_size=tok.get_vocab_size(),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        initializer_range=0.1,
        bos_token_id=0,
        eos_token_id=0,
        attn_implementation="eager",
    )
    res = {}
    qwen3 = Qwen3Config(**common, head_dim=32, rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=True, use_sliding_window=False)

    def qwen3_kv(w):
        w.add_rope_freq_base(10000.0)

    res["tiny_qwen3"] = make_family(out, "tiny_qwen3", "Qwen3ForCausalLM", qwen3, tok, "qwen3", qwen3_kv)
    gemma2 = Gemma2Config(
        **common,
        head_dim=32,
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
        query_pre_attn_scalar=32,
        sliding_window=4,
        attn_logit_softcapping=2.0,
        final_logit_softcapping=2.0,
        hidden_activation="gelu_pytorch_tanh",
        tie_word_embeddings=True,
        pad_token_id=0,
    )

    def gemma2_kv(w):
        w.add_rope_freq_base(10000.0)
        w.add_sliding_window(4)
        w.add_attn_logit_softcapping(2.0)
        w.add_final_logit_softcapping(2.0)

    res["tiny_gemma2"] = make_family(out, "tiny_gemma2", "Gemma2ForCausalLM", gemma2, tok, "gemma2", gemma2_kv)
    gemma3 = Gemma3TextConfig(
        **common,
        head_dim=32,
        rms_norm_eps=1e-6,
        query_pre_attn_scalar=32,
        sliding_window=4,
        layer_types=["sliding_attention", "full_attention"],
        rope_parameters={
            "full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
        },
        hidden_activation="gelu_pytorch_tanh",
        tie_word_embeddings=True,
        pad_token_id=0,
    )

    def gemma3_kv(w):
        # llama.cpp: global base from rope.freq_base, sliding layers 10000 by default;
        # the pattern key (a u32 n: layer i slides unless (i+1) % n == 0) makes layer 1
        # global in a 2-layer model.
        w.add_rope_freq_base(1_000_000.0)
        w.add_sliding_window(4)
        w.add_uint32("gemma3.attention.sliding_window_pattern", 2)

    res["tiny_gemma3"] = make_family(out, "tiny_gemma3", "Gemma3ForCausalLM", gemma3, tok, "gemma3", gemma3_kv)
    phi3 = Phi3Config(
        **common,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        sliding_window=None,
        tie_word_embeddings=False,
        pad_token_id=0,
    )

    def phi3_kv(w):
        w.add_rope_freq_base(10000.0)
        w.add_rope_dimension_count(16)

    res["tiny_phi3"] = make_family(out, "tiny_phi3", "Phi3ForCausalLM", phi3, tok, "phi3", phi3_kv)
    return {k: v["max_abs_logit"] for k, v in res.items()}


# ----------------------------------------------------------------------------
# 3./4. tiny GPT-2, Qwen2, Mistral, BERT


def make_causal(out, name, cls_name, cfg, tok):
    import transformers

    d = os.path.join(out, name)
    torch.manual_seed(SEED)
    model = getattr(transformers, cls_name)(cfg).eval()
    perturb_(model, torch.Generator().manual_seed(SEED + 2))
    save_hf(model, tok, d)
    ids = fixed_ids(16, cfg.vocab_size, SEED + 3)
    meta = logits_fixture(model, ids, d)
    meta["model"] = cls_name
    write_json(os.path.join(d, "fixture.json"), meta)
    return meta


def make_bert(out):
    from transformers import BertConfig, BertModel

    d = os.path.join(out, "tiny_bert")
    torch.manual_seed(SEED)
    cfg = BertConfig(
        vocab_size=300,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        type_vocab_size=2,
        initializer_range=0.1,
        layer_norm_eps=1e-12,
        hidden_act="gelu",
        attn_implementation="eager",
    )
    model = BertModel(cfg).eval()
    perturb_(model, torch.Generator().manual_seed(SEED + 2))
    save_hf(model, None, d)
    a = fixed_ids(12, 300, SEED + 4)
    b = fixed_ids(7, 300, SEED + 5)
    ids = torch.zeros((2, 12), dtype=torch.long)
    mask = torch.zeros((2, 12), dtype=torch.long)
    ids[0], mask[0] = a, 1
    ids[1, :7], mask[1, :7] = b, 1
    with torch.no_grad():
        h = model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)).last_hidden_state
    m = mask[..., None].float()
    pooled = (h * m).sum(1) / m.sum(1)
    write_f32(os.path.join(d, "mean_pooled.f32"), pooled.numpy())
    write_f32(os.path.join(d, "last_hidden_state.f32"), h.numpy())
    np.asarray(ids.numpy(), dtype="<u4").tofile(os.path.join(d, "input_ids.u32"))
    np.asarray(mask.numpy(), dtype="<u4").tofile(os.path.join(d, "attention_mask.u32"))
    meta = {
        "model": "BertModel",
        "input_ids": [[int(v) for v in r] for r in ids],
        "attention_mask": [[int(v) for v in r] for r in mask],
        "token_type_ids": "all zero",
        "input_ids_file": "input_ids.u32",
        "attention_mask_file": "attention_mask.u32",
        "input_shape": [2, 12],
        "mean_pooled_file": "mean_pooled.f32",
        "mean_pooled_shape": [2, 32],
        "last_hidden_state_file": "last_hidden_state.f32",
        "last_hidden_state_shape": [2, 12, 32],
        "max_abs_mean_pooled": float(pooled.abs().max()),
        "pooling": "sum over positions of last_hidden_state * mask / number of unmasked positions",
    }
    write_json(os.path.join(d, "fixture.json"), meta)
    return meta


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="crates/qevo/tests/fixtures")
    ap.add_argument(
        "--families-only",
        action="store_true",
        help="only (re)write tiny_qwen3, tiny_gemma2, tiny_gemma3, tiny_phi3 and their summary entries",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    out = args.out
    families = ("tiny_qwen3", "tiny_gemma2", "tiny_gemma3", "tiny_phi3")
    if args.families_only:
        for sub in families:
            shutil.rmtree(os.path.join(out, sub), ignore_errors=True)
        path = os.path.join(out, "summary.json")
        with open(path) as f:
            summary = json.load(f)
        summary.update(make_new_families(out, tiny_tokenizer(300)))
        write_json(path, summary)
        print(json.dumps(summary, indent=2))
        return
    for sub in ("gguf_quants", "tiny_llama", "tiny_gpt2", "tiny_qwen2", "tiny_mistral", "tiny_bert") + families:
        shutil.rmtree(os.path.join(out, sub), ignore_errors=True)
    os.makedirs(out, exist_ok=True)

    summary = {"versions": versions(), "seed": SEED}
    entries, skipped = make_quant_fixtures(out)
    summary["quantize_types"] = [e["type"] for e in entries if e["kind"] == "quantize"]
    summary["dequantize_only_types"] = [e["type"] for e in entries if e["kind"] == "dequantize_only"]
    summary["skipped_types"] = skipped

    tok = tiny_tokenizer(300)
    summary["tiny_llama"] = make_tiny_llama(out, tok)["max_abs_logit"]

    from transformers import GPT2Config, MistralConfig, Qwen2Config

    gpt2 = GPT2Config(
        vocab_size=300,
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=4,
        initializer_range=0.1,
        bos_token_id=0,
        eos_token_id=0,
        attn_implementation="eager",
    )
    summary["tiny_gpt2"] = make_causal(out, "tiny_gpt2", "GPT2LMHeadModel", gpt2, tok)["max_abs_logit"]
    qwen2 = Qwen2Config(
        vocab_size=300,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        rope_theta=10000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        initializer_range=0.1,
        bos_token_id=0,
        eos_token_id=0,
        use_sliding_window=False,
        attn_implementation="eager",
    )
    summary["tiny_qwen2"] = make_causal(out, "tiny_qwen2", "Qwen2ForCausalLM", qwen2, tok)["max_abs_logit"]
    mistral = MistralConfig(
        vocab_size=300,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        sliding_window=None,
        initializer_range=0.1,
        bos_token_id=0,
        eos_token_id=0,
        attn_implementation="eager",
    )
    summary["tiny_mistral"] = make_causal(out, "tiny_mistral", "MistralForCausalLM", mistral, tok)[
        "max_abs_logit"
    ]
    summary["tiny_bert"] = make_bert(out)["max_abs_mean_pooled"]
    summary.update(make_new_families(out, tok))
    write_json(os.path.join(out, "summary.json"), summary)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
