"""What the gradient-descent baselines share: their options and the skeleton of their update.

Every baseline of ``shared/spec/erasediff.md`` (finetune, neggrad, random-label, joint, salun, blindspot,
selective-amnesia) trains with EraseDiff's outer update -- same optimizer, batches, timesteps, clipping and
EMA, defaults taken from erasediff's options -- and differs only in its loss. :class:`BaselineOptions`
holds those shared options, :class:`Trainer` the shared steps (and the relabel loss with its draws, which
random-label, joint and salun share), so that a method's ``unlearn`` holds only its own loss:

    trainer = Trainer(run, self.options)       # Adam(W) on the trainable weights, EMA, batch streams
    for step in run.steps():
        remain, forget = trainer.draw()        # a remain and a forget batch, one antithetic draw of t
        with run.autocast():
            loss_f = ...                       # the method's own term on D_f
            loss_r = trainer.ddpm_loss(remain) # F: the DDPM loss on D_r
        grad_norm = trainer.step(loss_f + alpha * loss_r)

A method with options of its own puts them in a class of their own, derived from :class:`StepsOptions`,
and lists it *after* :class:`BaselineOptions`: ``class Options(BaselineOptions, _OwnOptions)``. Pydantic
orders fields along the MRO from the most basic class up (StepsOptions, _OwnOptions, BaselineOptions),
so they read: steps, the method's own, then the shared ones (as ``unlearnctl show method`` lists them).
A shared option the method changes (its help text) is redeclared in ``Options`` and keeps its place;
one it does not have is redeclared as a ``ClassVar`` with the value the method uses, which makes it no
option at all (``--set`` rejects it).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import Field, model_validator

from unlearnctl import LRSchedule, Options

from .erasediff import EraseDiff, check_lr_schedule, draw_surrogates
from .losses import relabel_loss

if TYPE_CHECKING:
    import torch

    from unlearnctl import UnlearnRun


#: erasediff's options: the shared defaults (optimizer, batches, clipping, EMA) are taken from them
ERASEDIFF_DEFAULTS = EraseDiff.Options()

#: The baselines' step budget: erasediff's default before the tuning protocol (docs/protocol.md) chose 600
#: steps for it. Each baseline's tuned setting is in docs/studies/digits-test.toml; its defaults stay.
BASELINE_STEPS = 150


class StepsOptions(Options):
    """The step budget, the first option of every baseline (the base of a method's own options)."""

    steps: int = Field(BASELINE_STEPS, ge=1, description="optimizer steps (docs/baselines.md: the budget)")


class BaselineOptions(StepsOptions):
    """The options every baseline shares with erasediff's outer update, with erasediff's defaults."""

    lr: float = Field(ERASEDIFF_DEFAULTS.lr, gt=0, description="Adam learning rate")
    lr_schedule: LRSchedule = Field(
        ERASEDIFF_DEFAULTS.lr_schedule,
        description="schedule of the learning rate (diffusers' get_scheduler): constant (the authors' constant "
        "rate, as erasediff), constant_with_warmup, linear or cosine (decay to 0 at the last step)",
    )
    lr_warmup_steps: int = Field(
        ERASEDIFF_DEFAULTS.lr_warmup_steps,
        ge=0,
        description="steps of linear warm-up from 0 to lr (0 = none, the authors'); at most steps, and "
        "with a schedule other than constant",
    )
    betas: tuple[float, float] = Field(ERASEDIFF_DEFAULTS.betas, description="Adam betas")
    _schedule = model_validator(mode="after")(check_lr_schedule)
    weight_decay: float = Field(
        ERASEDIFF_DEFAULTS.weight_decay, ge=0, description="weight decay (> 0 switches to AdamW)"
    )
    remain_batch_size: int = Field(ERASEDIFF_DEFAULTS.remain_batch_size, ge=1, description="images of D_r per step")
    forget_batch_size: int = Field(ERASEDIFF_DEFAULTS.forget_batch_size, ge=1, description="images of D_f per step")
    grad_clip: float = Field(ERASEDIFF_DEFAULTS.grad_clip, ge=0, description="gradient-norm clip (0 = off)")
    save_ema: bool = Field(
        ERASEDIFF_DEFAULTS.save_ema, description="save an EMA of the weights instead of the raw weights (as erasediff)"
    )
    ema_decay: float = Field(ERASEDIFF_DEFAULTS.ema_decay, ge=0, lt=1, description="rate of that EMA (0 = none)")
    antithetic: bool = Field(
        ERASEDIFF_DEFAULTS.antithetic, description="antithetic timesteps: draw n/2+1 values of t, append T-1-t"
    )
    class_dropout: float = Field(
        ERASEDIFF_DEFAULTS.class_dropout,
        ge=0,
        lt=1,
        description="probability of the null class on remain labels (guidance dropout; off)",
    )


@dataclass
class Batch:
    """One batch of a step with its draws: clean images, labels (None on an unconditional model), t, eps."""

    x0: torch.Tensor
    c: torch.Tensor | None
    t: torch.Tensor
    #: eps ~ N(0, I) shaped like x0; None where the method draws its own noise
    eps: torch.Tensor | None = None


class Trainer:
    """The update every baseline shares: optimizer, EMA, batch streams, draws, the losses and the step.

    Built at the point where the method starts its steps (what it prepares before, it prepares first):
    Adam -- AdamW with a weight decay -- on ``params`` (default: every trainable weight of the UNet) with the
    options' learning-rate schedule (``lr_schedule``, ``lr_warmup_steps``), an EMA of the weights only when
    it is saved, and endless shuffled batches of D_r and, where the options
    have a ``forget_batch_size``, of D_f. ``remain`` and ``forget`` replace those streams with the
    method's own (``(x0, labels)`` batches on the device).
    """

    def __init__(
        self,
        run: UnlearnRun,
        options: BaselineOptions,
        params: list[torch.Tensor] | None = None,
        remain: Iterator[tuple[torch.Tensor, torch.Tensor]] | None = None,
        forget: Iterator[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> None:
        o = self.options = options
        self.run = run
        if params is None:
            params = [p for p in run.model.unet.parameters() if p.requires_grad]
        self.optimizer = run.make_optimizer(
            params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay,
            lr_schedule=o.lr_schedule, lr_warmup_steps=o.lr_warmup_steps,
        )  # fmt: skip
        run.use_ema(o.ema_decay if o.save_ema else 0.0)  # the EMA is kept only when it is saved
        self.remain = remain if remain is not None else run.batches("remain", o.remain_batch_size)
        if forget is None and o.forget_batch_size is not None:
            forget = run.batches("forget", o.forget_batch_size)
        self.forget = forget

    def draw(self, forget_noise: bool = False) -> tuple[Batch, Batch | None]:
        """The next remain batch and forget batch (None without a forget stream), in this order of draws:

        one draw of t for both (antithetic: t and T-1-t), eps ~ N(0, I) for the remain batch, then for the
        forget batch with ``forget_noise``, then the guidance dropout of the remain labels (``class_dropout``).
        Labels are None on an unconditional model.
        """
        from unlearnctl.diffusion import drop_labels

        run, o = self.run, self.options
        conditional = run.model.conditional
        x_r, c_r = next(self.remain)
        x_f, c_f = next(self.forget) if self.forget is not None else (None, None)
        t = run.timesteps(len(x_r) if x_f is None else max(len(x_r), len(x_f)), o.antithetic)
        remain = Batch(x_r, c_r, t[: len(x_r)], run.randn_like(x_r))
        forget = None if x_f is None else Batch(x_f, c_f if conditional else None, t[: len(x_f)])
        if forget is not None and forget_noise:
            forget.eps = run.randn_like(forget.x0)
        remain.c = drop_labels(c_r, o.class_dropout, run.model.null_class, run.generator) if conditional else None
        return remain, forget

    def ddpm_loss(self, batch: Batch) -> torch.Tensor:
        """``|| eps - eps_theta(x_t, t, c) ||^2`` on a batch and its draws (F, on a remain batch)."""
        from unlearnctl.diffusion import ddpm_loss

        model = self.run.model
        return ddpm_loss(model.unet, model.scheduler, batch.x0, batch.c, batch.t, batch.eps)

    def relabel_loss(self, forget: Batch) -> torch.Tensor:
        """EraseDiff's relabel loss f on a forget batch (``losses.relabel_loss``), with its draws, in this order:

        x_t with a fresh eps ~ N(0, I), then for each image a kept class c^ other than its own
        (``erasediff.draw_surrogates``); ``|| eps_theta(x_t, t, c_f) - sg[eps_theta(x_t, t, c^)] ||^2``.
        """
        import torch

        from unlearnctl.diffusion import add_noise

        run = self.run
        kept = torch.tensor(run.split.remain_classes, dtype=torch.long)
        x_t = add_noise(run.model.scheduler, forget.x0, run.randn_like(forget.x0), forget.t)
        c_hat = draw_surrogates(forget.c, kept, run.generator)
        return relabel_loss(run.model.unet, x_t, forget.t, forget.c, c_hat)

    def step(self, loss: torch.Tensor) -> torch.Tensor:
        """Backward, gradient-norm clip (``grad_clip``), Adam step, EMA (the runner); the grad norm (0-d tensor)."""
        return self.run.backward_step(self.optimizer, loss, clip=self.options.grad_clip)

    def apply_gradients(self, grads: list[torch.Tensor]) -> torch.Tensor:
        """:meth:`step` with gradients the method computed itself (in the order of ``params``)."""
        return self.run.apply_gradients(self.optimizer, grads, clip=self.options.grad_clip)
