"""Error types and exit codes.

The core raises these; only the CLI turns them into one red line and an exit code
(``UNLEARNCTL_DEBUG=1`` shows the traceback instead).
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Documented process exit codes."""

    OK = 0
    FAILURE = 1
    USAGE = 2
    INTERRUPTED = 130


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
