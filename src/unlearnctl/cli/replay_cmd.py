"""``unlearnctl replay``: rerun a recorded run and, with ``--verify``, check its output weights."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import (
    command_line,
    console,
    err_console,
    handle_errors,
    load_registry,
    print_data_warnings,
    print_json,
    print_warning,
)
from .options import DataDirOption, JsonFlag, RecordedDeviceOption, run_out_option
from .verify_cmd import NoVerifyFlag


def register(app: typer.Typer) -> None:
    """Add ``replay`` to the ``unlearnctl`` app."""

    @app.command("replay")
    @handle_errors
    def replay_command(
        ctx: typer.Context,
        manifest: Annotated[Path, typer.Argument(help="RUN/manifest.json (or the run folder).")],
        verify: Annotated[
            bool, typer.Option("--verify", help="Require the output weights' sha256 to match the recorded one.")
        ] = False,
        out: Annotated[Path | None, run_out_option("runs/<UTC time>-replay-<method>-<model>/")] = None,
        device: RecordedDeviceOption = None,
        data_dir: DataDirOption = None,
        no_verify: NoVerifyFlag = False,
        json_output: JsonFlag = False,
    ) -> None:
        """Rerun a `forget` run from its manifest: same inputs (checked by hash), options and seed.

        With --verify the new output weights must hash to the recorded sha256 (bit-identical on CPU). The dataset
        read from --data-dir must still have the recorded fingerprint.
        """
        from ..commands.replay import prepare_replay, run_replay
        from .forget_cmd import print_run_summary, run_json
        from .progress import attach_progress

        registry = load_registry()
        prepared = prepare_replay(
            manifest,
            out=out,
            device=device,
            verify=verify,
            registry=registry,
            command=command_line(ctx),
            data_dir=data_dir,
        )
        main = prepared.prepared.world.is_main
        if main:
            print_data_warnings(prepared.prepared.dataset.warnings)
            for warning in prepared.warnings:
                print_warning(f"environment differs from the recorded run: {warning}")
        with attach_progress(registry, err_console if json_output else console):
            result = run_replay(prepared)
        if not main:
            return
        if json_output:
            print_json({**run_json(result), "verified": result.verified, "warnings": result.warnings})
            return
        print_run_summary(result, "replay: done")
        if result.verified:
            console.print(
                f"[green]verified:[/] output weights match the recorded sha256 {result.manifest.weights.output_sha256}"
            )
