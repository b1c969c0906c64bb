"""Stop signals that let the current step finish (docs/errors.md, "Interrupting a run").

The ``unlearnctl`` command line routes SIGINT, SIGTERM and SIGHUP to :func:`handle`. Outside a step loop
a signal stops the command at once (a :class:`KeyboardInterrupt`; the run folder being written is
removed, or kept when it holds a checkpoint). Inside one (:func:`defer`) the first signal is only
noted: the loop finishes its step, writes a checkpoint and raises
:class:`~unlearnctl.errors.Interrupted`; a second signal stops at once.
"""

from __future__ import annotations

import signal
from types import FrameType

from .errors import Interrupted

#: signals that stop a command, with exit code 128 + their number
STOP_SIGNALS: tuple[str, ...] = ("SIGINT", "SIGTERM", "SIGHUP")

_deferring = 0
_pending: int | None = None


def handle(signum: int, frame: FrameType | None) -> None:
    """The signal handler: note the first signal inside a step loop, stop at once otherwise."""
    global _pending
    if _deferring and _pending is None:
        _pending = int(signum)
        return
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Interrupted(signum)


def install() -> None:
    """Route the stop signals to :func:`handle` (main thread only). A signal the process was started to ignore
    stays ignored: ``nohup`` ignores SIGHUP so that a run outlives its terminal, and a shell script's background
    job ignores SIGINT so that Ctrl-C meant for the script's foreground does not reach it."""
    for name in STOP_SIGNALS:
        if hasattr(signal, name) and signal.getsignal(getattr(signal, name)) is not signal.SIG_IGN:
            signal.signal(getattr(signal, name), handle)


def pending() -> int | None:
    """The signal noted inside the current step loop, if any."""
    return _pending


def defer(on: bool) -> None:
    """Enter (``True``) or leave (``False``) a step loop: inside, the first stop signal is only noted
    (:func:`pending`); leaving the outermost loop forgets it."""
    global _deferring, _pending
    _deferring = _deferring + 1 if on else max(0, _deferring - 1)
    if not _deferring:
        _pending = None
