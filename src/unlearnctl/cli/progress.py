"""A rich progress bar driven by the lifecycle hooks (the core never imports rich).

The CLI registers a :class:`RichProgress` on the plugin manager around a command that runs something::

    with attach_progress(registry, console):
        run_forget(...)          # the run calls Lifecycle.step_logged(run=..., step=..., values=...)

It is a hook implementation like any tracker's: it only reads the documented
:class:`~unlearnctl.RunInfo` attributes (``description``, ``total_steps``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from ..hookspecs import hookimpl

PLUGIN_NAME = "unlearnctl.cli.progress"
#: at most this many values are shown next to the bar
MAX_VALUES = 5


def format_values(values: Mapping[str, Any], limit: int = MAX_VALUES) -> str:
    """``{"loss": 0.12345, "lambda": 0.5}`` -> ``"loss=0.1235 lambda=0.5"`` (numbers only, compact)."""
    parts = []
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if key in ("step", "time", "elapsed", "elapsed_s"):
            continue
        parts.append(f"{key}={value:.4g}")
        if len(parts) == limit:
            break
    return " ".join(parts)


class RichProgress:
    """One progress bar per run: description, steps done / total, the latest values, time left."""

    def __init__(self, console: Console | None = None) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[values]}"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.tasks: dict[int, TaskID] = {}
        self.started = False

    def _task(self, run: Any) -> TaskID:
        key = id(run)
        if key not in self.tasks:
            if not self.started:
                self.progress.start()
                self.started = True
            total = getattr(run, "total_steps", None)
            self.tasks[key] = self.progress.add_task(str(getattr(run, "description", "run")), total=total, values="")
        return self.tasks[key]

    @hookimpl
    def run_started(self, run: Any) -> None:
        self._task(run)

    @hookimpl
    def step_logged(self, run: Any, step: int, values: dict[str, float]) -> None:
        # total_steps may become known only once the run has started (train-judge)
        total = getattr(run, "total_steps", None)
        self.progress.update(self._task(run), total=total, completed=step, values=format_values(values))

    @hookimpl
    def run_finished(self, run: Any, result: Any) -> None:
        total = getattr(run, "total_steps", None)
        if total is not None:
            self.progress.update(self._task(run), completed=total)

    def stop(self) -> None:
        if self.started:
            self.progress.stop()
            self.started = False


@contextmanager
def attach_progress(registry: Any, console: Console | None = None) -> Iterator[RichProgress]:
    """Show progress bars for the runs started inside the ``with`` block (registered on ``registry.pm``)."""
    progress = RichProgress(console)
    registry.pm.register(progress, name=f"{PLUGIN_NAME}.{id(progress)}")
    try:
        yield progress
    finally:
        progress.stop()
        registry.pm.unregister(progress)
