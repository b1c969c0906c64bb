"""Rich tables of ``unlearnctl compare STUDY``: the overall table (a row per group), the per-forget-set tables
and the noise-floor line. Rendering only: the numbers come from :mod:`unlearnctl.commands.study_compare`
(:mod:`unlearnctl.commands.study_result` holds their types and formatting)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..commands.study_result import (
    METRIC_BY_KEY,
    TABLE_METRICS,
    GroupSummary,
    StudyComparison,
    format_cell,
    format_interval,
    noise_floor_text,
    shown_metrics,
)


def _dim(text: str) -> str:
    return f"[dim]{escape(text)}[/]"


def _row_name(group: GroupSummary) -> str:
    return group.row_name(text=escape, quiet=_dim)


def overall_table(result: StudyComparison) -> Table:
    """A row per group (then the base model): label, options, n cells, each metric ``mean [low, high]``, front."""
    level = f"{result.level * 100:g}%"
    metrics = shown_metrics(result)
    x_title = METRIC_BY_KEY[result.x_metric].title
    table = Table(
        title=f"study {escape(result.name)}: {result.n_cells} cells, mean [{level} {result.interval} interval] over "
        "forget sets x seeds",
        title_justify="left",
        caption=f"front: non-dominated by mean {x_title} and mean FID (both lower = better); base: the cells' "
        "results.reference (one row per distinct evaluation)",
        caption_justify="left",
    )
    table.add_column("group", overflow="fold")
    table.add_column("options", overflow="fold")
    table.add_column("n", justify="right")
    for key in metrics:
        table.add_column(METRIC_BY_KEY[key].title, justify="right", overflow="fold")
    table.add_column("front", justify="center")
    for g in [*result.groups, *([result.base] if result.base else [])]:
        n = str(len(g.cells)) if g.role != "base" else str(max((iv.n for iv in g.overall.values() if iv), default=0))
        cells = [format_interval(g.overall.get(k), k, "\n") for k in metrics]
        if g.fid_vs_base is not None and g.fid_vs_base["within_noise"] and "fid" in metrics:
            i = metrics.index("fid")
            cells[i] += "\n[dim](within noise)[/]"
        table.add_row(
            _row_name(g),
            escape(g.options_text),
            n,
            *cells,
            "*" if g.on_front else "",
            style="dim" if g.role == "base" else None,
        )
    return table


def forget_set_table(result: StudyComparison, metric: str) -> Table:
    """One metric: a row per group, a column per forget set, ``mean ± half-width (n)`` (over seeds)."""
    spec = METRIC_BY_KEY[metric]
    table = Table(
        title=f"{spec.title} per forget set: mean ± half-width (n seeds)",
        title_justify="left",
    )
    table.add_column("group", overflow="fold")
    for fs in result.forget_sets:
        table.add_column(escape(fs), justify="right", overflow="fold")
    table.add_column("all", justify="right", overflow="fold")
    for g in [*result.groups, *([result.base] if result.base else [])]:
        name = _row_name(g)
        opts = g.options_text
        if opts != "-":
            name += "\n" + _dim(opts)
        table.add_row(
            name,
            *(format_cell(g.per_forget_set.get(fs, {}).get(metric), metric) for fs in result.forget_sets),
            format_cell(g.overall.get(metric), metric),
        )
    return table


def noise_floor_line(result: StudyComparison) -> str | None:
    """The noise floor's numbers and verdict (:func:`~unlearnctl.commands.study_result.noise_floor_text`)."""
    return noise_floor_text(result)


def compute_line(result: StudyComparison) -> str | None:
    """The study's compute: the total of every study.json cell's ``seconds`` (None when no cell has one)."""
    compute = result.compute
    if not compute or not compute["timed"]:
        return None

    def s(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f} s"

    return (
        f"compute: {s(compute['total_s'])} over {compute['timed']} timed cell(s) of study.json (compared cells "
        f"{s(compute['compared_s'])}, noise floor {s(compute['noise_floor_s'])}, cells not compared "
        f"{s(compute['other_s'])})"
    )


def print_study(console: Console, result: StudyComparison) -> None:
    """Everything ``compare STUDY`` shows, in order: overall table, per-forget-set tables, noise floor, missing."""
    console.print(overall_table(result))
    shown = shown_metrics(result)
    for metric in TABLE_METRICS:
        if metric in shown:
            console.print(forget_set_table(result, metric))
    line = noise_floor_line(result)
    if line:
        console.print(escape(line))
    line = compute_line(result)
    if line:
        console.print(escape(line))
    if result.missing:
        console.print(f"[yellow]{len(result.missing)} cell(s) not done[/] (left out):")
        for m in result.missing:
            console.print(f"  {escape(str(m['id']))}: {escape(str(m['reason']))}")
    for note in result.notes:
        console.print(f"[dim]note: {escape(note)}[/]")
