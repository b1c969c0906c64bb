"""``utkface``: faces with age, gender and race parsed from the file names; deterministic hash split."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator

from unlearnctl import Dataset, OnProblem, Options, UsageError, dataset_folder

from .common import BAD_FILE_HELP, Split, check_split, has_images_shallow, nonempty, resolution_field

if TYPE_CHECKING:
    from unlearnctl import ImageSet

UTKFACE_GENDERS = ("male", "female")
UTKFACE_RACES = ("White", "Black", "Asian", "Indian", "Others")

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
        resolution: int = resolution_field(64)
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
        import numpy as np

        from unlearnctl import ColumnMetadata, FileImageSet, LoadReport, hash_split, list_images

        check_split(self.name, split)
        folder = dataset_folder(data_dir, "utkface", has_images_shallow)
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
        return nonempty(data, split, folder)
