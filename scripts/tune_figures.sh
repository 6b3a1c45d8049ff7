#!/usr/bin/env bash
# Issue 13's figures: what `qevo tune` gains, as qevo and as llama.cpp measure it.
#
#   scripts/tune_figures.sh                          # SmolLM2-135M (scripts/fetch_models.sh smollm2)
#   QEVO_TUNE_MODEL=embedded scripts/tune_figures.sh # the embedded model
#
# For each plan (uniform q4_0, q3_k, q2_k, and the recommended plan of a short search):
#   - qevo's KL on the calibration windows it trains on and on held-out windows (assets/heldout.txt),
#     before and after tuning (`qevo tune`, which scores the block bytes it writes);
#   - llama.cpp's KLD of the untuned export (`qevo export`) and of the tuned GGUF (`qevo tune`) against
#     the f16 base: `llama-perplexity --kl-divergence`, 8 chunks x 512 tokens of assets/heldout.txt
#     (chunks of 128 for the embedded model, whose positions stop at 256);
#   - seconds per step and the peak resident memory of the tune run (/usr/bin/time).
# The base is f16 for both sides: qevo tunes the f16 GGUF that llama.cpp's base logits come from.
#
# Env: QEVO_TUNE_STEPS (60), QEVO_TUNE_WINDOWS (calibration windows, 64), QEVO_TUNE_PLANS
# ("q4_0 q3_k q2_k search"), QEVO_TUNE_ARGS (more `qevo tune` flags), QEVO_GENERATIONS / QEVO_POPULATION
# for the search (4 / 12). Work dir: ${QEVO_BENCH:-$HOME/.cache/qevo/bench}/tune[-embedded]; finished
# stages are reused. Prints a markdown table and writes it to table.md there.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${QEVO_LLAMA_BIN:-$HOME/.cache/qevo/llama-tools/bin}"
QEVO="${QEVO_BIN:-$ROOT/target/release/qevo}"
SRC="${QEVO_TUNE_MODEL:-${QEVO_MODELS:-$HOME/.cache/qevo/models}/SmolLM2-135M-Instruct.Q4_1.gguf}"
W="${QEVO_BENCH:-$HOME/.cache/qevo/bench}/tune"
STEPS="${QEVO_TUNE_STEPS:-60}"
WINDOWS="${QEVO_TUNE_WINDOWS:-64}"
PLANS="${QEVO_TUNE_PLANS:-q4_0 q3_k q2_k search}"
ARGS="${QEVO_TUNE_ARGS:-}"
CTX=512
CHUNKS=8
if [[ "$SRC" == embedded ]]; then
    W="$W-embedded"
    CTX=128
    CHUNKS=16
fi
CALIB="$ROOT/assets/calib.txt"
EVAL="$ROOT/assets/heldout.txt"
mkdir -p "$W"
cd "$W"
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

# A plan file with every quantizable tensor of base-f16.gguf in one format.
uniform_plan() {
    "$QEVO" inspect base-f16.gguf | awk '$1 ~ /weight$/ {print $1}' | python3 -c '
import json, sys
names = [l.strip() for l in sys.stdin if l.strip()]
json.dump({"entries": [[n, {"format": sys.argv[1], "act_bits": 16}] for n in names]}, open(sys.argv[2], "w"))' "$1" "$2"
}

if [[ ! -f base-f16.gguf ]]; then
    log "f16 base"
    if [[ "$SRC" == embedded ]]; then
        "$QEVO" inspect | awk '$1 ~ /weight$/ {print $1}' | python3 -c '
import json, sys
names = [l.strip() for l in sys.stdin if l.strip()]
json.dump({"entries": [[n, {"format": "f16", "act_bits": 16}] for n in names]}, open("f16-plan.json", "w"))'
        "$QEVO" export --plan f16-plan.json --out base-f16.gguf >export-f16.log 2>&1
    else
        "$BIN/llama-quantize" --allow-requantize "$SRC" base-f16.gguf F16 >quantize-f16.log 2>&1
    fi
fi
[[ -f base.kld ]] || {
    log "base logits"
    "$BIN/llama-perplexity" -m base-f16.gguf -f "$EVAL" -c $CTX --chunks $CHUNKS -t 2 --kl-divergence-base base.kld >base.log 2>&1
}

# llama-perplexity --kl-divergence of FILE against the base: "KLD same-top-p".
kld() {
    local out="$1.kld.log"
    [[ -f "$out" ]] || "$BIN/llama-perplexity" -m "$1" -c $CTX --chunks $CHUNKS -t 2 --kl-divergence-base base.kld --kl-divergence >"$out" 2>&1
    echo "$(grep -E "^Mean +KLD:" "$out" | awk '{print $3}') $(grep -E "^Same top p:" "$out" | awk '{print $4}')"
}

rows=()
for p in $PLANS; do
    if [[ "$p" == search ]]; then
        [[ -f search/plan.json ]] || {
            log "search (unit role)"
            "$QEVO" search base-f16.gguf --unit role --generations "${QEVO_GENERATIONS:-4}" \
                --population "${QEVO_POPULATION:-12}" --act-bits 16 --out search >search.log 2>&1 || true
        }
        cp search/plan.json plan-search.json
    else
        [[ -f "plan-$p.json" ]] || uniform_plan "$p" "plan-$p.json"
    fi
    [[ -f "untuned-$p.gguf" ]] || "$QEVO" export base-f16.gguf --plan "plan-$p.json" --out "untuned-$p.gguf" >"export-$p.log" 2>&1
    if [[ ! -f "tune-$p/tune.json" ]]; then
        log "tune $p ($STEPS steps)"
        # shellcheck disable=SC2086
        /usr/bin/time -v "$QEVO" tune base-f16.gguf --plan "plan-$p.json" --text "$CALIB" --heldout "$EVAL" \
            --steps "$STEPS" --windows "$WINDOWS" --checkpoint-every 20 --out "tune-$p" $ARGS >"tune-$p.log" 2>&1
    fi
    read -r k0 p0 <<<"$(kld "untuned-$p.gguf")"
    read -r k1 p1 <<<"$(kld "tune-$p/model.gguf")"
    rss=$(grep "Maximum resident" "tune-$p.log" | awk '{printf "%.2f", $6 / 1048576}')
    row=$(python3 - "$p" "tune-$p/tune.json" "$k0" "$k1" "$p0" "$p1" "$rss" "untuned-$p.gguf" <<'EOF'
import json, os, sys
p, path, k0, k1, p0, p1, rss, gguf = sys.argv[1:]
t = json.load(open(path))
b, a = t["before"], t["after"]
steps = len(t["history"])
sps = sum(r["seconds"] for r in t["history"]) / max(steps, 1)
gain = lambda x, y: 100 * (x - y) / x
cal = gain(b["calibration"]["kl"], a["calibration"]["kl"])
held = gain(b["heldout"]["kl"], a["heldout"]["kl"])
print(f"| {p} | {os.path.getsize(gguf):,} | {b['calibration']['kl']:.5f} → {a['calibration']['kl']:.5f} ({-cal:+.1f}%) "
      f"| {b['heldout']['kl']:.5f} → {a['heldout']['kl']:.5f} ({-held:+.1f}%) | {held / cal if cal else 0:.2f} "
      f"| {float(k0):.5f} → {float(k1):.5f} ({100 * (float(k1) - float(k0)) / float(k0):+.1f}%) | {p0} → {p1} "
      f"| {steps} | {sps:.2f} | {t['seconds']:.0f} | {rss} |")
EOF
)
    rows+=("$row")
done

{
    echo "model: $SRC; tune: $STEPS steps, $WINDOWS calibration windows of 128 (assets/calib.txt), batch 4, $ARGS"
    echo "held-out: qevo 8 windows of 128; llama.cpp $CHUNKS chunks x $CTX of assets/heldout.txt against the f16 base"
    echo
    echo "| plan | GGUF bytes | qevo calibration KL | qevo held-out KL | held-out / calibration gain | llama.cpp KLD | same top-p % | steps | s/step | tune s | peak GB |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|"
    printf '%s\n' "${rows[@]}"
} | tee table.md
