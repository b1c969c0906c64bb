"""Confidence intervals for a mean (unlearnctl.commands.intervals): known inputs, edge cases, a property."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unlearnctl.commands.intervals import bootstrap_interval, clip, interval, t_interval
from unlearnctl.errors import UsageError

#: t_{0.975, 4}, the textbook two-sided 95% quantile of Student t with 4 degrees of freedom
T_975_4 = 2.7764451051977987


def test_t_interval_of_one_to_five_is_the_textbook_one():
    iv = t_interval([1, 2, 3, 4, 5])
    assert iv is not None and iv.method == "t" and iv.n == 5 and iv.level == 0.95
    expected_half = T_975_4 * math.sqrt(2.5) / math.sqrt(5)
    # The mean and std of small integers are exact in float64 (sum 15, squares of deviations 10; sqrt is
    # correctly rounded). scipy's t.ppf inverts the incomplete beta function numerically: accurate to a few
    # units in the last place, so 1e-12 relative (thousands of ulps) is ample and still catches a wrong
    # degree of freedom (t_{0.975,5} = 2.57) or a one-sided quantile (t_{0.95,4} = 2.13).
    assert iv.mean == 3.0
    assert iv.std == math.sqrt(2.5)
    assert iv.half_width == pytest.approx(expected_half, rel=1e-12)
    assert iv.low == pytest.approx(3.0 - expected_half, rel=1e-12)
    assert iv.high == pytest.approx(3.0 + expected_half, rel=1e-12)


def test_t_interval_agrees_with_scipy_interval_on_other_levels():
    from scipy import stats

    values = [0.31, 0.27, 0.45, 0.12, 0.38, 0.29, 0.33]
    for level in (0.8, 0.9, 0.99):
        iv = t_interval(values, level)
        assert iv is not None
        low, high = stats.t.interval(
            level, len(values) - 1, loc=statistics.mean(values), scale=statistics.stdev(values) / math.sqrt(7)
        )
        # two implementations of the same float64 formula: differences of a few ulps of values near 0.3
        assert iv.low == pytest.approx(low, rel=1e-12) and iv.high == pytest.approx(high, rel=1e-12)
    wider = [t_interval(values, lv).half_width for lv in (0.8, 0.9, 0.99)]  # type: ignore[union-attr]
    assert wider == sorted(wider) and wider[0] < wider[-1]


@pytest.mark.parametrize("make", [t_interval, bootstrap_interval])
def test_constant_values_give_a_zero_width_interval(make):
    iv = make([0.1] * 5)  # mean([0.1] * 5) is not exactly 0.1 in float64: the width must be exactly 0 anyway
    assert iv is not None and iv.n == 5
    assert iv.mean == 0.1 and iv.low == 0.1 and iv.high == 0.1 and iv.half_width == 0.0 and iv.std == 0.0


@pytest.mark.parametrize("make", [t_interval, bootstrap_interval])
def test_one_value_has_a_mean_but_no_interval_and_none_has_nothing(make):
    iv = make([4.5])
    assert iv is not None and iv.mean == 4.5 and iv.n == 1
    assert iv.low is None and iv.high is None and iv.half_width is None and iv.std is None
    assert make([]) is None


@pytest.mark.parametrize("bad", [0.0, 1.0, 1.5, -0.2])
def test_a_level_outside_zero_one_is_refused(bad):
    with pytest.raises(UsageError, match="between 0 and 1"):
        t_interval([1, 2, 3], bad)
    with pytest.raises(UsageError, match="between 0 and 1"):
        bootstrap_interval([1, 2, 3], bad)


def test_nan_is_refused():
    with pytest.raises(UsageError, match="NaN"):
        t_interval([1.0, float("nan")])


def test_bootstrap_is_deterministic_per_seed_and_contains_the_mean():
    values = [12.1, 15.3, 11.8, 19.4, 14.2, 13.0, 16.7, 12.9]
    a = bootstrap_interval(values, seed=3)
    b = bootstrap_interval(values, seed=3)
    c = bootstrap_interval(values, seed=4)
    assert a == b
    assert a != c  # another seed draws other resamples (the quantiles move)
    assert a is not None and a.method == "bootstrap" and a.n == 8
    assert a.low is not None and a.high is not None and a.half_width is not None
    assert a.low < a.mean < a.high
    assert a.mean == pytest.approx(statistics.mean(values), rel=1e-15)
    assert a.std == pytest.approx(statistics.stdev(values), rel=1e-12)
    assert a.half_width == pytest.approx((a.high - a.low) / 2, rel=1e-15)
    # resample means lie between the smallest and the largest value
    assert min(values) <= a.low and a.high <= max(values)


def test_bootstrap_of_two_values_spans_them():
    # resample means of [0, 1] are 0, 0.5 or 1 with probabilities 1/4, 1/2, 1/4: with 10000 resamples about
    # 2500 are 0 and 2500 are 1, far more than the 250 below the 2.5% and above the 97.5% quantile
    iv = bootstrap_interval([0.0, 1.0])
    assert iv is not None and iv.low == 0.0 and iv.high == 1.0 and iv.mean == 0.5


def test_bootstrap_and_t_roughly_agree_on_many_normal_values():
    values = np.random.default_rng(1).normal(10.0, 2.0, size=200)
    t = t_interval(values)
    boot = bootstrap_interval(values)
    assert t is not None and boot is not None and t.half_width is not None and boot.half_width is not None
    # for n = 200 both are close to 1.96 * s / sqrt(n); the bootstrap's Monte Carlo and small-sample bias
    # (s/sqrt(n) vs the plug-in sqrt((n-1)/n) s/sqrt(n)) stay within a few percent
    assert boot.half_width == pytest.approx(t.half_width, rel=0.1)


def test_t_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(7)
    trials = 1000
    hits = 0
    for _ in range(trials):
        iv = t_interval(rng.normal(5.0, 3.0, size=4))
        assert iv is not None and iv.low is not None and iv.high is not None
        hits += iv.low <= 5.0 <= iv.high
    # binomial(1000, 0.95): std 6.9 hits; 4 std either side
    assert 922 <= hits <= 978


def test_interval_dispatches_by_name():
    assert interval([1, 2, 3], "t") == t_interval([1, 2, 3])
    assert interval([1, 2, 3], "bootstrap", seed=2) == bootstrap_interval([1, 2, 3], seed=2)
    with pytest.raises(UsageError, match="unknown interval"):
        interval([1, 2, 3], "z")  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(-1000, 1000), min_size=2, max_size=20),
    st.floats(min_value=1e-3, max_value=1e3, allow_nan=False).flatmap(lambda c: st.sampled_from([c, -c])),
)
def test_t_half_width_scales_with_the_values(values, c):
    base = t_interval([float(v) for v in values])
    scaled = t_interval([float(v) * c for v in values])
    assert base is not None and scaled is not None
    assert base.half_width is not None and scaled.half_width is not None
    if base.half_width == 0.0:  # all values equal: still all equal after scaling
        assert scaled.half_width == 0.0
        return
    # Integers up to 1000 not all equal have a std of at least ~0.2 (n <= 20); multiplying by c rounds each
    # value by at most |v c| * 2**-53 <= 1000 |c| * 1.1e-16, so the scaled std is |c| * std within a relative
    # ~1e-12; 1e-9 leaves room and still catches any other scaling (c**2, sqrt(c), a missing abs).
    assert scaled.half_width == pytest.approx(abs(c) * base.half_width, rel=1e-9)
    assert scaled.mean == pytest.approx(c * base.mean, rel=1e-9, abs=1e-9 * abs(c) * 1000)


def test_clip_moves_only_the_ends_past_the_range():
    iv = t_interval([0.0, 0.1, 0.0])
    assert iv is not None and iv.low is not None and iv.low < 0
    clipped = clip(iv, 0.0, 1.0)
    assert clipped is not None
    assert (clipped.low, clipped.high) == (0.0, iv.high)  # the high end is inside [0, 1]: untouched
    assert (clipped.mean, clipped.std, clipped.half_width, clipped.n) == (iv.mean, iv.std, iv.half_width, iv.n)
    assert clip(iv) == iv  # no range: unchanged
    one = t_interval([0.5])
    assert clip(one, 0.0, 1.0) == one and clip(None, 0.0, 1.0) is None  # nothing to clip
