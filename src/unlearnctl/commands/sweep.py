"""``unlearnctl sweep SPEC``: run a study's cells through an executor, resumably (docs/sweep.md).

The sweep owns its study folder (``study.json``, ``cells/``, ``configs/``, ``logs/``). Each cell is run as
plain ``unlearnctl`` commands (:mod:`unlearnctl.cells`): ``forget --config configs/<id>.forget.json`` then
``eval --config configs/<id>.eval.json``, each config file what ``--print-config`` would write for it. A
second sweep of the same spec skips the cells that are done, runs ``eval`` alone where only it is missing,
resumes a ``forget`` cut short from its last checkpoint (``forget --resume``), and runs the rest; a cell
that fails is retried ``--retries`` times (one refused as bad input, exit 2, is not), then reported (status
``failed``, its log's last lines in the index); the cells that need a failed ``retrain`` cell are reported
``blocked``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import signal
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..cells import CellOutcome, CellTask
from ..config import parse_set_values, resolve_options
from ..errors import ExitCode, Interrupted, UsageError
from ..inprogress import lock
from ..rundir import LOCK_FILE, atomic_write_text
from .configs import EVAL_SPEC, FORGET_SPEC
from .sweep_index import (
    INDEX_KIND,
    SCHEMA_VERSION,
    cell_record,
    disk_state,
    now,
    read_index,
    write_index,
)
from .sweep_spec import Cell, StudySpec, expand, read_spec

CONFIGS_DIR = "configs"


@dataclass
class SweepRequest:
    """Everything ``unlearnctl sweep`` was asked (see ``unlearnctl sweep --help``)."""

    spec: Path
    #: the study folder (None: ``studies/<spec name or file stem>``)
    out: Path | None = None
    #: cells run at once (None: the spec's ``[executor] jobs``, else the executor's choice)
    jobs: int | None = None
    #: the executor (None: the spec's, else ``local``)
    executor: str | None = None
    #: ``--executor-option KEY=VALUE`` over the spec's ``[executor] options``
    executor_options: Sequence[str] = ()
    #: a failing cell is run again this many times in one sweep before it is reported
    retries: int = 1


@dataclass
class PreparedSweep:
    request: SweepRequest
    spec: StudySpec
    cells: list[Cell]
    study: Path
    executor_name: str
    executor: Any
    jobs: int | None


@dataclass
class SweepResult:
    study: Path
    index: dict[str, Any]
    #: cell ids by final status of this sweep
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    interrupted: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.failed or self.blocked or self.interrupted)


class SweepInterrupted(Interrupted):
    """Ctrl-C, SIGTERM or SIGHUP stopped the sweep: the running cells were stopped (a ``forget`` finishes
    its step and checkpoints), the index says so, and the same command resumes the study."""

    def __init__(self, signum: int, result: SweepResult) -> None:
        stopped = len(result.interrupted)
        super().__init__(
            signum,
            f"; {stopped} running cell{'s' if stopped != 1 else ''} stopped, {len(result.done)} finished in this "
            "sweep: run the same command again to resume the study",
        )
        self.result = result


class Reporter:
    """What a sweep tells its caller as it goes (the CLI draws progress from it); every method a no-op."""

    def started(self, total: int, skipped: int, todo: int, jobs: int, executor: str) -> None: ...

    def cell_started(self, cell: Cell, stage: str) -> None: ...

    def cell_finished(self, cell: Cell, record: dict[str, Any], retrying: bool) -> None: ...


# --- preparing ---------------------------------------------------------------------------------------------


def default_study_folder(spec_path: Path, spec: StudySpec) -> Path:
    return Path("studies") / (spec.name or Path(spec_path).stem)


def _check_tables(spec: StudySpec, spec_path: Path) -> None:
    """The [forget] and [eval] tables hold only keys their commands' config files take."""
    import difflib

    for table, values, keys in (("forget", spec.forget, FORGET_SPEC.keys), ("eval", spec.eval, EVAL_SPEC.keys)):
        for key in values:
            if key not in keys:
                close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise UsageError(f"study spec '{spec_path}': [{table}] has no option '{key}'{hint}")


def _check_components(cells: Sequence[Cell], registry: Any) -> None:
    """Every method, option setting and selector exists: one line before any work, not a failed cell later."""
    from ..inputs import build_selector, parse_forget_spec

    seen: set[str] = set()
    for cell in cells:
        if cell.role == "noise-floor":
            continue
        key = json.dumps([cell.method, cell.options], sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            cls = registry.get("method", cell.method).cls
            resolve_options(cls, config=cell.options)
        for selector in cell.forget:
            build_selector(*parse_forget_spec(selector), registry=registry)


def prepare_sweep(request: SweepRequest, registry: Any) -> PreparedSweep:
    """Read and check the spec, expand its cells, choose the executor; writes nothing."""
    if request.retries < 0:
        raise UsageError("--retries must be 0 or more")
    if request.jobs is not None and request.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    spec = read_spec(request.spec)
    _check_tables(spec, request.spec)
    cells = expand(spec)
    _check_components(cells, registry)
    study = Path(request.out) if request.out is not None else default_study_folder(request.spec, spec)
    if study.exists() and not study.is_dir():
        raise UsageError(f"--out '{study}' is a file: name a folder for the study")
    # a folder holding only a lock: a sweep that died before writing its index (or one starting now)
    if study.is_dir() and read_index(study) is None and any(p.name != LOCK_FILE for p in study.iterdir()):
        raise UsageError(
            f"--out '{study}' exists and is not a study folder (no study.json): choose a new folder "
            "(unlearnctl never writes into a folder it did not create)"
        )
    name = request.executor or spec.executor.name
    options = dict(spec.executor.options) if name == spec.executor.name else {}
    options.update(parse_set_values(list(request.executor_options), "--executor-option", "address=auto"))
    cls = registry.get("executor", name).cls
    executor = cls(resolve_options(cls, config=options))
    jobs = request.jobs if request.jobs is not None else spec.executor.jobs
    return PreparedSweep(request, spec, cells, study, name, executor, jobs)


# --- the cells' commands ---------------------------------------------------------------------------------


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def cell_commands(study: Path, cell: Cell) -> tuple[str, list[list[str]]]:
    """What ``cell`` needs next, and the commands that do it (its config files are written here)."""
    state = disk_state(study, cell)
    if state.stage == "broken":
        raise UsageError(state.problem or f"cell {cell.id} cannot run")
    if state.stage == "done":
        return "done", []
    if cell.role == "noise-floor":
        return "fresh", [["noise-floor", *cell.noise_floor_args]]
    for stale in state.stale:  # a forget killed before its first checkpoint: nothing to resume
        shutil.rmtree(stale, ignore_errors=True)
    eval_cfg = f"{CONFIGS_DIR}/{cell.id}.eval.json"
    _write_json(study / eval_cfg, cell.eval_config)
    evaluate = ["eval", "--config", eval_cfg]
    if state.stage == "eval":
        return "eval", [evaluate]
    if state.stage == "resume":
        return "resume", [["forget", "--resume", cell.run], evaluate]
    forget_cfg = f"{CONFIGS_DIR}/{cell.id}.forget.json"
    _write_json(study / forget_cfg, cell.forget_config)
    return "fresh", [["forget", "--config", forget_cfg], evaluate]


# --- running -----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _study_lock(study: Path) -> Iterator[IO[bytes] | None]:
    """Hold the study folder's lock (``.lock``, as a run folder's) for the sweep's lifetime."""
    study.mkdir(parents=True, exist_ok=True)
    try:
        handle = lock(study)
    except UsageError:
        raise UsageError(f"another sweep is running on '{study}': wait for it, or stop it (Ctrl-C) first") from None
    try:
        yield handle
    finally:
        if handle is not None:
            handle.close()


def _new_index(p: PreparedSweep, previous: dict[str, Any] | None) -> dict[str, Any]:
    import hashlib

    from .. import __version__

    raw = Path(p.request.spec).read_bytes()
    old = {c["id"]: c for c in (previous or {}).get("cells", [])}
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": INDEX_KIND,
        "name": p.spec.name or Path(p.request.spec).stem,
        "description": p.spec.description,
        "created_at": (previous or {}).get("created_at", now()),
        "updated_at": now(),
        "unlearnctl_version": __version__,
        "spec_file": "spec" + Path(p.request.spec).suffix,
        "spec_sha256": hashlib.sha256(raw).hexdigest(),
        "model": p.spec.model,
        "eval": p.spec.eval,
        "noise_floor": next((c.run for c in p.cells if c.role == "noise-floor"), None),
        "executor": p.executor_name,
        "cells": [cell_record(c, old.get(c.id)) for c in p.cells],
    }


class _Scheduler:
    """One sweep's bookkeeping: the queue, the running cells, the index records, the result."""

    def __init__(self, p: PreparedSweep, index: dict[str, Any], reporter: Reporter) -> None:
        self.p = p
        self.study = p.study
        self.index = index
        self.reporter = reporter
        self.records: dict[str, dict[str, Any]] = {r["id"]: r for r in index["cells"]}
        self.result = SweepResult(p.study, index)
        self.queue: list[Cell] = []
        self.running: dict[Future[CellOutcome], Cell] = {}
        #: failed tries of each cell in this sweep
        self.tries: dict[str, int] = {}
        self.capacity = 1
        self.threads: int | None = None

    def save(self) -> None:
        write_index(self.study, self.index)

    def triage(self) -> None:
        """Done cells are skipped, broken ones reported, the rest queued (in the spec's order)."""
        for cell in self.p.cells:
            state = disk_state(self.study, cell)
            rec = self.records[cell.id]
            if state.stage == "done":
                rec["status"] = "done"
                self.result.skipped.append(cell.id)
            elif state.stage == "broken":
                rec.update(status="failed", error=state.problem)
                self.result.failed.append(cell.id)
            else:
                rec["status"] = "pending"
                self.queue.append(cell)
        self.save()

    def gate(self, cell: Cell) -> str:
        """``go`` when ``cell`` may run, ``wait`` while its retrain cell has not finished, else why not."""
        if cell.retrain is None:
            return "go"
        status = self.records[cell.retrain]["status"]
        if status == "done":
            return "go"
        if status in ("failed", "blocked"):
            return f"its retrain cell {cell.retrain} {status}"
        return "wait"

    def block(self, cell: Cell, why: str) -> None:
        self.records[cell.id].update(status="blocked", error=why)
        self.result.blocked.append(cell.id)
        self.save()
        self.reporter.cell_finished(cell, self.records[cell.id], False)

    def settle(self, cell: Cell, outcome: CellOutcome) -> None:
        """Record how ``cell`` ended; a failure is queued again while it has retries left."""
        rec = self.records[cell.id]
        rec["attempts"] = int(rec.get("attempts") or 0) + 1
        # every attempt's time, summed: a retried, stopped or resumed cell spent it all (a resumed forget goes on
        # from its checkpoint, so the last attempt alone would leave out the forgetting done before it)
        spent = float(rec.get("seconds") or 0.0) + outcome.seconds
        rec.update(
            seconds=round(spent, 1), returncode=outcome.returncode, host=outcome.host,
            failed_command=outcome.failed_command,
        )  # fmt: skip
        retrying = False
        if outcome.cancelled:
            rec.update(status="interrupted", error=None)
            self.result.interrupted.append(cell.id)
        elif outcome.ok:
            rec.update(status="done", error=None)
            self.result.done.append(cell.id)
        else:
            self.tries[cell.id] = self.tries.get(cell.id, 0) + 1
            rec.update(status="failed", error=outcome.log_tail or f"exit status {outcome.returncode}")
            # bad input (exit 2) is refused the same way every time: a retry would only spend its start-up again
            if outcome.returncode != ExitCode.USAGE and self.tries[cell.id] <= self.p.request.retries:
                retrying = True
                rec["status"] = "pending"
                self.queue.append(cell)
            else:
                self.result.failed.append(cell.id)
        self.save()
        self.reporter.cell_finished(cell, rec, retrying)

    def submit(self, cell: Cell) -> None:
        try:
            stage, commands = cell_commands(self.study, cell)
        except UsageError as exc:  # its folder became unusable since triage
            self.settle(cell, CellOutcome(cell.id, 2, 0.0, None, str(exc)))
            return
        if stage == "done":  # finished since triage: the reporter counts it like any finished cell
            self.records[cell.id]["status"] = "done"
            self.result.skipped.append(cell.id)
            self.reporter.cell_finished(cell, self.records[cell.id], False)
            return
        task = CellTask(
            cell.id, tuple(tuple(c) for c in commands), str(self.study.resolve()), cell.log, threads=self.threads
        )
        self.records[cell.id]["status"] = "running"
        self.save()
        self.reporter.cell_started(cell, stage)
        self.running[self.p.executor.submit(task)] = cell

    def fill(self) -> None:
        """Submit queued cells that may run, up to the executor's capacity."""
        for cell in list(self.queue):
            if len(self.running) >= self.capacity:
                return
            gate = self.gate(cell)
            if gate == "wait":
                continue
            self.queue.remove(cell)
            if gate == "go":
                self.submit(cell)
            else:
                self.block(cell, gate)

    def loop(self) -> None:
        while self.queue or self.running:
            self.fill()
            if not self.running:
                # nothing runs and nothing can start: their retrain cell is not part of this sweep's work
                for cell in list(self.queue):
                    self.queue.remove(cell)
                    self.block(cell, f"its retrain cell {cell.retrain} did not run")
                continue
            finished, _ = wait(list(self.running), timeout=1.0, return_when=FIRST_COMPLETED)
            for future in finished:
                cell = self.running.pop(future)
                self.settle(cell, _outcome(future, cell))

    def stop_running(self) -> None:
        """After Ctrl-C or a stop signal: stop the executor's cells and record them as interrupted."""
        self.p.executor.stop()
        for future, cell in list(self.running.items()):
            out = _outcome(future, cell)
            self.settle(cell, dataclasses.replace(out, cancelled=True))
        self.running.clear()
        for cell in self.queue:
            self.records[cell.id]["status"] = "pending"
        self.save()


def run_sweep(p: PreparedSweep, reporter: Reporter | None = None) -> SweepResult:
    """Run every cell that is not done; return what happened (the index is on disk all along).

    :raises SweepInterrupted: Ctrl-C, SIGTERM or SIGHUP (the running cells stopped and recorded).
    """
    reporter = reporter or Reporter()
    start = time.monotonic()
    with _study_lock(p.study):
        index = _new_index(p, read_index(p.study))
        shutil.copyfile(p.request.spec, p.study / index["spec_file"])
        sched = _Scheduler(p, index, reporter)
        sched.triage()
        sched.capacity = p.executor.start(p.jobs)
        sched.threads = p.executor.threads_per_cell(sched.capacity)
        reporter.started(len(p.cells), len(sched.result.skipped), len(sched.queue), sched.capacity, p.executor_name)
        try:
            sched.loop()
        except KeyboardInterrupt as exc:
            sched.stop_running()
            sched.result.seconds = time.monotonic() - start
            raise SweepInterrupted(int(getattr(exc, "signum", signal.SIGINT)), sched.result) from None
        finally:
            p.executor.close()
        sched.result.seconds = time.monotonic() - start
        sched.save()
        return sched.result


def _outcome(future: Future[CellOutcome], cell: Cell) -> CellOutcome:
    """The future's outcome; an executor's own error becomes a failed outcome naming it."""
    if future.cancelled():
        return CellOutcome(cell.id, -int(signal.SIGTERM), 0.0, None, "", cancelled=True)
    try:
        return future.result(timeout=0)
    except Exception as exc:  # the executor could not run the cell (a worker died, a cluster went away)
        return CellOutcome(cell.id, 1, 0.0, None, f"the executor could not run the cell: {exc}")


def summary_counts(index: dict[str, Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for rec in index.get("cells", []):
        counts[rec["status"]] = counts.get(rec["status"], 0) + 1
    return counts


def resolved_spec(p: PreparedSweep, fmt: str) -> str:
    """What ``sweep --print-config`` prints: the spec with every default filled in and the executor as this
    sweep would use it, as a spec file that ``sweep`` reads back to the same cells."""
    from ..config_files import dump_config
    from .sweep_spec import spec_summary

    data = p.spec.model_dump(mode="json", exclude_none=True)
    data["executor"] = {
        "name": p.executor_name,
        **({"jobs": p.jobs} if p.jobs is not None else {}),
        "options": p.executor.options.model_dump(mode="json", by_alias=True),
    }
    counts = spec_summary(p.cells)
    header = [
        f"unlearnctl sweep: the study spec {p.request.spec}, resolved (unlearnctl sweep SPEC --print-config)",
        "cells: " + ", ".join(f"{n} {role}" for role, n in counts.items()) + f"; study folder: {p.study}",
    ]
    return dump_config(data, fmt, header)
