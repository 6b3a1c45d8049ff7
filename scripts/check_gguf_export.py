#!/usr/bin/env python3
"""Reads a GGUF file written by `qevo export` with llama.cpp's own Python package
(`pip install gguf numpy`) and checks it against what qevo says it wrote.

Usage: check_gguf_export.py FILE.gguf EXPECTED.json

EXPECTED.json: {"tensors": [{"name", "shape" (row-major), "type" (qevo name, e.g.
"q4_k"), "values" (a raw little-endian f32 file, qevo's dequantized values in GGUF row
order)}], "metadata": {key: value}, "n_tokens": int}. Every tensor must be present
with that shape and type, hold no other tensors, and dequantize (with gguf.quants) to
exactly qevo's values. Exit status 0 = all good; 1 = a mismatch (printed).
"""
import json
import sys
from pathlib import Path

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


def field_value(reader, key):
    f = reader.fields.get(key)
    if f is None:
        return None
    return f.contents()


def main():
    path, expected_path = sys.argv[1], sys.argv[2]
    exp = json.loads(Path(expected_path).read_text())
    base = Path(expected_path).parent
    reader = GGUFReader(path)
    errors = []
    by_name = {t.name: t for t in reader.tensors}
    want_names = {e["name"] for e in exp["tensors"]}
    extra = sorted(set(by_name) - want_names)
    if extra:
        errors.append(f"unexpected tensors: {extra[:5]}")
    for e in exp["tensors"]:
        t = by_name.get(e["name"])
        if t is None:
            errors.append(f"{e['name']}: missing")
            continue
        # gguf reports ne (innermost first); qevo's shape is row-major.
        shape = [int(d) for d in reversed(list(t.shape))]
        if shape != e["shape"]:
            errors.append(f"{e['name']}: shape {shape}, expected {e['shape']}")
        tname = t.tensor_type.name.lower()
        if tname != e["type"]:
            errors.append(f"{e['name']}: type {tname}, expected {e['type']}")
        got = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(-1)
        want = np.fromfile(base / e["values"], dtype="<f4")
        if got.shape != want.shape:
            errors.append(f"{e['name']}: {got.size} values, expected {want.size}")
        elif not np.array_equal(got, want):
            diff = np.abs(got - want)
            i = int(np.argmax(diff))
            errors.append(
                f"{e['name']} ({tname}): {int((got != want).sum())} values differ, "
                f"max |diff| {diff[i]:.3g} at {i} ({got[i]} vs {want[i]})"
            )
    for key, want in exp.get("metadata", {}).items():
        got = field_value(reader, key)
        if isinstance(want, float) and got is not None:
            ok = abs(float(got) - want) <= 1e-6 * max(1.0, abs(want))
        else:
            ok = got == want
        if not ok:
            errors.append(f"metadata {key}: {got!r}, expected {want!r}")
    n_tokens = exp.get("n_tokens")
    if n_tokens is not None:
        toks = field_value(reader, "tokenizer.ggml.tokens")
        types = field_value(reader, "tokenizer.ggml.token_type")
        if toks is None or len(toks) != n_tokens:
            errors.append(f"tokenizer.ggml.tokens: {None if toks is None else len(toks)} tokens, expected {n_tokens}")
        if types is None or len(types) != n_tokens:
            errors.append("tokenizer.ggml.token_type: missing or wrong length")
    align = field_value(reader, "general.alignment") or 32
    for t in reader.tensors:
        if t.data_offset % align != 0:
            errors.append(f"{t.name}: data offset {t.data_offset} not aligned to {align}")
    if errors:
        for e in errors:
            print("MISMATCH:", e)
        return 1
    print(f"ok: {len(exp['tensors'])} tensors, {len(reader.fields)} metadata keys checked in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
