"""The built-in executor of ``unlearnctl sweep``, registered through the public ``register_executors`` hook.

``local``: every cell in a process of its own on this machine, ``--jobs`` at a time (a thread per running
cell waits on it). The CPU cores are shared out: each cell's commands get ``cores // jobs`` threads
(at least one), so ``--jobs 2`` on a 2-core machine runs two single-threaded cells side by side.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from unlearnctl import CellOutcome, CellTask, Executor, Options, hookimpl, run_cell


def available_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


class LocalExecutor(Executor):
    """Run each cell in local processes, --jobs at a time (default 1), sharing the CPU cores among them."""

    name = "local"

    class Options(Options):
        pass

    def __init__(self, options: Options | None = None) -> None:
        super().__init__(options)
        self._pool: ThreadPoolExecutor | None = None
        self._cancel = threading.Event()

    def start(self, jobs: int | None) -> int:
        jobs = jobs or 1
        self._pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="unlearnctl-cell")
        return jobs

    def threads_per_cell(self, jobs: int) -> int | None:
        return max(1, available_cores() // max(1, jobs))

    def submit(self, task: CellTask) -> Future[CellOutcome]:
        if self._pool is None:
            raise RuntimeError("LocalExecutor.submit before start")
        return self._pool.submit(run_cell, task, self._cancel)

    def stop(self) -> None:
        self._cancel.set()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


@hookimpl
def register_executors(register) -> None:
    register(LocalExecutor)
