"""Building the pluggy plugin manager: built-in plugins first, then installed ones.

Installed plugins are published in the ``unlearnctl`` entry-point group and loaded one at a time,
each in its own ``try``: a plugin that fails to import or to register is reported by name with its
error (a :class:`PluginFailure`) and the others keep working. ``UNLEARNCTL_DISABLE_PLUGINS=a,b``
skips plugins by name. Built-in plugins are named ``builtin.<module>`` (``builtin.datasets``,
``builtin.selectors``, ``builtin.models``, ``builtin.methods``, ``builtin.metrics``); an installed
plugin is named after its entry point.

Nothing here runs at import time: the CLI builds the manager when a command needs it.
"""

from __future__ import annotations

import difflib
import importlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points, version
from typing import Literal

import pluggy

from . import hookspecs
from .builtin import BUILTIN_PLUGINS

ENTRY_POINT_GROUP = "unlearnctl"
DISABLE_ENV = "UNLEARNCTL_DISABLE_PLUGINS"
BUILTIN_PREFIX = "builtin."


@dataclass
class PluginInfo:
    """A plugin registered with the manager."""

    name: str
    version: str | None
    #: the module (or entry-point value) the plugin was loaded from
    module: str
    builtin: bool


@dataclass
class PluginFailure:
    """A plugin that could not be used, and why."""

    name: str
    stage: Literal["import", "register"]
    #: ``"ExcType: message"``
    error: str


def builtin_plugin_name(module: str) -> str:
    """``unlearnctl.builtin.methods`` -> ``builtin.methods``."""
    return BUILTIN_PREFIX + module.rsplit(".", 1)[-1]


def disabled_plugin_names(disable: Iterable[str] | None = None) -> list[str]:
    """Names to skip: ``disable`` when given, else ``UNLEARNCTL_DISABLE_PLUGINS`` (comma-separated)."""
    if disable is None:
        disable = os.environ.get(DISABLE_ENV, "").split(",")
    return sorted({name.strip() for name in disable if name and name.strip()})


def describe_exception(exc: BaseException) -> str:
    """One line: ``ExcType: message``."""
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _unknown_hooks(pm: pluggy.PluginManager, plugin: object) -> list[str]:
    """Names of the hooks ``plugin`` implements that have no specification (misspelt hooks)."""
    unknown = []
    for caller in pm.get_hookcallers(plugin) or []:
        if caller.has_spec():
            continue
        impls = [i for i in caller.get_hookimpls() if i.plugin is plugin]
        if any(not i.optionalhook for i in impls):
            unknown.append(caller.name)
    return sorted(unknown)


def _spec_names() -> list[str]:
    return sorted(n for n in vars(hookspecs) if hasattr(getattr(hookspecs, n), "unlearnctl_spec"))


def _register(pm: pluggy.PluginManager, plugin: object, info: PluginInfo, failures: list[PluginFailure]) -> bool:
    """Register one plugin; on error record a failure, leave the manager unchanged and return False."""
    try:
        pm.register(plugin, name=info.name)
    except Exception as exc:
        failures.append(PluginFailure(info.name, "register", describe_exception(exc)))
        return False
    unknown = _unknown_hooks(pm, plugin)
    if unknown:
        pm.unregister(plugin)
        details = []
        for hook in unknown:
            close = difflib.get_close_matches(hook, _spec_names(), n=1, cutoff=0.6)
            details.append(f"'{hook}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        failures.append(
            PluginFailure(info.name, "register", f"PluginValidationError: unknown hook {', '.join(details)}")
        )
        return False
    return True


def build_plugin_manager(
    disable: Iterable[str] | None = None,
) -> tuple[pluggy.PluginManager, list[PluginInfo], list[PluginFailure]]:
    """Build a plugin manager with the built-in plugins and every installed plugin.

    :param disable: plugin names to skip; ``None`` reads ``UNLEARNCTL_DISABLE_PLUGINS``.
    :return: the manager, the plugins registered (in order) and the plugins that failed.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    skip = set(disabled_plugin_names(disable))
    for name in skip:
        pm.set_blocked(name)
    plugins: list[PluginInfo] = []
    failures: list[PluginFailure] = []
    own_version = _version("unlearnctl")

    # 1. built-in plugins, registered like anyone else's
    for module_name in BUILTIN_PLUGINS:
        info = PluginInfo(builtin_plugin_name(module_name), own_version, module_name, builtin=True)
        if info.name in skip:
            continue
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            failures.append(PluginFailure(info.name, "import", describe_exception(exc)))
            continue
        if _register(pm, module, info, failures):
            plugins.append(info)

    # 2. installed plugins, one entry point at a time (pluggy's load_setuptools_entrypoints would let
    #    one broken plugin abort the others)
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if ep.name in skip:
            continue
        dist_version = ep.dist.version if ep.dist is not None else None
        info = PluginInfo(ep.name, dist_version, ep.value, builtin=False)
        if pm.has_plugin(ep.name):
            failures.append(
                PluginFailure(ep.name, "register", f"ValueError: plugin name '{ep.name}' is already in use")
            )
            continue
        try:
            plugin = ep.load()
        except Exception as exc:
            failures.append(PluginFailure(ep.name, "import", describe_exception(exc)))
            continue
        if _register(pm, plugin, info, failures):
            plugins.append(info)

    # 3. nothing pending should remain (each plugin with a misspelt hook was removed above)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:  # pragma: no cover - defensive
        name = pm.get_name(exc.plugin) or "?"
        failures.append(PluginFailure(name, "register", describe_exception(exc)))
        pm.unregister(exc.plugin)
        plugins = [p for p in plugins if p.name != name]
    return pm, plugins, failures


def _version(dist: str) -> str | None:
    try:
        return version(dist)
    except Exception:
        return None


# --- the hook reference in docs/plugins.md, generated from the hookspecs' docstrings ------------

HOOK_DOCS_START = "<!-- hooks:start (generated from src/unlearnctl/hookspecs.py: python -m unlearnctl.plugins) -->"
HOOK_DOCS_END = "<!-- hooks:end -->"


def _rst_to_markdown(text: str) -> str:
    import re

    lines = []
    for line in text.splitlines():
        param = re.match(r"\s*:param (\w+):\s*(.*)", line)
        added = re.match(r"\s*\.\. versionadded:: (.+)", line)
        if param:
            line = f"- `{param.group(1)}`: {param.group(2)}"
        elif added:
            line = f"*Added in version {added.group(1).strip()}.*"
        line = re.sub(r":(?:class|func|meth|attr|mod):`~?([^`]+)`", r"`\1`", line)
        lines.append(line.replace("``", "`"))
    return "\n".join(lines).strip()


def hook_reference_markdown() -> str:
    """The hook reference of docs/plugins.md: one section per hook, from its spec's signature and docstring."""
    import inspect

    specs = [
        fn for fn in vars(hookspecs).values() if inspect.isfunction(fn) and hasattr(fn, f"{hookspecs.PROJECT}_spec")
    ]
    specs.sort(key=lambda fn: fn.__code__.co_firstlineno)
    parts = []
    for fn in specs:
        args = ", ".join(inspect.signature(fn).parameters)
        parts.append(f"### `{fn.__name__}({args})`\n\n{_rst_to_markdown(inspect.getdoc(fn) or '')}\n")
    return "\n".join(parts)


def update_hook_docs(path: str) -> bool:
    """Rewrite the generated hook reference between the markers in ``path``; return True if it changed."""
    from pathlib import Path

    file = Path(path)
    text = file.read_text(encoding="utf-8")
    start, end = text.index(HOOK_DOCS_START), text.index(HOOK_DOCS_END)
    new = text[: start + len(HOOK_DOCS_START)] + "\n\n" + hook_reference_markdown() + "\n" + text[end:]
    if new != text:
        file.write_text(new, encoding="utf-8")
    return new != text


if __name__ == "__main__":  # python -m unlearnctl.plugins [docs/plugins.md]
    import sys

    target = sys.argv[1] if len(sys.argv) > 1 else "docs/plugins.md"
    print(f"{target}: {'updated' if update_hook_docs(target) else 'up to date'}")
