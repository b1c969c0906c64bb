"""``bench/gpu_table.py`` (the prepared accelerator check of docs/performance.md) runs, in its CPU smoke mode."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_table_smoke_runs_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "table.json"
    # the compiled variant with aot_eager: torch.compile's tracing without inductor's C++ build (minutes here)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "OMP_WAIT_POLICY": "PASSIVE",
        "UNLEARNCTL_COMPILE_BACKEND": "aot_eager",
    }
    done = subprocess.run(
        [sys.executable, "bench/gpu_table.py", "--device", "cpu", "--tiny", "--json", str(out),
         "--variants", "eager", "channels_last+compile"],
        cwd=ROOT, env=env, text=True, capture_output=True, timeout=1200,  # a guard against a hang, not a speed
        # check: a shared 2-core machine under load is slow, and speed is bench/'s job
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    table = json.loads(out.read_text())
    rows = {(r["row"], r["variant"]): r for r in table["rows"]}
    names = {"floor", "finetune", "erasediff:bome:relabel", "sampling (DDIM 2, guided)"}
    assert set(rows) == {(n, v) for n in names for v in ("eager", "channels_last+compile")}
    for r in rows.values():
        assert r["precision"] == "fp32" and r["peak_gib"] is None  # CPU: no bf16 rows, no accelerator memory
        assert r["s"] > 0 and math.isfinite(r["mfu"]) and r["mfu"] > 0
    assert table["env"]["forward_gflop_per_image"] > 0
    assert "| floor | eager | fp32 | 2 |" in done.stdout  # the Markdown table for the docs page
