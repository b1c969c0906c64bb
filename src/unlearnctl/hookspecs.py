"""The plugin contract: hook specifications of unlearnctl.

A plugin is a module (or object) with functions marked ``@unlearnctl.hookimpl`` whose names are
the hooks below, published through the ``unlearnctl`` entry-point group::

    [project.entry-points.unlearnctl]
    my_plugin = "my_package.plugin"

Every ``register_*`` hook has one shape: unlearnctl passes a ``register`` callable and the plugin
calls it once per component *class* it provides. Built-in components register through these same
hooks. A hook implementation may accept fewer arguments than its spec.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

PROJECT = "unlearnctl"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Register = Callable[[type], None]


@hookspec
def register_datasets(register: Register) -> None:
    """Register dataset components (subclasses of :class:`unlearnctl.Dataset`).

    Called once per plugin when the registry is built.

    :param register: call ``register(MyDataset)`` once per dataset class.

    .. versionadded:: 0.1
    """


@hookspec
def register_selectors(register: Register) -> None:
    """Register forget-set selectors (subclasses of :class:`unlearnctl.Selector`).

    :param register: call ``register(MySelector)`` once per selector class.

    .. versionadded:: 0.1
    """


@hookspec
def register_methods(register: Register) -> None:
    """Register unlearning methods (subclasses of :class:`unlearnctl.Method`).

    :param register: call ``register(MyMethod)`` once per method class.

    .. versionadded:: 0.1
    """


@hookspec
def register_models(register: Register) -> None:
    """Register model presets (subclasses of :class:`unlearnctl.ModelPreset`).

    :param register: call ``register(MyModel)`` once per model class.

    .. versionadded:: 0.1
    """


@hookspec
def register_metrics(register: Register) -> None:
    """Register evaluation metrics (subclasses of :class:`unlearnctl.Metric`).

    :param register: call ``register(MyMetric)`` once per metric class.

    .. versionadded:: 0.1
    """


@hookspec
def run_started(run: Any) -> None:
    """Called when a run (``forget``, ``train``, ``eval``) starts, before its first step.

    :param run: the run object; ``run.out_dir``, ``run.config`` and ``run.total_steps`` are set.

    .. versionadded:: 0.1
    """


@hookspec
def step_logged(run: Any, step: int, values: dict[str, float]) -> None:
    """Called each time the runner logs a step (the same values go to ``log.jsonl``).

    :param run: the run object.
    :param step: the 1-based optimizer step just finished.
    :param values: losses, lambda, learning rate, elapsed seconds...

    .. versionadded:: 0.1
    """


@hookspec
def run_finished(run: Any, result: Any) -> None:
    """Called once a run has finished and its folder is complete.

    :param run: the run object.
    :param result: the command's result (for ``forget``: the manifest).

    .. versionadded:: 0.1
    """
