"""``unlearnctl compare STUDY``: the groups of a study (a method and its option setting) side by side, with
confidence intervals over forget sets and seeds.

A study folder (written by ``unlearnctl sweep``, docs/sweep.md) holds ``study.json`` and one ordinary run
folder per cell; :func:`~unlearnctl.commands.study_read.load_study` reads it. :func:`aggregate` -- pure, on
in-memory records -- groups the cells and computes, per group and metric, the mean and an interval
(:mod:`unlearnctl.commands.intervals`) over all the group's cells and per forget set (over seeds), plus the
base model, the retrain cells as a group of their own, the non-dominated front of the trade-off and the
noise-floor verdict on FID.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .intervals import INTERVAL_METHODS, Interval, IntervalMethod, check_level, clip, interval
from .study_read import COMPARED_ROLES, CellData, LoadedStudy, forget_set_of, is_study, load_study
from .study_result import (
    BASE_METRICS,
    METRIC_BY_KEY,
    METRIC_KEYS,
    PLOT_X_METRICS,
    GroupSummary,
    StudyComparison,
    base_values,
    cell_values,
    group_title,
    number,
)

__all__ = [
    "CellData",
    "LoadedStudy",
    "aggregate",
    "compare_study",
    "dominates",
    "forget_set_of",
    "is_study",
    "load_study",
    "pareto_front",
]

#: the protocol entries that must agree between cells (forgotten classes and seed legitimately differ)
PROTOCOL_KEYS = ("sampler", "steps", "eta", "guidance", "samples_per_class")
#: a group's FID is "within noise" of the base's when they differ by less than this many noise-floor stds
NOISE_FLOOR_STDS = 2.0


def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether ``a`` dominates ``b``, minimising both coordinates: <= on both and < on at least one. Equal points
    do not dominate each other."""
    return a[0] <= b[0] and a[1] <= b[1] and (a[0] < b[0] or a[1] < b[1])


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """The indices (ascending) of the non-dominated points (:func:`dominates`), minimising both coordinates."""
    front = []
    for i, point in enumerate(points):
        dominated = any(dominates(other, point) for j, other in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return front


def _seconds(cell: dict[str, Any]) -> float | None:
    return number(cell.get("seconds"))


def seconds_summary(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``{"n", "mean", "total"}`` of the study.json records' ``seconds`` (n: how many have one; mean None if none).
    ``math.fsum``: the total is the correctly rounded sum, whatever the order."""
    values = [s for s in (_seconds(r) for r in records) if s is not None]
    total = math.fsum(values)
    return {"n": len(values), "mean": total / len(values) if values else None, "total": total}


def compute_summary(records: Sequence[dict[str, Any]], compared: Sequence[str] | None = None) -> dict[str, Any]:
    """The study's compute from every study.json cell record: the total of their ``seconds`` over every role
    (method, retrain, noise floor) and status (a failed or interrupted cell's time was spent too), split into the
    ``compared`` cells (ids; default: all but the noise-floor cells), the noise-floor cell(s) and the rest (cells
    not done, or done without their files); a part without a timed cell is None. A cell's ``seconds`` sums
    all its attempts (retries, and a stopped cell resumed by a later sweep), so the total is the compute spent."""
    default = (r.get("id") for r in records if r.get("role") != "noise-floor")
    ids = set(default if compared is None else compared)

    def total(part: Sequence[dict[str, Any]]) -> float | None:
        summary = seconds_summary(part)
        return summary["total"] if summary["n"] else None

    summary = seconds_summary(records)
    return {
        "cells": len(records),
        "timed": summary["n"],
        "total_s": summary["total"] if summary["n"] else None,
        "compared_s": total([r for r in records if r.get("id") in ids]),
        "noise_floor_s": total([r for r in records if r.get("role") == "noise-floor"]),
        "other_s": total([r for r in records if r.get("id") not in ids and r.get("role") != "noise-floor"]),
    }


def _protocol_signature(metrics: dict[str, Any]) -> str:
    proto = metrics.get("protocol", {}) or {}
    extractor = (proto.get("feature_extractor") or {}).get("kind") if isinstance(proto, dict) else None
    return json.dumps([proto.get(k) for k in PROTOCOL_KEYS] + [extractor], sort_keys=True, default=str)


def _intervals(
    rows: list[dict[str, float | None]], keys: Sequence[str], method: IntervalMethod, level: float, seed: int
) -> dict[str, Interval | None]:
    out: dict[str, Interval | None] = {}
    for key in keys:
        values = [r[key] for r in rows if r.get(key) is not None]
        spec = METRIC_BY_KEY.get(key)
        iv = interval([v for v in values if v is not None], method, level, seed)
        out[key] = clip(iv, spec.low, spec.high) if spec is not None else iv
    return out


def _summarise(
    key: str,
    label: str,
    options: dict[str, Any],
    role: str,
    rows: list[tuple[str, str, dict[str, float | None]]],
    method: IntervalMethod,
    level: float,
    seed: int,
    x_metric: str,
) -> tuple[GroupSummary, int]:
    """A group from its ``(cell id, forget set, values)`` rows; also how many rows lack the plot's x or y."""
    values = [v for _id, _fs, v in rows]
    forget_sets = list(dict.fromkeys(fs for _id, fs, _v in rows))
    per_fs = {
        fs: _intervals([v for _id, f, v in rows if f == fs], METRIC_KEYS, method, level, seed) for fs in forget_sets
    }
    both = [v for v in values if v.get(x_metric) is not None and v.get("fid") is not None]
    point = None
    if both:
        xs, ys = METRIC_BY_KEY[x_metric], METRIC_BY_KEY["fid"]
        x = clip(interval([float(v[x_metric]) for v in both], method, level, seed), xs.low, xs.high)  # type: ignore[arg-type]
        y = clip(interval([float(v["fid"]) for v in both], method, level, seed), ys.low, ys.high)  # type: ignore[arg-type]
        assert x is not None and y is not None
        point = {"x": x, "y": y, "n": len(both)}
    summary = GroupSummary(
        key=key,
        label=label,
        options=options,
        role=role,
        cells=[i for i, _fs, _v in rows],
        forget_sets=forget_sets,
        overall=_intervals(values, METRIC_KEYS, method, level, seed),
        per_forget_set=per_fs,
        point=point,
    )
    return summary, len(values) - len(both)


def noise_floor_summary(noise_floor: dict[str, Any] | None) -> dict[str, Any] | None:
    """The noise floor's ``fid_to_real`` std, ``fid_between_draws`` mean and the "within noise" threshold
    (:data:`NOISE_FLOOR_STDS` x that std); None without a noise floor or without a ``fid_to_real`` std."""
    if not noise_floor:
        return None
    to_real = noise_floor.get("fid_to_real") or {}
    between = noise_floor.get("fid_between_draws") or {}
    std = number(to_real.get("std")) if isinstance(to_real, dict) else None
    if std is None:
        return None
    return {
        "fid_to_real_std": std,
        "fid_to_real_mean": number(to_real.get("mean")),
        "fid_between_draws_mean": number(between.get("mean")) if isinstance(between, dict) else None,
        "draws": noise_floor.get("draws"),
        "classes": noise_floor.get("classes"),
        "threshold": NOISE_FLOOR_STDS * std,
        "rule": f"|mean FID(group) - mean FID(base)| < {NOISE_FLOOR_STDS:g} x fid_to_real std",
    }


def aggregate(
    cells: Sequence[CellData],
    *,
    name: str = "study",
    missing: Sequence[dict[str, Any]] = (),
    noise_floor: dict[str, Any] | None = None,
    method: IntervalMethod = "t",
    level: float = 0.95,
    x_metric: str = "recognition_rate",
    seed: int = 0,
    notes: Sequence[str] = (),
    records: Sequence[dict[str, Any]] | None = None,
) -> StudyComparison:
    """Group the done cells by their ``group`` key and compute every interval (``method``: ``t`` or
    ``bootstrap``, at confidence ``level``; ``seed`` seeds the bootstrap).

    - method groups (role ``method``) and the retrain cells (role ``retrain``, a group of their own);
    - the base model (each cell's ``results.reference``): one row per distinct evaluation (cells that ran the same
      evaluation of the base -- same forget set, same numbers -- count once, so repeating it does not shrink its
      interval);
    - the trade-off point of each group (``x_metric`` against FID, over the cells that have both) and the front
      of the groups (not the base) by those means: :func:`pareto_front`;
    - with a noise floor, each group's mean FID against the base's (:func:`noise_floor_summary`);
    - wall time: each group's cells' study.json ``seconds`` (:func:`seconds_summary`) and the study's compute
      (:func:`compute_summary`) over ``records`` -- every study.json cell record, including the noise-floor cell
      and the cells not done -- or, without ``records``, over the given cells' records.
    """
    if method not in INTERVAL_METHODS:
        raise UsageError(f"unknown interval {method!r}: choose one of {', '.join(INTERVAL_METHODS)}")
    level = check_level(level)
    if x_metric not in PLOT_X_METRICS:
        raise UsageError(f"--x must be one of {', '.join(PLOT_X_METRICS)}, got {x_metric!r}")
    notes = list(notes)
    warnings: list[str] = []
    grouped: dict[str, list[tuple[str, str, dict[str, float | None]]]] = {}
    group_records: dict[str, list[dict[str, Any]]] = {}
    info: dict[str, tuple[str, dict[str, Any], str]] = {}
    base_rows: list[tuple[str, str, dict[str, float | None]]] = []
    seen_base: set[str] = set()
    forget_sets: list[str] = []
    protocols: set[str] = set()
    for data in cells:
        cell = data.cell
        role = str(cell.get("role", "method"))
        if role not in COMPARED_ROLES:
            continue
        label = str(cell.get("label") or cell.get("method") or role)
        options = cell.get("options") or {}
        key = str(cell.get("group") or f"{label}|{json.dumps(options, sort_keys=True)}")
        forget_set = forget_set_of(cell)
        if forget_set not in forget_sets:
            forget_sets.append(forget_set)
        info.setdefault(key, (label, options, role))
        grouped.setdefault(key, []).append((cell["id"], forget_set, cell_values(data.metrics, data.manifest)))
        group_records.setdefault(key, []).append(cell)
        protocols.add(_protocol_signature(data.metrics))
        base_row = base_values(data.metrics)
        if base_row is not None:
            sha = (data.metrics.get("reference") or {}).get("sha256")
            dedupe = json.dumps([forget_set, sha, [base_row[k] for k in BASE_METRICS]])
            if dedupe not in seen_base:
                seen_base.add(dedupe)
                base_rows.append((cell["id"], forget_set, base_row))
    if len(protocols) > 1:
        warnings.append(
            "the cells were evaluated under different protocols (sampler, steps, guidance, samples or feature "
            "extractor differ): their numbers are not directly comparable"
        )
    x_title = METRIC_BY_KEY[x_metric].title
    groups: list[GroupSummary] = []
    # method groups first, then the retrain group(s), each in study order
    for key in sorted(grouped, key=lambda k: info[k][2] == "retrain"):
        label, options, role = info[key]
        summary, left_out = _summarise(key, label, options, role, grouped[key], method, level, seed, x_metric)
        if left_out:
            notes.append(
                f"{group_title(summary)}: {left_out} cell(s) without {x_title} or FID left out of the trade-off plot"
            )
        summary.seconds = seconds_summary(group_records[key])
        groups.append(summary)
    base: GroupSummary | None = None
    if base_rows:
        base, _left = _summarise("base", "base model", {}, "base", base_rows, method, level, seed, x_metric)
        base.cells = []  # the base has no cells of its own: its rows come from the cells' evaluations
    plotted = [g for g in groups if g.point is not None]
    for i in pareto_front([(g.point["x"].mean, g.point["y"].mean) for g in plotted if g.point is not None]):
        plotted[i].on_front = True
    floor = noise_floor_summary(noise_floor)
    if noise_floor and floor is None:
        notes.append("the noise floor has no fid_to_real std: no noise-floor verdict")
    base_fid = base.overall.get("fid") if base is not None else None
    if floor is not None and base_fid is not None:
        for g in groups:
            fid = g.overall.get("fid")
            if fid is not None:
                diff = fid.mean - base_fid.mean
                g.fid_vs_base = {
                    "difference": diff,
                    "threshold": floor["threshold"],
                    "within_noise": abs(diff) < floor["threshold"],
                }
    return StudyComparison(
        name=name,
        interval=method,
        level=level,
        x_metric=x_metric,
        groups=groups,
        base=base,
        forget_sets=forget_sets,
        missing=list(missing),
        noise_floor=floor,
        notes=notes,
        warnings=warnings,
        n_cells=sum(len(rows) for rows in grouped.values()),
        compute=compute_summary(
            list(records) if records is not None else [d.cell for d in cells],
            [r["id"] for rs in group_records.values() for r in rs],
        ),
    )


def compare_study(
    study: Path,
    *,
    method: IntervalMethod = "t",
    level: float = 0.95,
    x_metric: str = "recognition_rate",
    seed: int = 0,
    forget_sets: Sequence[str] = (),
) -> StudyComparison:
    """:func:`load_study` then :func:`aggregate`; with ``forget_sets``, only those forget sets' cells, so that
    the overall rows and the front compare like with like."""
    forget_sets = list(dict.fromkeys(forget_sets))  # named twice is named once
    loaded = load_study(study, forget_sets)
    name = str(loaded.index.get("name") or Path(study).name)
    if forget_sets:
        name += f" ({', '.join(forget_sets)})"
    if not loaded.cells:
        on = f" on {', '.join(forget_sets)}" if forget_sets else ""
        raise UsageError(
            f"study '{study}' has no done cell{on} yet ({len(loaded.missing)} not done): "
            "run `unlearnctl sweep` to finish it"
        )
    return aggregate(
        loaded.cells,
        name=name,
        missing=loaded.missing,
        noise_floor=loaded.noise_floor,
        method=method,
        level=level,
        x_metric=x_metric,
        seed=seed,
        notes=loaded.notes,
        records=[c for c in loaded.index.get("cells", []) if isinstance(c, dict)],
    )
