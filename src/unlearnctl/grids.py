"""Sample grids: every PNG grid unlearnctl writes is rendered here.

- :func:`make_grid_image` / :func:`save_grid`: images in rows, tiles upscaled (nearest neighbour).
- :func:`save_labelled_grid`: one labelled row per class.
- :func:`side_by_side_png`: titled panels next to each other (reference left, model right).
"""

from __future__ import annotations

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


def make_grid_image(images: torch.Tensor, nrow: int, min_tile: int = GRID_MIN_TILE, padding: int = 2) -> Image.Image:
    """A PIL grid of ``images`` (``nrow`` per row), tiles upscaled with nearest neighbour."""
    from torchvision.utils import make_grid

    if len(images) == 0:
        raise ValueError("no images to put in a grid")
    tiles = _upscale(images.float().clamp(-1, 1), min_tile)
    grid = make_grid(tiles, nrow=max(1, nrow), padding=padding, pad_value=0.0)  # black lines between tiles
    return to_pil(grid[: images.shape[1]] if images.shape[1] == 1 else grid)


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


def _panel(images: torch.Tensor, nrow: int) -> torch.Tensor:
    from torchvision.utils import make_grid

    x = (images.clamp(-1, 1) + 1) / 2
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    return make_grid(x, nrow=nrow, padding=1, pad_value=1.0)


def side_by_side_png(
    panels: Sequence[torch.Tensor], nrow: int, path: Path, titles: Sequence[str] | None = None, gap: int = 4
) -> None:
    """Grids of ``panels`` (each ``N x C x H x W`` in [-1, 1]) next to each other, upscaled, as one PNG,
    with a title above each panel."""
    import io

    from PIL import Image, ImageDraw

    grids = [_panel(p, nrow) for p in panels]
    height = max(g.shape[1] for g in grids)
    parts, offsets, x = [], [], 0
    for k, g in enumerate(grids):
        if g.shape[1] < height:
            g = torch.nn.functional.pad(g, (0, 0, 0, height - g.shape[1]), value=1.0)
        parts.append(g)
        offsets.append(x)
        x += g.shape[2]
        if k < len(grids) - 1:
            parts.append(torch.full((3, height, gap), 0.5))
            x += gap
    image = torch.cat(parts, dim=2)
    scale = max(1, 48 // max(1, panels[0].shape[-1]))  # 8x8 digits: 6x, 48 px each
    array = (image * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    grid = Image.fromarray(array)
    if scale > 1:
        grid = grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)
    header = 16 if titles else 0
    canvas = Image.new("RGB", (grid.width, grid.height + header), "white")
    canvas.paste(grid, (0, header))
    if titles:
        draw = ImageDraw.Draw(canvas)
        for title, offset in zip(titles, offsets, strict=False):
            draw.text((offset * scale + 2, 2), title, fill="black")
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())

