"""The numbers of ``unlearnctl compare STUDY``: which metrics a study compares and where each cell's come from
(:data:`METRICS`, :func:`cell_values`), the result types (:class:`GroupSummary`, :class:`StudyComparison`) that
the console tables, ``--json``, ``--markdown`` and the plot all render, and the one formatting of their numbers
(:func:`format_cell`, :func:`format_interval`). :mod:`unlearnctl.commands.study_compare` computes them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .compare import _get, summary_row
from .intervals import Interval, IntervalMethod

__all__ = [
    "METRICS",
    "METRIC_BY_KEY",
    "PLOT_X_METRICS",
    "TABLE_METRICS",
    "GroupSummary",
    "MetricSpec",
    "StudyComparison",
    "base_values",
    "cell_values",
    "format_cell",
    "format_interval",
    "group_title",
    "noise_floor_text",
    "shown_metrics",
]


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


# --- the numbers of one cell --------------------------------------------------------------------------


def number(value: Any) -> float | None:
    """``value`` as a float when it is a finite number (not a bool), else None."""
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
        "wall_time_s": number(manifest.get("wall_time_s")),
        "optimizer_steps": number(manifest.get("optimizer_steps")),
    }


def base_values(metrics: dict[str, Any]) -> dict[str, float | None] | None:
    """The base model's numbers in one cell's ``metrics.json`` (``results.reference``), None if it has none."""
    reference = metrics.get("results", {}).get("reference")
    if not isinstance(reference, dict):
        return None
    row = summary_row(reference)
    return {key: (row[key] if key in BASE_METRICS else None) for key in METRIC_KEYS}


# --- the result ---------------------------------------------------------------------------------------------


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
