"""The inline SVG charts of ``unlearnctl report``: line charts of a run's logged values and the trade-off plot
across runs, drawn here (no script, no fetched resource); every text through :func:`html.escape`."""

from __future__ import annotations

import math
from html import escape
from typing import Any


def fmt(value: Any) -> str:
    """A number for a table cell: 4 significant digits; ``-`` for none."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return "-" if value is None else escape(str(value))
    if isinstance(value, float) and not math.isfinite(value):
        return escape(str(value))
    if isinstance(value, int) or (abs(value) >= 1000 and float(value).is_integer()):
        return str(int(value))
    return f"{value:.4g}"


#: the colours of the series, in order (matplotlib's "tab10")
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def line_chart(title: str, series: dict[str, list[tuple[float, float]]], width: int = 540, height: int = 250) -> str:
    """An inline SVG line chart: one polyline per series, axes with ticks, a legend."""
    points = [p for pts in series.values() for p in pts]
    if not points:
        return ""
    left, right, top, bottom = 58, 12, 26, 36
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        pad = abs(y0) * 0.1 or 1.0
        y0, y1 = y0 - pad, y1 + pad
    else:
        pad = (y1 - y0) * 0.05
        y0, y1 = y0 - pad, y1 + pad
    pw, ph = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * ph

    parts = [
        f"<svg class='chart' width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}' role='img' aria-label='{escape(title)}'>",
        f"<title>{escape(title)}</title>",
        f"<rect x='{left}' y='{top}' width='{pw}' height='{ph}' fill='#fff' stroke='#c8cdd2'/>",
        f"<text x='{left}' y='16' font-weight='600'>{escape(title)}</text>",
    ]
    for t in _ticks(y0, y1):
        y = sy(t)
        parts.append(f"<line x1='{left}' x2='{left + pw}' y1='{y:.1f}' y2='{y:.1f}' stroke='#eef0f2'/>")
        parts.append(f"<text x='{left - 4}' y='{y + 4:.1f}' text-anchor='end'>{fmt(round(t, 10))}</text>")
    for t in _ticks(x0, x1):
        x = sx(t)
        parts.append(f"<text x='{x:.1f}' y='{top + ph + 14}' text-anchor='middle'>{fmt(round(t, 10))}</text>")
    parts.append(f"<text x='{left + pw / 2:.1f}' y='{height - 4}' text-anchor='middle'>step</text>")
    for k, (name, pts) in enumerate(series.items()):
        color = COLORS[k % len(COLORS)]
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        parts.append(
            f"<polyline class='curve' data-series='{escape(name)}' fill='none' stroke='{color}' "
            f"stroke-width='1.4' points='{coords}'/>"
        )
    # the legend, right-aligned above the plot: a swatch and the name (about 6.2 px per character)
    lx = float(width - right)
    for k, name in reversed(list(enumerate(series))):
        label = name[:20]
        lx -= 14 + 6.2 * len(label) + 12
        color = COLORS[k % len(COLORS)]
        parts.append(f"<rect x='{lx:.1f}' y='8' width='10' height='10' fill='{color}'/>")
        parts.append(f"<text x='{lx + 14:.1f}' y='17'>{escape(label)}</text>")
    parts.append("</svg>")
    return "".join(parts)


def curve_charts(curves: dict[str, list[tuple[float, float]]]) -> list[str]:
    """Losses together, lambda alone, then every other logged number alone."""
    losses = {k: v for k, v in curves.items() if k.startswith("loss")}
    charts = []
    if losses:
        charts.append(line_chart("loss", losses))
    lambdas = {k: v for k, v in curves.items() if k.startswith("lambda")}
    if lambdas:
        charts.append(line_chart("lambda", lambdas))
    for key, pts in curves.items():
        if key not in losses and key not in lambdas:
            charts.append(line_chart(key, {key: pts}))
    return [c for c in charts if c]


def trade_off_svg(rows: list[dict[str, Any]], refs: list[dict[str, Any]], width: int = 560, height: int = 360) -> str:
    """Forgotten-class recognition rate (x) against FID of the kept classes (y): a numbered point per run
    (numbers as in the overview table), a star per base model."""
    pts = [(k, r) for k, r in enumerate(rows, start=1) if r.get("recognition_rate") is not None and r.get("fid")]
    stars = [r for r in refs if r.get("recognition_rate") is not None and r.get("fid") is not None]
    if not pts and not stars:
        return ""
    left, right, top, bottom = 60, 16, 30, 44
    pw, ph = width - left - right, height - top - bottom
    ymax = max([r["fid"] for _k, r in pts] + [r["fid"] for r in stars]) * 1.2 or 1.0

    def sx(x: float) -> float:
        return left + (x + 0.05) / 1.1 * pw

    def sy(y: float) -> float:
        return top + (1 - y / ymax) * ph

    title = "Forgetting vs. utility (ideal: bottom left)"
    parts = [
        f"<svg id='trade-off' width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}' role='img' aria-label='{title}'><title>{title}</title>",
        f"<rect x='{left}' y='{top}' width='{pw}' height='{ph}' fill='#fff' stroke='#c8cdd2'/>",
        f"<text x='{left}' y='18' font-weight='600'>{title}</text>",
    ]
    for t in _ticks(0, 1):
        parts.append(f"<line x1='{sx(t):.1f}' x2='{sx(t):.1f}' y1='{top}' y2='{top + ph}' stroke='#eef0f2'/>")
        parts.append(f"<text x='{sx(t):.1f}' y='{top + ph + 14}' text-anchor='middle'>{fmt(round(t, 10))}</text>")
    for t in _ticks(0, ymax):
        parts.append(f"<line x1='{left}' x2='{left + pw}' y1='{sy(t):.1f}' y2='{sy(t):.1f}' stroke='#eef0f2'/>")
        parts.append(f"<text x='{left - 4}' y='{sy(t) + 4:.1f}' text-anchor='end'>{fmt(round(t, 10))}</text>")
    parts.append(
        f"<text x='{left + pw / 2:.1f}' y='{height - 6}' text-anchor='middle'>forgotten-class recognition rate "
        "by the judge (\u2190 more forgotten)</text>"
    )
    parts.append(
        f"<text transform='translate(14 {top + ph / 2:.1f}) rotate(-90)' text-anchor='middle'>FID of the kept "
        "classes (lower = better)</text>"
    )
    for ref in stars:
        x, y = sx(ref["recognition_rate"]), sy(ref["fid"])
        star = " ".join(
            f"{x + (9 if i % 2 == 0 else 4) * math.sin(i * math.pi / 5):.1f},"
            f"{y - (9 if i % 2 == 0 else 4) * math.cos(i * math.pi / 5):.1f}"
            for i in range(10)
        )
        parts.append(f"<polygon points='{star}' fill='#000'><title>{escape(ref['name'])}</title></polygon>")
    for k, row in pts:
        x, y = sx(row["recognition_rate"]), sy(row["fid"])
        color = COLORS[(k - 1) % len(COLORS)]
        parts.append(
            f"<circle cx='{x:.1f}' cy='{y:.1f}' r='6' fill='{color}' stroke='#fff'>"
            f"<title>{k} {escape(row['name'])}</title></circle>"
            f"<text x='{x + 8:.1f}' y='{y - 6:.1f}' font-weight='700' style='fill:{color}'>{k}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)
