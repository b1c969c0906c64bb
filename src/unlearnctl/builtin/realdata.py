"""Built-in real-world datasets: ``cifar10``, ``celeba``, ``celeba-hq``, ``utkface``, ``imagefolder``.

Each reads the files exactly as their publishers distribute them (see ``docs/datasets/<name>.md``
for where they come from and the folder layout). ``--data-dir DIR`` (default
``unlearnctl.paths.data_dir()``) is searched for ``DIR/<sub-folder>`` first and then ``DIR`` itself.

Conventions shared by all of them:

- ``"label"`` in the metadata is the class id (``-1`` when the dataset has no class by default);
  every other field is usable by the ``where`` and ``attribute`` selectors.
- Ids are stable: file names (or paths relative to the dataset folder), ``cifar10-train-00042``.
- Splits are official where they exist; otherwise a deterministic hash of the id decides.
- Images stream from disk (CIFAR-10 is small enough to hold as uint8); files that cannot be used are
  never dropped silently: ``on_bad_file=warn`` (default) leaves them out with a ``DataWarning`` that
  names them and keeps the list in ``data.report``; ``on_bad_file=error`` stops with one line.
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import itertools
import os
import re
import sys
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from unlearnctl import Dataset, ImageSet, Options, UsageError, hookimpl
from unlearnctl.datasets_io import (
    IMAGE_EXTENSIONS,
    ArrayImageSet,
    ColumnMetadata,
    FileImageSet,
    LoadReport,
    OnProblem,
    hash_split,
    list_images,
)
from unlearnctl.paths import dataset_folder

Split = Literal["train", "test"]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

#: The 40 binary attributes of CelebA, in the order of ``list_attr_celeba.txt``.
CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips",
    "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin",
    "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open",
    "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)  # fmt: skip

UTKFACE_GENDERS = ("male", "female")
UTKFACE_RACES = ("White", "Black", "Asian", "Indian", "Others")

BAD_FILE_HELP = (
    "'warn' leaves out files that cannot be used (malformed names, annotated images missing on disk) and "
    "names them in a warning; 'error' stops instead"
)


def _check_split(name: str, split: str) -> None:
    if split not in ("train", "test"):
        raise UsageError(f"dataset '{name}' has splits 'train' and 'test', not '{split}'")


def _resolution(default: int) -> int:
    return Field(default, ge=8, le=1024, description="side in pixels of the images fed to the model (square)")


def _nonempty(data: ImageSet, split: str, folder: Path) -> ImageSet:
    if len(data) == 0:
        raise UsageError(
            f"dataset '{data.name}' has no images in split '{split}' under '{folder}': "
            f"check the folder layout in docs/datasets/{data.name}.md"
        )
    return data


# --- CIFAR-10 ----------------------------------------------------------------------------------

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
        resolution: int = _resolution(32)
        download: bool = Field(
            True, description="download the official archive into the data folder when the files are missing"
        )

    def load(self, split: Split = "train", data_dir: Path | None = None) -> ImageSet:
        _check_split(self.name, split)
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
        return _nonempty(data, split, folder)


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


# --- CelebA and CelebA-HQ ----------------------------------------------------------------------


def read_attribute_file(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """Read CelebA's ``list_attr_celeba.txt`` format: (attribute names, file names, N x A 0/1 int8).

    Line 1 is the number of images, line 2 the attribute names, then one line per image: the file name
    and one ``1`` or ``-1`` per attribute (``-1`` becomes 0). CelebAMask-HQ's
    ``CelebAMask-HQ-attribute-anno.txt`` has the same format.
    """
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
        resolution: int = _resolution(64)
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
        _check_split(self.name, split)
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
        return _nonempty(data, split, folder)

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
        resolution: int = _resolution(64)
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
        resolution: int = _resolution(256)
        crop: int | None = Field(None, ge=8, description="centred square cut (pixels) before resizing")
        test_fraction: float = Field(
            0.1, ge=0.0, lt=1.0, description="share of test images when the official partition is not available"
        )

    def _splits(self, folder: Path, files: list[str], report: LoadReport) -> list[str | None]:
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


# --- UTKFace -----------------------------------------------------------------------------------

UTKFACE_NAME = re.compile(r"^(?P<age>\d+)_(?P<gender>\d+)_(?P<race>\d+)_(?P<date>\d+)\.jpg(\.chip\.jpg)?$", re.I)


def parse_utkface_name(name: str) -> dict[str, int] | str:
    """Age, gender and race from ``[age]_[gender]_[race]_[date&time].jpg(.chip.jpg)``, or why not."""
    match = UTKFACE_NAME.match(name)
    if match is None:
        fields = name.split(".")[0].split("_")
        return f"{len(fields)} fields, expected age_gender_race_datetime.jpg"
    age, gender, race = int(match["age"]), int(match["gender"]), int(match["race"])
    if gender not in (0, 1):
        return f"gender {gender} is not 0 (male) or 1 (female)"
    if race not in range(len(UTKFACE_RACES)):
        return f"race {race} is not 0-4"
    if age > 130:
        return f"age {age} is not plausible"
    return {"age": age, "gender": gender, "race": race}


class UTKFace(Dataset):
    """UTKFace faces with age, gender and race parsed from the file names; deterministic hash split.

    Files (``utkface/``): the images, in any sub-folders (``UTKFace/`` of the aligned & cropped
    release, or ``crop_part1/``, or the in-the-wild ``part1/``..``part3/``; use one release). Names
    must read ``[age]_[gender]_[race]_[date&time].jpg`` (``.jpg.chip.jpg`` too); others are reported.
    Ids are the file names. Metadata: ``age``, ``gender`` (0 male, 1 female), ``race`` (0 White,
    1 Black, 2 Asian, 3 Indian, 4 Others), ``age_bin`` and ``label`` (= ``label_field``).
    """

    name = "utkface"
    version = "1"

    class Options(Options):
        resolution: int = _resolution(64)
        label_field: Literal["race", "gender", "age_bin"] = Field(
            "race", description="metadata field used as the class label (the paper unlearns races)"
        )
        age_bins: list[int] = Field(
            [0, 20, 40, 60, 80], description="lower edges of the age bins of 'age_bin' (first must be 0)"
        )
        test_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="share of images in the 'test' split")
        on_bad_file: OnProblem = Field("warn", description=BAD_FILE_HELP)

        @field_validator("age_bins")
        @classmethod
        def _increasing(cls, value: list[int]) -> list[int]:
            if not value or value[0] != 0 or any(b <= a for a, b in itertools.pairwise(value)):
                raise ValueError("age_bins must start at 0 and increase, e.g. [0, 20, 40, 60, 80]")
            return value

    def _class_names(self) -> list[str]:
        if self.options.label_field == "race":
            return list(UTKFACE_RACES)
        if self.options.label_field == "gender":
            return list(UTKFACE_GENDERS)
        edges = self.options.age_bins
        return [f"{a}-{b - 1}" for a, b in itertools.pairwise(edges)] + [f"{edges[-1]}+"]

    def load(self, split: Split = "train", data_dir: Path | None = None) -> ImageSet:
        _check_split(self.name, split)
        folder = dataset_folder(data_dir, "utkface", _has_images_shallow)
        if not folder.is_dir():
            raise UsageError(f"dataset 'utkface': folder '{folder}' not found: see docs/datasets/utkface.md")
        report = LoadReport(self.name)
        edges = np.asarray(self.options.age_bins)
        seen: set[str] = set()
        files, rows = [], []
        all_files = list_images(folder)
        for rel in all_files:
            base = rel.rsplit("/", 1)[-1]
            parsed = parse_utkface_name(base)
            if isinstance(parsed, str):
                report.add(rel, parsed)
                continue
            if base in seen:
                report.add(rel, "same file name in two sub-folders: keep one UTKFace release")
                continue
            seen.add(base)
            if hash_split(base, self.options.test_fraction) != split:
                continue
            parsed["age_bin"] = int(np.searchsorted(edges, parsed["age"], side="right") - 1)
            files.append(rel)
            rows.append(parsed)
        report.apply(self.options.on_bad_file, total=len(all_files), hint="see docs/datasets/utkface.md")
        fields = ("age", "gender", "race", "age_bin")
        columns = {key: np.asarray([r[key] for r in rows], dtype=np.int64) for key in fields}
        columns = {"label": columns[self.options.label_field], **columns}
        data = FileImageSet(
            folder,
            files,
            ColumnMetadata(columns, len(files)),  # type: ignore[arg-type]
            self._class_names(),
            ids=[f.rsplit("/", 1)[-1] for f in files],
            image_size=self.options.resolution,
            name=self.name,
            version=self.version,
            params={
                "label_field": self.options.label_field,
                "age_bins": self.options.age_bins,
                "test_fraction": self.options.test_fraction,
            },
            report=report,
        )
        return _nonempty(data, split, folder)


# --- imagefolder -------------------------------------------------------------------------------

FILE_COLUMNS = ("file_name", "file", "filename", "path", "image", "image_id")


def _has_images_shallow(folder: Path, depth: int = 2) -> bool:
    """Whether ``folder`` has image files at most ``depth`` levels down (cheap: stops at the first one)."""
    if not folder.is_dir():
        return False
    subdirs = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_file() and Path(entry.name).suffix.lower() in IMAGE_EXTENSIONS:
                return True
            if entry.is_dir():
                subdirs.append(Path(entry.path))
    return depth > 0 and any(_has_images_shallow(sub, depth - 1) for sub in subdirs)


def _coerce(text: str | None) -> int | float | str | None:
    """A CSV cell as int, float or string (empty: None)."""
    if text is None:
        return None
    text = text.strip()
    if text == "":
        return None
    if re.fullmatch(r"[-+]?\d+", text):
        return int(text)
    if re.fullmatch(r"[-+]?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?", text):
        return float(text)
    return text


def _class_index(values: list[object]) -> tuple[list[int], list[str]]:
    """Class ids and class names for raw label values (ints 0..K-1 kept; other values sorted by name)."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, int) and v >= 0 for v in present):
        top = max(present)  # type: ignore[type-var]
        return [v if v is not None else -1 for v in values], [str(c) for c in range(int(top) + 1)]  # type: ignore[misc]
    names = sorted({str(v) for v in present})
    index = {n: i for i, n in enumerate(names)}
    return [index[str(v)] if v is not None else -1 for v in values], names


class ImageFolder(Dataset):
    """Your own images: class sub-folders, or images plus a metadata CSV with any fields.

    Layouts (``imagefolder/``, or the folder given by ``--data-dir``): (1) ``metadata.csv`` with a file
    column (``file_name`` as in Hugging Face's imagefolder, or ``file``, ``path``...) and any other
    columns, which become metadata (optional ``split``: train/test, ``id``, ``label``); (2) class
    sub-folders ``<class>/*.png``, optionally inside ``train/`` and ``test/``; (3) images only
    (unlabelled). Ids are paths relative to the folder unless the CSV has an ``id`` column.
    """

    name = "imagefolder"
    version = "1"

    class Options(Options):
        resolution: int = _resolution(64)
        channels: Literal[1, 3] = Field(3, description="3 (RGB) or 1 (grey)")
        metadata_file: str = Field("metadata.csv", description="name of the metadata CSV inside the folder")
        file_column: str | None = Field(
            None, description=f"CSV column naming each image (default: the first of {', '.join(FILE_COLUMNS)})"
        )
        label_column: str | None = Field(
            None, description="CSV column used as the class label (default: 'label' if present, else unlabelled)"
        )
        test_fraction: float = Field(
            0.1, ge=0.0, lt=1.0, description="share of test images when neither train/ test/ nor a split column exist"
        )
        on_bad_file: OnProblem = Field("warn", description=BAD_FILE_HELP)

    def load(self, split: Split = "train", data_dir: Path | None = None) -> ImageSet:
        _check_split(self.name, split)
        o = self.options
        folder = dataset_folder(
            data_dir, "imagefolder", lambda p: (p / o.metadata_file).is_file() or _has_images_shallow(p)
        )
        if not folder.is_dir():
            raise UsageError(f"dataset 'imagefolder': folder '{folder}' not found: see docs/datasets/imagefolder.md")
        report = LoadReport(self.name)
        if (folder / o.metadata_file).is_file():
            files, ids, splits, columns, class_names = self._from_csv(folder, report)
        else:
            files, ids, splits, columns, class_names = self._from_folders(folder, report)
        report.apply(o.on_bad_file, total=len(files) + report.count, hint="see docs/datasets/imagefolder.md")
        keep = [i for i, s in enumerate(splits) if s == split]
        metadata = ColumnMetadata({k: [v[i] for i in keep] for k, v in columns.items()}, len(keep))
        data = FileImageSet(
            folder,
            [files[i] for i in keep],
            metadata,
            class_names,
            ids=[ids[i] for i in keep],
            image_size=o.resolution,
            channels=o.channels,
            name=self.name,
            version=self.version,
            params={"test_fraction": o.test_fraction, "label_column": o.label_column},
            report=report,
        )
        return _nonempty(data, split, folder)

    def _from_csv(self, folder: Path, report: LoadReport):
        o = self.options
        path = folder / o.metadata_file
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = list(reader.fieldnames or [])
            rows = list(reader)
        file_col = o.file_column or next((c for c in FILE_COLUMNS if c in header), None)
        if file_col is None or file_col not in header:
            raise UsageError(
                f"'{path}' has no file column (columns: {', '.join(header)}): name it file_name or set file_column"
            )
        label_col = o.label_column or ("label" if "label" in header else None)
        if label_col is not None and label_col not in header:
            raise UsageError(f"'{path}' has no column '{label_col}' (columns: {', '.join(header)})")
        id_col = "id" if "id" in header and file_col != "id" else None
        fields = [c for c in header if c not in (file_col, id_col, "split")]
        files, ids, splits, values = [], [], [], []
        for number, row in enumerate(rows, start=2):
            rel = Path((row.get(file_col) or "").strip()).as_posix()
            if rel in ("", ".") or rel.startswith("../") or Path(rel).is_absolute():
                report.add(f"{o.metadata_file} line {number}", f"bad file name '{row.get(file_col)}'")
                continue
            if not (folder / rel).is_file():
                report.add(rel, f"listed in {o.metadata_file} but missing")
                continue
            item_id = (row.get(id_col) or "").strip() if id_col else rel
            given = (row.get("split") or "").strip().lower() if "split" in header else ""
            files.append(rel)
            ids.append(item_id or rel)
            splits.append(given if given else hash_split(item_id or rel, o.test_fraction))
            values.append({c: _coerce(row.get(c)) for c in fields})
        if len(set(ids)) != len(ids):
            raise UsageError(f"'{path}': ids (or file names) must be unique")
        columns: dict[str, list[object]] = {c: [v[c] for v in values] for c in fields}
        class_names: list[str] = []
        if label_col is not None:
            raw = columns[label_col]
            labels, class_names = _class_index(raw)
            if not all(isinstance(v, int) for v in raw if v is not None):
                columns["class_name"] = [str(v) if v is not None else None for v in raw]
            columns["label"] = labels  # type: ignore[assignment]
        else:
            columns["label"] = [-1] * len(files)
        return files, ids, splits, columns, class_names

    def _from_folders(self, folder: Path, report: LoadReport):
        o = self.options
        split_dirs = (folder / "train").is_dir() and (folder / "test").is_dir()
        roots = [("train", folder / "train"), ("test", folder / "test")] if split_dirs else [(None, folder)]
        found: list[tuple[str | None, str, str | None]] = []  # (split, relative file, class)
        for given, root in roots:
            classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
            loose = list_images(root, recursive=False)
            prefix = "" if root == folder else f"{root.name}/"
            if classes:
                for rel in loose:
                    report.add(prefix + rel, "image outside the class sub-folders")
                for cls in classes:
                    for rel in list_images(root / cls):
                        found.append((given, f"{prefix}{cls}/{rel}", cls))
            else:
                found.extend((given, prefix + rel, None) for rel in loose)
        class_names = sorted({c for _, _, c in found if c is not None})
        index = {c: i for i, c in enumerate(class_names)}
        files = [f for _, f, _ in found]
        splits = [given or hash_split(f, o.test_fraction) for given, f, _ in found]
        columns: dict[str, list[object]] = {"label": [index[c] if c is not None else -1 for _, _, c in found]}
        if class_names:
            columns["class_name"] = [c for _, _, c in found]
        return files, list(files), splits, columns, class_names


@hookimpl
def register_datasets(register) -> None:
    register(Cifar10)
    register(CelebA)
    register(CelebAHQ)
    register(UTKFace)
    register(ImageFolder)
