"""The ``unlearnctl`` console script (``[project.scripts]`` in pyproject.toml).

A top-level module, outside the ``unlearnctl`` package, so that the script handles Ctrl-C, SIGTERM and
SIGHUP from its first moment: a command that computes imports torch, which takes seconds, and a signal
during those seconds would otherwise end in a ``KeyboardInterrupt`` traceback. Here it ends in one
``error:`` line and exit code 130 (Ctrl-C), 143 (SIGTERM) or 129 (SIGHUP); see docs/errors.md. Once
imported, :func:`unlearnctl.cli.main` takes over (and installs its own handlers).
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType


class _Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP while ``unlearnctl`` is being imported."""

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        self.exit_code = 128 + self.signum
        super().__init__(signal.Signals(signum).name)


def _stop(signum: int, frame: FrameType | None) -> None:
    raise _Stopped(signum)


def main() -> int:
    for name in ("SIGTERM", "SIGHUP"):  # one the process was started to ignore (nohup: SIGHUP) stays ignored
        if hasattr(signal, name) and signal.getsignal(getattr(signal, name)) is not signal.SIG_IGN:
            signal.signal(getattr(signal, name), _stop)
    if hasattr(signal, "SIGXFSZ"):  # a file-size limit: fail the write with EFBIG (Python's default too)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        from unlearnctl.cli import main as cli_main

        return cli_main()
    except KeyboardInterrupt as exc:
        if os.environ.get("UNLEARNCTL_DEBUG", "").strip().lower() not in ("", "0", "false", "no"):
            raise
        signum = getattr(exc, "signum", None)
        what = f"stopped by {signal.Signals(signum).name}" if isinstance(signum, int) else "interrupted"
        try:
            sys.stderr.write(f"error: {what}\n")
            sys.stderr.flush()
        except OSError:
            pass
        return int(getattr(exc, "exit_code", 130))


if __name__ == "__main__":
    sys.exit(main())
