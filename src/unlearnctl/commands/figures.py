"""Plots as PNG files: matplotlib on its file-only backend, and a figure written whole or not at all.

The trade-off plots of ``unlearnctl compare`` (runs, :mod:`.compare`; a study, :mod:`.study_plot`) draw with
:func:`pyplot` and write with :func:`save_png`. A caller refuses an existing file before it draws
(:func:`unlearnctl.rundir.check_new_file`, so that ``--overwrite`` is asked for before any work). matplotlib
is imported on first use: ``unlearnctl --help`` stays light (docs/performance.md).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from ..rundir import atomic_write_bytes


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend: figures for files only, no display needed or opened (a
    sweep's machine, a CI runner)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig: Any) -> bytes:
    """``fig`` as PNG bytes (tight bounding box), and closed (pyplot keeps every open figure otherwise)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", bbox_inches="tight")
    finally:
        plt.close(fig)
    return buf.getvalue()


def save_png(fig: Any, path: Path) -> Path:
    """Write ``fig`` to ``path`` as a PNG (:func:`png_bytes`) through a temporary file and a rename, never half
    a file. Returns ``path``.

    :raises EnvironmentFailure: ``path`` cannot be written (:func:`unlearnctl.rundir.atomic_write_bytes`).
    """
    path = Path(path)
    atomic_write_bytes(path, png_bytes(fig))
    return path
