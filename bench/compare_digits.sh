#!/usr/bin/env bash
# Make docs/img/compare-digits.png: three unlearning runs of the built-in ddpm-digits model forgetting
# class 2, each evaluated with `unlearnctl eval` (defaults), then `unlearnctl compare`.
#
#   bench/compare_digits.sh            # runs go to runs/compare-digits/ (kept between calls)
#   OUT=/tmp/cmp bench/compare_digits.sh
#
# A run or evaluation that already exists is reused, so an interrupted call can be resumed.
# On 2 shared CPU cores expect about 10 minutes per forget and 2 per eval; OMP_NUM_THREADS=1 helps when
# other jobs share the cores (see docs/eval.md).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-runs/compare-digits}
PLOT=${PLOT:-docs/img/compare-digits.png}
UNLEARNCTL=${UNLEARNCTL:-.venv/bin/unlearnctl}
CLASSES=${CLASSES:-2}
SEED=${SEED:-0}
mkdir -p "$OUT"

run() {
    local name=$1
    shift
    if [ ! -f "$OUT/$name/manifest.json" ]; then
        "$UNLEARNCTL" forget --model ddpm-digits --classes "$CLASSES" --seed "$SEED" --out "$OUT/$name" "$@"
    fi
    if [ ! -f "$OUT/$name/metrics.json" ]; then
        "$UNLEARNCTL" eval "$OUT/$name" --seed "$SEED"
    fi
}

# Options are spelled out, so that the runs stay what their names say when defaults change.
# 1. EraseDiff with the authors' fixed lambda = 0.1 (relabel erasure loss)
run erasediff-fixed --set lambda_rule=fixed
# 2. the BOME lambda rule
run erasediff-bome --set lambda_rule=bome
# 3. the uniform-noise erasure loss (paper v1), with Gaussian input corruption, BOME lambda
run erasediff-uniform --set lambda_rule=bome --set target=uniform --set corruption=gaussian

"$UNLEARNCTL" compare "$OUT/erasediff-fixed" "$OUT/erasediff-bome" "$OUT/erasediff-uniform" --plot "$PLOT" --overwrite
