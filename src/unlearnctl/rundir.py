"""Run folders: the name of every file they hold, and writing them so they are whole or absent.

A run folder is written under a temporary sibling name (``.NAME.partial-XXXX``) and renamed into
place when complete, so a folder that exists is whole. An existing target is never overwritten, and a
target the file system will not let us create is refused before any work starts: one rule for every
command's ``--out`` (:func:`check_new_folder`, :func:`check_new_file`). Single files inside an existing
folder (``metrics.json``, plots) are written with :func:`atomic_write_bytes`: never half a file. A disk
that fills up (or a file-size limit, a read-only file system) while writing leaves nothing behind and
becomes one :class:`~unlearnctl.errors.EnvironmentFailure` naming the output (docs/errors.md).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from .errors import (
    EnvironmentFailure,
    OutputNotWritableError,
    RunFolderExistsError,
    UsageError,
    environment_errno,
    os_error_message,
)

DEFAULT_RUNS_DIR = Path("runs")

#: errno values that only a write can cause: a full disk, a quota, a file-size limit, a read-only file system
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})

# --- what a run folder holds (see docs/manifest.md) ---------------------------------------------
#: the run's manifest, written last
MANIFEST_FILE = "manifest.json"
#: the model, a diffusers folder
MODEL_DIR = "model"
#: one JSON line per logged step
LOG_FILE = "log.jsonl"
#: sample grids (before/after, eval)
SAMPLES_DIR = "samples"
#: what ``eval`` measured
METRICS_FILE = "metrics.json"
#: what ``audit``'s attacks found (its plots are ``audit-*.png`` next to it)
AUDIT_FILE = "audit.json"
#: ``sample``'s and ``train``'s grid of all images
GRID_FILE = "grid.png"
#: ``sample``'s record of how its images were made
SAMPLES_INFO_FILE = "samples.json"
#: sha256 of the files added to a run folder after the run (``eval``'s metrics.json and grids), in
#: ``sha256sum`` format; the files the run itself wrote are recorded in its manifest (``files``)
CHECKSUMS_FILE = "checksums.sha256"
#: checkpoints of a run being written (``step-NNNNNN/``); removed when the run completes unless kept
CHECKPOINTS_DIR = "checkpoints"
#: what a run being written needs to be resumed (the request), in its ``.NAME.partial-*`` folder only
RESUME_FILE = "resume.json"
#: held locked (``flock``) by the process writing a ``.NAME.partial-*`` folder: a folder whose lock can
#: be taken belongs to no live process
LOCK_FILE = ".lock"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60] or "model"


def default_run_dir(method: str, model: str, root: Path | None = None, now: datetime | None = None) -> Path:
    """``runs/<UTC time>-<method>-<model>/`` (the model's last path part when it is a folder)."""
    now = now or datetime.now(UTC)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    model_name = Path(model).name if os.sep in model or "/" in model else model
    return (root or DEFAULT_RUNS_DIR) / f"{stamp}-{_slug(method)}-{_slug(model_name)}"


def default_train_dir(dataset: str, root: Path | None = None, now: datetime | None = None) -> Path:
    """``runs/<UTC time>-train-<dataset>/``."""
    return default_run_dir("train", dataset, root, now)


def check_new_folder(final: Path, *, empty_ok: bool = False) -> None:
    """Refuse an existing target, a parent that is a file, or a parent we may not write into, before any
    work starts (:func:`check_writable_parent`).

    ``empty_ok``: an existing empty folder is accepted (``sample --out``; nothing in it is overwritten).
    """
    final = Path(final)
    try:
        taken = final.exists() and not (empty_ok and final.is_dir() and not any(final.iterdir()))
    except OSError as exc:
        raise OutputNotWritableError(os_error_message(exc, f"use --out '{final}'")) from None
    if taken:
        also = " and is not an empty folder" if empty_ok else ""
        raise RunFolderExistsError(
            f"'{final}' already exists{also}: unlearnctl never overwrites a run folder; choose another --out"
        )
    check_writable_parent(final)


def check_new_file(path: Path, overwrite: bool = False, option: str = "--out") -> None:
    """Refuse, before any work starts, to write file ``path`` over an existing one (unless ``overwrite``),
    over a folder, into a parent that is a file, or into a folder we may not write. ``option`` names the
    flag that chose ``path``."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{option} '{path}' is a folder: name a file")
    if path.exists() and not overwrite:
        raise UsageError(f"'{path}' already exists: pass --overwrite to replace it, or choose another {option}")
    check_writable_parent(path, option)


def check_writable_parent(target: Path, option: str = "--out") -> None:
    """Make sure ``target`` can be created: its nearest existing ancestor (where ``mkdir -p`` would start)
    must be a folder in which a new folder can be made. Probes by creating and removing a temporary folder
    there, so a read-only file system, a folder without write permission or a full disk is found before
    the model and the data are loaded, and nothing is left behind.

    :raises UsageError: an ancestor is a file (bad input, exit code 2).
    :raises OutputNotWritableError: the file system refuses (exit code 1; docs/errors.md).
    """
    target = Path(target)
    ancestor = target.parent
    try:
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise UsageError(f"cannot create '{target}': '{ancestor}' is not a folder")
        probe = tempfile.mkdtemp(prefix=f".{target.name[:40]}.probe-", dir=ancestor)
        os.rmdir(probe)
    except OSError as exc:
        raise OutputNotWritableError(os_error_message(exc, f"write {option} '{target}' (in '{ancestor}')")) from None


@contextlib.contextmanager
def atomic_run_dir(
    final: Path,
    *,
    empty_ok: bool = False,
    partial: Path | None = None,
    keep: Callable[[Path], str | None] | None = None,
) -> Iterator[Path]:
    """Yield a temporary folder to write into; rename it to ``final`` when the block ends cleanly.

    On any exception (Ctrl-C included) the temporary folder is removed and nothing is left behind; a
    disk that fills up, a file-size limit or a read-only file system while writing becomes one
    :class:`~unlearnctl.errors.EnvironmentFailure` naming ``final``. ``empty_ok``: an existing empty
    ``final`` folder is replaced (``sample --out``). ``partial``: write into this existing temporary
    folder (a resumed run). ``keep(tmp)``: on an exception, a text to add to the error when the folder is
    kept (a resumable run with a checkpoint), or None to remove it.
    """
    final = Path(final)
    check_new_folder(final, empty_ok=empty_ok)
    if partial is not None:
        tmp = Path(partial)
    else:
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
        except OSError as exc:
            raise EnvironmentFailure(os_error_message(exc, f"create the run folder '{final}'")) from None
    try:
        yield tmp
        if final.exists() and not (empty_ok and final.is_dir() and not any(final.iterdir())):
            # someone else took the name while we worked
            raise RunFolderExistsError(f"'{final}' appeared while the run was writing; the run was not saved")
        # mkdtemp makes the folder private (0700), and some writers (safetensors) make their files private
        # (0600): every folder and file of a run folder gets the usual umask-derived mode instead.
        for path in tmp.rglob("*"):
            if not path.is_symlink():
                follow_umask(path)
        follow_umask(tmp)
        if final.exists():
            final.rmdir()  # an empty folder (empty_ok, checked above)
        os.replace(tmp, final)
    except BaseException as exc:
        hint = keep(tmp) if keep is not None else None
        if hint is None:
            shutil.rmtree(tmp, ignore_errors=True)
        failure = _write_failure(exc, tmp, final)
        if failure is not None:
            if hint:
                failure.args = (str(failure) + hint,)
            raise failure from exc
        if hint:
            _add_hint(exc, hint)
        raise


def _add_hint(exc: BaseException, hint: str) -> None:
    """Say in ``exc``'s one line that the run folder was kept, and how to go on."""
    if isinstance(exc, KeyboardInterrupt):
        detail = str(getattr(exc, "detail", "") or "")
        if "checkpoint" not in detail:
            exc.detail = detail + hint  # type: ignore[attr-defined]
    elif exc.args and isinstance(exc.args[0], str):
        exc.args = (exc.args[0] + hint, *exc.args[1:])


def _write_failure(exc: BaseException, tmp: Path, final: Path) -> EnvironmentFailure | None:
    """The :class:`EnvironmentFailure` for a failed write while ``final`` was being written in ``tmp``:
    the disk is full, a file too large, the file system read-only; or a permission error on a path inside
    ``tmp``. It names ``final`` (or the path outside ``tmp`` that failed). ``None`` for anything else (it
    keeps its own meaning)."""
    if not isinstance(exc, Exception):
        return None
    number = environment_errno(exc)
    if number is None:
        return None
    filename = _filename(exc)
    inside = filename is None or filename.startswith(str(tmp)) or str(tmp) in str(exc)
    if number not in WRITE_ERRNOS and not (inside and filename is not None):
        return None
    what = f"write the run folder '{final}'" if inside else f"write '{filename}'"
    return EnvironmentFailure(os_error_message(OSError(number, os.strerror(number)), what))


def _filename(exc: BaseException) -> str | None:
    """The first path that ``exc`` or one of its causes names (``OSError.filename``)."""
    current: BaseException | None = exc
    for _ in range(8):
        if current is None:
            return None
        if getattr(current, "filename", None) is not None:
            return str(current.filename)  # type: ignore[attr-defined]
        current = current.__cause__ or current.__context__
    return None


def follow_umask(path: Path) -> None:
    """Give ``path`` the mode a new file (``0o666``) or folder (``0o777``) gets under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``path`` via a temporary file in the same folder and a rename: never half a file.

    :raises EnvironmentFailure: the disk is full, the file too large, the file system read-only, or
        the folder not writable (one line naming ``path``).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise EnvironmentFailure(os_error_message(exc, f"write '{path}'")) from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        follow_umask(Path(tmp))  # mkstemp makes files private (0600)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno is not None:
            raise EnvironmentFailure(os_error_message(exc, f"write '{path}'")) from exc
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_log_line(fh: IO[str], step: int, values: dict[str, Any]) -> None:
    """Append one ``log.jsonl`` line (``{"step": step, **values}``) and flush it."""
    fh.write(json.dumps({"step": step, **values}) + "\n")
    fh.flush()


# --- what a run folder holds, by sha256 (docs/verify.md) ------------------------------------------


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def run_files(run_dir: Path) -> list[str]:
    """Every file under ``run_dir`` as sorted POSIX paths relative to it, except its two records
    (``manifest.json`` and ``checksums.sha256``)."""
    run_dir = Path(run_dir)
    found = (p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file())
    return sorted(rel for rel in found if rel not in (MANIFEST_FILE, CHECKSUMS_FILE))


def hash_run_files(run_dir: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of :func:`run_files` (what a run records in its manifest's ``files``)."""
    return {rel: file_sha256(Path(run_dir) / rel) for rel in run_files(run_dir)}


def read_checksums(run_dir: Path) -> dict[str, str]:
    """The ``checksums.sha256`` of a run folder as ``{relative path: sha256}`` (empty when there is none).

    :raises UsageError: a line that is not ``<64 hex digits>  <path>`` (one line naming it).
    """
    path = Path(run_dir) / CHECKSUMS_FILE
    if not path.is_file():
        return {}
    out: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        match = re.fullmatch(r"([0-9a-fA-F]{64}) [ *](.+)", line)
        if match is None:
            raise UsageError(f"'{path}' line {number} is not '<sha256>  <path>': the record is damaged")
        out[match.group(2)] = match.group(1).lower()
    return out


def record_files(run_dir: Path, paths: list[Path | str]) -> None:
    """Record the sha256 of ``paths`` (files inside ``run_dir``, absolute or relative to it) in its
    ``checksums.sha256``, replacing earlier lines for the same files; written atomically.

    For files added to a run folder after the run (``eval``'s ``metrics.json`` and grids), so that
    ``unlearnctl verify`` covers them; ``cd RUN && sha256sum -c checksums.sha256`` checks them too.
    """
    run_dir = Path(run_dir)
    root = run_dir.resolve()
    record = read_checksums(run_dir)
    for path in paths:
        full = Path(path) if Path(path).is_absolute() else run_dir / path
        try:
            rel = full.resolve().relative_to(root).as_posix()
        except ValueError:
            raise UsageError(f"'{path}' is not inside the run folder '{run_dir}'") from None
        record[rel] = file_sha256(full)
    text = "".join(f"{digest}  {rel}\n" for rel, digest in sorted(record.items()))
    atomic_write_text(run_dir / CHECKSUMS_FILE, text)
