#!/usr/bin/env bash
# Runs every libFuzzer target in fuzz/ for SECONDS each (default 20), one after the
# other, starting from the committed seeds (fuzz/corpus/<target>) and a work corpus that
# persists in fuzz/target/work-corpus/<target>. Any crash, abort, leak, timeout (10 s
# per input) or allocation over 2 GiB fails the script; libFuzzer leaves the input in
# fuzz/artifacts/<target>/. Installs what it needs when missing: the nightly toolchain
# (minimal profile) and cargo-fuzz (--locked).
#
#   scripts/fuzz.sh            # CI: 20 s per target
#   scripts/fuzz.sh 600 gguf   # one target, 10 minutes
#   QEVO_FUZZ_KEEP_GOING=1 scripts/fuzz.sh 600   # campaigns: libFuzzer's fork mode
#       goes on after a crash, keeps every crashing input and counts them; the script
#       then reports instead of failing.
#
# Prints per target its execs and execs/s; libFuzzer's full log is in
# fuzz/target/fuzz-<target>.log. QEVO_FUZZ_TARGET_DIR moves the build (CI keeps it in
# ~/.cache so a second run only rebuilds what changed).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH="${1:-20}"
shift || true
TARGETS=("$@")
[[ ${#TARGETS[@]} -gt 0 ]] || TARGETS=(gguf safetensors config tokenizer profile plan checkpoint imatrix tune_checkpoint plan_rounding)

if ! rustup toolchain list | grep '^nightly' > /dev/null; then
    rustup toolchain install nightly --profile minimal
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

cd fuzz
TD=()
[[ -n "${QEVO_FUZZ_TARGET_DIR:-}" ]] && TD=(--target-dir "$QEVO_FUZZ_TARGET_DIR")
mkdir -p target
started=$(date +%s)
cargo +nightly fuzz build "${TD[@]}"
echo "fuzz build: $(($(date +%s) - started)) s" >&2
KEEP=()
[[ "${QEVO_FUZZ_KEEP_GOING:-0}" == 1 ]] &&
    KEEP=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
for t in "${TARGETS[@]}"; do
    work="target/work-corpus/$t"
    mkdir -p "$work"
    log="target/fuzz-$t.log"
    t0=$(date +%s)
    status=0
    cargo +nightly fuzz run "${TD[@]}" "$t" "$work" "corpus/$t" -- \
        -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -timeout=10 \
        -print_final_stats=1 "${KEEP[@]}" > "$log" 2>&1 || status=$?
    if [[ $status != 0 && ${#KEEP[@]} == 0 ]]; then
        # The panic or sanitizer report, not cargo-fuzz's Debug dump of the input.
        grep -v '^\s*$' "$log" | cut -c1-300 | grep -m1 -A30 'panicked\|ERROR' >&2 || tail -n 40 "$log" >&2
        echo "fuzz target $t FAILED (input in fuzz/artifacts/$t/)" >&2
        exit 1
    fi
    if [[ ${#KEEP[@]} -gt 0 ]]; then
        # Fork mode's status lines: "#EXECS: cov: .. exec/s: N oom/timeout/crash: a/b/c".
        last=$(grep -a '^#[0-9]*: cov:' "$log" | tail -n 1)
        execs=$(sed -n 's/^#\([0-9]*\):.*/\1/p' <<< "$last")
        found=$(grep -o 'oom/timeout/crash: [0-9/]*' <<< "$last" | grep -o '[0-9/]*$')
        took=$(($(date +%s) - t0))
        echo "fuzz $t: ${took} s, ${execs:-?} execs, $((${execs:-0} / (took > 0 ? took : 1))) execs/s, oom/timeout/crash ${found:-?}, inputs kept: $(ls "artifacts/$t" 2>/dev/null | wc -l)" >&2
        continue
    fi
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    echo "fuzz $t: ${SECONDS_EACH} s, $execs execs, $rate execs/s, no crash" >&2
done
echo "fuzzing: $(($(date +%s) - started)) s in all" >&2
