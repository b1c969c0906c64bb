"""``unlearnctl compare``: three real (tiny) runs, evaluated, in one table and one trade-off plot."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from unlearnctl.commands.compare import compare, trade_off_plot
from unlearnctl.errors import UsageError
from unlearnctl.judge.classifier import Judge
from unlearnctl.rundir import METRICS_FILE, record_files
from unlearnctl.testing.tiny import tiny_model

PNG = b"\x89PNG\r\n\x1a\n"
VARIANTS = {
    "fixed": ["lambda_rule=fixed"],
    "bome": ["lambda_rule=bome"],
    "uniform": ["lambda_rule=bome", "target=uniform"],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Three erasediff runs of a tiny digits model (one step each), each evaluated with `evaluate`."""
    from unlearnctl.commands.eval import EvalRequest, evaluate
    from unlearnctl.commands.forget import ForgetRequest, forget

    root = tmp_path_factory.mktemp("compare")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        Judge(10).eval().save(root / "judge")
    model = tiny_model(num_classes=10)
    model.default_dataset = "digits"
    model.extra = {"judge": str(root / "judge")}
    model.save(root / "tiny")
    out = {}
    for name, sets in VARIANTS.items():
        run = root / name
        forget(
            ForgetRequest(
                model=str(root / "tiny"),
                classes="2",
                steps=1,
                grid_per_class=0,
                out=run,
                device="cpu",
                sets=["remain_batch_size=8", "forget_batch_size=8", *sets],
            )
        )
        evaluate(
            EvalRequest(
                target=str(run),
                num_samples=2,
                steps=1,
                device="cpu",
                grids=False,
                metrics=["forgetting", "kept", "fidelity"],
                metric_sets=["fidelity.kid_subsets=3"],
            )
        )
        out[name] = run
    return out


def test_table_json_and_plot(cli, runs, tmp_path):
    paths = [runs[n] for n in VARIANTS]
    result = cli("compare", *paths, "--json", "--plot", tmp_path / "plot.png")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    rows = data["runs"]
    assert [r["name"] for r in rows] == list(VARIANTS)
    for row, run in zip(rows, paths, strict=True):
        manifest = json.loads((run / "manifest.json").read_text())
        metrics = json.loads((run / METRICS_FILE).read_text())["results"]["model"]
        assert row["method"] == "erasediff" and row["forget_classes"] == [2]
        assert row["optimizer_steps"] == manifest["optimizer_steps"]
        assert row["wall_time_s"] == manifest["wall_time_s"]
        assert row["recognition_rate"] == metrics["forgetting"]["recognition_rate"]
        assert row["fid"] == metrics["fidelity"]["fid"]
        assert row["kept_rate"] == metrics["kept"]["mean_rate"]
        assert row["mia_auc"] is None  # not evaluated
    # key options: what tells runs of one method apart (here lambda_rule and target vary, nothing else)
    assert [r["key_options"] for r in rows] == [
        {"lambda_rule": "fixed", "target": rows[0]["options"]["target"]},
        {"lambda_rule": "bome", "target": rows[1]["options"]["target"]},
        {"lambda_rule": "bome", "target": "uniform"},
    ]
    assert rows[0]["options"]["target"] != "uniform"
    assert "remain_batch_size" in rows[0]["options"]
    # one base model: all three runs started from it
    assert len(data["references"]) == 1 and data["references"][0]["name"] == "base: tiny"
    assert data["warnings"] == []
    assert Path(data["plot"]).read_bytes()[:8] == PNG

    table = cli("compare", *paths, "--no-plot")
    assert table.exit_code == 0
    for text in ("base: tiny", "fixed", "bome", "uniform", "lambda_rule=fixed", "target=uniform", "FID"):
        assert text in table.stdout


def test_plot_is_never_overwritten_without_a_flag(cli, runs, tmp_path):
    plot = tmp_path / "compare.png"
    plot.write_bytes(b"keep me")
    refused = cli("compare", runs["fixed"], "--plot", plot)
    assert refused.exit_code == 2 and "--overwrite" in refused.stderr
    assert plot.read_bytes() == b"keep me"
    assert cli("compare", runs["fixed"], "--plot", plot, "--overwrite").exit_code == 0
    assert plot.read_bytes()[:8] == PNG


def test_the_plot_function_refuses_an_existing_file_or_a_folder_before_drawing(runs, tmp_path):
    result = compare([runs["fixed"]])
    folder = tmp_path / "plots"
    folder.mkdir()
    plot = folder / "plot.png"
    plot.write_bytes(b"keep me")
    with pytest.raises(UsageError, match="--overwrite"):
        trade_off_plot(result, plot)
    assert plot.read_bytes() == b"keep me"
    with pytest.raises(UsageError, match="is a folder"):
        trade_off_plot(result, folder, overwrite=True)
    assert trade_off_plot(result, plot, overwrite=True).read_bytes()[:8] == PNG
    assert [p.name for p in folder.iterdir()] == ["plot.png"]  # no temporary file left behind


def test_default_plot_goes_to_the_working_directory(cli, runs):
    assert cli("compare", runs["fixed"], runs["bome"]).exit_code == 0
    assert Path("compare.png").read_bytes()[:8] == PNG


def test_a_run_without_metrics_says_to_eval_it(cli, runs, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(runs["fixed"], bare)
    (bare / METRICS_FILE).unlink()
    # a run never evaluated: no metrics.json, and none in its record of files added after the run
    sums = bare / "checksums.sha256"
    sums.write_text("".join(line for line in sums.read_text().splitlines(True) if METRICS_FILE not in line))
    result = cli("compare", runs["fixed"], bare, "--no-plot")
    assert result.exit_code == 2
    assert f"run `unlearnctl eval {bare}` first" in result.stderr
    assert not Path("compare.png").exists()


def test_runs_evaluated_under_different_protocols_are_flagged(runs, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(runs["bome"], other)
    data = json.loads((other / METRICS_FILE).read_text())
    data["protocol"]["steps"] += 10
    (other / METRICS_FILE).write_text(json.dumps(data))
    record_files(other, [METRICS_FILE])  # as if evaluated so (a hand edit would be refused as a changed file)
    result = compare([runs["fixed"], other])
    assert len(result.warnings) == 1 and "different protocols" in result.warnings[0]


def test_a_single_run_shows_its_non_default_options(runs):
    from unlearnctl.registry import get_registry

    row = compare([runs["uniform"]], get_registry()).rows[0]
    defaults = get_registry().get("method", "erasediff").cls.Options().model_dump(mode="json", by_alias=True)
    assert row["key_options"]["target"] == "uniform"
    assert all(defaults[k] != v for k, v in row["key_options"].items())
    assert "steps" not in row["key_options"]  # it has its own column


def test_not_a_run_folder(tmp_path):
    with pytest.raises(UsageError, match="not a run folder"):
        compare([tmp_path / "missing"])
