"""The trade-off plot of ``unlearnctl compare STUDY``: one point per group with 2-D error bars, the base model as
a star, the retrain group marked, and the non-dominated front as a step line with its points ringed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..rundir import check_new_file
from .figures import pyplot, save_png
from .intervals import Interval
from .study_result import METRIC_BY_KEY, StudyComparison, group_title

X_AXIS = {
    "recognition_rate": "forgotten-class recognition rate by the judge  (\u2190 more forgotten)",
    "mia_auc": "membership-inference AUC on the forget set",
    "recognition_gap": "recognition gap to the retrained model",
    "fid_to_retrain": "FID to the retrained model's samples  (\u2190 closer)",
}


def _err(iv: Interval) -> list[list[float]]:
    """matplotlib's asymmetric error bar for one point: ``[[below], [above]]`` (0 without an interval)."""
    if iv.low is None or iv.high is None:
        return [[0.0], [0.0]]
    return [[max(iv.mean - iv.low, 0.0)], [max(iv.high - iv.mean, 0.0)]]


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def study_plot(result: StudyComparison, path: Path, overwrite: bool = False, option: str = "--plot") -> Path:
    """Write :func:`study_figure` as a PNG at ``path``. An existing ``path`` is replaced only with ``overwrite``
    (``option`` names the flag in the message); the file is written whole or not at all."""
    path = Path(path)
    check_new_file(path, overwrite, option)
    return save_png(study_figure(result), path)


def study_figure(result: StudyComparison) -> Any:
    """The trade-off plot of ``result``: x = ``result.x_metric``, y = FID of the kept classes, each group's means
    with its intervals as error bars (over the cells that have both numbers).

    :raises UsageError: no group (nor the base) has both numbers.
    """
    plt = pyplot()

    groups = [g for g in result.groups if g.point is not None]
    base = result.base if result.base is not None and result.base.point is not None else None
    if not groups and base is None:
        raise UsageError(
            f"nothing to plot: no cell has both {METRIC_BY_KEY[result.x_metric].title} and FID "
            "(choose another --x, or --no-plot)"
        )
    fig, ax = plt.subplots(figsize=(8, 6), dpi=120)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    ys: list[float] = []
    for k, g in enumerate(groups):
        assert g.point is not None
        x, y = g.point["x"], g.point["y"]
        retrain = g.role == "retrain"
        color = "dimgray" if retrain else colors[k % len(colors)]
        ax.errorbar(
            [x.mean],
            [y.mean],
            xerr=_err(x),
            yerr=_err(y),
            fmt="s" if retrain else "o",
            markersize=8,
            color=color,
            ecolor=color,
            elinewidth=1.2,
            capsize=3,
            zorder=3,
            label=("retrain: " if retrain and g.label != "retrain" else "") + f"{group_title(g)}  (n={g.point['n']})",
        )
        ys += [v for v in (y.mean, y.high) if v is not None]
        if g.on_front:
            ax.scatter([x.mean], [y.mean], s=320, facecolors="none", edgecolors="black", linewidths=1.4, zorder=4)
    front = sorted((g.point["x"].mean, g.point["y"].mean) for g in groups if g.on_front and g.point is not None)
    if len(front) > 1:
        ax.step(
            [p[0] for p in front],
            [p[1] for p in front],
            where="post",
            color="black",
            linestyle="--",
            linewidth=1,
            zorder=2,
            label="non-dominated front",
        )
    elif front:
        ax.scatter([], [], s=120, facecolors="none", edgecolors="black", label="non-dominated front (ringed)")
    if base is not None:
        assert base.point is not None
        bx, by = base.point["x"], base.point["y"]
        ax.errorbar(
            [bx.mean],
            [by.mean],
            xerr=_err(bx),
            yerr=_err(by),
            fmt="*",
            markersize=18,
            color="black",
            ecolor="black",
            elinewidth=1,
            capsize=3,
            zorder=5,
            label=f"base model  (n={base.point['n']})",
        )
        ys += [v for v in (by.mean, by.high) if v is not None]
    ax.set_xlabel(X_AXIS.get(result.x_metric, METRIC_BY_KEY[result.x_metric].title))
    ax.set_ylabel("FID of the kept classes  (lower = better)")
    if result.x_metric == "recognition_rate":
        ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(0, max(ys) * 1.15 + 1e-9)
    ax.grid(True, alpha=0.3)
    level = f"{result.level * 100:g}%"
    ax.set_title(f"{_short(result.name, 50)}: forgetting vs. utility, {level} {result.interval} intervals")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=8, frameon=False, ncol=1)
    fig.tight_layout()
    return fig
