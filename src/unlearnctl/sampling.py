"""Generating images and writing them: ``unlearnctl sample`` and the grids other commands save.

- :class:`SampleOptions`: the sampler settings (defaults are the tool's: DDIM, 50 steps, eta 0,
  guidance w = 2.0, no clipping -- see docs/sampling.md for the measurements behind them).
- :func:`class_labels_for`: which class each of N images gets (one class, or all classes evenly).
- :func:`save_images`, :func:`save_grid`, :func:`save_labelled_grid`: PNG files.
- :func:`sample_to_folder`: the whole ``sample`` command (writes a folder that is whole or absent).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from PIL import Image, ImageDraw, ImageFont
from pydantic import Field

from .components import Options
from .diffusion import sample, to_uint8
from .errors import UsageError
from .models import DiffusionModel

GRID_FILE = "grid.png"
INFO_FILE = "samples.json"
#: grid tiles are upscaled (nearest neighbour) to at least this many pixels a side
GRID_MIN_TILE = 48


class SampleOptions(Options):
    """How images are generated (recorded with every output)."""

    sampler: Literal["ddim", "ddpm"] = Field("ddim", description="DDIM (deterministic with eta 0) or DDPM ancestral")
    steps: int = Field(50, ge=1, le=10_000, description="denoising steps")
    guidance: float = Field(2.0, ge=0, description="classifier-free guidance w: eps = (1+w) eps_c - w eps_null")
    eta: float = Field(0.0, ge=0, le=1, description="DDIM eta (0 deterministic, 1 ancestral-like); DDPM ignores it")
    clip_sample: bool = Field(False, description="clip the predicted x0 to [-1, 1] each step (hurts guidance)")
    batch_size: int = Field(256, ge=1, description="images per forward pass (results do not depend on it)")


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


def _to_pil(image: torch.Tensor) -> Image.Image:
    """One ``C x H x W`` image in [-1, 1] as a PIL image (grey for 1 channel, RGB for 3)."""
    array = to_uint8(image).permute(1, 2, 0).numpy()
    return Image.fromarray(array[:, :, 0], mode="L") if array.shape[2] == 1 else Image.fromarray(array, mode="RGB")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "x"


def save_images(
    images: torch.Tensor, folder: Path, labels: torch.Tensor | None = None, class_names: list[str] | None = None
) -> list[Path]:
    """Write each image as a real-size PNG: ``0000.png``, or ``0000_<class>.png`` when labels are given."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    width = max(4, len(str(len(images) - 1)))
    paths = []
    for i, image in enumerate(images):
        suffix = ""
        if labels is not None:
            c = int(labels[i])
            suffix = "_" + _safe(class_names[c] if class_names and c < len(class_names) else str(c))
        path = folder / f"{i:0{width}d}{suffix}.png"
        _to_pil(image).save(path)
        paths.append(path)
    return paths


def _upscale(images: torch.Tensor, min_tile: int) -> torch.Tensor:
    scale = max(1, math.ceil(min_tile / images.shape[-1]))
    return torch.nn.functional.interpolate(images, scale_factor=scale, mode="nearest") if scale > 1 else images


def make_grid_image(images: torch.Tensor, nrow: int, min_tile: int = GRID_MIN_TILE, padding: int = 2) -> Image.Image:
    """A PIL grid of ``images`` (``nrow`` per row), tiles upscaled with nearest neighbour."""
    from torchvision.utils import make_grid

    if len(images) == 0:
        raise ValueError("no images to put in a grid")
    tiles = _upscale(images.float().clamp(-1, 1), min_tile)
    grid = make_grid(tiles, nrow=max(1, nrow), padding=padding, pad_value=0.0)  # black lines between tiles
    return _to_pil(grid[: images.shape[1]] if images.shape[1] == 1 else grid)


def save_grid(images: torch.Tensor, path: Path, nrow: int, min_tile: int = GRID_MIN_TILE) -> Path:
    """Save ``images`` (``N x C x H x W`` in [-1, 1]) as one PNG grid, ``nrow`` images per row."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    make_grid_image(images, nrow, min_tile).save(path)
    return path


def save_labelled_grid(
    images: torch.Tensor, row_labels: list[str], path: Path, nrow: int, min_tile: int = GRID_MIN_TILE
) -> Path:
    """A grid with one row per entry of ``row_labels`` (``nrow`` images each), labelled at the left."""
    grid = make_grid_image(images, nrow, min_tile).convert("RGB")
    font = ImageFont.load_default()
    label_width = 12 + 8 * max((len(s) for s in row_labels), default=1)
    canvas = Image.new("RGB", (grid.width + label_width, grid.height), "white")
    canvas.paste(grid, (label_width, 0))
    draw = ImageDraw.Draw(canvas)
    rows = math.ceil(len(images) / max(1, nrow))
    row_height = grid.height / max(1, rows)
    for r, text in enumerate(row_labels[:rows]):
        draw.text((4, r * row_height + row_height / 2 - 6), text, fill="black", font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


@dataclass
class SampleResult:
    out: Path
    files: list[Path]
    labels: list[int] | None
    seconds: float


def check_out_folder(out: Path) -> None:
    """``--out`` must not exist, or be an empty folder (unlearnctl never overwrites images)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"'{out}' already exists and is not an empty folder: choose another --out")


def sample_to_folder(
    model: DiffusionModel,
    out: Path,
    num: int,
    class_id: int | None = None,
    options: SampleOptions | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    model_spec: str | None = None,
) -> SampleResult:
    """``unlearnctl sample``: ``num`` PNGs, ``grid.png`` and ``samples.json`` in ``out``.

    Written in a temporary sibling folder and renamed when complete. Without ``class_id`` a
    conditional model samples every class evenly and the grid has one labelled row per class.
    """
    o = options or SampleOptions()
    out = Path(out)
    if num < 1:
        raise UsageError(f"--num must be >= 1, got {num}")
    check_out_folder(out)
    labels = class_labels_for(model, num, class_id)
    start = time.perf_counter()
    images = generate(model, labels, num, o, seed, device)
    seconds = time.perf_counter() - start
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        files = save_images(images, tmp, labels, model.class_names)
        names = model.class_names or [str(c) for c in range(model.num_classes)]
        if labels is not None and class_id is None:
            per_row = math.ceil(num / model.num_classes)
            rows, row_labels = [], []
            blank = -torch.ones_like(images[0])  # background fills short rows
            for c in range(model.num_classes):
                row = images[labels == c]
                if len(row):
                    rows.append(torch.cat([row, blank.expand(per_row - len(row), *blank.shape)]))
                    row_labels.append(names[c])
            save_labelled_grid(torch.cat(rows), row_labels, tmp / GRID_FILE, nrow=per_row)
        else:
            save_grid(images, tmp / GRID_FILE, nrow=math.ceil(math.sqrt(num)))
        info = {
            "model": model_spec or model.source,
            "num": num,
            "class": None if class_id is None else {"id": class_id, "name": names[class_id] if names else None},
            "seed": seed,
            **o.model_dump(mode="json"),
            "device": str(device),
            "seconds": round(seconds, 3),
            "files": [p.name for p in files],
            "labels": None if labels is None else labels.tolist(),
        }
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return SampleResult(out=out, files=[out / p.name for p in files], labels=info["labels"], seconds=seconds)
