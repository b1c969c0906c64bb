"""A study's unit of work, as executors see it: :class:`CellTask` in, :class:`CellOutcome` out.

``unlearnctl sweep`` turns a study spec into cells (docs/sweep.md). Each cell is a few ordinary
``unlearnctl`` commands run one after the other in a fresh Python process each (``forget`` then ``eval``,
for instance), writing into the study folder. An executor (:class:`unlearnctl.Executor`) decides *where*
a cell runs -- a local process, a Ray worker -- and calls :func:`run_cell` there. Nothing here imports
torch: an executor plugin stays light, and a Ray worker needs only ``unlearnctl`` installed.

A cell is stopped with ``cancel`` (or a ``KeyboardInterrupt`` in the thread running it, which is how Ray
cancels a task): the running command gets SIGTERM, so a ``forget`` finishes its step, checkpoints and
exits 143, and the next ``sweep`` resumes it (docs/resume.md).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: environment variables that set a process's CPU threads (set from ``CellTask.threads``)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
#: lines of the cell's log kept in :attr:`CellOutcome.log_tail`
LOG_TAIL_LINES = 15
#: seconds a command has to stop after SIGTERM (a forget finishes its step and checkpoints) before SIGKILL
STOP_GRACE_S = 120.0
#: the exit status of a cell stopped by ``cancel`` before its first command started
CANCELLED = -int(signal.SIGTERM)


@dataclass(frozen=True)
class CellTask:
    """One cell of a study: the commands to run, where, and with what environment.

    - ``id``: the cell's id in the study's index (``study.json``), unique within the study;
    - ``commands``: ``unlearnctl`` argument lists, run in order as ``python -m unlearnctl ARGS`` with the
      Python of the machine that runs them; the first that fails ends the cell;
    - ``cwd``: the folder they run in (the study folder; paths in ``commands`` are relative to it);
    - ``log``: the file their output is appended to (relative to ``cwd`` or absolute);
    - ``env``: variables added to the environment;
    - ``threads``: CPU threads per command (sets ``OMP_NUM_THREADS``...; None: the machine's default).
    """

    id: str
    commands: tuple[tuple[str, ...], ...]
    cwd: str
    log: str
    env: dict[str, str] = field(default_factory=dict)
    threads: int | None = None

    def log_path(self) -> Path:
        log = Path(self.log)
        return log if log.is_absolute() else Path(self.cwd) / log


@dataclass(frozen=True)
class CellOutcome:
    """How a cell ended: ``returncode`` 0 when every command succeeded, else the first failure's status
    (negative: killed by that signal; :data:`CANCELLED`: stopped before it started)."""

    id: str
    returncode: int
    seconds: float
    #: the ``unlearnctl`` subcommand that failed (``forget``, ``eval``...), None when all succeeded
    failed_command: str | None = None
    #: the last lines of the log (what a failed cell printed last)
    log_tail: str = ""
    #: the cell was stopped by ``cancel`` (or by cancelling its Ray task): resumable, not failed
    cancelled: bool = False
    #: the machine that ran it (``platform.node()``)
    host: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.cancelled


def cell_environment(task: CellTask) -> dict[str, str]:
    """The environment of the cell's commands: this process's, ``task.env`` over it, and the thread
    variables from ``task.threads``."""
    env = dict(os.environ)
    env.update(task.env)
    if task.threads is not None:
        for name in THREAD_VARIABLES:
            env[name] = str(task.threads)
    # the cell's output goes to a file: no colours, no live progress bars, and full widths
    env.setdefault("NO_COLOR", "1")
    env.setdefault("COLUMNS", "120")
    return env


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with path.open("r", encoding="utf-8", errors="replace") as fh:
            return "".join(deque(fh, maxlen=lines)).rstrip()
    except OSError:
        return ""


def _wait(proc: subprocess.Popen[bytes], timeout: float | None = None) -> int:
    """``proc.wait(timeout)``, waiting on through KeyboardInterrupts: Ray repeats a cancel until the task ends,
    and a wait cut short would leave the command checkpointing unwatched while the executor reports it stopped."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            return proc.wait(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
        except KeyboardInterrupt:
            continue


def _stop(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM the command, give it :data:`STOP_GRACE_S` to checkpoint and exit, then SIGKILL."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return _wait(proc, STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
    return _wait(proc)


#: The wrapper that starts each command on Linux, run as ``python -I -S -c WRAPPER PARENT_PID COMMAND...``: it
#: asks the kernel for SIGTERM when its parent goes (``PR_SET_PDEATHSIG``; a signal setting that ``exec``
#: keeps), exits 143 without running the command if the parent has gone already, else replaces itself with the
#: command (``execvp``: the same pid, so :func:`_stop`'s signals and the exit status are the command's own).
#: Should ``prctl`` be unavailable the command runs anyway, without the signal. ``-I -S``: the wrapper imports
#: the stdlib alone (about 20 ms; not ``unlearnctl``, nothing from the cell's folder, site-packages or the
#: user's PYTHON* variables), while the command gets the environment unchanged.
WRAPPER = """\
import os, signal, sys
parent, cmd = int(sys.argv[1]), sys.argv[2:]
try:
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, 15)  # PR_SET_PDEATHSIG, SIGTERM
except (ImportError, OSError, AttributeError):
    pass
if os.getppid() != parent:  # the parent ended before prctl: no signal would come, so stop as if it had
    sys.exit(143)
for name in ("SIGPIPE", "SIGXFSZ"):  # ignored by Python at start-up; subprocess restores them too
    if hasattr(signal, name):
        signal.signal(getattr(signal, name), signal.SIG_DFL)
try:
    os.execvp(cmd[0], cmd)
except OSError as exc:
    sys.stderr.write(f"cannot run {cmd[0]}: {exc}\\n")
    sys.exit(127)
"""


def die_with_parent(cmd: Sequence[str], parent: int | None = None) -> list[str]:
    """``cmd`` so that, on Linux, it gets SIGTERM should the thread that starts it end (``PR_SET_PDEATHSIG``):
    a sweep killed with ``kill -9`` stops its cells as Ctrl-C does (a ``forget`` checkpoints) instead of
    leaving them running unseen. Elsewhere ``cmd`` as it is.

    The command runs through :data:`WRAPPER` (a ``python -c`` that sets the signal, then execs the command)
    rather than a ``preexec_fn``, which is unsafe in a process with threads (executors start cells from
    threads). As with any ``PR_SET_PDEATHSIG``, the signal comes when the *thread* that started the
    command ends, not the process: start it from a thread that outlives it (:func:`run_cell` waits for
    it). ``parent``: the pid the wrapper checks its parent against (this process's by default); a wrapper
    whose parent has already gone exits 143 without running ``cmd``.
    """
    if not sys.platform.startswith("linux"):
        return list(cmd)
    parent = os.getpid() if parent is None else parent
    return [sys.executable, "-I", "-S", "-c", WRAPPER, str(parent), *cmd]


def run_cell(task: CellTask, cancel: threading.Event | None = None, poll_s: float = 0.2) -> CellOutcome:
    """Run ``task``'s commands one after the other in this machine's Python; return how it ended.

    Each command runs in its own session (a terminal's Ctrl-C reaches the sweep, not the cells; the sweep
    stops them with SIGTERM through ``cancel``), and gets SIGTERM should this process die (Linux). Output
    (stdout and stderr) is appended to ``task.log`` with a header line per command. Never raises for a
    failing command: the outcome says what failed.
    """
    import platform

    log = task.log_path()
    log.parent.mkdir(parents=True, exist_ok=True)
    env = cell_environment(task)
    start = time.monotonic()
    host = platform.node()
    for args in task.commands:
        if cancel is not None and cancel.is_set():
            return CellOutcome(task.id, CANCELLED, time.monotonic() - start, args[0], _tail(log), True, host)
        with log.open("ab") as out:
            out.write(f"\n$ unlearnctl {' '.join(args)}\n".encode())
            out.flush()
            proc: subprocess.Popen[bytes] | None = None
            cancelled = False
            try:
                proc = subprocess.Popen(
                    die_with_parent([sys.executable, "-m", "unlearnctl", *args]),
                    cwd=task.cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                while proc.poll() is None:
                    if cancel is not None and cancel.is_set():
                        cancelled = True
                        _stop(proc)
                        break
                    time.sleep(poll_s)
            except BaseException:  # KeyboardInterrupt (Ray's cancel), SystemExit: stop the command, re-raise
                if proc is not None:
                    _stop(proc)
                raise
            code = proc.wait()
        if cancelled or code != 0:
            return CellOutcome(task.id, code, time.monotonic() - start, args[0], _tail(log), cancelled, host)
    return CellOutcome(task.id, 0, time.monotonic() - start, None, "", False, host)
