"""``unlearnctl report STUDY``: a sweep study as a section of the report page (the hand-made study of
tests/test_study_compare.py). Its tables must carry exactly the cells of ``compare STUDY --markdown`` (one
document rendered twice), its pictures the groups' eval pictures byte for byte, and its texts be escaped."""

from __future__ import annotations

import base64
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from test_study_compare import study, tiny_run  # noqa: F401 (fixtures)
from test_study_markdown import _split_row

from unlearnctl.commands.report import build_report, write_report
from unlearnctl.commands.report_study import inline_html
from unlearnctl.commands.study_compare import compare_study
from unlearnctl.commands.study_markdown import study_markdown

HOSTILE = "<script>alert(1)</script>&"


class _Tables(HTMLParser):
    """Every <table> of a page as rows of cell texts (header row first), and every <img> src."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.images: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(dict(attrs)["src"] or "")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _markdown_tables(text: str) -> list[list[list[str]]]:
    tables: list[list[list[str]]] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|") and not (i and lines[i - 1].startswith("|")):
            tables.append([])
        if line.startswith("|") and not set(line) <= set("|:- "):
            # the Markdown's inline code marks are <code> in the HTML: compare the texts
            tables[-1].append([c.replace("`", "") for c in _split_row(line)])
    return tables


@pytest.fixture(scope="module")
def pictured(study, tmp_path_factory) -> tuple[Path, dict[str, bytes]]:  # noqa: F811 (the imported fixture)
    """A copy of the hand-made study with an eval picture in some cells (two of one group: only the first is
    shown) and a hostile label on one group."""
    root, _numbers = study
    copy = tmp_path_factory.mktemp("pictured") / "study"
    shutil.copytree(root, copy)
    index = json.loads((copy / "study.json").read_text())
    pictures: dict[str, bytes] = {}
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from unlearnctl.commands.figures import png_bytes

    for cell in index["cells"]:
        if cell["status"] != "done" or cell["role"] not in ("method", "retrain"):
            continue
        if cell["group"] == 'erasediff|{"lr": 0.0002}':
            cell["label"] = HOSTILE
        if cell["group"] in pictures or not (copy / cell["run"] / "metrics.json").is_file():
            continue
        fig, ax = plt.subplots(figsize=(1, 1))
        ax.set_title(cell["id"][:8])
        data = png_bytes(fig)
        (copy / cell["run"] / "samples").mkdir(exist_ok=True)
        (copy / cell["run"] / "samples" / "eval-forgotten.png").write_bytes(data)
        pictures[cell["group"]] = data
    (copy / "study.json").write_text(json.dumps(index))
    return copy, pictures


def test_the_study_section_has_the_markdown_tables_cell_for_cell(pictured):
    root, _pictures = pictured
    page, warnings = build_report([root])
    parser = _Tables()
    parser.feed(page)
    expected = _markdown_tables(study_markdown(compare_study(root)))
    assert len(expected) >= 5  # overall, per forget set x 3, noise floor, wall time
    assert parser.tables == expected
    assert "<title>unlearnctl report: study hand-made</title>" in page
    assert "id='overview'" not in page  # the runs' overview: there is no run
    assert warnings == []


def test_the_plot_and_each_groups_first_picture_are_inlined(pictured):
    root, pictures = pictured
    page, _ = build_report([root])
    parser = _Tables()
    parser.feed(page)
    inlined = [base64.b64decode(src.split(",", 1)[1]) for src in parser.images]
    assert all(src.startswith("data:image/png;base64,") for src in parser.images)
    # the trade-off plot first, then one picture per group, in study order, the very bytes
    assert inlined[0].startswith(b"\x89PNG") and inlined[0] not in pictures.values()
    assert inlined[1:] == list(pictures.values())
    assert len(pictures) == 3
    assert not re.search(r"(https?:)?//[a-z]", re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page))


def test_texts_from_the_study_are_escaped(pictured):
    root, _ = pictured
    page, _ = build_report([root])
    assert HOSTILE not in page and "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&amp;" in page
    assert inline_html("a `b<c>` **d** e") == "a <code>b&lt;c&gt;</code> <strong>d</strong> e"


def test_a_study_and_a_run_share_a_page(pictured, tiny_run, tmp_path):  # noqa: F811 (the imported fixture)
    root, _ = pictured
    out = tmp_path / "page.html"
    result = write_report([root, tiny_run], out)
    page = out.read_text()
    assert result.entries == 2 and "id='study-1'" in page and "id='run-1'" in page and "id='overview'" in page
    assert "<title>unlearnctl report: 1 runs, 1 study</title>" in page


def test_cli_reports_a_study_and_names_what_a_folder_is_not(cli, pictured, tmp_path):
    root, _ = pictured
    out = tmp_path / "study.html"
    result = cli("report", root, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["out"] == str(out) and data["images"] == 4 and out.is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = cli("report", empty, "--out", tmp_path / "x.html")
    assert bad.exit_code == 2 and "nor a study folder (no study.json)" in bad.stderr
    assert not (tmp_path / "x.html").exists()


def test_a_cell_pointing_outside_the_study_shows_no_picture(pictured, tmp_path):
    root, _ = pictured
    copy = tmp_path / "study"
    shutil.copytree(root, copy)
    outside = tmp_path / "outside" / "run" / "samples"
    outside.mkdir(parents=True)
    secret = base64.b64decode(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    )
    (outside / "eval-forgotten.png").write_bytes(secret)
    index = json.loads((copy / "study.json").read_text())
    first = next(c for c in index["cells"] if c["status"] == "done" and c["role"] == "method")
    first["run"] = "../outside/run"
    (copy / "study.json").write_text(json.dumps(index))
    page, _ = build_report([copy])
    assert base64.b64encode(secret).decode() not in page
