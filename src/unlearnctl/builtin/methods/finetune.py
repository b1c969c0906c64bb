"""Fine-tune: keep training on the remaining set only, hoping the forget set fades (catastrophic forgetting).

    min_theta F(theta),   F = E_{(x0, c) ~ D_r, t, eps} || eps - eps_theta(x_t, t, c) ||^2

The weakest baseline of the unlearning literature (EraseDiff, SalUn, SA all report it): the forget set is
never looked at, so whatever is forgotten is forgotten by drift. Same optimizer, batch, clipping and EMA
as EraseDiff's outer update (``docs/baselines.md``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from unlearnctl import Method

from .common import BaselineOptions, Trainer

if TYPE_CHECKING:
    from unlearnctl import UnlearnRun


class FineTune(Method):
    """Fine-tune on the remaining data only (DDPM loss on D_r; the forget set is never used).

    The simplest unlearning baseline: forgetting comes only from drifting away from the original
    weights. See docs/baselines.md.
    """

    name = "finetune"

    class Options(BaselineOptions):
        forget_batch_size: ClassVar[None] = None  # no option: the forget set is never read

    def unlearn(self, run: UnlearnRun) -> None:
        trainer = Trainer(run, self.options)
        for step in run.steps():
            # 1. a remain batch (x_r, c_r) ~ D_r, t ~ U{0..T-1} (antithetic), eps ~ N(0, I)
            remain, _ = trainer.draw()
            # 2. F(theta) = || eps - eps_theta(x_t, t, c) ||^2 on D_r
            with run.autocast():
                loss_r = trainer.ddpm_loss(remain)
            # 3. Adam step on grad F: clip, step, EMA (the runner)
            grad_norm = trainer.step(loss_r)
            run.log(step, {"loss_r": loss_r.detach(), "grad_norm": grad_norm})
