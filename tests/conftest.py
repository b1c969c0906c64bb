"""Shared fixtures: isolated user dirs for every test, the CLI runner, fake installed plugins."""

from __future__ import annotations

import importlib
import os
import signal
import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

#: variables that change what unlearnctl or rich do, cleared for every test
_CLEARED_ENV = (
    "UNLEARNCTL_DISABLE_PLUGINS",
    "UNLEARNCTL_DEBUG",
    # a developer's tracker switches must not send the suite's runs anywhere (docs/trackers.md)
    "UNLEARNCTL_REPORT_TO",
    "UNLEARNCTL_LOG_MODEL",
    "FORCE_COLOR",
    "TTY_COMPATIBLE",
    "TTY_INTERACTIVE",
    "COLUMNS",
    "LINES",
)


#: torch intra-op threads of the tests (see pytest_configure)
TEST_THREADS = int(os.environ.get("UNLEARNCTL_TEST_THREADS", "1"))


def pytest_configure(config: pytest.Config) -> None:
    _default_stop_signals()
    # One intra-op thread: the tiny models of the tests gain nothing from more, and on a shared 2-core
    # machine two OpenMP threads fighting other processes made a training step 100x slower (6 s vs 0.06 s).
    import torch

    torch.set_num_threads(TEST_THREADS)
    config.addinivalue_line(
        "markers",
        "pip_install: installs a package into the test environment with pip (offline; deselect with "
        "-m 'not pip_install')",
    )


@pytest.fixture(autouse=True)
def torch_threads() -> Iterator[None]:
    """Every test starts with the configured torch thread count (1 unless UNLEARNCTL_TEST_THREADS says
    otherwise) and leaves it as it found it, whatever the code under test set."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(TEST_THREADS)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny(fake_plugins: FakePlugins) -> None:
    """The tiny dataset and the tiny-cond / tiny-uncond model presets, installed as a plugin."""
    fake_plugins.add("tiny", "from tiny_plugin import register_datasets, register_models")


@pytest.fixture
def repo_root() -> Path:
    """The repository root (tests run with their own temporary working directory)."""
    return REPO_ROOT


@pytest.fixture(autouse=True)
def isolated_user_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point HOME, XDG and unlearnctl's own dirs into ``tmp_path``; run in a fresh working directory;
    clear the plugin switches; rebuild the registry for every test."""
    from unlearnctl.cli.common import reset_warnings
    from unlearnctl.registry import clear_registry_cache

    home = tmp_path / "home"
    for sub in ("", ".config", ".cache", ".local/share", ".local/state"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local/share"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / ".local/state"))
    monkeypatch.setenv("UNLEARNCTL_HOME", str(home / "unlearnctl"))
    monkeypatch.setenv("UNLEARNCTL_DATA_DIR", str(home / "unlearnctl/data"))
    monkeypatch.setenv("UNLEARNCTL_CACHE_DIR", str(home / "unlearnctl/cache"))
    monkeypatch.setenv("HF_HOME", str(home / ".cache/huggingface"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in _CLEARED_ENV:
        monkeypatch.delenv(name, raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    clear_registry_cache()
    reset_warnings()
    yield home
    clear_registry_cache()
    reset_warnings()


@pytest.fixture(scope="session")
def realdata_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One datasets folder with a stand-in of every real dataset in its publisher's format (read-only for
    the tests): ``cifar10/``, ``celeba/``, ``celeba-hq/``, ``utkface/`` (three malformed names included)
    and ``imagefolder/`` (class sub-folders). See ``unlearnctl.testing.stand_ins``."""
    from unlearnctl.testing import stand_ins as si

    root = tmp_path_factory.mktemp("datasets")
    si.write_cifar10(root / "cifar10")
    si.write_celeba(root)
    si.write_celeba_hq(root)
    si.write_utkface(root)
    si.write_imagefolder(root, layout="classes")
    return root


@pytest.fixture
def official_md5(realdata_files: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make torchvision's md5 check accept the stand-in CIFAR-10 batches (it still runs on every load)."""
    from torchvision.datasets import CIFAR10

    from unlearnctl.builtin.realdata import CIFAR10_BASE
    from unlearnctl.testing import stand_ins as si

    for key, value in si.cifar10_checksums(realdata_files / "cifar10" / CIFAR10_BASE).items():
        monkeypatch.setattr(CIFAR10, key, value)


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str
    exception: BaseException | None

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@pytest.fixture
def child_env(tiny, fake_plugins, isolated_user_dirs) -> dict[str, str]:
    """The environment of a child process (the real console script, a launcher): the test's isolated
    folders, the tiny plugin importable (its fake distribution in ``fake_plugins.site``, its code in
    tests/), one thread per process."""
    child = dict(os.environ)
    child["PYTHONPATH"] = os.pathsep.join([str(fake_plugins.site), str(Path(__file__).resolve().parent)])
    child["PYTHONDONTWRITEBYTECODE"] = "1"
    child["OMP_NUM_THREADS"] = "1"
    return child


@pytest.fixture
def cli():
    """Run ``unlearnctl ARGS...`` in-process: ``cli("list", "methods", env={...})`` -> :class:`CliResult`."""
    from typer.testing import CliRunner

    from unlearnctl.cli.app import app

    runner = CliRunner()

    def invoke(*args: object, env: dict[str, str] | None = None, input: str | None = None) -> CliResult:
        result = runner.invoke(
            app,
            [str(a) for a in args],
            env={"COLUMNS": "200", **(env or {})},
            input=input,
            prog_name="unlearnctl",
            catch_exceptions=False,
        )
        return CliResult(result.exit_code, result.stdout, result.stderr, result.exception)

    return invoke


class FakePlugins:
    """Make plugins "installed" without pip: a module plus a ``*.dist-info`` folder with an
    ``entry_points.txt`` in a folder put on ``sys.path``."""

    def __init__(self, site: Path) -> None:
        self.site = site
        self.modules: list[str] = []

    def add(self, ep_name: str, source: str, *, dist: str | None = None, version: str = "1.0.0") -> str:
        """Install a plugin named ``ep_name`` whose module holds ``source``; return the module name."""
        module = f"fake_{ep_name.replace('-', '_').replace('.', '_')}_{uuid.uuid4().hex[:8]}"
        (self.site / f"{module}.py").write_text(textwrap.dedent(source))
        dist = dist or f"fake-{ep_name}"
        info = self.site / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[unlearnctl]\n{ep_name} = {module}\n")
        self.modules.append(module)
        importlib.invalidate_caches()
        return module

    def selectors(self, ep_name: str, *names: str, version: str = "1.0.0") -> str:
        """Install a plugin providing one trivial selector per name (an option ``fraction`` each)."""
        classes = "\n".join(
            textwrap.dedent(
                f'''
                class Selector{i}(unlearnctl.Selector):
                    """Fake selector {name} for tests."""

                    name = "{name}"

                    class Options(unlearnctl.Options):
                        fraction: float = Field(0.5, gt=0, le=1, description="share of items to forget")

                    def select(self, data):
                        return set()
                '''
            )
            for i, name in enumerate(names)
        )
        calls = "\n".join(f"    register(Selector{i})" for i in range(len(names)))
        source = (
            "import unlearnctl\nfrom pydantic import Field\n"
            + classes
            + f"\n\n@unlearnctl.hookimpl\ndef register_selectors(register):\n{calls}\n"
        )
        return self.add(ep_name, source, version=version)


@pytest.fixture
def fake_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakePlugins]:
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    fakes = FakePlugins(site)
    yield fakes
    for module in fakes.modules:
        sys.modules.pop(module, None)
    importlib.invalidate_caches()


def _default_stop_signals() -> None:
    """The suite's child processes get the stop signals' default dispositions, as from a terminal: a suite run
    in the background of a script (``cmd &``) inherits SIGINT ignored, under ``nohup`` SIGHUP, and unlearnctl
    keeps a signal it was started to ignore ignored (docs/errors.md), so every test that stops a child with one
    would test nothing. A handler is reset to the default by ``exec``; an ignored signal is not."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name) and signal.getsignal(getattr(signal, name)) is signal.SIG_IGN:
            signal.signal(getattr(signal, name), signal.SIG_DFL)
