"""Reading a study folder for ``unlearnctl compare STUDY``: its index and every done cell's run folder.

Each done cell is read through the same checks and readers as ``unlearnctl compare RUN...``
(:func:`unlearnctl.integrity.check_run`, ``read_manifest``, ``read_metrics``); the cells that are not done
are listed, not an error; the noise floor is read when the study has one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .sweep_index import is_study, read_index

__all__ = ["COMPARED_ROLES", "CellData", "LoadedStudy", "forget_set_of", "is_study", "load_study"]

#: the cell roles compared (a ``noise-floor`` cell writes the study's noise floor, not a run folder)
COMPARED_ROLES = ("method", "retrain")


@dataclass
class CellData:
    """A done cell as :func:`aggregate` needs it: its ``study.json`` record, ``metrics.json`` and manifest."""

    cell: dict[str, Any]
    metrics: dict[str, Any]
    manifest: dict[str, Any]


@dataclass
class LoadedStudy:
    path: Path
    index: dict[str, Any]
    cells: list[CellData]
    #: the cells that are not done: id, group, forget set, seed, status and why
    missing: list[dict[str, Any]]
    #: the noise-floor file's contents (None when the study has none)
    noise_floor: dict[str, Any] | None
    notes: list[str] = field(default_factory=list)


def _missing(cell: dict[str, Any], reason: str) -> dict[str, Any]:
    return {
        "id": cell["id"],
        "group": cell.get("group"),
        "label": cell.get("label"),
        "forget_label": cell.get("forget_label"),
        "seed": cell.get("seed"),
        "status": cell.get("status"),
        "reason": reason,
    }


def forget_set_of(cell: dict[str, Any]) -> str:
    """A study cell's forget set as the sweep names it (``classes:2``, ``random:0.1``): its ``forget_label``."""
    return str(cell.get("forget_label") or ",".join(cell.get("forget") or []) or "-")


def _only_forget_sets(study: Path, index: dict[str, Any], forget_sets: Sequence[str]) -> dict[str, Any]:
    """``index`` with only the compared cells of ``forget_sets`` (a cell not compared, the noise floor, stays);
    a forget set the study does not have is refused, with the ones it has."""
    records = [c for c in index.get("cells", []) if isinstance(c, dict)]
    known = list(dict.fromkeys(forget_set_of(c) for c in records if c.get("role", "method") in COMPARED_ROLES))
    unknown = [fs for fs in forget_sets if fs not in known]
    if unknown:
        raise UsageError(
            f"study '{study}' has no forget set {', '.join(map(repr, unknown))}: "
            f"--forget-set takes one of {', '.join(known) or '(none)'}"
        )
    cells = [c for c in records if c.get("role", "method") not in COMPARED_ROLES or forget_set_of(c) in forget_sets]
    return {**index, "cells": cells}


def _read_noise_floor(study: Path, name: Any, notes: list[str]) -> dict[str, Any] | None:
    if not name:
        return None
    path = study / str(name)
    if not path.is_file():
        notes.append(f"study.json names the noise floor '{name}' but there is no such file: no noise-floor verdict")
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise UsageError(f"cannot read the noise floor '{path}': {' '.join(str(exc).split())}") from exc
    if not isinstance(data, dict):
        raise UsageError(f"the noise floor '{path}' is not a JSON object: the file is damaged")
    return data


def load_study(study: Path, forget_sets: Sequence[str] = ()) -> LoadedStudy:
    """Read a study folder: every done cell's run folder (checked with :func:`check_run` unless ``--no-verify``),
    the cells that are not done (listed, not an error) and the noise floor if there is one. With ``forget_sets``,
    only those forget sets' cells are read (the others are never opened) and the index holds only them.

    A cell is done when its status is ``done`` and its run folder has ``manifest.json`` and ``metrics.json``.
    Only ``method`` and ``retrain`` cells are compared: the ``noise-floor`` cell's file is the noise floor.
    """
    from ..integrity import check_run
    from ..manifest import read_manifest
    from ..results import read_metrics
    from ..rundir import MANIFEST_FILE, METRICS_FILE

    study = Path(study)
    index = read_index(study)
    if index is None:
        raise UsageError(f"'{study}' is not a study folder (no study.json): make one with `unlearnctl sweep`")
    if forget_sets:
        index = _only_forget_sets(study, index, forget_sets)
    notes: list[str] = []
    cells: list[CellData] = []
    missing: list[dict[str, Any]] = []
    for cell in index["cells"]:
        if cell.get("role", "method") not in COMPARED_ROLES:
            continue  # the noise-floor cell: its file is read below, through study.json's noise_floor
        run = study / str(cell.get("run") or f"cells/{cell['id']}")
        if cell.get("status") != "done":
            missing.append(_missing(cell, f"status {cell.get('status')!r}"))
            continue
        absent = [name for name in (MANIFEST_FILE, METRICS_FILE) if not (run / name).is_file()]
        if absent:
            missing.append(_missing(cell, f"no {' or '.join(absent)} in {run}"))
            continue
        check_run(run)
        manifest = read_manifest(run).model_dump(mode="json")
        cells.append(CellData(cell, read_metrics(run), manifest))
    noise_floor = _read_noise_floor(study, index.get("noise_floor"), notes)
    return LoadedStudy(study, index, cells, missing, noise_floor, notes)
