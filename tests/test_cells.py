"""``unlearnctl.run_cell`` and the wrapper that starts its commands (``cells.die_with_parent``).

On Linux every command of a cell runs through a tiny ``python -c`` wrapper that has the kernel send it SIGTERM
when the thread that started it ends (``PR_SET_PDEATHSIG``), then execs the command: a sweep killed with
``kill -9`` stops its cells (a ``forget`` checkpoints). The commands here are tiny Python programs (a stand-in
``unlearnctl`` package put first on ``PYTHONPATH``), so every test takes a second or two.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from unlearnctl.cells import CellTask, die_with_parent, run_cell

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")

#: a command that records its pid and folder, writes "term" on SIGTERM (after $FAKE_TERM_SLEEP s; exit 143),
#: else sleeps, then exits
#: with the status in $FAKE_EXIT; the marker files go to $FAKE_MARKS
SLEEPER = """\
import os, signal, sys, time
from pathlib import Path
marks = Path(os.environ["FAKE_MARKS"])
def mark(name):  # whole or absent: a test that sees the file reads the pid
    (marks / f".{name}").write_text(str(os.getpid()))
    os.replace(marks / f".{name}", marks / name)
def term(signum, frame):
    time.sleep(float(os.environ.get("FAKE_TERM_SLEEP", "0")))  # a checkpoint being written
    mark("term")
    sys.exit(143)
signal.signal(signal.SIGTERM, term)
print("cwd", os.getcwd(), "args", " ".join(sys.argv[1:]), "threads", os.environ.get("OMP_NUM_THREADS"), flush=True)
mark("started")
time.sleep(float(os.environ.get("FAKE_SLEEP", "30")))
sys.exit(int(os.environ.get("FAKE_EXIT", "0")))
"""


def wait_for(path: Path, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def fake(tmp_path: Path) -> dict[str, Path]:
    """A stand-in ``unlearnctl`` package (``python -m unlearnctl`` runs :data:`SLEEPER`), a marks folder and
    a cell folder."""
    package = tmp_path / "fake" / "unlearnctl"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(SLEEPER)
    marks = tmp_path / "marks"
    marks.mkdir()
    cell = tmp_path / "cell"
    cell.mkdir()
    return {"path": tmp_path / "fake", "marks": marks, "cell": cell}


def task(fake: dict[str, Path], **env: str) -> CellTask:
    env = {"PYTHONPATH": str(fake["path"]), "FAKE_MARKS": str(fake["marks"]), **env}
    return CellTask("c1", (("forget", "--seed", "3"),), str(fake["cell"]), "logs/c1.log", env=env, threads=1)


def test_a_cell_runs_its_command_in_its_folder_with_its_environment_and_log(fake):
    outcome = run_cell(task(fake, FAKE_SLEEP="0", FAKE_EXIT="7"))
    assert outcome.returncode == 7 and outcome.failed_command == "forget" and not outcome.cancelled
    log = (fake["cell"] / "logs" / "c1.log").read_text()
    assert "$ unlearnctl forget --seed 3" in log
    assert f"cwd {fake['cell']} args forget --seed 3 threads 1" in log
    assert outcome.log_tail.endswith("threads 1")


def test_cancel_stops_the_command_itself_and_the_cell_ends_with_its_status(fake):
    """The wrapper execs the command (same pid): the SIGTERM of ``cancel`` reaches the command, whose own exit
    status (143, from its handler) is the cell's; a wrapper left as a parent would die of the signal (-15)."""
    cancel = threading.Event()
    outcomes = []
    runner = threading.Thread(target=lambda: outcomes.append(run_cell(task(fake), cancel, poll_s=0.05)))
    runner.start()
    assert wait_for(fake["marks"] / "started"), (fake["cell"] / "logs" / "c1.log").read_text()
    cancel.set()
    runner.join(timeout=20)
    assert not runner.is_alive()
    (outcome,) = outcomes
    assert outcome.cancelled and outcome.returncode == 143
    assert (fake["marks"] / "term").read_text() == (fake["marks"] / "started").read_text()


def test_a_repeated_interrupt_still_waits_for_the_stopped_command(fake):
    """Ray's cancel is a ``KeyboardInterrupt`` in the thread running the cell, repeated until the task ends.
    The first stops the command (SIGTERM); the next ones, which arrive while the command is still in its
    handler (writing a checkpoint, here 1.5 s), must not end the wait: ``run_cell`` re-raises only once the
    command has ended, so an executor that reports a cell stopped has no command left running."""
    script = textwrap.dedent(
        f"""
        from unlearnctl.cells import CellTask, run_cell
        run_cell(CellTask("c1", (("forget",),), {str(fake["cell"])!r}, "c1.log",
                          env={{"PYTHONPATH": {str(fake["path"])!r}, "FAKE_MARKS": {str(fake["marks"])!r},
                                "FAKE_TERM_SLEEP": "1.5"}}))
        """
    )
    runner = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE)
    try:
        assert wait_for(fake["marks"] / "started"), (fake["cell"] / "c1.log").read_text()
        for _ in range(4):  # the first interrupt, then three more within the command's 1.5 s handler
            runner.send_signal(signal.SIGINT)
            time.sleep(0.2)
        _, err = runner.communicate(timeout=30)
        assert (fake["marks"] / "term").exists(), "run_cell returned while its command was still stopping"
        assert b"KeyboardInterrupt" in err  # re-raised once the command had ended
    finally:
        if runner.poll() is None:
            runner.kill()
        started = fake["marks"] / "started"
        if started.exists() and not (fake["marks"] / "term").exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(started.read_text()), signal.SIGKILL)


@linux
def test_a_sweep_killed_with_sigkill_has_its_cell_terminated(fake):
    """A process running ``run_cell`` (as ``sweep`` does) is killed with SIGKILL: its cell's command gets
    SIGTERM from the kernel within seconds (it has 30 s of sleep left)."""
    script = textwrap.dedent(
        f"""
        from unlearnctl.cells import CellTask, run_cell
        run_cell(CellTask("c1", (("forget",),), {str(fake["cell"])!r}, "c1.log",
                          env={{"PYTHONPATH": {str(fake["path"])!r}, "FAKE_MARKS": {str(fake["marks"])!r}}}))
        """
    )
    sweep = subprocess.Popen([sys.executable, "-c", script])
    try:
        assert wait_for(fake["marks"] / "started"), (fake["cell"] / "c1.log").read_text()
        assert not (fake["marks"] / "term").exists()
        sweep.kill()
        assert sweep.wait(timeout=10) == -signal.SIGKILL
        assert wait_for(fake["marks"] / "term", timeout=10), "the cell's command did not get SIGTERM"
        assert (fake["marks"] / "term").read_text() == (fake["marks"] / "started").read_text()
    finally:
        if sweep.poll() is None:
            sweep.kill()
        if not (fake["marks"] / "term").exists() and (fake["marks"] / "started").exists():
            os.kill(int((fake["marks"] / "started").read_text()), signal.SIGKILL)


@linux
def test_the_signal_comes_when_the_thread_that_started_the_command_ends(fake):
    """PR_SET_PDEATHSIG's "parent" is the thread that forked: a thread that starts the command and ends
    (while this process lives on) has the command terminated."""
    env = {**os.environ, "PYTHONPATH": str(fake["path"]), "FAKE_MARKS": str(fake["marks"])}
    procs: list[subprocess.Popen[bytes]] = []

    def start_and_leave() -> None:
        procs.append(subprocess.Popen(die_with_parent([sys.executable, "-m", "unlearnctl"]), env=env))
        wait_for(fake["marks"] / "started")  # the prctl is done once the command runs

    starter = threading.Thread(target=start_and_leave)
    starter.start()
    starter.join()
    (proc,) = procs
    try:
        assert (fake["marks"] / "started").exists()
        assert proc.wait(timeout=10) == 143
        assert (fake["marks"] / "term").exists()
    finally:
        if proc.poll() is None:
            proc.kill()


@linux
@pytest.mark.parametrize("parent_alive", [True, False])
def test_a_wrapper_whose_parent_has_gone_exits_143_without_running_the_command(tmp_path, parent_alive):
    """The parent may end between the fork and the prctl (no signal would ever come): the wrapper sees that its
    parent is not the one it was started by and exits 143 instead of running the command."""
    marker = tmp_path / "ran"
    cmd = [sys.executable, "-c", f"open({str(marker)!r}, 'w').close(); raise SystemExit(5)"]
    # this process is the wrapper's parent; any other pid stands for a parent that has gone
    parent = os.getpid() if parent_alive else os.getpid() + 100_000
    result = subprocess.run(die_with_parent(cmd, parent), capture_output=True, text=True, timeout=30)
    assert (result.returncode, marker.exists()) == ((5, True) if parent_alive else (143, False)), result.stderr


def test_no_wrapper_where_the_signal_does_not_exist(monkeypatch):
    cmd = [sys.executable, "-m", "unlearnctl", "forget"]
    monkeypatch.setattr(sys, "platform", "darwin")
    assert die_with_parent(cmd) == cmd
    monkeypatch.setattr(sys, "platform", "linux")
    wrapped = die_with_parent(cmd, parent=1234)
    assert wrapped[-5:] == ["1234", *cmd] and wrapped[0] == sys.executable
