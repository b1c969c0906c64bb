"""The import contracts in pyproject.toml cover the whole package, and the package keeps them.

``make lint`` runs ``lint-imports`` too; these tests also catch a new top-level module that no contract
mentions (import-linter itself only checks the modules a contract names).
"""

from __future__ import annotations

import pkgutil
import tomllib
from pathlib import Path

import pytest

import unlearnctl

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
#: outside the layers of the core: the built-in plugins and the test helpers (own contracts)
OUTSIDE_LAYERS = {"builtin", "testing"}
#: what a built-in plugin may import besides the root package and itself: the public modules
BUILTIN_MAY_IMPORT = {"diffusion", "tracking"}


def contracts() -> dict[str, dict]:
    config = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["importlinter"]
    return {contract["id"]: contract for contract in config["contracts"]}


def top_level_modules() -> set[str]:
    return {info.name for info in pkgutil.iter_modules(unlearnctl.__path__)}


def test_every_top_level_module_is_in_exactly_one_layer() -> None:
    layers = contracts()["layers"]["layers"]
    named = [name.strip() for layer in layers for name in layer.split("|")]
    assert len(named) == len(set(named)), "a module is named in two layers"
    assert set(named) == top_level_modules() - OUTSIDE_LAYERS


def test_builtin_plugins_are_forbidden_every_module_but_the_public_api() -> None:
    forbidden = set(contracts()["builtin-public-api"]["forbidden_modules"])
    expected = {f"unlearnctl.{name}" for name in top_level_modules() - {"builtin"} - BUILTIN_MAY_IMPORT}
    assert forbidden == expected


def test_the_package_keeps_its_import_contracts() -> None:
    lint = pytest.importorskip("importlinter.cli", reason="import-linter comes with the test extras")
    # 0 = every contract kept; on a broken one, lint-imports prints which import breaks it.
    assert lint.lint_imports(config_filename=str(PYPROJECT), no_cache=True, no_logo=True) == 0
