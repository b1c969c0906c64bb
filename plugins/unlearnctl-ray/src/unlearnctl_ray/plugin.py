"""The hook implementation of the ``ray`` plugin (entry point ``ray = "unlearnctl_ray.plugin"``).

Registers :class:`unlearnctl_ray.executor.RayExecutor`; Ray itself is imported only when the executor
starts, so listing components (``unlearnctl list executors``) works, and stays fast, without Ray installed.
"""

from __future__ import annotations

from collections.abc import Callable

from unlearnctl import hookimpl

from .executor import RayExecutor


@hookimpl
def register_executors(register: Callable[[type], None]) -> None:
    register(RayExecutor)
