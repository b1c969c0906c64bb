"""What ``unlearnctl audit`` records: the ``audit.json`` payload and its plots.

The file format is described in ``docs/audit.md``; :func:`unlearnctl.results.read_audit` reads it back.
Two shapes of an attack's result are drawn, whichever attack returns them: ``roc`` (a ROC curve:
``{"fpr": [...], "tpr": [...]}``) into ``audit-roc.png``, one panel per attack and one curve per role, and
``curves`` (``{series: {"x": [...], "y": [...]}}``, axes named by ``curve_axes``) into
``audit-<attack>.png``, one panel per series and one line per role.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..results import AUDIT_SCHEMA_VERSION
from .eval_record import describe_model, setting_record
from .figures import pyplot, save_png

if TYPE_CHECKING:
    from .audit import PreparedAudit

#: how each role is named in tables and plots
ROLE_TITLES = {"model": "unlearned", "base": "base", "retrain": "retrain"}
#: the colour of each role in the plots (the same in every figure)
ROLE_COLORS = {"model": "tab:red", "base": "tab:blue", "retrain": "tab:green"}
#: the plot of the ROC curves of every attack that returns one
ROC_PLOT = "audit-roc.png"


def audit_payload(p: PreparedAudit, results: dict[str, Any], seconds: dict[str, Any]) -> dict[str, Any]:
    """The ``audit.json`` payload (without ``files`` and ``wall_time_s``, which ``run_audit`` adds)."""
    from .. import __version__

    shared = p.shared
    protocol = {k: v for k, v in shared.protocol.describe().items() if k != "samples_per_class"}
    protocol.update(
        {
            "seeds": {
                "seed": shared.protocol.seed,
                "streams": "runner.stream_seed(seed, 'audit-<stream>'), the same for every role",
            },
            **setting_record(shared),
            "attacks": {a.name: a.options.model_dump(mode="json", by_alias=True) for a in p.attacks},
            **shared.records,
        }
    )
    return {
        "schema_version": AUDIT_SCHEMA_VERSION,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "unlearnctl_version": __version__,
        "command": list(p.request.command),
        "models": {m.role: {**describe_model(m.model), "source": m.source} for m in p.models},
        "protocol": protocol,
        "attacks": [a.name for a in p.attacks],
        "headlines": {a.name: list(h) for a in p.attacks if (h := type(a).headline) is not None},
        "left_out": dict(p.left_out),
        "results": results,
        "seconds": seconds,
        "sampling": {
            role: {"seconds": round(ctx.cost.seconds, 3), "images": ctx.cost.images} for role, ctx in p.contexts.items()
        },
        "notes": list(p.notes),
    }


# --- plots ------------------------------------------------------------------------------------------------


def _numbers(values: Any) -> list[float] | None:
    if not isinstance(values, list) or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return None
    return [float(v) for v in values]


def _roc(result: Any) -> tuple[list[float], list[float]] | None:
    roc = result.get("roc") if isinstance(result, dict) else None
    if not isinstance(roc, dict):
        return None
    fpr, tpr = _numbers(roc.get("fpr")), _numbers(roc.get("tpr"))
    return (fpr, tpr) if fpr and tpr and len(fpr) == len(tpr) else None


def _curves(result: Any) -> dict[str, tuple[list[float], list[float]]]:
    curves = result.get("curves") if isinstance(result, dict) else None
    out: dict[str, tuple[list[float], list[float]]] = {}
    if not isinstance(curves, dict):
        return out
    for series, xy in curves.items():
        if not isinstance(xy, dict):
            continue
        x, y = _numbers(xy.get("x")), _numbers(xy.get("y"))
        if x and y and len(x) == len(y):
            out[str(series)] = (x, y)
    return out


def _grid(n: int) -> tuple[Any, list[Any]]:
    plt = pyplot()
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.8 * rows), dpi=110, squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def plot_name(attack: str) -> str:
    """``audit-<attack>.png`` (characters a file name should not hold replaced)."""
    return "audit-" + re.sub(r"[^A-Za-z0-9._-]+", "-", attack) + ".png"


def write_audit_plots(payload: dict[str, Any], folder: Path) -> dict[str, Path]:
    """The plots of ``payload`` into ``folder``: ``audit-roc.png`` (every ROC curve) and one
    ``audit-<attack>.png`` per attack that returns ``curves``. Returns name -> path."""
    results: dict[str, dict[str, Any]] = payload["results"]
    roles = [r for r in ROLE_TITLES if r in results]
    files: dict[str, Path] = {}

    with_roc = [a for a in payload["attacks"] if any(_roc(results[r].get(a)) for r in roles)]
    if with_roc:
        fig, axes = _grid(len(with_roc))
        for ax, attack in zip(axes, with_roc, strict=True):
            ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
            for role in roles:
                roc = _roc(results[role].get(attack))
                if roc is None:
                    continue
                auc = results[role][attack].get("auc")
                label = ROLE_TITLES[role] + (f" (AUC {auc:.3f})" if isinstance(auc, int | float) else "")
                ax.plot(roc[0], roc[1], color=ROLE_COLORS[role], label=label, linewidth=1.5)
            ax.set_title(attack)
            ax.set_xlabel("false-positive rate (non-members flagged)")
            ax.set_ylabel("true-positive rate (members found)")
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.01)
            ax.grid(True, alpha=0.3)
            ax.legend(loc="lower right", fontsize=8)
        fig.suptitle("membership inference: ROC per role (diagonal = chance)")
        fig.tight_layout()
        files["roc"] = save_png(fig, folder / ROC_PLOT)

    for attack in payload["attacks"]:
        per_role = {r: _curves(results[r].get(attack)) for r in roles}
        series = list(dict.fromkeys(s for curves in per_role.values() for s in curves))
        if not series:
            continue
        axes_names: dict[str, Any] = next(
            (
                results[r][attack]["curve_axes"]
                for r in roles
                if isinstance(results[r].get(attack), dict) and isinstance(results[r][attack].get("curve_axes"), dict)
            ),
            {},
        )
        ys = [v for curves in per_role.values() for _, y in curves.values() for v in y]
        fig, axes = _grid(len(series))
        for ax, name in zip(axes, series, strict=True):
            for role in roles:
                if name in per_role[role]:
                    x, y = per_role[role][name]
                    ax.plot(x, y, marker="o", markersize=3, color=ROLE_COLORS[role], label=ROLE_TITLES[role])
            if all(0 <= v <= 1 for v in ys):  # rates: the whole scale, so that panels compare
                ax.set_ylim(-0.03, 1.03)
            ax.set_title(name)
            ax.set_xlabel(str(axes_names.get("x", "x")))
            ax.set_ylabel(str(axes_names.get("y", "y")))
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle(attack)
        fig.tight_layout()
        files[attack] = save_png(fig, folder / plot_name(attack))
    return files
