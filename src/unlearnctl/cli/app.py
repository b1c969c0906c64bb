"""The typer application: global options, then every command module's ``register(app)``."""

from __future__ import annotations

import importlib
from typing import Annotated

import typer

from .common import OneLineErrorsGroup

#: command modules in the order their commands appear in ``--help``
COMMAND_MODULES: tuple[str, ...] = (
    "forget_cmd",
    "eval_cmd",
    "noise_floor_cmd",
    "audit_cmd",
    "sample_cmd",
    "train_cmd",
    "runs_cmd",
    "judge_cmd",
    "sweep_cmd",
    "compare_cmd",
    "report_cmd",
    "replay_cmd",
    "config_cmd",
    "verify_cmd",
    "plugins_cmd",
)

app = typer.Typer(
    name="unlearnctl",
    cls=OneLineErrorsGroup,
    no_args_is_help=True,
    add_completion=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"unlearnctl {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", "-V", help="Print the version and exit.", callback=_version_callback, is_eager=True),
    ] = False,
) -> None:
    """Remove the influence of chosen training data from a trained diffusion model (EraseDiff and baselines).

    Exit codes (docs/errors.md): 0 success, 1 environmental failure (disk full, permissions, memory),
    2 bad input, 130/143/129 interrupted (Ctrl-C/SIGTERM/SIGHUP); each failure is one line on stderr.
    UNLEARNCTL_DEBUG=1 shows tracebacks; UNLEARNCTL_DISABLE_PLUGINS=a,b skips plugins by name.
    """


for _module in COMMAND_MODULES:
    importlib.import_module(f"{__package__}.{_module}").register(app)
