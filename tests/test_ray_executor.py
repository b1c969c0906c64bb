"""The ``ray`` executor of plugins/unlearnctl-ray (docs/executors.md): the cells of a sweep as Ray tasks.

The plugin is loaded the way unlearnctl finds an installed plugin: through the entry point its pyproject.toml
declares (a ``*.dist-info`` on ``sys.path`` next to its ``src`` folder, as tests/test_trackers.py does). One
local Ray instance (2 CPUs, no dashboard) serves the module; the cells run real ``unlearnctl`` commands
(``list ...``: cheap) on its workers, in a study folder under ``tmp_path``. A cell that must run long
without using the CPU is a command that loads a plugin whose import sleeps (``SLEEPER``): it records when it
started and, on SIGTERM, takes a second before it exits, as a ``forget`` that checkpoints would.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import tomllib
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray", reason="the ray executor plugin needs Ray: pip install 'ray>=2.9'")

from unlearnctl import CellOutcome, CellTask, Executor, UsageError  # noqa: E402
from unlearnctl.registry import get_registry  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = REPO_ROOT / "plugins" / "unlearnctl-ray"
#: seconds a cell of these tests may take (Ray starts a worker process per task slot; each command imports unlearnctl)
CELL_TIMEOUT_S = 120
#: the variables of the test's isolated user folders (tests/conftest.py), handed to every cell
ISOLATED = (
    "HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "UNLEARNCTL_HOME",
    "UNLEARNCTL_DATA_DIR", "UNLEARNCTL_CACHE_DIR", "HF_HOME", "HF_HUB_OFFLINE",
)  # fmt: skip
#: a plugin whose import never ends: the command that loads it runs until it is stopped
SLEEPER = textwrap.dedent(
    """
    import os, signal, time
    from pathlib import Path

    marks = Path(os.environ["SLEEPER_MARKS"])


    def _terminated(signum, frame):
        time.sleep(1.0)  # a command that takes its time to stop, as a forget that checkpoints
        (marks / "terminated").write_text(str(signum))
        os._exit(143)


    signal.signal(signal.SIGTERM, _terminated)
    (marks / "started").write_text(str(os.getpid()))
    time.sleep(300)
    """
)


def _write_dist_info(site: Path, name: str, version: str, points: dict[str, str]) -> None:
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text("[unlearnctl]\n" + "".join(f"{k} = {v}\n" for k, v in points.items()))


def _installed(dist: str) -> bool:
    try:
        importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.fixture
def ray_plugin(fake_plugins, monkeypatch) -> Path:
    """unlearnctl-ray found through its entry point; returns the folder of its dist-info (for PYTHONPATH)."""
    monkeypatch.syspath_prepend(str(PACKAGE / "src"))
    meta = tomllib.loads((PACKAGE / "pyproject.toml").read_text())["project"]
    if not _installed(meta["name"]):  # else `pip install -e plugins/unlearnctl-ray` was done: the real one
        _write_dist_info(fake_plugins.site, meta["name"], meta["version"], meta["entry-points"]["unlearnctl"])
    importlib.invalidate_caches()
    return fake_plugins.site


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[Any]:
    """One local Ray instance for the module (2 CPUs, no dashboard, a small object store), shut down at the
    end; its files (and Ray's auth token, under HOME) in a temporary folder removed then."""
    if ray.is_initialized():
        pytest.skip("Ray is already initialised in this process")
    temp = Path(tempfile.mkdtemp(prefix="ray"))  # short: Ray's socket paths must stay under 108 characters
    (temp / "home").mkdir()
    with pytest.MonkeyPatch.context() as mp:  # what Ray's processes (and so the cells) inherit
        mp.setenv("HOME", str(temp / "home"))
        mp.setenv("OMP_NUM_THREADS", "1")
        mp.delenv("RAY_ADDRESS", raising=False)
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=80 * 1024 * 1024,
            log_to_driver=False,
            _temp_dir=str(temp / "t"),
        )
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def executor(**options: Any) -> Executor:
    done = get_registry().create("executor", "ray", options)
    assert type(done).__module__ == "unlearnctl_ray.executor"
    return done


def cell(study: Path, cell_id: str, *commands: list[str], env: dict[str, str] | None = None) -> CellTask:
    base = {name: os.environ[name] for name in ISOLATED if name in os.environ}
    return CellTask(
        cell_id, tuple(tuple(c) for c in commands), str(study), f"logs/{cell_id}.log", {**base, **(env or {})}, 1
    )


def outcome(future: Future[CellOutcome]) -> CellOutcome:
    done = future.result(timeout=CELL_TIMEOUT_S)
    assert isinstance(done, CellOutcome)
    return done


def command_output(log: Path, header: str) -> str:
    """What the command of ``header`` printed into the cell's log."""
    text = log.read_text()
    assert f"\n$ unlearnctl {header}\n" in text, text
    return text.split(f"\n$ unlearnctl {header}\n", 1)[1]


@pytest.fixture
def study(tmp_path: Path) -> Path:
    folder = tmp_path / "study"
    folder.mkdir()
    return folder


PROBE = """
import json, sys
from unlearnctl import UsageError
from unlearnctl_ray.executor import RayExecutor
messages = []
for options in json.loads(sys.argv[1]):
    ex = RayExecutor(RayExecutor.Options(**options))
    try:
        ex.start(None)
    except UsageError as exc:
        messages.append(str(exc))
    else:
        ex.close()
        messages.append(None)
print(json.dumps(messages))
"""


def test_no_cluster_to_join_is_one_usage_error(tmp_path):
    """A cluster that cannot be joined, a bad address, ``num_cpus`` for a cluster: each a one-line UsageError
    saying how to start a cluster. In a fresh process (Ray not initialised), with no RAY_* variable and a HOME
    of its own: ``address=auto`` finds no cluster -- or, when this test does not run first, the local instance
    of ``ray_instance`` (Ray looks for running GCS processes) without its auth token: refused either way, the
    latter after some seconds more."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(PYTHONPATH=str(PACKAGE / "src"), TMPDIR=str(tmp_path), HOME=str(tmp_path), OMP_NUM_THREADS="1")
    with socket.socket() as sock:  # a port where nothing listens: bound, never listening
        sock.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{sock.getsockname()[1]}"
        cases = [
            {"address": "auto"},
            {"address": "no-port-here"},
            {"address": closed},
            {"address": f"ray://{closed}"},
            {"address": "auto", "num_cpus": 2},
        ]
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-c", PROBE, json.dumps(cases)],
            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=CELL_TIMEOUT_S, check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    unreachable, bad, refused, refused_client, num_cpus = json.loads(done.stdout.strip().splitlines()[-1])
    assert unreachable.startswith("ray executor: cannot reach the Ray cluster at 'auto': ")
    assert bad.startswith("ray executor: cannot reach the Ray cluster at 'no-port-here': ")
    for address, message in ((closed, refused), (f"ray://{closed}", refused_client)):
        assert message.startswith(f"ray executor: cannot reach the Ray cluster at '{address}': nothing answers at ")
    for message in (unreachable, bad, refused, refused_client):
        assert "ray start --head" in message and "\n" not in message
    assert time.monotonic() - started < CELL_TIMEOUT_S / 2  # refused at once, not after Ray's minutes of retries
    assert num_cpus.startswith("ray executor: num_cpus is for a local Ray instance only")


def test_two_cells_run_on_ray_workers(ray_instance, ray_plugin, study):
    if not _installed("unlearnctl-ray"):  # then the cells run where unlearnctl-ray cannot be imported
        finds = ray.remote(num_cpus=0)(lambda: importlib.util.find_spec("unlearnctl_ray") is not None)
        assert ray.get(finds.remote(), timeout=CELL_TIMEOUT_S) is False
    ex = executor(cpus_per_cell=1)
    jobs = ex.start(None)
    assert jobs == 2  # 2 cluster CPUs, one per cell
    try:
        executors = ex.submit(cell(study, "executors", ["list", "executors", "--json"]))
        methods = ex.submit(cell(study, "methods", ["list", "methods", "--json"]))
        first, second = outcome(executors), outcome(methods)
    finally:
        ex.close()
    assert ray.is_initialized()  # close() shuts down only a Ray that start() initialised
    for done, name in ((first, "executors"), (second, "methods")):
        assert done.ok, done
        assert (done.id, done.returncode, done.failed_command, done.cancelled) == (name, 0, None, False)
        assert done.host == platform.node() and done.seconds > 0
    listed = json.loads(command_output(study / "logs/executors.log", "list executors --json"))
    assert {"local"} <= {c["name"] for c in listed}  # the worker's unlearnctl (not this test's registry)
    methods_listed = json.loads(command_output(study / "logs/methods.log", "list methods --json"))
    assert "erasediff" in {c["name"] for c in methods_listed}


def test_a_failing_cell_is_a_failed_outcome(ray_instance, ray_plugin, study):
    ex = executor()
    ex.start(1)
    try:
        task = cell(study, "bad", ["list", "executors"], ["list", "no-such-kind"], ["list", "methods"])
        done = outcome(ex.submit(task))
    finally:
        ex.close()
    assert not done.ok and not done.cancelled
    assert done.returncode == 2 and done.failed_command == "list"  # a usage error (docs/errors.md)
    assert "no-such-kind" in done.log_tail and done.host == platform.node()
    log = (study / "logs/bad.log").read_text()
    assert "$ unlearnctl list no-such-kind" in log and "$ unlearnctl list methods" not in log  # stopped there


def test_a_study_folder_the_worker_cannot_see_is_a_failure_not_a_stray_folder(ray_instance, ray_plugin, tmp_path):
    missing = tmp_path / "elsewhere" / "study"
    ex = executor()
    ex.start(1)
    try:
        done = outcome(ex.submit(cell(missing, "lost", ["list", "executors"])))
    finally:
        ex.close()
    assert not done.ok and done.returncode == 1 and not done.cancelled
    assert "shared file system" in done.log_tail and str(missing) in done.log_tail
    assert not (tmp_path / "elsewhere").exists()  # run_cell would have created it and run there


def test_stop_terminates_the_running_cell_and_drops_the_queued_one(ray_instance, ray_plugin, study, tmp_path):
    sleeper_site = tmp_path / "sleeper-site"
    sleeper_site.mkdir()
    (sleeper_site / "sleeper_plugin.py").write_text(SLEEPER)
    _write_dist_info(sleeper_site, "sleeper", "1.0", {"sleeper": "sleeper_plugin"})
    marks = {name: tmp_path / f"marks-{name}" for name in ("running", "queued")}
    for folder in marks.values():
        folder.mkdir()
    ex = executor(cpus_per_cell=2)  # the cluster's 2 CPUs: one cell at a time
    assert ex.start(None) == 1 and ex.threads_per_cell(1) == 2
    try:
        futures = {}
        for name, folder in marks.items():
            env = {"PYTHONPATH": str(sleeper_site), "SLEEPER_MARKS": str(folder)}
            futures[name] = ex.submit(cell(study, name, ["list", "executors"], env=env))
        deadline = time.monotonic() + CELL_TIMEOUT_S
        while not (marks["running"] / "started").exists():
            assert time.monotonic() < deadline, "the first cell never started"
            assert not futures["running"].done(), futures["running"].result()
            time.sleep(0.2)
        ex.stop()
        # stop() returned after the command had ended: its SIGTERM handler (1 s) has run
        assert (marks["running"] / "terminated").read_text() == str(int(signal.SIGTERM))
        assert all(f.done() for f in futures.values())
        running, queued = outcome(futures["running"]), outcome(futures["queued"])
    finally:
        ex.close()
    assert running.cancelled and not running.ok and running.returncode == -int(signal.SIGTERM)
    assert running.failed_command == "list" and running.host == platform.node()
    assert "$ unlearnctl list executors" in running.log_tail
    assert queued.cancelled and not queued.ok  # never started: no command, no log
    assert not (marks["queued"] / "started").exists() and not (study / "logs/queued.log").exists()


def test_jobs_and_threads_follow_cpus_per_cell(ray_instance, ray_plugin):
    for cpus, jobs, threads in ((0.5, 4, 1), (1, 2, 1), (2, 1, 2), (4, 1, 4)):
        ex = executor(cpus_per_cell=cpus)
        try:
            assert ex.start(None) == jobs and ex.threads_per_cell(jobs) == threads
            assert ex.start(3) == 3  # --jobs wins
        finally:
            ex.close()
    assert ray.is_initialized()


def test_without_ray_a_usage_error_says_what_to_install(ray_plugin, monkeypatch):
    ex = executor()
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(UsageError, match=r"pip install unlearnctl-ray"):
        ex.start(None)


def test_options_are_validated(ray_plugin):
    from unlearnctl import OptionError

    for bad in ({"cpus_per_cell": 0}, {"num_cpus": 0}, {"adress": "auto"}):
        with pytest.raises(OptionError):
            executor(**bad)


OWN_INSTANCE = """
import json, os, ray, sys
from unlearnctl import CellTask
from unlearnctl_ray.executor import RayExecutor
ex = RayExecutor(RayExecutor.Options(num_cpus=1, namespace="unlearnctl-test"))
jobs = ex.start(None)
started = ray.is_initialized()
task = CellTask("own", (("list", "executors"),), sys.argv[1], "logs/own.log", threads=ex.threads_per_cell(jobs))
done = ex.submit(task).result(timeout=120)
ex.close()
print(json.dumps({"jobs": jobs, "started": started, "ok": done.ok, "after_close": ray.is_initialized()}))
"""


def _processes_naming(text: str) -> list[str]:
    """The command lines of this machine's processes that contain ``text`` (Linux: /proc)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            line = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # ended meanwhile
            continue
        if text in line:
            found.append(line)
    return found


def test_a_ray_instance_the_executor_started_is_shut_down_by_close(study):
    """Without a Ray in the process, ``start`` starts a local instance (``num_cpus``) and ``close`` shuts it
    down again: no Ray process is left (a fresh process: the module's own instance is not involved)."""
    temp = Path(tempfile.mkdtemp(prefix="ray"))  # Ray's files under TMPDIR: short paths, found again below
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update(PYTHONPATH=str(PACKAGE / "src"), TMPDIR=str(temp), HOME=str(temp), OMP_NUM_THREADS="1")
        done = subprocess.run(
            [sys.executable, "-c", OWN_INSTANCE, str(study)],
            capture_output=True, text=True, env=env, cwd=temp, timeout=CELL_TIMEOUT_S * 2, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert result == {"jobs": 1, "started": True, "ok": True, "after_close": False}
        assert "$ unlearnctl list executors" in (study / "logs/own.log").read_text()
        if Path("/proc/self/cmdline").exists():
            deadline = time.monotonic() + 30
            while (left := _processes_naming(str(temp))) and time.monotonic() < deadline:
                time.sleep(0.5)
            assert not left, left
    finally:
        shutil.rmtree(temp, ignore_errors=True)


LIST_PROBE = """
import sys
from unlearnctl.cli import main
sys.argv = ["unlearnctl", "list", "executors", "--json"]
try:
    code = main()
except SystemExit as exc:
    code = exc.code
sys.stdout.flush()
sys.stderr.write("CODE " + repr(code) + " RAY " + repr("ray" in sys.modules) + "\\n")
"""


def test_unlearnctl_lists_the_ray_executor_without_importing_ray(ray_plugin, tmp_path):
    env = dict(os.environ)
    env.update(PYTHONPATH=os.pathsep.join([str(ray_plugin), str(PACKAGE / "src")]), OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-c", LIST_PROBE],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=CELL_TIMEOUT_S, check=False,
    )  # fmt: skip
    assert done.stderr.strip().splitlines()[-1] in ("CODE 0 RAY False", "CODE None RAY False"), done.stderr
    listed = {c["name"]: c for c in json.loads(done.stdout)}
    assert set(listed) >= {"local", "ray"}
    assert listed["ray"]["description"].startswith("Run each cell as a Ray task")
    assert "warning" not in done.stderr
