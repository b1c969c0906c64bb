#!/usr/bin/env bash
# Rebuild the built-in `ddpm-digits-uncond` model (src/unlearnctl/assets/ddpm-digits-uncond/): the same
# recipe as `ddpm-digits` (bench/train_digits.sh) with an unconditional UNet, on all ten digits. Its judge
# is the one of `ddpm-digits` (the same data, copied beside it). These are the exact commands that
# produced the shipped files. CPU, one thread (recorded in the manifest).
#
#   bench/train_digits_uncond.sh [BUILD_DIR]      (default: runs/ddpm-digits-uncond-build; must not exist)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-runs/ddpm-digits-uncond-build}
UNLEARNCTL=${UNLEARNCTL:-unlearnctl}
PYTHON=${PYTHON:-python}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

# 1. the diffusion model: 6,000 AdamW steps of batch 64 on the 1,501 train images, no class labels
time "$UNLEARNCTL" train --dataset digits --out "$BUILD/train" --steps 6000 --seed 0 --device cpu \
    --set conditional=false
# 2. ship: the flat diffusers folder, the judge of ddpm-digits beside it, the manifest of the run that made it
ASSET=src/unlearnctl/assets/ddpm-digits-uncond
bench/ship_asset.sh "$BUILD/train" "$ASSET" src/unlearnctl/assets/ddpm-digits/judge
# 3. a grid of 100 samples (the class shares of 1,000 samples are measured by bench/uncond_digits.py)
"$UNLEARNCTL" sample --model ddpm-digits-uncond --num 100 --seed 0 --out "$BUILD/grid"
cp "$BUILD/grid/grid.png" docs/img/ddpm-digits-uncond-grid.png
