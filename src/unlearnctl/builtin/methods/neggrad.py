"""NegGrad: gradient ascent on the forget set, descent on the remaining set.

    min_theta  -min(L(D_f), L_max) + alpha * F(theta)

L(D_f) is the ordinary DDPM loss on the forget set (with its own labels), F the DDPM loss on D_r.
Ascending an unbounded loss diverges, so the ascent is bounded twice: the global gradient-norm clip
(1.0, as every method here) and a ceiling ``L_max`` on the forget loss -- once the model denoises the
forget set no better than ``L_max`` the ascent term has zero gradient and only F is trained. The
default ``L_max = 1`` is the loss of a model that predicts eps = 0: "knows nothing about this data".

The authors' copy of this baseline (EraseDiff repository, ``train_ng``) ascends the loss of the
*remaining* set, with no forget term at all; here the ascent is on D_f and D_r is descended, as the
method is defined (``shared/spec/erasediff.md``, "Baselines").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from unlearnctl import Method

from .common import ERASEDIFF_DEFAULTS, BaselineOptions, StepsOptions, Trainer

if TYPE_CHECKING:
    from unlearnctl import UnlearnRun


class _NegGradOptions(StepsOptions):
    """neggrad's own options, shown after ``steps`` and before the shared ones (``common.py``)."""

    alpha: float = Field(1.0, ge=0, description="weight of the remaining-set DDPM loss F")
    forget_loss_max: float | None = Field(
        1.0,
        gt=0,
        description="ceiling on the ascended forget loss: above it the ascent stops (1 = the loss of predicting "
        "eps = 0); null = unbounded ascent",
    )


class NegGrad(Method):
    """NegGrad: gradient ascent on the forget set's DDPM loss (bounded), descent on the remaining set's.

    Minimises -min(L(D_f), forget_loss_max) + alpha * F(D_r) with a clipped gradient. See docs/baselines.md.
    """

    name = "neggrad"

    class Options(BaselineOptions, _NegGradOptions):
        grad_clip: float = Field(
            ERASEDIFF_DEFAULTS.grad_clip, ge=0, description="gradient-norm clip (0 = off; the ascent then is unbounded)"
        )

    def unlearn(self, run: UnlearnRun) -> None:
        import torch

        o = self.options
        trainer = Trainer(run, o)
        ceiling = float("inf") if o.forget_loss_max is None else o.forget_loss_max

        for step in run.steps():
            # 1. a remain and a forget batch; one antithetic draw of t for both; eps ~ N(0, I) for each
            remain, forget = trainer.draw(forget_noise=True)
            with run.autocast():
                # 2. L(D_f): the DDPM loss on the forget set, under its own labels
                loss_f = trainer.ddpm_loss(forget)
                # 3. F(theta): the DDPM loss on the remaining set
                loss_r = trainer.ddpm_loss(remain)
            # 4. -min(L_f, L_max) + alpha F: clamp has zero gradient above the ceiling, so the ascent stops there
            loss = -torch.clamp(loss_f, max=ceiling) + o.alpha * loss_r
            # 5. Adam step: global-norm clip, step, EMA (the runner)
            grad_norm = trainer.step(loss)
            run.log(
                step,
                {"loss_r": loss_r.detach(), "loss_f": loss_f.detach(), "ascent": (loss_f.detach() < ceiling).float(),
                 "grad_norm": grad_norm},
            )  # fmt: skip
