"""A study folder's index, ``study.json``, and what is on disk for each cell (docs/sweep.md).

The index is rewritten whole (atomically) after every cell, so a sweep killed at any moment leaves a
readable index; it is a record, not the truth: whether a cell is done is read from its run folder
(``manifest.json`` and ``metrics.json``), so a study survives a lost or stale index.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from ..errors import UsageError
from ..inprogress import find_partials
from ..rundir import MANIFEST_FILE, atomic_write_text
from .sweep_spec import Cell

INDEX_FILE = "study.json"
INDEX_KIND = "unlearnctl-study"
SCHEMA_VERSION = 1
METRICS_FILE = "metrics.json"

Status = Literal["done", "failed", "pending", "running", "interrupted", "blocked"]
#: what a cell needs next: nothing, its eval, its forget resumed from a checkpoint, or everything
Stage = Literal["done", "eval", "resume", "fresh", "broken"]


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class DiskState:
    """What the study folder holds for one cell."""

    stage: Stage
    #: why the cell cannot run (``broken``)
    problem: str | None = None
    #: partial folders of its forget that cannot be resumed (no checkpoint, dead writer): removed before a rerun
    stale: tuple[Path, ...] = ()


def disk_state(study: Path, cell: Cell) -> DiskState:
    """Where ``cell`` stands on disk (see :data:`Stage`)."""
    run = study / cell.run
    if cell.role == "noise-floor":
        return DiskState("done" if run.is_file() else "fresh")
    if run.exists():
        if not (run / MANIFEST_FILE).is_file():
            return DiskState("broken", f"'{run}' exists but holds no {MANIFEST_FILE}: remove it to run the cell again")
        return DiskState("done" if (run / METRICS_FILE).is_file() else "eval")
    partials = [p for p in find_partials(run.parent, run) if not p.live]
    resumable = [p for p in partials if p.resumable]
    stale = tuple(p.path for p in partials if not p.resumable)
    if resumable:
        return DiskState("resume", stale=stale)
    return DiskState("fresh", stale=stale)


def cell_record(cell: Cell, previous: dict[str, Any] | None) -> dict[str, Any]:
    """The index entry of ``cell``, carrying over what an earlier sweep recorded (attempts, times)."""
    prev = previous or {}
    return {
        "id": cell.id,
        "role": cell.role,
        "method": cell.method,
        "label": cell.label,
        "options": cell.options,
        "group": cell.group,
        "forget": cell.forget,
        "forget_label": cell.forget_label,
        "seed": cell.seed,
        "run": cell.run,
        "log": cell.log,
        "retrain": cell.retrain,
        "status": prev.get("status", "pending"),
        "attempts": int(prev.get("attempts", 0)),
        "seconds": prev.get("seconds"),
        "returncode": prev.get("returncode"),
        "failed_command": prev.get("failed_command"),
        "error": prev.get("error"),
        "host": prev.get("host"),
    }


def read_index(study: Path) -> dict[str, Any] | None:
    """The study's ``study.json`` (None when the folder has none)."""
    path = study / INDEX_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise UsageError(
            f"'{path}' is not a readable study index ({exc}): move it away and run the sweep again"
        ) from None
    if not isinstance(data, dict) or data.get("kind") != INDEX_KIND:
        raise UsageError(f"'{path}' is not an unlearnctl study index (kind is not {INDEX_KIND!r})")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise UsageError(
            f"'{path}' has schema version {data.get('schema_version')!r}; this unlearnctl reads "
            f"{SCHEMA_VERSION}: upgrade unlearnctl or run the sweep again"
        )
    cells = data.get("cells")
    if not isinstance(cells, list) or not all(isinstance(c, dict) and isinstance(c.get("id"), str) for c in cells):
        raise UsageError(f"'{path}' has no valid list of cells (each an object with an 'id'): the file is damaged")
    return data


def is_study(path: Path) -> bool:
    return (Path(path) / INDEX_FILE).is_file()


def write_index(study: Path, index: dict[str, Any]) -> None:
    index["updated_at"] = now()
    atomic_write_text(study / INDEX_FILE, json.dumps(index, indent=2, sort_keys=False) + "\n")
