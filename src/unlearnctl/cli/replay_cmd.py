"""``unlearnctl replay``: rerun a recorded run and, with ``--verify``, check its output weights."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import (
    JsonFlag,
    console,
    err_console,
    handle_errors,
    load_registry,
    print_data_warnings,
    print_json,
    print_warning,
)


def register(app: typer.Typer) -> None:
    """Add ``replay`` to the ``unlearnctl`` app."""

    @app.command("replay")
    @handle_errors
    def replay_command(
        manifest: Annotated[Path, typer.Argument(help="RUN/manifest.json (or the run folder).")],
        verify: Annotated[
            bool, typer.Option("--verify", help="Require the output weights' sha256 to match the recorded one.")
        ] = False,
        out: Annotated[
            Path | None, typer.Option("--out", "-o", help="Run folder to create [default: runs/<UTC time>-replay-...].")
        ] = None,
        device: Annotated[
            str | None, typer.Option("--device", help="Device to rerun on [default: the recorded device].")
        ] = None,
        data_dir: Annotated[
            Path | None,
            typer.Option(
                "--data-dir",
                help="Folder of the dataset's files (default: the recorded one); its fingerprint must still match.",
                show_default=False,
            ),
        ] = None,
        json_output: JsonFlag = False,
    ) -> None:
        """Rerun a `forget` run from its manifest: same inputs (checked by hash), options and seed.

        With --verify the new output weights must hash to the recorded sha256 (bit-identical on CPU).
        """
        from ..commands.replay import prepare_replay, run_replay
        from .forget_cmd import command_line, print_run_summary, run_json
        from .progress import attach_progress

        registry = load_registry()
        command = command_line(
            "replay",
            [
                ("", manifest),
                ("--verify", verify),
                ("--out", out),
                ("--device", device),
                ("--data-dir", data_dir),
                ("--json", json_output),
            ],
        )
        prepared = prepare_replay(
            manifest, out=out, device=device, verify=verify, registry=registry, command=command, data_dir=data_dir
        )
        print_data_warnings(prepared.prepared.dataset.warnings)
        for warning in prepared.warnings:
            print_warning(f"environment differs from the recorded run: {warning}")
        with attach_progress(registry, err_console if json_output else console):
            result = run_replay(prepared)
        if json_output:
            print_json({**run_json(result), "verified": result.verified, "warnings": result.warnings})
            return
        print_run_summary(result, "replay: done")
        if result.verified:
            console.print(
                f"[green]verified:[/] output weights match the recorded sha256 {result.manifest.weights.output_sha256}"
            )
