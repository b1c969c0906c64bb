#!/usr/bin/env bash
# Ship a trained model inside the package: the flat diffusers folder of a `unlearnctl train` run, its
# manifest, and a judge folder beside it (named in unlearnctl.json). Used by bench/train_digits*.sh.
#
#   bench/ship_asset.sh TRAIN_RUN ASSET_DIR JUDGE_DIR
set -euo pipefail
TRAIN=$1 ASSET=$2 JUDGE=$3
PYTHON=${PYTHON:-python}
rm -rf "$ASSET"
mkdir -p "$ASSET"
cp "$TRAIN/model/"* "$ASSET/"
cp "$TRAIN/manifest.json" "$ASSET/manifest.json"
cp -r "$JUDGE" "$ASSET/judge"
chmod -R u+rwX,go+rX "$ASSET"   # run folders are private (0700); package files are not
"$PYTHON" - "$ASSET/unlearnctl.json" <<'PY'
import json, sys
path = sys.argv[1]
meta = json.load(open(path))
meta["judge"] = "judge"  # the judge folder, relative to the model folder
json.dump(meta, open(path, "w"), indent=2)
open(path, "a").write("\n")
PY
