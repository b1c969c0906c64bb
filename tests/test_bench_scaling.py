"""``bench/scaling.py`` (the prepared multi-GPU check of docs/scaling.md) runs, in its CPU smoke mode:
``torchrun`` of 1 and of 2 gloo CPU processes, EraseDiff through the real runner and sharded sampling."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_scaling_smoke_runs_one_and_two_cpu_processes(tmp_path: Path) -> None:
    out = tmp_path / "scaling.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    done = subprocess.run(
        [sys.executable, "bench/scaling.py", "--device", "cpu", "--tiny", "--gpus", "1,2", "--json", str(out)],
        cwd=ROOT, env=env, text=True, capture_output=True, timeout=600,  # a guard against a hang, not a speed
        # check: a shared 2-core machine under load is slow, and speed is bench/'s job
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["failed"] == []
    assert {n: e["processes"] for n, e in result["env"].items()} == {"1": 1, "2": 2}  # 2: a real 2-process world
    rows = {(r["gpus"], r["row"]): r for r in result["rows"]}
    assert set(rows) == {(n, row) for n in (1, 2) for row in ("erasediff:bome:relabel", "sampling (DDIM 2, guided)")}
    for (n, row), r in rows.items():
        assert r["precision"] == "fp32" and r["peak_gib"] is None  # CPU: no bf16 rows, no accelerator memory
        assert r["s"] > 0 and math.isfinite(r["s"]) and r["images_per_s"] > 0 and math.isfinite(r["images_per_s"])
        assert math.isfinite(r["speedup"]) and r["speedup"] > 0
        assert len(r["peak_gib_per_rank"]) == n
        if row == "sampling (DDIM 2, guided)":
            assert len(r["rank_s"]) == 1 and len(r["rank_s"][0]) == n  # one timed call, a time per rank
            assert r["s"] == max(r["rank_s"][0]) and r["images_per_s"] == 4 / r["s"]
        else:
            assert len(r["step_s"]) == 2 and all(s > 0 and math.isfinite(s) for s in r["step_s"])
            assert r["batch"] == "4+4" and r["images_per_s"] == 8 / r["s"]
    assert rows[(1, "erasediff:bome:relabel")]["speedup"] == 1.0
    # the Markdown table for the docs page
    assert "| GPUs | row | precision | s/step | images/s | speed-up vs 1 | peak GiB |" in done.stdout
    for n in (1, 2):
        assert f"| {n} | erasediff:bome:relabel | fp32 |" in done.stdout
        assert f"| {n} | sampling (DDIM 2, guided) | fp32 |" in done.stdout
