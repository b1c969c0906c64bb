"""Image sets, forget/remain splits and fingerprints.

A dataset component returns an :class:`ImageSet`: a ``torch.utils.data.Dataset`` whose items are
``(image, label)`` with ``image`` a float32 ``C x H x W`` tensor in ``[-1, 1]`` and ``label`` the class
id (``-1`` for unlabelled data). Every item has a stable string id and a metadata dict (the class
under ``"label"``, attributes, groups...). Selectors see ids and metadata; methods see images.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset as TorchDataset

from ..errors import UsageError


class ImageSet(TorchDataset):
    """Base class of what dataset components return."""

    #: dataset component name and version (recorded in the manifest)
    name: str = ""
    version: str = ""
    #: names of the classes (index = label id); empty for unlabelled data
    class_names: list[str]
    #: image side in pixels and number of channels, as fed to the model
    image_size: int
    channels: int

    @property
    def ids(self) -> list[str]:
        """Stable id of each item, in item order."""
        raise NotImplementedError

    @property
    def metadata(self) -> list[dict[str, Any]]:
        """Metadata of each item (``"label"`` holds the class id when there is one)."""
        raise NotImplementedError

    @property
    def labels(self) -> list[int]:
        """Class id of each item (``-1`` where unlabelled)."""
        return [int(m.get("label", -1)) for m in self.metadata]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        raise NotImplementedError

    def fingerprint(self) -> str:
        """sha256 over the ids and content; equal fingerprints mean the same data."""
        raise NotImplementedError

    def subset(self, ids: Iterable[str]) -> ImageSubset:
        """A view of the items whose id is in ``ids`` (kept in this set's order)."""
        wanted = set(ids)
        return ImageSubset(self, [i for i, item_id in enumerate(self.ids) if item_id in wanted])


class TensorImageSet(ImageSet):
    """An image set held in memory as one tensor (small datasets such as digits)."""

    def __init__(
        self,
        images: torch.Tensor,
        ids: Sequence[str],
        metadata: Sequence[dict[str, Any]],
        class_names: Sequence[str],
        name: str = "",
        version: str = "",
    ) -> None:
        if images.ndim != 4 or images.shape[2] != images.shape[3]:
            raise ValueError(f"images must be N x C x S x S, got {tuple(images.shape)}")
        if not (len(images) == len(ids) == len(metadata)):
            raise ValueError("images, ids and metadata must have the same length")
        self.images = images.float().contiguous()
        self._ids = list(ids)
        self._metadata = [dict(m) for m in metadata]
        self.class_names = list(class_names)
        self.name, self.version = name, version
        self.channels, self.image_size = int(images.shape[1]), int(images.shape[2])
        self._fingerprint: str | None = None

    @property
    def ids(self) -> list[str]:
        return self._ids

    @property
    def metadata(self) -> list[dict[str, Any]]:
        return self._metadata

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self._metadata[index].get("label", -1))

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            h = hashlib.sha256()
            for item_id in self._ids:
                h.update(item_id.encode() + b"\0")
            h.update(self.images.numpy().tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint


class ImageSubset(ImageSet):
    """A subset view of another image set (the forget set or the remaining set)."""

    def __init__(self, parent: ImageSet, indices: Sequence[int]) -> None:
        self.parent, self.indices = parent, list(indices)
        self.class_names = parent.class_names
        self.name, self.version = parent.name, parent.version
        self.image_size, self.channels = parent.image_size, parent.channels
        parent_ids, parent_meta = parent.ids, parent.metadata
        self._ids = [parent_ids[i] for i in self.indices]
        self._metadata = [parent_meta[i] for i in self.indices]

    @property
    def ids(self) -> list[str]:
        return self._ids

    @property
    def metadata(self) -> list[dict[str, Any]]:
        return self._metadata

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.parent[self.indices[index]]

    def fingerprint(self) -> str:
        return hashlib.sha256((self.parent.fingerprint() + ids_fingerprint(self._ids)).encode()).hexdigest()

    def stacked(self) -> torch.Tensor:
        """All images of the subset as one tensor (only for small in-memory sets)."""
        return torch.stack([self[i][0] for i in range(len(self))])


def ids_fingerprint(ids: Iterable[str]) -> str:
    """sha256 of the sorted ids, one per line: the fingerprint of a forget set in the manifest."""
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()


@dataclass(frozen=True)
class ForgetSplit:
    """The forget set and the remaining set of one dataset."""

    data: ImageSet
    forget: ImageSubset
    remain: ImageSubset
    #: classes whose every item is forgotten (empty when the forget set is not whole classes)
    forget_classes: tuple[int, ...]

    @property
    def forget_fingerprint(self) -> str:
        return ids_fingerprint(self.forget.ids)

    @property
    def remain_classes(self) -> tuple[int, ...]:
        present = sorted({lbl for lbl in self.remain.labels if lbl >= 0})
        return tuple(c for c in present if c not in self.forget_classes)


def split_forget(data: ImageSet, forget_ids: set[str]) -> ForgetSplit:
    """Split ``data`` into forget and remain sets; refuse an empty forget or an empty remaining set."""
    known = set(data.ids)
    missing = forget_ids - known
    if missing:
        example = sorted(missing)[:3]
        raise UsageError(
            f"{len(missing)} forget id(s) are not in dataset '{data.name}' (e.g. {', '.join(example)}): "
            "check the ids against the dataset's split"
        )
    if not forget_ids:
        raise UsageError("the forget set is empty: the selector matched no item; check its arguments")
    if len(forget_ids) == len(known):
        raise UsageError("the forget set is the whole dataset: nothing would remain; select fewer items")
    forget = data.subset(forget_ids)
    remain = data.subset(known - forget_ids)
    labels_forget = {lbl for lbl in forget.labels if lbl >= 0}
    labels_remain = {lbl for lbl in remain.labels if lbl >= 0}
    whole = tuple(sorted(labels_forget - labels_remain))
    return ForgetSplit(data=data, forget=forget, remain=remain, forget_classes=whole)
