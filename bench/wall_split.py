"""Where the wall time of ``forget`` and ``eval`` goes, on the built-in model (the CLI as a user runs it).

``forget --classes 2`` twice: without grids (``--grid-per-class 0``; its ``output_sha256`` is the
bit-identity check of docs/performance.md) and with the default grids. Method = the ``time`` of the last
``log.jsonl`` line. The runner's clock starts before the "before" grids, so the first logged step of the
run with grids includes them: their cost is that step's excess over a median step, minus the same
excess without grids (the first step's own start-up); the "after" grids sample the same images, so the
grids cost about twice that (a difference of two whole runs' walls drowns in a shared machine's load).
Then ``eval`` of the run with grids: its
``metrics.json`` holds the sampling cost (``sampling`` per model), each metric's seconds
(``metric_seconds``; the first metric needing samples pays for them) and ``wall_time_s``.

    python bench/wall_split.py --out /tmp/wall-split          # about 6 minutes on one CPU thread
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cli import call, method_seconds


def forget(out: Path, grids: bool) -> dict[str, Any]:
    args = ["forget", "--classes", "2", "--out", str(out), "--json"] + ([] if grids else ["--grid-per-class", "0"])
    start = time.perf_counter()
    call(args)
    wall = time.perf_counter() - start
    manifest = json.loads((out / "manifest.json").read_text())
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    first_excess = log[0]["time"] - statistics.median(b["time"] - a["time"] for a, b in itertools.pairwise(log))
    return {"wall_s": wall, "method_s": method_seconds(out), "first_step_excess_s": first_excess,
            "output_sha256": manifest["weights"]["output_sha256"]}  # fmt: skip


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="a folder for the runs (replaced)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    plain = forget(args.out / "forget-nogrids", grids=False)
    gridded = forget(args.out / "forget", grids=True)
    start = time.perf_counter()
    call(["eval", str(args.out / "forget")])
    eval_wall = time.perf_counter() - start
    metrics = json.loads((args.out / "forget" / "metrics.json").read_text())
    grids = 2 * (gridded["first_step_excess_s"] - plain["first_step_excess_s"])
    print(f"\nforget --classes 2 (output sha256 {plain['output_sha256']}):")
    print("| part | seconds |\n| --- | --- |")
    print(f"| method (150 EraseDiff steps) | {plain['method_s']:.1f} |")
    print(f"| set-up, loading, saving, process start | {plain['wall_s'] - plain['method_s']:.1f} |")
    print(f"| before + after grids (2 x the first step's extra time with grids) | {grids:.1f} |")
    print(f"| total, no grids / default grids | {plain['wall_s']:.1f} / {gridded['wall_s']:.1f} |")
    print("\neval of that run:")
    print("| part | seconds |\n| --- | --- |")
    for role, cost in metrics.get("sampling", {}).items():
        if isinstance(cost, dict) and "seconds" in cost:
            print(f"| sampling, {role} ({cost.get('images')} images) | {cost['seconds']:.1f} |")
    for role, per_metric in metrics.get("metric_seconds", {}).items():
        for name, secs in per_metric.items():
            print(f"| metric {name}, {role} (with its sampling, if first) | {secs:.1f} |")
    print(f"| eval wall (metrics.json) / process | {metrics.get('wall_time_s', float('nan')):.1f} / {eval_wall:.1f} |")
    if args.json:
        payload = {"forget_no_grids": plain, "forget": gridded, "eval_wall_s": eval_wall, "eval_metrics": metrics}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
