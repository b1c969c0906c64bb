"""The plugin contract: hook specifications of unlearnctl.

A plugin is a module (or object) with functions marked ``@unlearnctl.hookimpl`` whose names are
the hooks below, published through the ``unlearnctl`` entry-point group::

    [project.entry-points.unlearnctl]
    my_plugin = "my_package.plugin"

Every ``register_*`` hook has one shape: unlearnctl passes a ``register`` callable and the plugin
calls it once per component *class* it provides. Built-in components register through these same
hooks. A hook implementation may accept fewer arguments than its spec.

The lifecycle hooks (``run_started``, ``step_logged``, ``run_finished``) are for progress bars,
trackers and loggers; each run calls them through :class:`unlearnctl.lifecycle.Lifecycle`, which keeps
a failing listener from breaking the run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .lifecycle import RunInfo

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
def register_attacks(register: Register) -> None:
    """Register attacks for ``unlearnctl audit`` (subclasses of :class:`unlearnctl.Attack`).

    :param register: call ``register(MyAttack)`` once per attack class.

    .. versionadded:: 0.1
    """


@hookspec
def register_executors(register: Register) -> None:
    """Register executors for ``unlearnctl sweep`` (subclasses of :class:`unlearnctl.Executor`).

    :param register: call ``register(MyExecutor)`` once per executor class.

    .. versionadded:: 0.1
    """


@hookspec
def run_started(run: RunInfo) -> None:
    """Called once when a run starts, before its first step: ``forget``, ``replay``, ``train``,
    ``train-judge``, ``eval``, ``audit`` and ``sample`` fire it (see ``docs/plugins.md``, "Listening to runs").

    :param run: a :class:`unlearnctl.RunInfo` (for ``forget`` and ``replay``: the method's
        :class:`unlearnctl.UnlearnRun`, a subclass), the same object in all three lifecycle hooks of the
        run: ``kind``, ``out_dir``, ``work_dir``, ``config``, ``total_steps``, ``description``, ``seed``,
        ``extra``. ``run.out_dir`` is always the final folder, which may not exist until the run has
        finished; files are being written in ``run.work_dir`` (a hidden temporary folder for the
        commands that create a folder; ``None`` while nothing is written yet).

    An exception raised here (or in the other lifecycle hooks) does not stop the run: it is reported
    once per plugin and hook as a warning naming the plugin, and the plugin is still called after it.

    .. versionadded:: 0.1
    """


@hookspec
def step_logged(run: RunInfo, step: int, values: dict[str, float]) -> None:
    """Called each time a run logs a step: the progress channel of every command.

    ``forget``/``replay`` at each ``run.log`` of the method (the same values go to ``log.jsonl``),
    ``train`` every ``log_every`` steps and at the last one (likewise), ``train-judge`` after each
    optimizer step, ``eval`` after each metric is computed for a model, ``audit`` while and after each
    attack runs on a model (``sample`` logs no steps).

    :param run: the run object of :func:`run_started`; ``run.work_dir`` holds the files written so far.
    :param step: 1-based; it reaches ``run.total_steps`` at the last step.
    :param values: numbers: losses, lambda, learning rate, elapsed seconds (``forget``: ``time``;
        ``train``: ``elapsed``); ``train-judge``: ``epoch``, ``loss``; ``eval``: ``seconds`` the metric took;
        ``audit``: ``progress`` (0..1) and the attack's own values while it runs, then ``seconds`` it took.

    .. versionadded:: 0.1
    """


@hookspec
def run_finished(run: RunInfo, result: Any) -> None:
    """Called once a run has finished and its output is complete: ``run.out_dir`` (unless ``None``) exists
    and is whole, and ``run.work_dir`` is ``run.out_dir``. Not called when the run fails or is interrupted.

    :param run: the run object of :func:`run_started`.
    :param result: the command's result: the :class:`Manifest` (``forget``, ``replay``, ``train``), the
        judge (``train-judge``), the ``EvalResult`` (``eval``: ``result.payload`` is ``metrics.json``), the
        ``AuditResult`` (``audit``: ``result.payload`` is ``audit.json``), the ``SampleResult`` (``sample``).

    .. versionadded:: 0.1
    """
