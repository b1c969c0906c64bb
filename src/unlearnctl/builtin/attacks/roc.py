"""ROC figures of a membership-inference score, exact, with percentile-bootstrap confidence intervals.

Convention: a higher score means "more likely a member"; a threshold ``tau`` flags every image whose score
is ``>= tau`` as a member. The ROC curve is the set of points ``(FPR(tau), TPR(tau))`` over every
threshold: each distinct score, plus one above every score (nothing flagged: the point ``(0, 0)``).
Nothing is interpolated between those points.

The reporting follows Carlini et al. 2022, "Membership Inference Attacks From First Principles" (IEEE S&P):
an attack is judged by its true-positive rate at a low false-positive rate, next to the AUC and the
balanced accuracy that earlier work reports (e.g. Duan et al. 2023, "Are Diffusion Models Vulnerable to
Membership Inference Attacks?", ICML, reports AUC, ASR = best balanced accuracy and TPR at 1% FPR).

Every figure is computed from the counts of members and non-members at each distinct score, in float64,
in ``O(n log n)`` (a sort); the bootstrap reuses the same counts, resample by resample, in one vectorised
pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

#: the false-positive rates of the ``tpr_at_fpr_<fpr>`` figures unless told otherwise
DEFAULT_FPRS: tuple[float, ...] = (0.01, 0.001)

#: ``bootstrap resamples x distinct scores`` entries of a count matrix processed at once (bounds the memory)
_CHUNK_ENTRIES = 4_000_000


def tpr_key(fpr: float) -> str:
    """The key of the TPR at false-positive rate ``fpr`` in :func:`roc_metrics`: ``tpr_at_fpr_0.01``."""
    return f"tpr_at_fpr_{fpr:g}"


def roc_metrics(
    member_scores: torch.Tensor, nonmember_scores: torch.Tensor, *, fprs: Sequence[float] = DEFAULT_FPRS
) -> dict[str, float]:
    """AUC, best balanced accuracy and the TPR at each false-positive rate in ``fprs``, exact.

    - ``auc``: the Mann-Whitney probability that a random member scores above a random non-member, ties
      counting one half (the area under the step ROC curve; 0.5 = chance, 1 = perfect separation).
    - ``balanced_accuracy``: the best ``(TPR + TNR) / 2`` over all thresholds (0.5 at worst: flagging
      nothing is a threshold; an attack whose members score *lower* gets 0.5, not its mirror image).
    - ``tpr_at_fpr_<fpr>`` (key from :func:`tpr_key`) for each ``fpr``: the largest TPR among the
      thresholds whose FPR is ``<= fpr`` (0 when only flagging nothing qualifies). With ``n`` non-members
      the FPR moves in steps of ``1/n``: it can be at most ``fpr`` only with ``floor(fpr * n)`` false
      positives, so with fewer than ``1/fpr`` non-members (fewer than 1000 for ``fpr = 0.001``) this is the
      TPR at FPR **0**: the members scoring above every non-member.

    Scores: 1-D tensors (any float dtype, any device; read as float64 on the CPU), at least one of each,
    no NaN. Returns plain floats.
    """
    members, nonmembers = _as_scores(member_scores, "member_scores"), _as_scores(nonmember_scores, "nonmember_scores")
    fprs = _check_fprs(fprs)
    k, rank_m, rank_n = _ranks(members, nonmembers)
    values = _from_counts(_count(rank_m[None], k), _count(rank_n[None], k), len(members), len(nonmembers), fprs)
    return {key: float(value[0]) for key, value in values.items()}


def membership_summary(
    member_scores: torch.Tensor,
    nonmember_scores: torch.Tensor,
    *,
    fprs: Sequence[float] = DEFAULT_FPRS,
    bootstrap: int = 1000,
    level: float = 0.95,
    generator: torch.Generator,
) -> dict[str, Any]:
    """:func:`roc_metrics` with a percentile-bootstrap confidence interval for each figure.

    Each of the ``bootstrap`` resamples draws ``n_members`` member scores and ``n_nonmembers`` non-member
    scores with replacement, independently (a stratified bootstrap: both sample sizes stay fixed), from
    ``generator`` (a CPU generator: all member indices of all resamples first, then all non-member ones),
    and computes every figure on them. The interval of a figure is the ``(1 - level) / 2`` and
    ``(1 + level) / 2`` quantiles of its ``bootstrap`` values (linear interpolation between order
    statistics, as ``numpy.quantile``), the percentile bootstrap of Efron & Tibshirani 1993, "An
    Introduction to the Bootstrap", ch. 13.

    The percentile interval can miss the point estimate where the figure is biased under resampling: the
    TPR at a false-positive rate below ``1/n_nonmembers`` depends on the single highest non-member score,
    which a resample leaves out about a third of the time (``(1 - 1/n)^n``), so its resampled values lean
    higher. Read such an interval as "how much the figure moves", not as a coverage guarantee.

    Returns ``{"auc": 0.61, "auc_ci": [0.55, 0.67], "balanced_accuracy": ..., "balanced_accuracy_ci": [...],
    "tpr_at_fpr_0.01": ..., "tpr_at_fpr_0.01_ci": [...], ..., "members": 300, "nonmembers": 300,
    "bootstrap": 1000, "level": 0.95}``; ``bootstrap = 0`` gives every ``*_ci`` as None.
    """
    import torch

    if bootstrap < 0:
        raise ValueError(f"bootstrap must be >= 0, got {bootstrap}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    members, nonmembers = _as_scores(member_scores, "member_scores"), _as_scores(nonmember_scores, "nonmember_scores")
    fprs = _check_fprs(fprs)
    n_m, n_n = len(members), len(nonmembers)
    k, rank_m, rank_n = _ranks(members, nonmembers)
    m_counts, n_counts = _count(rank_m[None], k), _count(rank_n[None], k)
    point = {key: float(v[0]) for key, v in _from_counts(m_counts, n_counts, n_m, n_n, fprs).items()}
    out: dict[str, Any] = {}
    if bootstrap == 0:
        for key, value in point.items():
            out[key], out[f"{key}_ci"] = value, None
    else:
        # 1. the resamples: indices into the members, then into the non-members, all drawn up front so that
        #    the draws do not depend on how the work is chunked below
        idx_m = torch.randint(0, n_m, (bootstrap, n_m), generator=generator)
        idx_n = torch.randint(0, n_n, (bootstrap, n_n), generator=generator)
        # 2. a resample is two rows of counts over the distinct pooled scores, chunks of resamples at a time
        rows = max(1, _CHUNK_ENTRIES // k)
        values: dict[str, list[torch.Tensor]] = {key: [] for key in point}
        for start in range(0, bootstrap, rows):
            counts_m = _count(rank_m[idx_m[start : start + rows]], k)
            counts_n = _count(rank_n[idx_n[start : start + rows]], k)
            for key, resampled in _from_counts(counts_m, counts_n, n_m, n_n, fprs).items():
                values[key].append(resampled)
        # 3. the percentile interval of each figure
        q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
        for key, value in point.items():
            lo, hi = torch.quantile(torch.cat(values[key]), q).tolist()
            out[key], out[f"{key}_ci"] = value, [lo, hi]
    out.update({"members": n_m, "nonmembers": n_n, "bootstrap": bootstrap, "level": level})
    return out


def _as_scores(scores: torch.Tensor, name: str) -> torch.Tensor:
    """A 1-D float64 CPU copy of ``scores``; refuse an empty set or a NaN."""
    import torch

    s = scores.detach().to("cpu", torch.float64).flatten()
    if len(s) == 0:
        raise ValueError(f"{name} is empty: a ROC needs at least one member and one non-member score")
    if bool(torch.isnan(s).any()):
        raise ValueError(f"{name} holds NaN scores")
    return s


def _check_fprs(fprs: Sequence[float]) -> tuple[float, ...]:
    out = tuple(float(f) for f in fprs)
    for f in out:
        if not 0 <= f < 1:
            raise ValueError(f"a false-positive rate must be in [0, 1), got {f}")
    return out


def _ranks(members: torch.Tensor, nonmembers: torch.Tensor) -> tuple[int, torch.Tensor, torch.Tensor]:
    """The number ``K`` of distinct pooled scores, and the index (``0 .. K-1``, ascending) of each member's and
    each non-member's score among them (one sort)."""
    import torch

    distinct, inverse = torch.unique(torch.cat([members, nonmembers]), sorted=True, return_inverse=True)
    return len(distinct), inverse[: len(members)], inverse[len(members) :]


def _count(ranks: torch.Tensor, k: int) -> torch.Tensor:
    """``B x K`` float64 counts: how many entries of each row of ``ranks`` (``B x n``) fall on each distinct score."""
    import torch

    counts = torch.zeros(len(ranks), k, dtype=torch.float64)
    return counts.scatter_add_(1, ranks, torch.ones(ranks.shape, dtype=torch.float64))


def _from_counts(
    m_counts: torch.Tensor, n_counts: torch.Tensor, n_m: int, n_n: int, fprs: tuple[float, ...]
) -> dict[str, torch.Tensor]:
    """Every figure of :func:`roc_metrics` for each row of counts (``B x K``, ascending scores): ``B`` values each.

    Numerators are integers (exact in float64 below 2^53); each figure is one division.
    """
    import torch

    # 1. AUC (Mann-Whitney U / (n_m n_n)): a member at score v beats the non-members below v, ties with
    #    those at v (half): 2U = sum_v m(v) (2 below(v) + n(v))
    below = n_counts.cumsum(1) - n_counts
    auc = (m_counts * (2 * below + n_counts)).sum(1) / (2 * n_m * n_n)
    # 2. the threshold at each distinct score v flags the scores >= v: TP(v), FP(v) are tail sums
    tp = m_counts.flip(1).cumsum(1).flip(1)
    fp = n_counts.flip(1).cumsum(1).flip(1)
    # 3. balanced accuracy (TPR + 1 - FPR) / 2 = (TP n_n + (n_n - FP) n_m) / (2 n_m n_n); flagging nothing: 1/2
    balanced = ((tp * n_n + (n_n - fp) * n_m) / (2 * n_m * n_n)).amax(1).clamp_min(0.5)
    out = {"auc": auc, "balanced_accuracy": balanced}
    # 4. TPR at FPR <= f: at most floor(f n_n) false positives (the 1e-9 absorbs the rounding of f n_n,
    #    e.g. 0.29 * 100 = 28.999999999999996); flagging nothing (TPR 0) always qualifies
    for f in fprs:
        allowed = math.floor(f * n_n + 1e-9)
        tpr = torch.where(fp <= allowed, tp, torch.zeros_like(tp)).amax(1) / n_m
        out[tpr_key(f)] = tpr
    return out
