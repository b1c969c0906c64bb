"""Membership-inference scores of a diffusion model: the loss attack, PIA and SecMI (t-error).

Each function returns one score per image, a float32 CPU tensor; a **higher score always means "more
likely a member"** (each attack's error measure, negated). The attacks are white-box: they call the
UNet's noise prediction ``eps_theta(x_t, t, c)``, with ``c`` each image's class on a class-conditional
UNet (``labels``) and no label on an unconditional one (``labels=None``).

Notation (Ho et al. 2020, "Denoising Diffusion Probabilistic Models"): ``abar_t`` is
``scheduler.alphas_cumprod[t]``, ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps``. Images are
``N x C x H x W`` in ``[-1, 1]`` on the CPU; they go through the UNet ``batch_size`` at a time on the UNet's
device, in eval mode, under ``torch.inference_mode()`` (the UNet's train/eval mode is restored after).
A score does not depend on the batch size beyond float rounding (the UNet's kernels may sum in a different
order for a different batch).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from itertools import pairwise
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from diffusers import DDPMScheduler, UNet2DModel


def loss_scores(
    unet: UNet2DModel,
    scheduler: DDPMScheduler,
    images: torch.Tensor,
    labels: torch.Tensor | None,
    *,
    timesteps: Sequence[int],
    generator: torch.Generator,
    batch_size: int = 256,
) -> torch.Tensor:
    """The loss attack: minus the denoising error, averaged over the given timesteps.

    Matsumoto, Miura & Yanai 2023, "Membership Inference Attacks against Diffusion Models" (IEEE SPW), and
    Carlini et al. 2023, "Extracting Training Data from Diffusion Models" (USENIX Security): a model fits
    the images it was trained on better than unseen ones of the same distribution.

    For each ``t`` of ``timesteps``, in order, one noise ``eps ~ N(0, I)`` per image is drawn from
    ``generator`` (a CPU generator; one ``N x C x H x W`` draw for the whole set per ``t``, so the same
    generator seed gives every model exactly the same noise, whatever the batch size), and

        score(x_0) = - 1/|timesteps| sum_t  mean_pixels (eps - eps_theta(x_t, t, c))^2,
        x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps.

    Memory: one timestep's noise for the whole set at a time (``N x C x H x W`` float32).
    """
    import torch

    from unlearnctl.diffusion import add_noise, predict_noise

    _check_inputs(unet, images, labels, batch_size)
    num_t = _num_train_timesteps(scheduler)
    steps = [int(t) for t in timesteps]
    if not steps:
        raise ValueError("timesteps is empty: the loss attack needs at least one timestep")
    for t in steps:
        _check_timestep(t, num_t, "timesteps")
    device, dtype = _place(unet)
    total = torch.zeros(len(images), dtype=torch.float64)
    with _scoring(unet):
        for t in steps:
            # 1. this timestep's noise for every image, in image order, from the caller's generator
            eps_all = torch.randn(images.shape, generator=generator)
            for sl in _batches(len(images), batch_size):
                x0, eps = images[sl].to(device, dtype), eps_all[sl].to(device, dtype)
                c = _labels(labels, sl, device)
                t_batch = torch.full((len(x0),), t, dtype=torch.long, device=device)
                # 2. x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps; the per-image mean squared error of eps_theta
                pred = predict_noise(unet, add_noise(scheduler, x0, eps, t_batch), t_batch, c)
                total[sl] += ((pred.float() - eps.float()) ** 2).flatten(1).mean(1).double().cpu()
    # 3. minus the mean over timesteps: the lower the loss, the more likely a member
    return (-total / len(steps)).float()


def pia_scores(
    unet: UNet2DModel,
    scheduler: DDPMScheduler,
    images: torch.Tensor,
    labels: torch.Tensor | None,
    *,
    t: int,
    p: float = 4.0,
    batch_size: int = 256,
) -> torch.Tensor:
    """PIA, the proximal-initialisation attack: minus the ``l_p`` distance of two of the model's own noise predictions.

    Kong, Li, Liu & Liu 2024, "An Efficient Membership Inference Attack for the Diffusion Model by Proximal
    Initialization" (ICLR). Instead of random noise, the attack noises ``x_0`` with the model's own
    prediction at ``t = 0``; on a training image the trajectory is then nearly deterministic, and the model
    recovers that noise at ``t``:

        eps_0    = eps_theta(x_0, 0, c)
        x_t      = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps_0
        score    = - || eps_theta(x_t, t, c) - eps_0 ||_p      (over all pixels of the image)

    ``p = 4`` is the paper's choice. Deterministic: no random draw. Two UNet passes per image.
    """
    import torch

    from unlearnctl.diffusion import add_noise, predict_noise

    _check_inputs(unet, images, labels, batch_size)
    _check_timestep(t, _num_train_timesteps(scheduler), "t")
    if not p > 0:
        raise ValueError(f"p must be > 0, got {p}")
    device, dtype = _place(unet)
    out = torch.empty(len(images), dtype=torch.float32)
    with _scoring(unet):
        for sl in _batches(len(images), batch_size):
            x0, c = images[sl].to(device, dtype), _labels(labels, sl, device)
            zero = torch.zeros(len(x0), dtype=torch.long, device=device)
            t_batch = torch.full((len(x0),), t, dtype=torch.long, device=device)
            # 1. the proximal initialisation: the model's noise prediction at t = 0
            eps0 = predict_noise(unet, x0, zero, c)
            # 2. x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps_0, and the prediction there
            eps_t = predict_noise(unet, add_noise(scheduler, x0, eps0, t_batch), t_batch, c)
            # 3. minus the l_p norm of the difference, per image
            dist = torch.linalg.vector_norm((eps_t.float() - eps0.float()).flatten(1), ord=p, dim=1)
            out[sl] = -dist.cpu()
    return out


def secmi_scores(
    unet: UNet2DModel,
    scheduler: DDPMScheduler,
    images: torch.Tensor,
    labels: torch.Tensor | None,
    *,
    t: int,
    interval: int = 10,
    batch_size: int = 256,
) -> torch.Tensor:
    """SecMI_stat: minus the t-error, how far one deterministic step out and back lands from its start.

    Duan, Kong, Wang, Shi & Xu 2023, "Are Diffusion Models Vulnerable to Membership Inference Attacks?"
    (ICML). With the deterministic DDIM move (Song, Meng & Ermon 2021, "Denoising Diffusion Implicit
    Models", eta = 0) from timestep ``a`` to timestep ``b`` (either direction)

        D(x, a -> b) = sqrt(abar_b) x0_hat + sqrt(1 - abar_b) e,   e = eps_theta(x, a, c),
        x0_hat = (x - sqrt(1 - abar_a) e) / sqrt(abar_a),

    the attack

    1. inverts ``x_0`` to ``x~_t`` by DDIM moves along ``0, k, 2k, ..., t`` (``k = interval``; a last,
       shorter move when ``t`` is not a multiple of ``k``; ``x_0`` enters as the state at timestep 0, as in
       the authors' code);
    2. moves one step further, ``x~_{t+k} = D(x~_t, t -> t + k)``, and back, ``x^_t = D(x~_{t+k}, t + k -> t)``;
    3. scores ``- || x^_t - x~_t ||^2`` (squared l2 norm over all pixels of the image).

    The paper's CIFAR-10 setting, ``t_SEC = 100`` and ``k = 10``, is ``t = 90, interval = 10`` here: the
    authors' code inverts to ``t_SEC - k``, steps out to ``t_SEC`` and back. Deterministic: no random draw.
    ``ceil(t / k) + 2`` UNet passes per image. Needs ``0 <= t`` and ``t + interval < T``. The states are kept
    in float64 (float32 on Apple's ``mps``): the t-error is a small difference of two states of norm ~1.
    """
    import torch

    _check_inputs(unet, images, labels, batch_size)
    num_t = _num_train_timesteps(scheduler)
    if interval < 1:
        raise ValueError(f"interval must be >= 1, got {interval}")
    if t < 0 or t + interval >= num_t:
        raise ValueError(
            f"SecMI needs 0 <= t and t + interval < {num_t} (the training timesteps), got t={t}, interval={interval}"
        )
    # the inversion's grid: 0, k, 2k, ..., t
    grid = [*range(0, t, interval), t] if t > 0 else [0]
    device, _ = _place(unet)
    abar = scheduler.alphas_cumprod.detach().to("cpu", torch.float64)
    # float32 would round the t-error, a small difference of two states of norm ~1, to a few digits; mps has no
    # float64. The UNet itself runs in its own dtype.
    state_dtype = torch.float32 if device.type == "mps" else torch.float64
    out = torch.empty(len(images), dtype=torch.float32)
    with _scoring(unet):
        for sl in _batches(len(images), batch_size):
            x, c = images[sl].to(device, state_dtype), _labels(labels, sl, device)
            # 1. deterministic DDIM inversion x_0 -> x~_t
            for a, b in pairwise(grid):
                x = _ddim_move(unet, abar, x, a, b, c)
            x_t = x
            # 2. one step out to t + k and back to t
            x_back = _ddim_move(unet, abar, _ddim_move(unet, abar, x_t, t, t + interval, c), t + interval, t, c)
            # 3. minus the squared l2 distance of the round trip
            out[sl] = -((x_back - x_t) ** 2).flatten(1).sum(1).float().cpu()
    return out


def _ddim_move(
    unet: UNet2DModel, abar: torch.Tensor, x: torch.Tensor, a: int, b: int, c: torch.Tensor | None
) -> torch.Tensor:
    """The deterministic DDIM move of ``x`` from timestep ``a`` to ``b`` (eta = 0; either direction)."""
    import math

    import torch

    from unlearnctl.diffusion import predict_noise

    t = torch.full((len(x),), a, dtype=torch.long, device=x.device)
    e = predict_noise(unet, x.to(_place(unet)[1]), t, c).to(x.dtype)
    abar_a, abar_b = float(abar[a]), float(abar[b])
    x0_hat = (x - math.sqrt(1 - abar_a) * e) / math.sqrt(abar_a)
    return math.sqrt(abar_b) * x0_hat + math.sqrt(1 - abar_b) * e


@contextmanager
def _scoring(unet: UNet2DModel) -> Iterator[None]:
    """Eval mode and ``torch.inference_mode()`` while scoring; the UNet's mode is restored after."""
    import torch

    was_training = unet.training
    unet.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        unet.train(was_training)


def _check_inputs(unet: UNet2DModel, images: torch.Tensor, labels: torch.Tensor | None, batch_size: int) -> None:
    if images.dim() != 4:
        raise ValueError(f"images must be N x C x H x W, got shape {tuple(images.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if labels is not None and tuple(labels.shape) != (len(images),):
        raise ValueError(f"labels must hold one class id per image ({len(images)}), got shape {tuple(labels.shape)}")
    if labels is None and unet.config.get("num_class_embeds"):
        raise ValueError("a class-conditional UNet needs labels (one class id per image)")


def _num_train_timesteps(scheduler: DDPMScheduler) -> int:
    return int(scheduler.config.num_train_timesteps)


def _check_timestep(t: int, num_t: int, name: str) -> None:
    if not 0 <= t < num_t:
        raise ValueError(f"{name}: timestep {t} is outside the model's training timesteps 0..{num_t - 1}")


def _place(unet: UNet2DModel) -> tuple[torch.device, torch.dtype]:
    """The device and floating dtype of the UNet's weights: where and in what its inputs go."""
    weight = next(unet.parameters())
    return weight.device, weight.dtype


def _batches(n: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def _labels(labels: torch.Tensor | None, sl: slice, device: Any) -> torch.Tensor | None:
    return None if labels is None else labels[sl].to(device)
