"""Confidence intervals for a mean: Student t and the percentile bootstrap.

``unlearnctl compare STUDY`` (:mod:`unlearnctl.commands.study_compare`) summarises each group of a study
(the cells of one method and option setting, over forget sets and seeds) by the mean of each metric and an
interval around it. Pure numpy (plus scipy's t quantile): no torch, so it stays cheap to import and test.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np

from ..errors import UsageError

IntervalMethod = Literal["t", "bootstrap"]
#: the interval methods, as ``--interval`` names them
INTERVAL_METHODS: tuple[IntervalMethod, ...] = ("t", "bootstrap")


@dataclass(frozen=True)
class Interval:
    """The mean of ``n`` values and an interval at confidence ``level`` around it.

    ``low``/``high``/``half_width`` are None when ``n == 1`` (one value gives no spread); ``std`` (sample
    standard deviation, ddof=1) is None then too. For the bootstrap, ``half_width`` is ``(high - low) / 2``
    (its interval need not be symmetric about the mean).
    """

    mean: float
    low: float | None
    high: float | None
    n: int
    std: float | None
    half_width: float | None
    method: IntervalMethod
    level: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_level(level: float) -> float:
    """``level`` as a float strictly between 0 and 1, else a :class:`UsageError` saying so."""
    if not isinstance(level, int | float) or isinstance(level, bool) or not 0.0 < float(level) < 1.0:
        raise UsageError(f"the confidence level must be between 0 and 1 (e.g. 0.95), got {level!r}")
    return float(level)


def _values(values: Iterable[float]) -> np.ndarray:
    arr = np.asarray([float(v) for v in values], dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise UsageError("an interval needs finite numbers: the values contain NaN or infinity")
    return arr


def _mean_std(arr: np.ndarray) -> tuple[float, float | None]:
    """Mean and sample std (ddof=1, None for one value); exactly ``(c, 0.0)`` for values all equal to ``c``
    (numpy's summation would otherwise leave rounding noise, e.g. mean([0.1] * 5) != 0.1)."""
    if np.all(arr == arr[0]):
        return float(arr[0]), (0.0 if arr.size > 1 else None)
    return float(arr.mean()), (float(arr.std(ddof=1)) if arr.size > 1 else None)


def t_quantile(probability: float, dof: int) -> float:
    """The Student t quantile with ``dof`` degrees of freedom.

    scipy is not a declared dependency of unlearnctl, but scikit-learn (declared) requires it, so it is always
    installed: this uses ``scipy.stats.t.ppf`` rather than a hand-written inverse of the t distribution.
    """
    from scipy.stats import t as student_t

    return float(student_t.ppf(probability, dof))


def t_interval(values: Iterable[float], level: float = 0.95) -> Interval | None:
    """Student t interval for the mean: ``mean ± t_{(1+level)/2, n-1} * std / sqrt(n)``.

    None for no values; for one value, the mean without an interval (an interval needs two).
    """
    level = check_level(level)
    arr = _values(values)
    if arr.size == 0:
        return None
    mean, std = _mean_std(arr)
    if std is None:
        return Interval(mean, None, None, 1, None, None, "t", level)
    half = 0.0 if std == 0.0 else t_quantile(0.5 + level / 2, arr.size - 1) * std / math.sqrt(arr.size)
    return Interval(mean, mean - half, mean + half, int(arr.size), std, half, "t", level)


def bootstrap_interval(
    values: Iterable[float], level: float = 0.95, resamples: int = 10000, seed: int = 0
) -> Interval | None:
    """Percentile bootstrap interval for the mean: the ``(1-level)/2`` and ``(1+level)/2`` quantiles of the
    means of ``resamples`` resamples (with replacement, of the same size) drawn by ``numpy.random.default_rng(seed)``
    -- the same values and seed give the same interval.

    None for no values; for one value, the mean without an interval.
    """
    level = check_level(level)
    if resamples < 1:
        raise UsageError(f"the bootstrap needs at least one resample, got {resamples}")
    arr = _values(values)
    if arr.size == 0:
        return None
    mean, std = _mean_std(arr)
    if std is None:
        return Interval(mean, None, None, 1, None, None, "bootstrap", level)
    if std == 0.0:
        return Interval(mean, mean, mean, int(arr.size), 0.0, 0.0, "bootstrap", level)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, arr.size, size=(resamples, arr.size))
    means = arr[idx].mean(axis=1)
    low, high = (float(q) for q in np.quantile(means, [(1 - level) / 2, (1 + level) / 2]))
    return Interval(mean, low, high, int(arr.size), std, (high - low) / 2, "bootstrap", level)


def clip(iv: Interval | None, low: float | None = None, high: float | None = None) -> Interval | None:
    """``iv`` with its ends clipped to the range a metric can take (a rate to [0, 1], an FID to >= 0): a t
    interval is symmetric about the mean and, for values near a bound, reaches past it. ``mean``, ``std`` and
    ``half_width`` (the interval's own spread) are unchanged."""
    if iv is None or iv.low is None or iv.high is None:
        return iv
    lo = iv.low if low is None else max(iv.low, low)
    hi = iv.high if high is None else min(iv.high, high)
    return replace(iv, low=lo, high=hi)


def interval(
    values: Iterable[float], method: IntervalMethod = "t", level: float = 0.95, seed: int = 0
) -> Interval | None:
    """:func:`t_interval` or :func:`bootstrap_interval` by name (``--interval``)."""
    if method == "t":
        return t_interval(values, level)
    if method == "bootstrap":
        return bootstrap_interval(values, level, seed=seed)
    raise UsageError(f"unknown interval method {method!r}: choose one of {', '.join(INTERVAL_METHODS)}")
