#!/usr/bin/env python3
"""Writes crates/qevo/tests/fixtures/ggml_quants/: what llama.cpp's own `llama-quantize --pure`
writes for every tensor of qevo's embedded model, per GGML type, with and without an importance
matrix, as sha256 hashes of the tensor bytes. tests/ggml_quantize_llama_cpp.rs quantizes the same
f32 tensors with qevo's quantizers and compares the hashes.

    scripts/build_llama_tools.sh        # llama-quantize, llama-imatrix
    pip install gguf numpy
    python3 scripts/make_ggml_fixtures.py [--out crates/qevo/tests/fixtures/ggml_quants]

Steps:
  1. `qevo export` writes the embedded model (assets/, f16 on disk, so f16 -> f32 is exact) as an
     f32 GGUF from a uniform f32 plan; the test derives its input the same way (the library's
     `export_gguf`), and the JSON holds the f32 tensors' hashes so the test can check that.
  2. `llama-imatrix --process-output` on assets/calib.txt (-c 128, 16 chunks) writes imatrix.gguf
     (kept: small). Every matmul weight has an entry; token_embd (a lookup) has none.
  3. `llama-quantize --pure [--imatrix imatrix.gguf] f32.gguf out.gguf TYPE` for every type;
     a refusal (llama.cpp requires an imatrix for some IQ types) is recorded as such. Where ggml
     asserts an imatrix for token_embd (iq2_*, iq1_s), that one tensor is written as q8_0
     (`--token-embedding-type`), which the JSON shows as its type.
  4. Every tensor of every output is read back with the `gguf` package: its type name and the
     sha256 of its bytes go into index.json, with the tool versions.
"""
import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import gguf

ROOT = Path(__file__).resolve().parent.parent
TOOLS = Path(os.environ.get("QEVO_LLAMA_TOOLS", Path.home() / ".cache/qevo/llama-tools")) / "bin"
# llama-quantize's type names for the ftypes whose default type is each GGML type (--pure makes
# every tensor that type, where the row length allows). Not always the same name: the IQ2_S
# ftype defaults to iq2_xs, IQ2_M to iq2_s (llama_ftype_get_default_type).
TYPES = [
    ("q4_0", "Q4_0"), ("q4_1", "Q4_1"), ("q5_0", "Q5_0"), ("q5_1", "Q5_1"), ("q8_0", "Q8_0"),
    ("q2_k", "Q2_K"), ("q3_k", "Q3_K_M"), ("q4_k", "Q4_K_M"), ("q5_k", "Q5_K_M"), ("q6_k", "Q6_K"),
    ("iq4_nl", "IQ4_NL"), ("iq4_xs", "IQ4_XS"), ("iq3_s", "IQ3_S"), ("iq3_xxs", "IQ3_XXS"),
    ("iq2_s", "IQ2_M"), ("iq2_xs", "IQ2_XS"), ("iq2_xxs", "IQ2_XXS"), ("iq1_s", "IQ1_S"),
    ("iq1_m", "IQ1_M"),
]
IMATRIX_CTX = 128
IMATRIX_CHUNKS = 16
TOKEN_EMBD_OVERRIDE = "q8_0"


def run(cmd, **kw):
    print("+", " ".join(str(c) for c in cmd), file=sys.stderr)
    return subprocess.run([str(c) for c in cmd], check=True, **kw)


def quantize(extra, f32: Path, out: Path, ftype: str):
    cmd = [TOOLS / "llama-quantize", "--pure", *extra, f32, out, ftype, 2]
    print("+", " ".join(str(c) for c in cmd), file=sys.stderr)
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True)


def tensor_hashes(path: Path) -> dict:
    out = {}
    for t in gguf.GGUFReader(path).tensors:
        raw = bytes(t.data.tobytes())
        out[t.name] = {"type": t.tensor_type.name.lower(), "sha256": hashlib.sha256(raw).hexdigest()}
    return out


def f32_plan(qevo: Path, plan: Path) -> None:
    listing = run([qevo, "inspect", ROOT / "assets"], capture_output=True, text=True).stdout
    names = re.findall(r"^(\S+\.weight)\s", listing, re.M)
    entries = [[n, {"format": "f32", "act_bits": 16}] for n in names]
    plan.write_text(json.dumps({"entries": entries}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=ROOT / "crates/qevo/tests/fixtures/ggml_quants", type=Path)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    run(["cargo", "build", "--release", "--workspace"], cwd=ROOT)
    qevo = ROOT / "target/release/qevo"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        f32 = tmp / "model-f32.gguf"
        f32_plan(qevo, tmp / "plan.json")
        run([qevo, "export", "--plan", tmp / "plan.json", ROOT / "assets", "--format", "gguf", "--out", f32])
        imatrix = args.out / "imatrix.gguf"
        run([TOOLS / "llama-imatrix", "-m", f32, "-f", ROOT / "assets/calib.txt", "-o", imatrix,
             "-c", IMATRIX_CTX, "--chunks", IMATRIX_CHUNKS, "-t", 2, "--no-ppl", "--process-output"],
            capture_output=True)
        results = {}
        for name, ftype in TYPES:
            for mode, extra in (("plain", []), ("imatrix", ["--imatrix", imatrix])):
                q = tmp / f"{name}-{mode}.gguf"
                done = quantize(extra, f32, q, ftype)
                key = f"{name}/{mode}"
                if done.returncode != 0 and mode == "imatrix" and "GGML_ASSERT(imatrix != NULL)" in done.stderr:
                    # token_embd has no imatrix entry (a lookup, not a matmul), and ggml asserts one
                    # for these types: write it as q8_0 instead, as llama.cpp's own mixes do.
                    done = quantize([*extra, "--token-embedding-type", TOKEN_EMBD_OVERRIDE], f32, q, ftype)
                if done.returncode != 0:
                    tail = [l for l in (done.stdout + done.stderr).splitlines() if "imatrix" in l.lower()]
                    results[key] = {"refused": tail[-1].strip() if tail else f"exit {done.returncode}"}
                else:
                    results[key] = {"tensors": tensor_hashes(q)}
                print(key, "refused" if "refused" in results[key] else "ok", file=sys.stderr)
        index = {
            "about": "sha256 of each tensor's bytes as llama-quantize --pure writes it; see scripts/make_ggml_fixtures.py",
            "llama_cpp_python": "0.3.36",
            "gguf_package": metadata.version("gguf"),
            "imatrix": {"file": "imatrix.gguf", "text": "assets/calib.txt", "ctx": IMATRIX_CTX,
                        "chunks": IMATRIX_CHUNKS},
            "f32": tensor_hashes(f32),
            "quantized": results,
        }
        (args.out / "index.json").write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
