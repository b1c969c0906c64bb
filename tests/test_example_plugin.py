"""The example plugin package under plugins/: installed for real with pip, found through its entry point.

Like a plugin author's tests, this uses only the public API and ``unlearnctl.testing`` (plus the CLI).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from unlearnctl.testing.contracts import check_component, registered_components, reload_plugins

DIST = "unlearnctl-example"
PACKAGE = "unlearnctl_example"


def _pip(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    return subprocess.run(
        [sys.executable, "-m", "pip", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


def _installed() -> bool:
    try:
        importlib.metadata.distribution(DIST)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _forget_package() -> None:
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[name]
    importlib.invalidate_caches()


@pytest.fixture
def installed_example(tmp_path, repo_root):
    """pip-install plugins/unlearnctl-example (a copy, so the source tree gets no build files) into this
    environment, offline; uninstall it afterwards unless it was installed before."""
    source = tmp_path / "unlearnctl-example"
    shutil.copytree(
        repo_root / "plugins" / "unlearnctl-example",
        source,
        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".pytest_cache"),
    )
    was_installed = _installed()
    _forget_package()
    done = _pip("install", "--no-deps", "--no-build-isolation", "--no-index", str(source), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    _forget_package()
    try:
        yield source
    finally:
        _forget_package()
        if not was_installed:
            _pip("uninstall", "--yes", DIST, cwd=tmp_path)
        importlib.invalidate_caches()


@pytest.mark.pip_install
def test_pip_installed_example_is_found_through_its_entry_point_and_usable_from_the_cli(
    installed_example, cli, repo_root
):
    # 1. found through the entry point: not imported by anyone before the plugins are loaded
    assert PACKAGE not in sys.modules
    reload_plugins()
    infos = {(i.kind, i.name): i for i in registered_components(provider="example")}
    assert set(infos) == {("selector", "label-range"), ("method", "null-target")}
    # ...and loaded from the installed copy, not from the source tree
    module_file = Path(sys.modules["unlearnctl_example.plugin"].__file__).resolve()
    assert repo_root / "plugins" not in module_file.parents
    assert "site-packages" in module_file.parts
    contract_options = {"label-range": {"lo": 1, "hi": 2}, "null-target": {"batch_size": 4}}
    for info in infos.values():
        assert (info.provider, info.provider_version, info.provider_distribution) == (
            "example", "0.1.0", DIST,
        )  # fmt: skip
        assert check_component(info.cls, options=contract_options[info.name]) == []

    # 2. usable from the CLI
    listing = cli("list", "selectors")
    assert listing.exit_code == 0, listing.stderr
    line = next(line for line in listing.stdout.splitlines() if "label-range" in line)
    assert "Forget the classes lo..hi" in line and "example 0.1.0" in line
    shown = json.loads(cli("show", "method", "null-target", "--json").stdout)
    assert shown["provider"] == "example" and shown["conditional_only"] is True
    assert {row["name"]: row["type"] for row in shown["options"]} == {
        "steps": "int >= 1",
        "lr": "float > 0",
        "batch_size": "int >= 1",
        "weight": "float >= 0",
        "clip": "float > 0",
    }
    plugins = json.loads(cli("plugins", "--json").stdout)
    example = next(p for p in plugins["plugins"] if p["name"] == "example")
    assert example["provides"] == {"selectors": ["label-range"], "methods": ["null-target"]}
    assert (example["version"], example["module"], example["builtin"]) == ("0.1.0", "unlearnctl_example.plugin", False)
    bad = cli("show", "method", "null-targte")
    assert bad.exit_code == 2 and "did you mean 'null-target'?" in bad.stderr
    reload_plugins()  # a new process would read UNLEARNCTL_DISABLE_PLUGINS afresh
    disabled = cli("list", "methods", "--json", env={"UNLEARNCTL_DISABLE_PLUGINS": "example"})
    assert "null-target" not in [c["name"] for c in json.loads(disabled.stdout)]

    # 3. a real `forget` run with the plugin's selector and method: a tiny UNet shaped for the
    #    built-in digits dataset (8x8 grey, 10 classes)
    from unlearnctl.testing.tiny import tiny_model

    reload_plugins()
    model_dir = Path.cwd() / "tiny-digits"
    tiny_model(num_classes=10, image_size=8, channels=1).save(model_dir)
    out = Path.cwd() / "run"
    run = cli(
        "forget", "--model", model_dir, "--dataset", "digits",
        "--forget", "label-range:3-4", "--method", "null-target", "--set", "batch_size=8",
        "--steps", "2", "--grid-per-class", "0", "--device", "cpu", "--out", out, "--json",
    )  # fmt: skip
    assert run.exit_code == 0, run.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["method"]["name"] == "null-target" and manifest["method"]["provider"] == "example"
    for record in (manifest["method"], *manifest["forget"]["selectors"]):  # the plugin's version, for replay
        assert (record["provider_version"], record["provider_distribution"]) == ("0.1.0", DIST)
    assert manifest["method"]["options"]["batch_size"] == 8
    assert [s["name"] for s in manifest["forget"]["selectors"]] == ["label-range"]
    assert manifest["forget"]["forget_classes"] == [3, 4]
    assert len((out / "log.jsonl").read_text().splitlines()) == 2
    bad_range = cli(
        "forget", "--model", model_dir, "--dataset", "digits", "--forget", "label-range:4-3",
        "--method", "null-target", "--out", Path.cwd() / "no",
    )  # fmt: skip
    assert bad_range.exit_code == 2 and "hi (3) must be >= lo (4)" in bad_range.stderr
    assert not (Path.cwd() / "no").exists()

    # 4. replaying the run without the plugin (disabled here) names it instead of "unknown method"
    reload_plugins()
    missing = cli("replay", out, "--out", Path.cwd() / "again", env={"UNLEARNCTL_DISABLE_PLUGINS": "example"})
    assert missing.exit_code == 2
    assert (
        "method 'null-target' was provided by plugin 'example' (version 0.1.0), which is disabled: "
        "remove 'example' from UNLEARNCTL_DISABLE_PLUGINS" in missing.stderr
    )
    reload_plugins()

    # 5. in a fresh process, the plugin's own test suite passes against the installed package
    #    (contracts, its selector, and its method run on a tiny UNet through unlearnctl's runner)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=installed_example,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and "failed" not in done.stdout
