"""``unlearnctl config RUN``: the config file that reruns a run, from its manifest (docs/config.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import handle_errors, load_registry, print_config_text


def register(app: typer.Typer) -> None:
    """Add ``config`` to the ``unlearnctl`` app."""

    @app.command("config")
    @handle_errors
    def config_command(
        run: Annotated[
            Path,
            typer.Argument(metavar="RUN_OR_MANIFEST", help="A run folder or its manifest.json.", show_default=False),
        ],
        fmt: Annotated[str, typer.Option("--format", help="toml, yaml or json.")] = "toml",
    ) -> None:
        """Print the config file that reruns a `forget` or `train` run, from its manifest.

        The same file `forget --print-config` (or `train --print-config`) prints:
        unlearnctl config runs/two > two.toml; unlearnctl forget --config two.toml --out runs/again
        reruns the run (same weights' sha256 on the same CPU). `replay --verify` also checks the inputs by hash.
        """
        from ..commands.forget_config import forget_config_of
        from ..commands.train import train_config_of
        from ..config_files import check_config_format
        from ..manifest import read_manifest

        fmt = check_config_format(fmt, "--format")
        manifest = read_manifest(run)
        of = train_config_of if manifest.kind == "train" else forget_config_of
        print_config_text(of(manifest, load_registry()).render(fmt))
