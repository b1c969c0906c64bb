"""The ``unlearnctl`` command line (typer + rich): the only place that prints or exits.

One module per command group (``*_cmd.py``), each with a ``register(app)`` function; ``app.py``
assembles them. Plugins are loaded only when a command needs the registry, never at import time.
"""

from __future__ import annotations

import os


def main() -> None:
    """Entry point of the ``unlearnctl`` console script."""
    # OpenMP threads that spin while waiting make torch 10-20x slower on a busy machine (measured on
    # 2 shared cores: `sample` 195 s vs 28 s). Passive waiting costs nothing on a quiet one. Set before
    # torch is imported; a value the user chose is kept.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from .app import app

    app(prog_name="unlearnctl")


__all__ = ["main"]
