"""Fine-tune: keep training on the remaining set only, hoping the forget set fades (catastrophic forgetting).

    min_theta F(theta),   F = E_{(x0, c) ~ D_r, t, eps} || eps - eps_theta(x_t, t, c) ||^2

The weakest baseline of the unlearning literature (EraseDiff, SalUn, SA all report it): the forget set is
never looked at, so whatever is forgotten is forgotten by drift. Same optimizer, batch, clipping and EMA
as EraseDiff's outer update (``docs/baselines.md``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from unlearnctl import Method, Options
from unlearnctl.diffusion import ddpm_loss, drop_labels

from .erasediff import DEFAULT_STEPS, EraseDiff

if TYPE_CHECKING:
    from unlearnctl.runner import UnlearnRun


#: erasediff's options: the shared defaults (optimizer, batches, clipping, EMA) are taken from them
_ERASEDIFF = EraseDiff.Options()


class FineTune(Method):
    """Fine-tune on the remaining data only (DDPM loss on D_r; the forget set is never used).

    The simplest unlearning baseline: forgetting comes only from drifting away from the original
    weights. See docs/baselines.md.
    """

    name = "finetune"

    class Options(Options):
        steps: int = Field(DEFAULT_STEPS, ge=1, description="optimizer steps (the same budget as erasediff's default)")
        lr: float = Field(_ERASEDIFF.lr, gt=0, description="Adam learning rate")
        betas: tuple[float, float] = Field(_ERASEDIFF.betas, description="Adam betas")
        weight_decay: float = Field(_ERASEDIFF.weight_decay, ge=0, description="weight decay (> 0 switches to AdamW)")
        remain_batch_size: int = Field(_ERASEDIFF.remain_batch_size, ge=1, description="images of D_r per step")
        grad_clip: float = Field(_ERASEDIFF.grad_clip, ge=0, description="gradient-norm clip (0 = off)")
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

        for step in run.steps():
            # 1. a remain batch (x_r, c_r) ~ D_r, t ~ U{0..T-1} (antithetic), eps ~ N(0, I)
            x_r, c_r = next(remain)
            eps_r, t_r = run.sample_noise_and_t(x_r, o.antithetic)
            c_r = drop_labels(c_r, o.class_dropout, model.null_class, run.generator) if model.conditional else None
            # 2. F(theta) = || eps - eps_theta(x_t, t, c) ||^2 on D_r
            with run.autocast():
                loss_r = ddpm_loss(unet, model.scheduler, x_r, c_r, t_r, eps_r)
            # 3. Adam step on grad F: clip, step, EMA (the runner)
            grad_norm = run.backward_step(optimizer, loss_r, clip=o.grad_clip)
            run.log(step, {"loss_r": loss_r.item(), "grad_norm": grad_norm})
