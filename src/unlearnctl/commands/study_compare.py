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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .compare import _get, summary_row
from .intervals import INTERVAL_METHODS, Interval, IntervalMethod, check_level, clip, interval
from .study_read import COMPARED_ROLES, CellData, LoadedStudy, is_study, load_study

__all__ = ["CellData", "LoadedStudy", "aggregate", "compare_study", "is_study", "load_study", "pareto_front"]


@dataclass(frozen=True)
class MetricSpec:
    """One number compared across groups: its key, a short column title, digits shown, and where it comes from."""

    key: str
    title: str
    digits: int
    source: str
    #: the range the metric can take; an interval's ends are clipped to it (:func:`.intervals.clip`)
    low: float | None = None
    high: float | None = None


#: the metrics compared, in table order
METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("recognition_rate", "forgot. recog.", 3, "metrics.json results.model forgetting.recognition_rate", 0, 1),
    MetricSpec("kept_rate", "kept", 3, "metrics.json results.model kept.mean_rate", 0, 1),
    MetricSpec("fid", "FID", 2, "metrics.json results.model fidelity.fid", 0),
    MetricSpec("kid", "KID", 4, "metrics.json results.model fidelity.kid_mean"),
    MetricSpec("mia_auc", "MIA AUC", 3, "metrics.json results.model membership.auc", 0, 1),
    MetricSpec("fid_to_retrain", "FID to retrain", 2, "metrics.json results.model retrain-distance.fid", 0),
    MetricSpec("recognition_gap", "recog. gap", 3, "metrics.json results.model retrain-distance.recognition_gap", 0, 1),
    MetricSpec("wall_time_s", "time s", 1, "manifest.json wall_time_s", 0),
    MetricSpec("optimizer_steps", "steps", 0, "manifest.json optimizer_steps", 0),
)
METRIC_KEYS = tuple(m.key for m in METRICS)
METRIC_BY_KEY = {m.key: m for m in METRICS}
#: the metrics that get a per-forget-set table (a row per group, a column per forget set)
TABLE_METRICS = ("recognition_rate", "fid", "fid_to_retrain")
#: the overall table's columns (the others -- KID, MIA AUC, steps -- are in --json): a readable width
OVERALL_COLUMNS = ("recognition_rate", "kept_rate", "fid", "fid_to_retrain", "recognition_gap", "wall_time_s")
#: the metrics ``--x`` may put on the trade-off plot's x axis (lower is read as better, as for the front)
PLOT_X_METRICS = ("recognition_rate", "mia_auc", "recognition_gap", "fid_to_retrain")
#: the base model's numbers (metrics.json ``results.reference``): it has no retrain distance, time or steps
BASE_METRICS = ("recognition_rate", "kept_rate", "fid", "kid", "mia_auc")
#: the protocol entries that must agree between cells (forgotten classes and seed legitimately differ)
PROTOCOL_KEYS = ("sampler", "steps", "eta", "guidance", "samples_per_class")
#: a group's FID is "within noise" of the base's when they differ by less than this many noise-floor stds
NOISE_FLOOR_STDS = 2.0


# --- the numbers of one cell --------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def cell_values(metrics: dict[str, Any], manifest: dict[str, Any]) -> dict[str, float | None]:
    """One cell's numbers, by :data:`METRICS` key (None where the cell has none, e.g. no retrain distance)."""
    model = metrics.get("results", {}).get("model", {})
    row = summary_row(model)
    return {
        "recognition_rate": row["recognition_rate"],
        "kept_rate": row["kept_rate"],
        "fid": row["fid"],
        "kid": row["kid"],
        "mia_auc": row["mia_auc"],
        "fid_to_retrain": _get(model, "retrain-distance.fid"),
        "recognition_gap": _get(model, "retrain-distance.recognition_gap"),
        "wall_time_s": _number(manifest.get("wall_time_s")),
        "optimizer_steps": _number(manifest.get("optimizer_steps")),
    }


def base_values(metrics: dict[str, Any]) -> dict[str, float | None] | None:
    """The base model's numbers in one cell's ``metrics.json`` (``results.reference``), None if it has none."""
    reference = metrics.get("results", {}).get("reference")
    if not isinstance(reference, dict):
        return None
    row = summary_row(reference)
    return {key: (row[key] if key in BASE_METRICS else None) for key in METRIC_KEYS}


# --- aggregation ----------------------------------------------------------------------------------------


@dataclass
class GroupSummary:
    """One group -- the cells of one label and option setting (``role`` ``method``), the retrain cells
    (``retrain``), or the base model (``base``) -- with its intervals."""

    key: str
    label: str
    options: dict[str, Any]
    role: str
    cells: list[str]
    forget_sets: list[str]
    #: metric -> interval over all the group's cells (every forget set and seed); None: no values
    overall: dict[str, Interval | None]
    #: forget set -> metric -> interval over that forget set's cells (its seeds)
    per_forget_set: dict[str, dict[str, Interval | None]]
    #: the trade-off point: x and y intervals over the cells that have both numbers
    point: dict[str, Any] | None = None
    on_front: bool = False
    #: ``{"difference", "threshold", "within_noise"}``: this group's mean FID against the base's (noise floor)
    fid_vs_base: dict[str, Any] | None = None
    #: the cells' ``seconds`` in study.json (the sweep's time for the cell: forget + eval, every attempt):
    #: ``{"n", "mean", "total"}`` over the cells that have one (:func:`seconds_summary`); None for the base
    seconds: dict[str, Any] | None = None

    @property
    def options_text(self) -> str:
        """The options as ``k=v, ...`` (``-`` for none), as every table shows them."""
        return ", ".join(f"{k}={v}" for k, v in self.options.items()) or "-"

    def row_name(self, text: Callable[[str], str] = str, quiet: Callable[[str], str] = str) -> str:
        """How a table names this row: the label, ``label (retrain)`` for a renamed retrain group, ``base model``
        for the base. ``text`` renders the label and ``quiet`` the parts that are not (a console table escapes
        the one and dims the other; Markdown leaves both as they are)."""
        if self.role == "retrain" and self.label != "retrain":
            return f"{text(self.label)} {quiet('(retrain)')}"
        if self.role == "base":
            return quiet("base model")
        return text(self.label)

    def to_dict(self) -> dict[str, Any]:
        def ivs(d: dict[str, Interval | None]) -> dict[str, Any]:
            return {k: (v.to_dict() if v is not None else None) for k, v in d.items()}

        point = None
        if self.point is not None:
            point = {**self.point, "x": self.point["x"].to_dict(), "y": self.point["y"].to_dict()}
        return {
            "key": self.key,
            "label": self.label,
            "options": self.options,
            "role": self.role,
            "n_cells": len(self.cells),
            "cells": self.cells,
            "forget_sets": self.forget_sets,
            "overall": ivs(self.overall),
            "per_forget_set": {fs: ivs(m) for fs, m in self.per_forget_set.items()},
            "point": point,
            "on_front": self.on_front,
            "fid_vs_base": self.fid_vs_base,
            "seconds": self.seconds,
        }


@dataclass
class StudyComparison:
    name: str
    interval: IntervalMethod
    level: float
    x_metric: str
    #: the method groups, then the retrain group(s), in the order of their first cell in study.json
    groups: list[GroupSummary]
    base: GroupSummary | None
    forget_sets: list[str]
    missing: list[dict[str, Any]]
    noise_floor: dict[str, Any] | None
    notes: list[str]
    warnings: list[str]
    n_cells: int
    #: the study's compute: every study.json cell's ``seconds`` (every role and status; :func:`compute_summary`)
    compute: dict[str, Any] | None = None

    @property
    def front(self) -> list[str]:
        return [g.key for g in self.groups if g.on_front]

    def tables(self, metrics: Sequence[str] = TABLE_METRICS) -> dict[str, list[dict[str, Any]]]:
        """Per-forget-set tables: metric -> one row per group (base last) with ``mean ± half-width (n)`` per forget
        set (:func:`format_cell`)."""
        rows = [*self.groups, *([self.base] if self.base else [])]
        return {
            metric: [
                {
                    "group": g.key,
                    "label": g.label,
                    "role": g.role,
                    "cells": {
                        fs: format_cell(g.per_forget_set.get(fs, {}).get(metric), metric) for fs in self.forget_sets
                    },
                    "all": format_cell(g.overall.get(metric), metric),
                }
                for g in rows
            ]
            for metric in metrics
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "study": self.name,
            "interval": self.interval,
            "level": self.level,
            "x_metric": self.x_metric,
            "metrics": [{"key": m.key, "title": m.title, "source": m.source} for m in METRICS],
            "n_cells": self.n_cells,
            "forget_sets": self.forget_sets,
            "groups": [g.to_dict() for g in self.groups],
            "base": self.base.to_dict() if self.base else None,
            "front": self.front,
            "tables": self.tables(),
            "noise_floor": self.noise_floor,
            "missing": self.missing,
            "notes": self.notes,
            "warnings": self.warnings,
            "compute": self.compute,
        }


def group_title(group: GroupSummary, limit: int = 80) -> str:
    """``label (k=v, ...)`` for legends and notes."""
    text = group.label + (f" ({group.options_text})" if group.options else "")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def shown_metrics(result: StudyComparison) -> list[str]:
    """The overall table's metrics (:data:`OVERALL_COLUMNS`, in :data:`METRICS` order) some group (or the base)
    has a value for: an all-empty column is left out."""
    rows = [*result.groups, *([result.base] if result.base else [])]
    return [m.key for m in METRICS if m.key in OVERALL_COLUMNS and any(g.overall.get(m.key) is not None for g in rows)]


def noise_floor_text(result: StudyComparison) -> str | None:
    """The noise floor's numbers and verdict in one sentence (None without a noise floor)."""
    floor = result.noise_floor
    if floor is None:
        return None
    between = floor.get("fid_between_draws_mean")
    text = (
        f"noise floor: FID to real std {floor['fid_to_real_std']:.2f}"
        + (f", FID between draws mean {between:.2f}" if between is not None else "")
        + f"; a group's FID is within noise when |mean FID - base FID| < {floor['threshold']:.2f}"
    )
    within = [group_title(g) for g in result.groups if g.fid_vs_base and g.fid_vs_base["within_noise"]]
    if within:
        text += f" ({', '.join(within)})"
    return text


def format_cell(iv: Interval | None, metric: str) -> str:
    """``mean ± half-width (n)``; ``mean (1)`` for one value; ``-`` for none."""
    if iv is None:
        return "-"
    digits = METRIC_BY_KEY[metric].digits
    if iv.half_width is None:
        return f"{iv.mean:.{digits}f} ({iv.n})"
    return f"{iv.mean:.{digits}f} ± {iv.half_width:.{max(digits, 1)}f} ({iv.n})"


def format_interval(iv: Interval | None, metric: str, sep: str = " ") -> str:
    """``mean [low, high]`` (``sep`` between them); the mean alone for one value; ``-`` for none."""
    if iv is None:
        return "-"
    digits = METRIC_BY_KEY[metric].digits
    if iv.low is None or iv.high is None:
        return f"{iv.mean:.{digits}f}"
    return f"{iv.mean:.{digits}f}{sep}[{iv.low:.{digits}f}, {iv.high:.{digits}f}]"


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """The indices (ascending) of the non-dominated points, minimising both coordinates: a point is dominated when
    another is <= on both coordinates and < on at least one. Equal points do not dominate each other."""
    front = []
    for i, (xi, yi) in enumerate(points):
        dominated = any(xj <= xi and yj <= yi and (xj < xi or yj < yi) for j, (xj, yj) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return front


def _seconds(cell: dict[str, Any]) -> float | None:
    return _number(cell.get("seconds"))


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
    std = _number(to_real.get("std")) if isinstance(to_real, dict) else None
    if std is None:
        return None
    return {
        "fid_to_real_std": std,
        "fid_to_real_mean": _number(to_real.get("mean")),
        "fid_between_draws_mean": _number(between.get("mean")) if isinstance(between, dict) else None,
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
        forget_set = str(cell.get("forget_label") or ",".join(cell.get("forget") or []) or "-")
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
) -> StudyComparison:
    """:func:`load_study` then :func:`aggregate`."""
    loaded = load_study(study)
    if not loaded.cells:
        raise UsageError(
            f"study '{study}' has no done cell yet ({len(loaded.missing)} not done): "
            "run `unlearnctl sweep` to finish it"
        )
    return aggregate(
        loaded.cells,
        name=str(loaded.index.get("name") or Path(study).name),
        missing=loaded.missing,
        noise_floor=loaded.noise_floor,
        method=method,
        level=level,
        x_metric=x_metric,
        seed=seed,
        notes=loaded.notes,
        records=[c for c in loaded.index.get("cells", []) if isinstance(c, dict)],
    )
