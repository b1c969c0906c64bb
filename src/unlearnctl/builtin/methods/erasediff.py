"""EraseDiff: unlearning as a bilevel problem, solved with a first-order (BOME-style) update.

Wu et al., "EraseDiff: Erasing Data Influence in Diffusion Models" (arXiv 2401.05779; CVPR 2025 as
"Erasing Undesirable Influence in Diffusion Models"). ``docs/erasediff.md`` explains each option and where
this differs from the authors' code.

    min_theta F(theta)  s.t.  q(theta) := f(theta) - min_phi f(phi) <= 0

F is the DDPM loss on the remaining set D_r; f is an erasure loss on the forget set D_f:
- ``uniform``: f = E || u - eps_theta(x~_t, t, c_f) ||^2 with u ~ U[0,1)^d (paper v1/v2);
- ``relabel``: f = E || eps_theta(x_t, t, c_f) - sg[eps_theta(x_t, t, c^)] ||^2, c^ a kept class (v4).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from unlearnctl import LRSchedule, Method, Options, UsageError

from .losses import check_relabel, relabel_loss, uniform_loss

if TYPE_CHECKING:
    import torch

    from unlearnctl import DiffusionModel, ForgetSplit, UnlearnRun

LambdaRule = Literal["fixed", "bome", "cosine", "value"]


def check_lr_schedule(options: Any) -> Any:
    """Refuse a warm-up the options' schedule cannot take, when the options are made.

    ``UnlearnRun.make_optimizer`` refuses the same at the first step; a method that prepares for minutes
    first (a teacher, a Fisher matrix, replay samples) should not get that far. For options with ``steps``,
    ``lr_schedule`` and ``lr_warmup_steps`` (erasediff's and every baseline's, where ``steps`` is the run).
    """
    warmup, steps = options.lr_warmup_steps, options.steps
    if options.lr_schedule == "constant" and warmup > 0:
        raise ValueError(
            f"lr_warmup_steps={warmup} needs a schedule with a warm-up: set lr_schedule to "
            "constant_with_warmup, linear or cosine (constant has none)"
        )
    if warmup > steps:
        raise ValueError(
            f"lr_warmup_steps={warmup} is longer than the run ({steps} steps): set lr_warmup_steps to at most "
            f"{steps}, or more steps"
        )
    return options


#: outer steps on the built-in ddpm-digits model: the setting the tuning protocol chose (docs/protocol.md)
DEFAULT_STEPS = 600

#: The defaults that differ on an unconditional model, where only the ``uniform`` target applies: the
#: sampler's gaussian input corruption, a small fixed lambda, twice the remaining images per step, a longer
#: and faster schedule, and the EMA of the weights saved (the authors' choice). On an unconditional model
#: every class shares the erasure loss's noisy inputs, so a larger lambda (or ``bome``, which raises it)
#: degrades every class; what erases class 2 there is mostly the remain objective, and the EMA removes
#: the quality loss of those 450 steps. Applied by :meth:`EraseDiff.check` to the options the user did not
#: set; the manifest records the values used. Measured on ``ddpm-digits-uncond`` (docs/uncond-digits.md).
UNCONDITIONAL_DEFAULTS: dict[str, object] = {
    "corruption": "gaussian",
    "lambda_rule": "fixed",
    "lambda_": 0.003,
    "lr": 3e-4,
    "remain_batch_size": 256,
    "steps": 450,
    "save_ema": True,
}


def bilevel_lambda(
    rule: LambdaRule,
    g_F: list[torch.Tensor],
    g_q: list[torch.Tensor],
    q: float | torch.Tensor,
    lam: float,
    eta: float,
    scratch: Float64Scratch | None = None,
    *,
    on_host: bool = True,
) -> float | torch.Tensor:
    """lambda_i of the update ``theta <- theta - zeta Opt(g_F + lambda_i g_q)`` (erasediff.md).

    - ``fixed``:  lambda
    - ``bome``:   max((eta ||g_q||^2 - <g_F, g_q>) / ||g_q||^2, 0)   (Liu et al. 2022)
    - ``cosine``: max(eta - cos(g_F, g_q), 0)                        (the authors' code, lambda < 0)
    - ``value``:  max((eta q - <g_F, g_q>) / ||g_q||^2, 0)            (ours: phi_i = eta q(theta_i))

    ``g_F``, ``g_q`` are per-parameter gradient lists; products are summed in float64 (in ``scratch``'s
    buffers, kept across steps, when given: the same sums without allocating them anew each step). When
    ``||g_q|| = 0`` there is no direction to push: ``bome`` and ``value`` give 0, and the cosine is 0.
    ``on_host``: the sums are read to the host and lambda is a Python float (one host read); else lambda
    is a 0-d float64 tensor on the gradients' device, computed there by the same formulas (no host read:
    ``UnlearnRun.defer_host_reads``).
    """
    if rule == "fixed":
        return float(lam)
    sums = (scratch or Float64Scratch()).sums(g_F, g_q, with_ff=rule == "cosine")
    if not on_host:
        return _lambda_on_device(rule, sums, q, eta)
    dot, qq, *rest = sums.tolist()
    if rule == "cosine":
        ff = rest[0]
        cos = dot / (ff**0.5 * qq**0.5) if ff > 0 and qq > 0 else 0.0
        return max(eta - cos, 0.0)
    if qq == 0.0:
        return 0.0
    if rule == "bome":
        return max((eta * qq - dot) / qq, 0.0)
    if rule == "value":
        return max((eta * float(q) - dot) / qq, 0.0)
    raise ValueError(f"unknown lambda rule {rule!r}")


def _lambda_on_device(rule: LambdaRule, sums: torch.Tensor, q: float | torch.Tensor, eta: float) -> torch.Tensor:
    """:func:`bilevel_lambda`'s formulas on 0-d float64 tensors (``torch.where`` for its two cases)."""
    import torch

    dot, qq = sums[0], sums[1]
    if rule == "cosine":
        ff = sums[2]
        cos = torch.where((ff > 0) & (qq > 0), dot / (ff.sqrt() * qq.sqrt()), 0.0)
        return (eta - cos).clamp_min(0.0)
    if rule == "bome":
        num = eta * qq - dot
    elif rule == "value":
        num = eta * torch.as_tensor(q, device=sums.device).to(torch.float64) - dot
    else:
        raise ValueError(f"unknown lambda rule {rule!r}")
    return torch.where(qq > 0, (num / qq).clamp_min(0.0), 0.0)


def add_weighted_(g_F: list[torch.Tensor], g_q: list[torch.Tensor], lam: float | torch.Tensor) -> list[torch.Tensor]:
    """``g_F + lambda g_q`` in place of ``g_F`` (returned): ``add_`` with a float lambda, ``addcmul_`` with a
    device tensor (its float32 value, as ``add_`` rounds a float alpha; ``add_`` fuses the multiply-add,
    so the two can differ in the last bit)."""
    if isinstance(lam, float):
        return [gf.add_(gq, alpha=lam) for gf, gq in zip(g_F, g_q, strict=True)]
    lam32 = lam.float()
    return [gf.addcmul_(gq, lam32) for gf, gq in zip(g_F, g_q, strict=True)]


class Float64Scratch:
    """Float64 buffers for :func:`bilevel_lambda`'s sums, one pair per parameter, reused every step.

    Each sum is the float64 sum of exact float64 products of the float32 gradients: ``<g_F, g_q>``,
    ``||g_q||^2`` and (cosine) ``||g_F||^2``, per parameter, then over parameters.
    """

    def __init__(self) -> None:
        self._a: list[torch.Tensor] = []
        self._b: list[torch.Tensor] = []

    def _buffers(self, grads: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        import torch

        if [b.shape for b in self._b] != [g.shape for g in grads] or any(
            b.device != g.device for b, g in zip(self._b, grads, strict=True)
        ):
            self._a = [torch.empty(g.shape, dtype=torch.float64, device=g.device) for g in grads]
            self._b = [torch.empty(g.shape, dtype=torch.float64, device=g.device) for g in grads]
        return self._a, self._b

    def sums(self, g_F: list[torch.Tensor], g_q: list[torch.Tensor], with_ff: bool = False) -> torch.Tensor:
        """``<g_F, g_q>``, ``||g_q||^2`` (and ``||g_F||^2``) as one float64 tensor on the gradients' device."""
        import torch

        bufs_a, bufs_b = self._buffers(g_q)
        dots, qqs, ffs = [], [], []
        for a, b, fa, fb in zip(g_F, g_q, bufs_a, bufs_b, strict=True):
            fb.copy_(b)
            dots.append(fa.copy_(a).mul_(fb).sum())
            if with_ff:
                ffs.append(fa.copy_(a).square_().sum())
            qqs.append(fb.square_().sum())
        totals = [torch.stack(dots).sum(), torch.stack(qqs).sum()]
        if with_ff:
            totals.append(torch.stack(ffs).sum())
        return torch.stack(totals)


def draw_surrogates(labels: torch.Tensor, candidates: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """For each label y, a class drawn uniformly from ``candidates`` without y, on ``labels``' device.

    ``candidates`` are the classes NOT being forgotten. (The authors' code draws from 1..9, which is
    right only when forgetting class 0.) Every label must leave at least one candidate. The uniform
    numbers come from ``generator`` (a CPU generator) and are copied to the device: the same classes on
    every device, and no copy of the labels to the host.
    """
    import torch

    candidates = candidates.to(labels.device)
    member = labels[:, None] == candidates[None, :]
    has = member.any(1)
    pos = member.int().argmax(1)
    choices = len(candidates) - has.long()
    u = torch.rand(len(labels), generator=generator).to(labels.device)
    j = (u * choices).long().clamp_max(choices - 1)
    j = j + (has & (j >= pos)).long()  # skip the item's own class
    return candidates[j]


@dataclass
class _ForgetBatch:
    """One forget batch with its draws, fixed for the whole outer step (f(theta) and f(phi) alike)."""

    x_t: torch.Tensor
    t: torch.Tensor
    c_f: torch.Tensor | None
    #: relabel: the surrogate classes c^;  uniform: the target u ~ U[0, 1)
    c_hat: torch.Tensor | None = None
    u: torch.Tensor | None = None


class EraseDiff(Method):
    """EraseDiff: bilevel unlearning -- keep the DDPM loss on the remaining data while erasing the forget set.

    Each outer step updates the weights with grad F + lambda * grad q on a remain and a forget batch,
    where q compares the erasure loss f with K Adam steps of f on a copy of the weights (the inner
    problem; only the `value` rule reads it, so only it -- or `log_q` -- runs it). Two erasure targets (`relabel`,
    `uniform`) and four lambda rules (`fixed`, `bome`, `cosine`, `value`). See docs/erasediff.md.
    """

    name = "erasediff"

    class Options(Options):
        steps: int = Field(DEFAULT_STEPS, ge=1, description="outer optimizer steps (the authors: ~288 on CIFAR-10)")
        target: Literal["auto", "relabel", "uniform"] = Field(
            "auto",
            description="erasure loss f: relabel (match a kept class's prediction; conditional models), uniform "
            "(train toward u ~ U[0,1)); auto = relabel for conditional models, uniform for unconditional ones. "
            "On an unconditional model the options not set take other defaults: corruption=gaussian, "
            "lambda_rule=fixed, lambda=0.003, lr=3e-4, remain_batch_size=256, steps=450, save_ema=true "
            "(docs/erasediff.md)",
        )
        corruption: Literal["uniform", "gaussian"] = Field(
            "uniform",
            description="target=uniform only: noise in the corrupted input x~_t -- uniform (the authors' code) or "
            "gaussian (eps ~ N(0, I), as the sampler sees it); the target is u either way",
        )
        lambda_rule: LambdaRule = Field(
            "fixed",
            description="how lambda_i is chosen each step: fixed (the authors' default, chosen by docs/protocol.md), "
            "bome, cosine or value (docs/erasediff.md)",
        )
        lambda_: float = Field(0.1, ge=0, alias="lambda", description="lambda of the fixed rule (weight of grad q)")
        eta: float = Field(0.1, ge=0, description="eta of the bome, cosine and value rules")
        inner_steps: int = Field(
            2, ge=0, description="K: Adam steps on f on a copy of the weights (read by the value rule only)"
        )
        inner_lr: float | None = Field(None, gt=0, description="learning rate of the inner Adam steps (None: lr)")
        lr: float = Field(1e-4, gt=0, description="Adam learning rate of the outer update")
        lr_schedule: LRSchedule = Field(
            "constant",
            description="schedule of the outer learning rate (diffusers' get_scheduler): constant (the authors' "
            "constant rate), constant_with_warmup, linear or cosine (decay to 0 at the last step); the inner "
            "steps keep inner_lr",
        )
        lr_warmup_steps: int = Field(
            0,
            ge=0,
            description="steps of linear warm-up from 0 to lr (0 = none, the authors'); at most steps, and "
            "with a schedule other than constant",
        )
        betas: tuple[float, float] = Field((0.9, 0.999), description="Adam betas (outer and inner)")
        _schedule = model_validator(mode="after")(check_lr_schedule)
        log_q: bool = Field(
            False, description="run the inner steps under fixed/bome/cosine too, to log q (no effect on the update)"
        )
        weight_decay: float = Field(0.0, ge=0, description="weight decay (> 0 switches to AdamW)")
        remain_batch_size: int = Field(128, ge=1, description="images of D_r per step")
        forget_batch_size: int = Field(128, ge=1, description="images of D_f per step")
        grad_clip: float = Field(1.0, ge=0, description="gradient-norm clip of every step, inner ones too (0 = off)")
        save_ema: bool = Field(
            False, description="save an EMA of the weights (the authors') instead of the raw weights; see the docs"
        )
        ema_decay: float = Field(0.99, ge=0, lt=1, description="rate of that EMA (0 = none, raw weights saved)")
        antithetic: bool = Field(True, description="antithetic timesteps: draw n/2+1 values of t, append T-1-t")
        same_timesteps: bool = Field(True, description="use the same t for the remain and the forget batch")
        class_dropout: float = Field(
            0.0, ge=0, lt=1, description="probability of the null class on remain labels (guidance dropout; off)"
        )

    # -- validation against the model and the split (called before any work) ---------------------

    def check(self, model: DiffusionModel, split: ForgetSplit) -> None:
        """Resolve ``target=auto`` and the unconditional defaults; refuse combinations that cannot work."""
        o = self.options
        if not model.conditional:
            explicit = o.model_fields_set
            for key, value in UNCONDITIONAL_DEFAULTS.items():
                if key not in explicit:
                    setattr(o, key, value)
        if o.target == "auto":
            o.target = "relabel" if model.conditional else "uniform"
        if o.target == "relabel" and not model.conditional:
            raise UsageError(
                f"erasediff: target 'relabel' needs a class-conditional model and '{model.source}' is "
                "unconditional: use --set target=uniform"
            )
        if o.target == "relabel":
            check_relabel(self.name, model, split)
        elif model.conditional and any(lbl < 0 for lbl in split.forget.labels):
            raise UsageError("erasediff: the forget set has unlabelled items, but the model is class-conditional")

    # -- the erasure loss f ----------------------------------------------------------------------

    def _forget_batch(
        self, run: UnlearnRun, x0: torch.Tensor, labels: torch.Tensor, t: torch.Tensor, kept: torch.Tensor
    ) -> _ForgetBatch:
        from unlearnctl.diffusion import add_noise

        o, model = self.options, run.model
        c_f = labels if model.conditional else None
        if o.target == "relabel":
            eps = run.randn_like(x0)
            c_hat = draw_surrogates(labels, kept, run.generator)
            return _ForgetBatch(add_noise(model.scheduler, x0, eps, t), t, c_f, c_hat=c_hat)
        u = run.rand_like(x0)
        noise = u if o.corruption == "uniform" else run.randn_like(x0)
        return _ForgetBatch(add_noise(model.scheduler, x0, noise, t), t, c_f, u=u)

    def forget_loss(self, unet: torch.nn.Module, b: _ForgetBatch) -> torch.Tensor:
        """f on one batch.

        relabel: ``|| eps(x_t, c_f) - sg[eps(x_t, c^)] ||^2``; uniform: ``|| u - eps(x~_t, c_f) ||^2``.
        """
        if b.c_hat is not None:
            return relabel_loss(unet, b.x_t, b.t, b.c_f, b.c_hat)
        return uniform_loss(unet, b.x_t, b.t, b.c_f, b.u)

    # -- the update ------------------------------------------------------------------------------

    def unlearn(self, run: UnlearnRun) -> None:
        import torch

        from unlearnctl.diffusion import ddpm_loss, drop_labels

        o = self.options
        model, unet = run.model, run.model.unet
        self.check(model, run.split)
        params = [p for p in unet.parameters() if p.requires_grad]
        optimizer = run.make_optimizer(
            params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay,
            lr_schedule=o.lr_schedule, lr_warmup_steps=o.lr_warmup_steps,
        )  # fmt: skip
        run.use_ema(o.ema_decay if o.save_ema else 0.0)  # the EMA is kept only when it is saved
        # The inner problem's weights phi, reset to theta_i every step. Only the `value` rule reads the inner
        # result; under the others it cannot change the update (docs/erasediff.md), so it runs only for log_q.
        inner_needed = o.lambda_rule == "value" or o.log_q
        phi = copy.deepcopy(unet) if inner_needed else None
        phi_params = [p for p in phi.parameters() if p.requires_grad] if phi is not None else []
        kept = torch.tensor(run.split.remain_classes, dtype=torch.long)
        scratch = Float64Scratch()  # the float64 buffers of lambda's sums, reused every step
        remain = run.batches("remain", o.remain_batch_size)
        forget = run.batches("forget", o.forget_batch_size)

        for step in run.steps():
            # 0. a remain batch (x_r, c_r) ~ D_r and a forget batch (x_f, c_f) ~ D_f; one antithetic draw
            #    of t for both (the authors' setting); guidance dropout on c_r is off by default.
            x_r, c_r = next(remain)
            x_f, c_f = next(forget)
            if o.same_timesteps:
                t = run.timesteps(max(len(x_r), len(x_f)), o.antithetic)
                t_r, t_f = t[: len(x_r)], t[: len(x_f)]
            else:
                t_r, t_f = run.timesteps(len(x_r), o.antithetic), run.timesteps(len(x_f), o.antithetic)
            eps_r = run.randn_like(x_r)
            c_r = drop_labels(c_r, o.class_dropout, model.null_class, run.generator) if model.conditional else None
            fb = self._forget_batch(run, x_f, c_f, t_f, kept)

            # 1. f(theta_i) and grad f(theta_i). Step 2 of the spec: with phi^K held constant,
            #    grad q(theta_i) = grad f(theta_i), so this gradient is g_q.
            with run.autocast():
                f_theta = self.forget_loss(unet, fb)
            g_q = run.grads(f_theta, params)

            # 2. Inner problem: phi^0 = theta_i, then K Adam steps on f(phi) -- on a copy, theta_i is not
            #    changed. phi^0 = theta_i, so the first inner gradient is g_q itself. Same batch and draws.
            values: dict[str, torch.Tensor] = {}
            q: float | torch.Tensor = 0.0
            if inner_needed:
                f_phi = f_theta.detach()
                if o.inner_steps > 0:
                    with torch.no_grad():
                        for p_phi, p_theta in zip(phi_params, params, strict=True):
                            p_phi.copy_(p_theta)
                    inner = torch.optim.Adam(phi_params, lr=o.inner_lr or o.lr, betas=o.betas)
                    g = g_q
                    for k in range(o.inner_steps):
                        if k > 0:
                            with run.autocast():
                                f_k = self.forget_loss(phi, fb)
                            g = run.grads(f_k, phi_params)
                        for p_phi, g_k in zip(phi_params, g, strict=True):
                            p_phi.grad = g_k.clone()
                        if o.grad_clip > 0:
                            torch.nn.utils.clip_grad_norm_(phi_params, o.grad_clip)
                        inner.step()
                    with torch.no_grad(), run.autocast():
                        f_phi = self.forget_loss(phi, fb)
                # 3. q(theta_i) = f(theta_i) - f(phi^K) >= 0 (approximately): how far theta_i is from erased.
                q = f_theta.detach() - f_phi
                values["q"] = q

            # 4. The outer (utility) objective F(theta_i): the DDPM loss on D_r, and g_F = grad F.
            with run.autocast():
                loss_r = ddpm_loss(unet, model.scheduler, x_r, c_r, t_r, eps_r)
            g_F = run.grads(loss_r, params)

            # 5. lambda_i by the chosen rule (fixed / bome / cosine / value).
            #    On an accelerator lambda stays on the device (no host read in the step: docs/performance.md).
            lam = bilevel_lambda(
                o.lambda_rule, g_F, g_q, q, o.lambda_, o.eta, scratch, on_host=not run.defer_host_reads
            )

            # 6. theta_{i+1} = theta_i - zeta * Adam(g_F + lambda_i g_q): clip, step, EMA (the runner).
            update = add_weighted_(g_F, g_q, lam)  # g_F is not read again
            grad_norm = run.apply_gradients(optimizer, update, clip=o.grad_clip)

            run.log(step, {"loss_r": loss_r.detach(), "loss_f": f_theta.detach(), **values, "lambda": lam,
                           "grad_norm": grad_norm})  # fmt: skip
