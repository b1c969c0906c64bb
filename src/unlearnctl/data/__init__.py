"""Data: image sets (what datasets return), forget/remain splits, and reading image files from disk.

- :mod:`.sets`: :class:`ImageSet` and its subclasses, :func:`split_forget`, fingerprints.
- :mod:`.files`: folders and archives of images streamed from disk, content hashes, data warnings.
"""

from __future__ import annotations

from .sets import ForgetSplit, ImageSet, ImageSubset, TensorImageSet, ids_fingerprint, split_forget

__all__ = ["ForgetSplit", "ImageSet", "ImageSubset", "TensorImageSet", "ids_fingerprint", "split_forget"]
