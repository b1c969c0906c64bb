"""Shared DDPM pieces: timestep and noise sampling, the denoising loss, guided sampling.

Only what is identical by definition across methods lives here. Notation follows the DDPM paper
(Ho et al. 2020): ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` and the simple loss
``|| eps - eps_theta(x_t, t, c) ||^2`` (mean over pixels).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel

from .models.folder import DiffusionModel
from .runtime import stream_seed

Sampler = Literal["ddim", "ddpm"]


def sample_timesteps(
    n: int, num_train_timesteps: int, generator: torch.Generator | None = None, antithetic: bool = True
) -> torch.Tensor:
    """Draw ``n`` timesteps uniformly from ``{0..T-1}``.

    Antithetic sampling (the authors' setting): draw ``n // 2 + 1`` values of t, append ``T - 1 - t``
    and cut to ``n``; it lowers the variance of the loss estimate.
    """
    T = num_train_timesteps
    if not antithetic:
        return torch.randint(0, T, (n,), generator=generator)
    t = torch.randint(0, T, (n // 2 + 1,), generator=generator)
    return torch.cat([t, T - 1 - t])[:n]


def add_noise(scheduler: DDPMScheduler, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Forward process q(x_t | x_0): ``sqrt(abar_t) x0 + sqrt(1 - abar_t) noise``."""
    return scheduler.add_noise(x0, noise, t.to(x0.device))


def predict_noise(
    unet: UNet2DModel, x_t: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None
) -> torch.Tensor:
    """eps_theta(x_t, t, c); ``class_labels`` is ignored for an unconditional UNet."""
    if not unet.config.get("num_class_embeds"):
        class_labels = None
    return unet(x_t, t.to(x_t.device), class_labels=class_labels).sample


def ddpm_loss(
    unet: UNet2DModel,
    scheduler: DDPMScheduler,
    x0: torch.Tensor,
    class_labels: torch.Tensor | None,
    t: torch.Tensor,
    noise: torch.Tensor,
) -> torch.Tensor:
    """The simple DDPM loss ``E || eps - eps_theta(x_t, t, c) ||^2`` (mean over pixels and batch)."""
    x_t = add_noise(scheduler, x0, noise, t)
    return torch.nn.functional.mse_loss(predict_noise(unet, x_t, t, class_labels), noise)


def drop_labels(
    labels: torch.Tensor, p: float, null_class: int | None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Classifier-free guidance training: replace each label by the null class with probability ``p``."""
    if null_class is None or p <= 0:
        return labels
    mask = torch.rand(labels.shape, generator=generator) < p
    return torch.where(mask.to(labels.device), torch.full_like(labels, null_class), labels)


def make_sampling_scheduler(
    model: DiffusionModel, sampler: Sampler = "ddim", steps: int = 50, clip_sample: bool = False
) -> DDPMScheduler | DDIMScheduler:
    """A fresh scheduler for sampling, built from the model's training scheduler config.

    ``clip_sample`` defaults to False: with classifier-free guidance, clipping the predicted x_0 to
    [-1, 1] at every step wrecks class fidelity on small models (see docs/sampling.md).
    """
    cls = DDIMScheduler if sampler == "ddim" else DDPMScheduler
    scheduler = cls.from_config(model.scheduler.config, clip_sample=clip_sample)
    scheduler.set_timesteps(steps)
    return scheduler


def uses_step_noise(sampler: Sampler, eta: float) -> bool:
    """Whether a sampler draws noise at its steps: DDPM always, DDIM only with ``eta > 0``."""
    return sampler != "ddim" or eta != 0


def draw_step_seed(generator: torch.Generator | None) -> int:
    """The seed of a draw's step noise, taken from ``generator`` (one 63-bit integer): what :func:`sample`
    draws first, before the initial noise, when its sampler uses step noise and no ``step_seed`` is given."""
    return int(torch.randint(0, 2**63 - 1, (1,), generator=generator))


def image_generators(step_seed: int, first_index: int, count: int) -> list[torch.Generator]:
    """The step-noise generators of images ``first_index .. first_index + count - 1`` of a draw: one CPU
    generator per image, seeded by ``(step_seed, image index)`` alone, so an image's step noise does not
    depend on the batch, or the process, that computes it."""
    return [
        torch.Generator().manual_seed(stream_seed(step_seed, f"step-noise-{first_index + k}")) for k in range(count)
    ]


@torch.no_grad()
def sample(
    model: DiffusionModel,
    num: int,
    class_labels: torch.Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
    sampler: Sampler = "ddim",
    steps: int = 50,
    guidance: float = 2.0,
    eta: float = 0.0,
    clip_sample: bool = False,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    unet: UNet2DModel | None = None,
    noise: torch.Tensor | None = None,
    step_seed: int | None = None,
    first_index: int = 0,
) -> torch.Tensor:
    """Generate ``num`` images in ``[-1, 1]`` (``N x C x H x W``, float32, on CPU).

    For a conditional model, ``class_labels`` (length ``num``) selects the class of each image and
    classifier-free guidance uses the authors' convention ``eps = (1 + w) eps_c - w eps_null``
    (``guidance = w``; 0 turns it off). The conditional and unconditional passes run batched in one
    forward. The initial noise is drawn on CPU from ``generator`` so a seed gives the same images on
    every device. ``eta`` is DDIM's eta (1.0 = ancestral-like); ignored by the DDPM sampler. ``noise``
    (``N x C x H x W``): the initial noise to start from instead of drawing it; ``unlearnctl sample``
    streams a large ``num`` this way.

    Step noise (DDPM; DDIM with ``eta > 0``) is drawn per image: image ``i`` from its own generator seeded
    by ``(step_seed, first_index + i)`` (:func:`image_generators`), so an image does not depend on the
    batch size or on which process computes it. ``step_seed`` None: :func:`draw_step_seed` from
    ``generator``, before the initial noise. Part of a larger draw -- images ``first_index ..
    first_index + num - 1`` of it -- is therefore: the same ``step_seed``, that slice of the initial noise
    (``noise``), ``first_index``, and the same batches (the UNet's float results depend on the batch it
    runs in: give the same ``batch_size`` and start at a multiple of it to get identical bits).
    """
    unet = unet if unet is not None else model.unet
    conditional = model.conditional
    if conditional and class_labels is None:
        raise ValueError("a class-conditional model needs class_labels to sample")
    if not conditional:
        class_labels = None
    scheduler = make_sampling_scheduler(model, sampler, steps, clip_sample)
    shape = (num, model.channels, model.image_size, model.image_size)
    if noise is not None and tuple(noise.shape) != shape:
        raise ValueError(f"noise has shape {tuple(noise.shape)}, expected {shape}")
    stochastic = uses_step_noise(sampler, eta)
    if stochastic and step_seed is None:
        step_seed = draw_step_seed(generator)
    x_all = noise if noise is not None else torch.randn(shape, generator=generator)
    out = []
    guided = class_labels is not None and model.null_class is not None and guidance != 0
    step_kwargs = {"eta": eta} if sampler == "ddim" else {}
    was_training = unet.training
    unet.eval()
    try:
        # inference_mode: no autograd bookkeeping at all; the same float operations as under no_grad, and
        # the images returned (made below, outside it) are ordinary tensors.
        with torch.inference_mode():
            for start in range(0, num, batch_size):
                x = x_all[start : start + batch_size].to(device)
                labels = None
                if class_labels is not None:
                    labels = class_labels[start : start + batch_size].to(device)
                # one generator per image (diffusers draws a list's noise image by image, on CPU for CPU
                # generators, whatever x's device); none when the sampler draws no step noise
                generators: Any = None
                if stochastic and step_seed is not None:
                    generators = image_generators(step_seed, first_index + start, len(x))
                # guidance: the conditional and the null pass batched in one forward; labels built once a batch
                both = None
                if guided and labels is not None and model.null_class is not None:
                    both = torch.cat([labels, torch.full_like(labels, model.null_class)])
                for t in scheduler.timesteps:
                    if both is not None:
                        t_both = torch.full((2 * len(x),), int(t), dtype=torch.long, device=device)
                        eps_c, eps_u = unet(torch.cat([x, x]), t_both, class_labels=both).sample.chunk(2)
                        eps = (1 + guidance) * eps_c - guidance * eps_u
                    else:
                        t_batch = torch.full((len(x),), int(t), dtype=torch.long, device=device)
                        eps = predict_noise(unet, x, t_batch, labels)
                    x = scheduler.step(eps, t, x, generator=generators, **step_kwargs).prev_sample
                out.append(x.float().cpu())
    finally:
        unet.train(was_training)
    if not out:
        return torch.empty(shape)
    return torch.cat(out).clamp(-1, 1)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """``[-1, 1]`` float images to ``uint8`` in ``[0, 255]`` (same shape)."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
