"""The ``unlearnctl`` command line (typer + rich): the only place that prints or exits.

One module per command group (``*_cmd.py``), each with a ``register(app)`` function; ``app.py``
assembles them. Plugins are loaded only when a command needs the registry, never at import time.
"""

from __future__ import annotations


def main() -> None:
    """Entry point of the ``unlearnctl`` console script."""
    from .app import app

    app(prog_name="unlearnctl")


__all__ = ["main"]
