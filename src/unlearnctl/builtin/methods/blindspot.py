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

import torch
from pydantic import Field
from torch.nn.functional import mse_loss

from unlearnctl import Method, Options
from unlearnctl.diffusion import add_noise, ddpm_loss, drop_labels, predict_noise
from unlearnctl.training import train_model

from .erasediff import DEFAULT_STEPS, EraseDiff
from .retrain import class_names_of, train_options_for

if TYPE_CHECKING:
    from diffusers import UNet2DModel

    from unlearnctl import DiffusionModel, ForgetSplit
    from unlearnctl.runner import UnlearnRun


#: erasediff's options: the shared defaults (optimizer, batches, clipping, EMA) are taken from them
_ERASEDIFF = EraseDiff.Options()


class Blindspot(Method):
    """Blindspot: pull forget-set predictions toward a proxy trained from scratch on the remaining data only.

    A fresh proxy UNet is trained briefly on D_r; then the model matches the proxy on D_f and the
    DDPM target on D_r (Tarun et al., ICML 2023). See docs/baselines.md.
    """

    name = "blindspot"

    class Options(Options):
        steps: int = Field(DEFAULT_STEPS, ge=1, description="unlearning steps (the same budget as erasediff's default)")
        proxy_steps: int = Field(
            600, ge=1, description="training steps of the proxy from scratch on D_r (10% of ddpm-digits' 6000)"
        )
        alpha: float = Field(1.0, ge=0, description="weight of the remaining-set DDPM loss F")
        lr: float = Field(_ERASEDIFF.lr, gt=0, description="Adam learning rate of the unlearning steps")
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
        """The proxy is trained with `unlearnctl train`'s recipe: refuse models it cannot build."""
        train_options_for(model, {"steps": self.options.proxy_steps})

    def train_proxy(self, run: UnlearnRun) -> UNet2DModel:
        """Step 1: a fresh UNet trained ``proxy_steps`` steps on D_r only (frozen, eval mode, on the device)."""
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
        o = self.options
        model, unet = run.model, run.model.unet
        # 1. the proxy (before the optimizer: its training steps are its own)
        proxy = self.train_proxy(run)

        params = [p for p in unet.parameters() if p.requires_grad]
        optimizer = run.make_optimizer(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
        run.use_ema(o.ema_decay if o.save_ema else 0.0)  # the EMA is kept only when it is saved
        remain = run.batches("remain", o.remain_batch_size)
        forget = run.batches("forget", o.forget_batch_size)
        for step in run.steps():
            # 2. a remain and a forget batch; one antithetic draw of t for both; eps ~ N(0, I) for each
            x_r, c_r = next(remain)
            x_f, c_f = next(forget)
            t = run.timesteps(max(len(x_r), len(x_f)), o.antithetic)
            t_r, t_f = t[: len(x_r)], t[: len(x_f)]
            eps_r, eps_f = run.randn_like(x_r), run.randn_like(x_f)
            c_r = drop_labels(c_r, o.class_dropout, model.null_class, run.generator) if model.conditional else None
            c_f = c_f if model.conditional else None
            x_t = add_noise(model.scheduler, x_f, eps_f, t_f)
            with run.autocast():
                # 3. forget term: || eps_theta(x_t, c_f) - sg[eps_proxy(x_t, c_f)] ||^2 (the proxy never saw D_f)
                with torch.no_grad():
                    target = predict_noise(proxy, x_t, t_f, c_f).float()
                loss_f = mse_loss(predict_noise(unet, x_t, t_f, c_f).float(), target)
                # 4. F on D_r: || eps - eps_theta(x_t, c_r) ||^2
                loss_r = ddpm_loss(unet, model.scheduler, x_r, c_r, t_r, eps_r)
            # 5. one Adam step on the sum: clip, step, EMA (the runner)
            grad_norm = run.backward_step(optimizer, loss_f + o.alpha * loss_r, clip=o.grad_clip)
            run.log(step, {"loss_r": loss_r.item(), "loss_f": loss_f.item(), "grad_norm": grad_norm})
