"""``metrics.json`` and ``audit.json``: the payloads ``eval`` and ``audit`` write and ``compare`` reads."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from .errors import UsageError
from .rundir import AUDIT_FILE, METRICS_FILE

#: the version of ``metrics.json``'s layout; ``compare`` refuses others
METRICS_SCHEMA_VERSION = 1
#: the version of ``audit.json``'s layout; ``compare`` refuses others
AUDIT_SCHEMA_VERSION = 1


def jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return jsonable(value.tolist()) if value.numel() != 1 else jsonable(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, int | str | bool) or value is None:
        return value
    if hasattr(value, "item"):
        return jsonable(value.item())
    return str(value)


def flatten_numbers(results: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """``{"fidelity": {"fid": 3.1}}`` -> ``{"fidelity.fid": 3.1}`` (numbers only, booleans left out)."""
    out: dict[str, float] = {}
    for key, value in results.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten_numbers(value, name + "."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def metric_deltas(model: dict[str, Any], reference: dict[str, Any]) -> dict[str, float]:
    a, b = flatten_numbers(model), flatten_numbers(reference)
    return {k: a[k] - b[k] for k in a if k in b}


def read_metrics(run: Path) -> dict[str, Any]:
    """A run's ``metrics.json``; a clear error when there is none."""
    path = Path(run) / METRICS_FILE
    if not path.is_file():
        raise UsageError(f"run '{run}' has no {METRICS_FILE}: run `unlearnctl eval {run}` first")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"cannot read '{path}': {exc}") from exc
    if data.get("schema_version") != METRICS_SCHEMA_VERSION:
        raise UsageError(
            f"'{path}' has schema version {data.get('schema_version')!r}; this unlearnctl reads "
            f"{METRICS_SCHEMA_VERSION}: re-run `unlearnctl eval {run} --overwrite`"
        )
    return data


def read_audit(run: Path) -> dict[str, Any] | None:
    """A run's ``audit.json``, or None when it has none (``unlearnctl audit`` was not run on it)."""
    path = Path(run) / AUDIT_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"cannot read '{path}': {exc}") from exc
    if not isinstance(data, dict) or data.get("schema_version") != AUDIT_SCHEMA_VERSION:
        version = data.get("schema_version") if isinstance(data, dict) else None
        raise UsageError(
            f"'{path}' has schema version {version!r}; this unlearnctl reads {AUDIT_SCHEMA_VERSION}: move it "
            f"away and re-run `unlearnctl audit {run}`"
        )
    return data
