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

import torch
from pydantic import Field

from unlearnctl import Method, Options
from unlearnctl.diffusion import add_noise, ddpm_loss, drop_labels

from .erasediff import DEFAULT_STEPS, EraseDiff, draw_surrogates
from .losses import check_relabel, relabel_loss

if TYPE_CHECKING:
    from unlearnctl import DiffusionModel, ForgetSplit
    from unlearnctl.runner import UnlearnRun


#: erasediff's options: the shared defaults (optimizer, batches, clipping, EMA) are taken from them
_ERASEDIFF = EraseDiff.Options()


class RandomLabel(Method):
    """Random label: match the forget class's noise prediction to a random kept class's, plus alpha * F on D_r.

    EraseDiff's relabel erasure loss minimised jointly with the remaining-set DDPM loss by plain
    gradient descent (SalUn's RL baseline, without the saliency mask). See docs/baselines.md.
    """

    name = "random-label"
    conditional_only = True

    class Options(Options):
        steps: int = Field(DEFAULT_STEPS, ge=1, description="optimizer steps (the same budget as erasediff's default)")
        alpha: float = Field(3.0, ge=0, description="weight of the remaining-set DDPM loss F (SalUn's, per pixel)")
        lr: float = Field(_ERASEDIFF.lr, gt=0, description="Adam learning rate")
        betas: tuple[float, float] = Field(_ERASEDIFF.betas, description="Adam betas")
        weight_decay: float = Field(_ERASEDIFF.weight_decay, ge=0, description="weight decay (> 0 switches to AdamW)")
        remain_batch_size: int = Field(_ERASEDIFF.remain_batch_size, ge=1, description="images of D_r per step")
        forget_batch_size: int = Field(_ERASEDIFF.forget_batch_size, ge=1, description="images of D_f per step")
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

    def check(self, model: DiffusionModel, split: ForgetSplit) -> None:
        check_relabel(self.name, model, split)

    def unlearn(self, run: UnlearnRun) -> None:
        o = self.options
        model, unet = run.model, run.model.unet
        self.check(model, run.split)
        params = [p for p in unet.parameters() if p.requires_grad]
        optimizer = run.make_optimizer(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
        run.use_ema(o.ema_decay if o.save_ema else 0.0)  # the EMA is kept only when it is saved
        kept = torch.tensor(run.split.remain_classes, dtype=torch.long)
        remain = run.batches("remain", o.remain_batch_size)
        forget = run.batches("forget", o.forget_batch_size)

        for step in run.steps():
            # 1. a remain and a forget batch; one antithetic draw of t for both
            x_r, c_r = next(remain)
            x_f, c_f = next(forget)
            t = run.timesteps(max(len(x_r), len(x_f)), o.antithetic)
            t_r, t_f = t[: len(x_r)], t[: len(x_f)]
            eps_r = run.randn_like(x_r)
            c_r = drop_labels(c_r, o.class_dropout, model.null_class, run.generator)
            # 2. x_t of the forget batch (eps ~ N(0, I)) and a random kept class c^ != c_f for each image
            x_t = add_noise(model.scheduler, x_f, run.randn_like(x_f), t_f)
            c_hat = draw_surrogates(c_f.cpu(), kept, run.generator).to(run.device)
            with run.autocast():
                # 3. f_relabel = || eps(x_t, c_f) - sg[eps(x_t, c^)] ||^2
                loss_f = relabel_loss(unet, x_t, t_f, c_f, c_hat)
                # 4. F = || eps - eps(x_t, c_r) ||^2 on D_r
                loss_r = ddpm_loss(unet, model.scheduler, x_r, c_r, t_r, eps_r)
            # 5. one Adam step on f + alpha F: clip, step, EMA (the runner)
            grad_norm = run.backward_step(optimizer, loss_f + o.alpha * loss_r, clip=o.grad_clip)
            run.log(step, {"loss_r": loss_r.item(), "loss_f": loss_f.item(), "grad_norm": grad_norm})
