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

from pydantic import Field

from unlearnctl import Method, UsageError

from .common import BaselineOptions, StepsOptions, Trainer
from .losses import check_relabel, uniform_loss

if TYPE_CHECKING:
    from unlearnctl import DiffusionModel, ForgetSplit, UnlearnRun


class _JointOptions(StepsOptions):
    """joint's own options, shown after ``steps`` and before the shared ones (``common.py``)."""

    target: Literal["auto", "relabel", "uniform"] = Field(
        "auto",
        description="erasure loss f, as erasediff's: relabel (conditional models), uniform (train toward "
        "u ~ U[0,1)); auto = relabel for conditional models, uniform for unconditional ones",
    )
    corruption: Literal["uniform", "gaussian"] = Field(
        "uniform", description="target=uniform only: noise in the corrupted input x~_t (as erasediff's)"
    )
    lambda_: float = Field(0.1, ge=0, alias="lambda", description="weight of the erasure loss f (erasediff's)")


class Joint(Method):
    """Joint optimisation: minimise F(D_r) + lambda * f(D_f) by plain gradient descent (single level).

    f is EraseDiff's erasure loss (relabel or uniform target); no inner problem, fixed lambda.
    The "simultaneous optimisation" baseline of the EraseDiff paper. See docs/baselines.md.
    """

    name = "joint"

    class Options(BaselineOptions, _JointOptions):
        pass

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
        from unlearnctl.diffusion import add_noise

        o = self.options
        model, unet = run.model, run.model.unet
        self.check(model, run.split)
        trainer = Trainer(run, o)

        for step in run.steps():
            # 1. a remain and a forget batch; one antithetic draw of t for both (as erasediff)
            remain, forget = trainer.draw()
            with run.autocast():
                # 2. f on D_f: relabel || eps(x_t, c_f) - sg[eps(x_t, c^)] ||^2, or uniform || u - eps(x~_t, c_f) ||^2
                if o.target == "relabel":
                    loss_f = trainer.relabel_loss(forget)
                else:
                    u = run.rand_like(forget.x0)
                    noise = u if o.corruption == "uniform" else run.randn_like(forget.x0)
                    x_t = add_noise(model.scheduler, forget.x0, noise, forget.t)
                    loss_f = uniform_loss(unet, x_t, forget.t, forget.c, u)
                # 3. F on D_r: || eps - eps(x_t, c_r) ||^2
                loss_r = trainer.ddpm_loss(remain)
            # 4. one Adam step on F + lambda f: clip, step, EMA (the runner)
            grad_norm = trainer.step(loss_r + o.lambda_ * loss_f)
            run.log(step, {"loss_r": loss_r.detach(), "loss_f": loss_f.detach(), "grad_norm": grad_norm})
