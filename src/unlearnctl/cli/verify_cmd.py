"""``unlearnctl verify RUN``: every file of a run folder against its recorded sha256; and ``--no-verify``.

``NoVerifyFlag`` is the ``--no-verify`` option of the commands that read run folders (``eval``,
``sample``, ``replay``, ``compare``...): it turns :func:`unlearnctl.integrity.check_run` off until the
command ends.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.markup import escape

from .common import console, handle_errors, load_registry, print_json, print_warning
from .options import DataDirOption, JsonFlag


def _no_verify(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    """Skip the run-folder checks while this command runs (reset when its context closes)."""
    if value:
        from ..integrity import reset_run_checks, set_run_checks

        token = set_run_checks(False)
        ctx.call_on_close(lambda: reset_run_checks(token))
    return value


#: ``no_verify: NoVerifyFlag = False``: ``--no-verify`` for a command that reads run folders
NoVerifyFlag = Annotated[
    bool,
    typer.Option(
        "--no-verify",
        help="Read run folders without checking their files against the recorded sha256 (see `unlearnctl verify`).",
        callback=_no_verify,
    ),
]


def _print_report(report: Any) -> None:
    shown = [f for f in report.files if f.status not in ("ok", "extra", "unchecked")]
    for check in shown:
        console.print(f"  [red]{check.status:<9}[/] {escape(check.path)}")
    counts: dict[str, int] = {}
    for check in report.files:
        counts[check.status] = counts.get(check.status, 0) + 1
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    model = ", ".join(f"{k} {v}" for k, v in report.model.items())
    dataset = f"; dataset {report.dataset['status']}" if report.dataset else ""
    if report.ok:
        console.print(
            f"[green]verified:[/] {escape(str(report.run_dir))}: {summary} files; {model}{dataset} "
            f"({report.seconds:.2f} s)"
        )


def register(app: typer.Typer) -> None:
    """Add ``verify`` to the ``unlearnctl`` app."""

    @app.command("verify")
    @handle_errors
    def verify_command(
        run: Annotated[Path, typer.Argument(help="Run folder (or its manifest.json).")],
        data: Annotated[
            bool,
            typer.Option(
                "--data", help="Also load the run's dataset, hash every file again and compare its fingerprint."
            ),
        ] = False,
        data_dir: DataDirOption = None,
        json_output: JsonFlag = False,
    ) -> None:
        """Check every file of a run folder against the sha256 recorded when it was written.

        A changed or missing file fails (exit code 2, one line naming it); a file no record lists is a
        warning. Runs made before files were recorded check their weights and list what they could not.
        """
        from ..commands.verify import verify

        report = verify(run, data=data, data_dir=data_dir, registry=load_registry() if data else None)
        for warning in report.warnings:
            print_warning(warning)
        if json_output:
            print_json(report.to_json())
        else:
            _print_report(report)
        if report.problems:
            raise report.error()
