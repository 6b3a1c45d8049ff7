#!/usr/bin/env bash
# Builds llama.cpp's command-line tools (llama-tokenize, llama-quantize, llama-imatrix, llama-perplexity,
# llama-gguf-split) from the llama.cpp source that the llama-cpp-python sdist on PyPI vendors, and caches them
# outside the work tree. Tests use them as the reference implementation; they skip when the tools are absent.
#
#   scripts/build_llama_tools.sh                  # prints the bin dir on its last line
#   scripts/build_llama_tools.sh --print-config   # prints the cache key and the CPU options, builds nothing
#
# Cache: ${QEVO_LLAMA_TOOLS:-$HOME/.cache/qevo/llama-tools}/<cpu key>/bin, one build per set of CPU features, and
# ROOT/bin, a link to this machine's build (where the tests and scripts look). A stamp file per sdist version and
# key makes a second run on the same kind of CPU a no-op. Build choices:
#   - GGML_NATIVE=OFF with the x86 features this CPU has named explicitly (read from /proc/cpuinfo's flags, or
#     $QEVO_CPU_FLAGS): machines of this kind differ (Intel with AVX-512, AMD EPYC with AVX2 only), and a binary
#     built for features the CPU lacks dies with SIGILL. The key names the features, so a cache directory shared
#     by two kinds of machine holds one build for each. Other architectures build with GGML_NATIVE=ON, keyed by
#     the machine name and a hash of the CPU's feature line;
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
TOOLS=(llama-tokenize llama-quantize llama-imatrix llama-perplexity llama-gguf-split)
JOBS="${QEVO_BUILD_JOBS:-2}"

# The CPU's feature flags, one line (x86: /proc/cpuinfo's "flags"; Arm: its "Features").
cpu_flags() {
    if [[ -n "${QEVO_CPU_FLAGS:-}" ]]; then
        echo "$QEVO_CPU_FLAGS"
    else
        grep -m1 -E '^(flags|Features)[[:space:]]*:' /proc/cpuinfo 2>/dev/null | cut -d: -f2 || true
    fi
}

# Sets CPU_KEY and CPU_OPTS (cmake -D options) from the flags: on x86-64 each GGML instruction-set option is ON
# exactly when the CPU has every feature it compiles for (ggml's AVX512 option uses F, CD, VL, DQ and BW).
cpu_config() {
    local flags=" $(cpu_flags) " arch
    arch="${QEVO_CPU_ARCH:-$(uname -m)}"
    has() { local f; for f in "$@"; do [[ "$flags" == *" $f "* ]] || return 1; done; }
    if [[ "$arch" != x86_64 ]]; then
        CPU_OPTS=(-DGGML_NATIVE=ON)
        CPU_KEY="$arch-native-$(echo "$flags" | sha256sum | cut -c1-12)"
        return
    fi
    local -a table=(
        "SSE42:sse4_2" "AVX:avx" "AVX2:avx2" "BMI2:bmi2" "FMA:fma" "F16C:f16c" "AVX_VNNI:avx_vnni"
        "AVX512:avx512f avx512cd avx512vl avx512dq avx512bw"
        "AVX512_VBMI:avx512f avx512vbmi" "AVX512_VNNI:avx512f avx512_vnni" "AVX512_BF16:avx512f avx512_bf16"
    )
    local row opt on=()
    CPU_OPTS=(-DGGML_NATIVE=OFF)
    for row in "${table[@]}"; do
        opt="${row%%:*}"
        # shellcheck disable=SC2086  # the feature list is meant to split into words
        if has ${row#*:}; then
            CPU_OPTS+=("-DGGML_$opt=ON")
            on+=("$(echo "$opt" | tr '[:upper:]' '[:lower:]')")
        else
            CPU_OPTS+=("-DGGML_$opt=OFF")
        fi
    done
    CPU_KEY="x86_64"
    [[ ${#on[@]} -gt 0 ]] && CPU_KEY+="$(printf -- '-%s' "${on[@]}")"
    return 0
}

cpu_config
if [[ "${1:-}" == --print-config ]]; then
    echo "key: $CPU_KEY"
    echo "cmake: ${CPU_OPTS[*]}"
    exit 0
fi

BUILT="$ROOT/$CPU_KEY"
BIN="$BUILT/bin"
STAMP="$BUILT/stamp-llama-cpp-python-$LLAMA_CPP_PYTHON_VERSION"

# ROOT/bin points at this machine's build. An older cache held the one build there as a directory (with
# AVX-512 on whatever the CPU), so that directory, its stamp and its build tree go.
link_bin() {
    if [[ -d "$ROOT/bin" && ! -L "$ROOT/bin" ]]; then
        rm -rf "$ROOT/bin" "$ROOT/stamp-llama-cpp-python-"* "$ROOT/src-$LLAMA_CPP_PYTHON_VERSION/build"
    fi
    ln -sfn "$CPU_KEY/bin" "$ROOT/bin"
}

if [[ -f "$STAMP" ]]; then
    echo "llama.cpp tools (llama-cpp-python $LLAMA_CPP_PYTHON_VERSION, $CPU_KEY) already built" >&2
    link_bin
    echo "$ROOT/bin"
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
BUILD="$BUILT/build"

start=$(date +%s)
cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF \
    -DLLAMA_CURL=OFF \
    "${CPU_OPTS[@]}" \
    -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF \
    -DGGML_OPENMP=ON >&2
cmake --build "$BUILD" --config Release -j "$JOBS" --target "${TOOLS[@]}" >&2
for tool in "${TOOLS[@]}"; do
    install -m 755 "$BUILD/bin/$tool" "$BIN/$tool"
done
echo "llama-cpp-python $LLAMA_CPP_PYTHON_VERSION ($CPU_KEY): built ${TOOLS[*]} in $(($(date +%s) - start)) s" >"$STAMP"
cat "$STAMP" >&2
link_bin
echo "$ROOT/bin"
