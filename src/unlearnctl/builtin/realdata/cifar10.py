"""``cifar10``: CIFAR-10 from the official "python version" files, read with torchvision's md5-checked loader."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field

from unlearnctl import Dataset, Options, UsageError, dataset_folder

from .common import Split, check_split, nonempty, resolution_field

if TYPE_CHECKING:
    from unlearnctl import ImageSet

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

CIFAR10_BASE = "cifar-10-batches-py"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


class Cifar10(Dataset):
    """CIFAR-10: 60,000 colour 32x32 images in 10 classes; official 50,000 train / 10,000 test split.

    Read with torchvision's own loader from the official "python version" files
    (``cifar10/cifar-10-batches-py/``), which torchvision checks against their published md5 sums
    before unpickling them. Ids are ``cifar10-train-00000``.. / ``cifar10-test-00000``.. (position in
    the official batches); metadata ``{"label": 0-9, "class_name": "airplane"...}``.
    """

    name = "cifar10"
    version = "1"

    class Options(Options):
        resolution: int = resolution_field(32)
        download: bool = Field(
            True, description="download the official archive into the data folder when the files are missing"
        )

    def load(self, split: Split = "train", data_dir: Path | None = None) -> ImageSet:
        import numpy as np

        from unlearnctl import ArrayImageSet, ColumnMetadata

        check_split(self.name, split)
        folder = dataset_folder(data_dir, "cifar10", lambda p: (p / CIFAR10_BASE).is_dir())
        ds = _read_cifar10(folder, train=split == "train", download=self.options.download)
        targets = np.asarray(ds.targets, dtype=np.int64)
        class_names = list(ds.classes)
        metadata = ColumnMetadata(
            {"label": targets, "class_name": [class_names[t] for t in targets.tolist()]}, len(targets)
        )
        data = ArrayImageSet(
            np.asarray(ds.data, dtype=np.uint8),
            ids=[f"cifar10-{split}-{i:05d}" for i in range(len(targets))],
            metadata=metadata,
            class_names=class_names,
            image_size=self.options.resolution,
            name=self.name,
            version=self.version,
        )
        return nonempty(data, split, folder)


def _read_cifar10(folder: Path, train: bool, download: bool):
    """``torchvision.datasets.CIFAR10`` (md5-verified), downloading only when allowed and needed."""
    from torchvision.datasets import CIFAR10

    try:
        return CIFAR10(str(folder), train=train, download=False)
    except RuntimeError:
        base = folder / CIFAR10_BASE
        expected = [f for f, _ in CIFAR10.train_list + CIFAR10.test_list] + [CIFAR10.meta["filename"]]
        missing = [f for f in expected if not (base / f).is_file()]
        if not download:
            if base.is_dir() and not missing:
                raise UsageError(
                    f"CIFAR-10 files in '{base}' fail torchvision's md5 check (modified or not the official "
                    f"files): replace them with the contents of {CIFAR10_URL}"
                ) from None
            raise UsageError(
                f"CIFAR-10 not found in '{folder}' (missing {', '.join(missing[:3])}): extract {CIFAR10_URL} "
                "there, point --data-dir at a folder holding cifar-10-batches-py/, or allow download=true"
            ) from None
    try:
        with contextlib.redirect_stdout(sys.stderr):  # torchvision prints progress; keep stdout for --json
            return CIFAR10(str(folder), train=train, download=True)
    except (OSError, RuntimeError, ValueError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise UsageError(
            f"cannot download CIFAR-10 into '{folder}' ({reason}): on a machine with internet download "
            f"{CIFAR10_URL}, extract it into '{folder}' (it creates {CIFAR10_BASE}/) and run again"
        ) from None
