"""``unlearnctl report RUN_OR_STUDY ... --out report.html``: one self-contained HTML page (docs/report.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from .common import console, handle_errors, load_registry, print_json, print_warning
from .options import JsonFlag, ReportFileOption


def register(app: typer.Typer) -> None:
    """Add ``report`` to the ``unlearnctl`` app."""

    @app.command("report")
    @handle_errors
    def report_command(
        folders: Annotated[
            list[Path],
            typer.Argument(
                metavar="RUN_OR_STUDY...",
                help="Run folders (of `unlearnctl forget`, evaluated or not), eval/audit results folders, or "
                "study folders of `unlearnctl sweep`.",
                show_default=False,
            ),
        ],
        out: ReportFileOption = Path("report.html"),
        overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out file.")] = False,
        title: Annotated[
            str | None, typer.Option("--title", help="The page's title (default: from the runs' names).")
        ] = None,
        json_output: JsonFlag = False,
    ) -> None:
        """One static HTML page, viewable offline (images inlined, no script): per run the before/after sample
        grids, the metrics with their deltas to the base model, the audit results, the loss and lambda curves
        of log.jsonl and a manifest summary; across runs an overview table and the forgetting-vs-FID plot; per
        sweep study the tables of `compare STUDY` with intervals, its trade-off plot and each group's samples."""
        from ..commands.report import write_report

        result = write_report(folders, out, overwrite=overwrite, registry=load_registry(), title=title)
        if json_output:
            print_json(
                {
                    "out": str(result.path),
                    "bytes": result.bytes,
                    "seconds": round(result.seconds, 3),
                    "folders": result.entries,
                    "images": result.images,
                    "warnings": result.warnings,
                }
            )
            return
        for warning in result.warnings:
            print_warning(warning)
        console.print(
            f"wrote {escape(str(result.path))} ({result.bytes / 1024:.0f} KiB, {result.entries} folder(s), "
            f"{result.images} image(s), {result.seconds:.2f} s)"
        )
