"""The ``unlearnctl`` command line (typer + rich): the only place that prints or exits.

One module per command group (``*_cmd.py``), each with a ``register(app)`` function; ``app.py``
assembles them. Plugins are loaded only when a command needs the registry, never at import time.
Errors, interrupts and exit codes: :mod:`unlearnctl.cli.common` and docs/errors.md.
"""

from __future__ import annotations

import os
import signal
import sys

from ..errors import ExitCode, signal_name


def main() -> int:
    """Entry point of the ``unlearnctl`` console script (through :mod:`_unlearnctl_console`, which
    handles a signal that comes while ``unlearnctl`` itself is being imported)."""
    # OpenMP threads that spin while waiting make torch 10-20x slower on a busy machine (measured on
    # 2 shared cores: `sample` 195 s vs 28 s). Passive waiting costs nothing on a quiet one. Set before
    # torch is imported; a value the user chose is kept.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    install_signal_handlers()
    try:
        from .app import app

        app(prog_name="unlearnctl")  # exits (SystemExit) with the command's code
    except KeyboardInterrupt as exc:  # before the app's own boundary: while importing the commands
        return report_stop(exc)
    return int(ExitCode.OK)


def install_signal_handlers() -> None:
    """SIGINT, SIGTERM and SIGHUP go to :func:`unlearnctl.stopping.handle`: outside a step loop they stop
    the command at once (it cleans up as on Ctrl-C and exits with 128 + the signal's number); inside one
    the step finishes and a checkpoint is written first. SIGXFSZ is ignored (as Python does at start-up,
    unless embedded without its signal handlers), so that a file-size limit (``ulimit -f``) makes the
    write fail with EFBIG, which is cleaned up and reported in one line, instead of killing the process
    midway. Only from the main thread."""
    from .. import stopping

    stopping.install()
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def report_stop(exc: KeyboardInterrupt) -> int:
    """One line for an interrupt outside any command (plain text: rich may not be imported yet); its exit
    code. ``UNLEARNCTL_DEBUG=1`` re-raises for the traceback."""
    if os.environ.get("UNLEARNCTL_DEBUG", "").strip().lower() not in ("", "0", "false", "no"):
        raise exc
    signum = getattr(exc, "signum", None)
    what = f"stopped by {signal_name(signum)}" if isinstance(signum, int) else "interrupted"
    try:
        sys.stderr.write(f"error: {what}\n")
        sys.stderr.flush()
    except OSError:
        pass
    code = getattr(exc, "exit_code", None)
    return int(code) if isinstance(code, int) else int(ExitCode.INTERRUPTED)


__all__ = ["main"]
