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

if TYPE_CHECKING:
    from unlearnctl.runner import UnlearnRun

#: the same step budget as EraseDiff's default (a fair comparison on ddpm-digits)
DEFAULT_STEPS = 300


class FineTune(Method):
    """Fine-tune on the remaining data only (DDPM loss on D_r; the forget set is never used).

    The simplest unlearning baseline: forgetting comes only from drifting away from the original
    weights. See docs/baselines.md.
    """

    name = "finetune"

    class Options(Options):
        steps: int = Field(DEFAULT_STEPS, ge=1, description="optimizer steps (same default as erasediff)")
        lr: float = Field(1e-4, gt=0, description="Adam learning rate")
        betas: tuple[float, float] = Field((0.9, 0.999), description="Adam betas")
        weight_decay: float = Field(0.0, ge=0, description="weight decay (> 0 switches to AdamW)")
        remain_batch_size: int = Field(128, ge=1, description="images of D_r per step")
        grad_clip: float = Field(1.0, ge=0, description="gradient-norm clip (0 = off)")
        ema_decay: float = Field(0.99, ge=0, lt=1, description="EMA rate of the weights (0 = no EMA)")
        save_ema: bool = Field(True, description="save the EMA weights (else the raw ones); needs ema_decay > 0")
        antithetic: bool = Field(True, description="antithetic timesteps: draw n/2+1 values of t, append T-1-t")
        class_dropout: float = Field(
            0.0, ge=0, lt=1, description="probability of the null class on remain labels (guidance dropout; off)"
        )

    def unlearn(self, run: UnlearnRun) -> None:
        o = self.options
        model, unet = run.model, run.model.unet
        params = [p for p in unet.parameters() if p.requires_grad]
        optimizer = run.make_optimizer(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
        run.use_ema(o.ema_decay, save=o.save_ema)
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
