"""``unlearnctl compare``: several runs' manifests, metrics and audits in one table."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..integrity import check_run
from ..manifest import Manifest, read_manifest
from ..results import read_audit, read_metrics
from ..rundir import check_new_file
from .figures import pyplot, save_png

# --- compare ------------------------------------------------------------------------------------------


#: the protocol entries that must agree for runs to be comparable
COMPARABLE_KEYS = ("sampler", "steps", "eta", "guidance", "samples_per_class", "seed", "forget_classes")
#: the protocol entries of ``audit.json`` that must agree for audits to be comparable (the attacks' options too)
COMPARABLE_AUDIT_KEYS = ("sampler", "steps", "eta", "guidance", "seed", "forget_classes", "attacks")


def _get(results: dict[str, Any], dotted: str) -> float | None:
    value: Any = results
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _key_options(registry: Any, manifest: Manifest) -> dict[str, Any]:
    """The method options that differ from the method's defaults (all of them if it is not installed)."""
    if manifest.method is None:
        return {}
    options = dict(manifest.method.options)
    try:
        cls = registry.get("method", manifest.method.name).cls if registry is not None else None
    except UsageError:
        cls = None
    if cls is None:
        return options
    defaults = cls.Options().model_dump(mode="json", by_alias=True)
    # `steps` has its own column
    return {k: v for k, v in options.items() if defaults.get(k, object()) != v and k != "steps"}


def _distinguishing_options(rows: list[dict[str, Any]]) -> None:
    """Where several runs share a method, their ``key_options`` become the options that tell them apart
    (values not all equal); a method's only run keeps its non-default options."""
    by_method: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_method.setdefault(row["method"], []).append(row)
    for group in by_method.values():
        if len(group) < 2:
            continue
        keys = sorted({k for row in group for k in row["options"]} - {"steps"})
        varying = [k for k in keys if len({json.dumps(r["options"].get(k), sort_keys=True) for r in group}) > 1]
        for row in group:
            row["key_options"] = {k: row["options"].get(k) for k in varying}


def summary_row(results: dict[str, Any]) -> dict[str, float | None]:
    """The headline numbers of one model's results (what `compare` tabulates and plots)."""
    return {
        "recognition_rate": _get(results, "forgetting.recognition_rate"),
        "ua": _get(results, "forgetting.ua"),
        "kept_rate": _get(results, "kept.mean_rate"),
        "fid": _get(results, "fidelity.fid"),
        "kid": _get(results, "fidelity.kid_mean"),
        "mia_auc": _get(results, "membership.auc"),
    }


def audit_row(audit: dict[str, Any] | None, role: str) -> dict[str, float | None]:
    """The headline number of each attack of an ``audit.json`` for one role (``"model"``, ``"base"``,
    ``"retrain"``): attack -> the value of its ``Attack.headline`` key (None when the attack skipped it)."""
    if audit is None:
        return {}
    results = audit.get("results", {}).get(role, {})
    return {attack: _get(results, f"{attack}.{key}") for attack, (key, _title) in audit.get("headlines", {}).items()}


@dataclass
class CompareResult:
    rows: list[dict[str, Any]]
    #: one row per distinct reference model (usually one: the base model; a retrained reference of an audit)
    references: list[dict[str, Any]]
    warnings: list[str]
    #: the audit columns, ``(attack, column title)`` in order (empty when no run has an ``audit.json``)
    audit_columns: list[tuple[str, str]] = field(default_factory=list)


def compare(runs: Sequence[Path], registry: Any = None) -> CompareResult:
    """One row per run: method, key options, forgetting, kept-class rate, FID, wall time, steps; and, for a
    run with an ``audit.json``, each attack's headline number (``audit``: attack -> value).

    ``key_options``: for runs of one method, the options whose values differ between them; for a
    method's only run, the options that differ from the method's defaults. ``options``: all of them.
    """
    if not runs:
        raise UsageError("compare needs at least one run folder")
    rows = []
    references: dict[str, dict[str, Any]] = {}
    warnings: list[str] = []
    protocols: dict[str, tuple[Any, ...]] = {}
    audit_protocols: dict[str, str] = {}
    columns: dict[str, str] = {}
    for run in runs:
        run = Path(run)
        if not run.is_dir():
            raise UsageError(f"'{run}' is not a run folder")
        manifest = read_manifest(run)
        check_run(run)  # its files (metrics.json too, once eval records it) must match their records
        metrics = read_metrics(run)
        audit = read_audit(run)
        proto = metrics.get("protocol", {})
        extractor_kind = (proto.get("feature_extractor") or {}).get("kind")
        protocols[str(run)] = (*(json.dumps(proto.get(k), sort_keys=True) for k in COMPARABLE_KEYS), extractor_kind)
        row: dict[str, Any] = {
            "run": str(run),
            "name": run.name,
            "method": manifest.method.name if manifest.method else manifest.kind,
            "key_options": _key_options(registry, manifest),
            "options": dict(manifest.method.options) if manifest.method else {},
            "forget_classes": list(manifest.forget.forget_classes) if manifest.forget else [],
            **summary_row(metrics.get("results", {}).get("model", {})),
            "wall_time_s": manifest.wall_time_s,
            "optimizer_steps": manifest.optimizer_steps,
            "weights": manifest.weights.saved_weights,
            "audit": audit_row(audit, "model"),
        }
        rows.append(row)
        ref = metrics.get("reference")
        if ref is not None and ref.get("sha256") not in references:
            references[ref["sha256"]] = {
                "name": f"base: {Path(str(ref.get('spec'))).name}",
                "spec": ref.get("spec"),
                **summary_row(metrics.get("results", {}).get("reference", {})),
                "audit": {},
            }
        if audit is not None:
            audit_proto = audit.get("protocol", {})
            audit_protocols[str(run)] = json.dumps([audit_proto.get(k) for k in COMPARABLE_AUDIT_KEYS], sort_keys=True)
            for attack, (_key, title) in audit.get("headlines", {}).items():
                columns.setdefault(attack, title)
            for role, prefix in (("base", "base"), ("retrain", "retrain")):
                model = audit.get("models", {}).get(role)
                if model is None:
                    continue
                entry = references.setdefault(
                    model["sha256"],
                    {
                        "name": f"{prefix}: {Path(str(model.get('spec'))).name}",
                        "spec": model.get("spec"),
                        **dict.fromkeys(summary_row({})),
                        "audit": {},
                    },
                )
                for attack, value in audit_row(audit, role).items():
                    entry["audit"].setdefault(attack, value)
    _distinguishing_options(rows)
    if len(set(protocols.values())) > 1:
        warnings.append(
            "the runs were evaluated under different protocols (sampler, steps, guidance, samples, seed, forgotten "
            "classes or feature extractor differ): their numbers are not directly comparable"
        )
    if len(set(audit_protocols.values())) > 1:
        warnings.append(
            "the runs were audited under different protocols (sampler, steps, guidance, seed, forgotten classes or "
            "attack options differ): their audit numbers are not directly comparable"
        )
    return CompareResult(rows, list(references.values()), warnings, list(columns.items()))


def _short(text: str, limit: int = 70) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run_label(row: dict[str, Any]) -> str:
    """``run-name: method (non-default options)`` for tables and plot legends."""
    opts = ", ".join(f"{a}={b}" for a, b in row["key_options"].items())
    return _short(f"{row['name']}: {row['method']}" + (f" ({opts})" if opts else ""), 100)


def trade_off_plot(result: CompareResult, path: Path, overwrite: bool = False, option: str = "--plot") -> Path:
    """Forgetting (recognition rate of the forgotten classes, lower = more forgotten) against FID of the
    kept classes: one numbered point per run and a star per reference (base) model, as a PNG.

    An existing ``path`` is replaced only with ``overwrite`` (:func:`unlearnctl.rundir.check_new_file`;
    ``option`` names the flag in its message); the file is written whole or not at all.
    """
    path = Path(path)
    check_new_file(path, overwrite, option)
    plt = pyplot()

    points = [r for r in result.rows if r.get("recognition_rate") is not None and r.get("fid") is not None]
    refs = [r for r in result.references if r.get("recognition_rate") is not None and r.get("fid") is not None]
    if not points and not refs:
        raise UsageError("nothing to plot: the runs' metrics.json have no forgetting.recognition_rate and fidelity.fid")
    fig, ax = plt.subplots(figsize=(7.5, 5.5), dpi=120)
    for ref in refs:
        ax.scatter(
            [ref["recognition_rate"]],
            [ref["fid"]],
            marker="*",
            s=260,
            color="black",
            zorder=2,
            label=_short(ref["name"]),
        )
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, row in enumerate(points, start=1):
        color = colors[(k - 1) % len(colors)]
        ax.scatter(
            [row["recognition_rate"]],
            [row["fid"]],
            s=80,
            color=color,
            zorder=3,
            label=f"{k}  {run_label(row)}",
            edgecolors="white",
            linewidths=0.8,
        )
        ax.annotate(
            str(k),
            (row["recognition_rate"], row["fid"]),
            textcoords="offset points",
            xytext=(6, 5),
            fontsize=9,
            color=color,
            weight="bold",
        )
    fids = [r["fid"] for r in points + refs]
    ax.set_xlabel("forgotten-class recognition rate by the judge  (\u2190 more forgotten)")
    ax.set_ylabel("FID of the kept classes  (lower = better)")
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(0, max(fids) * 1.2 + 1e-9)
    ax.grid(True, alpha=0.3)
    ax.set_title("Forgetting vs. utility (ideal: bottom left)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize=8, frameon=False, ncol=1)
    fig.tight_layout()
    return save_png(fig, path)
