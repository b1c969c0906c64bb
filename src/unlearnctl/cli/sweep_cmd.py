"""``unlearnctl sweep SPEC``: run a study (methods x settings x forget sets x seeds), resumably."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .common import (
    checked_config_format,
    console,
    err_console,
    handle_errors,
    load_registry,
    print_config_text,
    print_json,
    print_warning,
)
from .options import ConfigFormatOption, JsonFlag, PrintConfigFlag, StudyOutOption

_STATUS_STYLE = {"done": "green", "failed": "red", "blocked": "red", "interrupted": "yellow", "pending": "dim"}
#: the statuses of a cell that is through with this sweep (``failed``: after its retries); an ``interrupted``
#: cell is not (the next sweep resumes it), nor is one about to be retried
FINISHED = ("done", "failed", "blocked")


class RichSweepReporter:
    """A bar over the cells to run (finished / total, time left), and a line per cell that ends.

    The bar counts the cells this sweep is through with (:data:`FINISHED`): a stopped sweep does not show its
    interrupted cells as done."""

    def __init__(self, out: Console) -> None:
        self.console = out
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[running]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=out,
        )
        self.task: Any = None
        self.running: dict[str, str] = {}

    def _update(self, advance: int = 0) -> None:
        names = ", ".join(self.running.values())
        text = f"running: {names}" if names else ""
        self.progress.update(self.task, advance=advance, running=escape(text[:80]))

    def started(self, total: int, skipped: int, todo: int, jobs: int, executor: str) -> None:
        self.console.print(
            f"study: {total} cells, {skipped} done already, {todo} to run; executor {escape(executor)}, "
            f"{jobs} at a time"
        )
        self.progress.start()
        self.task = self.progress.add_task("cells", total=todo, running="")

    def cell_started(self, cell: Any, stage: str) -> None:
        self.running[cell.id] = cell.id + ("" if stage == "fresh" else f" ({stage})")
        self._update()

    def cell_finished(self, cell: Any, record: dict[str, Any], retrying: bool) -> None:
        self.running.pop(cell.id, None)
        status = record["status"]
        seconds = record.get("seconds")
        took = f" in {seconds:.0f} s" if isinstance(seconds, int | float) else ""
        if retrying:
            line = f"[yellow]retry[/] {escape(cell.id)}: failed{took} (attempt {record['attempts']}), running it again"
        else:
            style = _STATUS_STYLE.get(status, "")
            line = f"[{style}]{status}[/] {escape(cell.id)}{took}"
            if status in ("failed", "blocked") and record.get("error"):
                last = str(record["error"]).strip().splitlines()[-1:]
                line += f": {escape(last[0]) if last else ''}"
        self.progress.console.print(line)
        self._update(1 if status in FINISHED and not retrying else 0)

    def stop(self) -> None:
        self.progress.stop()


def cells_table(cells: list[Any], statuses: dict[str, str]) -> Table:
    table = Table(title="cells", title_justify="left")
    for name in ("cell", "role", "method", "options", "forget set", "seed", "status"):
        table.add_column(name, overflow="fold")
    for cell in cells:
        opts = ", ".join(f"{k}={v}" for k, v in cell.options.items()) or "-"
        table.add_row(
            escape(cell.id), cell.role, escape(cell.method or "-"), escape(opts), escape(cell.forget_label or "-"),
            str(cell.seed), statuses.get(cell.id, "pending"),
        )  # fmt: skip
    return table


def register(app: typer.Typer) -> None:
    """Add ``sweep`` to the ``unlearnctl`` app."""

    @app.command("sweep")
    @handle_errors
    def sweep_command(
        ctx: typer.Context,
        spec: Annotated[
            Path,
            typer.Argument(
                metavar="SPEC",
                help="The study spec: a .toml, .yaml or .json file (docs/sweep.md).",
                show_default=False,
            ),
        ],
        out: StudyOutOption = None,
        jobs: Annotated[
            int | None,
            typer.Option(
                "--jobs",
                "-j",
                min=1,
                help="Cells run at once [default: the spec's, else the executor's: local: 1].",
                show_default=False,
            ),
        ] = None,
        executor: Annotated[
            str | None,
            typer.Option(
                "--executor",
                help="Where cells run: local, or a plugin's (`unlearnctl list executors`) "
                "[default: the spec's, else local].",
                show_default=False,
            ),
        ] = None,
        executor_options: Annotated[
            list[str] | None,
            typer.Option(
                "--executor-option",
                help="Executor option KEY=VALUE (`unlearnctl show executor NAME`); repeatable.",
                show_default=False,
            ),
        ] = None,
        address: Annotated[
            str | None,
            typer.Option(
                "--address",
                help="The cluster to run on, for an executor that takes one (ray: `auto`, or HOST:PORT); short for "
                "--executor-option address=ADDRESS.",
                show_default=False,
            ),
        ] = None,
        retries: Annotated[
            int, typer.Option("--retries", min=0, help="Run a failing cell again this many times before reporting it.")
        ] = 1,
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="List the cells and what each still needs; run nothing.")
        ] = False,
        print_config: PrintConfigFlag = False,
        config_format: ConfigFormatOption = "toml",
        json_output: JsonFlag = False,
    ) -> None:
        """Run a study from SPEC: every method x option setting x forget set x seed is a cell (a forget run,
        then eval), in one study folder with an index (study.json). Run it again to resume: finished cells
        are skipped, a cut-short forget resumes from its checkpoint, a failed cell is retried, then reported.

        Example: unlearnctl sweep docs/studies/smoke.toml --jobs 2, then unlearnctl compare studies/smoke
        """
        from ..commands.sweep import SweepRequest, prepare_sweep, run_sweep, summary_counts
        from ..commands.sweep_index import disk_state, read_index

        fmt = checked_config_format(ctx, print_config, config_format)
        options = [*(executor_options or []), *([f"address={address}"] if address is not None else [])]
        request = SweepRequest(spec, out, jobs, executor, options, retries)
        prepared = prepare_sweep(request, load_registry())
        if fmt is not None:
            from ..commands.sweep import resolved_spec

            print_config_text(resolved_spec(prepared, fmt))
            return
        if dry_run:
            statuses = {c.id: disk_state(prepared.study, c).stage for c in prepared.cells}
            if json_output:
                needs = [{"id": k, "needs": v} for k, v in statuses.items()]
                print_json({"study": str(prepared.study), "cells": needs})
                return
            console.print(cells_table(prepared.cells, statuses))
            counts = {s: list(statuses.values()).count(s) for s in sorted(set(statuses.values()))}
            console.print("needs: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
            return
        # with --json, stdout holds the JSON alone: progress goes to stderr
        reporter = RichSweepReporter(err_console if json_output else console)
        try:
            result = run_sweep(prepared, reporter)
        finally:
            reporter.stop()
        index = read_index(prepared.study) or result.index
        if json_output:
            print_json({"study": str(result.study), "counts": summary_counts(index), "seconds": result.seconds,
                        "failed": result.failed, "blocked": result.blocked})  # fmt: skip
        else:
            counts = summary_counts(index)
            console.print(
                f"study {escape(str(result.study))}: "
                + ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
                + f" ({len(result.done)} run now in {result.seconds:.0f} s); "
                f"compare with: unlearnctl compare {escape(str(result.study))}"
            )
        if not result.ok:
            for cell_id in result.failed + result.blocked:
                print_warning(f"cell {cell_id} did not finish: see {result.study}/logs/{cell_id}.log")
            raise typer.Exit(1)
