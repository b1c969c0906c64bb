"""Built-in datasets, registered through the public ``register_datasets`` hook like any plugin's.

``digits`` is the offline default: scikit-learn's copy of the UCI handwritten digits (1,797 images of
8 x 8 pixels, values 0..16, shipped inside scikit-learn, so it needs no network).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from unlearnctl import Dataset, Options, UsageError, hookimpl

if TYPE_CHECKING:
    from unlearnctl import ImageSet

#: How often one item in each class goes to the test split: positions k % TEST_EVERY == TEST_EVERY - 1.
TEST_EVERY = 6


def digits_split_indices(targets: list[int], split: Literal["train", "test"]) -> list[int]:
    """Indices (in scikit-learn's order) of the items of ``split``.

    The split is stratified and needs no random numbers: within each class, taken in scikit-learn's
    order, every sixth item (positions 5, 11, 17, ...) is a test item, the rest train items. That gives
    1,501 train and 296 test images (about 150 / 30 per class), identical on every machine and version.
    """
    seen: dict[int, int] = {}
    train, test = [], []
    for index, label in enumerate(targets):
        k = seen.get(label, 0)
        seen[label] = k + 1
        (test if k % TEST_EVERY == TEST_EVERY - 1 else train).append(index)
    return train if split == "train" else test


class Digits(Dataset):
    """Handwritten digits 0-9 from scikit-learn (8x8 grey, offline), stratified 1,501 train / 296 test.

    Items have ids ``digits-0000`` .. ``digits-1796`` (their index in scikit-learn's ``load_digits``
    order, the same in both splits), metadata ``{"label": digit}`` and class names ``"0"`` .. ``"9"``.
    Pixels 0..16 are scaled linearly to [-1, 1] (0 = background = -1); the native size is 8 x 8 with one
    channel, which is what the built-in ``ddpm-digits`` model uses.
    """

    name = "digits"
    version = "1"

    class Options(Options):
        image_size: int = Field(
            8, ge=8, le=256, description="side in pixels; above 8 the digits are upscaled bilinearly"
        )
        channels: Literal[1, 3] = Field(1, description="1 (grey) or 3 (grey repeated as RGB)")

    def load(self, split: Literal["train", "test"] = "train", data_dir: Path | None = None) -> ImageSet:
        # data_dir is accepted for the common interface; the data ships inside scikit-learn.
        import torch
        from sklearn.datasets import load_digits

        from unlearnctl import TensorImageSet

        if split not in ("train", "test"):
            raise UsageError(f"dataset 'digits' has splits 'train' and 'test', not '{split}'")
        bunch = load_digits()
        targets = [int(t) for t in bunch.target]
        indices = digits_split_indices(targets, split)
        # 1. 0..16 -> [-1, 1], N x 1 x 8 x 8 float32
        images = torch.from_numpy(bunch.images[indices]).float().unsqueeze(1) / 16.0 * 2.0 - 1.0
        # 2. optional resizing / channel repeat for models of another resolution
        size = self.options.image_size
        if size != 8:
            images = torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
            images = images.clamp(-1.0, 1.0)
        if self.options.channels == 3:
            images = images.repeat(1, 3, 1, 1)
        return TensorImageSet(
            images,
            ids=[f"digits-{i:04d}" for i in indices],
            metadata=[{"label": targets[i]} for i in indices],
            class_names=[str(c) for c in range(10)],
            name=self.name,
            version=self.version,
        )


@hookimpl
def register_datasets(register) -> None:
    register(Digits)
