"""``unlearnctl compare RUN RUN ...``: one table of runs side by side and a forgetting-vs-FID plot; and
``unlearnctl compare STUDY``: a study's groups with confidence intervals (rendering in :mod:`.study_tables`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from .common import console, handle_errors, load_registry, print_json, print_warning
from .options import JsonFlag
from .verify_cmd import NoVerifyFlag

DEFAULT_PLOT = Path("compare.png")


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}"


def _options_text(options: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in options.items()) or "-"


def render(
    rows: list[dict[str, Any]], references: list[dict[str, Any]], audit_columns: list[tuple[str, str]] | None = None
) -> Table:
    """Runs as rows; the method's non-default options under its name. ``recog.``: share of samples of
    the forgotten classes the judge still recognises (UA = 1 - recog.); ``kept``: mean recognition of
    the kept classes; ``MIA``: membership-inference AUC on the forget set (0.5 = as unseen). Then one
    column per attack of the runs' ``audit.json`` (its headline number; ``unlearnctl audit``)."""
    audit_columns = audit_columns or []
    forgot = sorted({",".join(str(c) for c in r["forget_classes"]) for r in rows})
    caption = (
        "recog.: forgotten-class samples still recognised (UA = 1 - recog.); kept: kept classes "
        "recognised; FID: kept classes; MIA: membership AUC (0.5 = unseen)"
    )
    if audit_columns:
        caption += "; then unlearnctl audit: " + ", ".join(f"{title} = {attack}" for attack, title in audit_columns)
    table = Table(
        title=f"forgetting vs. utility - forgotten classes: {' / '.join(forgot) or '-'}",
        title_justify="left",
        caption=caption,
        caption_justify="left",
    )
    table.add_column("run", overflow="fold", ratio=1)
    table.add_column("method / options", overflow="fold", ratio=2)
    for name in ("recog.", "kept", "FID", "MIA", "time s", "steps"):
        table.add_column(name, justify="right", no_wrap=True)
    for _attack, title in audit_columns:
        table.add_column(escape(title), justify="right", overflow="fold")

    def audit_cells(row: dict[str, Any]) -> list[str]:
        return [_num(row.get("audit", {}).get(attack), 2) for attack, _title in audit_columns]

    for ref in references:
        table.add_row(
            escape(ref["name"]),
            "(reference)",
            _num(ref["recognition_rate"], 2),
            _num(ref["kept_rate"], 2),
            _num(ref["fid"], 2),
            _num(ref["mia_auc"], 2),
            "",
            "",
            *audit_cells(ref),
            style="dim",
        )
    for row in rows:
        opts = _options_text(row["key_options"])
        table.add_row(
            escape(row["name"]),
            escape(row["method"]) + (f"\n[dim]{escape(opts)}[/]" if opts != "-" else ""),
            _num(row["recognition_rate"], 2),
            _num(row["kept_rate"], 2),
            _num(row["fid"], 2),
            _num(row["mia_auc"], 2),
            f"{row['wall_time_s']:.1f}",
            str(row["optimizer_steps"]),
            *audit_cells(row),
        )
    return table


def _compare_study(
    study: Path,
    plot: Path,
    no_plot: bool,
    overwrite: bool,
    interval: str | None,
    level: float | None,
    x_metric: str | None,
    json_output: bool,
    markdown: Path | None = None,
    forget_sets: list[str] | None = None,
) -> None:
    """``compare STUDY``: aggregate, plot, write the Markdown, then print JSON or the tables."""
    from ..commands.intervals import INTERVAL_METHODS
    from ..commands.study_compare import compare_study
    from ..commands.study_markdown import study_markdown
    from ..commands.study_plot import study_plot
    from ..errors import UsageError
    from ..rundir import atomic_write_text, check_new_file
    from .study_tables import print_study

    method = interval or "t"
    if method not in INTERVAL_METHODS:
        raise UsageError(f"--interval must be one of {', '.join(INTERVAL_METHODS)}, got {method!r}")
    if not no_plot:
        check_new_file(plot, overwrite, "--plot")
    if markdown is not None:
        check_new_file(markdown, overwrite, "--markdown")
        if not no_plot and markdown.resolve() == plot.resolve():
            raise UsageError(f"--markdown and --plot both name '{markdown}': choose two different files")
    result = compare_study(
        study,
        method=method,
        level=0.95 if level is None else level,
        x_metric=x_metric or "recognition_rate",
        forget_sets=forget_sets or (),
    )
    plot_path = None if no_plot else study_plot(result, plot, overwrite=overwrite)
    if markdown is not None:
        atomic_write_text(markdown, study_markdown(result))
    if json_output:
        print_json(
            {
                **result.to_dict(),
                "plot": str(plot_path) if plot_path else None,
                "markdown": str(markdown) if markdown is not None else None,
            }
        )
        return
    for warning in result.warnings:
        print_warning(warning)
    print_study(console, result)
    for written in (plot_path, markdown):
        if written is not None:
            console.print(f"wrote {escape(str(written))}")


def register(app: typer.Typer) -> None:
    """Add ``compare`` to the ``unlearnctl`` app."""

    @app.command("compare")
    @handle_errors
    def compare_command(
        runs: Annotated[
            list[Path],
            typer.Argument(
                metavar="RUN...",
                help=(
                    "Run folders, each evaluated with `unlearnctl eval RUN`; or one study folder (`unlearnctl sweep`)."
                ),
                show_default=False,
            ),
        ],
        plot: Annotated[
            Path,
            typer.Option("--plot", help="Where to write the trade-off plot (PNG)."),
        ] = DEFAULT_PLOT,
        no_plot: Annotated[bool, typer.Option("--no-plot", help="Do not write the plot.")] = False,
        overwrite: Annotated[
            bool, typer.Option("--overwrite", help="Replace an existing --plot or --markdown file.")
        ] = False,
        no_verify: NoVerifyFlag = False,
        interval: Annotated[
            str | None,
            typer.Option(
                "--interval",
                help="Study only: confidence interval of the means, t (Student t) or bootstrap (percentile).",
                show_default="t",
            ),
        ] = None,
        level: Annotated[
            float | None,
            typer.Option("--level", help="Study only: confidence level of the intervals.", show_default="0.95"),
        ] = None,
        x_metric: Annotated[
            str | None,
            typer.Option(
                "--x",
                help="Study only: the plot's x metric: recognition_rate, mia_auc, recognition_gap or fid_to_retrain.",
                show_default="recognition_rate",
            ),
        ] = None,
        markdown: Annotated[
            Path | None,
            typer.Option(
                "--markdown",
                help=(
                    "Study only: also write the results as GitHub-flavoured Markdown tables to this file "
                    "(never overwritten without --overwrite)."
                ),
                show_default=False,
            ),
        ] = None,
        forget_sets: Annotated[
            list[str] | None,
            typer.Option(
                "--forget-set",
                metavar="FORGET_SET",
                help=(
                    "Study only: compare the cells of this forget set only (as the sweep names it, e.g. classes:2 "
                    "or random:0.1), so the overall rows and the front compare like with like. Repeatable."
                ),
                show_default=False,
            ),
        ] = None,
        json_output: JsonFlag = False,
    ) -> None:
        """One table across runs (method, key options, forgetting, kept-class rate, FID, wall time, steps; with
        `unlearnctl audit`, each attack's headline number) and a trade-off plot: forgotten-class recognition
        rate against FID of the kept classes, one point per run plus the base model.

        Given one study folder (with a study.json, from `unlearnctl sweep`): per group of cells (method and
        options) each metric's mean and confidence interval over forget sets and seeds, per-forget-set tables,
        the noise floor, and a trade-off plot with error bars and the non-dominated front; `--markdown FILE` writes
        the same results as Markdown tables for a results page."""
        from ..commands.compare import compare, trade_off_plot
        from ..commands.study_compare import is_study
        from ..errors import UsageError

        if len(runs) == 1 and is_study(runs[0]):
            _compare_study(
                runs[0], plot, no_plot, overwrite, interval, level, x_metric, json_output, markdown, forget_sets
            )
            return
        if markdown is not None:
            raise UsageError(
                "--markdown needs a study folder: pass one folder holding a study.json (from `unlearnctl sweep`)"
            )
        study_only = (("--interval", interval), ("--level", level), ("--x", x_metric), ("--forget-set", forget_sets))
        given = [flag for flag, value in study_only if value]
        if given:
            verb = "applies" if len(given) == 1 else "apply"
            raise UsageError(f"{', '.join(given)} {verb} to a study folder only: pass one folder holding a study.json")
        if not no_plot and plot.exists() and not overwrite:
            raise UsageError(f"'{plot}' already exists: pass --overwrite to replace it, or choose another --plot")
        result = compare(runs, load_registry())
        plot_path = None if no_plot else trade_off_plot(result, plot, overwrite=overwrite)
        if json_output:
            print_json(
                {
                    "runs": result.rows,
                    "references": result.references,
                    "audit_columns": [{"attack": a, "title": t} for a, t in result.audit_columns],
                    "warnings": result.warnings,
                    "plot": str(plot_path) if plot_path else None,
                }
            )
            return
        for warning in result.warnings:
            print_warning(warning)
        console.print(render(result.rows, result.references, result.audit_columns))
        if plot_path is not None:
            console.print(f"wrote {escape(str(plot_path))}")
