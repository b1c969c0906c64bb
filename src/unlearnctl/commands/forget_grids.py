"""The before/after sample grids of ``forget``: which classes they show and drawing them.

The same seed is used before and after the method, so the grids compare image by image.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..data.sets import ForgetSplit
from ..diffusion import sample
from ..grids import save_grid, save_labelled_grid
from ..models.folder import DiffusionModel
from ..rundir import SAMPLES_DIR
from ..runtime import seeded_generator
from ..sampling import SampleOptions

#: kept classes shown in the sample grids next to the forgotten ones
GRID_KEPT_CLASSES = 3
#: the sampler of the before/after grids: the tool's defaults (``sampling.SampleOptions``)
GRID_SAMPLER = SampleOptions()
#: the most images per class a before/after grid shows (``--grid-per-class``; docs/errors.md)
MAX_GRID_PER_CLASS = 64


def grid_classes(model: DiffusionModel, split: ForgetSplit) -> tuple[list[int], list[int]]:
    """Forgotten classes and up to ``GRID_KEPT_CLASSES`` kept classes, spread over the kept ones."""
    if not model.conditional:
        return [], []
    forgotten = list(split.forget_classes)
    if not forgotten:  # not whole classes: show the classes most represented in the forget set
        counts: dict[int, int] = {}
        for lbl in split.forget.labels:
            if lbl >= 0:
                counts[lbl] = counts.get(lbl, 0) + 1
        forgotten = sorted(sorted(counts, key=lambda c: (-counts[c], c))[:GRID_KEPT_CLASSES])
    kept_all = [c for c in split.remain_classes if c not in forgotten]
    if len(kept_all) > GRID_KEPT_CLASSES:
        stride = len(kept_all) / GRID_KEPT_CLASSES
        kept = [kept_all[int(i * stride)] for i in range(GRID_KEPT_CLASSES)]
    else:
        kept = kept_all
    return forgotten, kept


def write_grids(
    model: DiffusionModel,
    classes: tuple[list[int], list[int]],
    n: int,
    seed: int,
    device: torch.device,
    folder: Path,
    phase: str,
) -> dict[str, str]:
    """Sample ``n`` images per class (same seed before and after, so the grids compare image by image)."""

    if n <= 0:
        return {}
    o = GRID_SAMPLER

    def draw(num: int, labels: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
        return sample(
            model, num, labels, generator=generator, sampler=o.sampler, steps=o.steps, guidance=o.guidance,
            eta=o.eta, clip_sample=o.clip_sample, batch_size=o.batch_size, device=device,
        )  # fmt: skip

    files: dict[str, str] = {}
    forgotten, kept = classes
    groups = {"forgotten": forgotten, "kept": kept} if model.conditional else {"samples": []}
    for group, group_classes in groups.items():
        if model.conditional and not group_classes:
            continue
        name = f"{group}-{phase}.png"
        if (folder / name).is_file():  # a resumed run drew it before it was stopped (same seed, same images)
            files[f"{group}-{phase}"] = f"{SAMPLES_DIR}/{name}"
            continue
        generator = seeded_generator(seed, "samples")
        if model.conditional:
            labels = torch.tensor([c for c in group_classes for _ in range(n)], dtype=torch.long)
            images = draw(len(labels), labels, generator)
            names = [model.class_names[c] if c < len(model.class_names) else str(c) for c in group_classes]
            save_labelled_grid(images, names, folder / name, nrow=n)
        else:
            images = draw(4 * n, None, generator)
            save_grid(images, folder / name, nrow=n)
        files[f"{group}-{phase}"] = f"{SAMPLES_DIR}/{name}"
    return files
