"""The hook implementations of the ``mlflow`` plugin (entry point ``mlflow = "unlearnctl_mlflow.plugin"``).

Only the lifecycle hooks, each delegating to unlearnctl's tracker driver (:class:`unlearnctl.tracking.TrackerHooks`):
nothing happens unless ``UNLEARNCTL_REPORT_TO`` names ``mlflow`` (or ``all``). MLflow itself is imported with
:mod:`unlearnctl_mlflow.tracker`, on the first run that is tracked, never when unlearnctl starts or lists its plugins.
"""

from __future__ import annotations

from typing import Any

import unlearnctl
from unlearnctl.tracking import Tracker, TrackerHooks


def _tracker() -> type[Tracker]:
    from .tracker import MlflowTracker  # imports mlflow

    return MlflowTracker


hooks = TrackerHooks("mlflow", _tracker)
#: end the MLflow runs (as FAILED) whose unlearnctl run never finished; registered at exit, tests call it
close_open_runs = hooks.close_open_runs


@unlearnctl.hookimpl
def run_started(run: unlearnctl.RunInfo) -> None:
    hooks.run_started(run)


@unlearnctl.hookimpl
def step_logged(run: unlearnctl.RunInfo, step: int, values: dict[str, Any]) -> None:
    hooks.step_logged(run, step, values)


@unlearnctl.hookimpl
def run_finished(run: unlearnctl.RunInfo, result: Any) -> None:
    hooks.run_finished(run, result)
