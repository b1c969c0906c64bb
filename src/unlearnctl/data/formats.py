"""What the image-file readers accept, without torch: a dataset's ``Options`` name these types, and
``list``/``show`` describe datasets without importing torch (docs/performance.md, "Start-up")."""

from __future__ import annotations

from typing import Literal

#: file name endings read as images (case-insensitive); other files in an image folder are ignored
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})

#: what to do with a file that cannot be used: leave it out with a ``DataWarning``, or stop
OnProblem = Literal["warn", "error"]
