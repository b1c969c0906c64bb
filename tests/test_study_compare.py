"""``unlearnctl compare STUDY``: a study folder built by hand (study.json + copies of one real tiny evaluated run,
their metrics.json rewritten with known numbers), and the aggregation on in-memory cells."""

from __future__ import annotations

import json
import math
import shutil
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unlearnctl.commands.intervals import bootstrap_interval, t_interval
from unlearnctl.commands.study_compare import (
    CellData,
    aggregate,
    compare_study,
    load_study,
    pareto_front,
)
from unlearnctl.commands.study_plot import study_plot
from unlearnctl.commands.study_result import format_cell
from unlearnctl.errors import UsageError
from unlearnctl.judge.classifier import Judge
from unlearnctl.rundir import METRICS_FILE, record_files
from unlearnctl.testing.tiny import tiny_model

PNG = b"\x89PNG\r\n\x1a\n"
FORGET_SETS = ("classes:2", "classes:5")
SEEDS = (0, 1, 2)
#: group key -> (label, options, role, centre of (recognition rate, FID, fid_to_retrain))
GROUPS: dict[str, tuple[str, dict[str, Any], str, tuple[float, float, float | None]]] = {
    'erasediff|{"lr": 0.0001}': ("erasediff", {"lr": 0.0001}, "method", (0.5, 22.0, 6.0)),
    'erasediff|{"lr": 0.0002}': ("erasediff", {"lr": 0.0002}, "method", (0.1, 35.0, 12.0)),
    "retrain|{}": ("retrain", {}, "retrain", (0.0, 28.0, None)),
}
#: the base model's (recognition rate, FID) per forget set: the same evaluation in every cell of a forget set
BASE = {"classes:2": (0.95, 20.0), "classes:5": (0.97, 22.0)}
#: noise-floor std of FID to real images: threshold 2 x 1.5 = 3, so FID 22 +- noise is within noise of 21
NOISE_STD = 1.5


# --- a real tiny evaluated run, copied into each cell ----------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """One erasediff run of a tiny digits model (one step), evaluated (forgetting, kept, fidelity)."""
    from unlearnctl.commands.eval import EvalRequest, evaluate
    from unlearnctl.commands.forget import ForgetRequest, forget

    root = tmp_path_factory.mktemp("study-run")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        Judge(10).eval().save(root / "judge")
    model = tiny_model(num_classes=10)
    model.default_dataset = "digits"
    model.extra = {"judge": str(root / "judge")}
    model.save(root / "tiny")
    run = root / "run"
    forget(
        ForgetRequest(
            model=str(root / "tiny"),
            classes="2",
            steps=1,
            grid_per_class=0,
            out=run,
            device="cpu",
            sets=["remain_batch_size=8", "forget_batch_size=8"],
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
    return run


def _cell_numbers(key: str, forget_set: str, seed: int) -> dict[str, Any]:
    """Known, distinct numbers for one cell (a seeded draw around the group's centre)."""
    rate, fid, to_retrain = GROUPS[key][3]
    rng = np.random.default_rng([list(GROUPS).index(key), FORGET_SETS.index(forget_set), seed])
    noise = rng.normal(size=5)
    return {
        "recognition_rate": float(min(max(rate + 0.05 * noise[0], 0.0), 1.0)),
        "kept_rate": float(0.9 + 0.02 * noise[1]),
        "fid": float(fid + 0.8 * noise[2]),
        "fid_to_retrain": None if to_retrain is None else float(to_retrain + 0.5 * noise[3]),
        "recognition_gap": None if to_retrain is None else float(rate + 0.05 * noise[4]),
    }


def _set_results(metrics: dict[str, Any], numbers: dict[str, Any], base: tuple[float, float]) -> None:
    model = metrics["results"]["model"]
    model["forgetting"]["recognition_rate"] = numbers["recognition_rate"]
    model["kept"]["mean_rate"] = numbers["kept_rate"]
    model["fidelity"]["fid"] = numbers["fid"]
    if numbers["fid_to_retrain"] is not None:
        model["retrain-distance"] = {
            "fid": numbers["fid_to_retrain"],
            "recognition_gap": numbers["recognition_gap"],
            "kept_gap": 0.0,
            "forgotten_gap": numbers["recognition_gap"],
            "per_class": {},
        }
    reference = metrics["results"]["reference"]
    reference["forgetting"]["recognition_rate"] = base[0]
    reference["fidelity"]["fid"] = base[1]


def _cell_record(key: str, forget_set: str, seed: int, status: str = "done") -> dict[str, Any]:
    label, options, role, _centre = GROUPS[key]
    cid = f"{label}.{forget_set.replace(':', '-')}.s{seed}.{abs(hash((key, forget_set))) % 10**6:06d}"
    return {
        "id": cid,
        "role": role,
        "method": "erasediff" if role == "method" else "retrain",
        "label": label,
        "options": options,
        "group": key,
        "forget": [forget_set],
        "forget_label": forget_set,
        "seed": seed,
        "run": f"cells/{cid}",
        "log": f"logs/{cid}.log",
        "retrain": None,
        "status": status,
        "attempts": 1,
        "seconds": 1.0,
        "returncode": 0 if status == "done" else None,
        "failed_command": None,
        "error": None,
        "host": "test",
    }


def _study_index(cells: list[dict[str, Any]], noise_floor: str | None) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "kind": "unlearnctl-study",
        "name": "hand-made",
        "created_at": "2026-11-30T21:00:00Z",
        "updated_at": "2026-11-30T21:10:00Z",
        "unlearnctl_version": "0.1.0",
        "spec_file": "spec.toml",
        "spec_sha256": "0" * 64,
        "model": "tiny",
        "eval": {"num-samples": 2},
        "noise_floor": noise_floor,
        "cells": cells,
    }


@pytest.fixture(scope="module")
def study(tiny_run, tmp_path_factory) -> tuple[Path, dict[str, dict[str, Any]]]:
    """A study of 3 groups x 2 forget sets x 3 seeds (18 done cells), one pending cell and one marked done
    whose run folder has no metrics.json; a noise floor. Also each done cell id -> its numbers."""
    root = tmp_path_factory.mktemp("study") / "study"
    (root / "cells").mkdir(parents=True)
    records = []
    numbers: dict[str, dict[str, Any]] = {}
    for key in GROUPS:
        for forget_set in FORGET_SETS:
            for seed in SEEDS:
                record = _cell_record(key, forget_set, seed)
                run = root / record["run"]
                shutil.copytree(tiny_run, run)
                metrics = json.loads((run / METRICS_FILE).read_text())
                values = _cell_numbers(key, forget_set, seed)
                _set_results(metrics, values, BASE[forget_set])
                (run / METRICS_FILE).write_text(json.dumps(metrics))
                record_files(run, [METRICS_FILE])  # as if evaluated so: the cell passes check_run
                records.append(record)
                numbers[record["id"]] = values
    pending = _cell_record('erasediff|{"lr": 0.0002}', "classes:5", 3, status="pending")
    unevaluated = _cell_record('erasediff|{"lr": 0.0001}', "classes:5", 3)
    shutil.copytree(tiny_run, root / unevaluated["run"])
    (root / unevaluated["run"] / METRICS_FILE).unlink()
    # the sweep's noise-floor cell: it writes noise-floor.json, it is neither a group nor missing
    noise_cell = {**_cell_record("retrain|{}", "classes:2", 0), "id": "noise-floor", "role": "noise-floor"}
    noise_cell.update(run="noise-floor.json", group=None, label=None, method=None)
    records += [pending, unevaluated, noise_cell]
    (root / "noise-floor.json").write_text(
        json.dumps(
            {
                "schema_version": 1,
                "draws": 4,
                "classes": {"forgotten": [2], "kept": [0, 1]},
                "fid_to_real": {"values": [20, 21, 22, 23], "mean": 21.5, "std": NOISE_STD, "min": 20, "max": 23},
                "fid_between_draws": {"values": [3.0, 4.0, 5.0], "mean": 4.0, "std": 1.0, "min": 3.0, "max": 5.0},
            }
        )
    )
    (root / "study.json").write_text(json.dumps(_study_index(records, "noise-floor.json")))
    return root, numbers


# --- independent reference computations ----------------------------------------------------------------


def _t(values: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """mean, low, high by scipy's own interval (not the code under test)."""
    from scipy import stats

    mean = statistics.mean(values)
    low, high = stats.t.interval(level, len(values) - 1, loc=mean, scale=statistics.stdev(values) / len(values) ** 0.5)
    return mean, float(low), float(high)


#: the range each metric can take: an interval's ends are clipped to it
RANGE: dict[str, tuple[float | None, float | None]] = {
    "recognition_rate": (0.0, 1.0), "kept_rate": (0.0, 1.0), "mia_auc": (0.0, 1.0), "recognition_gap": (0.0, 1.0),
    "fid": (0.0, None), "fid_to_retrain": (0.0, None), "wall_time_s": (0.0, None), "optimizer_steps": (0.0, None),
}  # fmt: skip


def _close(iv: dict[str, Any], values: list[float], metric: str) -> None:
    mean, low, high = _t(values)
    bottom, top = RANGE.get(metric, (None, None))
    low = low if bottom is None else max(low, bottom)
    high = high if top is None else min(high, top)
    # float64 means of <= 18 numbers and two formulas for the same t quantile: a few ulps apart
    assert iv["n"] == len(values)
    assert iv["mean"] == pytest.approx(mean, rel=1e-12)
    assert iv["low"] == pytest.approx(low, rel=1e-9) and iv["high"] == pytest.approx(high, rel=1e-9)


def _values(numbers, study_root, key, metric, forget_set=None) -> list[float]:
    index = json.loads((study_root / "study.json").read_text())
    return [
        numbers[c["id"]][metric]
        for c in index["cells"]
        if c["group"] == key and c["id"] in numbers and forget_set in (None, c["forget_label"])
    ]


# --- the study folder through the CLI ------------------------------------------------------------------


def test_json_groups_intervals_missing_front_and_noise_floor(cli, study, tiny_run):
    root, numbers = study
    result = cli("compare", root, "--json", "--no-plot")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["interval"] == "t" and data["level"] == 0.95 and data["n_cells"] == 18
    assert data["forget_sets"] == list(FORGET_SETS)
    # grouping: the two lr settings of one label are two groups; the retrain cells one of their own, last
    assert [g["key"] for g in data["groups"]] == list(GROUPS)
    assert [g["role"] for g in data["groups"]] == ["method", "method", "retrain"]
    assert [g["options"] for g in data["groups"]] == [{"lr": 0.0001}, {"lr": 0.0002}, {}]
    assert all(g["n_cells"] == 6 for g in data["groups"])
    for group in data["groups"]:
        key = group["key"]
        for metric in ("recognition_rate", "kept_rate", "fid"):
            _close(group["overall"][metric], _values(numbers, root, key, metric), metric)
            for forget_set in FORGET_SETS:
                values = _values(numbers, root, key, metric, forget_set)
                _close(group["per_forget_set"][forget_set][metric], values, metric)
        if group["role"] == "retrain":
            assert group["overall"]["fid_to_retrain"] is None
        else:
            for metric in ("fid_to_retrain", "recognition_gap"):
                _close(group["overall"][metric], _values(numbers, root, key, metric), metric)
        # every cell is a copy of one run: one wall time, a zero-width interval around it
        manifest = json.loads((tiny_run / "manifest.json").read_text())
        wall = group["overall"]["wall_time_s"]
        assert wall["mean"] == manifest["wall_time_s"] and wall["half_width"] == 0.0 and wall["n"] == 6
        assert group["overall"]["optimizer_steps"]["mean"] == manifest["optimizer_steps"]
        assert group["overall"]["mia_auc"] is None  # not evaluated
    # the base model: one row per forget set (the same evaluation repeated in each cell counts once)
    base = data["base"]
    assert base["role"] == "base" and base["cells"] == []
    assert base["overall"]["fid"]["n"] == 2 and base["overall"]["fid"]["mean"] == pytest.approx(21.0, rel=1e-15)
    for forget_set, (rate, fid) in BASE.items():
        per = base["per_forget_set"][forget_set]
        assert per["fid"]["mean"] == fid and per["fid"]["n"] == 1 and per["fid"]["low"] is None
        assert per["recognition_rate"]["mean"] == rate
    # missing: the pending cell and the done cell without metrics.json, with their reasons
    missing = {m["id"]: m for m in data["missing"]}
    assert len(missing) == 2
    assert sorted(m["status"] for m in missing.values()) == ["done", "pending"]
    assert any("metrics.json" in m["reason"] for m in missing.values())
    # front by the means: retrain (rate ~0, FID ~28) dominates lr=2e-4 (~0.1, ~35); lr=1e-4 (~0.5, ~22) is not
    # dominated; the base is not a candidate
    assert data["front"] == ['erasediff|{"lr": 0.0001}', "retrain|{}"]
    assert [g["on_front"] for g in data["groups"]] == [True, False, True]
    # noise floor: threshold 2 x 1.5; lr=1e-4's FID (~22) is within 3 of the base's 21, the others are not
    floor = data["noise_floor"]
    assert floor["fid_to_real_std"] == NOISE_STD and floor["fid_between_draws_mean"] == 4.0
    assert floor["threshold"] == 2 * NOISE_STD
    verdicts = [g["fid_vs_base"] for g in data["groups"]]
    for group, verdict in zip(data["groups"], verdicts, strict=True):
        diff = statistics.mean(_values(numbers, root, group["key"], "fid")) - 21.0
        assert verdict["difference"] == pytest.approx(diff, rel=1e-9)
        assert verdict["within_noise"] == (abs(diff) < 2 * NOISE_STD)
    assert [v["within_noise"] for v in verdicts] == [True, False, False]
    assert data["plot"] is None


def test_per_forget_set_tables(cli, study):
    root, numbers = study
    data = json.loads(cli("compare", root, "--json", "--no-plot").stdout)
    tables = data["tables"]
    assert set(tables) >= {"recognition_rate", "fid", "fid_to_retrain"}
    rows = tables["fid"]
    assert [r["group"] for r in rows] == [*GROUPS, "base"]
    for row in rows[:-1]:
        for forget_set in FORGET_SETS:
            mean, low, _high = _t(_values(numbers, root, row["group"], "fid", forget_set))
            assert row["cells"][forget_set] == f"{mean:.2f} ± {mean - low:.2f} ({len(SEEDS)})"
    assert rows[-1]["cells"] == {"classes:2": "20.00 (1)", "classes:5": "22.00 (1)"}
    assert [r["cells"]["classes:2"] for r in tables["fid_to_retrain"]][2:] == ["-", "-"]  # retrain, base

    text = cli("compare", root, "--no-plot")
    assert text.exit_code == 0, text.output
    out = text.stdout
    for needle in (
        "lr=0.0001",
        "lr=0.0002",
        "retrain",
        "base model",
        "FID per forget set",
        "classes:5",
        "within noise",
        "noise floor",
        "2 cell(s) not done",
        "front",
    ):
        assert needle in out, needle


def test_forget_set_restricts_every_number_and_the_front_to_its_cells(cli, study):
    root, numbers = study
    result = cli("compare", root, "--json", "--no-plot", "--forget-set", "classes:5", "--forget-set", "classes:5")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["study"] == "hand-made (classes:5)" and data["forget_sets"] == ["classes:5"]
    assert data["n_cells"] == 9 and all(g["n_cells"] == 3 for g in data["groups"])
    for group in data["groups"]:
        for metric in ("recognition_rate", "fid"):
            # the overall interval is now the one forget set's interval over its seeds
            _close(group["overall"][metric], _values(numbers, root, group["key"], metric, "classes:5"), metric)
    assert data["base"]["overall"]["fid"]["mean"] == BASE["classes:5"][1]
    # both cells not done are classes:5 cells; a front of the one forget set's means
    assert len(data["missing"]) == 2 and {m["forget_label"] for m in data["missing"]} == {"classes:5"}
    means = {g["key"]: (g["overall"]["recognition_rate"]["mean"], g["overall"]["fid"]["mean"]) for g in data["groups"]}
    keys = list(means)
    assert data["front"] == [keys[i] for i in pareto_front([means[k] for k in keys])]
    # both forget sets named: the same numbers as no filter at all
    both = json.loads(
        cli("compare", root, "--json", "--no-plot", *(arg for f in FORGET_SETS for arg in ("--forget-set", f))).stdout
    )
    plain = json.loads(cli("compare", root, "--json", "--no-plot").stdout)
    assert both["groups"] == plain["groups"] and both["front"] == plain["front"]

    unknown = cli("compare", root, "--no-plot", "--forget-set", "classes:9")
    assert unknown.exit_code == 2
    assert "no forget set 'classes:9'" in unknown.stderr and "classes:2, classes:5" in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1


def test_bootstrap_and_level_options(cli, study):
    root, numbers = study
    data = json.loads(cli("compare", root, "--json", "--no-plot", "--interval", "bootstrap", "--level", "0.9").stdout)
    assert data["interval"] == "bootstrap" and data["level"] == 0.9
    group = data["groups"][0]
    values = _values(numbers, root, group["key"], "fid")
    expected = bootstrap_interval(values, 0.9, seed=0)
    assert expected is not None
    assert group["overall"]["fid"] == expected.to_dict()
    bad = cli("compare", root, "--no-plot", "--interval", "z")
    assert bad.exit_code == 2 and "--interval" in bad.stderr
    bad = cli("compare", root, "--no-plot", "--level", "95")
    assert bad.exit_code == 2 and "between 0 and 1" in bad.stderr


def test_plot_written_and_never_overwritten_without_the_flag(cli, study, tmp_path):
    root, _numbers = study
    plot = tmp_path / "study.png"
    first = cli("compare", root, "--plot", plot)
    assert first.exit_code == 0, first.output
    assert plot.read_bytes()[:8] == PNG
    plot.write_bytes(b"keep me")
    refused = cli("compare", root, "--plot", plot)
    assert refused.exit_code == 2 and "--overwrite" in refused.stderr
    assert plot.read_bytes() == b"keep me"
    assert cli("compare", root, "--plot", plot, "--overwrite", "--json").exit_code == 0
    assert plot.read_bytes()[:8] == PNG


def test_run_folders_keep_working_and_refuse_study_only_flags(cli, tiny_run):
    ok = cli("compare", tiny_run, "--no-plot", "--json")
    assert ok.exit_code == 0, ok.output
    assert [r["method"] for r in json.loads(ok.stdout)["runs"]] == ["erasediff"]
    refused = cli("compare", tiny_run, "--no-plot", "--interval", "bootstrap")
    assert refused.exit_code == 2 and "study folder only" in refused.stderr
    refused = cli("compare", tiny_run, "--no-plot", "--forget-set", "classes:2")
    assert refused.exit_code == 2 and "--forget-set" in refused.stderr and "study folder only" in refused.stderr


def test_a_changed_cell_is_refused_and_no_verify_reads_it(study, tmp_path, cli):
    root, _numbers = study
    copy = tmp_path / "study"
    shutil.copytree(root, copy)
    index = json.loads((copy / "study.json").read_text())
    run = copy / index["cells"][0]["run"]
    metrics = json.loads((run / METRICS_FILE).read_text())
    metrics["results"]["model"]["fidelity"]["fid"] = 1.0
    (run / METRICS_FILE).write_text(json.dumps(metrics))
    refused = cli("compare", copy, "--no-plot")
    assert refused.exit_code == 2 and "metrics.json" in refused.stderr
    assert cli("compare", copy, "--no-plot", "--no-verify").exit_code == 0


def test_load_study_refuses_what_is_not_a_study(tmp_path):
    with pytest.raises(UsageError, match="not a study folder"):
        load_study(tmp_path)
    (tmp_path / "study.json").write_text(json.dumps({"kind": "something-else"}))
    with pytest.raises(UsageError, match="not an unlearnctl study"):
        load_study(tmp_path)
    (tmp_path / "study.json").write_text(json.dumps(_study_index([], None)))
    with pytest.raises(UsageError, match="no done cell"):
        compare_study(tmp_path)


# --- the aggregation on in-memory cells ----------------------------------------------------------------


def _metrics(rate: float | None, fid: float, mia: float | None = None, base: tuple[float, float] = (0.9, 20.0)):
    model: dict[str, Any] = {"fidelity": {"fid": fid}, "kept": {"mean_rate": 0.9}}
    if rate is not None:
        model["forgetting"] = {"recognition_rate": rate}
    if mia is not None:
        model["membership"] = {"auc": mia}
    reference = {"forgetting": {"recognition_rate": base[0]}, "fidelity": {"fid": base[1]}}
    return {"results": {"model": model, "reference": reference}, "reference": {"sha256": "b" * 64}}


def _cell(group: str, forget_set: str, seed: int, role: str = "method") -> dict[str, Any]:
    return {
        "id": f"{group}.{forget_set}.{seed}",
        "role": role,
        "label": group,
        "options": {},
        "group": group,
        "forget_label": forget_set,
        "seed": seed,
    }


MANIFEST = {"wall_time_s": 10.0, "optimizer_steps": 5}


def test_aggregate_matches_independent_intervals_and_skips_random_forget_sets_from_the_plot():
    cells = []
    rates = {"classes:2": [0.1, 0.2, 0.15], "random:0.1": [None, None, None]}
    fids = {"classes:2": [30.0, 32.0, 31.0], "random:0.1": [25.0, 27.5, 26.0]}
    for forget_set in rates:
        for seed in range(3):
            metrics = _metrics(rates[forget_set][seed], fids[forget_set][seed], mia=0.5 + 0.01 * seed)
            cells.append(CellData(_cell("a", forget_set, seed), metrics, MANIFEST))
    result = aggregate(cells)
    (group,) = result.groups
    # FID over all 6 cells; the recognition rate over the 3 cells that have one
    fid = group.overall["fid"]
    assert fid is not None and fid.n == 6
    mean, low, high = _t(fids["classes:2"] + fids["random:0.1"])
    assert fid.high == pytest.approx(high, rel=1e-9)
    assert fid.mean == pytest.approx(mean, rel=1e-12) and fid.low == pytest.approx(low, rel=1e-9)
    rate = group.overall["recognition_rate"]
    assert rate is not None and rate.n == 3
    assert group.per_forget_set["random:0.1"]["recognition_rate"] is None
    # the plot point uses the cells with both numbers; the others are noted
    assert group.point is not None and group.point["n"] == 3
    assert group.point["y"].mean == pytest.approx(31.0, rel=1e-12)
    assert any("3 cell(s) without forgot. recog." in note for note in result.notes)
    # --x mia_auc: every cell has one
    by_mia = aggregate(cells, x_metric="mia_auc")
    assert by_mia.groups[0].point is not None and by_mia.groups[0].point["n"] == 6
    assert not by_mia.notes
    with pytest.raises(UsageError, match="--x"):
        aggregate(cells, x_metric="kept_rate")


def test_intervals_are_clipped_to_the_range_of_their_metric():
    """Rates near 0 over three seeds: the t interval reaches below 0, which a rate cannot; its low end is
    clipped to 0, its high end, mean and half-width are the t interval's own (the plot's error bars too)."""
    rates, fids = [0.0, 0.44, 0.13], [41.1, 31.4, 32.5]
    pairs = enumerate(zip(rates, fids, strict=True))
    cells = [CellData(_cell("a", "classes:2", seed), _metrics(r, f), MANIFEST) for seed, (r, f) in pairs]
    (group,) = aggregate(cells).groups
    rate = group.overall["recognition_rate"]
    mean, low, high = _t(rates)
    assert low < 0  # the case this test is about
    assert rate is not None and rate.low == 0.0 and rate.high == pytest.approx(high, rel=1e-9)
    assert rate.mean == pytest.approx(mean, rel=1e-12) and rate.half_width == pytest.approx(high - mean, rel=1e-9)
    assert group.per_forget_set["classes:2"]["recognition_rate"].low == 0.0
    assert group.point is not None and group.point["x"].low == 0.0
    # FID's interval stays above 0 here, so it is the t interval unchanged
    fid = group.overall["fid"]
    assert fid is not None and fid.low == pytest.approx(_t(fids)[1], rel=1e-9)


def test_format_cell():
    iv = t_interval([1.0, 2.0, 3.0])
    assert iv is not None and iv.half_width is not None
    assert format_cell(iv, "fid") == f"2.00 ± {iv.half_width:.2f} (3)"
    assert format_cell(t_interval([0.25]), "recognition_rate") == "0.250 (1)"
    assert format_cell(None, "fid") == "-"


def test_nothing_to_plot_says_so(tmp_path):
    cells = [CellData(_cell("a", "random:0.1", s), _metrics(None, 20.0 + s), MANIFEST) for s in range(2)]
    result = aggregate(cells)
    # the base has a recognition rate in these records: drop it to leave nothing with both numbers
    result.base = None
    with pytest.raises(UsageError, match="nothing to plot"):
        study_plot(result, tmp_path / "p.png")
    assert not (tmp_path / "p.png").exists()


# --- the front -----------------------------------------------------------------------------------------


def test_pareto_front_on_known_points():
    points = [(0.1, 30.0), (0.2, 20.0), (0.3, 25.0), (0.1, 35.0), (0.5, 10.0), (0.2, 20.0)]
    # (0.3, 25) is dominated by (0.2, 20); (0.1, 35) by (0.1, 30) (equal x, lower y); the two (0.2, 20) are
    # equal, so neither dominates the other
    assert pareto_front(points) == [0, 1, 4, 5]
    assert pareto_front([]) == []
    assert pareto_front([(1.0, 1.0)]) == [0]
    assert pareto_front([(0.0, 0.0), (1.0, 1.0), (0.0, 1.0), (1.0, 0.0)]) == [0]
    assert pareto_front([(i / 10, 1 - i / 10) for i in range(11)]) == list(range(11))  # all on a line


def test_front_is_by_group_means():
    cells = []
    for group, (rate, fid) in {"a": (0.5, 20.0), "b": (0.2, 25.0), "c": (0.6, 26.0)}.items():
        for seed in range(2):
            cells.append(CellData(_cell(group, "classes:2", seed), _metrics(rate + 0.01 * seed, fid), MANIFEST))
    result = aggregate(cells)
    assert result.front == ["a", "b"]  # c is worse than a on both
    assert math.isclose(result.groups[2].point["x"].mean, 0.605, rel_tol=1e-12)  # type: ignore[index]


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), max_size=12))
def test_pareto_front_property(points):
    """No front point is dominated by any point; every other point is dominated by some front point
    (small integer grids make ties and duplicates common)."""

    def dominates(a, b):
        return a[0] <= b[0] and a[1] <= b[1] and a != b

    front = pareto_front(points)
    assert front == sorted(set(front))
    for i in front:
        assert not any(dominates(p, points[i]) for p in points)
    for i in set(range(len(points))) - set(front):
        assert any(dominates(points[j], points[i]) for j in front)


def test_different_protocols_warn_and_a_missing_noise_floor_is_noted(study, tmp_path, cli):
    cells = []
    for seed in range(2):
        metrics = _metrics(0.1, 20.0 + seed)
        metrics["protocol"] = {"sampler": "ddim", "steps": 10 + seed, "samples_per_class": 8}
        cells.append(CellData(_cell("a", "classes:2", seed), metrics, MANIFEST))
    assert any("different protocols" in w for w in aggregate(cells).warnings)
    assert not aggregate(cells[:1]).warnings

    root, _numbers = study
    copy = tmp_path / "study"
    shutil.copytree(root, copy)
    index = json.loads((copy / "study.json").read_text())
    index["noise_floor"] = "gone.json"
    (copy / "study.json").write_text(json.dumps(index))
    data = json.loads(cli("compare", copy, "--json", "--no-plot").stdout)
    assert data["noise_floor"] is None
    assert all(g["fid_vs_base"] is None for g in data["groups"])
    assert any("gone.json" in note for note in data["notes"])
