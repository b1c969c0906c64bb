"""``unlearnctl verify``: check every file of a run folder against the sha256 its records hold.

The checks themselves are :mod:`unlearnctl.integrity` (``verify_run``, and ``check_run``: what every
command does when it reads a run folder); this command adds the loaded weights' hash and, with
``data``, the dataset's fingerprint, every data file hashed again. See docs/verify.md.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..data.files import rehashing
from ..inputs import dataset_options, load_dataset_record, resolve_data_dir
from ..integrity import FileCheck, VerifyReport, check_run, run_checks, run_folder, verify_run
from ..manifest import Manifest, read_manifest
from ..registry import get_registry

__all__ = ["FileCheck", "VerifyReport", "check_dataset", "check_run", "run_checks", "verify", "verify_run"]


def check_dataset(manifest: Manifest, data_dir: Path | None = None, registry: Any = None) -> dict[str, Any]:
    """Load the run's dataset with its recorded options, every file hashed again, and compare fingerprints.

    ``data_dir``: where the files are now (default: the recorded folder). Returns ``name``, ``recorded``,
    ``fingerprint`` and ``status`` (``ok`` or ``changed``).
    """
    registry = registry if registry is not None else get_registry()
    record = manifest.dataset
    folder = (
        resolve_data_dir(data_dir) if data_dir is not None else (Path(record.data_dir) if record.data_dir else None)
    )
    options = dataset_options(record.name, dict(record.options), registry=registry)
    with rehashing():
        _, now = load_dataset_record(registry, record.name, options, folder)
    status = "ok" if now.fingerprint == record.fingerprint else "changed"
    return {"name": record.name, "recorded": record.fingerprint, "fingerprint": now.fingerprint, "status": status}


def verify(path: Path | str, *, data: bool = False, data_dir: Path | None = None, registry: Any = None) -> VerifyReport:
    """``unlearnctl verify RUN``: :func:`~unlearnctl.integrity.verify_run` with the weights loaded and
    their ``state_sha256`` compared; with ``data``, also :func:`check_dataset`.

    Never raises for what it finds: a changed file is a ``problem`` in the report.
    :raises UsageError: ``path`` is not a run folder (no readable manifest); with ``data``, a dataset
        that cannot be loaded.
    """
    start = time.perf_counter()
    report = verify_run(path, weights=True)
    if data:
        manifest = read_manifest(run_folder(path))
        found = check_dataset(manifest, data_dir, registry)
        report.dataset = found
        if found["status"] != "ok":
            report.problems.append(
                f"run '{report.run_dir}': dataset '{found['name']}' differs from the recorded one (fingerprint now "
                f"{found['fingerprint'][:16]}..., recorded {found['recorded'][:16]}...): its files changed"
            )
    report.seconds = time.perf_counter() - start
    return report
