"""``unlearnctl compare STUDY --markdown FILE``: the Markdown tables against ``--json`` (the hand-made study of
tests/test_study_compare.py, with distinct per-cell ``seconds`` and a ``|`` in a label), the wall-time totals
against the sums of study.json's ``seconds``, and the file handling (refusal, --overwrite, run folders)."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from test_study_compare import FORGET_SETS, SEEDS, _t, _values, study, tiny_run  # noqa: F401 (fixtures)

from unlearnctl.commands.study_markdown import markdown_cell, markdown_table

#: the label given to the lr=2e-4 group: its ``|`` must be escaped, or its rows get a column too many
PIPE_LABEL = "erase|diff"
#: digits the task fixes: rates 3, FID 2, seconds 1
DIGITS = {"recognition_rate": 3, "kept_rate": 3, "fid": 2, "fid_to_retrain": 2, "recognition_gap": 3, "wall_time_s": 1}
#: the overall table's metric columns, in order (KID, MIA AUC, steps are in --json only; MIA is not evaluated)
OVERALL = ("forgot. recog.", "kept", "FID", "FID to retrain", "recog. gap", "time s")


@pytest.fixture(scope="module")
def timed_study(study, tmp_path_factory) -> Path:  # noqa: F811 (the imported fixture)
    """A copy of the hand-made study whose cells each have their own ``seconds`` (the noise-floor, pending and
    unevaluated cells too), and whose lr=2e-4 group is labelled with a ``|``."""
    root, _numbers = study
    copy = tmp_path_factory.mktemp("timed") / "study"
    shutil.copytree(root, copy)
    index = json.loads((copy / "study.json").read_text())
    for i, cell in enumerate(index["cells"]):
        cell["seconds"] = round(10.0 + 7.3 * i + (i % 3) * 0.1, 1)  # distinct, one decimal as the sweep records
        if cell["group"] == 'erasediff|{"lr": 0.0002}':
            cell["label"] = PIPE_LABEL
    (copy / "study.json").write_text(json.dumps(index))
    return copy


def _split_row(line: str) -> list[str]:
    """A Markdown table row's cells, split at unescaped ``|``, unescaped."""
    assert line.startswith("| ") and line.endswith(" |"), line
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line[1:-1])]


def _tables(text: str) -> dict[str, list[dict[str, str]]]:
    """Each table of the document, keyed by the nearest heading above it (``##``/``###`` line), as dicts."""
    tables: dict[str, list[dict[str, str]]] = {}
    heading = ""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        if line.startswith("|"):
            headers = _split_row(line)
            assert all(set(c) <= set(":-") for c in _split_row(lines[i + 1])), "no delimiter row"
            rows = []
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                cells = _split_row(lines[i])
                assert len(cells) == len(headers), lines[i]  # an unescaped | would add a column
                rows.append(dict(zip(headers, cells, strict=True)))
                i += 1
            assert heading not in tables, heading
            tables[heading] = rows
            continue
        i += 1
    return tables


def _name(group: dict[str, Any]) -> str:
    if group["role"] == "base":
        return "base model"
    if group["role"] == "retrain" and group["label"] != "retrain":
        return f"{group['label']} (retrain)"
    return group["label"]


def _options(group: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in group["options"].items()) or "-"


def _interval(iv: dict[str, Any] | None, digits: int) -> str:
    if iv is None:
        return "-"
    if iv["low"] is None:
        return f"{iv['mean']:.{digits}f}"
    return f"{iv['mean']:.{digits}f} [{iv['low']:.{digits}f}, {iv['high']:.{digits}f}]"


@pytest.fixture(scope="module")
def written(timed_study, tmp_path_factory) -> tuple[dict[str, Any], str]:
    """``--json`` and the Markdown of one run of ``compare STUDY --json --markdown``."""
    from typer.testing import CliRunner

    from unlearnctl.cli.app import app

    out = tmp_path_factory.mktemp("md") / "results.md"
    args = ["compare", str(timed_study), "--json", "--no-plot", "--markdown", str(out)]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["markdown"] == str(out)
    return data, out.read_text(encoding="utf-8")


def test_overall_table_is_the_json_values_formatted(written):
    data, text = written
    first = text.splitlines()[0]
    assert first.startswith("## ") and "hand-made" in first and "18 cells" in first and "95% t interval" in first
    assert "2 cell(s) not done" in text
    tables = _tables(text)
    overall = tables[first.lstrip("#").strip()]
    assert list(overall[0]) == ["group", "options", "n", *OVERALL, "front"]
    groups = [*data["groups"], data["base"]]
    assert [(r["group"], r["options"]) for r in overall] == [(_name(g), _options(g)) for g in groups]
    assert overall[1]["group"] == PIPE_LABEL  # escaped in the file, one cell here
    titles = {m["title"]: m["key"] for m in data["metrics"]}
    for row, group in zip(overall, groups, strict=True):
        assert row["n"] == str(group["n_cells"] if group["role"] != "base" else len(FORGET_SETS))
        for title in OVERALL:
            key = titles[title]
            expected = _interval(group["overall"][key], DIGITS[key])
            if key == "fid" and (group.get("fid_vs_base") or {}).get("within_noise"):
                expected += " (within noise)"
            assert row[title] == expected, (group["key"], title)
        assert row["front"] == ("*" if group["on_front"] else "")
    # the marks are where --json has them (and so not everywhere: the test could fail)
    assert [r["front"] for r in overall] == ["*", "", "*", ""]
    assert ["(within noise)" in r["FID"] for r in overall] == [True, False, False, False]
    assert overall[-1]["FID"] == "21.00 [" + overall[-1]["FID"].split("[")[1]  # the base: mean of 20 and 22


def test_per_forget_set_tables(written, timed_study, study):  # noqa: F811 (the imported fixture)
    data, text = written
    _root, numbers = study
    tables = _tables(text)
    titles = {"recognition_rate": "forgot. recog.", "fid": "FID", "fid_to_retrain": "FID to retrain"}
    for key, title in titles.items():
        rows = tables[f"{title} per forget set: mean ± half-width (n seeds)"]
        assert list(rows[0]) == ["group", "options", *FORGET_SETS, "all"]
        for row, expected in zip(rows, data["tables"][key], strict=True):
            assert [row[fs] for fs in FORGET_SETS] == [expected["cells"][fs] for fs in FORGET_SETS]
            assert row["all"] == expected["all"]
    # and independently of the code under test: scipy's t interval over the seeds
    fid = tables["FID per forget set: mean ± half-width (n seeds)"]
    for row, group in zip(fid[:-1], data["groups"], strict=True):
        for forget_set in FORGET_SETS:
            mean, low, _high = _t(_values(numbers, timed_study, group["key"], "fid", forget_set))
            assert row[forget_set] == f"{mean:.2f} ± {mean - low:.2f} ({len(SEEDS)})"
    assert [fid[-1][fs] for fs in FORGET_SETS] == ["20.00 (1)", "22.00 (1)"]  # the base: one evaluation each


def test_noise_floor_numbers_and_verdicts(written):
    data, text = written
    assert "FID to real std 1.50, FID between draws mean 4.00" in text
    assert "|mean FID - base FID| < 3.00" in text
    verdicts = _tables(text)["Noise floor"]
    assert len(verdicts) == len(data["groups"])
    for row, group in zip(verdicts, data["groups"], strict=True):
        assert row["mean FID - base FID"] == f"{group['fid_vs_base']['difference']:+.2f}"
        assert row["within noise"] == ("yes" if group["fid_vs_base"]["within_noise"] else "no")


def test_wall_time_totals_are_the_sums_of_the_cells_seconds(written, timed_study):
    data, text = written
    index = json.loads((timed_study / "study.json").read_text())
    done = {cell for g in data["groups"] for cell in g["cells"]}
    rows = _tables(text)["Wall time"]
    assert [(r["group"], r["options"]) for r in rows] == [(_name(g), _options(g)) for g in data["groups"]]
    for row, group in zip(rows, data["groups"], strict=True):
        seconds = [c["seconds"] for c in index["cells"] if c["id"] in group["cells"]]
        assert len(seconds) == group["n_cells"] == 6
        assert row["cells"] == row["timed"] == "6"
        assert row["total s"] == f"{math.fsum(seconds):.1f}"
        assert row["mean s"] == f"{math.fsum(seconds) / len(seconds):.1f}"
        assert group["seconds"]["total"] == pytest.approx(math.fsum(seconds), rel=1e-12)
    # the study's compute: every cell of study.json -- the 18 compared, the noise-floor cell, the pending cell
    # and the one marked done without metrics.json
    everything = [c["seconds"] for c in index["cells"]]
    assert len(everything) == 21
    noise = [c["seconds"] for c in index["cells"] if c["role"] == "noise-floor"]
    other = [c["seconds"] for c in index["cells"] if c["id"] not in done and c["role"] != "noise-floor"]
    assert len(noise) == 1 and len(other) == 2
    compute = data["compute"]
    assert compute["total_s"] == pytest.approx(math.fsum(everything), rel=1e-12)
    assert compute["cells"] == compute["timed"] == 21
    line = next(x for x in text.splitlines() if x.startswith("Study total compute:"))
    assert line.startswith(f"Study total compute: {math.fsum(everything):.1f} s (")
    compared = math.fsum(c["seconds"] for c in index["cells"] if c["id"] in done)
    assert f"over 21 timed cell(s) of 21 in study.json: compared cells {compared:.1f} s" in line
    assert f"noise floor {noise[0]:.1f} s" in line and f"without their files) {math.fsum(other):.1f} s" in line


def test_an_existing_file_is_refused_then_replaced_with_overwrite(cli, timed_study, tmp_path):
    (tmp_path / "out").mkdir()
    md = tmp_path / "out" / "results.md"
    md.write_text("keep me")
    refused = cli("compare", timed_study, "--no-plot", "--markdown", md)
    assert refused.exit_code == 2 and "--overwrite" in refused.stderr and "--markdown" in refused.stderr
    assert md.read_text() == "keep me"
    # the console tables still print without --json, and say what was written
    replaced = cli("compare", timed_study, "--no-plot", "--markdown", md, "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert "FID per forget set" in replaced.stdout and f"wrote {md}" in replaced.stdout.replace("\n", "")
    assert md.read_text().startswith("## Study hand-made")
    assert [p.name for p in md.parent.iterdir()] == ["results.md"]  # no temporary file left behind


def test_plot_and_markdown_together(cli, timed_study, tmp_path):
    plot, md = tmp_path / "p.png", tmp_path / "r.md"
    ok = cli("compare", timed_study, "--plot", plot, "--markdown", md, "--json")
    assert ok.exit_code == 0, ok.output
    assert plot.read_bytes()[:4] == b"\x89PNG" and md.read_text().startswith("## Study")
    same = cli("compare", timed_study, "--plot", tmp_path / "x.md", "--markdown", tmp_path / "x.md")
    assert same.exit_code == 2 and "two different files" in same.stderr
    assert not (tmp_path / "x.md").exists()


def test_run_folders_are_refused_in_one_line(cli, tiny_run, tmp_path):  # noqa: F811 (the imported fixture)
    md = tmp_path / "r.md"
    refused = cli("compare", tiny_run, "--no-plot", "--markdown", md)
    assert refused.exit_code == 2
    assert "needs a study folder" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert not md.exists()


def test_markdown_cells_escape_pipes_and_line_breaks():
    assert markdown_cell("a|b\nc") == "a\\|b c"
    table = markdown_table(["x", "y|z"], [["1", "a|b"]], "lr")
    assert table.splitlines() == ["| x | y\\|z |", "| :--- | ---: |", "| 1 | a\\|b |"]
    assert _split_row(table.splitlines()[2]) == ["1", "a|b"]
    with pytest.raises(ValueError, match="alignments"):
        markdown_table(["x"], [["1", "2"]], "l")
