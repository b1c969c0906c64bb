"""Run folders: the name of every file they hold, and writing them so they are whole or absent.

A run folder is written under a temporary sibling name (``.NAME.partial-XXXX``) and renamed into
place when complete, so a folder that exists is whole. An existing target is never overwritten: one
rule for every command's ``--out`` (:func:`check_new_folder`). Single files inside an existing folder
(``metrics.json``, plots) are written with :func:`atomic_write_bytes`: never half a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from .errors import RunFolderExistsError, UsageError

DEFAULT_RUNS_DIR = Path("runs")

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
#: ``sample``'s and ``train``'s grid of all images
GRID_FILE = "grid.png"
#: ``sample``'s record of how its images were made
SAMPLES_INFO_FILE = "samples.json"


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
    """Refuse an existing target or a parent that is a file, before any work starts.

    ``empty_ok``: an existing empty folder is accepted (``sample --out``; nothing in it is overwritten).
    """
    final = Path(final)
    if final.exists() and not (empty_ok and final.is_dir() and not any(final.iterdir())):
        also = " and is not an empty folder" if empty_ok else ""
        raise RunFolderExistsError(
            f"'{final}' already exists{also}: unlearnctl never overwrites a run folder; choose another --out"
        )
    parent = final.parent
    if parent.exists() and not parent.is_dir():
        raise UsageError(f"cannot create '{final}': '{parent}' is not a folder")


def check_new_file(path: Path, overwrite: bool = False, option: str = "--out") -> None:
    """Refuse, before any work starts, to write file ``path`` over an existing one (unless ``overwrite``),
    over a folder, or into a parent that is a file. ``option`` names the flag that chose ``path``."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{option} '{path}' is a folder: name a file")
    if path.exists() and not overwrite:
        raise UsageError(f"'{path}' already exists: pass --overwrite to replace it, or choose another {option}")
    if path.parent.exists() and not path.parent.is_dir():
        raise UsageError(f"cannot create '{path}': '{path.parent}' is not a folder")


@contextlib.contextmanager
def atomic_run_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary folder to write into; rename it to ``final`` when the block ends cleanly.

    On any exception (Ctrl-C included) the temporary folder is removed and nothing is left behind.
    """
    final = Path(final)
    check_new_folder(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    try:
        yield tmp
        if final.exists():  # someone else took the name while we worked
            raise RunFolderExistsError(f"'{final}' appeared while the run was writing; the run was not saved")
        # mkdtemp makes the folder private (0700); a run folder gets the usual umask-derived mode.
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``path`` via a temporary file in the same folder and a rename: never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes files private (0600); follow the umask instead
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_log_line(fh: IO[str], step: int, values: dict[str, Any]) -> None:
    """Append one ``log.jsonl`` line (``{"step": step, **values}``) and flush it."""
    fh.write(json.dumps({"step": step, **values}) + "\n")
    fh.flush()
