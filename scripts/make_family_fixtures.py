#!/usr/bin/env python3
"""Tiny random-weight models of the families people deploy, with each family's real
config.json keys, their transformers logits, and their GGUF as llama.cpp's own converter
writes it. Writes crates/qevo/tests/fixtures/families/<name>/.

    python scripts/make_family_fixtures.py --llama-cpp DIR [--out DIR]

Needs numpy, torch, transformers, tokenizers, safetensors, and the llama.cpp source that
scripts/build_llama_tools.sh unpacks (DIR holds convert_hf_to_gguf.py and gguf-py/):
the GGUF of each model is made by that converter, never by qevo.

Each config below is the published config.json of the model named beside it (keys and
rope settings as shipped), with only width, depth and vocabulary scaled down, plus the
variant keys a test needs (marked). The published values were taken from the model
cards' config.json as copied in public repositories; see the README in the output
directory. Output is deterministic for fixed package versions.

Per fixture: config.json, model.safetensors, tokenizer.json (HF directory); model.gguf
(llama.cpp's converter, f32); input_ids.u32 and logits.f32 (transformers, eager
attention); fixture.json (ids, logits shape, transformers' inverse rope frequencies and
attention scaling, package versions).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import SEED, fixed_ids, perturb_, tiny_tokenizer, write_f32, write_json  # noqa: E402

# Width and depth every tiny model shares: q width (heads x head_dim) differs from hidden
# where the family allows it, GQA everywhere.
TINY = dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2)

FAMILIES = {
    # meta-llama/Llama-3.2-1B: llama3 rope (factor 32 from 8192), theta 5e5, tied, explicit head_dim.
    "llama32": {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "attention_bias": False,
        "attention_dropout": 0.0, "bos_token_id": 0, "eos_token_id": 0, "head_dim": 16,
        "hidden_act": "silu", "initializer_range": 0.02, "max_position_embeddings": 131072,
        "mlp_bias": False, "num_hidden_layers": 2, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
        "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "rope_theta": 500000.0, "tie_word_embeddings": True, "torch_dtype": "float32", "use_cache": True,
    },
    # Qwen/Qwen2.5-1.5B, with its window switched on (variant: use_sliding_window true,
    # sliding_window 4, max_window_layers 1, so layer 1 slides and layer 0 does not) and
    # no tie_word_embeddings key (variant: transformers' Qwen2 default, untied).
    "qwen25_window": {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "attention_dropout": 0.0,
        "bos_token_id": 0, "eos_token_id": 0, "hidden_act": "silu", "initializer_range": 0.02,
        "max_position_embeddings": 131072, "max_window_layers": 1, "num_hidden_layers": 2,
        "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 4,
        "torch_dtype": "float32", "use_cache": True, "use_sliding_window": True,
    },
    # mistralai/Mistral-7B-v0.1 with linear rope scaling (variant: factor 2) and window 4.
    "mistral_linear_window": {
        "architectures": ["MistralForCausalLM"], "model_type": "mistral", "bos_token_id": 0,
        "eos_token_id": 0, "hidden_act": "silu", "initializer_range": 0.02,
        "max_position_embeddings": 32768, "num_hidden_layers": 2, "rms_norm_eps": 1e-05,
        "rope_scaling": {"type": "linear", "factor": 2.0}, "rope_theta": 10000.0,
        "sliding_window": 4, "tie_word_embeddings": False, "torch_dtype": "float32", "use_cache": True,
    },
    # Qwen/Qwen3-8B with the YaRN rope scaling Qwen's model cards give for long context
    # (factor 4 from 32768).
    "qwen3_yarn": {
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "attention_bias": False,
        "attention_dropout": 0.0, "bos_token_id": 0, "eos_token_id": 0, "head_dim": 16,
        "hidden_act": "silu", "initializer_range": 0.02, "max_position_embeddings": 131072,
        "max_window_layers": 36, "num_hidden_layers": 2, "rms_norm_eps": 1e-06,
        "rope_scaling": {"factor": 4.0, "original_max_position_embeddings": 32768, "rope_type": "yarn"},
        "rope_theta": 1000000, "sliding_window": None, "tie_word_embeddings": False,
        "torch_dtype": "float32", "use_cache": True, "use_sliding_window": False,
    },
    # microsoft/Phi-4-mini-instruct: partial rotary (0.75), LongRoPE from 4096 to 131072,
    # tied. Factor lists scaled to the tiny rotary width (3 entries).
    "phi4_mini": {
        "architectures": ["Phi3ForCausalLM"], "model_type": "phi3", "attention_bias": False,
        "attention_dropout": 0.0, "bos_token_id": 0, "embd_pdrop": 0.0, "eos_token_id": 0,
        "full_attn_mod": 1, "hidden_act": "silu", "initializer_range": 0.02,
        "interpolate_factor": 1, "lm_head_bias": False, "max_position_embeddings": 131072,
        "mlp_bias": False, "num_hidden_layers": 2, "original_max_position_embeddings": 4096,
        "pad_token_id": 0, "partial_rotary_factor": 0.75, "resid_pdrop": 0.0, "rms_norm_eps": 1e-05,
        "rope_scaling": {"long_factor": [1.0, 1.25, 4.7],
                         "short_factor": [1.0, 1.1, 2.0], "type": "longrope"},
        "rope_theta": 10000.0, "sliding_window": 262144, "tie_word_embeddings": True,
        "torch_dtype": "float32", "use_cache": True,
    },
    # HuggingFaceTB/SmolLM3-3B: NoPE every 4th layer (4 layers here, so layer 3 has none).
    "smollm3": {
        "architectures": ["SmolLM3ForCausalLM"], "model_type": "smollm3", "attention_bias": False,
        "attention_dropout": 0.0, "bos_token_id": 0, "eos_token_id": 0, "hidden_act": "silu",
        "initializer_range": 0.02, "max_position_embeddings": 65536, "max_window_layers": 28,
        "mlp_bias": False, "no_rope_layer_interval": 4, "no_rope_layers": [1, 1, 1, 0],
        "num_hidden_layers": 4, "pad_token_id": 0, "pretraining_tp": 2, "rms_norm_eps": 1e-06,
        "rope_scaling": None, "rope_theta": 5000000.0, "sliding_window": None,
        "tie_word_embeddings": True, "torch_dtype": "float32", "use_cache": False,
        "use_sliding_window": False,
    },
    # ibm-granite/granite-3.3-2b-base: embedding, residual, attention and logit multipliers.
    "granite": {
        "architectures": ["GraniteForCausalLM"], "model_type": "granite", "attention_bias": False,
        "attention_dropout": 0.0, "attention_multiplier": 0.015625, "bos_token_id": 0,
        "embedding_multiplier": 12.0, "eos_token_id": 0, "hidden_act": "silu",
        "initializer_range": 0.02, "logits_scaling": 8.0, "max_position_embeddings": 131072,
        "mlp_bias": False, "num_hidden_layers": 2, "pad_token_id": 0,
        "residual_multiplier": 0.22, "rms_norm_eps": 1e-05, "rope_scaling": None,
        "rope_theta": 10000000.0, "tie_word_embeddings": True, "torch_dtype": "float32", "use_cache": True,
    },
    # allenai/OLMo-2-0425-1B: post-norms only, q/k norms over whole projections.
    "olmo2": {
        "architectures": ["Olmo2ForCausalLM"], "model_type": "olmo2", "attention_bias": False,
        "attention_dropout": 0.0, "bos_token_id": 0, "eos_token_id": 0, "hidden_act": "silu",
        "initializer_range": 0.02, "max_position_embeddings": 4096, "num_hidden_layers": 2,
        "pad_token_id": 0, "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 500000,
        "tie_word_embeddings": False, "torch_dtype": "float32", "use_cache": True,
    },
    # Qwen/Qwen3-30B-A3B: 128 experts, 8 per token, renormalised (8 experts of width 16
    # here, 2 per token).
    "qwen3_moe": {
        "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "attention_bias": False,
        "attention_dropout": 0.0, "bos_token_id": 0, "decoder_sparse_step": 1, "eos_token_id": 0,
        "head_dim": 16, "hidden_act": "silu", "initializer_range": 0.02,
        "max_position_embeddings": 40960, "max_window_layers": 48, "mlp_only_layers": [],
        "moe_intermediate_size": 16, "norm_topk_prob": True, "num_experts": 8,
        "num_experts_per_tok": 2, "num_hidden_layers": 2, "output_router_logits": False,
        "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000.0,
        "router_aux_loss_coef": 0.001, "sliding_window": None, "tie_word_embeddings": False,
        "torch_dtype": "float32", "use_cache": True, "use_sliding_window": False,
    },
    # mistralai/Mixtral-8x7B-v0.1: 8 experts, 2 per token.
    "mixtral": {
        "architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "attention_dropout": 0.0,
        "bos_token_id": 0, "eos_token_id": 0, "hidden_act": "silu", "initializer_range": 0.02,
        "max_position_embeddings": 32768, "num_experts_per_tok": 2, "num_hidden_layers": 2,
        "num_local_experts": 8, "output_router_logits": False, "rms_norm_eps": 1e-05,
        "rope_theta": 1000000.0, "router_aux_loss_coef": 0.02, "sliding_window": None,
        "tie_word_embeddings": False, "torch_dtype": "float32", "use_cache": True,
    },
    # A Llama with dynamic NTK scaling (variant), which computes as the plain rope up to
    # max_position_embeddings.
    "llama_dynamic": {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "bos_token_id": 0,
        "eos_token_id": 0, "hidden_act": "silu", "max_position_embeddings": 2048,
        "num_hidden_layers": 2, "rms_norm_eps": 1e-05,
        "rope_scaling": {"type": "dynamic", "factor": 2.0}, "rope_theta": 10000.0,
        "tie_word_embeddings": False, "torch_dtype": "float32",
    },
}

# Families whose GGUF llama.cpp computes differently from transformers on these inputs:
# llama.cpp has no sliding window for qwen2 or llama (Mistral).
GGUF_DIFFERS = {"qwen25_window": "llama.cpp's qwen2 has no sliding window",
                "mistral_linear_window": "llama.cpp's llama has no sliding window"}


def versions():
    import importlib.metadata as md

    return {p: md.version(p) for p in ("numpy", "torch", "transformers", "tokenizers", "safetensors")}


def make_model(d, name, cfg_json, tok):
    """Writes the published-style config.json, builds the model from that file with
    transformers, perturbs it, saves weights only (the config stays as published)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    os.makedirs(d, exist_ok=True)
    cfg_json = dict(cfg_json, **TINY, vocab_size=tok.get_vocab_size())
    if name == "mixtral":
        # Mixtral's experts are intermediate_size wide: narrower here, to keep the file small.
        cfg_json["intermediate_size"] = 16
    write_json(os.path.join(d, "config.json"), cfg_json)
    cfg = AutoConfig.from_pretrained(d)
    cfg._attn_implementation = "eager"
    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").float().eval()
    perturb_(model, torch.Generator().manual_seed(SEED + 2))
    from safetensors.torch import save_file

    state = published_layout(name, {k: v.contiguous() for k, v in model.state_dict().items()})
    if cfg.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    save_file(state, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    tok.save(os.path.join(d, "tokenizer.json"))
    if name == "phi4_mini":
        # Phi-4-mini ships GPT-2's tokenizer class (llama.cpp's converter reads this key).
        write_json(os.path.join(d, "tokenizer_config.json"), {"tokenizer_class": "GPT2Tokenizer"})
    return model


def published_layout(name, state):
    """transformers 5 holds each block's experts fused (`mlp.experts.gate_up_proj`
    [E, 2I, H], `down_proj` [E, H, I]); published checkpoints store one matrix per expert:
    Qwen3-MoE `mlp.experts.E.{gate,up,down}_proj`, Mixtral
    `block_sparse_moe.experts.E.{w1,w3,w2}` and `block_sparse_moe.gate`."""
    if name not in ("qwen3_moe", "mixtral"):
        return state
    out = {}
    for k, v in state.items():
        if k.endswith("mlp.experts.gate_up_proj"):
            stem = k[: -len("experts.gate_up_proj")]
            half = v.shape[1] // 2
            for e in range(v.shape[0]):
                for part, rows in (("gate", v[e, :half]), ("up", v[e, half:])):
                    out[expert_key(name, stem, e, part)] = rows.contiguous()
        elif k.endswith("mlp.experts.down_proj"):
            stem = k[: -len("experts.down_proj")]
            for e in range(v.shape[0]):
                out[expert_key(name, stem, e, "down")] = v[e].contiguous()
        elif name == "mixtral" and k.endswith("mlp.gate.weight"):
            out[k.replace("mlp.gate", "block_sparse_moe.gate")] = v
        else:
            out[k] = v
    return out


def expert_key(name, stem, e, part):
    if name == "mixtral":
        w = {"gate": "w1", "up": "w3", "down": "w2"}[part]
        return f"{stem.replace('mlp.', 'block_sparse_moe.')}experts.{e}.{w}.weight"
    return f"{stem}experts.{e}.{part}_proj.weight"


def rope_of(model):
    rot = model.model.rotary_emb
    inv = getattr(rot, "inv_freq", None)
    return {
        "inv_freq": [float(x) for x in inv] if inv is not None else None,
        "attention_scaling": float(getattr(rot, "attention_scaling", 1.0)),
    }


def convert(llama_cpp, d):
    """llama.cpp's converter on the HF directory, f32. Its pre-tokenizer check knows only
    published tokenizers' hashes; the tiny BPE is GPT-2's byte-level scheme."""
    wrapper = (
        "import sys; sys.argv = sys.argv[1:]; sys.path.insert(0, %r); sys.path.insert(1, %r)\n"
        "import conversion.base as b\n"
        "b.TextModel.get_vocab_base_pre = lambda self, tokenizer: 'gpt-2'\n"
        "import runpy; runpy.run_path(%r, run_name='__main__')\n"
    ) % (llama_cpp, os.path.join(llama_cpp, "gguf-py"), os.path.join(llama_cpp, "convert_hf_to_gguf.py"))
    out = os.path.join(d, "model.gguf")
    subprocess.run(
        [sys.executable, "-c", wrapper, "convert", d, "--outfile", out, "--outtype", "f32"],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="crates/qevo/tests/fixtures/families")
    ap.add_argument("--llama-cpp", required=True, help="llama.cpp source (convert_hf_to_gguf.py)")
    ap.add_argument("--only", nargs="*", help="fixture names to (re)write")
    args = ap.parse_args()
    tok = tiny_tokenizer(300)
    for name, cfg_json in FAMILIES.items():
        if args.only and name not in args.only:
            continue
        d = os.path.join(args.out, name)
        shutil.rmtree(d, ignore_errors=True)
        model = make_model(d, name, cfg_json, tok)
        ids = fixed_ids(16, tok.get_vocab_size(), SEED + 3)
        with torch.no_grad():
            logits = model(input_ids=ids[None]).logits[0].float().numpy()
        write_f32(os.path.join(d, "logits.f32"), logits)
        np.asarray(ids.numpy(), dtype="<u4").tofile(os.path.join(d, "input_ids.u32"))
        convert(args.llama_cpp, d)
        meta = {
            "model": cfg_json["architectures"][0],
            "input_ids": [int(i) for i in ids],
            "logits_shape": list(logits.shape),
            "max_abs_logit": float(np.max(np.abs(logits))),
            "rope": rope_of(model),
            "gguf_agrees_with_transformers": name not in GGUF_DIFFERS,
            "gguf_note": GGUF_DIFFERS.get(name, ""),
            "versions": versions(),
        }
        write_json(os.path.join(d, "fixture.json"), meta)
        print(f"{name}: max |logit| {meta['max_abs_logit']:.3f}")


if __name__ == "__main__":
    main()
