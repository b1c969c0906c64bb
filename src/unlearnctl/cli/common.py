"""What every command shares: consoles, the error boundary, the registry with warnings, ``--json``.

Errors cross one boundary: the core raises :class:`~unlearnctl.errors.UnlearnError` subclasses, and
:func:`handle_errors` (a decorator) or :func:`errors_handled` (a context manager) turns them into one
red line on stderr and the error's exit code. ``UNLEARNCTL_DEBUG=1`` re-raises for the traceback.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import ExitCode, UnlearnError

if TYPE_CHECKING:
    from ..plugins import PluginFailure
    from ..registry import Registry

F = TypeVar("F", bound=Callable[..., Any])

#: rich output for people (stdout) and for diagnostics (stderr)
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

DEBUG_ENV = "UNLEARNCTL_DEBUG"

#: ``json_output: JsonFlag = False``: the ``--json`` flag of commands that report results
JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]

#: ``data_dir: DataDirOption = None``: ``--data-dir DIR``, the folder of the dataset's files
DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Folder of the dataset's files (default: $UNLEARNCTL_DATA_DIR, else the platform's data folder).",
        show_default=False,
    ),
]

#: ``data_options: DataOptions = None``: ``--data-option KEY=VALUE``, repeatable
DataOptions = Annotated[
    list[str] | None,
    typer.Option(
        "--data-option",
        help="Dataset option KEY=VALUE, e.g. download=true (`unlearnctl show dataset NAME`); repeatable.",
        show_default=False,
    ),
]


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def print_error(message: str) -> None:
    """One red line on stderr: ``error: ...`` (never wrapped)."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)


def print_warning(message: str) -> None:
    """One yellow line on stderr: ``warning: ...``."""
    err_console.print(f"[yellow]warning:[/] {escape(message)}", soft_wrap=True)


def print_data_warnings(messages: list[str] | None) -> None:
    """The data warnings of a dataset load (files left out...), one ``warning:`` line each."""
    for message in messages or []:
        print_warning(" ".join(str(message).split()))


@contextmanager
def errors_handled() -> Iterator[None]:
    """Turn ``UnlearnError`` into ``error: ...`` + its exit code, and Ctrl-C into exit code 130."""
    try:
        yield
    except UnlearnError as exc:
        if debug_enabled():
            raise
        print_error(str(exc) or type(exc).__name__)
        raise typer.Exit(int(exc.exit_code)) from None
    except KeyboardInterrupt:
        if debug_enabled():
            raise
        print_error("interrupted")
        raise typer.Exit(int(ExitCode.INTERRUPTED)) from None


def handle_errors(fn: F) -> F:
    """Decorator form of :func:`errors_handled` for a typer command (keeps its signature)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with errors_handled():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


_warned = False


def load_registry(warn: bool = True) -> Registry:
    """The process-wide registry (built on first use); with ``warn``, one stderr line per failed plugin.

    Commands call this instead of ``get_registry()`` so that broken plugins are reported without
    breaking the command. The warnings are printed once per process.
    """
    global _warned
    from ..registry import get_registry

    registry = get_registry()
    if warn and not _warned:
        _warned = True
        for failure in registry.failures:
            print_plugin_failure(failure)
    return registry


def print_plugin_failure(failure: PluginFailure) -> None:
    """One ``warning:`` line for a failed plugin (with the file and line in the plugin) or a refused
    component; under ``UNLEARNCTL_DEBUG=1`` the plugin's traceback follows it."""
    if failure.stage == "component":
        print_warning(f"{failure.summary()} (see `unlearnctl plugins`)")
    else:
        where = f"at {failure.location}; " if failure.location else ""
        debug = f"; {DEBUG_ENV}=1 shows the traceback" if failure.traceback and not debug_enabled() else ""
        print_warning(
            f"plugin '{failure.name}' failed to {failure.stage}: {failure.error} ({where}see `unlearnctl plugins`; "
            f"skip it with UNLEARNCTL_DISABLE_PLUGINS={failure.name}{debug})"
        )
    if debug_enabled() and failure.traceback:
        err_console.print(failure.traceback.rstrip(), markup=False, highlight=False, soft_wrap=True)


def reset_warnings() -> None:
    """Let :func:`load_registry` warn again (for tests)."""
    global _warned
    _warned = False


def to_json(data: Any) -> str:
    """JSON text for ``--json`` output (paths and other objects become strings)."""
    return json.dumps(data, indent=2, default=str, ensure_ascii=False)


def print_json(data: Any) -> None:
    """Write ``data`` as JSON on stdout, plain (no colour, no wrapping), for machines."""
    typer.echo(to_json(data))
