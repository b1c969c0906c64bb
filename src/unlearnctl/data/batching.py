"""Endless seeded batches of an image set: what training and unlearning loops draw from.

A :class:`BatchStream` is an iterator that can be checkpointed: its state is the permutation of the
current epoch and the position in it (the generator that draws the permutations is checkpointed by its
owner, :class:`~unlearnctl.checkpoints.StepLoop`). In a multi-process run every process draws the same
permutation and keeps its own contiguous shard of each global batch (docs/scaling.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from ..data.sets import ImageSet
from ..distributed import SINGLE, World


class BatchStream(Iterator[tuple[torch.Tensor, torch.Tensor]]):
    """Endless shuffled batches ``(images, labels)``: a new permutation from ``generator`` each epoch;
    a batch is ``min(batch_size, len(data))`` items and the tail of an epoch that does not fill one is
    skipped. With ``world`` (several processes) each process gets its shard of every batch; with
    ``device`` the batches are moved there.

    Small sets (up to 1 GiB of pixels) are stacked in memory once.
    """

    def __init__(
        self,
        data: ImageSet,
        batch_size: int,
        generator: torch.Generator,
        world: World = SINGLE,
        device: torch.device | str | None = None,
    ) -> None:
        self.n = len(data)
        if self.n == 0:
            raise ValueError("cannot train on an empty image set")
        self.data, self.generator = data, generator
        self.batch_size = min(batch_size, self.n)
        self.shard = world.even_shard(self.batch_size) if world.distributed else range(self.batch_size)
        self.labels = torch.tensor(data.labels, dtype=torch.long)
        in_memory = self.n * data.channels * data.image_size**2 * 4 <= 1 << 30
        self.images = torch.stack([data[i][0] for i in range(self.n)]) if in_memory else None
        self.device = device
        self.perm: torch.Tensor | None = None
        self.pos = 0

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.perm is None or self.pos + self.batch_size > self.n:
            self.perm, self.pos = torch.randperm(self.n, generator=self.generator), 0
        idx = self.perm[self.pos + self.shard.start : self.pos + self.shard.stop]
        self.pos += self.batch_size
        x = self.images[idx] if self.images is not None else torch.stack([self.data[int(i)][0] for i in idx])
        labels = self.labels[idx]
        if self.device is not None:
            x, labels = x.to(self.device), labels.to(self.device)
        return x, labels

    def state_dict(self) -> dict[str, Any]:
        return {"perm": self.perm, "pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        perm = state["perm"]
        if perm is not None and len(perm) != self.n:
            raise ValueError(f"batch stream: the checkpoint's permutation has {len(perm)} items, the data {self.n}")
        self.perm, self.pos = perm, int(state["pos"])


def batches(data: ImageSet, batch_size: int, generator: torch.Generator, world: World = SINGLE) -> BatchStream:
    """A :class:`BatchStream` of ``data``."""
    return BatchStream(data, batch_size, generator, world)
