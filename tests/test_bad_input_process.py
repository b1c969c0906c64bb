"""The error boundary seen from outside: the real ``unlearnctl`` console script in a process of its own,
for what cannot happen in-process: Ctrl-C and SIGTERM (during start-up, while torch is imported, and
mid-run), a file-size limit (``ulimit -f``), a parent folder we may not write even as root (capabilities
dropped), a real read-only file system and a real full disk (a tiny tmpfs in a private mount namespace).

Each case: the documented exit code, one ``error:`` line on stderr, no traceback, nothing left behind.
Cases that need root, ``setpriv`` or ``unshare`` are skipped, with the reason, where those are missing.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_bad_input import assert_left_nothing, error_lines

UNLEARNCTL = Path(sys.executable).parent / "unlearnctl"
TINY_FORGET = ["forget", "--model", "tiny-cond", "--classes", "1", "--steps", "1", "--grid-per-class", "0"]

pytestmark = pytest.mark.skipif(not UNLEARNCTL.exists(), reason=f"no console script at {UNLEARNCTL}")


@pytest.fixture
def env(child_env: dict[str, str]) -> dict[str, str]:
    return child_env


def run(args: list[object], env: dict[str, str], **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(UNLEARNCTL), *map(str, args)], env=env, capture_output=True, text=True, timeout=300, **kwargs
    )


def assert_one_line(stderr: str, needle: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = error_lines(stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert needle in lines[0], (needle, lines[0])
    return lines[0]


def with_signals_default(*ignored: str) -> list[str]:
    """A command prefix that sets SIGINT, SIGTERM and SIGHUP to their default action, ``ignored`` ones (names) to
    ignore, then execs the rest of the command line (``exec`` keeps both)."""
    code = (
        "import os, signal, sys\n"
        "for name in ('SIGINT', 'SIGTERM', 'SIGHUP'):\n"
        "    ign = name in sys.argv[1].split(',')\n"
        "    signal.signal(getattr(signal, name), signal.SIG_IGN if ign else signal.SIG_DFL)\n"
        "os.execv(sys.argv[2], sys.argv[2:])\n"
    )
    return [sys.executable, "-c", code, ",".join(ignored)]


def test_a_signal_the_process_was_started_to_ignore_stays_ignored(env, tmp_path):
    """``nohup unlearnctl ...``: SIGHUP (a closed terminal) during start-up and during the run changes nothing."""
    out = tmp_path / "out"
    proc = subprocess.Popen([*with_signals_default("SIGHUP"), str(UNLEARNCTL), *TINY_FORGET, "--out", str(out)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    wait_until_importing_torch(proc)
    while proc.poll() is None:  # hang up on it until it has finished
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.05)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert (out / "manifest.json").is_file()


def wait_until_importing_torch(proc: subprocess.Popen[str], timeout: float = 120.0) -> None:
    """Return once ``proc`` has loaded torch's libraries (Linux: its ``/proc/PID/maps`` names them), that is
    once its start-up is under way, however loaded the machine: a fixed delay could signal a process that has
    not started Python yet (then the default action ends it, and nothing of unlearnctl's runs). Elsewhere:
    0.3 s, which is inside torch's import on an idle machine."""
    maps = Path(f"/proc/{proc.pid}/maps")
    if not maps.exists():
        time.sleep(0.3)
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if "/torch/" in maps.read_text():
                return
        except OSError:  # it exited meanwhile: the assertions after say how
            return
        time.sleep(0.005)
    raise AssertionError(f"the child did not start importing torch within {timeout:g} s (exit code {proc.poll()})")


@pytest.mark.parametrize(("signum", "code", "line"), [(signal.SIGINT, 130, "error: interrupted"),
                                                      (signal.SIGTERM, 143, "error: stopped by SIGTERM")])  # fmt: skip
def test_a_signal_during_start_up_is_one_line(env, tmp_path, signum, code, line):
    """Stopped while it imports torch (seconds): it used to print a KeyboardInterrupt traceback."""
    # as from a terminal: the signal's default disposition (a test run in the background inherits SIGINT ignored)
    proc = subprocess.Popen([*with_signals_default(), str(UNLEARNCTL), *TINY_FORGET, "--out", str(tmp_path / "out")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    wait_until_importing_torch(proc)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    assert stderr == line + "\n"
    assert_left_nothing(tmp_path / "out")


def test_sigterm_mid_run_removes_the_partial_folder(env, tmp_path):
    """`sample` of the built-in model, stopped once its temporary folder exists (it is writing images)."""
    out = tmp_path / "o" / "samples"
    proc = subprocess.Popen([str(UNLEARNCTL), "sample", "--num", "100000", "--steps", "50", "--out", str(out)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 180
    while not list(out.parent.glob(".samples.partial-*")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(out.parent.glob(".samples.partial-*")), "the run never started writing"
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    assert_one_line(stderr, "stopped by SIGTERM")
    assert_left_nothing(out)


def test_file_size_limit_while_writing_the_weights(env, tmp_path):
    """``ulimit -f 64`` (64 KiB): the tiny model's weights (168 kB) exceed it. The child gets SIGXFSZ's
    default action (terminate) from us: the script itself ignores the signal, so the write fails with EFBIG."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    result = run([*TINY_FORGET, "--out", tmp_path / "out"], env, preexec_fn=limit)
    assert result.returncode == 1, result.stderr
    line = assert_one_line(result.stderr, "file too large")
    assert f"cannot write the run folder '{tmp_path / 'out'}'" in line
    assert_left_nothing(tmp_path / "out")


def _can_drop_capabilities() -> str | None:
    if os.geteuid() != 0:
        return None  # not root: chmod 555 stops us anyway
    if shutil.which("setpriv") is None:
        return "setpriv is missing: cannot drop CAP_DAC_OVERRIDE to make a folder unwritable for root"
    probe = subprocess.run(["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--inh-caps", "-all",
                            "true"], capture_output=True)  # fmt: skip
    return None if probe.returncode == 0 else f"setpriv cannot drop capabilities here: {probe.stderr!r}"


def test_unwritable_parent_is_refused_before_any_work(env, tmp_path):
    """``--out`` inside a folder we may not write (mode 555): refused up front, before the model and the
    data are loaded (it used to fail after them, with a PermissionError traceback)."""
    reason = _can_drop_capabilities()
    if reason:
        pytest.skip(reason)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--inh-caps", "-all"]
    if os.geteuid() != 0:
        prefix = []
    try:
        result = subprocess.run([*prefix, str(UNLEARNCTL), *TINY_FORGET, "--out", str(locked / "run")], env=env,
                                capture_output=True, text=True, timeout=300)  # fmt: skip
    finally:
        locked.chmod(0o755)
    assert result.returncode == 1, result.stderr
    line = assert_one_line(result.stderr, "permission denied")
    assert f"cannot write --out '{locked / 'run'}'" in line  # the up-front check, not a failed write
    assert list(locked.iterdir()) == []


def _in_private_mount(tmp_path: Path, mount: str, args: list[object], env: dict[str, str]):
    """Run ``unlearnctl ARGS`` with ``tmp_path/mnt`` a fresh tmpfs (``mount`` options) in a private mount
    namespace; stdout ends with what the tmpfs holds afterwards (``ls -A``)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare to mount a tmpfs in a private mount namespace")
    point = tmp_path / "mnt"
    point.mkdir()
    quoted = " ".join(f"'{a}'" for a in [UNLEARNCTL, *args])
    script = (
        f"mount -t tmpfs -o {mount} tmpfs '{point}' || exit 99; {quoted}; rc=$?; echo LEFT; ls -A '{point}'; exit $rc"
    )
    result = subprocess.run(["unshare", "-m", "sh", "-c", script], env=env, capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    if result.returncode == 99:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    return result, point, result.stdout.split("LEFT\n", 1)[1].split()


def test_read_only_file_system_is_refused_before_any_work(env, tmp_path):
    result, point, left = _in_private_mount(tmp_path, "ro,size=1m", ["sample", "--out", tmp_path / "mnt" / "s"], env)
    assert result.returncode == 1, result.stderr
    line = assert_one_line(result.stderr, "read-only file system")
    assert f"cannot write --out '{point / 's'}'" in line
    assert left == []


def test_disk_full_while_writing_the_weights(env, tmp_path):
    """A 64 KiB tmpfs: the run folder starts, then the weights (168 kB) fill the disk."""
    result, point, left = _in_private_mount(tmp_path, "size=64k", [*TINY_FORGET, "--out", tmp_path / "mnt" / "r"], env)
    assert result.returncode == 1, result.stderr
    line = assert_one_line(result.stderr, "no space left on device")
    assert f"cannot write the run folder '{point / 'r'}'" in line
    assert left == []
