"""Joint (simultaneous) optimisation: the single-level baseline of the EraseDiff paper.

    min_theta  F(theta) + lambda * f(theta)

F is the DDPM loss on the remaining set, f EraseDiff's erasure loss on the forget set (``relabel`` or
``uniform``, the same functions, ``losses.py``), both minimised together by plain gradient descent.
The paper argues that this fails to balance the two goals and proposes the bilevel update instead.

Note: with ``lambda_rule=fixed`` (the authors' default) EraseDiff's bilevel update *is* this update --
``theta <- theta - Adam(grad F + lambda grad q)`` with ``grad q = grad f`` (``shared/spec/erasediff.md``,
step 2). EraseDiff's K inner steps only change the update under the ``value`` rule, and the ``bome`` and
``cosine`` rules change lambda each step. ``tests/test_baselines.py`` checks that ``joint`` and
``erasediff --set lambda_rule=fixed`` land on the same weights; ``docs/baselines.md`` discusses it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field

from unlearnctl import Method, Options, UsageError
from unlearnctl.diffusion import add_noise, ddpm_loss, drop_labels

from .erasediff import DEFAULT_STEPS, EraseDiff, draw_surrogates
from .losses import check_relabel, relabel_loss, uniform_loss

if TYPE_CHECKING:
    from unlearnctl import DiffusionModel, ForgetSplit
    from unlearnctl.runner import UnlearnRun


#: erasediff's options: the shared defaults (optimizer, batches, clipping, EMA) are taken from them
_ERASEDIFF = EraseDiff.Options()


class Joint(Method):
    """Joint optimisation: minimise F(D_r) + lambda * f(D_f) by plain gradient descent (single level).

    f is EraseDiff's erasure loss (relabel or uniform target); no inner problem, fixed lambda.
    The "simultaneous optimisation" baseline of the EraseDiff paper. See docs/baselines.md.
    """

    name = "joint"

    class Options(Options):
        steps: int = Field(DEFAULT_STEPS, ge=1, description="optimizer steps (the same budget as erasediff's default)")
        target: Literal["auto", "relabel", "uniform"] = Field(
            "auto",
            description="erasure loss f, as erasediff's: relabel (conditional models), uniform (train toward "
            "u ~ U[0,1)); auto = relabel for conditional models, uniform for unconditional ones",
        )
        corruption: Literal["uniform", "gaussian"] = Field(
            "uniform", description="target=uniform only: noise in the corrupted input x~_t (as erasediff's)"
        )
        lambda_: float = Field(0.1, ge=0, alias="lambda", description="weight of the erasure loss f (erasediff's)")
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
        """Resolve ``target=auto``; refuse ``relabel`` where it cannot work."""
        o = self.options
        if o.target == "auto":
            o.target = "relabel" if model.conditional else "uniform"
        if o.target == "relabel":
            if not model.conditional:
                raise UsageError(
                    f"joint: target 'relabel' needs a class-conditional model and '{model.source}' is "
                    "unconditional: use --set target=uniform"
                )
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
            # 1. a remain and a forget batch; one antithetic draw of t for both (as erasediff)
            x_r, c_r = next(remain)
            x_f, c_f = next(forget)
            t = run.timesteps(max(len(x_r), len(x_f)), o.antithetic)
            t_r, t_f = t[: len(x_r)], t[: len(x_f)]
            eps_r = run.randn_like(x_r)
            c_r = drop_labels(c_r, o.class_dropout, model.null_class, run.generator) if model.conditional else None
            c_f = c_f if model.conditional else None
            with run.autocast():
                # 2. f on D_f: relabel || eps(x_t, c_f) - sg[eps(x_t, c^)] ||^2, or uniform || u - eps(x~_t, c_f) ||^2
                if o.target == "relabel":
                    x_t = add_noise(model.scheduler, x_f, run.randn_like(x_f), t_f)
                    c_hat = draw_surrogates(c_f.cpu(), kept, run.generator).to(run.device)
                    loss_f = relabel_loss(unet, x_t, t_f, c_f, c_hat)
                else:
                    u = run.rand_like(x_f)
                    noise = u if o.corruption == "uniform" else run.randn_like(x_f)
                    loss_f = uniform_loss(unet, add_noise(model.scheduler, x_f, noise, t_f), t_f, c_f, u)
                # 3. F on D_r: || eps - eps(x_t, c_r) ||^2
                loss_r = ddpm_loss(unet, model.scheduler, x_r, c_r, t_r, eps_r)
            # 4. one Adam step on F + lambda f: clip, step, EMA (the runner)
            grad_norm = run.backward_step(optimizer, loss_r + o.lambda_ * loss_f, clip=o.grad_clip)
            run.log(step, {"loss_r": loss_r.item(), "loss_f": loss_f.item(), "grad_norm": grad_norm})
