"""Data: image sets (what datasets return), forget/remain splits, and reading image files from disk.

- :mod:`.sets`: :class:`ImageSet` and its subclasses, :func:`split_forget`, fingerprints.
- :mod:`.files`: folders and archives of images streamed from disk, content hashes, data warnings.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .sets import ForgetSplit, ImageSet, ImageSubset, TensorImageSet, ids_fingerprint, split_forget

__all__ = ["ForgetSplit", "ImageSet", "ImageSubset", "TensorImageSet", "ids_fingerprint", "split_forget"]


def __getattr__(name: str) -> Any:
    """The names of :mod:`.sets` (torch), imported on first use: ``unlearnctl.data.formats`` stays light."""
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(".sets", __name__), name)
    globals()[name] = value
    return value
