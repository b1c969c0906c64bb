"""Blindspot: teach the forget set with a proxy that never saw it (Tarun et al., "Deep Regression
Unlearning", ICML 2023; the blindspot baseline of the EraseDiff paper).

1. Proxy: a fresh UNet of the same architecture (new random initialisation), trained briefly on D_r only
   with the ``unlearnctl train`` recipe (``training.train_model``; ``proxy_steps``). It has a blind spot
   where D_f was.
2. Unlearning: pull the model's predictions on D_f toward the proxy's, keep D_r on the DDPM target:

       min_theta  E_{D_f} || eps_theta(x_t, t, c_f) - sg[eps_proxy(x_t, t, c_f)] ||^2 + alpha * F(theta)

The EraseDiff authors' copy of this baseline initialises the proxy from the pretrained weights (it has
seen D_f) and then computes the "proxy" prediction with the model being unlearned itself, so its
forget term is a no-op in expectation; neither is copied. The authors' attention-transfer term is
switched off in their code (``AT_beta = 0``) and is left out here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from unlearnctl import Method

from .common import BASELINE_STEPS, ERASEDIFF_DEFAULTS, BaselineOptions, StepsOptions, Trainer
from .retrain import class_names_of, train_options_for

if TYPE_CHECKING:
    from diffusers import UNet2DModel

    from unlearnctl import DiffusionModel, ForgetSplit, UnlearnRun


class _BlindspotOptions(StepsOptions):
    """blindspot's own options, shown after ``steps`` and before the shared ones (``common.py``)."""

    proxy_steps: int = Field(
        600, ge=1, description="training steps of the proxy from scratch on D_r (10% of ddpm-digits' 6000)"
    )
    alpha: float = Field(1.0, ge=0, description="weight of the remaining-set DDPM loss F")


class Blindspot(Method):
    """Blindspot: pull forget-set predictions toward a proxy trained from scratch on the remaining data only.

    A fresh proxy UNet is trained briefly on D_r; then the model matches the proxy on D_f and the
    DDPM target on D_r (Tarun et al., ICML 2023). See docs/baselines.md.
    """

    name = "blindspot"

    class Options(BaselineOptions, _BlindspotOptions):
        steps: int = Field(BASELINE_STEPS, ge=1, description="unlearning steps (docs/baselines.md: the budget)")
        lr: float = Field(ERASEDIFF_DEFAULTS.lr, gt=0, description="Adam learning rate of the unlearning steps")

    def check(self, model: DiffusionModel, split: ForgetSplit) -> None:
        """The proxy is trained with `unlearnctl train`'s recipe: refuse models it cannot build."""
        train_options_for(model, {"steps": self.options.proxy_steps})

    def train_proxy(self, run: UnlearnRun) -> UNet2DModel:
        """Step 1: a fresh UNet trained ``proxy_steps`` steps on D_r only (frozen, eval mode, on the device)."""
        import torch

        from unlearnctl import train_model

        model = run.model
        options = train_options_for(model, {"steps": self.options.proxy_steps})
        # its own seed, drawn from the run's generator: a new initialisation, not the model's
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=run.generator))
        result = train_model(
            run.split.remain, options, seed=seed, device=run.device, class_names=class_names_of(model),
            source=f"{model.source} (blindspot proxy)",
        )  # fmt: skip
        run.optimizer_steps += result.steps
        proxy = result.model.unet.to(run.device).eval()
        proxy.requires_grad_(False)
        return proxy

    def unlearn(self, run: UnlearnRun) -> None:
        import torch
        from torch.nn.functional import mse_loss

        from unlearnctl.diffusion import add_noise, predict_noise

        o = self.options
        model, unet = run.model, run.model.unet
        # 1. the proxy (before the optimizer: its training steps are its own)
        proxy = self.train_proxy(run)

        trainer = Trainer(run, o)
        for step in run.steps():
            # 2. a remain and a forget batch; one antithetic draw of t for both; eps ~ N(0, I) for each
            remain, forget = trainer.draw(forget_noise=True)
            x_t = add_noise(model.scheduler, forget.x0, forget.eps, forget.t)
            with run.autocast():
                # 3. forget term: || eps_theta(x_t, c_f) - sg[eps_proxy(x_t, c_f)] ||^2 (the proxy never saw D_f)
                with torch.no_grad():
                    target = predict_noise(proxy, x_t, forget.t, forget.c).float()
                loss_f = mse_loss(predict_noise(unet, x_t, forget.t, forget.c).float(), target)
                # 4. F on D_r: || eps - eps_theta(x_t, c_r) ||^2
                loss_r = trainer.ddpm_loss(remain)
            # 5. one Adam step on the sum: clip, step, EMA (the runner)
            grad_norm = trainer.step(loss_f + o.alpha * loss_r)
            run.log(step, {"loss_r": loss_r.detach(), "loss_f": loss_f.detach(), "grad_norm": grad_norm})
