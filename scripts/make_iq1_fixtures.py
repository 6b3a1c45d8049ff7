#!/usr/bin/env python3
"""Writes crates/qevo/tests/fixtures/iq1/: what llama.cpp's own `llama-quantize --pure` writes
for iq1_s and iq1_m on rows built to hit the quantizers' edge cases, with an importance matrix
that has edge cases of its own. tests/quant_iq.rs quantizes the same rows with qevo's
quantizers and compares the bytes block by block. (tests/ggml_quantize_llama_cpp.rs already
compares every tensor of the embedded model; this adds the rows real weights rarely hit.)

    scripts/build_llama_tools.sh        # llama-quantize
    pip install gguf numpy
    python3 scripts/make_iq1_fixtures.py [--qevo target/release/qevo] [--out crates/qevo/tests/fixtures/iq1]

Steps:
  1. The embedded model is exported as an f32 GGUF by qevo, as scripts/make_ggml_fixtures.py does.
  2. In a copy, the first ROWS rows of a few tensors are overwritten with edge rows (all zero,
     zero / tiny / normal sub-blocks, exact ties with -0.0 and 0.0, outliers, constants, all
     negative, a huge dynamic range, ...); rows 0 and ROWS-1 keep the model's values.
  3. A copy of the ggml_quants fixture's imatrix gets edge cases for one tensor: zero columns, a
     whole zero sub-block, a run of huge values, a tiny one.
  4. `llama-quantize --pure --imatrix` writes IQ1_S and IQ1_M (token_embd, which has no imatrix
     entry, as q8_0 for IQ1_S since ggml asserts one; IQ1_M writes it with ggml's unweighted
     path). The first ROWS rows of each chosen tensor are kept: inputs as little-endian f32,
     outputs as the tensor's bytes, with the modified imatrix, and index.json.
Quantizing is row by row, so the first rows alone reproduce what the whole tensor gave.
"""
import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import numpy as np
import gguf

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_ggml_fixtures as mg  # noqa: E402  (its qevo export and llama-quantize helpers)

ROWS = 12
SEED = 20261202
# (tensor, types written): token_embd has no imatrix entry, so only IQ1_M quantizes it as iq1_m.
TENSORS = [
    ("blk.0.attn_q.weight", ["iq1_s", "iq1_m"]),
    ("blk.1.ffn_down.weight", ["iq1_s", "iq1_m"]),
    ("token_embd.weight", ["iq1_m"]),
]
IMATRIX_EDGES = "blk.1.ffn_down.weight"
FTYPES = {"iq1_s": "IQ1_S", "iq1_m": "IQ1_M"}


def edge_rows(real: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """ROWS rows of the tensor's width: edge cases between two real rows."""
    n = real.shape[1]
    s = float(np.std(real[0])) or 0.02
    normal = lambda: rng.normal(0.0, s, n).astype(np.float32)  # noqa: E731
    out = real[:ROWS].astype(np.float32).copy()
    out[1] = 0.0
    # Per 32 values: zero, tiny (below iq1_m's 1e-7 group threshold, above iq1_s's 1e-12),
    # normal, and a 16-value half of each.
    r = normal()
    for b in range(n // 32):
        kind = b % 4
        if kind == 0:
            r[32 * b:32 * b + 32] = 0.0
        elif kind == 1:
            r[32 * b:32 * b + 32] *= 1e-9 / s
        elif kind == 3:
            r[32 * b:32 * b + 16] = 0.0
    out[2] = r
    # Exact ties, both zeros among them: the sort must keep index order on equal values.
    out[3] = rng.choice(np.array([-1.0, -0.5, -0.0, 0.0, 0.5, 1.0], np.float32), n) * s
    r = normal()
    r[::32] *= 50.0
    out[4] = r
    out[5] = s
    out[6] = -np.abs(normal())
    out[7] = np.round(normal() / s, 1) * s
    out[8] = np.sign(normal()) * np.exp(rng.normal(0.0, 4.0, n)).astype(np.float32) * 1e-3
    out[9] = np.where(np.arange(n) % 2 == 0, s, -s)
    r = normal()
    r[: n // 2] *= 1e-4
    out[10] = r
    return out


def tensor_by_name(reader: gguf.GGUFReader, name: str):
    return next(t for t in reader.tensors if t.name == name)


def write_inputs(f32: Path, out: Path, rng: np.random.Generator) -> dict:
    """Overwrites the chosen tensors' first rows in place; returns their shapes."""
    shapes = {}
    reader = gguf.GGUFReader(f32, "r+")
    for name, _ in TENSORS:
        t = tensor_by_name(reader, name)
        rows = edge_rows(np.array(t.data), rng)
        t.data[:ROWS] = rows
        (out / f"{name}.f32").write_bytes(rows.astype("<f4").tobytes())
        shapes[name] = [int(t.data.shape[0]), int(t.data.shape[1])]
    reader.data.flush()
    return shapes


def edit_imatrix(path: Path) -> None:
    """Zero columns, a zero 32-column sub-block, huge and tiny values for one tensor."""
    reader = gguf.GGUFReader(path, "r+")
    sums = tensor_by_name(reader, IMATRIX_EDGES + ".in_sum2").data
    sums[::5] = 0.0
    sums[64:96] = 0.0
    sums[300:316] *= 1e6
    sums[500] = 1e-30
    reader.data.flush()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=mg.ROOT / "crates/qevo/tests/fixtures/iq1", type=Path)
    ap.add_argument("--qevo", type=Path, help="a built qevo binary (default: cargo build --release)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    qevo = args.qevo
    if qevo is None:
        mg.run(["cargo", "build", "--release", "-p", "qevo-cli"], cwd=mg.ROOT)
        qevo = mg.ROOT / "target/release/qevo"
    rng = np.random.default_rng(SEED)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        f32 = tmp / "model-f32.gguf"
        mg.f32_plan(qevo, tmp / "plan.json")
        mg.run([qevo, "export", "--plan", tmp / "plan.json", mg.ROOT / "assets", "--format", "gguf",
                "--out", f32])
        shapes = write_inputs(f32, args.out, rng)
        imatrix = args.out / "imatrix.gguf"
        shutil.copy(mg.ROOT / "crates/qevo/tests/fixtures/ggml_quants/imatrix.gguf", imatrix)
        edit_imatrix(imatrix)
        cases = []
        for ty, ftype in FTYPES.items():
            q = tmp / f"{ty}.gguf"
            extra = ["--imatrix", imatrix, "--token-embedding-type", mg.TOKEN_EMBD_OVERRIDE] \
                if ty == "iq1_s" else ["--imatrix", imatrix]
            done = mg.quantize(extra, f32, q, ftype)
            if done.returncode != 0:
                sys.exit(f"llama-quantize {ftype} failed:\n{done.stderr[-2000:]}")
            reader = gguf.GGUFReader(q)
            for name, types in TENSORS:
                if ty not in types:
                    continue
                t = tensor_by_name(reader, name)
                assert t.tensor_type.name.lower() == ty, (name, t.tensor_type.name)
                raw = bytes(t.data.tobytes())
                row_bytes = len(raw) // shapes[name][0]
                bin_name = f"{ty}-{name}.bin"
                (args.out / bin_name).write_bytes(raw[: ROWS * row_bytes])
                cases.append({"type": ty, "tensor": name, "cols": shapes[name][1], "rows": ROWS,
                              "values": f"{name}.f32", "bytes": bin_name,
                              "imatrix": name != "token_embd.weight"})
    index = {
        "about": "first rows of tensors llama-quantize --pure wrote as iq1_s / iq1_m from edge-case "
                 "inputs; see scripts/make_iq1_fixtures.py",
        "llama_cpp_python": "0.3.36",
        "versions": {"gguf": metadata.version("gguf"), "numpy": np.__version__},
        "seed": SEED,
        "imatrix": "imatrix.gguf",
        "cases": cases,
    }
    (args.out / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    print(f"wrote {len(cases)} cases to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
