"""Run folders that are either whole or absent.

A run folder is written under a temporary sibling name (``.NAME.partial-XXXX``) and renamed into
place when complete, so a folder that exists is whole. An existing target is never overwritten.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from .errors import RunFolderExistsError, UsageError

DEFAULT_RUNS_DIR = Path("runs")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60] or "model"


def default_run_dir(method: str, model: str, root: Path | None = None, now: datetime | None = None) -> Path:
    """``runs/<UTC time>-<method>-<model>/`` (the model's last path part when it is a folder)."""
    now = now or datetime.now(UTC)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    model_name = Path(model).name if os.sep in model or "/" in model else model
    return (root or DEFAULT_RUNS_DIR) / f"{stamp}-{_slug(method)}-{_slug(model_name)}"


def check_new_folder(final: Path) -> None:
    """Refuse an existing target or a parent that is a file, before any work starts."""
    if final.exists():
        raise RunFolderExistsError(
            f"'{final}' already exists: unlearnctl never overwrites a run folder; choose another --out"
        )
    parent = final.parent
    if parent.exists() and not parent.is_dir():
        raise UsageError(f"cannot create '{final}': '{parent}' is not a folder")


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
