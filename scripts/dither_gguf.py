#!/usr/bin/env python3
"""Breaks a quantization grid (MEASURING.md): copies an f16 GGUF expanded from a quantized
one (`llama-quantize --allow-requantize IN.gguf F16.gguf F16`) and adds, to every 2-d f16
tensor, seeded uniform noise of one quantization step per block of 32 weights along each
row, where the step is the block's range over 15 (a 4-bit grid: Q4_1, Q4_K and their
kind). The result is the f16 reference every contender is quantized from and scored
against; no format then finds the weights on its own grid.

    python3 scripts/dither_gguf.py F16.gguf DITHERED.gguf [--seed 0] [--levels 15]

Uses gguf-py (pip install gguf): the copy is opened read-write as a memory map and its
tensors are changed in place, so metadata and layout stay byte for byte.
"""
import argparse
import shutil

import numpy as np
from gguf import GGUFReader, GGMLQuantizationType

BLOCK = 32


def dither(values: np.ndarray, rng: np.random.Generator, levels: int) -> np.ndarray:
    rows, cols = values.shape
    usable = cols - cols % BLOCK
    out = values.astype(np.float32)
    blocks = out[:, :usable].reshape(rows, usable // BLOCK, BLOCK)
    step = (blocks.max(axis=2, keepdims=True) - blocks.min(axis=2, keepdims=True)) / levels
    blocks += (rng.random(blocks.shape, dtype=np.float32) - 0.5) * step
    out[:, :usable] = blocks.reshape(rows, usable)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--levels", type=int, default=15)
    a = ap.parse_args()
    shutil.copyfile(a.src, a.dst)
    reader = GGUFReader(a.dst, "r+")
    rng = np.random.default_rng(a.seed)
    changed = 0
    for t in reader.tensors:
        if t.tensor_type != GGMLQuantizationType.F16 or len(t.shape) != 2:
            continue
        data = t.data  # a writable view of the copy, shape (rows, cols)
        data[...] = dither(np.asarray(data), rng, a.levels).astype(np.float16)
        changed += 1
    reader.data.flush()
    print(f"dithered {changed} f16 tensors of {a.dst} (seed {a.seed}, {a.levels} levels)")


if __name__ == "__main__":
    main()
