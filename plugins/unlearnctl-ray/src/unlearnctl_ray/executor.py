"""``RayExecutor``: every cell of ``unlearnctl sweep`` a Ray task, on a local Ray instance or a cluster.

A cell's Ray task calls :func:`unlearnctl.run_cell` on the worker: the cell's commands run there, with the
worker's own Python (``python -m unlearnctl ...``), in the study folder. So every machine of the cluster must
see the study folder at the same path (a shared file system) and have unlearnctl installed, with the plugins
the cells use; unlearnctl-ray itself is needed only where ``sweep`` runs (the task's function is shipped by
value).

Ray is imported by :meth:`RayExecutor.start`, never when the plugin is loaded. Stopping is Ray's own
``ray.cancel`` (not forced): the worker gets a ``KeyboardInterrupt``, ``run_cell`` sends the running command
SIGTERM (a ``forget`` finishes its step and checkpoints), and the task ends with a cancelled outcome.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from pydantic import Field

from unlearnctl import CellOutcome, CellTask, Executor, Options, UsageError

#: the exit status of a cancelled cell (the same as ``run_cell``'s: minus SIGTERM)
CANCELLED = -int(signal.SIGTERM)
#: the exit status of a cell that Ray could not run to its end (worker died, study folder missing...)
FAILED = 1
#: seconds :meth:`RayExecutor.stop` waits for cancelled cells: run_cell gives a command 120 s after SIGTERM
STOP_WAIT_S = 180.0
#: seconds to wait for a cluster's address to answer before ray.init (which would retry for minutes)
CONNECT_TIMEOUT_S = 10.0
#: how to get a cluster, for the error messages
CLUSTER_HINT = (
    "start the cluster with `ray start --head` and pass --executor-option address=auto "
    "(or leave address unset for a local Ray instance)"
)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise UsageError(
            f"the ray executor needs Ray, which cannot be imported ({exc}): pip install unlearnctl-ray "
            "(or pip install 'ray>=2.9')"
        ) from exc
    return ray


def _check_reachable(address: str | None, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Refuse a ``host:port`` (or ``ray://host:port``) where nothing answers: ``ray.init`` would retry for
    minutes. ``auto`` and addresses Ray parses otherwise are left to Ray."""
    if not address:
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UsageError(
            f"ray executor: cannot reach the Ray cluster at '{address}': nothing answers at {host}:{port} ({reason}); "
            f"{CLUSTER_HINT}"
        ) from exc


def _first_line(text: object) -> str:
    lines = str(text).strip().splitlines()
    return lines[0].strip().rstrip(".") if lines else ""


def _cell_function() -> Callable[[CellTask], CellOutcome]:
    """The function every cell's Ray task runs.

    Defined inside a function so that Ray (cloudpickle) ships it by value: a worker needs unlearnctl, not
    unlearnctl-ray. Hence it imports what it uses itself and names nothing of this module.
    """

    def run_cell_on_worker(task: CellTask) -> CellOutcome:
        import os
        import platform
        import signal
        import time

        from unlearnctl import CellOutcome, run_cell

        host = platform.node()
        first = task.commands[0][0] if task.commands and task.commands[0] else None
        if not os.path.isdir(task.cwd):
            # run_cell would create it: the cell would run in a stray folder on this worker's own disk
            return CellOutcome(
                task.id,
                1,
                0.0,
                first,
                f"ray: the study folder {task.cwd} does not exist on the worker {host}: every Ray worker must see "
                "the study folder at the same path (a shared file system)",
                False,
                host,
            )
        start = time.monotonic()
        try:
            return run_cell(task)
        except KeyboardInterrupt:  # ray.cancel: run_cell has stopped the running command (SIGTERM)
            log = task.log_path()
            running, lines = first, []
            try:
                with log.open("r", encoding="utf-8", errors="replace") as fh:
                    for line in fh:
                        lines.append(line)
                        del lines[:-15]
                        if line.startswith("$ unlearnctl "):  # run_cell's header line of every command
                            running = [*line.split(), ""][2] or running
            except OSError:
                pass
            tail = "".join(lines).rstrip()
            return CellOutcome(task.id, -int(signal.SIGTERM), time.monotonic() - start, running, tail, True, host)

    return run_cell_on_worker


class RayExecutor(Executor):
    """Run each cell as a Ray task: a local Ray instance or a cluster (every worker must see the study folder)."""

    name = "ray"

    class Options(Options):
        address: str | None = Field(
            None,
            description="the Ray cluster: unset or 'local' starts a local Ray instance, 'auto' joins the cluster "
            "running on this machine (`ray start --head`), 'ray://HOST:10001' a remote one (needs ray[client])",
        )
        cpus_per_cell: float = Field(
            1.0, gt=0, description="CPUs each cell's Ray task reserves (its commands get int(max(1, this)) threads)"
        )
        num_cpus: int | None = Field(None, ge=1, description="CPUs of a local Ray instance (default: all)")
        runtime_env: dict[str, Any] | None = Field(
            None, description="Ray runtime environment of the cells (env_vars, working_dir, pip...), for ray.init"
        )
        namespace: str | None = Field(None, description="Ray namespace to run in")

    def __init__(self, options: Options | None = None) -> None:
        super().__init__(options)
        self._ray: Any = None
        self._remote: Any = None
        #: whether start() initialised Ray (close() shuts down only what it started)
        self._started = False
        #: every submitted cell not yet resolved: its future -> (its task, its ObjectRef)
        self._pending: dict[Future[CellOutcome], tuple[CellTask, Any]] = {}
        self._lock = threading.Lock()

    @property
    def _opts(self) -> RayExecutor.Options:
        assert isinstance(self.options, RayExecutor.Options)
        return self.options

    def start(self, jobs: int | None) -> int:
        ray = _import_ray()
        options = self._opts
        local = options.address in (None, "local")
        if not ray.is_initialized():  # already initialised (a notebook, a test): reuse it, leave it running
            if options.num_cpus is not None and not local:
                raise UsageError(
                    f"ray executor: num_cpus is for a local Ray instance only, not address '{options.address}': "
                    "drop it (a cluster has the CPUs its nodes were started with)"
                )
            kwargs: dict[str, Any] = {
                "address": "local" if local else options.address,
                "ignore_reinit_error": True,
                # the cells' output goes to their logs; keep Ray's own chatter off sweep's console
                "log_to_driver": False,
                "logging_level": logging.WARNING,
            }
            if local and options.num_cpus is not None:
                kwargs["num_cpus"] = options.num_cpus
            if options.runtime_env is not None:
                kwargs["runtime_env"] = options.runtime_env
            if options.namespace is not None:
                kwargs["namespace"] = options.namespace
            if not local:
                _check_reachable(options.address)
            try:
                ray.init(**kwargs)
            except (ConnectionError, TimeoutError, ValueError, RuntimeError, ray.exceptions.RayError) as exc:
                # no cluster found, a bad address, a missing auth token (ray.exceptions.AuthenticationError)...
                where = "start a local Ray instance" if local else f"reach the Ray cluster at '{options.address}'"
                raise UsageError(f"ray executor: cannot {where}: {_first_line(exc)}; {CLUSTER_HINT}") from exc
            self._started = True
        self._ray = ray
        self._remote = ray.remote(num_cpus=options.cpus_per_cell, max_retries=0)(_cell_function())
        if jobs:
            return jobs
        cpus = float(ray.cluster_resources().get("CPU", 0))
        return max(1, int(cpus // options.cpus_per_cell))

    def threads_per_cell(self, jobs: int) -> int | None:
        return int(max(1.0, self._opts.cpus_per_cell))

    def submit(self, task: CellTask) -> Future[CellOutcome]:
        if self._remote is None:
            raise RuntimeError("RayExecutor.submit before start")
        # the worker's own working folder is not ours: a relative study folder is made absolute here
        task = dataclasses.replace(task, cwd=os.path.abspath(task.cwd))
        ref = self._remote.options(name=f"unlearnctl-cell:{task.id}").remote(task)  # its name in `ray list tasks`
        outer: Future[CellOutcome] = Future()
        outer.set_running_or_notify_cancel()  # the cell is stopped with stop(), not with Future.cancel()
        with self._lock:
            self._pending[outer] = (task, ref)
        ref.future().add_done_callback(lambda inner: self._resolve(outer, task, inner))
        return outer

    def _resolve(self, outer: Future[CellOutcome], task: CellTask, inner: Future[Any]) -> None:
        """Hand the task's outcome to ``outer``; a Ray error becomes a cancelled or failed outcome."""
        exceptions = self._ray.exceptions
        try:
            outcome = inner.result()
        except (exceptions.TaskCancelledError, concurrent.futures.CancelledError):
            outcome = CellOutcome(task.id, CANCELLED, 0.0, None, _tail(task), True, "")
        except exceptions.RayTaskError as exc:  # run_on_worker raised: say what, not where in Ray
            cause = getattr(exc, "cause", None) or exc
            outcome = self._failed(task, f"the cell's Ray task failed: {type(cause).__name__}: {_first_line(cause)}")
        except Exception as exc:  # the worker or its node died, the object was lost...
            outcome = self._failed(task, f"{type(exc).__name__}: {_first_line(exc)}")
        _settle(outer, outcome)
        with self._lock:
            self._pending.pop(outer, None)

    def _failed(self, task: CellTask, reason: str) -> CellOutcome:
        note = f"ray: {reason}"
        _append(task, note)
        first = task.commands[0][0] if task.commands and task.commands[0] else None
        return CellOutcome(task.id, FAILED, 0.0, first, _tail(task) or note, False, "")

    def stop(self) -> None:
        with self._lock:
            pending = dict(self._pending)
        for _task, ref in pending.values():
            # not force: the worker's KeyboardInterrupt lets run_cell SIGTERM the command (a forget checkpoints);
            # a task that finished meanwhile, or whose node is gone, has nothing left to stop
            with contextlib.suppress(Exception):
                self._ray.cancel(ref)
        _done, late = concurrent.futures.wait(list(pending), timeout=STOP_WAIT_S)
        for outer in late:  # Ray never answered: report them cancelled rather than hang the sweep
            task = pending[outer][0]
            _settle(outer, CellOutcome(task.id, CANCELLED, 0.0, None, _tail(task), True, ""))

    def close(self) -> None:
        if self._started and self._ray is not None and self._ray.is_initialized():
            self._ray.shutdown()
        self._started = False
        self._remote = None


def _settle(future: Future[CellOutcome], outcome: CellOutcome) -> None:
    # settled already: stop() gave up on it just as Ray answered
    with contextlib.suppress(concurrent.futures.InvalidStateError):
        future.set_result(outcome)


def _tail(task: CellTask, lines: int = 15) -> str:
    """The last lines of the cell's log, read where ``sweep`` runs (it sees the study folder)."""
    try:
        with task.log_path().open("r", encoding="utf-8", errors="replace") as fh:
            return "".join(deque(fh, maxlen=lines)).rstrip()
    except OSError:
        return ""


def _append(task: CellTask, line: str) -> None:
    """Add ``line`` to the cell's log when its folder exists (never create folders from here)."""
    log: Path = task.log_path()
    if not log.parent.is_dir():
        return
    try:
        with log.open("a", encoding="utf-8") as fh:
            fh.write(f"\n{line}\n")
    except OSError:
        pass
