"""Generating images and writing them: ``unlearnctl sample`` and the grids other commands save.

- :class:`SampleOptions`: the sampler settings (defaults are the tool's: DDIM, 50 steps, eta 0,
  guidance w = 2.0, no clipping -- see docs/sampling.md for the measurements behind them).
- :func:`class_labels_for`: which class each of N images gets (one class, or all classes evenly).
- :func:`save_images`, :func:`save_grid`, :func:`save_labelled_grid`: PNG files.
- :func:`sample_to_folder`: the whole ``sample`` command (writes a folder that is whole or absent).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field

from .components import Options
from .diffusion import sample
from .errors import UsageError
from .grids import to_pil
from .models.folder import DiffusionModel


class SampleOptions(Options):
    """How images are generated (recorded with every output)."""

    sampler: Literal["ddim", "ddpm"] = Field("ddim", description="DDIM (deterministic with eta 0) or DDPM ancestral")
    steps: int = Field(50, ge=1, le=10_000, description="denoising steps")
    guidance: float = Field(2.0, ge=0, description="classifier-free guidance w: eps = (1+w) eps_c - w eps_null")
    eta: float = Field(0.0, ge=0, le=1, description="DDIM eta (0 deterministic, 1 ancestral-like); DDPM ignores it")
    clip_sample: bool = Field(False, description="clip the predicted x0 to [-1, 1] each step (hurts guidance)")
    batch_size: int = Field(256, ge=1, description="images per forward pass (results do not depend on it)")
    channels_last: bool = Field(False, description="the UNet's weights in channels-last memory format (GPUs)")
    compile: bool = Field(False, description="torch.compile of the UNet's forward (long GPU runs)")


def generate(
    model: DiffusionModel,
    labels: torch.Tensor | None,
    num: int,
    options: SampleOptions | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """``num`` images in [-1, 1] from ``model`` with ``options``, seeded (same seed, same images)."""
    o = options or SampleOptions()
    if o.steps > model.scheduler.config.num_train_timesteps:
        raise UsageError(
            f"--steps {o.steps} is more than the model's {model.scheduler.config.num_train_timesteps} diffusion steps"
        )
    model.unet.to(device)
    try:
        return sample(
            model, num, labels, generator=torch.Generator().manual_seed(seed), sampler=o.sampler, steps=o.steps,
            guidance=o.guidance, eta=o.eta, clip_sample=o.clip_sample, batch_size=o.batch_size, device=device,
        )  # fmt: skip
    finally:
        model.unet.to("cpu")


def resolve_model_class(model: DiffusionModel, value: str | int) -> int:
    """``--class``: a class name or id of a conditional model; ``UsageError`` otherwise."""
    if not model.conditional:
        raise UsageError(f"model '{model.source}' is unconditional: it has no classes; leave out --class")
    names = model.class_names or [str(c) for c in range(model.num_classes)]
    text = str(value).strip()
    if text in names:
        return names.index(text)
    if text.isdigit() and int(text) < model.num_classes:
        return int(text)
    listing = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
    raise UsageError(
        f"class '{text}' does not exist in model '{model.source}': give an id 0..{model.num_classes - 1} "
        f"or a name ({listing})"
    )


def class_labels_for(model: DiffusionModel, num: int, class_id: int | None = None) -> torch.Tensor | None:
    """The class of each of ``num`` images: all ``class_id``, or every class evenly, sorted by class.

    None for an unconditional model. When ``num`` is not a multiple of the number of classes, the
    first classes get one image more.
    """
    if not model.conditional:
        return None
    if class_id is not None:
        return torch.full((num,), class_id, dtype=torch.long)
    k = model.num_classes
    return torch.tensor(sorted(i % k for i in range(num)), dtype=torch.long)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "x"


def image_file_name(index: int, count: int, label: int | None = None, class_names: list[str] | None = None) -> str:
    """The file name of image ``index`` of ``count``: ``0000.png``, or ``0000_<class>.png`` with a label
    (at least four digits, as many as ``count - 1`` has)."""
    width = max(4, len(str(count - 1)))
    suffix = ""
    if label is not None:
        suffix = "_" + _safe(class_names[label] if class_names and label < len(class_names) else str(label))
    return f"{index:0{width}d}{suffix}.png"


def save_images(
    images: torch.Tensor, folder: Path, labels: torch.Tensor | None = None, class_names: list[str] | None = None
) -> list[Path]:
    """Write each image as a real-size PNG: ``0000.png``, or ``0000_<class>.png`` when labels are given."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        label = int(labels[i]) if labels is not None else None
        path = folder / image_file_name(i, len(images), label, class_names)
        to_pil(image).save(path)
        paths.append(path)
    return paths
