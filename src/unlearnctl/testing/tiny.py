"""Tiny real objects for fast tests (for unlearnctl's own tests and for plugin authors).

Everything here is real diffusers / unlearnctl code, only small: a UNet of a few thousand
parameters, an in-memory image set of simple class-dependent patterns, and a judge that reads them.
All of it is deterministic under its ``seed``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from diffusers import DDPMScheduler, UNet2DModel

from ..data.sets import TensorImageSet
from ..models.folder import DiffusionModel

if TYPE_CHECKING:
    from ..judge.classifier import Judge


def tiny_unet(
    conditional: bool = True, num_classes: int = 3, image_size: int = 8, channels: int = 1, seed: int = 0
) -> UNet2DModel:
    """A real ``UNet2DModel`` of about 42k parameters (two levels, no attention).

    A conditional UNet gets ``num_classes + 1`` class embeddings: the last id is the null class.
    """
    from ..training import build_unet

    return build_unet(
        "tiny", image_size=image_size, channels=channels, num_classes=num_classes if conditional else 0, seed=seed
    )


def tiny_model(
    conditional: bool = True,
    num_classes: int = 3,
    image_size: int = 8,
    channels: int = 1,
    seed: int = 0,
    num_train_timesteps: int = 1000,
) -> DiffusionModel:
    """A :class:`DiffusionModel` around :func:`tiny_unet` with a linear-beta ``DDPMScheduler``."""
    unet = tiny_unet(conditional, num_classes, image_size, channels, seed)
    scheduler = DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule="linear", clip_sample=False)
    return DiffusionModel(
        unet=unet.eval(),
        scheduler=scheduler,
        source="tiny",
        class_names=[str(c) for c in range(num_classes)] if conditional else [],
    )


def tiny_image_set(
    n_per_class: int = 8,
    num_classes: int = 3,
    image_size: int = 8,
    channels: int = 1,
    seed: int = 0,
    name: str = "tiny",
) -> TensorImageSet:
    """An in-memory labelled image set whose classes are easy to tell apart.

    Class ``c`` is a bright horizontal band at a class-dependent height, plus a little noise, in
    [-1, 1]. Ids are ``tiny-0000``...; metadata ``{"label": c, "parity": c % 2, "odd": bool}``.
    """
    g = torch.Generator().manual_seed(seed)
    n = n_per_class * num_classes
    labels = [i % num_classes for i in range(n)]
    images = torch.full((n, channels, image_size, image_size), -1.0)
    band = max(1, image_size // (num_classes + 1))
    for i, c in enumerate(labels):
        top = (c * image_size) // num_classes
        images[i, :, top : top + band, :] = 1.0
    images = (images + 0.1 * torch.randn(images.shape, generator=g)).clamp(-1, 1)
    return TensorImageSet(
        images,
        ids=[f"{name}-{i:04d}" for i in range(n)],
        metadata=[{"label": c, "parity": c % 2, "odd": bool(c % 2)} for c in labels],
        class_names=[str(c) for c in range(num_classes)],
        name=name,
        version="1",
    )


def tiny_judge(num_classes: int = 3, image_size: int = 8, channels: int = 1, seed: int = 0, epochs: int = 4) -> Judge:
    """A real :class:`~unlearnctl.judge.classifier.Judge` trained briefly on :func:`tiny_image_set` (about a second).

    It reads the tiny set's class patterns well (``epochs=0``: untrained, random weights).
    """
    from ..judge.classifier import Judge, train_judge

    if epochs <= 0:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return Judge(num_classes, None, image_size, channels).eval()
    train = tiny_image_set(16, num_classes, image_size, channels, seed=seed)
    test = tiny_image_set(4, num_classes, image_size, channels, seed=seed + 1)
    judge, _ = train_judge(train, test, epochs=epochs, batch_size=16, seed=seed)
    return judge
