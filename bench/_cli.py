"""Running the ``unlearnctl`` command line from the bench scripts, as a user would (one thread each)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def unlearnctl() -> list[str]:
    """The ``unlearnctl`` of this interpreter's environment (or ``python -m unlearnctl``)."""
    exe = Path(sys.executable).with_name("unlearnctl")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "unlearnctl"]


def call(args: list[str]) -> subprocess.CompletedProcess:
    """Run ``unlearnctl ARGS`` with one CPU thread; print the command and its time; exit on failure."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    print("$ unlearnctl " + " ".join(args), flush=True)
    start = time.perf_counter()
    done = subprocess.run([*unlearnctl(), *args], cwd=ROOT, env=env, text=True, capture_output=True)
    print(f"  ({time.perf_counter() - start:.0f} s, exit {done.returncode})", flush=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit(f"unlearnctl {args[0]} failed with exit code {done.returncode}")
    return done


def method_seconds(run: Path) -> float | None:
    """Seconds spent in the method itself: the ``time`` of the last ``log.jsonl`` line (runner start = 0)."""
    lines = (run / "log.jsonl").read_text().splitlines()
    return json.loads(lines[-1]).get("time") if lines else None
