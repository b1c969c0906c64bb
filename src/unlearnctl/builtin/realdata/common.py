"""What the real-world dataset loaders share: the split check, the resolution option, the bad-file option."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from unlearnctl import IMAGE_EXTENSIONS, UsageError

if TYPE_CHECKING:
    from unlearnctl import ImageSet

Split = Literal["train", "test"]

BAD_FILE_HELP = (
    "'warn' leaves out files that cannot be used (malformed names, annotated images missing on disk) and "
    "names them in a warning; 'error' stops instead"
)


def check_split(name: str, split: str) -> None:
    if split not in ("train", "test"):
        raise UsageError(f"dataset '{name}' has splits 'train' and 'test', not '{split}'")


def resolution_field(default: int) -> int:
    return Field(default, ge=8, le=1024, description="side in pixels of the images fed to the model (square)")


def nonempty(data: ImageSet, split: str, folder: Path) -> ImageSet:
    if len(data) == 0:
        raise UsageError(
            f"dataset '{data.name}' has no images in split '{split}' under '{folder}': "
            f"check the folder layout in docs/datasets/{data.name}.md"
        )
    return data


def has_images_shallow(folder: Path, depth: int = 2) -> bool:
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
    return depth > 0 and any(has_images_shallow(sub, depth - 1) for sub in subdirs)
