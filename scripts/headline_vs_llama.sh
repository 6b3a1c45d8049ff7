#!/usr/bin/env bash
# The headline figure (issue 12): qevo's best GGUF at <= the size of llama.cpp's own imatrix quants
# (Q4_K_M, Q3_K_M, Q2_K), both scored by the same `llama-perplexity --kl-divergence` run settings
# (8 chunks x 512 tokens of held-out text, base logits from the f16 model).
#
#   scripts/headline_vs_llama.sh                 # SmolLM2-135M (scripts/fetch_models.sh smollm2)
#   QEVO_HEADLINE_MODEL=embedded scripts/headline_vs_llama.sh   # qevo's embedded model (trained in f32)
#   QEVO_SEARCH_ARGS="--rounding output" scripts/headline_vs_llama.sh
#   QEVO_PER_SIZE=1 QEVO_TUNE_ARGS="--sub-scales --seq-len 512" scripts/headline_vs_llama.sh
#       # per-size plans, then `qevo tune` of each (150 steps, 100 windows, the same imatrix,
#       # plus these flags): the tuned GGUF is scored too
#
# Inputs: for the embedded model (a real model trained by scripts/train_default_model.py, stored in
# f16, on no quantization grid) the f16 base is qevo's own f16 GGUF export of it. For SmolLM2 the f16 base
# is llama-quantize's F16 of the published SmolLM2-135M-Instruct Q4_1 GGUF (the
# only small llama-family GGUF in the registries; its weights therefore sit on a Q4_1 grid). Calibration
# is assets/calib.txt, evaluation assets/heldout.txt: different Wikipedia documents. The importance matrix
# is llama-imatrix's on the calibration text; qevo scores and exports with that same file.
#
# qevo picks, for each llama.cpp file, the front plan with the lowest *calibration* KL whose exported
# file is no larger (never selected on the held-out text the KLD is measured on).
#
# Work dir: ${QEVO_BENCH:-$HOME/.cache/qevo/bench}/headline (stages already done are reused; delete it
# to start over). Prints a markdown table and writes it to table.md there.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${QEVO_LLAMA_BIN:-$HOME/.cache/qevo/llama-tools/bin}"
QEVO="${QEVO_BIN:-$ROOT/target/release/qevo}"
SRC="${QEVO_HEADLINE_MODEL:-${QEVO_MODELS:-$HOME/.cache/qevo/models}/SmolLM2-135M-Instruct.Q4_1.gguf}"
W="${QEVO_BENCH:-$HOME/.cache/qevo/bench}/headline"
[[ "$SRC" == embedded ]] && W="$W-embedded"
CALIB="$ROOT/assets/calib.txt"
EVAL="$ROOT/assets/heldout.txt"
GENS="${QEVO_GENERATIONS:-12}"
POP="${QEVO_POPULATION:-24}"
SEARCH_ARGS="${QEVO_SEARCH_ARGS:-}"
QUANTS="${QEVO_QUANTS:-Q4_K_M Q3_K_M Q2_K}"
mkdir -p "$W"
cd "$W"
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

if [[ ! -f base-f16.gguf && "$SRC" == embedded ]]; then
    log "f16 base (qevo export of the embedded model, every matrix f16)"
    "$QEVO" inspect | awk '$1 ~ /weight$/ {print $1}' | python3 -c '
import json, sys
names = [l.strip() for l in sys.stdin if l.strip()]
json.dump({"entries": [[n, {"format": "f16", "act_bits": 16}] for n in names]}, open("f16-plan.json", "w"))'
    "$QEVO" export --plan f16-plan.json --out base-f16.gguf >export-f16.log 2>&1
fi
[[ -f base-f16.gguf ]] || { log "f16 base"; "$BIN/llama-quantize" --allow-requantize "$SRC" base-f16.gguf F16 >quantize-f16.log 2>&1; }
[[ -f imatrix.gguf ]] || {
    log "llama-imatrix on the calibration text"
    "$BIN/llama-imatrix" -m base-f16.gguf -f "$CALIB" -c 512 -o imatrix.gguf -t 2 >imatrix.log 2>&1
}
[[ -f base.kld ]] || {
    log "base logits"
    "$BIN/llama-perplexity" -m base-f16.gguf -f "$EVAL" -c 512 --chunks 8 -t 2 --kl-divergence-base base.kld >base.log 2>&1
}

# llama-perplexity --kl-divergence of FILE against the base: "KLD same-top-p" on one line.
kld() {
    local out="$1.kld.log"
    [[ -f "$out" ]] || "$BIN/llama-perplexity" -m "$1" -c 512 --chunks 8 -t 2 --kl-divergence-base base.kld --kl-divergence >"$out" 2>&1
    local k p
    k=$(grep -E "^Mean +KLD:" "$out" | awk '{print $3}')
    p=$(grep -E "^Same top p:" "$out" | awk '{print $4}')
    echo "$k $p"
}

for q in $QUANTS; do
    [[ -f "llama-$q.gguf" ]] || {
        log "llama-quantize --imatrix $q"
        "$BIN/llama-quantize" --imatrix imatrix.gguf base-f16.gguf "llama-$q.gguf" "$q" 2 >"llama-$q.log" 2>&1
    }
done

# QEVO_PER_SIZE=1: instead of one search whose front is cut at each size, one search per llama.cpp
# file with --max-size-mb at that file's tensor budget and accuracy-only fitness weights, exporting
# the recommended plan (the product's own answer to "the best plan within this limit").
if [[ "${QEVO_PER_SIZE:-0}" == 1 ]]; then
    # Bytes of the file that are not planned tensors (header, vocabulary, f32 norms), from qevo's
    # f16 export of the base (embedded model) or, for a GGUF base, from an f16 export made here.
    [[ -f export-f16.log ]] || {
        "$QEVO" inspect base-f16.gguf | awk '$1 ~ /weight$/ {print $1}' | python3 -c '
import json, sys
names = [l.strip() for l in sys.stdin if l.strip()]
json.dump({"entries": [[n, {"format": "f16", "act_bits": 16}] for n in names]}, open("f16-plan.json", "w"))'
        "$QEVO" export --plan f16-plan.json base-f16.gguf --out probe-f16.gguf >export-f16.log 2>&1
    }
    overhead=$(python3 -c "
import re; t = open('export-f16.log').read()
print(int(re.search(r'wrote .* \((\d+) bytes\)', t).group(1)) - int(re.search(r'planned tensors: (\d+) bytes', t).group(1)))")
    table="| llama.cpp file | size (bytes) | KLD | same top-p | qevo file (--max-size-mb) | size (bytes) | KLD | same top-p | qevo KL (search, calib) | ratio | search s |"
    table+=$'\n'"|---|---|---|---|---|---|---|---|---|---|---|"
    for q in $QUANTS; do
        lsize=$(stat -c %s "llama-$q.gguf")
        read -r lk lp < <(kld "llama-$q.gguf")
        mb=$(python3 -c "print(f'{($lsize - $overhead - 4096) / 1e6:.6f}')")
        d="persize-$q${SEARCH_ARGS// /}"
        if [[ ! -f "$d/plan.json" ]]; then
            log "qevo search at <= $mb MB for $q ($POP x $GENS, $SEARCH_ARGS)"
            start=$(date +%s)
            # shellcheck disable=SC2086
            "$QEVO" search base-f16.gguf --text "$CALIB" --heldout "$EVAL" --imatrix-file imatrix.gguf \
                --population "$POP" --generations "$GENS" --no-baselines --max-size-mb "$mb" --weights 1,0,0,0 \
                --out "$d" $SEARCH_ARGS >"$d.log" 2>&1
            echo $(($(date +%s) - start)) >"$d/seconds"
        fi
        f="qevo-$d.gguf"
        [[ -f "$f" ]] || "$QEVO" export --plan "$d/plan.json" base-f16.gguf --out "$f" >"$f.log" 2>&1
        read -r qk qp < <(kld "$f")
        kl=$(python3 -c "import json; print(json.load(open('$d/plan.json'))['metrics']['kl'])")
        ratio=$(python3 -c "print(f'{$qk/$lk:.3f}')")
        table+=$'\n'"| $q | $lsize | $lk | $lp | $f ($mb) | $(stat -c %s "$f") | $qk | $qp | $kl | $ratio | $(cat "$d/seconds") |"
        if [[ -n "${QEVO_TUNE_ARGS:-}" ]]; then
            # The same plan after `qevo tune` (its size is the plan's; the tuned calibration
            # KL is on tune's own windows).
            t="tuned-$d${QEVO_TUNE_ARGS// /}"
            [[ -f "$t/model.gguf" ]] || {
                log "qevo tune $d ($QEVO_TUNE_ARGS)"
                # shellcheck disable=SC2086
                "$QEVO" tune base-f16.gguf --plan "$d/plan.json" --text "$CALIB" --heldout "$EVAL" \
                    --imatrix-file imatrix.gguf --steps 150 --windows 100 --out "$t" $QEVO_TUNE_ARGS >"$t.log" 2>&1
            }
            read -r tk tp < <(kld "$t/model.gguf")
            tkl=$(python3 -c "import json; print(json.load(open('$t/tune.json'))['after']['calibration']['kl'])")
            tratio=$(python3 -c "print(f'{$tk/$lk:.3f}')")
            table+=$'\n'"| $q | $lsize | $lk | $lp | $t/model.gguf | $(stat -c %s "$t/model.gguf") | $tk | $tp | $tkl (tune) | $tratio | |"
        fi
    done
    echo "$table" | tee "table-persize${SEARCH_ARGS// /}${QEVO_TUNE_ARGS// /}.md"
    exit 0
fi

SEARCH_DIR="search${SEARCH_ARGS// /}"
if [[ ! -f "$SEARCH_DIR/front.json" ]]; then
    log "qevo search ($POP x $GENS, $SEARCH_ARGS)"
    start=$(date +%s)
    # shellcheck disable=SC2086
    "$QEVO" search base-f16.gguf --text "$CALIB" --heldout "$EVAL" --imatrix-file imatrix.gguf \
        --population "$POP" --generations "$GENS" --no-baselines --out "$SEARCH_DIR" $SEARCH_ARGS >"$SEARCH_DIR.log" 2>&1
    echo $(($(date +%s) - start)) >"$SEARCH_DIR/seconds"
fi
secs=$(cat "$SEARCH_DIR/seconds")

# Front entries by calibration KL, as "index kl size_bytes".
python3 - "$SEARCH_DIR/front.json" >"$SEARCH_DIR/order.txt" <<'EOF'
import json, sys
front = json.load(open(sys.argv[1]))
for i, e in sorted(enumerate(front), key=lambda p: p[1]["metrics"]["kl"]):
    print(i, e["metrics"]["kl"], e["metrics"]["size_bytes"])
EOF

pick_plan() { # FRONT INDEX OUT: one front entry as a plan file
    python3 - "$1" "$2" "$3" <<'EOF'
import json, sys
front = json.load(open(sys.argv[1]))
json.dump(front[int(sys.argv[2])], open(sys.argv[3], "w"))
EOF
}

table="| llama.cpp file | size (bytes) | KLD | same top-p | qevo file | size (bytes) | KLD | same top-p | qevo KL (search, calib) | ratio |"
table+=$'\n'"|---|---|---|---|---|---|---|---|---|---|"
for q in $QUANTS; do
    lsize=$(stat -c %s "llama-$q.gguf")
    read -r lk lp < <(kld "llama-$q.gguf")
    best=""
    while read -r idx kl size; do
        ((size < lsize)) || continue
        f="qevo-$SEARCH_DIR-$idx.gguf"
        [[ -f "$f" ]] || {
            pick_plan "$SEARCH_DIR/front.json" "$idx" "$SEARCH_DIR/plan-$idx.json"
            "$QEVO" export --plan "$SEARCH_DIR/plan-$idx.json" base-f16.gguf --out "$f" >"$f.log" 2>&1
        }
        if (($(stat -c %s "$f") <= lsize)); then best="$idx $kl $f"; break; fi
    done <"$SEARCH_DIR/order.txt"
    if [[ -z "$best" ]]; then
        table+=$'\n'"| $q | $lsize | $lk | $lp | (no front plan fits) | | | | | |"
        continue
    fi
    read -r idx kl f <<<"$best"
    read -r qk qp < <(kld "$f")
    ratio=$(python3 -c "print(f'{$qk/$lk:.3f}')")
    table+=$'\n'"| $q | $lsize | $lk | $lp | $f | $(stat -c %s "$f") | $qk | $qp | $kl | $ratio |"
done
{
    echo "$table"
    echo
    echo "search: population $POP, $(wc -l <"$SEARCH_DIR/history.jsonl") generations incl. 0, args '$SEARCH_ARGS', ${secs} s wall; KLD: llama-perplexity --kl-divergence, 8 x 512 tokens of assets/heldout.txt"
} | tee "table-$SEARCH_DIR.md"
