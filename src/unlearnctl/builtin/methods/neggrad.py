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

import torch
from pydantic import Field

from unlearnctl import Method, Options
from unlearnctl.diffusion import ddpm_loss, drop_labels

from .erasediff import DEFAULT_STEPS, EraseDiff

if TYPE_CHECKING:
    from unlearnctl.runner import UnlearnRun


#: erasediff's options: the shared defaults (optimizer, batches, clipping, EMA) are taken from them
_ERASEDIFF = EraseDiff.Options()


class NegGrad(Method):
    """NegGrad: gradient ascent on the forget set's DDPM loss (bounded), descent on the remaining set's.

    Minimises -min(L(D_f), forget_loss_max) + alpha * F(D_r) with a clipped gradient. See docs/baselines.md.
    """

    name = "neggrad"

    class Options(Options):
        steps: int = Field(DEFAULT_STEPS, ge=1, description="optimizer steps (the same budget as erasediff's default)")
        alpha: float = Field(1.0, ge=0, description="weight of the remaining-set DDPM loss F")
        forget_loss_max: float | None = Field(
            1.0,
            gt=0,
            description="ceiling on the ascended forget loss: above it the ascent stops (1 = the loss of predicting "
            "eps = 0); null = unbounded ascent",
        )
        lr: float = Field(_ERASEDIFF.lr, gt=0, description="Adam learning rate")
        betas: tuple[float, float] = Field(_ERASEDIFF.betas, description="Adam betas")
        weight_decay: float = Field(_ERASEDIFF.weight_decay, ge=0, description="weight decay (> 0 switches to AdamW)")
        remain_batch_size: int = Field(_ERASEDIFF.remain_batch_size, ge=1, description="images of D_r per step")
        forget_batch_size: int = Field(_ERASEDIFF.forget_batch_size, ge=1, description="images of D_f per step")
        grad_clip: float = Field(
            _ERASEDIFF.grad_clip, ge=0, description="gradient-norm clip (0 = off; the ascent then is unbounded)"
        )
        save_ema: bool = Field(
            _ERASEDIFF.save_ema, description="save an EMA of the weights instead of the raw weights (as erasediff)"
        )
        ema_decay: float = Field(_ERASEDIFF.ema_decay, ge=0, lt=1, description="rate of that EMA (0 = none)")
        antithetic: bool = Field(
            _ERASEDIFF.antithetic, description="antithetic timesteps: draw n/2+1 values of t, append T-1-t"
        )
        class_dropout: float = Field(
            _ERASEDIFF.class_dropout,
            ge=0,
            lt=1,
            description="probability of the null class on remain labels (guidance dropout; off)",
        )

    def unlearn(self, run: UnlearnRun) -> None:
        o = self.options
        model, unet = run.model, run.model.unet
        params = [p for p in unet.parameters() if p.requires_grad]
        optimizer = run.make_optimizer(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
        run.use_ema(o.ema_decay if o.save_ema else 0.0)  # the EMA is kept only when it is saved
        remain = run.batches("remain", o.remain_batch_size)
        forget = run.batches("forget", o.forget_batch_size)
        ceiling = float("inf") if o.forget_loss_max is None else o.forget_loss_max

        for step in run.steps():
            # 1. a remain and a forget batch; one antithetic draw of t for both; eps ~ N(0, I) for each
            x_r, c_r = next(remain)
            x_f, c_f = next(forget)
            t = run.timesteps(max(len(x_r), len(x_f)), o.antithetic)
            t_r, t_f = t[: len(x_r)], t[: len(x_f)]
            eps_r, eps_f = run.randn_like(x_r), run.randn_like(x_f)
            c_r = drop_labels(c_r, o.class_dropout, model.null_class, run.generator) if model.conditional else None
            c_f = c_f if model.conditional else None
            with run.autocast():
                # 2. L(D_f): the DDPM loss on the forget set, under its own labels
                loss_f = ddpm_loss(unet, model.scheduler, x_f, c_f, t_f, eps_f)
                # 3. F(theta): the DDPM loss on the remaining set
                loss_r = ddpm_loss(unet, model.scheduler, x_r, c_r, t_r, eps_r)
            # 4. -min(L_f, L_max) + alpha F: clamp has zero gradient above the ceiling, so the ascent stops there
            loss = -torch.clamp(loss_f, max=ceiling) + o.alpha * loss_r
            # 5. Adam step: global-norm clip, step, EMA (the runner)
            grad_norm = run.backward_step(optimizer, loss, clip=o.grad_clip)
            run.log(
                step,
                {"loss_r": loss_r.item(), "loss_f": loss_f.item(), "ascent": float(loss_f.item() < ceiling),
                 "grad_norm": grad_norm},
            )  # fmt: skip
