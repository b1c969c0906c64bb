"""The membership-inference attacks of ``unlearnctl audit``: ``membership-loss``, ``membership-pia``,
``membership-secmi``.

Members: the forget set; non-members: as many held-out (test split) images of its classes. Each attack scores
every image (higher = more likely a member) and reports AUC, best balanced accuracy and TPR at 1% and 0.1%
FPR with bootstrap confidence intervals, and the ROC curve's points. The scores are :mod:`.mia`'s, the figures
:mod:`.roc`'s; :mod:`.plugin` registers the attacks.

This module imports neither torch nor the attacks' mathematics: ``unlearnctl list attacks`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from unlearnctl import Attack, OptionError, Options

if TYPE_CHECKING:
    import torch

    from unlearnctl import AuditContext

#: the false-positive rates of the membership attacks' ``tpr_at_fpr_<fpr>``
FPRS = (0.01, 0.001)


class _Membership(Attack):
    """Membership inference (the shared part of the three attacks)."""

    default = True

    class Options(Options):
        max_members: int | None = Field(
            None, ge=2, description="at most this many members: a seeded subset of the forget set (None: all)"
        )
        bootstrap: int = Field(1000, ge=0, description="bootstrap resamples of the confidence intervals (0: none)")
        level: float = Field(0.95, gt=0, lt=1, description="confidence level of the intervals")
        batch_size: int = Field(256, ge=1, description="images per UNet forward pass")

    def scores(self, ctx: AuditContext, images: torch.Tensor, labels: torch.Tensor | None, which: str) -> torch.Tensor:
        """One membership score per image (higher = more likely a member); ``which``: ``"members"`` or
        ``"nonmembers"`` (a stream name for the attacks that draw noise)."""
        raise NotImplementedError

    def check_timesteps(self, ctx: AuditContext, timesteps: list[int], option: str) -> None:
        last = int(ctx.model.scheduler.config.num_train_timesteps) - 1
        bad = [t for t in timesteps if not 0 <= t <= last]
        if bad:
            raise OptionError(
                f"attack '{self.name}': option '{option}' names timestep(s) {bad} outside the model's 0..{last} "
                f"(see `unlearnctl show attack {self.name}`)"
            )

    def prepare(self, ctx: AuditContext) -> None:
        ctx.members(self.options.max_members)  # the forget set must be known: fail before any attack runs

    def run(self, ctx: AuditContext) -> dict[str, Any]:
        from .roc import membership_summary
        from .sampling_attacks import roc_curve

        x_m, y_m = ctx.members(self.options.max_members)
        x_n, y_n = ctx.nonmembers(len(x_m))
        if len(x_n) == 0:
            return {"skipped": "no held-out (test split) image of the forget set's classes"}

        def labels(y: torch.Tensor) -> torch.Tensor | None:
            # each image's own class (an unlabelled image, -1, is scored under class 0)
            return y.clamp_min(0) if ctx.conditional else None

        s_m = self.scores(ctx, x_m, labels(y_m), "members")
        ctx.progress(0.5)
        s_n = self.scores(ctx, x_n, labels(y_n), "nonmembers")
        o = self.options
        out = membership_summary(
            s_m, s_n, fprs=FPRS, bootstrap=o.bootstrap, level=o.level, generator=ctx.generator(f"{self.name}-bootstrap")
        )
        out["mean_score_members"] = float(s_m.double().mean())
        out["mean_score_nonmembers"] = float(s_n.double().mean())
        out["roc"] = roc_curve(s_m, s_n)
        return out


class MembershipLoss(_Membership):
    """Membership inference by denoising loss (t-error): the forget set against held-out images.

    Score of an image: minus its denoising error ``|| eps - eps_theta(x_t, t, c) ||^2`` averaged over
    ``timesteps`` (one seeded noise per image and timestep: the same for every model), ``c`` its own class
    (Matsumoto et al. 2023; Carlini et al. 2023). Members: the forget set; non-members: as many held-out
    (test split) images of its classes as there are. AUC 0.5 = the forget set looks unseen, as on a model
    retrained without it; ``tpr_at_fpr_*`` is what a careful attacker gets at a low false-positive rate.
    """

    name = "membership-loss"
    headline = ("auc", "MIA loss")

    class Options(_Membership.Options):
        timesteps: list[int] = Field(
            [25, 50, 100, 200], min_length=1, description="timesteps t the error is averaged over"
        )

    def prepare(self, ctx: AuditContext) -> None:
        self.check_timesteps(ctx, self.options.timesteps, "timesteps")
        super().prepare(ctx)

    def scores(self, ctx: AuditContext, images: torch.Tensor, labels: torch.Tensor | None, which: str) -> torch.Tensor:
        from .mia import loss_scores

        model, o = ctx.model, self.options
        return loss_scores(
            model.unet,
            model.scheduler,
            images,
            labels,
            timesteps=o.timesteps,
            generator=ctx.generator(f"{self.name}-{which}"),  # the same noise for every role
            batch_size=o.batch_size,
        )


class MembershipPIA(_Membership):
    """Membership inference by PIA (proximal initialisation): the forget set against held-out images.

    Proximal initialisation (Kong et al. 2024): noise ``x_0`` to timestep ``t`` with the model's own
    prediction at ``t = 0`` and score minus the ``l_p`` distance of the prediction at ``t`` from it.
    Deterministic. Members, non-members and figures as ``membership-loss``.
    """

    name = "membership-pia"
    headline = ("auc", "PIA")

    class Options(_Membership.Options):
        t: int = Field(200, ge=1, description="timestep the proximal initialisation is noised to")
        p: float = Field(4.0, gt=0, description="the norm l_p of the distance (the paper's 4)")

    def prepare(self, ctx: AuditContext) -> None:
        self.check_timesteps(ctx, [self.options.t], "t")
        super().prepare(ctx)

    def scores(self, ctx: AuditContext, images: torch.Tensor, labels: torch.Tensor | None, which: str) -> torch.Tensor:
        from .mia import pia_scores

        o = self.options
        return pia_scores(ctx.model.unet, ctx.model.scheduler, images, labels, t=o.t, p=o.p, batch_size=o.batch_size)


class MembershipSecMI(_Membership):
    """Membership inference by SecMI (a DDIM round trip): the forget set against held-out images.

    SecMI_stat (Duan et al. 2023): invert ``x_0`` to ``x_t`` with deterministic DDIM steps of ``interval``,
    step once to ``t + interval`` and back, and score minus the squared distance of the round trip.
    Deterministic. Members, non-members and figures as ``membership-loss``.
    """

    name = "membership-secmi"
    headline = ("auc", "SecMI")

    class Options(_Membership.Options):
        t: int = Field(100, ge=0, description="timestep of the inversion (the paper's 100)")
        interval: int = Field(10, ge=1, description="DDIM step k of the inversion and the round trip (the paper's 10)")

    def prepare(self, ctx: AuditContext) -> None:
        self.check_timesteps(ctx, [self.options.t + self.options.interval], "t + interval")
        super().prepare(ctx)

    def scores(self, ctx: AuditContext, images: torch.Tensor, labels: torch.Tensor | None, which: str) -> torch.Tensor:
        from .mia import secmi_scores

        o = self.options
        return secmi_scores(
            ctx.model.unet, ctx.model.scheduler, images, labels, t=o.t, interval=o.interval, batch_size=o.batch_size
        )
