#!/usr/bin/env python3
"""Writes crates/qevo/tests/fixtures/iq/: random blocks of every llama.cpp IQ type and the
f32 values llama.cpp's own Python `gguf` package decodes them to (`gguf.quants.dequantize`,
which implements every IQ type). tests/quant_iq.rs compares qevo's decoders bit for bit.

    pip install gguf numpy
    python3 scripts/make_iq_fixtures.py [--out crates/qevo/tests/fixtures/iq]

Block bytes are uniform random except the f16 block scale, drawn from a list that covers
zero, both signs, a subnormal, large values and ordinary ones (iq1_m keeps its scale in the
top nibbles of its four u16 sub-scale words, so it is written there). A fixed numpy seed
makes the output deterministic for fixed package versions (recorded in index.json).
"""
import argparse
import json
from importlib import metadata
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize

SEED = 20261202
# (type, blocks); iq4_nl blocks are 32 values, the others 256.
TYPES = [
    (T.IQ4_NL, 64),
    (T.IQ4_XS, 12),
    (T.IQ3_S, 12),
    (T.IQ3_XXS, 12),
    (T.IQ2_S, 12),
    (T.IQ2_XS, 12),
    (T.IQ2_XXS, 12),
    (T.IQ1_M, 12),
    (T.IQ1_S, 12),
]
SCALES = [0.0, -0.0, 1.0, -1.0, 6.1e-5, 3.0e-7, -2.5e-3, 1234.0, -60000.0, 0.0123]


def scale_bits(rng: np.random.Generator, i: int) -> int:
    v = SCALES[i] if i < len(SCALES) else float(rng.normal(0.0, 0.02))
    return int(np.array([v], dtype=np.float16).view(np.uint16)[0])


def blocks(qtype: T, n: int, rng: np.random.Generator) -> np.ndarray:
    _, type_size = gguf.GGML_QUANT_SIZES[qtype]
    b = rng.integers(0, 256, size=(n, type_size), dtype=np.uint8)
    for i in range(n):
        d = scale_bits(rng, i)
        if qtype == T.IQ1_M:
            # f16 scale: nibble k in the top 4 bits of u16 word k of the last 8 bytes.
            words = b[i, -8:].view(np.uint16).copy()
            for k in range(4):
                words[k] = (words[k] & 0x0FFF) | (((d >> (4 * k)) & 0xF) << 12)
            b[i, -8:] = words.view(np.uint8)
        else:
            b[i, 0:2] = np.array([d], dtype=np.uint16).view(np.uint8)
    return b


def main() -> None:
    ap = argparse.ArgumentParser()
    root = Path(__file__).resolve().parent.parent
    ap.add_argument("--out", default=root / "crates/qevo/tests/fixtures/iq", type=Path)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    entries = []
    for qtype, n in TYPES:
        block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
        b = blocks(qtype, n, rng)
        y = dequantize(b.reshape(-1), qtype).astype(np.float32).reshape(-1)
        assert y.size == n * block_size
        name = qtype.name.lower()
        (args.out / f"{name}.bin").write_bytes(b.tobytes())
        (args.out / f"{name}.f32").write_bytes(y.astype("<f4").tobytes())
        entries.append(
            dict(type=name, ggml_type_id=int(qtype), block_size=block_size,
                 type_size=type_size, blocks=n, bytes=f"{name}.bin", values=f"{name}.f32")
        )
    index = dict(
        generator="scripts/make_iq_fixtures.py",
        decoder="gguf.quants.dequantize",
        seed=SEED,
        versions=dict(gguf=metadata.version("gguf"),
                      numpy=np.__version__),
        entries=entries,
    )
    (args.out / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    print(f"wrote {len(entries)} types to {args.out}")


if __name__ == "__main__":
    main()
