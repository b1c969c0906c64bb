#!/usr/bin/env bash
# Rebuild the built-in `ddpm-digits` model, its judge and the manifest shipped beside them
# (src/unlearnctl/assets/ddpm-digits/), then the sample grid and the quality numbers of docs/digits.md.
# These are the exact commands that produced the shipped files. CPU, one thread (recorded in the manifest).
#
#   bench/train_digits.sh [BUILD_DIR]      (default: runs/ddpm-digits-build; must not exist)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-runs/ddpm-digits-build}
UNLEARNCTL=${UNLEARNCTL:-unlearnctl}
PYTHON=${PYTHON:-python}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

# 1. the diffusion model: 6,000 AdamW steps of batch 64 on the 1,501 train images (EMA weights saved)
time "$UNLEARNCTL" train --dataset digits --out "$BUILD/train" --steps 6000 --seed 0 --device cpu
# 2. the judge: 40 epochs of a small CNN; accuracy on the 296 held-out test images in judge.json
time "$UNLEARNCTL" train-judge --dataset digits --out "$BUILD/judge" --seed 0
# 3. ship: the flat diffusers folder, the judge beside it, the manifest of the run that made it
ASSET=src/unlearnctl/assets/ddpm-digits
bench/ship_asset.sh "$BUILD/train" "$ASSET" "$BUILD/judge"
# 4. the 10-class grid of the README and the time of one `sample` call
"$UNLEARNCTL" sample --model ddpm-digits --num 100 --seed 0 --out "$BUILD/grid"
cp "$BUILD/grid/grid.png" docs/img/ddpm-digits-grid.png
time "$UNLEARNCTL" sample --model ddpm-digits --class 3 --num 64 --out "$BUILD/class3"
# 5. the quality bar: 100 samples per class, judged by the judge and by an independent SVC
"$PYTHON" bench/digits_quality.py --per-class 100 --seed 0 --json "$BUILD/quality.json"
