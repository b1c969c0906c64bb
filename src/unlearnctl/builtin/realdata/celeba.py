"""``celeba`` and ``celeba-hq``: face images with CelebA's 40 binary attributes (attribute and partition files)."""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from pydantic import Field, field_validator

from unlearnctl import Dataset, OnProblem, Options, UsageError, dataset_folder

from .common import BAD_FILE_HELP, Split, check_split, nonempty, resolution_field

if TYPE_CHECKING:
    import numpy as np

    from unlearnctl import ImageSet, LoadReport

#: The 40 binary attributes of CelebA, in the order of ``list_attr_celeba.txt``.
CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips",
    "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin",
    "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open",
    "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)  # fmt: skip


def read_attribute_file(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """Read CelebA's ``list_attr_celeba.txt`` format: (attribute names, file names, N x A 0/1 int8).

    Line 1 is the number of images, line 2 the attribute names, then one line per image: the file name
    and one ``1`` or ``-1`` per attribute (``-1`` becomes 0). CelebAMask-HQ's
    ``CelebAMask-HQ-attribute-anno.txt`` has the same format.
    """
    import numpy as np

    lines = path.read_text(encoding="utf-8").splitlines()
    try:
        count = int(lines[0].split()[0])
        names = lines[1].split()
    except (IndexError, ValueError):
        raise UsageError(
            f"'{path}' is not in CelebA's attribute format (line 1: number of images, line 2: attribute names)"
        ) from None
    files: list[str] = []
    tokens: list[str] = []
    for number, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != len(names) + 1:
            raise UsageError(
                f"'{path}' line {number}: {len(parts) - 1} values for {len(names)} attributes: the file is damaged"
            )
        files.append(parts[0])
        tokens.extend(parts[1:])
    if len(files) != count:
        raise UsageError(f"'{path}' announces {count} images but lists {len(files)}: the file is truncated or edited")
    try:
        raw = np.array(tokens, dtype=np.int64).reshape(len(files), len(names))
    except ValueError:
        raise UsageError(f"'{path}': attribute values must be 1 or -1") from None
    if not np.isin(raw, (-1, 1)).all():
        raise UsageError(f"'{path}': attribute values must be 1 or -1")
    return names, files, (raw > 0).astype(np.int8)


def _read_partitions(path: Path) -> dict[str, int]:
    """CelebA's ``list_eval_partition.txt``: ``000001.jpg 0`` per line (0 train, 1 valid, 2 test)."""
    out: dict[str, int] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise UsageError(f"'{path}' line {number}: expected '<file> <0|1|2>', got '{line.strip()}'")
        out[parts[0]] = int(parts[1])
    return out


class _FaceAttributes(Dataset):
    """Shared loader of CelebA-style attribute datasets (not registered itself)."""

    sub: ClassVar[str]
    image_dir: ClassVar[str]
    attr_file: ClassVar[str]

    class Options(Options):
        resolution: int = resolution_field(64)
        crop: int | None = Field(None, ge=8, description="centred square cut (pixels) before resizing")
        label_attribute: str | None = Field(
            None, description="attribute used as the class label (0 absent, 1 present); default: none (-1)"
        )
        on_bad_file: OnProblem = Field("warn", description=BAD_FILE_HELP)

        @field_validator("label_attribute")
        @classmethod
        def _known_attribute(cls, value: str | None) -> str | None:
            if value is not None and value not in CELEBA_ATTRIBUTES:
                close = difflib.get_close_matches(value, CELEBA_ATTRIBUTES, n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                raise ValueError(f"unknown CelebA attribute '{value}': {hint}see docs/datasets/celeba.md")
            return value

    def _image_root(self, folder: Path) -> Path:
        return folder / self.image_dir

    def _splits(self, folder: Path, files: list[str], report: LoadReport) -> list[str | None]:
        raise NotImplementedError

    def load(self, split: Split = "train", data_dir: Path | None = None) -> ImageSet:
        import numpy as np

        from unlearnctl import ColumnMetadata, FileImageSet, LoadReport

        check_split(self.name, split)
        folder = dataset_folder(data_dir, self.sub, lambda p: (p / self.attr_file).is_file())
        attr_path = folder / self.attr_file
        if not attr_path.is_file():
            raise UsageError(
                f"dataset '{self.name}': no {self.attr_file} in '{folder}': "
                f"see docs/datasets/celeba.md for where the files come from and the folder layout"
            )
        names, files, values = read_attribute_file(attr_path)
        image_root = self._image_root(folder)
        if not image_root.is_dir():
            raise UsageError(
                f"dataset '{self.name}': image folder '{image_root}' is missing: see docs/datasets/celeba.md"
            )
        report = LoadReport(self.name)
        splits = self._splits(folder, files, report)
        on_disk = set(os.listdir(image_root))
        keep = []
        for i, (file, item_split) in enumerate(zip(files, splits, strict=True)):
            if file not in on_disk:
                report.add(file, f"listed in {self.attr_file} but not in {image_root.name}/")
            elif item_split == split:
                keep.append(i)
        report.apply(self.options.on_bad_file, total=len(files), hint=f"see docs/datasets/{self.name}.md")
        idx = np.asarray(keep, dtype=np.int64)
        columns: dict[str, object] = {name: values[idx, j] for j, name in enumerate(names)}
        attribute = self.options.label_attribute
        if attribute is not None:
            if attribute not in names:
                raise UsageError(f"'{attr_path}' has no attribute '{attribute}'")
            labels = values[idx, names.index(attribute)].astype(np.int64)
            class_names = [f"not {attribute}", attribute]
        else:
            labels = np.full(len(idx), -1, dtype=np.int64)
            class_names = []
        columns = {"label": labels, **columns}
        data = FileImageSet(
            image_root,
            [files[i] for i in keep],
            ColumnMetadata(columns, len(idx)),  # type: ignore[arg-type]
            class_names,
            image_size=self.options.resolution,
            crop=self.options.crop,
            name=self.name,
            version=self.version,
            params=self._params(),
            report=report,
        )
        return nonempty(data, split, folder)

    def _params(self) -> dict[str, object]:
        return {"label_attribute": self.options.label_attribute}


class CelebA(_FaceAttributes):
    """CelebA aligned faces (202,599) with 40 binary attributes and the official train/valid/test split.

    Files (``celeba/``, torchvision's layout): ``img_align_celeba/*.jpg``, ``list_attr_celeba.txt``,
    ``list_eval_partition.txt``. Ids are the file names (``000001.jpg``); metadata has the 40
    attributes as 0/1 (``Eyeglasses``, ``Male``...) and ``label`` (-1 unless ``label_attribute``).
    ``train`` is partition 0 (plus 1 with ``train_includes_valid``), ``test`` partition 2.
    """

    name = "celeba"
    version = "1"
    sub = "celeba"
    image_dir = "img_align_celeba"
    attr_file = "list_attr_celeba.txt"
    partition_file = "list_eval_partition.txt"

    class Options(_FaceAttributes.Options):
        resolution: int = resolution_field(64)
        crop: int | None = Field(
            140, ge=8, description="centred square cut (pixels) of the 178x218 aligned image before resizing"
        )
        train_includes_valid: bool = Field(False, description="add the official validation partition to 'train'")

    def _image_root(self, folder: Path) -> Path:
        root = folder / self.image_dir
        nested = root / self.image_dir  # the Kaggle copy nests the folder in itself
        return nested if nested.is_dir() else root

    def _splits(self, folder: Path, files: list[str], report: LoadReport) -> list[str | None]:
        path = folder / self.partition_file
        if not path.is_file():
            raise UsageError(
                f"dataset 'celeba': no {self.partition_file} in '{folder}' (it ships with CelebA, in Eval/): "
                "see docs/datasets/celeba.md"
            )
        partitions = _read_partitions(path)
        train = {0, 1} if self.options.train_includes_valid else {0}
        out: list[str | None] = []
        for file in files:
            p = partitions.get(file)
            out.append("train" if p in train else "test" if p == 2 else None)
        return out

    def _params(self) -> dict[str, object]:
        return {**super()._params(), "train_includes_valid": self.options.train_includes_valid}


class CelebAHQ(_FaceAttributes):
    """CelebA-HQ (30,000 faces, 1024x1024) as released in CelebAMask-HQ, with CelebA's 40 attributes.

    Files (``celeba-hq/``): ``CelebA-HQ-img/0.jpg``..``29999.jpg``, ``CelebAMask-HQ-attribute-anno.txt``;
    optional ``CelebA-HQ-to-CelebA-mapping.txt`` plus CelebA's ``list_eval_partition.txt``, which give
    each image the official partition of its CelebA original. Without them the split is a fixed hash
    of the file name (``test_fraction``). Ids are the file names (``0.jpg``).
    """

    name = "celeba-hq"
    version = "1"
    sub = "celeba-hq"
    image_dir = "CelebA-HQ-img"
    attr_file = "CelebAMask-HQ-attribute-anno.txt"
    mapping_file = "CelebA-HQ-to-CelebA-mapping.txt"
    partition_file = "list_eval_partition.txt"

    class Options(_FaceAttributes.Options):
        resolution: int = resolution_field(256)
        crop: int | None = Field(None, ge=8, description="centred square cut (pixels) before resizing")
        test_fraction: float = Field(
            0.1, ge=0.0, lt=1.0, description="share of test images when the official partition is not available"
        )

    def _splits(self, folder: Path, files: list[str], report: LoadReport) -> list[str | None]:
        from unlearnctl import hash_split

        mapping, partition = folder / self.mapping_file, folder / self.partition_file
        if not (mapping.is_file() and partition.is_file()):
            return [hash_split(f, self.options.test_fraction) for f in files]
        partitions = _read_partitions(partition)
        original: dict[str, str] = {}
        for line in mapping.read_text(encoding="utf-8").splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0].isdigit():
                original[f"{parts[0]}.jpg"] = parts[2]
        out: list[str | None] = []
        for file in files:
            p = partitions.get(original.get(file, ""))
            out.append("train" if p in (0, 1) else "test" if p == 2 else None)
        return out

    def _params(self) -> dict[str, object]:
        return {**super()._params(), "test_fraction": self.options.test_fraction}
