"""The lifecycle channel: what the lifecycle hooks receive (:class:`RunInfo`) and how they are called.

Every command that runs something (``forget``, ``replay``, ``train``, ``train-judge``, ``eval``, ``audit``,
``sample``) describes its run with one :class:`RunInfo` (a method's :class:`~unlearnctl.UnlearnRun` is
one too) and reports it through a :class:`Lifecycle`: ``run_started`` once, ``step_logged`` per logged
step, ``run_finished`` once the output is complete. This is the only way progress leaves a command;
the CLI's progress bar is a hook implementation it registers (``unlearnctl.cli.progress``).

A listener cannot break a run: :class:`Lifecycle` calls each plugin's implementation on its own and
turns an exception into one :class:`PluginHookWarning` per plugin and hook (Python's ``warnings``; the
CLI prints it as one ``warning:`` line). The failing listener is still called afterwards (a tracker's
passing network error should not silence it for the rest of the run); its later failures in the same
hook are not reported again.
"""

from __future__ import annotations

import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from .plugins import describe_exception, exception_location, plugin_roots

#: the lifecycle hooks of :mod:`unlearnctl.hookspecs`, in the order a run fires them
LIFECYCLE_HOOKS: tuple[str, ...] = ("run_started", "step_logged", "run_finished")


@dataclass(eq=False)
class RunInfo:
    """What the lifecycle hooks receive as ``run``: the same attributes for every command.

    ``forget`` and ``replay`` pass the method's :class:`~unlearnctl.UnlearnRun` (a subclass, with the
    model, the split, the optimizer... besides); the other commands pass a plain ``RunInfo``.
    Compared by identity: one object per run, the same in all three hooks.
    """

    #: ``"forget"``, ``"replay"``, ``"train"``, ``"train-judge"``, ``"eval"``, ``"audit"`` or ``"sample"``
    kind: str
    #: the final output folder (run folder, judge folder, ``eval``'s and ``audit``'s ``--out`` or run folder,
    #: ``sample``'s ``--out``). The same path in all three hooks; it may not exist before ``run_finished``: folders are
    #: written under a temporary name (``work_dir``) and renamed when whole. ``None`` when the run writes
    #: nothing (``eval``/``audit`` of a model that is not a run folder, without ``--out``)
    out_dir: Path | None = None
    #: where files are being written during the run: the hidden temporary sibling of ``out_dir``
    #: (``.NAME.partial-XXXX``) for the commands that create a folder, ``out_dir`` itself for ``eval`` and ``audit``;
    #: ``None`` while nothing is being written yet (``train-judge`` writes its folder after training,
    #: ``sample`` after sampling). At ``run_finished`` it equals ``out_dir``
    work_dir: Path | None = None
    #: the run's resolved configuration (what the manifest or ``metrics.json`` records of it)
    config: dict[str, Any] = field(default_factory=dict)
    #: the last ``step`` that ``step_logged`` will report; ``None`` when unknown (``sample`` logs no steps;
    #: ``train-judge`` sets it just before its first step)
    total_steps: int | None = None
    #: a short label for people, e.g. ``"erasediff ddpm-digits"``
    description: str = ""
    #: the ``--seed``
    seed: int = 0
    #: JSON values that the run, its method and the ``run_started``/``step_logged`` listeners may add;
    #: ``forget``, ``replay`` and ``train`` write them into the manifest's ``extra`` (the command's own
    #: keys, e.g. ``train``'s ``train_images``, take precedence)
    extra: dict[str, Any] = field(default_factory=dict)


class PluginHookWarning(UserWarning):
    """A plugin's lifecycle hook raised; the run went on without it.

    ``str(warning)`` is one line naming the plugin, the hook and the error; ``traceback`` holds the
    formatted traceback (the CLI shows it under ``UNLEARNCTL_DEBUG=1``).
    """

    def __init__(self, plugin: str, hook: str, error: str, location: str | None, traceback: str) -> None:
        where = f" (at {location})" if location else ""
        super().__init__(
            f"plugin '{plugin}' failed in {hook}: {error}{where}; the run goes on, "
            f"later failures of its {hook} are not reported"
        )
        self.plugin, self.hook, self.error, self.location, self.traceback = plugin, hook, error, location, traceback


class Lifecycle:
    """Calls the lifecycle hooks of every registered plugin, each implementation in isolation.

    ``Lifecycle(registry.pm)`` (or :meth:`of`): ``run_started(run=...)``, ``step_logged(run=..., step=...,
    values=...)`` and ``run_finished(run=..., result=...)`` call the plugins in pluggy's order, each with
    only the arguments it accepts. An ``Exception`` from one is reported once per plugin and hook as a
    :class:`PluginHookWarning` and does not reach the run (``KeyboardInterrupt`` still does). Hook
    wrappers are not called for lifecycle hooks.
    """

    def __init__(self, pm: pluggy.PluginManager | None) -> None:
        self.pm = pm
        self._reported: set[tuple[str, str]] = set()

    @classmethod
    def of(cls, registry: Any) -> Lifecycle:
        """The lifecycle channel of a :class:`~unlearnctl.registry.Registry` (``None``: no listeners)."""
        return cls(registry.pm if registry is not None else None)

    def run_started(self, run: RunInfo) -> None:
        self._call("run_started", {"run": run})

    def step_logged(self, run: RunInfo, step: int, values: dict[str, Any]) -> None:
        self._call("step_logged", {"run": run, "step": step, "values": values})

    def run_finished(self, run: RunInfo, result: Any) -> None:
        self._call("run_finished", {"run": run, "result": result})

    def _call(self, hook: str, kwargs: dict[str, Any]) -> None:
        if self.pm is None:
            return
        # pluggy calls the implementations last-registered first (tryfirst/trylast already sorted in)
        for impl in reversed(getattr(self.pm.hook, hook).get_hookimpls()):
            if impl.hookwrapper or impl.wrapper:
                continue
            try:
                impl.function(*[kwargs[name] for name in impl.argnames])
            except Exception as exc:
                self._report(impl, hook, exc)

    def _report(self, impl: Any, hook: str, exc: Exception) -> None:
        key = (impl.plugin_name, hook)
        if key in self._reported:
            return
        self._reported.add(key)
        plugin = impl.plugin
        module = plugin.__name__ if isinstance(plugin, ModuleType) else str(getattr(plugin, "__module__", ""))
        warning = PluginHookWarning(
            impl.plugin_name,
            hook,
            describe_exception(exc),
            exception_location(exc, plugin_roots(module)),
            "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        )
        warnings.warn(warning, stacklevel=3)
