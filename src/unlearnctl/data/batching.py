"""Endless seeded batches of an image set: what training and unlearning loops draw from.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from ..data.sets import ImageSet


def batches(data: ImageSet, batch_size: int, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless shuffled batches ``(images, labels)``: a new permutation from ``generator`` each epoch.

    Small sets (up to 1 GiB of pixels) are stacked in memory once.
    """
    n = len(data)
    if n == 0:
        raise ValueError("cannot train on an empty image set")
    labels = torch.tensor(data.labels, dtype=torch.long)
    in_memory = n * data.channels * data.image_size**2 * 4 <= 1 << 30
    images = torch.stack([data[i][0] for i in range(n)]) if in_memory else None
    batch_size = min(batch_size, n)
    while True:
        perm = torch.randperm(n, generator=generator)
        for start in range(0, n - batch_size + 1, batch_size):
            idx = perm[start : start + batch_size]
            x = images[idx] if images is not None else torch.stack([data[int(i)][0] for i in idx])
            yield x, labels[idx]

