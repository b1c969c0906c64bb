"""Selective Amnesia (Heng & Soh, "Selective Amnesia: A Continual Learning Approach to Forgetting in Deep
Generative Models", NeurIPS 2023), for class-conditional DDPMs.

Forget a class c_f by continual learning: learn a surrogate distribution for c_f, rehearse the other
classes from the model's own samples, and anchor the weights with elastic weight consolidation (EWC):

    min_theta  L(x0 ~ U[-1, 1]^d | c_f)                      forget: a uniform-noise image is "class c_f"
             + gamma * L(x0 ~ p_theta*(x | c), c in kept)     generative replay from the frozen original
             + lambda / d * sum_i F_i (theta_i - theta*_i)^2  EWC, F = diagonal Fisher of the original

L is the DDPM loss (per-pixel mean, as everywhere in unlearnctl). The replay images and the Fisher
samples are generated once, before training, by the original model (``diffusion.sample``, the tool's
default sampler); the forget set's images are never read -- SA needs only the class to forget.

The Fisher follows SA's code (``fim.py``): for each generated sample (x0, c), the gradient of its
per-image loss *summed* over pixels and over all T timesteps (one eps each), squared, averaged over
samples. SA's loss terms are pixel *sums*; dividing its whole objective by d = C*H*W gives the
per-pixel means above with the EWC weight lambda / d, so ``lambda`` keeps SA's meaning. SA's CIFAR-10
value, 10, anchored the built-in ddpm-digits model so firmly that class 2 stayed fully recognisable
after the step budget; the default here is 1 (measured in ``docs/baselines.md``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, ClassVar

from pydantic import Field

from unlearnctl import Method, UsageError

from .common import ERASEDIFF_DEFAULTS, BaselineOptions, StepsOptions, Trainer

if TYPE_CHECKING:
    import torch

    from unlearnctl import DiffusionModel, ForgetSplit, UnlearnRun

#: timesteps per forward pass of the Fisher (SA's ``n_chunks``, as a size)
FISHER_CHUNK = 250


class _SelectiveAmnesiaOptions(StepsOptions):
    """selective-amnesia's own options, shown after ``steps`` and before the shared ones (``common.py``)."""

    gamma: float = Field(1.0, ge=0, description="weight of the generative-replay loss (SA: 1)")
    lambda_: float = Field(
        1.0,
        ge=0,
        alias="lambda",
        description="weight of the EWC penalty, in SA's units (SA's CIFAR-10 value, 10, stops ddpm-digits "
        "from forgetting)",
    )
    samples_per_class: int = Field(
        50, ge=1, description="images generated per class by the original model (replay and Fisher)"
    )
    fisher_samples: int = Field(50, ge=1, description="generated images the Fisher is averaged over")
    fisher_timesteps: int | None = Field(
        None,
        ge=1,
        description="timesteps per image in the Fisher: null = all T (SA); fewer = one per stratum, faster but the "
        "Fisher's noise part grows ~T / n",
    )
    sample_steps: int = Field(50, ge=1, description="DDIM steps of the generated images")
    guidance: float = Field(2.0, ge=0, description="classifier-free guidance w of the generated images")


class SelectiveAmnesia(Method):
    """Selective Amnesia: surrogate uniform-noise images for the forgotten class, generative replay and EWC.

    Continual-learning forgetting (Heng & Soh, NeurIPS 2023): the forgotten class learns to produce noise,
    the kept classes are rehearsed from the original model's samples, and a diagonal Fisher penalty keeps
    the weights near the original. See docs/baselines.md.
    """

    name = "selective-amnesia"
    conditional_only = True

    class Options(BaselineOptions, _SelectiveAmnesiaOptions):
        weight_decay: ClassVar[float] = 0.0  # no option: plain Adam
        remain_batch_size: int = Field(
            ERASEDIFF_DEFAULTS.remain_batch_size, ge=1, description="replayed images per step"
        )
        forget_batch_size: int = Field(
            ERASEDIFF_DEFAULTS.forget_batch_size,
            ge=1,
            description="uniform-noise images of the forgotten class per step",
        )
        class_dropout: ClassVar[float] = 0.0  # no option: replay labels are never dropped

    def check(self, model: DiffusionModel, split: ForgetSplit) -> None:
        """SA forgets whole classes of a class-conditional model and rehearses the others."""
        if not model.conditional:
            raise UsageError(f"selective-amnesia needs a class-conditional model; '{model.source}' is unconditional")
        if not split.forget_classes:
            raise UsageError(
                "selective-amnesia forgets whole classes, but the forget set leaves every one of its classes in the "
                "remaining set: select whole classes (--classes)"
            )
        if not split.remain_classes:
            raise UsageError("selective-amnesia: no kept class to replay; forget fewer classes")

    # -- what is prepared once, from the original model ------------------------------------------

    def generate(self, run: UnlearnRun, classes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``samples_per_class`` images of each class from the current (original) model, and their labels."""
        import torch

        from unlearnctl.diffusion import sample

        o = self.options
        labels = torch.tensor([c for c in classes for _ in range(o.samples_per_class)], dtype=torch.long)
        images = sample(
            run.model, len(labels), labels, generator=run.generator, sampler="ddim", steps=o.sample_steps,
            guidance=o.guidance, device=run.device,
        )  # fmt: skip
        return images, labels

    def fisher(
        self, run: UnlearnRun, params: list[torch.Tensor], images: torch.Tensor, labels: torch.Tensor
    ) -> list[torch.Tensor]:
        """Diagonal Fisher F_i = mean over images of (d l(x0, c) / d theta_i)^2, l = SA's per-image loss.

        l(x0, c) = sum_{t=0}^{T-1} || eps_t - eps_theta(x_t, t, c) ||^2 summed over pixels, one eps per t (SA's
        ``fim.py``), run in chunks of ``FISHER_CHUNK`` timesteps. With ``fisher_timesteps`` = n < T, one
        timestep per stratum of T / n, the sum scaled by T / n (faster, but the noise part of F grows ~T / n).
        """
        import torch

        from unlearnctl.diffusion import add_noise, predict_noise

        o, model, unet = self.options, run.model, run.model.unet
        T = model.scheduler.config.num_train_timesteps
        n = T if o.fisher_timesteps is None else min(o.fisher_timesteps, T)
        fisher = [torch.zeros_like(p) for p in params]
        for x0, c in zip(images, labels, strict=True):
            if n == T:
                t_all = torch.arange(T)
            else:  # one timestep drawn in each of n equal strata of {0..T-1}
                edges = torch.arange(n + 1) * T // n
                width = edges[1:] - edges[:-1]
                t_all = edges[:-1] + (torch.rand(n, generator=run.generator) * width).long()
            grad = [torch.zeros_like(p) for p in params]
            for t in t_all.split(FISHER_CHUNK):
                t = t.to(run.device)
                x = x0.to(run.device).expand(len(t), *x0.shape)
                eps = run.randn_like(x)
                with run.autocast():
                    pred = predict_noise(
                        unet, add_noise(model.scheduler, x, eps, t), t, torch.full_like(t, int(c))
                    ).float()
                chunk_loss = (eps - pred).square().sum() * (T / n)
                for acc, g in zip(grad, run.grads(chunk_loss, params), strict=True):
                    acc.add_(g)
            for f, g in zip(fisher, grad, strict=True):
                f.add_(g.square())
        return [f / len(images) for f in fisher]

    @staticmethod
    def ewc(params: list[torch.Tensor], anchor: list[torch.Tensor], fisher: list[torch.Tensor]) -> torch.Tensor:
        """sum_i F_i (theta_i - theta*_i)^2."""
        import torch

        return torch.stack([(f * (p - a).square()).sum() for p, a, f in zip(params, anchor, fisher, strict=True)]).sum()

    def _replay(self, run: UnlearnRun, images: torch.Tensor, labels: torch.Tensor) -> Iterator[tuple]:
        """Endless shuffled replay batches (a new permutation from ``run.generator`` each epoch)."""
        import torch

        size = min(self.options.remain_batch_size, len(images))
        while True:
            perm = torch.randperm(len(images), generator=run.generator)
            for start in range(0, len(images) - size + 1, size):
                idx = perm[start : start + size]
                yield images[idx].to(run.device), labels[idx].to(run.device)

    def _surrogates(self, run: UnlearnRun, forgotten: torch.Tensor, shape: torch.Size) -> Iterator[tuple]:
        """Endless forget batches: ``forget_batch_size`` images x0 ~ U[-1, 1]^d, each labelled a forgotten class."""
        import torch

        n = self.options.forget_batch_size
        while True:
            x0 = torch.rand((n, *shape), generator=run.generator).to(run.device) * 2 - 1
            yield x0, forgotten[torch.randint(len(forgotten), (n,), generator=run.generator)].to(run.device)

    # -- the update ------------------------------------------------------------------------------

    def unlearn(self, run: UnlearnRun) -> None:
        import torch

        o = self.options
        model, unet = run.model, run.model.unet
        self.check(model, run.split)
        params = [p for p in unet.parameters() if p.requires_grad]
        forgotten = torch.tensor(run.split.forget_classes, dtype=torch.long)
        kept = list(run.split.remain_classes)
        d = model.channels * model.image_size**2

        # 1. the original model generates samples_per_class images of every class (SA's class_samples);
        #    the Fisher uses up to fisher_samples of them (all classes, as SA), the replay the kept classes'.
        images, labels = self.generate(run, sorted(set(kept) | set(forgotten.tolist())))
        pick = torch.randperm(len(images), generator=run.generator)[: o.fisher_samples]
        if o.lambda_ > 0:
            fisher = self.fisher(run, params, images[pick], labels[pick])
        else:  # no EWC: skip the Fisher (the most expensive preparation)
            fisher = [torch.zeros_like(p) for p in params]
        anchor = [p.detach().clone() for p in params]  # theta*
        is_kept = torch.isin(labels, torch.tensor(kept, dtype=torch.long))
        replay = self._replay(run, images[is_kept], labels[is_kept])

        trainer = Trainer(run, o, params, remain=replay, forget=self._surrogates(run, forgotten, images.shape[1:]))
        for step in run.steps():
            # 2. a replay batch (generated kept-class images) and a forget batch: x0 ~ U[-1, 1]^d labelled c_f;
            #    one antithetic draw of t for both (SA's code)
            remain, forget = trainer.draw(forget_noise=True)
            with run.autocast():
                # 3. forget: the DDPM loss of uniform-noise images under c_f (the surrogate distribution)
                loss_f = trainer.ddpm_loss(forget)
                # 4. generative replay: the DDPM loss of the original model's kept-class samples
                loss_r = trainer.ddpm_loss(remain)
            # 5. EWC: sum_i F_i (theta_i - theta*_i)^2, weighted lambda / d (SA's objective divided by d)
            loss_ewc = self.ewc(params, anchor, fisher)
            loss = loss_f + o.gamma * loss_r + (o.lambda_ / d) * loss_ewc
            # 6. one Adam step: clip, step, EMA (the runner)
            grad_norm = trainer.step(loss)
            run.log(
                step,
                {
                    "loss_r": loss_r.detach(),
                    "loss_f": loss_f.detach(),
                    "ewc": loss_ewc.detach(),
                    "grad_norm": grad_norm,
                },
            )
