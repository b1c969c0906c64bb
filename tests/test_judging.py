"""The judging helper: recognition rates of samples conditioned on each class."""

from __future__ import annotations

import pytest

from unlearnctl.judging import class_fractions, recognition_rates, summarize
from unlearnctl.sampling import SampleOptions
from unlearnctl.testing.tiny import tiny_judge, tiny_model

FAST = SampleOptions(steps=3)


def test_recognition_rates_shape_and_determinism() -> None:
    model, judge = tiny_model(), tiny_judge(epochs=0)
    out = recognition_rates(model, judge, [0, 2], n_per_class=6, seed=1, sampler=FAST)
    assert set(out["rates"]) == set(out["mean_p"]) == set(out["predicted"]) == {0, 2}
    for c in (0, 2):
        assert sum(out["predicted"][c]) == 6
        assert out["rates"][c] == out["predicted"][c][c] / 6
        assert 0.0 <= out["mean_p"][c] <= 1.0
    assert out["n_per_class"] == 6 and out["sampler"]["steps"] == 3
    assert recognition_rates(model, judge, [0, 2], n_per_class=6, seed=1, sampler=FAST) == out


def test_unconditional_models_get_class_fractions() -> None:
    model, judge = tiny_model(conditional=False), tiny_judge(epochs=0)
    with pytest.raises(ValueError, match="class_fractions"):
        recognition_rates(model, judge, n_per_class=2, sampler=FAST)
    fractions = class_fractions(model, judge, n=8, sampler=FAST)
    assert len(fractions) == 3 and sum(fractions) == pytest.approx(1.0)


def test_summarize() -> None:
    rates = {0: 1.0, 1: 0.02, 2: 0.9, 3: 0.8}
    assert summarize(rates, [1]) == {"forgotten": 0.02, "kept": pytest.approx(0.9)}
    assert summarize(rates, [1, 3]) == {"forgotten": pytest.approx(0.41), "kept": pytest.approx(0.95)}
