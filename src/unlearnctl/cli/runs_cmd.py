"""Interrupted runs: ``--resume`` checks, notes about stale partial folders, and ``unlearnctl clean``
(docs/resume.md)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import UsageError
from .common import console, err_console, handle_errors, print_json
from .options import JsonFlag

#: options ``--resume`` may come with (the rest are the interrupted run's own)
RESUME_COMPANIONS = frozenset({"resume", "json_output"})


def only_resume(ctx: typer.Context, command: str) -> None:
    """``--resume`` takes the interrupted run's options: refuse any other option given with it."""
    given = [
        p.opts[0] if p.opts else str(p.name)
        for p in ctx.command.params
        if p.name not in RESUME_COMPANIONS
        and (source := ctx.get_parameter_source(p.name or "")) is not None
        and source.name == "COMMANDLINE"
    ]
    if given:
        raise UsageError(
            f"{command} --resume continues the interrupted run with its own options: drop {', '.join(given)}"
        )


def is_main_process() -> bool:
    from ..distributed import main_process_env

    return main_process_env()


def print_stale_runs(folder: Path) -> None:
    """One note per interrupted run in ``folder`` that no process is writing (main process only)."""
    if not is_main_process():
        return
    from ..inprogress import find_stale

    for p in find_stale(folder):
        if p.resumable:
            err_console.print(
                f"note: '{p.final}' was interrupted after step {p.step}"
                + (f" of {p.total_steps}" if p.total_steps else "")
                + f": resume it with `{p.resume_command()}`, or remove it with `unlearnctl clean {folder}`",
                highlight=False,
            )
        else:
            err_console.print(
                f"note: '{p.path}' is left from an interrupted run that cannot be resumed: remove it with "
                f"`unlearnctl clean {folder}`",
                highlight=False,
            )


def register(app: typer.Typer) -> None:
    @app.command("clean")
    @handle_errors
    def clean_command(
        folder: Annotated[Path, typer.Argument(help="Folder of run folders.")] = Path("runs"),
        yes: Annotated[bool, typer.Option("--yes", "-y", help="Remove without asking.")] = False,
        json_output: JsonFlag = False,
    ) -> None:
        """Remove the partial folders that interrupted runs left in FOLDER (runs no process is writing).

        Each is listed with the command that would resume it; nothing is removed without --yes or a yes
        at the prompt. Example: unlearnctl clean runs --yes
        """
        from ..inprogress import find_stale

        if not folder.is_dir():
            raise UsageError(f"'{folder}' is not a folder: pass the folder that holds the run folders")
        stale = find_stale(folder)
        if json_output and not yes:
            print_json({"stale": [_describe(p) for p in stale], "removed": []})
            return
        if not stale:
            if not json_output:
                console.print(f"no interrupted runs in '{folder}'")
            else:
                print_json({"stale": [], "removed": []})
            return
        for p in stale:
            how = f"resumable: `{p.resume_command()}`" if p.resumable else "not resumable (no checkpoint)"
            console.print(f"{p.path}  ({p.command or 'unknown command'}, {how})", highlight=False)
        if not yes and not typer.confirm(f"remove these {len(stale)} folder(s)?", default=False):
            console.print("nothing removed")
            return
        removed = []
        for p in stale:
            shutil.rmtree(p.path)
            removed.append(str(p.path))
        if json_output:
            print_json({"stale": [_describe(p) for p in stale], "removed": removed})
        else:
            console.print(f"removed {len(removed)} folder(s)")


def _describe(p: Any) -> dict[str, Any]:
    return {
        "path": str(p.path),
        "run_folder": str(p.final),
        "command": p.command,
        "step": p.step,
        "total_steps": p.total_steps,
        "resume": p.resume_command() if p.resumable else None,
    }
