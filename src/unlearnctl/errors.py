"""Error types and exit codes (docs/errors.md).

The core raises these; only the CLI turns them into one red line and an exit code
(``UNLEARNCTL_DEBUG=1`` shows the traceback instead).
"""

from __future__ import annotations

import enum
import errno
import re
import signal


class ExitCode(enum.IntEnum):
    """Documented process exit codes."""

    OK = 0
    #: an environmental failure: disk full, a file-size limit, a read-only file system, permission
    #: denied, out of memory; or an internal error
    FAILURE = 1
    #: bad input: a name, a number, a path, a file, a config or a manifest
    USAGE = 2
    #: stopped by a signal: 128 + its number (SIGHUP 129, SIGINT / Ctrl-C 130, SIGTERM 143)
    HANGUP = 129
    INTERRUPTED = 130
    TERMINATED = 143


class UnlearnError(Exception):
    """Base class of every error unlearnctl raises on purpose.

    The message must be one line that says what was wrong and how to fix it.
    """

    exit_code: ExitCode = ExitCode.FAILURE


class UsageError(UnlearnError):
    """Bad input from the user: unknown name, bad option value, missing file... (exit code 2)."""

    exit_code = ExitCode.USAGE


class UnknownComponentError(UsageError):
    """A component name that no plugin provides; carries a "did you mean" suggestion."""

    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        import difflib

        self.kind, self.name, self.known = kind, name, known
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
        hint = f"did you mean '{close[0]}'? " if close else ""
        listing = ", ".join(sorted(known)) or "none installed"
        super().__init__(f"unknown {kind} '{name}': {hint}available: {listing} (see `unlearnctl list {kind}s`)")
        self.suggestion = close[0] if close else None


class OptionError(UsageError):
    """An option key or value that a component's options model rejects."""


class DuplicateComponentError(UnlearnError):
    """Two plugins provide a component with the same kind and name."""

    exit_code = ExitCode.USAGE


class PluginError(UnlearnError):
    """A plugin failed to import or to register its components."""


class ModelNotAvailableError(UsageError):
    """Model weights that cannot be found or fetched (offline, missing folder...)."""


class RunFolderExistsError(UsageError):
    """Refusing to overwrite an existing run folder."""


class VerificationError(UnlearnError):
    """A recorded input or output does not match what it is now (``replay``; exit code 1)."""


class RunIntegrityError(UsageError):
    """A run folder's file differs from (or lacks) the sha256 its records hold (``verify``; exit code 2)."""


class EnvironmentFailure(UnlearnError):
    """The machine refused: disk full, a file-size limit, a read-only file system, permission denied, out
    of memory (exit code 1). The message names the path and what to do."""


class OutputNotWritableError(EnvironmentFailure):
    """An output folder's parent cannot be written, found before any work starts (exit code 1)."""


class Interrupted(KeyboardInterrupt):
    """The process was asked to stop by a signal (SIGTERM, SIGHUP; SIGINT when a run stops at a step boundary).

    A ``KeyboardInterrupt``, so that code which cleans up on Ctrl-C cleans up the same way; the exit
    code is ``128 + signum``. Raised by the handlers the ``unlearnctl`` console script installs.
    """

    def __init__(self, signum: int, detail: str = "") -> None:
        self.signum = int(signum)
        self.exit_code = 128 + self.signum
        #: what was kept and how to go on (``"; checkpoint of step 40 kept: resume with ..."``)
        self.detail = detail
        super().__init__(signal_name(self.signum))


class NonFiniteError(UnlearnError):
    """A loss or a gradient became NaN or infinite: the run stops at that step (exit code 1)."""


def signal_name(signum: int) -> str:
    """``SIGTERM``... for a signal number (its number when it has no name here)."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


#: errno values of an environmental failure and the one-line reason each gets (docs/errors.md)
OS_FAILURES: dict[int, str] = {
    errno.ENOSPC: "no space left on device (free some space, or write the output elsewhere)",
    errno.EDQUOT: "disk quota exceeded (free some space, or write the output elsewhere)",
    errno.EFBIG: "file too large for a file-size limit (ulimit -f) or the file system (raise the limit, or "
    "write the output elsewhere)",
    errno.EROFS: "read-only file system (write the output elsewhere)",
    errno.EACCES: "permission denied (check the permissions, or use another path)",
    errno.EPERM: "operation not permitted (check the permissions, or use another path)",
    errno.ENOMEM: "out of memory",
}


def os_error_message(exc: OSError, what: str | None = None) -> str:
    """One line for an ``OSError``: ``cannot <what>: <reason>``, where ``what`` defaults to the path the
    error names (``"write the run folder 'runs/x'"``...)."""
    reason = OS_FAILURES.get(exc.errno or 0) or exc.strerror or str(exc) or type(exc).__name__
    if what is None:
        what = f"use '{exc.filename}'" if exc.filename is not None else ""
    text = f"cannot {what}: {reason}" if what else str(reason)
    return " ".join(text.split())


_OS_ERROR_IN_TEXT = re.compile(r"\(os error (\d+)\)|\[Errno (\d+)\]")


def environment_errno(exc: BaseException) -> int | None:
    """The errno of an environmental failure behind ``exc``: an ``OSError``'s own, or one that a library
    reports in its message only (safetensors: ``... File too large (os error 27)``), following the
    exception's causes; ``None`` when there is none."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno is not None:
            return int(current.errno)
        match = _OS_ERROR_IN_TEXT.search(str(current))
        if match is not None:
            return int(match.group(1) or match.group(2))
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return None
