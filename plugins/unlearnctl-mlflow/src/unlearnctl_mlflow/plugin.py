"""The hook implementations of the ``mlflow`` plugin (entry point ``mlflow = "unlearnctl_mlflow.plugin"``).

Only the lifecycle hooks: nothing is registered. Each hook returns at once unless ``UNLEARNCTL_REPORT_TO``
names ``mlflow`` (or ``all``); MLflow itself is imported in :mod:`unlearnctl_mlflow.tracker`, on the first
run that is tracked, never when unlearnctl starts or lists its plugins.
"""

from __future__ import annotations

import atexit
from typing import Any

import unlearnctl

from .records import wanted

TRACKER = "mlflow"

#: the tracked runs of this process, by the identity of unlearnctl's run object (one object per run)
_OPEN: dict[int, Any] = {}
_atexit_registered = False


@unlearnctl.hookimpl
def run_started(run: unlearnctl.RunInfo) -> None:
    if not wanted(TRACKER, run):
        return
    from .tracker import MlflowTracker  # imports mlflow: only now that a run is tracked

    _close_at_exit()
    tracked = MlflowTracker.start(run)  # raises TrackingFailed: one warning, and the run goes on untracked
    _OPEN[id(run)] = (run, tracked)


@unlearnctl.hookimpl
def step_logged(run: unlearnctl.RunInfo, step: int, values: dict[str, float]) -> None:
    entry = _OPEN.get(id(run))
    if entry is not None and entry[0] is run:
        entry[1].step(run, step, values)


@unlearnctl.hookimpl
def run_finished(run: unlearnctl.RunInfo, result: Any) -> None:
    entry = _OPEN.get(id(run))
    if entry is None or entry[0] is not run:
        return
    del _OPEN[id(run)]
    entry[1].finish(run, result)


def _close_at_exit() -> None:
    """A run that fails or is interrupted gets no ``run_finished``: mark its MLflow run FAILED at exit
    (``forget --resume`` sets it running again)."""
    global _atexit_registered
    if not _atexit_registered:
        atexit.register(close_open_runs)
        _atexit_registered = True


def close_open_runs(status: str = "FAILED") -> None:
    """End the tracked runs whose unlearnctl run never finished (at exit; tests call it directly)."""
    while _OPEN:
        _, (_, tracked) = _OPEN.popitem()
        tracked.abort(status)
