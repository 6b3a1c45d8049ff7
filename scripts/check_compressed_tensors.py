#!/usr/bin/env python3
"""Checks a qevo compressed-tensors export with the `compressed_tensors` package itself.

Usage: check_compressed_tensors.py EXPORT_DIR EXPECTED_JSON

EXPECTED_JSON (written by crates/qevo/tests/export_compressed_tensors.rs) names
  weights:  a safetensors file of f32 tensors, by Hugging Face weight name, holding the
            dequantized weights qevo scored the plan with;
  ids:      token ids of one sequence;
  logits:   (optional) a raw little-endian f32 file of qevo's logits for `ids`,
            [len(ids), vocab].

1. config.json's quantization_config validates as compressed_tensors' QuantizationConfig,
   and every config group decompresses, through compressed_tensors'
   PackedQuantizationCompressor, to exactly qevo's weights (scales read in f32: they are
   f16 values, and qevo multiplies in f32).
2. When `logits` is given and transformers is importable: AutoModelForCausalLM loads the
   directory on the CPU in float32 (compressed; the first forward decompresses it), its
   logits match qevo's to 1e-3 relative (max |difference| / max |qevo logit|), and every
   planned weight, decompressed, equals qevo's bit for bit.

Prints `ok: ...` lines; exits non-zero on the first mismatch.
"""

import json
import os
import sys

import torch
from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
from compressed_tensors.quantization import QuantizationConfig
from safetensors.torch import load_file

REL_TOL = 1e-3
PARTS = ("weight_packed", "weight_scale", "weight_zero_point", "weight_shape")


def fail(msg):
    print(f"FAIL: {msg}")
    sys.exit(1)


def decompress_groups(export_dir, qc, expected):
    stored = load_file(os.path.join(export_dir, "model.safetensors"))
    checked = 0
    for name, scheme in qc.config_groups.items():
        for module in scheme.targets:
            sd = {p: stored[f"{module}.{p}"] for p in PARTS if f"{module}.{p}" in stored}
            sd["weight_scale"] = sd["weight_scale"].to(torch.float32)
            w = PackedQuantizationCompressor.decompress(sd, scheme)["weight"]
            want = expected[f"{module}.weight"]
            if w.shape != want.shape or w.dtype != torch.float32:
                fail(f"{module}: decompressed {tuple(w.shape)} {w.dtype}, want {tuple(want.shape)}")
            diff = (w != want).sum().item()
            if diff:
                fail(f"{module} ({name}): {diff} of {want.numel()} values differ from qevo's")
            checked += 1
    for module in qc.ignore:
        if f"{module}.weight" not in stored:
            fail(f"ignored module {module} has no float weight")
        if not torch.equal(stored[f"{module}.weight"].to(torch.float32), expected[f"{module}.weight"]):
            fail(f"float module {module} differs from qevo's weight")
    print(f"ok: {checked} modules decompress bit for bit, {len(qc.ignore)} float modules")


def transformers_logits(export_dir, spec, expected):
    try:
        from transformers import AutoModelForCausalLM
    except ImportError:
        print("skip: transformers is not installed")
        return
    model = AutoModelForCausalLM.from_pretrained(export_dir, dtype=torch.float32)
    model.eval()
    ids = torch.tensor([spec["ids"]])
    with torch.no_grad():
        got = model(ids).logits[0].float()
    raw = open(spec["logits"], "rb").read()
    want = torch.frombuffer(bytearray(raw), dtype=torch.float32).reshape(got.shape)
    rel = ((got - want).abs().max() / want.abs().max()).item()
    if not rel <= REL_TOL:
        fail(f"logits differ: max |diff| / max |qevo| = {rel:.3e} > {REL_TOL}")
    print(f"ok: transformers logits match qevo's, max |diff| / max |qevo| = {rel:.3e}")
    params = dict(model.named_parameters())
    missing = [k for k in expected if k not in params]
    if missing:
        fail(f"transformers has no {missing[0]} after decompression")
    for k in expected:
        if not torch.equal(params[k].detach(), expected[k]):
            fail(f"transformers' {k} differs from qevo's")
    print(f"ok: transformers decompresses {len(expected)} planned weights bit for bit")


def main():
    export_dir, spec_path = sys.argv[1], sys.argv[2]
    spec = json.load(open(spec_path))
    cfg = json.load(open(os.path.join(export_dir, "config.json")))
    raw_qc = cfg["quantization_config"]
    if raw_qc.get("quant_method") != "compressed-tensors" or raw_qc.get("format") != "pack-quantized":
        fail(f"quantization_config names {raw_qc.get('quant_method')} / {raw_qc.get('format')}")
    qc = QuantizationConfig.model_validate(raw_qc)
    expected = load_file(spec["weights"])
    decompress_groups(export_dir, qc, expected)
    if "logits" in spec:
        transformers_logits(export_dir, spec, expected)


if __name__ == "__main__":
    main()
