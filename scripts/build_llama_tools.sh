#!/usr/bin/env bash
# Builds llama.cpp's command-line tools (llama-tokenize, llama-quantize, llama-imatrix, llama-perplexity,
# llama-gguf-split) from the llama.cpp source that the llama-cpp-python sdist on PyPI vendors, and caches them
# outside the work tree. Tests use them as the reference implementation; they skip when the tools are absent.
#
#   scripts/build_llama_tools.sh          # prints the bin dir on its last line
#
# Cache: ${QEVO_LLAMA_TOOLS:-$HOME/.cache/qevo/llama-tools}/bin. A stamp file per sdist version makes a second
# run a no-op. Build choices:
#   - GGML_NATIVE=OFF with AVX/AVX2/FMA/F16C/AVX-512 named explicitly, so the binaries do not depend on which
#     CPU happened to build them;
#   - AMX OFF: AMX tile instructions crash on the machines this project runs on;
#   - no CURL (nothing is downloaded by the tools), Release, two jobs (the machines have two cores).
set -euo pipefail

# Pinned: llama-cpp-python 0.3.36 (PyPI sdist, 76.6 MB). `pip download --no-binary :all:` would build the
# package's metadata, which needs cmake/ninja built from source in an isolated env, so the sdist is fetched from
# PyPI's file host directly and checked against PyPI's sha256.
LLAMA_CPP_PYTHON_VERSION=0.3.36
SDIST_URL="https://files.pythonhosted.org/packages/ec/e9/e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz"
SDIST_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
ROOT="${QEVO_LLAMA_TOOLS:-$HOME/.cache/qevo/llama-tools}"
BIN="$ROOT/bin"
STAMP="$ROOT/stamp-llama-cpp-python-$LLAMA_CPP_PYTHON_VERSION"
TOOLS=(llama-tokenize llama-quantize llama-imatrix llama-perplexity llama-gguf-split)
JOBS="${QEVO_BUILD_JOBS:-2}"

if [[ -f "$STAMP" ]]; then
    echo "llama.cpp tools (llama-cpp-python $LLAMA_CPP_PYTHON_VERSION) already built" >&2
    echo "$BIN"
    exit 0
fi

if ! command -v cmake >/dev/null 2>&1; then
    echo "installing cmake" >&2
    SUDO=""
    [[ "$(id -u)" != 0 ]] && command -v sudo >/dev/null 2>&1 && SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq cmake >/dev/null
fi

WORK="$ROOT/src-$LLAMA_CPP_PYTHON_VERSION"
mkdir -p "$ROOT" "$BIN"
if [[ ! -d "$WORK/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION" ]]; then
    rm -rf "$WORK"
    mkdir -p "$WORK"
    SDIST="$WORK/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz"
    if [[ -n "${QEVO_LLAMA_SDIST:-}" ]]; then cp "$QEVO_LLAMA_SDIST" "$SDIST"; else curl -sSfL "$SDIST_URL" -o "$SDIST"; fi
    echo "$SDIST_SHA256  $SDIST" | sha256sum -c - >&2
    tar -xzf "$WORK/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz" -C "$WORK"
fi
SRC="$WORK/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION/vendor/llama.cpp"
BUILD="$WORK/build"

start=$(date +%s)
cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF \
    -DLLAMA_CURL=OFF \
    -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
    -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON \
    -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF \
    -DGGML_OPENMP=ON >&2
cmake --build "$BUILD" --config Release -j "$JOBS" --target "${TOOLS[@]}" >&2
for tool in "${TOOLS[@]}"; do
    install -m 755 "$BUILD/bin/$tool" "$BIN/$tool"
done
echo "llama-cpp-python $LLAMA_CPP_PYTHON_VERSION: built ${TOOLS[*]} in $(($(date +%s) - start)) s" >"$STAMP"
cat "$STAMP" >&2
echo "$BIN"
