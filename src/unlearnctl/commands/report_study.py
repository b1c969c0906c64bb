"""``unlearnctl report STUDY``: a sweep study (docs/sweep.md) as a section of the report page.

The section is ``compare STUDY`` on a page: the same document as ``compare STUDY --markdown``
(:func:`~unlearnctl.commands.study_markdown.study_blocks`: the tables with intervals, the front, the noise
floor, the wall time) rendered as HTML, the trade-off plot as an inline PNG, and for each group the eval
pictures of its first done cell (the samples conditioned on the forgotten classes, base model and after, from
the same noise), so that a reader sees what the numbers describe. Every text goes through :func:`html.escape`;
nothing is fetched at view time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .figures import png_bytes
from .report_html import images_html
from .study_compare import compare_study
from .study_markdown import Block, Table, study_blocks
from .study_plot import study_figure
from .sweep_index import is_study, read_index

#: the eval picture shown per group (written by ``eval``: the forgotten classes, base model and after)
EVAL_PICTURE = Path("samples") / "eval-forgotten.png"
#: a picture larger than this is named instead of inlined
MAX_PICTURE_BYTES = 2 * 1024 * 1024

__all__ = ["StudySection", "is_study", "study_section"]


@dataclass
class StudySection:
    """One study's part of the report page."""

    name: str
    path: Path
    html: str
    images: int = 0
    warnings: list[str] = field(default_factory=list)


def inline_html(text: str) -> str:
    """``text`` escaped, with the document's two inline marks made HTML: ```code``` and ``**strong**``."""
    out = escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)


def table_html(table: Table) -> str:
    cls = {"l": "", "r": " class='num'", "c": " class='c'"}
    head = "".join(f"<th>{inline_html(h)}</th>" for h in table.headers)
    body = "".join(
        "<tr>" + "".join(f"<td{cls[a]}>{inline_html(c)}</td>" for a, c in zip(table.align, row, strict=True)) + "</tr>"
        for row in table.rows
    )
    return f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def blocks_html(blocks: list[Block]) -> str:
    """The document's blocks as HTML (its h2 is the section's title, so headings shift down one level)."""
    parts = []
    for block in blocks:
        if isinstance(block, Table):
            parts.append(table_html(block))
            continue
        kind, body = block
        if kind == "ul":
            parts.append("<ul>" + "".join(f"<li>{inline_html(item)}</li>" for item in body) + "</ul>")
        elif kind == "note":
            parts.append(f"<p class='warn'>{inline_html(body)}</p>")
        else:
            tag = {"h2": "h3", "h3": "h3", "p": "p"}[kind]
            parts.append(f"<{tag}>{inline_html(body)}</{tag}>")
    return "".join(parts)


def group_pictures(study: Path, index: dict[str, Any], warnings: list[str]) -> list[tuple[str, str, bytes]]:
    """Each compared group's first done cell (in study order) with an eval picture: (title, path, PNG bytes)."""
    seen: set[str] = set()
    figures = []
    for cell in index.get("cells", []):
        if not isinstance(cell, dict) or cell.get("status") != "done" or cell.get("role") not in ("method", "retrain"):
            continue
        group = str(cell.get("group") or cell.get("id"))
        if group in seen or not cell.get("run"):
            continue
        path = study / str(cell["run"]) / EVAL_PICTURE
        if not path.is_file() or not path.resolve().is_relative_to(study.resolve()):  # only the study's own files
            continue
        data = path.read_bytes()
        rel = f"{cell['run']}/{EVAL_PICTURE.as_posix()}"
        if not data.startswith(b"\x89PNG\r\n\x1a\n") or len(data) > MAX_PICTURE_BYTES:
            warnings.append(f"{rel}: left out of the report (not a PNG, or over {MAX_PICTURE_BYTES // 2**20} MiB)")
            continue
        seen.add(group)
        label = str(cell.get("label") or cell.get("method") or group)
        title = f"{label}: {cell.get('forget_label') or ''}, seed {cell.get('seed')}"
        figures.append((title, rel, data))
    return figures


def study_section(study: Path) -> StudySection:
    """A study's section: the comparison (:func:`compare_study`, 95% t-intervals), its plot and the groups'
    pictures."""
    result = compare_study(study)
    index = read_index(study) or {}
    warnings = list(result.warnings)
    parts = [blocks_html(study_blocks(result))]
    plotted = 0
    try:
        plot = png_bytes(study_figure(result))
    except UsageError as exc:  # nothing to plot: say so instead
        parts.append(f"<p class='meta'>no trade-off plot: {escape(str(exc))}</p>")
    else:
        plotted = 1
        figure = ("forgetting vs. FID, intervals and front", "compare STUDY", plot)
        parts.append("<h3>trade-off</h3>" + images_html([figure]))
    pictures = group_pictures(study, index, warnings)
    if pictures:
        parts.append(
            "<h3>what each group draws for the forgotten classes</h3><p class='meta'>each group's first done cell: "
            "the base model (left) and the model after (right), from the same noise</p>" + images_html(pictures)
        )
    return StudySection(result.name, Path(study), "".join(parts), len(pictures) + plotted, warnings)
