"""``retrain-distance``: how far a model lands from the gold standard of unlearning, a model retrained from
scratch without the forget set (``unlearnctl eval RUN --retrain RETRAIN``; docs/eval.md, "Distance to the
gold standard").

Forgetting and utility metrics say how far a method moved from its base model; this one says how close it
came to what retraining gives. It runs for the evaluated model and for its reference (the base model), each
against ``ctx.retrain``, the retrained model's context: sampled under the same protocol and the same noise
streams (common random numbers), so that a model identical to the retrained one gives exactly 0, and the
differences measured are the models', not the noise's. The retrained model's samples are drawn once (its
context caches them) and serve both roles.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from unlearnctl import Metric

from .metric_parts import ExtractorOptions, cached_extractor, unconditional_predictions

if TYPE_CHECKING:
    import torch


class RetrainDistance(Metric):
    """Distance to the model retrained without the forget set (``eval --retrain``): FID between the two
    models' kept-class samples, and the gap in the judge's recognition rate of every class.

    - ``fid``: FID between this model's samples of the kept classes and the retrained model's (same
      protocol and noise), on the features ``fidelity`` uses (the same options; None without kept classes
      or with fewer than 2 samples on a side).
    - ``per_class``: ``{"c": {"model": rate, "retrain": rate, "gap": |model - retrain|}}`` for every class,
      forgotten and kept; ``rate``: the share of the class's samples the judge labels as the class.
    - ``recognition_gap``: mean gap over all classes; ``kept_gap`` over the kept classes; ``forgotten_gap``
      over the forgotten ones (None without forgotten classes).

    Unconditional models: ``rate`` is the share of all the samples the judge assigns to the class, and the
    FID compares, like ``fidelity``'s default, the samples not judged as a forgotten class (``all``: every
    sample). Without ``ctx.retrain`` (not under ``eval --retrain``) the metric is skipped.
    """

    name = "retrain-distance"
    default = False
    #: read by ``eval``: ``--retrain`` adds this metric to the default metrics, and naming it without
    #: ``--retrain`` is refused
    requires_retrain: ClassVar[bool] = True
    # needs_samples: the default, both the forgotten and the kept classes

    class Options(ExtractorOptions):
        unconditional_set: Literal["kept", "all"] = Field(
            "kept",
            description="unconditional models: the samples compared by FID -- kept = those the judge does not "
            "assign to a forgotten class, all = every sample",
        )

    def prepare(self, ctx: Any) -> None:
        ctx.require_judge(self.name)
        if ctx.kept_classes:
            cached_extractor(ctx, self.name, self.options)

    def compute(self, ctx: Any) -> dict[str, Any]:
        ctx.require_judge(self.name)
        retrain = ctx.retrain
        if retrain is None:
            return {"skipped": "no retrained model to compare with: pass eval --retrain RUN_OR_MODEL"}
        classes = ctx.sample_classes
        mine, theirs = self._rates(ctx), self._rates(retrain)
        per_class = {c: {"model": mine[c], "retrain": theirs[c], "gap": abs(mine[c] - theirs[c])} for c in classes}

        def mean_gap(group: tuple[int, ...]) -> float | None:
            return sum(per_class[c]["gap"] for c in group) / len(group) if group else None

        return {
            "fid": self._fid(ctx, retrain),
            "recognition_gap": mean_gap(classes),
            "kept_gap": mean_gap(ctx.kept_classes),
            "forgotten_gap": mean_gap(ctx.forget_classes),
            "per_class": {str(c): v for c, v in per_class.items()},
        }

    def _rates(self, ctx: Any) -> dict[int, float]:
        """The judge's recognition rate of each class in ``ctx``'s samples (conditional: of the samples
        conditioned on the class, as ``forgetting`` and ``kept`` compute it; unconditional: the share of the
        samples assigned to it). Once per role: the retrained model's serve both roles."""
        import torch

        from unlearnctl import fractions, judge_images

        key = f"{self.name}:rates:{ctx.role}"
        if key not in ctx.cache:
            judge = ctx.require_judge(self.name)
            classes = ctx.sample_classes
            if ctx.conditional:
                rates = {}
                for c in classes:
                    images = ctx.samples(c)
                    labels = torch.full((len(images),), c, dtype=torch.long)
                    rates[c] = judge_images(judge, images, labels, [c])["rates"][c]
            else:
                shares = fractions(unconditional_predictions(ctx, self.name), judge.num_classes)
                rates = {c: float(shares[c]) for c in classes}
            ctx.cache[key] = rates
        return ctx.cache[key]

    def _fid(self, ctx: Any, retrain: Any) -> float | None:
        """FID between ``ctx``'s kept-class samples and the retrained model's, on the shared extractor."""
        from unlearnctl import fidelity_metrics

        if not ctx.kept_classes:
            return None
        mine, theirs = self._kept_samples(ctx), self._kept_samples(retrain)
        if len(mine) < 2 or len(theirs) < 2:
            return None
        extractor = cached_extractor(ctx, self.name, self.options)
        ctx.record(
            "retrain_distance",
            {
                "retrain": retrain.spec,
                "feature_extractor": extractor.describe(),
                "classes": list(ctx.sample_classes),
                "fid_classes": list(ctx.kept_classes),
                "generated_set": "samples of the kept classes"
                if ctx.conditional
                else (
                    "unconditional samples the judge does not assign to a forgotten class"
                    if self._filters(ctx)
                    else "all unconditional samples"
                ),
            },
        )
        values = fidelity_metrics(mine, theirs, extractor, device=ctx.device, kid=False, prc=False, seed=ctx.seed)
        return values["fid"]

    def _filters(self, ctx: Any) -> bool:
        """Whether the unconditional samples judged as a forgotten class are left out of the FID."""
        return not ctx.conditional and self.options.unconditional_set == "kept" and bool(ctx.forget_classes)

    def _kept_samples(self, ctx: Any) -> torch.Tensor:
        """The samples the FID compares: of the kept classes, or (unconditional) those not judged as a
        forgotten class, or all of them (``unconditional_set=all``)."""
        import torch

        if ctx.conditional:
            return torch.cat([ctx.samples(c) for c in ctx.kept_classes])
        images = ctx.samples(None)
        if not self._filters(ctx):
            return images
        predicted = unconditional_predictions(ctx, self.name)
        keep = ~torch.isin(predicted, torch.tensor(ctx.forget_classes, dtype=predicted.dtype))
        return images[keep.to(images.device)]
