"""``unlearnctl report RUN_OR_STUDY ... --out report.html``: one self-contained static HTML page.

What each folder holds is read here (:func:`load_entry`): a run folder (``manifest.json``, ``log.jsonl``,
``samples/*.png``, and after ``eval``/``audit`` its ``metrics.json``, ``audit.json`` and ``audit-*.png``),
or a results folder (what ``eval MODEL --out DIR`` / ``audit MODEL --out DIR`` wrote for a model that is not a
run: ``metrics.json`` and/or ``audit.json``, no manifest). A study folder of ``unlearnctl sweep`` (its
``study.json``) becomes a section of its own (:mod:`.report_study`). :mod:`.report_html` turns the entries into
the page: images inlined as ``data:`` URIs, curves and the trade-off plot as inline SVG, no script and nothing
fetched at view time (docs/report.md).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..manifest import Manifest, read_manifest
from ..results import AUDIT_SCHEMA_VERSION, METRICS_SCHEMA_VERSION
from ..rundir import AUDIT_FILE, LOG_FILE, MANIFEST_FILE, METRICS_FILE, SAMPLES_DIR, atomic_write_text, check_new_file
from .compare import _distinguishing_options, _key_options, audit_row, summary_row

#: the most points a curve keeps (longer logs are thinned evenly, the last point always kept)
MAX_CURVE_POINTS = 600
#: images larger than this are not inlined (named instead), to keep the page loadable
MAX_IMAGE_BYTES = 8 * 1024 * 1024


@dataclass
class ReportEntry:
    """One folder of the report: a run (with a manifest) or a results folder (eval/audit results only)."""

    path: Path
    name: str
    kind: str  # "run" or "results"
    manifest: Manifest | None
    metrics: dict[str, Any] | None
    audit: dict[str, Any] | None
    #: log.jsonl as columns: key -> [(step, value), ...] (numbers only)
    curves: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    #: (title, file name relative to the folder, PNG bytes)
    images: list[tuple[str, str, bytes]] = field(default_factory=list)
    #: compare-style row (method, key options, headline numbers, audit headline numbers)
    row: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _read_json(path: Path, what: str, version: int) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read {what} '{path}': {' '.join(str(exc).split())}") from exc
    if not isinstance(data, dict) or data.get("schema_version") != version:
        got = data.get("schema_version") if isinstance(data, dict) else type(data).__name__
        raise UsageError(f"'{path}' has schema version {got!r}; this unlearnctl reads {version}")
    return data


def read_curves(path: Path) -> tuple[dict[str, list[tuple[float, float]]], list[str]]:
    """``log.jsonl`` as numeric columns by step; damaged lines are skipped and counted in a warning."""
    curves: dict[str, list[tuple[float, float]]] = {}
    bad = 0
    if not path.is_file():
        return curves, []
    with path.open(encoding="utf-8", errors="replace") as fh:
        for index, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if not isinstance(record, dict):
                bad += 1
                continue
            step = record.get("step", index)
            if not isinstance(step, int | float) or isinstance(step, bool):
                step = index
            for key, value in record.items():
                if key in ("step", "time") or isinstance(value, bool) or not isinstance(value, int | float):
                    continue
                if math.isfinite(value):
                    curves.setdefault(str(key), []).append((float(step), float(value)))
    for key, points in curves.items():
        if len(points) > MAX_CURVE_POINTS:
            stride = len(points) / MAX_CURVE_POINTS
            thinned = [points[int(i * stride)] for i in range(MAX_CURVE_POINTS - 1)] + [points[-1]]
            curves[key] = thinned
    warnings = [f"{path}: {bad} line(s) are not JSON objects and were skipped"] if bad else []
    return curves, warnings


#: the order sample grids appear in: (file stem, title)
_GRID_ORDER = (
    ("forgotten-before", "forgotten classes, before"),
    ("forgotten-after", "forgotten classes, after"),
    ("kept-before", "kept classes, before"),
    ("kept-after", "kept classes, after"),
    ("eval-forgotten", "eval: forgotten classes"),
    ("eval-kept", "eval: kept classes"),
)


def _images(folder: Path, warnings: list[str]) -> list[tuple[str, str, bytes]]:
    found: list[Path] = []
    samples = folder / SAMPLES_DIR
    if samples.is_dir():
        found += sorted(samples.glob("*.png"))
    found += sorted(folder.glob("audit-*.png"))
    titles = dict(_GRID_ORDER)
    order = {stem: i for i, (stem, _t) in enumerate(_GRID_ORDER)}
    found.sort(key=lambda p: (p.parent != samples, order.get(p.stem, len(order)), p.name))
    out = []
    for path in found:
        if not path.is_file():
            continue
        size = path.stat().st_size
        if size > MAX_IMAGE_BYTES:
            warnings.append(f"{path}: {size} bytes, larger than {MAX_IMAGE_BYTES}: not inlined")
            continue
        data = path.read_bytes()
        if not data.startswith(b"\x89PNG\r\n\x1a\n"):
            warnings.append(f"{path}: not a PNG file: left out")
            continue
        title = titles.get(path.stem, path.stem.replace("-", " "))
        out.append((title, str(path.relative_to(folder)), data))
    return out


def load_entry(folder: Path, registry: Any = None) -> ReportEntry:
    """Read one run or results folder. A folder with neither ``manifest.json`` nor ``metrics.json`` /
    ``audit.json`` is bad input (:class:`UsageError`)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"'{folder}' is not a run folder (no such folder)")
    has_manifest = (folder / MANIFEST_FILE).is_file()
    metrics = _read_json(folder / METRICS_FILE, "metrics", METRICS_SCHEMA_VERSION)
    audit = _read_json(folder / AUDIT_FILE, "audit", AUDIT_SCHEMA_VERSION)
    if not has_manifest and metrics is None and audit is None:
        raise UsageError(
            f"'{folder}' is not a run folder (no {MANIFEST_FILE}), a results folder (no {METRICS_FILE} or "
            f"{AUDIT_FILE}) nor a study folder (no study.json)"
        )
    manifest = read_manifest(folder) if has_manifest else None
    warnings: list[str] = []
    curves, log_warnings = read_curves(folder / LOG_FILE)
    warnings += log_warnings
    entry = ReportEntry(
        path=folder,
        name=folder.resolve().name or str(folder),
        kind="run" if manifest is not None else "results",
        manifest=manifest,
        metrics=metrics,
        audit=audit,
        curves=curves,
        images=_images(folder, warnings),
        warnings=warnings,
    )
    if manifest is not None:
        method = manifest.method.name if manifest.method else manifest.kind
        options = dict(manifest.method.options) if manifest.method else {}
        key_options = _key_options(registry, manifest)
    else:
        model = (metrics or {}).get("model") or ((audit or {}).get("models") or {}).get("model") or {}
        method = str(model.get("method") or model.get("spec") or "model")
        options, key_options = {}, {}
    entry.row = {
        "run": str(folder),
        "name": entry.name,
        "method": method,
        "options": options,
        "key_options": key_options,
        **summary_row(((metrics or {}).get("results") or {}).get("model") or {}),
        "wall_time_s": manifest.wall_time_s if manifest else None,
        "optimizer_steps": manifest.optimizer_steps if manifest else None,
        "audit": audit_row(audit, "model"),
    }
    return entry


def reference_rows(entries: Sequence[ReportEntry]) -> list[dict[str, Any]]:
    """The base (reference) models of the runs' metrics.json, one per distinct model hash."""
    refs: dict[str, dict[str, Any]] = {}
    for entry in entries:
        ref = (entry.metrics or {}).get("reference")
        if not isinstance(ref, dict):
            continue
        key = str(ref.get("sha256"))
        if key not in refs:
            refs[key] = {
                "name": f"base: {Path(str(ref.get('spec'))).name}",
                **summary_row(((entry.metrics or {}).get("results") or {}).get("reference") or {}),
            }
    return list(refs.values())


@dataclass
class ReportResult:
    path: Path
    bytes: int
    seconds: float
    entries: int
    images: int
    warnings: list[str]


def build_report(folders: Sequence[Path], registry: Any = None, title: str | None = None) -> tuple[str, list[str]]:
    """The report's HTML for ``folders`` (one or more run, results or study folders) and its warnings.
    ``registry`` (default: the process's) tells each method's defaults, so that only non-default options are
    shown."""
    from .report_html import render_report
    from .report_study import is_study, study_section

    if not folders:
        raise UsageError("report needs at least one run folder")
    if registry is None:
        from ..registry import get_registry

        registry = get_registry()
    studies = [study_section(Path(f)) for f in folders if is_study(Path(f))]
    entries = [load_entry(Path(f), registry) for f in folders if not is_study(Path(f))]
    names = [e.name for e in entries]
    if len(set(names)) < len(names):  # disambiguate by the parent folder
        for entry in entries:
            entry.name = f"{entry.path.resolve().parent.name}/{entry.name}"
            entry.row["name"] = entry.name
    _distinguishing_options([e.row for e in entries if e.kind == "run"])
    created = datetime.now(UTC).replace(microsecond=0).isoformat()
    html_text = render_report(entries, reference_rows(entries), title=title, created=created, studies=studies)
    warnings = [w for e in entries for w in e.warnings] + [w for s in studies for w in s.warnings]
    return html_text, warnings


def write_report(
    folders: Sequence[Path], out: Path, overwrite: bool = False, registry: Any = None, title: str | None = None
) -> ReportResult:
    """Build the report and write it to ``out`` atomically; an existing ``out`` only with ``overwrite``."""
    start = time.perf_counter()
    out = Path(out)
    check_new_file(out, overwrite, "--out")
    html_text, warnings = build_report(folders, registry, title)
    atomic_write_text(out, html_text)
    images = html_text.count("<img ")
    return ReportResult(out, len(html_text.encode()), time.perf_counter() - start, len(folders), images, warnings)
