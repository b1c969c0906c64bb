"""``unlearnctl report``: the HTML page, without a browser (tests/test_report_browser.py opens it in one).

The runs are real ``forget`` runs of a tiny model (a few steps, one image per class in the grids); their
``metrics.json`` and ``audit.json`` are written here in the layout ``eval`` and ``audit`` write (schema 1).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from unlearnctl.commands.report import build_report, write_report
from unlearnctl.errors import UsageError
from unlearnctl.models.folder import DiffusionModel
from unlearnctl.testing.tiny import tiny_model


def _metrics(name: str, k: int) -> dict[str, Any]:
    model = {
        "forgetting": {"recognition_rate": 0.1 * k, "ua": 1 - 0.1 * k, "per_class": {"2": {"recognition_rate": 0.1}}},
        "kept": {"mean_rate": 0.9, "min_rate": 0.8},
        "fidelity": {"fid": 5.0 + k, "kid_mean": 1.5},
        "membership": {"auc": 0.55},
    }
    reference = {
        "forgetting": {"recognition_rate": 1.0, "ua": 0.0, "per_class": {"2": {"recognition_rate": 1.0}}},
        "kept": {"mean_rate": 1.0, "min_rate": 1.0},
        "fidelity": {"fid": 2.0, "kid_mean": 0.5},
        "membership": {"auc": 0.6},
    }
    return {
        "schema_version": 1,
        "model": {"spec": name, "kind": "run", "sha256": f"{k:064d}", "method": "erasediff"},
        "reference": {"spec": "tiny-base", "kind": "model", "sha256": "f" * 64},
        "protocol": {"sampler": "ddim", "steps": 2, "samples_per_class": 2, "seed": 0, "forget_classes": [2]},
        "results": {"model": model, "reference": reference},
        "delta": {"fidelity.fid": 3.0 + k},
        "notes": [],
    }


AUDIT = {
    "schema_version": 1,
    "models": {"model": {"spec": "run", "sha256": "1" * 64}, "base": {"spec": "tiny-base", "sha256": "f" * 64}},
    "headlines": {"membership-loss": ["auc", "MIA loss"], "relearn": ["rate_after", "relearn"]},
    "results": {
        "model": {"membership-loss": {"auc": 0.51}, "relearn": {"rate_after": 0.25}},
        "base": {"membership-loss": {"auc": 0.7}, "relearn": {"rate_after": 1.0}},
    },
    "notes": [],
}


def make_run(root: Path, name: str, model: DiffusionModel, audit: bool = False, k: int = 1) -> Path:
    """A real `forget` run of ``model`` (3 steps, grids of one image per class) named ``name``, with a
    metrics.json (and an audit.json and audit-*.png) in the layout eval and audit write."""
    from unlearnctl.commands.forget import ForgetRequest, forget

    base = root / "tiny-base"
    if not base.exists():
        model.default_dataset = "digits"
        model.save(base)
    run = root / name
    forget(
        ForgetRequest(
            model=str(base),
            classes="2",
            steps=3,
            grid_per_class=1,
            out=run,
            device="cpu",
            sets=["remain_batch_size=8", "forget_batch_size=8"],
        )
    )
    (run / "metrics.json").write_text(json.dumps(_metrics(name, k)))
    if audit:
        (run / "audit.json").write_text(json.dumps(AUDIT))
        (run / "audit-roc.png").write_bytes((run / "samples" / "kept-after.png").read_bytes())
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("report")
    model = tiny_model(num_classes=10)
    return [make_run(root, n, model, audit=(i == 0), k=i + 1) for i, n in enumerate(("alpha", "beta", "<script>"))]


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html_text: str) -> _Collect:
    parser = _Collect()
    parser.feed(html_text)
    return parser


def test_one_run(runs, tmp_path):
    html_text, warnings = build_report(runs[:1])
    assert warnings == []
    doc = parse(html_text)
    imgs = [a for t, a in doc.tags if t == "img"]
    # forgotten/kept before/after grids and the audit plot, all inlined
    assert len(imgs) == 5 and all((a["src"] or "").startswith("data:image/png;base64,") for a in imgs)
    assert {a["alt"] for a in imgs} >= {"forgotten classes, before", "forgotten classes, after"}
    assert "<th>delta</th>" in html_text and "class='num delta" in html_text
    assert "table class='audit'" in html_text and "MIA loss" in html_text
    assert "aria-label='loss'" in html_text and "aria-label='lambda'" in html_text
    assert "id='trade-off'" in html_text
    text = " ".join(doc.text)
    for fact in ("what was forgotten", "input sha256", "output sha256", "environment", "tiny-base"):
        assert fact in text
    assert "<script" not in html_text


def test_three_runs(runs, tmp_path):
    out = tmp_path / "r.html"
    result = write_report(runs, out)
    html_text = out.read_text()
    assert result.entries == 3 and result.bytes == len(html_text.encode())
    assert html_text.count("<section class='run'") == 3
    assert html_text.count("<circle") == 3  # one point per run in the trade-off plot, one star for the base
    assert html_text.count("<polygon") == 1
    assert "MIA loss" in html_text  # the audit column of the one audited run


def test_hostile_names_escaped(runs):
    html_text, _ = build_report(runs[2:])
    assert "<script>" not in html_text
    assert "&lt;script&gt;" in html_text


def test_no_network_references(runs):
    html_text, _ = build_report(runs)
    # the inlined images' base64 payloads may hold "//" followed by a letter: drop them whole, not just the prefix
    without_images = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]*", "", html_text)
    assert without_images.count("<img") == html_text.count("<img")  # only the payloads went
    assert not re.search(r"(https?:)?//[a-z]", without_images)
    assert not re.search(r"<(link|script|iframe|object|embed)\b", html_text)
    assert "@import" not in html_text and "url(" not in html_text


def test_results_folder_and_missing_metrics(runs, tmp_path):
    study = tmp_path / "study"
    study.mkdir()
    (study / "metrics.json").write_text((runs[0] / "metrics.json").read_text())
    bare = tmp_path / "bare-run"
    bare.mkdir()
    (bare / "manifest.json").write_text((runs[1] / "manifest.json").read_text())
    html_text, _ = build_report([study, bare])
    assert "(results," in html_text and "not evaluated: no metrics.json" in html_text


def test_bad_input(tmp_path, runs):
    with pytest.raises(UsageError, match="not a run folder"):
        build_report([tmp_path / "missing"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError, match="not a run folder"):
        build_report([empty])
    out = tmp_path / "exists.html"
    out.write_text("keep")
    with pytest.raises(UsageError, match="already exists"):
        write_report(runs[:1], out)
    assert out.read_text() == "keep"
    write_report(runs[:1], out, overwrite=True)
    assert out.read_text().startswith("<!DOCTYPE html>")


def test_cli(runs, tmp_path):
    out = tmp_path / "cli.html"
    cmd = [sys.executable, "-m", "unlearnctl", "report", *map(str, runs[:2]), "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout and out.is_file()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "error:" in again.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "unlearnctl", "report", str(tmp_path), "--out", str(tmp_path / "x.html")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "error:" in bad.stderr
