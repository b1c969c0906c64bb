"""Pieces the built-in metrics share: the feature extractor of their FIDs and the judge's reading of
unconditional samples, each built once per ``eval`` and kept in ``ctx.cache``.

``fidelity`` (:mod:`unlearnctl.builtin.metrics`) and ``retrain-distance`` (:mod:`unlearnctl.builtin.gold_metric`)
compute FID on the same features, chosen by the same options (:class:`ExtractorOptions`): with the same
settings they share one extractor object (:func:`cached_extractor`). A module of its own, so that both metric
modules import it and not each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from unlearnctl import Options

if TYPE_CHECKING:
    import torch

    from unlearnctl import FeatureExtractor


class ExtractorOptions(Options):
    """The options that choose the features of an FID: the judge's penultimate layer or Inception-v3."""

    feature_extractor: Literal["auto", "judge", "inception"] = Field(
        "auto", description="features for FID/KID/PR: auto = judge if there is one, else inception"
    )
    inception_weights: Path | None = Field(
        None,
        description="local Inception weights (torch-fidelity's weights-inception-2015-12-05-6726825d.pth); "
        "a pickle: pass only a trusted file",
    )
    inception_sha256: str | None = Field(None, description="refuse the Inception weights unless their sha256 is this")


def cached_extractor(ctx: Any, metric: str, options: ExtractorOptions) -> FeatureExtractor:
    """The feature extractor ``options`` choose, built once per ``eval`` (in ``ctx.cache``, shared by every
    role and every metric with the same choice). ``auto``: the judge when there is one, else Inception;
    ``metric`` names the metric in the message when the judge is needed and missing."""
    from unlearnctl import FeatureExtractor

    key = f"fidelity:extractor:{options.feature_extractor}:{options.inception_weights}"
    if key not in ctx.cache:
        kind = options.feature_extractor
        if kind == "auto":
            kind = "judge" if ctx.judge is not None else "inception"
        if kind == "judge":
            judge = ctx.require_judge(metric)
            extractor = FeatureExtractor.from_judge(
                judge, source=ctx.judge_source, feature_dim=int(getattr(judge, "feature_dim", 0)) or None
            )
        else:
            extractor = FeatureExtractor.inception(options.inception_weights, options.inception_sha256)
        ctx.cache[key] = extractor
    return ctx.cache[key]


def unconditional_predictions(ctx: Any, metric: str) -> torch.Tensor:
    """The judge's most likely class for each unconditional sample of ``ctx``'s model (on the CPU).

    Judged once per model (role) and kept in ``ctx.cache``: forgetting, kept, fidelity and retrain-distance
    all read it.
    """
    import torch

    key = f"judge:unconditional-predictions:{ctx.role}"
    if key not in ctx.cache:
        judge = ctx.require_judge(metric)
        with torch.no_grad():
            ctx.cache[key] = judge.predict_proba(ctx.samples(None)).argmax(1).cpu()
    return ctx.cache[key]
