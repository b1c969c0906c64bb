"""The HTML of ``unlearnctl report``: one static page, nothing fetched at view time.

Every text from a run (names, options, paths, command lines) goes through :func:`html.escape`; images are
``data:image/png;base64`` URIs; the curves and the trade-off plot are inline SVG drawn here; the CSS is
embedded; there is no script.
"""

from __future__ import annotations

import base64
import json
import shlex
from html import escape
from typing import TYPE_CHECKING, Any

from .. import __version__
from .report_svg import curve_charts, fmt, trade_off_svg

if TYPE_CHECKING:
    from .report import ReportEntry
    from .report_study import StudySection

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1f24;margin:0;background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:18px 24px 48px}
h1{font-size:24px;margin:8px 0 4px}h2{font-size:19px;margin:0 0 8px}h3{font-size:15px;margin:18px 0 6px}
.meta{color:#57606a;margin:0 0 12px}
section{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:14px 18px;margin:16px 0}
nav a{margin-right:12px}
table{border-collapse:collapse;margin:6px 0;font-size:13px}
caption{caption-side:bottom;text-align:left;color:#57606a;font-size:12px;padding:4px 0}
th,td{border-bottom:1px solid #e5e8eb;padding:3px 9px;text-align:left;vertical-align:top}
th{background:#f0f2f4}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.ref td{color:#57606a;font-style:italic}
dl.manifest{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:6px 0}
dl.manifest dt{color:#57606a}dl.manifest dd{margin:0;overflow-wrap:anywhere}
code{font:12px ui-monospace,SFMono-Regular,Menlo,monospace;background:#f0f2f4;padding:0 3px;border-radius:3px}
.grids{display:flex;flex-wrap:wrap;gap:14px}
figure{margin:0;text-align:center}figcaption{color:#57606a;font-size:12px}
figure img{image-rendering:pixelated;border:1px solid #d0d7de;max-width:520px;min-width:120px;height:auto}
.charts{display:flex;flex-wrap:wrap;gap:12px}
.warn{color:#9a6700}
.scroll{overflow-x:auto;max-width:100%}
svg text{font:11px system-ui,sans-serif;fill:#333}
"""


def fmt_delta(value: float | None) -> str:
    if value is None:
        return "<td class='num'>-</td>"
    css = "pos" if value > 0 else "neg" if value < 0 else ""
    return f"<td class='num delta {css}'>{'+' if value > 0 else ''}{fmt(value)}</td>"


def _flatten(results: Any, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    if not isinstance(results, dict):
        return out
    for key, value in results.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = float(value)
    return out


# --- tables ------------------------------------------------------------------------------------------------


def _options_text(options: dict[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in options.items())


def overview_table(rows: list[dict[str, Any]], refs: list[dict[str, Any]], audit_cols: list[tuple[str, str]]) -> str:
    head = "".join(
        f"<th>{escape(h)}</th>"
        for h in ["#", "run", "method / options", "recog.", "kept", "FID", "MIA", "time s", "steps"]
        + [t for _a, t in audit_cols]
    )
    body = []
    for ref in refs:
        cells = [ref.get(k) for k in ("recognition_rate", "kept_rate", "fid", "mia_auc")]
        body.append(
            "<tr class='ref'><td></td><td>"
            + escape(ref["name"])
            + "</td><td>(reference)</td>"
            + "".join(f"<td class='num'>{fmt(v)}</td>" for v in cells)
            + "<td></td><td></td>"
            + "<td></td>" * len(audit_cols)
            + "</tr>"
        )
    for k, row in enumerate(rows, start=1):
        opts = _options_text(row.get("key_options") or {})
        cells = [row.get(c) for c in ("recognition_rate", "kept_rate", "fid", "mia_auc")]
        wall = row.get("wall_time_s")
        audit = row.get("audit") or {}
        body.append(
            f"<tr><td>{k}</td><td><a href='#run-{k}'>{escape(row['name'])}</a></td><td>{escape(row['method'])}"
            + (f"<br><code>{escape(opts)}</code>" if opts else "")
            + "</td>"
            + "".join(f"<td class='num'>{fmt(v)}</td>" for v in cells)
            + f"<td class='num'>{'-' if wall is None else f'{wall:.1f}'}</td>"
            + f"<td class='num'>{fmt(row.get('optimizer_steps'))}</td>"
            + "".join(f"<td class='num'>{fmt(audit.get(a))}</td>" for a, _t in audit_cols)
            + "</tr>"
        )
    caption = (
        "recog.: forgotten-class samples the judge still recognises (UA = 1 - recog.); kept: kept classes "
        "recognised; FID: kept classes; MIA: membership AUC (0.5 = unseen)"
    )
    if audit_cols:
        caption += "; then unlearnctl audit: " + ", ".join(f"{t} = {a}" for a, t in audit_cols)
    return (
        f"<table class='overview'><caption>{escape(caption)}</caption><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def metrics_table(metrics: dict[str, Any]) -> str:
    results = metrics.get("results") or {}
    model = _flatten(results.get("model"))
    ref = _flatten(results.get("reference"))
    delta_field = metrics.get("delta")
    given: dict[str, Any] = delta_field if isinstance(delta_field, dict) else {}
    has_ref = bool(ref)

    def rows(keys: list[str]) -> str:
        out = []
        for key in keys:
            delta = given.get(key)
            if not isinstance(delta, int | float) and key in ref:
                delta = model[key] - ref[key]
            out.append(
                f"<tr><td><code>{escape(key)}</code></td><td class='num'>{fmt(model[key])}</td>"
                + (f"<td class='num'>{fmt(ref.get(key))}</td>" + fmt_delta(delta) if has_ref else "")
                + "</tr>"
            )
        return "".join(out)

    head = "<tr><th>metric</th><th>model</th>" + ("<th>reference</th><th>delta</th>" if has_ref else "") + "</tr>"
    main = [k for k in model if ".per_class." not in k]
    per_class = [k for k in model if ".per_class." in k]
    html_text = f"<table class='metrics'><thead>{head}</thead><tbody>{rows(main)}</tbody></table>"
    if per_class:
        html_text += (
            f"<details><summary>per class ({len(per_class)} values)</summary>"
            f"<table class='metrics per-class'><thead>{head}</thead><tbody>{rows(per_class)}</tbody></table></details>"
        )
    proto = metrics.get("protocol") or {}
    bits = [
        f"{k}={proto[k]}" for k in ("sampler", "steps", "eta", "guidance", "samples_per_class", "seed") if k in proto
    ]
    extractor = (proto.get("feature_extractor") or {}).get("kind")
    if extractor:
        bits.append(f"FID features={extractor}")
    ref_info = metrics.get("reference") or {}
    if ref_info:
        bits.append(f"reference={ref_info.get('spec')}")
    if bits:
        html_text += f"<p class='meta'>protocol: {escape(', '.join(str(b) for b in bits))}</p>"
    notes = metrics.get("notes") or []
    html_text += "".join(f"<p class='warn'>note: {escape(str(n))}</p>" for n in notes)
    return html_text


def audit_table(audit: dict[str, Any]) -> str:
    headlines = audit.get("headlines") or {}
    results = audit.get("results") or {}
    roles = [r for r in ("model", "base", "retrain") if r in results]
    head = "<tr><th>attack</th><th>headline</th>" + "".join(f"<th>{escape(r)}</th>" for r in roles) + "</tr>"
    body = []
    for attack, value in headlines.items():
        key, title = [*value, None, None][:2] if isinstance(value, list) else (None, None)
        cells = []
        for role in roles:
            entry = (results.get(role) or {}).get(attack) or {}
            cells.append(f"<td class='num'>{fmt(entry.get(key) if isinstance(entry, dict) else None)}</td>")
        body.append(
            f"<tr><td>{escape(str(title or attack))} <code>{escape(str(attack))}</code></td>"
            f"<td><code>{escape(str(key))}</code></td>{''.join(cells)}</tr>"
        )
    models = audit.get("models") or {}
    spec = "; ".join(f"{r}: {(models.get(r) or {}).get('spec')}" for r in roles if r in models)
    notes = "".join(f"<p class='warn'>note: {escape(str(n))}</p>" for n in (audit.get("notes") or []))
    return (
        f"<table class='audit'><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>"
        + (f"<p class='meta'>models: {escape(spec)}</p>" if spec else "")
        + notes
    )


def _dl(items: list[tuple[str, Any]]) -> str:
    out = []
    for key, value in items:
        if value is None or value == "" or value == [] or value == {}:
            continue
        if isinstance(value, dict):
            text = "<br>".join(f"<code>{escape(str(k))}={escape(json.dumps(v))}</code>" for k, v in value.items())
        elif isinstance(value, list):
            text = escape(", ".join(str(v) for v in value))
        else:
            text = escape(str(value))
        out.append(f"<dt>{escape(key)}</dt><dd>{text}</dd>")
    return "<dl class='manifest'>" + "".join(out) + "</dl>"


def manifest_summary(entry: ReportEntry) -> str:
    m = entry.manifest
    if m is None:
        info = (entry.metrics or {}).get("model") or ((entry.audit or {}).get("models") or {}).get("model") or {}
        return "<h3>model</h3>" + _dl(
            [("model", info.get("spec")), ("path", info.get("path")), ("sha256", info.get("sha256"))]
        )
    data = m.model_dump(mode="json")
    forget = data.get("forget") or {}
    weights = data.get("weights") or {}
    dataset = data.get("dataset") or {}
    env = data.get("environment") or {}
    method = data.get("method") or {}
    selectors = [f"{s.get('name')} {s.get('argument') or ''}".strip() for s in forget.get("selectors") or []]
    git = env.get("git_commit")
    if git and env.get("git_dirty"):
        git += " (uncommitted changes)"
    packages = env.get("packages") or {}
    parts = [
        "<h3>what was forgotten</h3>",
        _dl(
            [
                ("forgotten classes", forget.get("forget_classes")),
                ("selectors", selectors),
                ("forget set", f"{forget.get('size')} images" if forget else None),
                ("remain set", f"{forget.get('remain_size')} images" if forget else None),
                ("forget-set fingerprint", forget.get("fingerprint")),
                (
                    "dataset",
                    f"{dataset.get('name')} v{dataset.get('version')} ({dataset.get('split')}, "
                    f"{dataset.get('size')} images)",
                ),
                ("dataset fingerprint", dataset.get("fingerprint")),
            ]
        ),
        "<h3>from which model, to which</h3>",
        _dl(
            [
                ("base model", weights.get("model")),
                ("model path", weights.get("model_path")),
                ("input sha256", weights.get("input_sha256")),
                ("output sha256", weights.get("output_sha256")),
                ("output files sha256", weights.get("output_files_sha256")),
                ("saved weights", weights.get("saved_weights")),
            ]
        ),
        "<h3>how</h3>",
        _dl(
            [
                ("kind", data.get("kind")),
                (
                    "method",
                    f"{method.get('name')} ({method.get('provider')} {method.get('provider_version')})"
                    if method
                    else None,
                ),
                ("method options", method.get("options")),
                ("runner", data.get("runner")),
                ("seed", data.get("seed")),
                ("command", "unlearnctl " + shlex.join(str(a) for a in data.get("command") or [])),
                ("started / finished", f"{data.get('started_at')} / {data.get('finished_at')}"),
                ("wall time", f"{data.get('wall_time_s', 0):.1f} s"),
                ("optimizer steps", data.get("optimizer_steps")),
                ("final losses", data.get("final_losses")),
                ("resumed at steps", data.get("resumed_at")),
                ("replay of", (data.get("replay_of") or {}).get("run") if data.get("replay_of") else None),
            ]
        ),
        "<h3>environment</h3>",
        _dl(
            [
                ("python", env.get("python")),
                ("platform", env.get("platform")),
                ("packages", ", ".join(f"{k} {v}" for k, v in packages.items() if v)),
                ("git commit", git),
                ("device", f"{env.get('device')} ({env.get('device_name')}), {env.get('precision')}"),
                ("threads", env.get("num_threads")),
                (
                    "CUDA / cuDNN",
                    f"{env.get('cuda_version')} / {env.get('cudnn_version')}" if env.get("cuda_version") else None,
                ),
            ]
        ),
    ]
    return "".join(parts)


def images_html(images: list[tuple[str, str, bytes]]) -> str:
    figures = []
    for title, rel, data in images:
        uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        figures.append(
            f"<figure><img src='{uri}' alt='{escape(title)}' title='{escape(rel)}'>"
            f"<figcaption>{escape(title)} <code>{escape(rel)}</code></figcaption></figure>"
        )
    return "<div class='grids'>" + "".join(figures) + "</div>"


def entry_section(k: int, entry: ReportEntry) -> str:
    parts = [
        f"<section class='run' id='run-{k}'>",
        f"<h2><span class='run-name'>{escape(entry.name)}</span> <small class='meta'>({entry.kind}, "
        f"<code>{escape(str(entry.path))}</code>)</small></h2>",
    ]
    parts += [f"<p class='warn'>warning: {escape(w)}</p>" for w in entry.warnings]
    samples = [i for i in entry.images if not i[1].startswith("audit-")]
    audit_images = [i for i in entry.images if i[1].startswith("audit-")]
    if samples:
        parts.append("<h3>samples (same seeds before and after)</h3>" + images_html(samples))
    parts.append("<h3>metrics (<code>unlearnctl eval</code>)</h3>")
    parts.append(
        metrics_table(entry.metrics) if entry.metrics else "<p class='meta'>not evaluated: no metrics.json</p>"
    )
    if entry.audit:
        parts.append("<h3>audit (<code>unlearnctl audit</code>)</h3>" + audit_table(entry.audit))
        if audit_images:
            parts.append(images_html(audit_images))
    if entry.curves:
        parts.append(
            "<h3>training curves (<code>log.jsonl</code>)</h3><div class='charts'>"
            + "".join(curve_charts(entry.curves))
            + "</div>"
        )
    parts.append("<div class='manifest-summary'>" + manifest_summary(entry) + "</div>")
    parts.append("</section>")
    return "".join(parts)


def study_html(k: int, study: StudySection) -> str:
    return (
        f"<section class='study' id='study-{k}'><h2><span class='run-name'>study {escape(study.name)}</span> "
        f"<small class='meta'>(<code>{escape(str(study.path))}</code>)</small></h2>{study.html}</section>"
    )


def _default_title(entries: list[ReportEntry], studies: list[StudySection]) -> str:
    if not entries and len(studies) == 1:
        return f"unlearnctl report: study {studies[0].name}"
    if not studies and len(entries) == 1:
        return f"unlearnctl report: {entries[0].name}"
    parts = [f"{len(entries)} runs"] if entries else []
    parts += [f"{len(studies)} {'study' if len(studies) == 1 else 'studies'}"] if studies else []
    return "unlearnctl report: " + ", ".join(parts)


def render_report(
    entries: list[ReportEntry],
    refs: list[dict[str, Any]],
    title: str | None = None,
    created: str = "",
    studies: list[StudySection] | None = None,
) -> str:
    studies = list(studies or [])
    rows = [e.row for e in entries]
    columns: dict[str, str] = {}
    for entry in entries:
        for attack, value in ((entry.audit or {}).get("headlines") or {}).items():
            if isinstance(value, list) and len(value) == 2:
                columns.setdefault(attack, str(value[1]))
    audit_cols = list(columns.items())
    title = title or _default_title(entries, studies)
    nav = "".join(f"<a href='#study-{k}'>study {escape(s.name)}</a>" for k, s in enumerate(studies, start=1))
    nav += "".join(f"<a href='#run-{k}'>{k}. {escape(e.name)}</a>" for k, e in enumerate(entries, start=1))
    body = [
        f"<header><h1>{escape(title)}</h1><p class='meta'>made by unlearnctl {escape(__version__)} at "
        f"{escape(created)}; {len(entries) + len(studies)} folder(s)</p><nav>{nav}</nav></header>",
    ]
    body += [study_html(k, s) for k, s in enumerate(studies, start=1)]
    if entries:
        plot = trade_off_svg(rows, refs)
        body.append(
            "<section id='overview'><h2>overview</h2>"
            + overview_table(rows, refs, audit_cols)
            + (
                plot + "<p class='meta'>numbered points: the runs of the # column; star: the base model</p>"
                if plot
                else "<p class='meta'>no trade-off plot: no run has forgetting and FID numbers (unlearnctl eval)</p>"
            )
            + "</section>"
        )
    body += [entry_section(k, e) for k, e in enumerate(entries, start=1)]
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; img-src data:; "
        "style-src 'unsafe-inline'\">"
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body><main>"
        + "".join(body)
        + "</main></body></html>\n"
    )
