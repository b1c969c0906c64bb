"""``imagefolder``: your own images, as class sub-folders or images plus a metadata CSV with any fields."""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from unlearnctl import Dataset, OnProblem, Options, UsageError, dataset_folder

from .common import BAD_FILE_HELP, Split, check_split, has_images_shallow, nonempty, resolution_field

if TYPE_CHECKING:
    from unlearnctl import ImageSet, LoadReport

FILE_COLUMNS = ("file_name", "file", "filename", "path", "image", "image_id")


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
        resolution: int = resolution_field(64)
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
        from unlearnctl import ColumnMetadata, FileImageSet, LoadReport

        check_split(self.name, split)
        o = self.options
        folder = dataset_folder(
            data_dir, "imagefolder", lambda p: (p / o.metadata_file).is_file() or has_images_shallow(p)
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
        return nonempty(data, split, folder)

    def _from_csv(self, folder: Path, report: LoadReport):
        from unlearnctl import hash_split

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
        from unlearnctl import hash_split, list_images

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
