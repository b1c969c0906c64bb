"""Runs being written: the ``.NAME.partial-*`` folder of a ``forget`` or ``train``, resumable (docs/resume.md).

A resumable run writes into a hidden sibling of its final folder (:func:`unlearnctl.rundir.atomic_run_dir`)
holding, next to what the run has written so far:

- ``resume.json``: the command and its request, so ``--resume`` re-creates the same run;
- ``checkpoints/step-NNNNNN/``: the newest checkpoint (:mod:`unlearnctl.checkpoints`);
- ``.lock``: locked (``flock``) by the process writing the folder. The kernel releases the lock when that
  process ends, however it ends (``kill -9`` included), so a folder whose lock can be taken is *stale*: its
  run is dead. Stale folders are found by :func:`find_stale`, resumed with ``--resume`` or removed with
  ``unlearnctl clean``.

The folder is renamed into place only when the run is whole, and ``manifest.json`` is written last, so an
interrupted run never leaves anything that looks like a complete run folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .checkpoints import list_checkpoints
from .errors import UsageError
from .rundir import CHECKPOINTS_DIR, LOCK_FILE, MANIFEST_FILE, RESUME_FILE, atomic_run_dir

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock; every partial folder counts as live
    fcntl = None  # type: ignore[assignment]

PARTIAL_MARK = ".partial-"


@dataclass
class PartialRun:
    """A ``.NAME.partial-*`` folder found on disk."""

    path: Path
    #: the run folder it becomes when whole
    final: Path
    #: ``forget`` or ``train`` (None: not resumable: no ``resume.json``)
    command: str | None
    #: the step of its newest checkpoint (None: no checkpoint)
    step: int | None
    total_steps: int | None
    #: a live process is writing it
    live: bool

    @property
    def resumable(self) -> bool:
        return self.command is not None and self.step is not None and not self.live

    def resume_command(self) -> str:
        return f"unlearnctl {self.command} --resume {self.final}"


def is_partial(path: Path) -> bool:
    return path.name.startswith(".") and PARTIAL_MARK in path.name


def final_of(partial: Path) -> Path:
    """The run folder a partial folder becomes: ``.NAME.partial-XXXX`` -> ``NAME``."""
    return partial.parent / partial.name[1:].rsplit(PARTIAL_MARK, 1)[0]


def lock(folder: Path) -> IO[bytes] | None:
    """Lock ``folder`` for this process (held until the returned file is closed or the process ends).

    :raises UsageError: another live process holds it.
    """
    if fcntl is None:
        return None
    fh = open(folder / LOCK_FILE, "a+b")  # noqa: SIM115 - held open for the run's lifetime
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise UsageError(
            f"'{folder}' is being written by a running unlearnctl process: wait for it, or stop it"
        ) from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()}\n".encode())
    fh.flush()
    return fh


def _live(folder: Path) -> bool:
    if fcntl is None or not (folder / LOCK_FILE).exists():
        return False
    try:
        with open(folder / LOCK_FILE, "rb") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            return False
    except BlockingIOError:
        return True
    except OSError:
        return False


def write_resume(folder: Path, command: str, request: dict[str, Any], total_steps: int | None) -> None:
    """Record what ``--resume`` needs to re-create the run."""
    doc = {"command": command, "total_steps": total_steps, "request": request}
    (folder / RESUME_FILE).write_text(json.dumps(doc, indent=1), encoding="utf-8")


def read_resume(folder: Path) -> dict[str, Any]:
    try:
        doc = json.loads((folder / RESUME_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"'{folder}' cannot be resumed: its {RESUME_FILE} is unreadable ({exc})") from None
    if not isinstance(doc, dict) or "request" not in doc:
        raise UsageError(f"'{folder}' cannot be resumed: its {RESUME_FILE} is not a resume record")
    return doc


def newest_step(folder: Path) -> int | None:
    found = list_checkpoints(folder / CHECKPOINTS_DIR)
    return int(found[-1].name.split("-", 1)[1]) if found else None


def describe(path: Path, check_live: bool = True) -> PartialRun:
    command = total = None
    if (path / RESUME_FILE).is_file():
        try:
            doc = read_resume(path)
            command, total = doc.get("command"), doc.get("total_steps")
        except UsageError:
            pass
    return PartialRun(path, final_of(path), command, newest_step(path), total, check_live and _live(path))


def find_partials(folder: Path, final: Path | None = None, check_live: bool = True) -> list[PartialRun]:
    """The partial folders in ``folder`` (of ``final`` only, when given), oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    prefix = f".{final.name}{PARTIAL_MARK}" if final is not None else None
    found = [
        p for p in folder.iterdir()
        if p.is_dir() and is_partial(p) and (prefix is None or p.name.startswith(prefix))
    ]  # fmt: skip
    runs: list[tuple[float, PartialRun]] = []
    for path in found:
        try:  # another process may finish (rename) or remove its folder meanwhile
            runs.append((path.stat().st_mtime, describe(path, check_live)))
        except FileNotFoundError:
            continue
    return [run for _, run in sorted(runs, key=lambda item: item[0])]


def find_stale(folder: Path) -> list[PartialRun]:
    """Partial folders in ``folder`` that no live process is writing."""
    return [p for p in find_partials(folder) if not p.live]


def resolve_resume(path: Path, command: str, check_live: bool = True) -> PartialRun:
    """The interrupted run that ``--resume PATH`` names: PATH is the run folder it was writing (its
    ``--out``) or the partial folder itself.

    :raises UsageError: nothing to resume there, the run is still going, it belongs to another command,
        or the run folder already exists (the run completed). ``check_live`` False: do not test the
        lock (the other processes of a multi-process run, while the main one may be taking it).
    """
    path = Path(path)
    if is_partial(path) and path.is_dir():
        candidates = [describe(path, check_live)]
    else:
        if (path / MANIFEST_FILE).is_file():
            raise UsageError(f"'{path}' is a complete run folder: there is nothing to resume")
        candidates = [p for p in find_partials(path.parent, path, check_live) if p.command is not None]
    if not candidates:
        raise UsageError(
            f"no interrupted run of '{path}' to resume (no .{path.name}{PARTIAL_MARK}* folder with a "
            f"{RESUME_FILE} next to it): pass the --out of the interrupted run"
        )
    resumable = [p for p in candidates if p.resumable]
    if not resumable:
        p = candidates[-1]
        if p.live:
            raise UsageError(f"'{p.path}' is being written by a running unlearnctl process: it cannot be resumed now")
        raise UsageError(
            f"'{p.path}' has no checkpoint to resume from: start the run again (and remove it with `unlearnctl clean`)"
        )
    if len(resumable) > 1:
        listing = ", ".join(str(p.path) for p in resumable)
        raise UsageError(f"several interrupted runs of '{path}': resume one by its folder ({listing})")
    found = resumable[0]
    if found.command != command:
        raise UsageError(
            f"'{found.path}' is an interrupted `{found.command}`: resume it with `{found.resume_command()}`"
        )
    return found


@contextlib.contextmanager
def resumable_run_dir(
    final: Path, partial: Path | None, resume_command: str, is_main: bool = True
) -> Iterator[Path | None]:
    """The folder a resumable run writes (:func:`unlearnctl.rundir.atomic_run_dir`), locked for this
    process while the block runs; on an error it is kept when it holds a checkpoint (the error then says
    how to resume). ``partial``: continue writing that folder. Not the main process: ``None`` (the main
    process alone writes)."""
    if not is_main:
        yield None
        return
    with atomic_run_dir(final, partial=partial, keep=lambda tmp: keep_hint(tmp, resume_command)) as tmp:
        held = lock(tmp)  # held until the run ends: a live run's folder is not stale
        try:
            yield tmp
        finally:
            if held is not None:
                held.close()


def discard_resume_state(folder: Path, keep_checkpoints: bool) -> None:
    """Remove what only resuming needs, before the run records its files: ``resume.json``, the lock file
    (still held by this process), and the checkpoints unless they are kept."""
    for name in (RESUME_FILE, LOCK_FILE):
        with contextlib.suppress(FileNotFoundError):
            (folder / name).unlink()
    if not keep_checkpoints:
        shutil.rmtree(folder / CHECKPOINTS_DIR, ignore_errors=True)


def keep_hint(folder: Path, resume_command: str) -> str | None:
    """What to say when a run stops with ``folder`` kept (None: it has no checkpoint and is removed)."""
    step = newest_step(folder)
    if step is None:
        return None
    return f"; checkpoint of step {step} kept in '{folder}': resume with `{resume_command}`"
