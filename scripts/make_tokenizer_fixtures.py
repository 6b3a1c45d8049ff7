#!/usr/bin/env python3
"""Makes the tokenizer fixtures in crates/qevo/tests/fixtures/tokenizer/ from real models and llama.cpp.

For each real model (fetched by scripts/fetch_models.sh) this writes
  <name>.vocab.gguf.gz  a vocabulary-only GGUF cut from the model: every metadata key but the chat template, no
                        tensors. To stay small, a normal token that cannot occur in any of the texts (its text is no
                        substring of any text, in the vocabulary's own alphabet) gets a private-use placeholder text
                        and score 0, and merges that build such tokens are dropped. Ids, special tokens and every
                        reachable token, score and merge are unchanged, so llama.cpp tokenizes the texts the same
                        way on the cut as on the full file; this script checks that it does.
  <name>.ids.json       llama-tokenize's ids for every text in texts.json (`--ids --log-disable --no-escape`,
                        default BOS handling, special tokens not parsed), from the cut file.
all-MiniLM-L6-v2 has no GGUF on the registries; its vocabulary GGUF is built from its vocab.txt the way llama.cpp's
convert_hf_to_gguf.py writes BERT vocabularies (`##x` -> `x`, `x` -> `▁x`, [..] tokens control).

    pip install gguf numpy
    scripts/build_llama_tools.sh && scripts/fetch_models.sh
    python3 scripts/make_tokenizer_fixtures.py
"""
import gzip
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import gguf
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "crates/qevo/tests/fixtures/tokenizer"
MODELS = Path(os.environ.get("QEVO_MODELS", Path.home() / ".cache/qevo/models"))
TOOLS = Path(os.environ.get("QEVO_LLAMA_TOOLS", Path.home() / ".cache/qevo/llama-tools")) / "bin"
SKIP_KEYS = {"tokenizer.chat_template"}
NORMAL = 1


def byte_level_alphabet() -> dict:
    """GPT-2's byte -> printable character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def haystacks(model: str, texts: list) -> list:
    """The texts in the alphabet the vocabulary's token texts use."""
    if model == "gpt2":
        m = byte_level_alphabet()
        return ["".join(m[b] for b in t.encode()) for t in texts]
    if model == "llama":
        return [(" " + t).replace(" ", "▁") for t in texts]
    return texts


def tokenize(model_path: Path, text: str) -> list:
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".txt", delete=False) as f:
        f.write(text)
    try:
        out = subprocess.run(
            [str(TOOLS / "llama-tokenize"), "-m", str(model_path), "-f", f.name, "--ids", "--log-disable", "--no-escape"],
            check=True, capture_output=True, text=True,
        ).stdout
    finally:
        os.unlink(f.name)
    return json.loads(out.strip().splitlines()[-1])


def copy_fields(reader: gguf.GGUFReader, writer: gguf.GGUFWriter, replace: dict) -> None:
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key in SKIP_KEYS or key == "general.architecture":
            continue
        if key in replace:
            value = replace[key]
        else:
            value = field.contents()
        vtype = field.types[0]
        sub = field.types[1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, value, vtype, sub_type=sub)


def cut(src: Path, dst: Path, texts: list) -> None:
    reader = gguf.GGUFReader(src)
    f = reader.fields
    model = f["tokenizer.ggml.model"].contents()
    tokens = f["tokenizer.ggml.tokens"].contents()
    types = f["tokenizer.ggml.token_type"].contents() if "tokenizer.ggml.token_type" in f else [NORMAL] * len(tokens)
    hay = haystacks(model, texts)
    keep = [ty != NORMAL or any(t in h for h in hay) for t, ty in zip(tokens, types)]
    replace = {"tokenizer.ggml.tokens": [t if k else f"\ue000{i:x}" for i, (t, k) in enumerate(zip(tokens, keep))]}
    if "tokenizer.ggml.scores" in f:
        scores = f["tokenizer.ggml.scores"].contents()
        replace["tokenizer.ggml.scores"] = [s if k else 0.0 for s, k in zip(scores, keep)]
    if "tokenizer.ggml.merges" in f:
        kept = {t for t, k in zip(tokens, keep) if k}
        replace["tokenizer.ggml.merges"] = [m for m in f["tokenizer.ggml.merges"].contents() if m.replace(" ", "", 1) in kept]
    arch = f["general.architecture"].contents()
    writer = gguf.GGUFWriter(dst, arch)
    copy_fields(reader, writer, replace)
    write(writer)
    print(f"{dst.name}: kept {sum(keep)} of {len(tokens)} tokens", file=sys.stderr)


def write(writer: gguf.GGUFWriter) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def bert_vocab(hf_dir: Path, dst: Path) -> None:
    """A BERT vocabulary GGUF as llama.cpp's converter writes one, with the hyper-parameters
    llama.cpp reads before the vocabulary."""
    cfg = json.loads((hf_dir / "config.json").read_text())
    words = (hf_dir / "vocab.txt").read_text(encoding="utf-8").split("\n")
    if words and words[-1] == "":
        words.pop()
    tokens, types = [], []
    for w in words:
        if w.startswith("[") and w.endswith("]"):
            tokens.append(w)
            types.append(3 if w in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]") else NORMAL)
        elif w.startswith("##"):
            tokens.append(w[2:])
            types.append(NORMAL)
        else:
            tokens.append("\u2581" + w)
            types.append(NORMAL)
    w = gguf.GGUFWriter(dst, "bert")
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_layer_norm_eps(cfg["layer_norm_eps"])
    w.add_causal_attention(False)
    w.add_pooling_type(gguf.PoolingType.MEAN)
    w.add_tokenizer_model("bert")
    w.add_token_list(tokens)
    w.add_token_types(types)
    ids = {t: i for i, t in enumerate(tokens)}
    w.add_unk_token_id(ids["[UNK]"])
    w.add_bos_token_id(ids["[CLS]"])
    w.add_sep_token_id(ids["[SEP]"])
    w.add_pad_token_id(ids["[PAD]"])
    w.add_mask_token_id(ids["[MASK]"])
    write(w)


def main() -> None:
    texts = json.loads((OUT / "texts.json").read_text(encoding="utf-8"))
    names, bodies = list(texts), list(texts.values())
    models = [
        ("smollm2", MODELS / "SmolLM2-135M-Instruct.Q4_1.gguf"),
        ("gemma3", MODELS / "gemma-3-270m-q4_k_m.gguf"),
        ("minilm", MODELS / "all-MiniLM-L6-v2"),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for name, src in models:
            if not src.exists():
                print(f"{name}: {src} missing (scripts/fetch_models.sh), skipped", file=sys.stderr)
                continue
            dst = Path(tmp) / f"{name}.vocab.gguf"
            full = None
            if src.is_dir():
                bert_vocab(src, dst)
            else:
                cut(src, dst, bodies)
                full = src
            ids, same = {}, 0
            for n, t in zip(names, bodies):
                ids[n] = tokenize(dst, t)
                if full is not None:
                    same += tokenize(full, t) == ids[n]
            if full is not None and same != len(bodies):
                sys.exit(f"{name}: the cut vocabulary tokenizes {len(bodies) - same} texts differently from the full model")
            gz = OUT / f"{name}.vocab.gguf.gz"
            with open(dst, "rb") as fi, gzip.GzipFile(gz, "wb", mtime=0) as fo:
                fo.write(fi.read())
            meta = {"source": src.name, "tool": "llama-tokenize (llama-cpp-python 0.3.36)",
                    "flags": "--ids --log-disable --no-escape", "full_model_agrees": full is not None, "ids": ids}
            (OUT / f"{name}.ids.json").write_text(json.dumps(meta, ensure_ascii=False) + "\n", encoding="utf-8")
            print(f"{name}: {gz.stat().st_size} bytes gzipped, {len(bodies)} texts", file=sys.stderr)


if __name__ == "__main__":
    main()
