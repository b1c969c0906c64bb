"""The judging helper: recognition rates of samples conditioned on each class."""

from __future__ import annotations

import pytest

from unlearnctl.judge.verdicts import class_fractions, recognition_rates, summarize
from unlearnctl.sampling import SampleOptions
from unlearnctl.testing.tiny import tiny_judge, tiny_model

FAST = SampleOptions(steps=3)


def test_recognition_rates_shape_and_determinism() -> None:
    model, judge = tiny_model(), tiny_judge(epochs=0)
    out = recognition_rates(model, judge, [0, 2], n_per_class=6, seed=1, sampler=FAST)
    assert set(out["rates"]) == set(out["mean_p"]) == set(out["predicted"]) == {0, 2}
    for c in (0, 2):
        assert sum(out["predicted"][c]) == 6
        # a float32 mean of six 0/1 values: an exact integer sum, then at most two roundings (/ 6, or * 1/6):
        # within 2^-23 (relative) of k / 6 in float64 -- equal only for k = 0, 3, 6
        assert out["rates"][c] == pytest.approx(out["predicted"][c][c] / 6, rel=2**-23, abs=0)
        assert 0.0 <= out["mean_p"][c] <= 1.0
    assert out["n_per_class"] == 6 and out["sampler"]["steps"] == 3
    assert recognition_rates(model, judge, [0, 2], n_per_class=6, seed=1, sampler=FAST) == out


def test_unconditional_models_get_class_fractions() -> None:
    model, judge = tiny_model(conditional=False), tiny_judge(epochs=0)
    with pytest.raises(ValueError, match="class_fractions"):
        recognition_rates(model, judge, n_per_class=2, sampler=FAST)
    fractions = class_fractions(model, judge, n=8, sampler=FAST)
    # exact: n = 8, so every share k / 8 is exact in float32 and they sum to exactly 1
    assert len(fractions) == 3 and sum(fractions) == 1.0


def test_summarize() -> None:
    # float64 means of decimals that binary cannot hold exactly (0.9, 0.95, 0.41): a few roundings of 2^-53,
    # so within 1e-15 of the decimal; pytest.approx (relative 1e-6) is far above that
    rates = {0: 1.0, 1: 0.02, 2: 0.9, 3: 0.8}
    assert summarize(rates, [1]) == {"forgotten": 0.02, "kept": pytest.approx(0.9)}
    assert summarize(rates, [1, 3]) == {"forgotten": pytest.approx(0.41), "kept": pytest.approx(0.95)}
