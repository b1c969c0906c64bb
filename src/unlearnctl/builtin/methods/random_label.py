"""Random label: make the forget class answer like a randomly chosen kept class, plus the DDPM loss on D_r.

    min_theta  f_relabel(theta) + alpha * F(theta)
    f_relabel = E || eps_theta(x_t, t, c_f) - sg[eps_theta(x_t, t, c^)] ||^2,   c^ ~ U(kept classes)

The same erasure loss as EraseDiff's ``relabel`` target (``losses.relabel_loss``), minimised jointly with
F by plain gradient descent -- no inner problem, no adaptive weight. The random-label (RL) baseline of
SalUn (Fan et al., ICLR 2024) for class-conditional DDPMs. SalUn's code relabels to the fixed class
``(c_f + 1) % 10``; here c^ is drawn uniformly from the kept classes for every image (as EraseDiff's
``relabel``), never a forgotten class.

``alpha`` = 3: SalUn's DDPM setting is alpha = 1e-3 on a remaining-set loss *summed* over the 3,072
pixels of a CIFAR-10 image against a forget loss *averaged* over pixels; in unlearnctl's per-pixel
means that ratio is 1e-3 * 3072 ~= 3 (``docs/baselines.md``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from unlearnctl import Method

from .common import BaselineOptions, StepsOptions, Trainer
from .losses import check_relabel

if TYPE_CHECKING:
    from unlearnctl import DiffusionModel, ForgetSplit, UnlearnRun


class _RandomLabelOptions(StepsOptions):
    """random-label's own options, shown after ``steps`` and before the shared ones (``common.py``)."""

    alpha: float = Field(3.0, ge=0, description="weight of the remaining-set DDPM loss F (SalUn's, per pixel)")


class RandomLabel(Method):
    """Random label: match the forget class's noise prediction to a random kept class's, plus alpha * F on D_r.

    EraseDiff's relabel erasure loss minimised jointly with the remaining-set DDPM loss by plain
    gradient descent (SalUn's RL baseline, without the saliency mask). See docs/baselines.md.
    """

    name = "random-label"
    conditional_only = True

    class Options(BaselineOptions, _RandomLabelOptions):
        pass

    def check(self, model: DiffusionModel, split: ForgetSplit) -> None:
        check_relabel(self.name, model, split)

    def unlearn(self, run: UnlearnRun) -> None:
        o = self.options
        self.check(run.model, run.split)
        trainer = Trainer(run, o)

        for step in run.steps():
            # 1. a remain and a forget batch; one antithetic draw of t for both
            remain, forget = trainer.draw()
            with run.autocast():
                # 2. f_relabel = || eps(x_t, c_f) - sg[eps(x_t, c^)] ||^2: x_t of the forget batch (eps ~ N(0, I)),
                #    a random kept class c^ != c_f for each image
                loss_f = trainer.relabel_loss(forget)
                # 3. F = || eps - eps(x_t, c_r) ||^2 on D_r
                loss_r = trainer.ddpm_loss(remain)
            # 4. one Adam step on f + alpha F: clip, step, EMA (the runner)
            grad_norm = trainer.step(loss_f + o.alpha * loss_r)
            run.log(step, {"loss_r": loss_r.detach(), "loss_f": loss_f.detach(), "grad_norm": grad_norm})
