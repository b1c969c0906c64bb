"""The relearning attack: fine-tune a copy of an unlearned model on a few images, and watch what comes back.

Unlearning that only hides a concept, rather than removing it, lets a little fine-tuning bring it back --
with a handful of the forgotten images ("concept resurgence": Suriyakumar et al. 2024, "Unstable
Unlearning: The Hidden Risk of Concept Resurgence in Diffusion Models"; for language models, Hu et al.
2025, "Unlearning or Obfuscating? Jogging the Memory of Unlearned LLMs via Benign Relearning", ICLR), or
even with images of other classes only (the benign variant). :func:`relearn` is the fine-tuning loop both
variants share; what is measured along the way is the caller's ``evaluate``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from diffusers import DDPMScheduler, UNet2DModel

#: gradient-norm clip of the fine-tuning steps
GRAD_CLIP = 1.0


def relearn(
    unet: UNet2DModel,
    scheduler: DDPMScheduler,
    images: torch.Tensor,
    labels: torch.Tensor | None,
    *,
    steps: int,
    eval_at: Sequence[int],
    lr: float,
    batch_size: int,
    generator: torch.Generator,
    evaluate: Callable[[int, Any], dict[str, Any]],
) -> list[dict[str, Any]]:
    """Fine-tune a deep copy of ``unet`` on ``images`` with the DDPM loss; evaluate it at the steps ``eval_at``.

    The caller's ``unet`` is not changed (nor its mode). The copy trains every weight, in train mode, with
    Adam (learning rate ``lr``, torch's other defaults) on the plain DDPM loss (Ho et al. 2020)
    ``|| eps - eps_theta(x_t, t, c) ||^2`` (:func:`unlearnctl.diffusion.ddpm_loss`), the gradient norm
    clipped to 1.0. Step ``s`` (1-based) draws from ``generator`` (a CPU generator), in this order:

    1. its ``batch_size`` images: the next ones of an endless stream of shuffled epochs of ``images``
       (a fresh permutation of all of them whenever the last one runs out; with fewer images than
       ``batch_size``, a batch holds each image several times);
    2. one timestep per image, uniform on ``0 .. T-1``;
    3. the noise ``eps ~ N(0, I)`` of the batch.

    ``evaluate(s, unet_copy)`` is called, with the copy in eval mode, after ``s`` steps for each ``s`` in
    ``eval_at`` (0: before any step; every ``s`` at most ``steps``; duplicates once); nothing is
    disabled around it (it may use gradients; wrap its scoring in ``torch.inference_mode()``). Returns
    ``[{"step": s, **evaluate(s, unet_copy)}, ...]`` in increasing ``s``.
    ``labels``: one class id per image for a class-conditional UNet, None for an unconditional one.
    """
    import copy

    import torch

    from unlearnctl.diffusion import ddpm_loss

    checkpoints = sorted({int(s) for s in eval_at})
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if any(s < 0 or s > steps for s in checkpoints):
        raise ValueError(f"eval_at must name steps in 0..{steps}, got {list(eval_at)}")
    check_training_inputs(unet, images, labels, batch_size, lr)
    model = copy.deepcopy(unet).requires_grad_(True)
    device = next(model.parameters()).device
    params = list(model.parameters())
    optimizer = torch.optim.Adam(params, lr=lr)
    stream = EpochStream(len(images), generator)
    num_t = int(scheduler.config.num_train_timesteps)
    records: list[dict[str, Any]] = []

    def checkpoint(step: int) -> None:
        model.eval()
        records.append({"step": step, **evaluate(step, model)})
        model.train()

    if 0 in checkpoints:
        checkpoint(0)
    model.train()
    with torch.enable_grad():
        for step in range(1, steps + 1):
            # 1. a batch of the stream of shuffled epochs, then t ~ U{0..T-1} and eps ~ N(0, I), all from generator
            idx = stream.next(batch_size)
            t = torch.randint(0, num_t, (len(idx),), generator=generator)
            eps = torch.randn((len(idx), *images.shape[1:]), generator=generator)
            x0 = images[idx].to(device, torch.float32)
            c = None if labels is None else labels[idx].to(device)
            # 2. the DDPM loss || eps - eps_theta(x_t, t, c) ||^2 of the copy
            loss = ddpm_loss(model, scheduler, x0, c, t.to(device), eps.to(device))
            # 3. Adam step on the clipped gradient
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
            optimizer.step()
            if step in checkpoints:
                checkpoint(step)
    model.eval()
    return records


class EpochStream:
    """Indices ``0 .. n-1`` in an endless stream of shuffled epochs, each permutation drawn from ``generator``."""

    def __init__(self, n: int, generator: torch.Generator) -> None:
        if n < 1:
            raise ValueError("no images to draw batches from")
        self.n, self.generator = n, generator
        self.pending: list[int] = []

    def next(self, size: int) -> torch.Tensor:
        """The next ``size`` indices (a new permutation is drawn whenever the current one runs out)."""
        import torch

        while len(self.pending) < size:
            self.pending += torch.randperm(self.n, generator=self.generator).tolist()
        out, self.pending = self.pending[:size], self.pending[size:]
        return torch.tensor(out, dtype=torch.long)


def check_training_inputs(
    unet: UNet2DModel,
    images: torch.Tensor,
    labels: torch.Tensor | None,
    batch_size: int,
    lr: float,
    *,
    labels_needed: bool = True,
) -> None:
    """Refuse, in one line, images, labels, a batch size or a learning rate the fine-tuning loops cannot use.

    ``labels_needed``: whether a class-conditional UNet needs ``labels`` (not when the caller conditions it
    otherwise, as the embedding attack does).
    """
    if images.dim() != 4 or len(images) == 0:
        raise ValueError(f"images must be a non-empty N x C x H x W tensor, got shape {tuple(images.shape)}")
    if labels is not None and tuple(labels.shape) != (len(images),):
        raise ValueError(f"labels must hold one class id per image ({len(images)}), got shape {tuple(labels.shape)}")
    if labels is None and labels_needed and unet.config.get("num_class_embeds"):
        raise ValueError("a class-conditional UNet needs labels (one class id per image)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
