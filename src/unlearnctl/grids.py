"""Sample grids: every PNG grid unlearnctl writes is rendered here.

- :func:`make_grid_image` / :func:`save_grid`: images in rows, tiles upscaled (nearest neighbour).
- :func:`save_labelled_grid`: one labelled row per class.
- :func:`side_by_side_png`: titled panels next to each other (reference left, model right).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from .diffusion import to_uint8
from .rundir import atomic_write_bytes

#: grid tiles are upscaled (nearest neighbour) to at least this many pixels a side
GRID_MIN_TILE = 48


def to_pil(image: torch.Tensor) -> Image.Image:
    """One ``C x H x W`` image in [-1, 1] as a PIL image (grey for 1 channel, RGB for 3)."""
    array = to_uint8(image).permute(1, 2, 0).numpy()
    return Image.fromarray(array[:, :, 0], mode="L") if array.shape[2] == 1 else Image.fromarray(array, mode="RGB")


def _upscale(images: torch.Tensor, min_tile: int) -> torch.Tensor:
    scale = max(1, math.ceil(min_tile / images.shape[-1]))
    return torch.nn.functional.interpolate(images, scale_factor=scale, mode="nearest") if scale > 1 else images


def make_grid_image(
    images: torch.Tensor, nrow: int, min_tile: int = GRID_MIN_TILE, padding: int = 2, pad_value: float = 0.0
) -> Image.Image:
    """The one grid renderer: ``images`` (``N x C x H x W`` in [-1, 1]) in rows of ``nrow``, tiles upscaled
    with nearest neighbour to at least ``min_tile`` pixels, separated by ``padding`` pixels of ``pad_value``
    (in image units: -1 black, 0 grey, 1 white)."""
    from torchvision.utils import make_grid

    if len(images) == 0:
        raise ValueError("no images to put in a grid")
    tiles = _upscale(images.float().clamp(-1, 1), min_tile)
    grid = make_grid(tiles, nrow=max(1, nrow), padding=padding, pad_value=pad_value)
    return to_pil(grid[: images.shape[1]] if images.shape[1] == 1 else grid)


def _save_png(image: Image.Image, path: Path) -> Path:
    """Every grid file is written here: encoded in memory, then written atomically."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


def save_grid(images: torch.Tensor, path: Path, nrow: int, min_tile: int = GRID_MIN_TILE) -> Path:
    """Save ``images`` (``N x C x H x W`` in [-1, 1]) as one PNG grid, ``nrow`` images per row."""
    return _save_png(make_grid_image(images, nrow, min_tile), path)


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
    return _save_png(canvas, path)


def side_by_side_png(
    panels: Sequence[torch.Tensor], nrow: int, path: Path, titles: Sequence[str] | None = None, gap: int = 12
) -> Path:
    """Grids of ``panels`` (each ``N x C x H x W`` in [-1, 1]) next to each other, ``gap`` pixels apart,
    with a title above each panel (reference left, model right: same noise, image for image)."""
    grids = [make_grid_image(p, nrow, pad_value=1.0).convert("RGB") for p in panels]
    header = 16 if titles else 0
    width = sum(g.width for g in grids) + gap * (len(grids) - 1)
    canvas = Image.new("RGB", (width, max(g.height for g in grids) + header), "white")
    draw = ImageDraw.Draw(canvas)
    x = 0
    for k, g in enumerate(grids):
        canvas.paste(g, (x, header))
        if titles and k < len(titles):
            draw.text((x + 2, 2), titles[k], fill="black")
        x += g.width + gap
    return _save_png(canvas, path)
