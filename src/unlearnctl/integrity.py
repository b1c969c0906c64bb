"""Run-folder integrity: the sha256 of every file a run folder holds, recorded and checked (docs/verify.md).

A run records the sha256 of every file it wrote in its manifest (``files``); files added to the folder
later (``eval``'s ``metrics.json`` and grids) are recorded in ``checksums.sha256`` by
:func:`unlearnctl.rundir.record_files`. :func:`verify_run` checks every listed file against every
record that lists it, and the model folder against ``weights.output_files_sha256`` (with ``weights``,
also the loaded weights against ``weights.output_sha256``). A run made before the per-file record
verifies its weights that way and says which files it could not check.

:func:`check_run` is the check every command makes when it reads a run folder (``--model RUN``, eval's
target, ``replay``, ``compare``); :func:`run_checks` turns it off for a block (``--no-verify``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from .errors import ModelNotAvailableError, RunIntegrityError
from .manifest import Manifest, read_manifest
from .models.folder import folder_sha256, load_unet, state_sha256
from .rundir import CHECKSUMS_FILE, MANIFEST_FILE, MODEL_DIR, file_sha256, read_checksums, run_files

#: ``ok``: matches every record listing it; ``changed``/``missing``: does not; ``extra``: listed by no
#: record; ``unchecked``: a run made before the per-file record, so nothing to check it against
FileStatus = Literal["ok", "changed", "missing", "extra", "unchecked"]

#: how many file names a warning line shows
SHOWN = 5


@dataclass
class FileCheck:
    """One file of a run folder and what its check found."""

    path: str
    status: FileStatus
    #: the sha256 the records hold (None: no record lists the file)
    recorded: str | None = None
    #: the sha256 of the file now (None: missing, or not read)
    actual: str | None = None
    #: the records that list it: ``manifest`` (what the run wrote), ``checksums`` (added later),
    #: ``weights.output_files_sha256`` (an old run's weights)
    sources: list[str] = field(default_factory=list)


@dataclass
class VerifyReport:
    """What :func:`verify_run` found. ``problems`` (one line each) make a run fail; ``warnings`` do not."""

    run_dir: Path
    files: list[FileCheck]
    #: ``output_files_sha256`` / ``output_sha256``: ``ok``, ``changed``, ``not recorded`` or ``not checked``
    model: dict[str, str]
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: set by ``verify --data``: the dataset's name, recorded and current fingerprints, status
    dataset: dict[str, Any] | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "run": str(self.run_dir),
            "ok": self.ok,
            "problems": self.problems,
            "warnings": self.warnings,
            "model": self.model,
            "dataset": self.dataset,
            "files": [asdict(f) for f in self.files],
            "seconds": round(self.seconds, 3),
        }

    def error(self) -> RunIntegrityError:
        """The first problem as one line (with how many more there are)."""
        more = len(self.problems) - 1
        tail = f" (and {more} more: `unlearnctl verify {self.run_dir}` lists them)" if more > 0 else ""
        return RunIntegrityError(self.problems[0] + tail)


def run_folder(path: Path | str) -> Path:
    """The run folder ``path`` names: itself, or the folder of a ``manifest.json``."""
    path = Path(path).expanduser()
    return path.parent if path.name == MANIFEST_FILE and path.is_file() else path


def _safe(rel: str) -> bool:
    parts = PurePosixPath(rel).parts
    return bool(parts) and not PurePosixPath(rel).is_absolute() and ".." not in parts


def verify_run(path: Path | str, *, weights: bool = False) -> VerifyReport:
    """Check every file of the run folder ``path`` (or of its ``manifest.json``) against its records.

    :param weights: also load the model's weights (safetensors) and compare their ``state_sha256`` with
        ``weights.output_sha256``.
    :raises UsageError: no readable manifest (the folder is not a run folder).
    """
    start = time.perf_counter()
    run_dir = run_folder(path)
    manifest = read_manifest(run_dir)
    digests: dict[str, str] = {}

    def sha(rel: str) -> str:
        if rel not in digests:
            digests[rel] = file_sha256(run_dir / rel)
        return digests[rel]

    records: dict[str, list[tuple[str, str]]] = {}
    for name, record in (("manifest", manifest.files or {}), ("checksums", read_checksums(run_dir))):
        for rel, digest in record.items():
            records.setdefault(rel, []).append((name, digest.lower()))
    where = f"run '{run_dir}'"
    problems: list[str] = []
    checks: dict[str, FileCheck] = {}
    for rel, listed in sorted(records.items()):
        sources = [s for s, _ in listed]
        if not _safe(rel):
            problems.append(f"{where}: the {sources[0]} lists '{rel}', which is not a path inside the run folder")
            continue
        if not (run_dir / rel).is_file():
            checks[rel] = FileCheck(rel, "missing", listed[0][1], None, sources)
            problems.append(f"{where}: {rel} is missing (recorded in the {' and the '.join(sources)})")
            continue
        actual = sha(rel)
        wrong = [(s, d) for s, d in listed if d != actual]
        status: FileStatus = "changed" if wrong else "ok"
        checks[rel] = FileCheck(rel, status, (wrong or listed)[0][1], actual, sources)
        if wrong:
            problems.append(
                f"{where}: {rel} changed since it was recorded (sha256 now {actual[:16]}..., recorded "
                f"{wrong[0][1][:16]}... in the {wrong[0][0]})"
            )
    model = _check_model(run_dir, manifest, sha, problems, weights)
    warnings: list[str] = []
    unlisted = [rel for rel in run_files(run_dir) if rel not in records]
    if manifest.files is None:
        weights_ok = model["output_files_sha256"] == "ok"
        for rel in unlisted:
            covered = weights_ok and rel.startswith(f"{MODEL_DIR}/") and rel.endswith(".safetensors")
            covered_by = ["weights.output_files_sha256"] if covered else []
            checks[rel] = FileCheck(rel, "ok" if covered else "unchecked", None, digests.get(rel), covered_by)
        unchecked = [rel for rel in unlisted if checks[rel].status == "unchecked"]
        if unchecked:
            warnings.append(
                f"{where} was made before unlearnctl recorded every file: {len(unchecked)} file(s) not checked: "
                + _names(unchecked)
            )
    else:
        for rel in unlisted:
            checks[rel] = FileCheck(rel, "extra")
        if unlisted:
            warnings.append(
                f"{where}: {len(unlisted)} file(s) in no record (added after the run, not by unlearnctl): "
                + _names(unlisted)
            )
    files = [checks[rel] for rel in sorted(checks)]
    return VerifyReport(run_dir, files, model, problems, warnings, seconds=time.perf_counter() - start)


def _names(rels: list[str]) -> str:
    shown = ", ".join(rels[:SHOWN])
    return shown + (f" and {len(rels) - SHOWN} more" if len(rels) > SHOWN else "")


def _check_model(run_dir: Path, manifest: Manifest, sha: Any, problems: list[str], weights: bool) -> dict[str, str]:
    """``weights.output_files_sha256`` (the model folder's files) and, with ``weights``, ``output_sha256``."""
    model_dir = run_dir / MODEL_DIR
    out = {"output_files_sha256": "not recorded", "output_sha256": "not recorded"}
    where = f"run '{run_dir}'"
    recorded_files = manifest.weights.output_files_sha256
    if recorded_files is not None:
        if not model_dir.is_dir():
            out["output_files_sha256"] = "missing"
            problems.append(f"{where}: {MODEL_DIR}/ is missing (weights.output_files_sha256 records it)")
            return out
        now = folder_sha256(model_dir, lambda p: sha(p.relative_to(run_dir).as_posix()))
        out["output_files_sha256"] = "ok" if now == recorded_files else "changed"
        if now != recorded_files:
            problems.append(
                f"{where}: the weights files in {MODEL_DIR}/ differ from weights.output_files_sha256 in the "
                f"manifest (sha256 now {now[:16]}..., recorded {recorded_files[:16]}...)"
            )
    recorded_state = manifest.weights.output_sha256
    if recorded_state is None:
        return out
    if not weights or not model_dir.is_dir():
        out["output_sha256"] = "not checked"
        return out
    try:
        now = state_sha256(load_unet(model_dir))
    except ModelNotAvailableError as exc:
        out["output_sha256"] = "changed"
        problems.append(f"{where}: the weights in {MODEL_DIR}/ do not load ({exc})")
        return out
    out["output_sha256"] = "ok" if now == recorded_state else "changed"
    if now != recorded_state:
        problems.append(
            f"{where}: the weights in {MODEL_DIR}/ differ from weights.output_sha256 in the manifest (state "
            f"sha256 now {now[:16]}..., recorded {recorded_state[:16]}...)"
        )
    return out


# --- the check commands make when they read a run folder ------------------------------------------

_checks_enabled: ContextVar[bool] = ContextVar("unlearnctl_run_checks", default=True)


@contextlib.contextmanager
def run_checks(enabled: bool = True) -> Iterator[None]:
    """Inside the block, :func:`check_run` checks (``enabled``) or skips (``--no-verify``) run folders."""
    token = _checks_enabled.set(enabled)
    try:
        yield
    finally:
        _checks_enabled.reset(token)


def run_checks_enabled() -> bool:
    return _checks_enabled.get()


def set_run_checks(enabled: bool) -> Any:
    """Set the switch of :func:`run_checks` until :func:`reset_run_checks` is called with the returned token."""
    return _checks_enabled.set(enabled)


def reset_run_checks(token: Any) -> None:
    _checks_enabled.reset(token)


def is_run_folder(path: Path | str) -> bool:
    """Whether ``path`` is a run folder: ``manifest.json`` and ``model/`` (or ``checksums.sha256``)."""
    path = Path(path)
    return (path / MANIFEST_FILE).is_file() and ((path / MODEL_DIR).is_dir() or (path / CHECKSUMS_FILE).is_file())


def check_run(path: Path | str) -> VerifyReport | None:
    """Verify the run folder ``path`` before a command reads it (:func:`verify_run`, files only).

    Does nothing (returns None) inside ``run_checks(False)`` (``--no-verify``).

    :raises RunIntegrityError: a changed or missing file, in one line naming it (exit code 2).
    """
    if not run_checks_enabled():
        return None
    report = verify_run(path)
    if report.problems:
        raise report.error()
    return report
