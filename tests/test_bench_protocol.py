"""``bench/protocol.py``: the digits protocol's selection rule and EraseDiff's goal table, on known inputs (the
shape ``unlearnctl compare STUDY --json`` writes). The numbers the docs report go through these two functions."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def protocol() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_protocol", ROOT / "bench" / "protocol.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _iv(mean: float, n: int = 1) -> dict[str, Any]:
    return {"mean": mean, "low": mean, "high": mean, "n": n}


def _metrics(rate: float, kept: float, fid: float, n: int = 1) -> dict[str, Any]:
    return {"recognition_rate": _iv(rate, n), "kept_rate": _iv(kept, n), "fid": _iv(fid, n)}


def _group(label: str, per_forget_set: dict[str, dict[str, Any]], role: str = "method") -> dict[str, Any]:
    return {"label": label, "role": role, "options": {}, "per_forget_set": per_forget_set, "overall": {}}


def test_choose_takes_the_lowest_fid_among_settings_that_forget(protocol: ModuleType) -> None:
    groups = [
        {"label": "m", "options": {"a": 1}, "overall": _metrics(0.0, 1.0, 40.0)},
        {"label": "m", "options": {"a": 2}, "overall": _metrics(0.01, 1.0, 35.0)},  # 1% is within the bar
        {"label": "m", "options": {"a": 3}, "overall": _metrics(0.0, 0.97, 30.0)},  # kept classes drop 3 points
        {"label": "m", "options": {"a": 4}, "overall": _metrics(0.02, 1.0, 20.0)},  # one sample too many
    ]
    chosen, met = protocol.choose(groups, base_kept=1.0)
    assert met and chosen["options"] == {"a": 2}


def test_choose_falls_back_to_the_lowest_recognition_then_fid(protocol: ModuleType) -> None:
    groups = [
        {"label": "m", "options": {"a": 1}, "overall": _metrics(0.04, 1.0, 30.0)},
        {"label": "m", "options": {"a": 2}, "overall": _metrics(0.02, 1.0, 39.0)},
        {"label": "m", "options": {"a": 3}, "overall": _metrics(0.02, 1.0, 38.0)},
    ]
    chosen, met = protocol.choose(groups, base_kept=1.0)
    assert not met and chosen["options"] == {"a": 3}


def test_goal_table_checks_every_forget_set_and_names_the_worst_class(protocol: ModuleType, tmp_path: Path) -> None:
    data = {
        "base": {
            "per_forget_set": {
                "classes:2": _metrics(1.0, 1.0, 30.0),
                "classes:8": _metrics(1.0, 1.0, 30.0),
                "classes:0": _metrics(1.0, 1.0, 30.0),
                "classes:1,7": _metrics(1.0, 1.0, 30.0),
            }
        },
        "groups": [
            _group("erasediff", {
                "classes:2": _metrics(0.0, 1.0, 32.9, n=3),   # FID 9.7% above the base: meets the goal
                "classes:8": _metrics(0.0, 0.975, 31.0, n=3),  # kept classes 2.5 points down
                "classes:1,7": _metrics(0.5, 1.0, 30.0, n=3),  # not a single class: listed, not counted
            }),
            _group("erasediff (every class)", {"classes:0": _metrics(0.02, 1.0, 36.0)}),
            _group("salun", {"classes:2": _metrics(0.5, 1.0, 90.0)}),  # another method: not in the table
            _group("retrain", {"classes:8": _metrics(0.16, 1.0, 25.0)}, role="retrain"),
        ],
        "missing": [
            {"id": "x", "status": "pending"},
            {"id": "y", "label": "selective-amnesia", "forget_label": "random:0.1", "seed": 1, "status": "failed"},
        ],
    }  # fmt: skip
    text, missed = protocol.goal_table(data)
    rows = [line for line in text.splitlines() if line.startswith("| classes:")]
    # single classes first, ordered by recognition then FID / base (the worst last), then the multi-class set
    assert [r.split(" | ")[0] for r in rows] == ["| classes:8", "| classes:2", "| classes:0", "| classes:1,7"]
    assert "| 0.000 (0.160) | 0.975 (1.000) |" in rows[0] and rows[0].endswith("| 1.03 | yes | **no** | yes |")
    assert rows[1].endswith("| 1.10 | yes | yes | yes |")
    assert "| 0.020 (-) |" in rows[2] and rows[2].endswith("| 1.20 | **no** | yes | **no** |")
    assert "| salun" not in text and "90.00" not in text
    assert missed == 2
    assert "Worst class: classes:0 (recognised 0.020, FID / base 1.20). Classes missing the goal: 2 of 3." in text
    # a pending cell makes the table provisional; a failed one is final, so it is named instead of counted
    assert "Provisional: 1 cells of the study are not done." in text
    assert "Failed for good, left out (1): selective-amnesia on random:0.1 (seed 1)." in text
    finished = {**data, "missing": data["missing"][1:]}
    text, _ = protocol.goal_table(finished)
    assert "Provisional" not in text and "Failed for good, left out (1)" in text
    plot = tmp_path / "goal.png"
    protocol.goal_plot(protocol.goal_rows(data), plot)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_goal_table_without_erasediff_cells_says_so(protocol: ModuleType) -> None:
    data = {"base": {"per_forget_set": {}}, "groups": [_group("salun", {"classes:2": _metrics(0.0, 1.0, 30.0)})]}
    with pytest.raises(SystemExit, match="no done cell labelled erasediff"):
        protocol.goal_table(data)


def _study_group(label: str, rate: tuple[float, float, float], fid: tuple[float, float, float], role: str = "method"):
    def iv(v: tuple[float, float, float]) -> dict[str, Any]:
        return {"mean": v[0], "low": v[1], "high": v[2], "n": 3}

    return {"key": label, "label": label, "role": role, "overall": {"recognition_rate": iv(rate), "fid": iv(fid)}}


def test_front_rows_name_what_dominates_erasediff_and_whether_beyond_the_noise(protocol: ModuleType) -> None:
    erasediff = _study_group("erasediff", (0.0, 0.0, 0.0), (36.0, 30.0, 42.0))
    by_forget_set = {
        # selective-amnesia dominates by the means (6 FID points better) but the FID intervals overlap: not beyond
        "classes:2": {
            "groups": [
                erasediff,
                _study_group("selective-amnesia", (0.0, 0.0, 0.0), (30.0, 27.0, 33.0)),
                _study_group("neggrad", (0.05, 0.0, 0.3), (33.0, 20.0, 46.0)),  # forgets less: not dominating
                _study_group("retrain", (0.0, 0.0, 0.0), (25.0, 25.0, 25.0), role="retrain"),  # the gold standard
            ],
            "front": ["retrain"],
            "noise_floor": {"threshold": 5.5},
        },
        # neggrad's recognition interval lies below EraseDiff's: dominated beyond the noise
        "classes:8": {
            "groups": [
                {**erasediff, "overall": {**erasediff["overall"], "recognition_rate": {"mean": 0.5, "low": 0.3,
                                                                                       "high": 0.7, "n": 3}}},
                _study_group("neggrad", (0.0, 0.0, 0.0), (30.0, 25.0, 35.0)),
                _study_group("finetune", (1.0, 1.0, 1.0), (29.0, 28.0, 30.0)),
            ],
            "front": ["neggrad", "finetune"],
            "noise_floor": {"threshold": 5.5},
        },
        # EraseDiff alone at its point: on the front
        "classes:1,7": {"groups": [erasediff, _study_group("finetune", (1.0, 1.0, 1.0), (29.0, 28.0, 30.0))],
                        "front": ["erasediff", "finetune"], "noise_floor": None},
    }  # fmt: skip
    rows = {r["forget_set"]: r for r in protocol.front_rows(by_forget_set)}
    assert [label for label, _p in rows["classes:2"]["dominated_by"]] == ["selective-amnesia"]
    assert rows["classes:2"]["beyond_noise"] == [] and rows["classes:2"]["front"] == ["retrain"]
    assert [label for label, _p in rows["classes:8"]["dominated_by"]] == ["neggrad"]
    assert rows["classes:8"]["beyond_noise"] == ["neggrad"]
    assert rows["classes:1,7"]["dominated_by"] == [] and rows["classes:1,7"]["front"] == ["erasediff", "finetune"]
    text = protocol.front_table(by_forget_set)
    assert "| classes:2 | retrain | 0% / 36.00 | selective-amnesia (0% / 30.00) | no |" in text
    assert "| classes:8 | neggrad, finetune | 50% / 36.00 | neggrad (0% / 30.00) | neggrad |" in text
    assert "| classes:1,7 | erasediff, finetune | 0% / 36.00 | - (on the front) | - |" in text
