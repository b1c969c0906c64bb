"""The ``null-target`` method: make the forgotten classes generate what the unconditional model does.

For a class-conditional model trained with classifier-free guidance, the null class id gives the
unconditional prediction eps_theta(x_t, t, null). On forget batches we pull the prediction under
the forgotten class towards it (held fixed with a stop-gradient), while the ordinary DDPM loss on
remain batches keeps the other classes intact:

    loss = E_{D_r} || eps - eps_theta(x_t, t, c) ||^2
         + weight * E_{D_f} || eps_theta(x_t, t, c_f) - sg[eps_theta(x_t, t, null)] ||^2
"""

from __future__ import annotations

import torch
from pydantic import Field

import unlearnctl
from unlearnctl import diffusion


class NullTarget(unlearnctl.Method):
    """Steer the forgotten classes to the unconditional (null-class) prediction, keeping the rest."""

    name = "null-target"
    conditional_only = True

    class Options(unlearnctl.Options):
        steps: int = Field(300, ge=1, description="optimizer steps (--steps overrides it)")
        lr: float = Field(1e-4, gt=0, description="Adam learning rate")
        batch_size: int = Field(64, ge=1, description="images per remain batch and per forget batch")
        weight: float = Field(1.0, ge=0, description="weight of the forget loss against the remain DDPM loss")
        clip: float = Field(1.0, gt=0, description="gradient-norm clip")

    def check(self, model: unlearnctl.DiffusionModel, split: unlearnctl.ForgetSplit) -> None:
        # called by `forget` before anything is written: refuse what the update cannot work with
        if model.null_class is None:
            raise unlearnctl.UsageError(
                "method 'null-target' needs a class-conditional model with a null class: pick another model"
            )

    def unlearn(self, run: unlearnctl.UnlearnRun) -> None:
        o = self.options
        model = run.model
        unet, scheduler = model.unet, model.scheduler
        optimizer = run.make_optimizer(unet.parameters(), lr=o.lr)
        remain = run.batches("remain", o.batch_size)
        forget = run.batches("forget", o.batch_size)

        for step in run.steps():
            # 1. utility: the ordinary DDPM loss on a remain batch
            x_r, c_r = next(remain)
            noise_r, t_r = run.sample_noise_and_t(x_r)
            loss_remain = diffusion.ddpm_loss(unet, scheduler, x_r, c_r, t_r, noise_r)

            # 2. erasure: the forget-class prediction should match the null-class one, held fixed
            x_f, c_f = next(forget)
            noise_f, t_f = run.sample_noise_and_t(x_f)
            x_t = diffusion.add_noise(scheduler, x_f, noise_f, t_f)
            with torch.no_grad():
                target = diffusion.predict_noise(unet, x_t, t_f, torch.full_like(c_f, model.null_class))
            loss_forget = torch.nn.functional.mse_loss(diffusion.predict_noise(unet, x_t, t_f, c_f), target)

            # 3. one optimizer step on the sum
            loss = loss_remain + o.weight * loss_forget
            run.backward_step(optimizer, loss, clip=o.clip)
            run.log(
                step,
                {"loss": loss.detach(), "loss_remain": loss_remain.detach(), "loss_forget": loss_forget.detach()},
            )
