"""The lifecycle-hook driver every tracker plugin shares, and the base class of a tracker.

A tracker plugin writes one :class:`Tracker` (the calls to its service: start or reopen a tracked run,
log a step, finish, abort) and a hook module whose three ``@unlearnctl.hookimpl`` functions delegate to a
:class:`TrackerHooks`, which decides when the tracker is used:

- ``run_started``: only when ``UNLEARNCTL_REPORT_TO`` names the tracker (:func:`~.records.wanted`); the
  tracker's module (and with it its library) is imported then, not before;
- ``step_logged``: forwarded for the runs that make something (a study's steps are only timings: its
  payload has them); the step reached is kept in the run's record, ``run.extra[name]["step"]``;
- ``run_finished``: the tracker finishes its run;
- a run that fails or is interrupted gets no ``run_finished``: its tracker is aborted at exit;
- the first failure of a tracker in a run is raised (unlearnctl turns it into one warning line, and the run
  goes on); the tracker is aborted and not called again for that run.
"""

from __future__ import annotations

import atexit
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Self

from .records import TRAINING_KINDS, wanted

if TYPE_CHECKING:
    from ..lifecycle import RunInfo


class Tracker(ABC):
    """One unlearnctl run tracked by one service (MLflow, W&B...): what a tracker plugin implements.

    :meth:`start` makes (or, for ``eval``/``audit``, reopens) the tracked run; a run that makes something
    records what finds the tracked run again as a dict with a ``run_id`` in ``run.extra[name]`` (the
    manifest's ``extra``), and the driver keeps its ``"step"`` up to date. Raise
    :class:`~.records.TrackingFailed` with one line saying what to fix: unlearnctl prints it as one warning
    and the run goes on without the tracker.
    """

    @classmethod
    @abstractmethod
    def start(cls, run: RunInfo) -> Self:
        """At ``run_started``: create the tracked run of ``run`` (``eval``/``audit``: the one the studied run
        folder records, :func:`~.records.studied_manifest`, else a new one) and log its configuration."""

    @abstractmethod
    def log_step(self, run: RunInfo, step: int, values: Mapping[str, Any]) -> None:
        """At each ``step_logged`` of a run that makes something (:data:`~.records.TRAINING_KINDS`)."""

    @abstractmethod
    def finish(self, run: RunInfo, result: Any) -> None:
        """At ``run_finished``: log the results and files (``run.out_dir`` is whole) and end the tracked run."""

    @abstractmethod
    def abort(self) -> None:
        """The run ended without ``run_finished`` (an error, an interrupt), or the tracker failed: end the
        tracked run as failed. Runs at interpreter exit too: must not raise."""


class TrackerHooks:
    """The lifecycle hooks of the tracker ``name`` (what ``UNLEARNCTL_REPORT_TO`` names it; lower case).

    ``load`` returns the :class:`Tracker` class; it is called on the first run that is tracked, so the
    tracker's library is imported then (never by ``unlearnctl plugins``, nor when the tracker is not asked
    for). The plugin's hook module delegates to one instance::

        hooks = TrackerHooks("mytracker", load_tracker)

        @unlearnctl.hookimpl
        def run_started(run):
            hooks.run_started(run)
    """

    def __init__(self, name: str, load: Callable[[], type[Tracker]]) -> None:
        self.name = name.lower()
        self.load = load
        #: the tracked runs of this process, by the identity of unlearnctl's run object (one object per run)
        self._open: dict[int, tuple[RunInfo, Tracker]] = {}
        self._atexit_registered = False

    def run_started(self, run: RunInfo) -> None:
        if not wanted(self.name, run):
            return
        tracker_class = self.load()  # imports the tracker's library: only now that a run is tracked
        self._close_at_exit()
        tracker = tracker_class.start(run)  # raises TrackingFailed: one warning, the run goes on untracked
        self._open[id(run)] = (run, tracker)

    def step_logged(self, run: RunInfo, step: int, values: Mapping[str, Any]) -> None:
        tracker = self.tracker_of(run)
        if tracker is None or run.kind not in TRAINING_KINDS:
            return
        with self._dropped_on_failure(run, tracker):
            tracker.log_step(run, step, values)
        record = run.extra.get(self.name)
        if isinstance(record, dict):
            record["step"] = int(step)

    def run_finished(self, run: RunInfo, result: Any) -> None:
        tracker = self.tracker_of(run)
        if tracker is None:
            return
        with self._dropped_on_failure(run, tracker):
            tracker.finish(run, result)
        del self._open[id(run)]

    def tracker_of(self, run: RunInfo) -> Tracker | None:
        """The tracker following ``run`` (None: not tracked, finished, or its tracker failed)."""
        entry = self._open.get(id(run))
        return entry[1] if entry is not None and entry[0] is run else None

    def close_open_runs(self) -> None:
        """Abort the trackers whose run never finished (registered with :mod:`atexit`; tests call it)."""
        while self._open:
            _, (_, tracker) = self._open.popitem()
            _abort(tracker)

    @contextlib.contextmanager
    def _dropped_on_failure(self, run: RunInfo, tracker: Tracker) -> Iterator[None]:
        try:
            yield
        except Exception:
            self._open.pop(id(run), None)  # silent for the rest of the run
            _abort(tracker)
            raise

    def _close_at_exit(self) -> None:
        if not self._atexit_registered:
            atexit.register(self.close_open_runs)
            self._atexit_registered = True


def _abort(tracker: Tracker) -> None:
    with contextlib.suppress(Exception):
        tracker.abort()
