#!/usr/bin/env bash
# Writes the fuzz seed corpora, fuzz/corpus/<target>/seed-*, from the committed tiny
# fixtures, the built-in profiles, and outputs of the `qevo` binary on the tiny llama
# fixture (a search checkpoint and plans, a GGUF export,
# an imatrix). Run from the repository root after `cargo build --release -p qevo-cli`.
# The first byte of a safetensors, config or plan seed is the target's mode selector
# (see the target's doc comment).
set -euo pipefail
cd "$(dirname "$0")/.."
QEVO=${QEVO:-target/release/qevo}
FX=crates/qevo/tests/fixtures
C=fuzz/corpus
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
rm -rf "$C"
mkdir -p "$C"/{gguf,safetensors,config,tokenizer,profile,plan,checkpoint,imatrix}

# prefix BYTE SRC DST: DST is SRC with the selector byte BYTE (decimal) in front.
prefix() { { printf "\\$(printf '%03o' "$1")"; cat "$2"; } > "$3"; }

export QEVO_CACHE_DIR="$TMP/cache"
TL=$FX/tiny_llama
"$QEVO" search "$TL" --target arm-neon --out "$TMP/s" --population 4 --seq-len 16 \
  --calib-windows 2 --screen-windows 1 --heldout-windows 2 --generations 1 > /dev/null 2>&1
"$QEVO" imatrix "$TL" --ctx 16 --chunks 2 --out "$TMP/im.gguf" > /dev/null
"$QEVO" export "$TL" --plan "$TMP/s/plan.json" --out "$TMP/q.gguf" > /dev/null
python3 - "$TMP" <<'PY'
import json, struct, sys
tmp = sys.argv[1]
plan = json.load(open(f"{tmp}/s/plan.json"))
ints = ["int4-asym-g32", "int8-sym-channel", "int3-pow2-g32", "f16", "q4_k"]
bare = {"entries": [[t["name"], {"format": ints[i % len(ints)], "act_bits": 16}]
                    for i, t in enumerate(plan["tensors"])]}
json.dump(bare, open(f"{tmp}/int_plan.json", "w"))
# llama.cpp's legacy imatrix: entry count, then per entry name, ncall, values; then
# the last chunk and the dataset name.
with open(f"{tmp}/legacy.imatrix", "wb") as f:
    f.write(struct.pack("<i", 2))
    for name, n in [("blk.0.attn_q.weight", 32), ("blk.0.ffn_down.weight", 8)]:
        b = name.encode()
        f.write(struct.pack("<i", len(b)) + b + struct.pack("<ii", 1, n))
        f.write(struct.pack(f"<{n}f", *[0.5 + i for i in range(n)]))
    f.write(struct.pack("<i", 1) + struct.pack("<i", 4) + b"calb")
PY

cp "$TMP/q.gguf" "$C/gguf/seed-tiny_llama_mixed.gguf"
cp "$TMP/im.gguf" "$C/gguf/seed-imatrix.gguf"
head -c 4096 "$TL/tiny_llama.gguf" > "$C/gguf/seed-tiny_llama_head.gguf"

prefix 0 "$TL/model.safetensors" "$C/safetensors/seed-single"
printf '\001{"metadata":{},"weight_map":{"model.embed_tokens.weight":"model-00001-of-00001.safetensors"}}' \
  > "$C/safetensors/seed-index"

i=0
for m in tiny_llama tiny_qwen2 tiny_gemma3 tiny_phi3 tiny_gpt2 tiny_bert; do
  prefix $i "$FX/$m/config.json" "$C/config/seed-$m"
  i=$((i + 1))
done

cp "$TL/tokenizer.json" "$C/tokenizer/seed-tiny_bpe.json"
# The other model kinds tokenizers reads, each as small as it comes.
cat > "$C/tokenizer/seed-wordpiece.json" <<'JSON'
{"version":"1.0","truncation":null,"padding":null,"added_tokens":[{"id":0,"content":"[UNK]","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}],"normalizer":{"type":"BertNormalizer","clean_text":true,"handle_chinese_chars":true,"strip_accents":null,"lowercase":true},"pre_tokenizer":{"type":"BertPreTokenizer"},"post_processor":null,"decoder":{"type":"WordPiece","prefix":"##","cleanup":true},"model":{"type":"WordPiece","unk_token":"[UNK]","continuing_subword_prefix":"##","max_input_chars_per_word":100,"vocab":{"[UNK]":0,"hello":1,"world":2,"##s":3,",":4}}}
JSON
cat > "$C/tokenizer/seed-unigram.json" <<'JSON'
{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":{"type":"NFKC"},"pre_tokenizer":{"type":"Metaspace","replacement":"\u2581","prepend_scheme":"always","split":true},"post_processor":null,"decoder":{"type":"Metaspace","replacement":"\u2581","prepend_scheme":"always","split":true},"model":{"type":"Unigram","unk_id":0,"vocab":[["<unk>",0.0],["\u2581hello",-1.0],["\u2581world",-1.5],["o",-3.0],["l",-3.0]],"byte_fallback":false}}
JSON
cat > "$C/tokenizer/seed-wordlevel.json" <<'JSON'
{"version":"1.0","truncation":{"direction":"Right","max_length":8,"strategy":"LongestFirst","stride":0},"padding":{"strategy":"BatchLongest","direction":"Right","pad_to_multiple_of":null,"pad_id":0,"pad_type_id":0,"pad_token":"<pad>"},"added_tokens":[],"normalizer":null,"pre_tokenizer":{"type":"Whitespace"},"post_processor":{"type":"TemplateProcessing","single":[{"Sequence":{"id":"A","type_id":0}}],"pair":[{"Sequence":{"id":"A","type_id":0}},{"Sequence":{"id":"B","type_id":1}}],"special_tokens":{}},"decoder":null,"model":{"type":"WordLevel","vocab":{"<unk>":0,"<pad>":1,"hello":2,"world":3},"unk_token":"<unk>"}}
JSON

for p in profiles/*.toml; do cp "$p" "$C/profile/seed-$(basename "$p")"; done

prefix 0 "$TMP/s/plan.json" "$C/plan/seed-plan.json"
prefix 1 "$TMP/s/plan.yaml" "$C/plan/seed-plan.yaml"
prefix 0 "$TMP/int_plan.json" "$C/plan/seed-bare_int_plan.json"

cp "$TMP/s/checkpoint.json" "$C/checkpoint/seed-tiny_llama_gen1.json"

cp "$TMP/im.gguf" "$C/imatrix/seed-tiny_llama.gguf"
cp "$TMP/legacy.imatrix" "$C/imatrix/seed-legacy.dat"
du -sh "$C"/*
