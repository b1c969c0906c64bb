"""What every command shares: consoles, the error boundary, the registry with warnings, ``--json``,
the recorded command line. The shared options themselves are in :mod:`unlearnctl.cli.options`.

Errors cross one boundary (docs/errors.md): :func:`errors_handled` turns every exception a command
raises into one red ``error: ...`` line on stderr and a documented exit code: an
:class:`~unlearnctl.errors.UnlearnError` its own (2 bad input, 1 environmental), a damaged image,
manifest or config file 2, a full disk, a file-size limit, a read-only file system, a permission or
out of memory 1, Ctrl-C 130 and SIGTERM/SIGHUP 143/129, anything else 1 as an internal error.
:class:`OneLineErrorsGroup` (the app's click group) puts every command inside it and makes a parse
error (an unknown option, a value of the wrong type) one line as well. ``UNLEARNCTL_DEBUG=1`` re-raises
for the traceback. Inside the same boundary a plugin's failing lifecycle hook (a
:class:`~unlearnctl.PluginHookWarning`) becomes one ``warning:`` line.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import tomllib
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from ..errors import ExitCode, UnlearnError, UsageError, environment_errno, os_error_message, signal_name
from ..lifecycle import PluginHookWarning

if TYPE_CHECKING:
    from ..plugins import PluginFailure
    from ..registry import Registry

F = TypeVar("F", bound=Callable[..., Any])

#: rich output for people (stdout) and for diagnostics (stderr)
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

DEBUG_ENV = "UNLEARNCTL_DEBUG"


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def print_error(message: str) -> None:
    """One red line on stderr: ``error: ...`` (never wrapped; a message with line breaks is joined)."""
    with contextlib.suppress(OSError):  # stderr is gone (a closed terminal, SIGHUP): the exit code still tells
        err_console.print(f"[bold red]error:[/] {escape(one_line(message))}", soft_wrap=True)


def print_warning(message: str) -> None:
    """One yellow line on stderr: ``warning: ...``."""
    err_console.print(f"[yellow]warning:[/] {escape(message)}", soft_wrap=True)


def print_data_warnings(messages: list[str] | None) -> None:
    """The data warnings of a dataset load (files left out...), one ``warning:`` line each."""
    for message in messages or []:
        print_warning(" ".join(str(message).split()))


#: what running out of memory says (exit code 1)
MEMORY_HINT = (
    "out of memory: lower the batch size (--set batch_size=N, --batch-size N) or the number of images "
    "(--num, --num-samples, --grid-per-class)"
)

#: the exceptions of the click that typer runs on (typer >= 0.16 bundles its own copy of click)
_click_errors = sys.modules[typer.BadParameter.__module__]
#: click's and typer's own control flow (exit, abort, a parse error): never an error of ours
_CLICK_FLOW: tuple[type[BaseException], ...] = (
    typer.Exit,
    typer.Abort,
    _click_errors.ClickException,
    getattr(_click_errors, "Exit", typer.Exit),  # older typer: click's own Exit and Abort
    getattr(_click_errors, "Abort", typer.Abort),
)


@contextmanager
def errors_handled() -> Iterator[None]:
    """THE error boundary: any exception becomes one ``error: ...`` line and its exit code
    (:func:`describe_failure`), Ctrl-C exit code 130 and SIGTERM / SIGHUP 143 / 129
    (:func:`interrupt_code`); a plugin's failing lifecycle hook is one ``warning:`` line
    (:func:`hook_warnings_printed`). ``UNLEARNCTL_DEBUG=1`` re-raises instead."""
    try:
        with hook_warnings_printed():
            yield
    except _CLICK_FLOW:
        raise
    except KeyboardInterrupt as exc:
        if debug_enabled():
            raise
        print_error(interrupt_message(exc))
        raise typer.Exit(interrupt_code(exc)) from None
    except Exception as exc:
        if debug_enabled():
            raise
        code, message = describe_failure(exc)
        print_error(message)
        raise typer.Exit(int(code)) from None


def interrupt_code(exc: KeyboardInterrupt) -> int:
    """130 for Ctrl-C (SIGINT); ``128 + signum`` for a stop signal (:class:`~unlearnctl.errors.Interrupted`)."""
    code = getattr(exc, "exit_code", None)
    return int(code) if isinstance(code, int) else int(ExitCode.INTERRUPTED)


def interrupt_message(exc: KeyboardInterrupt) -> str:
    signum = getattr(exc, "signum", None)
    what = f"stopped by {signal_name(signum)}" if isinstance(signum, int) else "interrupted"
    return what + str(getattr(exc, "detail", "") or "")


def describe_failure(exc: BaseException) -> tuple[int, str]:
    """The exit code and the one line for an exception that reached the boundary (docs/errors.md)."""
    if isinstance(exc, UnlearnError):
        return int(exc.exit_code), one_line(str(exc) or type(exc).__name__)
    if _out_of_memory(exc):
        return int(ExitCode.FAILURE), MEMORY_HINT
    if type(exc).__module__.split(".")[0] == "PIL":  # UnidentifiedImageError, DecompressionBombError
        return int(ExitCode.USAGE), one_line(f"bad image: {exc}")
    # pydantic and yaml are looked up, not imported: `--help` must not pay for them (docs/performance.md),
    # and an exception of a module never imported cannot have been raised
    pydantic, yaml = sys.modules.get("pydantic"), sys.modules.get("yaml")
    if pydantic is not None and isinstance(exc, pydantic.ValidationError):
        first: dict[str, Any] = dict(exc.errors(include_url=False)[0]) if exc.error_count() else {}
        where = ".".join(str(part) for part in first.get("loc", ())) or "value"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        return int(ExitCode.USAGE), one_line(f"invalid {exc.title}: {where}: {first.get('msg', exc)}{more}")
    if isinstance(exc, json.JSONDecodeError | tomllib.TOMLDecodeError):
        kind = "JSON" if isinstance(exc, json.JSONDecodeError) else "TOML"
        return int(ExitCode.USAGE), one_line(f"invalid {kind}: {exc}")
    if yaml is not None and isinstance(exc, yaml.YAMLError):
        return int(ExitCode.USAGE), one_line(f"invalid YAML: {exc}")
    if isinstance(exc, UnicodeDecodeError):
        return int(ExitCode.USAGE), one_line(f"a file is not UTF-8 text: {exc}")
    number = environment_errno(exc)
    if number is not None:
        os_error = exc if isinstance(exc, OSError) else OSError(number, os.strerror(number))
        return int(ExitCode.FAILURE), one_line(os_error_message(os_error))
    if isinstance(exc, OSError):
        return int(ExitCode.FAILURE), one_line(str(exc) or type(exc).__name__)
    return int(ExitCode.FAILURE), one_line(
        f"internal error: {type(exc).__name__}: {exc}; please report it with the output of {DEBUG_ENV}=1"
    )


def _out_of_memory(exc: BaseException) -> bool:
    """``MemoryError``, torch's ``OutOfMemoryError`` (CUDA, MPS) or its CPU allocator's failure."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower())


def one_line(text: str) -> str:
    """``text`` on one line (a message that spans lines is joined with ``; ``)."""
    lines = [" ".join(line.split()) for line in str(text).splitlines()]
    return "; ".join(line for line in lines if line)


@contextmanager
def usage_errors_one_line() -> Iterator[None]:
    """A click parse error (unknown option or command, a value of the wrong type, a missing argument) as
    one ``error:`` line naming the command's help, with click's exit code (2 for bad usage)."""
    try:
        yield
    except _click_errors.ClickException as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":
            raise  # `unlearnctl` alone prints the help
        ctx = getattr(exc, "ctx", None)
        see = f" (see '{ctx.command_path} -h')" if ctx is not None else ""
        print_error(one_line(exc.format_message()) + see)
        raise typer.Exit(exc.exit_code) from None


class OneLineErrorsGroup(TyperGroup):
    """The ``unlearnctl`` click group: parsing and every command run inside :func:`errors_handled`, and a
    parse error is one line (:func:`usage_errors_one_line`) like every other error."""

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        with usage_errors_one_line(), errors_handled():
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx: Any) -> Any:
        with usage_errors_one_line(), errors_handled():
            return super().invoke(ctx)


@contextmanager
def hook_warnings_printed() -> Iterator[None]:
    """Inside the block, each :class:`~unlearnctl.PluginHookWarning` is printed by :func:`print_hook_warning`
    (every one: :class:`~unlearnctl.lifecycle.Lifecycle` already reports a plugin's hook once); other
    warnings go where they went before."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", PluginHookWarning)
        shown = warnings.showwarning

        def show(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
            if isinstance(message, PluginHookWarning):
                print_hook_warning(message)
            else:
                shown(message, category, *args, **kwargs)

        warnings.showwarning = show
        yield


def print_hook_warning(warning: PluginHookWarning) -> None:
    """One ``warning:`` line for a plugin whose lifecycle hook raised; its traceback under ``UNLEARNCTL_DEBUG=1``."""
    debug = f"; {DEBUG_ENV}=1 shows the traceback" if not debug_enabled() else ""
    print_warning(f"{warning}; skip the plugin with UNLEARNCTL_DISABLE_PLUGINS={warning.plugin}{debug}")
    if debug_enabled():
        err_console.print(warning.traceback.rstrip(), markup=False, highlight=False, soft_wrap=True)


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


# --- the command line recorded in manifests and metrics.json ---------------------------------------


def command_line(ctx: typer.Context) -> list[str]:
    """The command line a run records (argv without the program name), the same way for every command.

    ``sys.argv[1:]`` as typed when this process is that command (the ``unlearnctl`` console script);
    otherwise (typer's test runner, a program that embeds the CLI) rebuilt from the command's context
    (its ``ctx: typer.Context`` parameter): the command's name, then each parameter given on the
    command line, in the order the command declares them, with its long flag.
    """
    if sys.argv[1:2] == [ctx.info_name]:
        return sys.argv[1:]
    out = [str(ctx.info_name)]
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name) if param.name else None
        if source is None or source.name != "COMMANDLINE":
            continue
        value = ctx.params.get(param.name)
        values = list(value) if isinstance(value, list | tuple) else [value]
        if param.param_type_name == "argument":
            out += [str(v) for v in values]
        elif getattr(param, "is_flag", False):
            out.append(_long_flag(param.opts if value else getattr(param, "secondary_opts", [])))
        else:
            for v in values:
                out += [_long_flag(param.opts), str(v)]
    return out


def given_params(ctx: typer.Context) -> list[str]:
    """The names of the command's parameters given explicitly (on the command line or by an environment
    variable), not left at their default: the request fields a ``--config`` file must not change."""
    given = []
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name) if param.name else None
        if source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT", "PROMPT"):
            given.append(str(param.name))
    return given


def checked_config_format(ctx: typer.Context, print_config: bool, config_format: str) -> str | None:
    """The format ``--print-config`` writes (None: no ``--print-config``); ``--config-format`` alone is refused."""
    from ..config_files import check_config_format

    fmt = check_config_format(config_format)
    if print_config:
        return fmt
    source = ctx.get_parameter_source("config_format")
    if source is not None and source.name == "COMMANDLINE":
        raise UsageError("--config-format says how --print-config writes the config: add --print-config")
    return None


def print_config_text(text: str) -> None:
    """A config file's text on stdout, as it is (no colour, no wrapping: it is meant for a file)."""
    typer.echo(text, nl=False)


def _long_flag(opts: list[str]) -> str:
    return next((o for o in opts if o.startswith("--")), opts[0])
