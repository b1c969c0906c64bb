"""``unlearnctl compare STUDY --markdown FILE``: the study comparison as GitHub-flavoured Markdown tables.

A results page can then embed generated tables instead of hand-copied numbers. Pure: from the
:class:`~unlearnctl.commands.study_result.StudyComparison` that the rich tables and ``--json`` come from, to a
string; every number goes through the same formatting as the console tables (:func:`format_interval`,
:func:`format_cell`: rates 3 decimals, FID 2, time 1), so the Markdown shows ``--json``'s values rounded, never
numbers of its own. In order: a title line, not-done cells and warnings, the overall table (the base model
last), the per-forget-set tables, the noise floor, the wall time, the notes.

The document is built once as :func:`study_blocks` (headings, paragraphs, notes, tables, lists; inline text
marks only ``code`` and ``**strong**``) and rendered here as Markdown; ``unlearnctl report STUDY`` renders the
same blocks as HTML (:mod:`unlearnctl.commands.report_study`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .study_result import (
    METRIC_BY_KEY,
    TABLE_METRICS,
    GroupSummary,
    StudyComparison,
    format_cell,
    format_interval,
    noise_floor_text,
    shown_metrics,
)

__all__ = ["Block", "Table", "format_seconds", "markdown_cell", "markdown_table", "study_blocks", "study_markdown"]


@dataclass(frozen=True)
class Table:
    """A table: ``align`` has one letter per column (``l`` left, ``r`` right, ``c`` centre)."""

    headers: list[str]
    rows: list[list[str]]
    align: str


#: one block of the document: ``("h2" | "h3" | "p" | "note" | "ul", text or items)`` or a :class:`Table`
Block = tuple[str, Any] | Table


def markdown_cell(text: Any) -> str:
    """``text`` made safe for one table cell: ``|`` escaped, line breaks (which would end the row) as spaces."""
    return " ".join(str(text).split()).replace("|", "\\|")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str) -> str:
    """A GFM table; ``align`` has one letter per column: ``l`` left, ``r`` right, ``c`` centre."""
    if len(align) != len(headers) or any(len(row) != len(headers) for row in rows):
        raise ValueError("a Markdown table needs as many alignments and cells per row as headers")
    rule = {"l": ":---", "r": "---:", "c": ":---:"}
    lines = [
        "| " + " | ".join(markdown_cell(h) for h in headers) + " |",
        "| " + " | ".join(rule[a] for a in align) + " |",
        *("| " + " | ".join(markdown_cell(c) for c in row) + " |" for row in rows),
    ]
    return "\n".join(lines)


def format_seconds(seconds: float | None) -> str:
    """Seconds with one decimal (study.json records them so), ``-`` for none."""
    return "-" if seconds is None else f"{seconds:.1f}"


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 360 else f"{seconds / 60:.1f} min"


def _rows(result: StudyComparison) -> list[GroupSummary]:
    return [*result.groups, *([result.base] if result.base else [])]


def _n(group: GroupSummary) -> int:
    """Cells in a group; for the base, its distinct evaluations (the largest n of its intervals)."""
    if group.role == "base":
        return max((iv.n for iv in group.overall.values() if iv), default=0)
    return len(group.cells)


def _title(result: StudyComparison) -> list[Block]:
    return [(
        "h2",
        f"Study {result.name}: {result.n_cells} cells, mean [{result.level * 100:g}% {result.interval} interval] "
        "over forget sets x seeds",
    )]  # fmt: skip


def _status(result: StudyComparison) -> list[Block]:
    out: list[Block] = []
    if result.missing:
        counts = Counter(
            "done without its files" if m.get("status") == "done" else str(m.get("status")) for m in result.missing
        )
        by_status = ", ".join(f"{n} {status}" for status, n in counts.items())
        out.append(("note", f"{len(result.missing)} cell(s) not done ({by_status}): left out of every number."))
    out += [("note", f"**Warning:** {w}") for w in result.warnings]
    return out


def _overall(result: StudyComparison) -> list[Block]:
    metrics = shown_metrics(result)
    headers = ["group", "options", "n", *(METRIC_BY_KEY[k].title for k in metrics), "front"]
    rows = []
    for g in _rows(result):
        cells = [format_interval(g.overall.get(k), k) for k in metrics]
        if g.fid_vs_base is not None and g.fid_vs_base["within_noise"] and "fid" in metrics:
            cells[metrics.index("fid")] += " (within noise)"
        rows.append([g.row_name(), g.options_text, str(_n(g)), *cells, "*" if g.on_front else ""])
    x_title = METRIC_BY_KEY[result.x_metric].title
    caption = (
        f"Each cell: mean [low, high] over the group's cells; n: cells. `*`: on the front, non-dominated by mean "
        f"{x_title} and mean FID (both lower = better). Base model: the cells' `results.reference`, one row per "
        "distinct evaluation. time s: the forgetting run's wall time (manifest.json)."
    )
    return [Table(headers, rows, "llr" + "r" * len(metrics) + "c"), ("p", caption)]


def _per_forget_set(result: StudyComparison, metric: str) -> list[Block]:
    title = METRIC_BY_KEY[metric].title
    headers = ["group", "options", *result.forget_sets, "all"]
    rows = [
        [
            g.row_name(),
            g.options_text,
            *(format_cell(g.per_forget_set.get(fs, {}).get(metric), metric) for fs in result.forget_sets),
            format_cell(g.overall.get(metric), metric),
        ]
        for g in _rows(result)
    ]
    return [
        ("h3", f"{title} per forget set: mean ± half-width (n seeds)"),
        Table(headers, rows, "ll" + "r" * (len(result.forget_sets) + 1)),
    ]


def _noise_floor(result: StudyComparison) -> list[Block]:
    text = noise_floor_text(result)
    if text is None:
        return []
    out: list[Block] = [("h3", "Noise floor"), ("p", text[0].upper() + text[1:] + ".")]
    verdicts = [g for g in result.groups if g.fid_vs_base is not None]
    if verdicts:
        rows = [
            [
                g.row_name(),
                g.options_text,
                f"{g.fid_vs_base['difference']:+.2f}",
                "yes" if g.fid_vs_base["within_noise"] else "no",
            ]
            for g in verdicts
            if g.fid_vs_base is not None
        ]
        out.append(Table(["group", "options", "mean FID - base FID", "within noise"], rows, "llrc"))
    return out


WALL_TIME_NOTE = (
    "Per cell: the sweep's time for the cell (forget and eval), study.json `seconds` (every attempt, summed)."
)


def _wall_time(result: StudyComparison) -> list[Block]:
    rows = []
    for g in result.groups:
        sec = g.seconds or {"n": 0, "mean": None, "total": 0.0}
        rows.append(
            [g.row_name(), g.options_text, str(len(g.cells)), str(sec["n"]), format_seconds(sec["mean"]),
             format_seconds(sec["total"]) if sec["n"] else "-"]
        )  # fmt: skip
    out: list[Block] = [
        ("h3", "Wall time"),
        Table(["group", "options", "cells", "timed", "mean s", "total s"], rows, "llrrrr"),
        ("p", WALL_TIME_NOTE),
    ]
    compute = result.compute
    if compute and compute["timed"]:
        parts = [
            f"{what} {format_seconds(compute[key])} s"
            for what, key in (
                ("compared cells", "compared_s"),
                ("noise floor", "noise_floor_s"),
                ("cells not compared (not done, or without their files)", "other_s"),
            )
            if compute[key] is not None
        ]
        out.append((
            "p",
            f"Study total compute: {format_seconds(compute['total_s'])} s ({_hours(compute['total_s'])}) over "
            f"{compute['timed']} timed cell(s) of {compute['cells']} in study.json: {', '.join(parts)}.",
        ))  # fmt: skip
    return out


def study_blocks(result: StudyComparison) -> list[Block]:
    """The comparison as a document: see the module docstring for what and in which order."""
    blocks = [*_title(result), *_status(result), *_overall(result)]
    shown = shown_metrics(result)
    for metric in TABLE_METRICS:
        if metric in shown:
            blocks += _per_forget_set(result, metric)
    blocks += [*_noise_floor(result), *_wall_time(result)]
    if result.notes:
        blocks += [("p", "Notes:"), ("ul", list(result.notes))]
    return blocks


def study_markdown(result: StudyComparison) -> str:
    """The comparison as Markdown (ends with a newline): :func:`study_blocks`, one blank line between blocks."""
    out = []
    for block in study_blocks(result):
        if isinstance(block, Table):
            out.append(markdown_table(block.headers, block.rows, block.align))
            continue
        kind, body = block
        if kind == "ul":
            out.append("\n".join(f"- {item}" for item in body))
        else:
            out.append({"h2": "## ", "h3": "### ", "note": "> ", "p": ""}[kind] + body)
    return "\n\n".join(out) + "\n"
