"""``unlearnctl noise-floor``: the seed-to-seed spread of eval's numbers, measured with eval's own code.

A tiny 10-class model of the real digits naming an (untrained) judge: its features still separate images,
so FIDs are small but positive and differ from seed to seed. Draw k of the noise floor is sampled and scored
by the same code as ``eval --seed k``, so its FID equals eval's exactly (both sides on one thread: the BLAS
sums of FID's matrix square root depend on the thread count, see tests/test_fidelity_rescore.py).
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from digits_study import tiny_digits_study
from threadpoolctl import threadpool_limits

from unlearnctl.rundir import METRICS_FILE

SAMPLING = ["-n", "3", "--steps", "2", "--device", "cpu"]
SEED = 5
DRAWS = 3


def invoke(*args: object) -> tuple[int, str, str]:
    """``unlearnctl ARGS`` in-process, with the BLAS on one thread; (exit code, stdout, stderr)."""
    from typer.testing import CliRunner

    from unlearnctl.cli.app import app

    with threadpool_limits(limits=1):
        result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"}, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> dict:
    """The study, and one noise floor of its base model (class 2 treated as forgotten), written and printed."""
    paths = tiny_digits_study(tmp_path_factory.mktemp("noise-floor"))
    out = paths["root"] / "floor" / "noise.json"
    code, stdout, stderr = invoke(
        "noise-floor", paths["model"], "--classes", "2", "--draws", DRAWS, "--seed", SEED, *SAMPLING, "--out", out
    )
    assert code == 0, stdout + stderr
    return {**paths, "out": out, "stdout": stdout, "data": json.loads(out.read_text())}


def test_each_draw_fid_equals_what_eval_reports_for_its_seed(study, tmp_path):
    data = study["data"]
    assert data["seeds"] == [SEED + k for k in range(DRAWS)]
    for k, seed in enumerate(data["seeds"][:2]):  # two draws are enough to show the seed rule
        folder = tmp_path / f"eval-{seed}"
        code, stdout, stderr = invoke(
            "eval", study["model"], "--classes", "2", "--seed", seed, *SAMPLING,
            "--metrics", "kept,fidelity", "--set", "fidelity.kid_subsets=5", "--out", folder,
        )  # fmt: skip
        assert code == 0, stdout + stderr
        results = json.loads((folder / METRICS_FILE).read_text())["results"]["model"]
        assert data["fid_to_real"]["values"][k] == results["fidelity"]["fid"]
        assert data["samples"]["generated_per_draw"][k] == results["fidelity"]["n_generated"] == 9 * 3
        assert data["samples"]["real"] == results["fidelity"]["n_real"]
        assert data["kept_rate"]["values"][k] == results["kept"]["mean_rate"]
        for c, rate in results["kept"]["per_class"].items():
            assert data["kept_rate"]["per_class"][c]["values"][k] == rate
    # and the draws differ: seeds change the samples
    assert len(set(data["fid_to_real"]["values"])) == DRAWS


def _check_summary(s: dict, n: int) -> None:
    values = np.array(s["values"], dtype=np.float64)
    assert len(values) == n
    # numpy's pairwise sums vs statistics' exact ones: a few ulp apart at most
    for key, expected in {
        "mean": values.mean(),
        "std": values.std(ddof=1),
        "min": values.min(),
        "max": values.max(),
        "range": values.max() - values.min(),
    }.items():
        assert math.isclose(s[key], float(expected), rel_tol=1e-9, abs_tol=1e-15), (key, s[key], expected)


def test_summaries_are_the_statistics_of_the_recorded_values(study):
    data = study["data"]
    pairs = DRAWS * (DRAWS - 1) // 2
    _check_summary(data["fid_to_real"], DRAWS)
    _check_summary(data["fid_between_draws"], pairs)
    assert data["fid_to_real"]["std"] > 0  # the values differ, so the check above tells std from 0
    _check_summary(data["kept_rate"], DRAWS)
    _check_summary(data["forgotten_rate"], DRAWS)
    for per_class in (data["kept_rate"]["per_class"], data["forgotten_rate"]["per_class"]):
        for s in per_class.values():
            _check_summary(s, DRAWS)
    assert sorted(data["forgotten_rate"]["per_class"]) == ["2"]
    assert sorted(data["kept_rate"]["per_class"], key=int) == [str(c) for c in range(10) if c != 2]


def test_fid_between_draws_covers_every_pair_and_is_positive(study):
    between = study["data"]["fid_between_draws"]
    assert between["pairs"] == [list(p) for p in itertools.combinations(range(DRAWS), 2)]
    assert len(between["values"]) == DRAWS * (DRAWS - 1) // 2
    assert all(v > 0 for v in between["values"])


def test_the_file_records_the_protocol_model_and_classes(study):
    data = study["data"]
    assert data["schema_version"] == 1 and data["draws"] == DRAWS
    assert data["classes"] == {"forgotten": [2], "kept": [c for c in range(10) if c != 2]}
    assert data["model"]["spec"] == str(study["model"]) and len(data["model"]["sha256"]) == 64
    proto = data["protocol"]
    assert (proto["sampler"], proto["steps"], proto["samples_per_class"], proto["seed"]) == ("ddim", 2, 3, SEED)
    assert data["feature_extractor"]["kind"] == "judge"
    assert data["unlearnctl_version"] and data["wall_time_s"] > 0
    assert "2 x std" in study["stdout"] and "FID between draws" in study["stdout"]


def test_json_flag_prints_what_the_file_holds_and_overwrite_replaces_it(study, tmp_path):
    out = tmp_path / "nf.json"
    out.write_text("old")
    args = ["noise-floor", study["model"], "--classes", "2", "--draws", 2, *SAMPLING, "--out", out]
    code, stdout, stderr = invoke(*args, "--overwrite", "--json")
    assert code == 0, stdout + stderr
    assert json.loads(stdout) == json.loads(out.read_text())
    assert json.loads(stdout)["seeds"] == [0, 1]  # --seed's default, as eval's


def test_a_model_that_forgot_nothing_keeps_every_class(study, tmp_path):
    out = tmp_path / "all.json"
    code, stdout, stderr = invoke("noise-floor", study["model"], "--draws", 2, *SAMPLING, "--out", out, "--json")
    assert code == 0, stdout + stderr
    data = json.loads(out.read_text())
    assert data["classes"] == {"forgotten": [], "kept": list(range(10))}
    assert data["forgotten_rate"] is None
    assert data["samples"]["generated_per_draw"] == [30, 30]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("one-draw", "--draws 1"),
        ("existing-out", "already exists"),
        ("unknown-model", "no-such-model"),
        ("under-a-launcher", "runs in one process"),
    ],
)
def test_bad_requests_exit_2_with_one_line_and_write_nothing(study, tmp_path, monkeypatch, case, message):
    folder = tmp_path / "outs"
    folder.mkdir()
    out = folder / "nf.json"
    model, extra = str(study["model"]), ["--draws", "2"]
    if case == "one-draw":
        extra = ["--draws", "1"]
    elif case == "existing-out":
        out.write_text("mine")
    elif case == "under-a-launcher":  # every process would draw and write the same file
        monkeypatch.setenv("WORLD_SIZE", "2")
    else:
        model = "no-such-model"
    code, stdout, stderr = invoke("noise-floor", model, "--classes", "2", *extra, *SAMPLING, "--out", out)
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], stderr
    assert stdout == ""
    assert [p.name for p in folder.iterdir()] == (["nf.json"] if case == "existing-out" else [])
    if case == "existing-out":
        assert out.read_text() == "mine"


def test_out_must_be_named(study):
    code, _stdout, stderr = invoke("noise-floor", study["model"], "--classes", "2")
    assert code == 2 and "--out" in stderr


def test_noise_floor_of_a_run_uses_its_forgotten_classes(study, tmp_path):
    out = tmp_path / "run.json"
    code, stdout, stderr = invoke("noise-floor", study["run"], "--draws", 2, *SAMPLING, "--out", out)
    assert code == 0, stdout + stderr
    data = json.loads(Path(out).read_text())
    assert data["classes"]["forgotten"] == [2]
    assert data["model"]["kind"] == "run"
