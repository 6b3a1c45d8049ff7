#!/usr/bin/env bash
# Full-model check: qevo's perplexity against llama.cpp's `llama-perplexity` on the same
# text, context and chunk count (issue 10: within 1%); with EXPORT=1 (the default), the
# same check on qevo's own GGUF export of each model at uniform q8_0 and q4_k.
#
#   scripts/check_real_models.sh [MODEL.gguf ...]
#
# Defaults: the Gemma-3 270M Q4_K_M GGUF from scripts/fetch_models.sh, text
# assets/heldout.txt, CTX=512, CHUNKS=4, llama.cpp tools from scripts/build_llama_tools.sh
# (LLAMA_TOOLS, default $HOME/.cache/qevo/llama-tools/bin).
#
# qevo is fed the token ids `llama-tokenize` gives for the text (BOS included as the
# model asks), so the comparison measures the forward pass and dequantized weights, not
# the tokenizer. The GGUF is copied with its tokenizer.ggml.model key renamed, so that
# qevo loads it even where its own tokenizer for that model is not available.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS="${LLAMA_TOOLS:-$HOME/.cache/qevo/llama-tools/bin}"
MODELS_DIR="${QEVO_MODELS:-$HOME/.cache/qevo/models}"
TEXT="${TEXT:-assets/heldout.txt}"
CTX="${CTX:-512}"
CHUNKS="${CHUNKS:-4}"
THREADS="${THREADS:-2}"
# EXPORT=1 also checks qevo's GGUF exports of each model (uniform q8_0 and q4_k).
EXPORT="${EXPORT:-1}"
if [[ $# -eq 0 ]]; then
    set -- "$MODELS_DIR/gemma-3-270m-q4_k_m.gguf"
fi
for tool in llama-perplexity llama-tokenize; do
    if [[ ! -x "$TOOLS/$tool" ]]; then
        echo "skipped: $TOOLS/$tool not found (run scripts/build_llama_tools.sh)" >&2
        exit 0
    fi
done

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
# One model file: llama-perplexity's figure, then qevo's on llama.cpp's token ids.
check_one() {
    local MODEL="$1" name llama_ppl
    name="$(basename "$MODEL")"
    "$TOOLS/llama-perplexity" -m "$MODEL" -f "$TEXT" -c "$CTX" --chunks "$CHUNKS" -t "$THREADS" \
        >"$TMP/$name.ppl.log" 2>&1
    llama_ppl="$(grep -o 'Final estimate: PPL = [0-9.]*' "$TMP/$name.ppl.log" | awk '{print $NF}')"
    "$TOOLS/llama-tokenize" -m "$MODEL" -f "$TEXT" --ids --log-disable 2>/dev/null | tail -n 1 >"$TMP/$name.ids"
    python3 - "$MODEL" "$TMP/$name" <<'PY'
import sys
src, dst = sys.argv[1], sys.argv[2]
data = open(src, "rb").read()
key = b"tokenizer.ggml.model"
n = data.count(key)
assert n == 1, f"{key} occurs {n} times"
open(dst, "wb").write(data.replace(key, b"tokenizer.ggml.xodel"))
PY
    echo "== $name: llama-perplexity -c $CTX --chunks $CHUNKS: PPL $llama_ppl"
    QEVO_REAL_GGUF="$TMP/$name" QEVO_PPL_IDS="$TMP/$name.ids" QEVO_PPL_CTX="$CTX" \
        QEVO_PPL_CHUNKS="$CHUNKS" QEVO_LLAMA_PPL="$llama_ppl" \
        cargo test --release --workspace --test real_models real_gguf_perplexity -- --ignored --nocapture
    rm -f "$TMP/$name"
}

for MODEL in "$@"; do
    if [[ ! -f "$MODEL" ]]; then
        echo "skipped: $MODEL not found (run scripts/fetch_models.sh)" >&2
        continue
    fi
    check_one "$MODEL"
    if [[ "$EXPORT" == 1 ]]; then
        # qevo's GGUF export of the model (uniform q8_0 and q4_k) through the same check:
        # llama.cpp loads what qevo writes and computes what qevo computes.
        mkdir -p "$TMP/export"
        QEVO_EXPORT_SRC="$MODEL" QEVO_EXPORT_DIR="$TMP/export" \
            cargo test --release --workspace --test real_models real_gguf_export -- --ignored --nocapture
        for OUT in "$TMP/export/"*.gguf; do
            check_one "$OUT"
        done
        rm -rf "$TMP/export"
    fi
done
