"""Start-up: the commands that only describe (``--version``, ``--help``, ``list``, ``show``, ``plugins``,
shell completion) import neither torch nor diffusers nor the other heavy libraries, and the public API
still gives every name in ``unlearnctl.__all__`` (imported on first use).

Each check runs in a fresh interpreter, since this test process has imported torch long ago. What is
asserted is which modules were imported, never how long it took (``bench/startup.py`` measures that;
docs/performance.md, "Start-up").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

#: what a describing command must not import (torch alone is ~2 s of CPU and 650 MiB)
HEAVY = ("torch", "diffusers", "torchvision", "torch_fidelity", "sklearn", "matplotlib", "scipy")

#: runs the CLI in-process (as the console script does), then prints the heavy modules it imported
CLI_PROBE = """
import json, sys
from unlearnctl.cli import main
heavy = json.loads(sys.argv[2])
sys.argv = ["unlearnctl", *json.loads(sys.argv[1])]
try:
    code = main()
except SystemExit as exc:
    code = exc.code
sys.stdout.flush()
sys.stderr.write("\\nHEAVY " + json.dumps([m for m in heavy if m in sys.modules]) + " CODE " + repr(code) + "\\n")
"""


def run_python(code: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "COLUMNS": "120", **(env or {})}
    full_env.pop("UNLEARNCTL_DISABLE_PLUGINS", None)
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=full_env, timeout=300, check=False
    )


def heavy_imported(
    args: list[str], env: dict[str, str] | None = None, modules: tuple[str, ...] = HEAVY
) -> tuple[list[str], str, str]:
    """(which of ``modules`` were imported, exit code, stdout) of ``unlearnctl ARGS`` in a fresh interpreter."""
    done = run_python(CLI_PROBE, json.dumps(args), json.dumps(modules), env=env)
    last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
    assert last.startswith("HEAVY "), f"the probe did not finish: {done.stderr[-2000:]}"
    heavy_part, code = last[len("HEAVY ") :].split(" CODE ")
    return json.loads(heavy_part), code, done.stdout


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["--version"], "unlearnctl "),
        (["--help"], "forget"),
        (["forget", "--help"], "--method"),
        (["eval", "--help"], "Usage"),
        (["list", "methods"], "erasediff"),
        (["list", "datasets"], "digits"),
        (["show", "method", "erasediff"], "erasediff"),
        (["show", "method", "retrain"], "steps"),
        (["show", "model", "ddpm-digits"], "ddpm-digits"),
        (["list", "attacks"], "membership-pia"),
        (["show", "attack", "relearn"], "steps"),
        (["audit", "--help"], "--against"),
        (["plugins"], "builtin.methods"),
    ],
)
def test_describing_commands_do_not_import_heavy_libraries(args: list[str], expect: str) -> None:
    heavy, code, out = heavy_imported(args)
    assert code in ("0", "None"), out
    assert expect in out
    assert heavy == [], f"`unlearnctl {' '.join(args)}` imported {heavy}"


@pytest.mark.parametrize("args", [["--version"], ["--help"]])
def test_version_and_help_do_not_import_pydantic_either(args: list[str]) -> None:
    # the components' base classes (pydantic) are imported when a command reads components, not before
    heavy, code, _ = heavy_imported(args, modules=("pydantic", "unlearnctl.components", "unlearnctl.registry"))
    assert code in ("0", "None")
    assert heavy == []


def test_shell_completion_does_not_import_heavy_libraries() -> None:
    # what the bash completion script asks: the candidates for `unlearnctl show method <TAB>`
    env = {"_UNLEARNCTL_COMPLETE": "complete_bash", "COMP_WORDS": "unlearnctl show method ", "COMP_CWORD": "3"}
    heavy, _, out = heavy_imported([], env=env)
    assert "erasediff" in out.split()
    assert heavy == []


def test_import_unlearnctl_is_light_and_heavy_names_come_on_first_use() -> None:
    done = run_python(
        "import json, sys, unlearnctl\n"
        f"heavy = {list(HEAVY)!r}\n"
        "before = [m for m in heavy if m in sys.modules]\n"
        "from unlearnctl import UnlearnRun, DiffusionModel, train_model\n"
        "print(json.dumps([before, UnlearnRun.__module__, DiffusionModel.__module__, 'torch' in sys.modules]))\n"
    )
    assert done.returncode == 0, done.stderr
    before, run_module, model_module, torch_after = json.loads(done.stdout)
    assert before == []
    assert (run_module, model_module) == ("unlearnctl.contexts.unlearn", "unlearnctl.models.folder")
    assert torch_after


def test_import_unlearnctl_tracking_is_light() -> None:
    # a tracker plugin's hook module imports it when unlearnctl lists its plugins (docs/trackers.md)
    modules = [*HEAVY, "pydantic", "mlflow", "wandb", "unlearnctl.manifest"]
    done = run_python(
        "import json, sys\n"
        "import unlearnctl.tracking\n"
        "from unlearnctl import tracking\n"
        "assert tracking is unlearnctl.tracking and tracking.TrackerHooks\n"
        f"print(json.dumps([m for m in {modules!r} if m in sys.modules]))\n"
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_every_public_name_is_importable() -> None:
    import unlearnctl

    for name in unlearnctl.__all__:
        assert getattr(unlearnctl, name) is not None, name
    assert set(unlearnctl.__all__) <= set(dir(unlearnctl))
    # `from unlearnctl import *` resolves the lazy names too
    namespace: dict[str, object] = {}
    exec("from unlearnctl import *", namespace)
    assert set(unlearnctl.__all__) <= set(namespace)
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        _ = unlearnctl.not_a_name  # type: ignore[attr-defined]


def test_every_builtin_plugin_module_imports_without_heavy_libraries() -> None:
    from unlearnctl.plugins import BUILTIN_PLUGINS

    done = run_python(
        "import importlib, json, sys\n"
        f"for name in {list(BUILTIN_PLUGINS)!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))\n"
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
