"""Building the pluggy plugin manager: built-in plugins first, then installed ones.

Installed plugins are published in the ``unlearnctl`` entry-point group and loaded one at a time,
each in its own ``try``: a plugin that fails to import or to register is reported by name with its
error (a :class:`PluginFailure`, which keeps the formatted traceback and the file and line in the
plugin where it failed) and the others keep working. ``UNLEARNCTL_DISABLE_PLUGINS=a,b`` skips
plugins by name. Built-in plugins are named ``builtin.<module>`` (``builtin.datasets``,
``builtin.selectors``, ``builtin.models``, ``builtin.methods``, ``builtin.metrics``, ``builtin.attacks``...);
an installed plugin is named after its entry point.

The built-in plugins are listed by module name in :data:`BUILTIN_PLUGINS` and imported with
:func:`importlib.import_module`: the core never imports ``unlearnctl.builtin`` statically, and the
built-ins register through the same hooks as everyone else's plugins.

Nothing here runs at import time: the CLI builds the manager when a command needs it.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import os
import re
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import pluggy

from . import hookspecs

ENTRY_POINT_GROUP = "unlearnctl"
DISABLE_ENV = "UNLEARNCTL_DISABLE_PLUGINS"
BUILTIN_PREFIX = "builtin."
#: the distribution the built-in plugins come with
OWN_DISTRIBUTION = "unlearnctl"

#: The built-in plugins, by module name, in registration order (built-ins register before installed
#: plugins, so a built-in keeps its component names). Strings, imported by :func:`build_plugin_manager`
#: with :func:`importlib.import_module`: the core does not import ``unlearnctl.builtin`` statically.
BUILTIN_PLUGINS: tuple[str, ...] = (
    "unlearnctl.builtin.datasets",
    "unlearnctl.builtin.realdata",
    "unlearnctl.builtin.selectors",
    "unlearnctl.builtin.models",
    "unlearnctl.builtin.hub_models",
    "unlearnctl.builtin.methods",
    "unlearnctl.builtin.metrics",
    "unlearnctl.builtin.attacks.plugin",
    "unlearnctl.builtin.executors",
)

Stage = Literal["import", "register", "component"]


@dataclass
class PluginInfo:
    """A plugin registered with the manager."""

    name: str
    version: str | None
    #: the module (or entry-point value) the plugin was loaded from
    module: str
    builtin: bool
    #: the distribution that installed it (``pip install`` name); ``"unlearnctl"`` for built-ins
    distribution: str | None = None
    #: the hooks it implements, in the order of :mod:`unlearnctl.hookspecs` (set once registered)
    hooks: list[str] = field(default_factory=list)

    @property
    def lifecycle_hooks(self) -> list[str]:
        """The hooks it implements other than the ``register_*`` ones (``run_started``, ``step_logged``...)."""
        return [h for h in self.hooks if not h.startswith("register_")]


@dataclass
class PluginFailure:
    """A plugin that could not be used, or a component of a plugin that was refused, and why.

    ``stage`` is ``"import"`` (the plugin failed to import: nothing of it is used), ``"register"``
    (it failed to register: nothing of it is used) or ``"component"`` (one component was refused
    because another plugin, registered earlier, already has its kind and name; the rest of the
    plugin works).
    """

    name: str
    stage: Stage
    #: one line: ``"ExcType: message"`` (``"component"``: what was refused and what to do)
    error: str
    #: ``"FILE:LINE"`` in the plugin's own code: the innermost frame of the traceback there (or where
    #: the offending hook or component class is defined); ``None`` when unknown
    location: str | None = None
    #: the formatted traceback of the exception (``None`` when there was no exception)
    traceback: str | None = None
    #: ``"component"`` stage: the refused component's ``(kind, name)``...
    component: tuple[str, str] | None = None
    #: ...and the plugin that keeps the name
    kept_by: str | None = None

    def summary(self) -> str:
        """One line for people: ``plugin 'x' failed to import: KeyError: 'radius' (at FILE:LINE)``."""
        if self.stage == "component":
            return f"plugin '{self.name}': {self.error}"
        where = f" (at {self.location})" if self.location else ""
        return f"plugin '{self.name}' failed to {self.stage}: {self.error}{where}"


def builtin_plugin_name(module: str) -> str:
    """``unlearnctl.builtin.methods`` -> ``builtin.methods``; a package's hook module is named after the
    package: ``unlearnctl.builtin.attacks.plugin`` -> ``builtin.attacks``."""
    parts = module.split(".")
    if parts[-1] == "plugin" and len(parts) > 1:
        parts.pop()
    return BUILTIN_PREFIX + parts[-1]


def disabled_plugin_names(disable: Iterable[str] | None = None) -> list[str]:
    """Names to skip: ``disable`` when given, else ``UNLEARNCTL_DISABLE_PLUGINS`` (comma-separated)."""
    if disable is None:
        disable = os.environ.get(DISABLE_ENV, "").split(",")
    return sorted({name.strip() for name in disable if name and name.strip()})


def describe_exception(exc: BaseException) -> str:
    """One line: ``ExcType: message``."""
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


# --- where in a plugin something failed -----------------------------------------------------------


def _norm(path: str) -> str:
    return os.path.normcase(os.path.abspath(path))


def plugin_roots(module: str) -> list[str]:
    """The files and folders of a plugin's own code, from its module or entry-point value.

    ``pkg.sub:attr`` -> the folder of the top-level package ``pkg`` (or the file of a top-level
    module); a built-in ``unlearnctl.builtin.x`` -> that module's own file or folder. Found without
    importing the plugin (only the parent packages of a built-in); ``[]`` when it cannot be found.
    """
    name = module.partition(":")[0].strip()
    top = name.split(".")[0]
    target = name if top == OWN_DISTRIBUTION else top
    try:
        spec = importlib.util.find_spec(target)
    except Exception:
        return []
    if spec is None:
        return []
    if spec.submodule_search_locations:
        return [_norm(p) for p in spec.submodule_search_locations]
    if spec.origin and os.path.isfile(spec.origin):
        return [_norm(spec.origin)]
    return []


def _within(filename: str, roots: list[str]) -> bool:
    if not roots or filename.startswith("<"):
        return False
    path = _norm(filename)
    return any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def exception_location(exc: BaseException, roots: list[str]) -> str | None:
    """``"FILE:LINE"`` of the innermost traceback frame of ``exc`` inside ``roots`` (see :func:`plugin_roots`)."""
    frames = traceback.extract_tb(exc.__traceback__)
    for frame in reversed(frames):
        if _within(frame.filename, roots):
            return f"{frame.filename}:{frame.lineno}"
    return None


def code_location(obj: object) -> str | None:
    """``"FILE:LINE"`` where a function or class is defined; ``None`` when unknown."""
    try:
        obj = inspect.unwrap(obj)  # type: ignore[arg-type]
        code = getattr(obj, "__code__", None)
        if code is not None:
            return f"{code.co_filename}:{code.co_firstlineno}"
        if isinstance(obj, type):
            file = inspect.getsourcefile(obj)
            if file:
                return f"{file}:{inspect.getsourcelines(obj)[1]}"
    except Exception:
        return None
    return None


def failure_from_exception(
    name: str, stage: Stage, exc: BaseException, module: str, error: str | None = None
) -> PluginFailure:
    """A :class:`PluginFailure` for ``exc``: its one-line description, location in the plugin and traceback."""
    return PluginFailure(
        name,
        stage,
        error if error is not None else describe_exception(exc),
        location=exception_location(exc, plugin_roots(module)),
        traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    )


# --- registering ----------------------------------------------------------------------------------


def hook_names() -> list[str]:
    """The names of the hooks of :mod:`unlearnctl.hookspecs`, in the order they are declared."""
    specs = [
        fn for fn in vars(hookspecs).values() if inspect.isfunction(fn) and hasattr(fn, f"{hookspecs.PROJECT}_spec")
    ]
    specs.sort(key=lambda fn: fn.__code__.co_firstlineno)
    return [fn.__name__ for fn in specs]


def lifecycle_hook_names() -> list[str]:
    """The hooks other than ``register_*`` (``run_started``, ``step_logged``, ``run_finished``...)."""
    return [name for name in hook_names() if not name.startswith("register_")]


def implemented_hooks(pm: pluggy.PluginManager, plugin: object) -> list[str]:
    """The hooks with a spec that ``plugin`` implements, in the order of :func:`hook_names`."""
    names = {caller.name for caller in pm.get_hookcallers(plugin) or [] if caller.has_spec()}
    return [name for name in hook_names() if name in names]


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


def _hook_location(plugin: object, hook: str) -> str | None:
    fn = getattr(plugin, hook, None)
    return code_location(fn) if fn is not None else None


def _register(pm: pluggy.PluginManager, plugin: object, info: PluginInfo, failures: list[PluginFailure]) -> bool:
    """Register one plugin; on error record a failure, leave the manager unchanged and return False."""
    try:
        pm.register(plugin, name=info.name)
    except Exception as exc:
        failure = failure_from_exception(info.name, "register", exc, info.module)
        if failure.location is None:
            named = re.search(r"for hook '(\w+)'", str(exc))
            failure.location = _hook_location(plugin, named.group(1)) if named else None
        failures.append(failure)
        return False
    unknown = _unknown_hooks(pm, plugin)
    if unknown:
        pm.unregister(plugin)
        details = []
        for hook in unknown:
            close = difflib.get_close_matches(hook, _spec_names(), n=1, cutoff=0.6)
            details.append(f"'{hook}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        failures.append(
            PluginFailure(
                info.name,
                "register",
                f"PluginValidationError: unknown hook {', '.join(details)}",
                location=_hook_location(plugin, unknown[0]),
            )
        )
        return False
    info.hooks = implemented_hooks(pm, plugin)
    return True


def _import_builtin(module_name: str) -> object:
    # A string, not an import statement: the core has no static dependency on unlearnctl.builtin.
    return importlib.import_module(module_name)


def build_plugin_manager(
    disable: Iterable[str] | None = None,
) -> tuple[pluggy.PluginManager, list[PluginInfo], list[PluginFailure]]:
    """Build a plugin manager with the built-in plugins and every installed plugin.

    :param disable: plugin names to skip; ``None`` reads ``UNLEARNCTL_DISABLE_PLUGINS``.
    :return: the manager, the plugins registered (in order) and the plugins that failed.
    """
    from importlib.metadata import entry_points  # here: --help does not read the installed packages

    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    skip = set(disabled_plugin_names(disable))
    for name in skip:
        pm.set_blocked(name)
    plugins: list[PluginInfo] = []
    failures: list[PluginFailure] = []
    own_version = _version(OWN_DISTRIBUTION)

    # 1. built-in plugins, registered like anyone else's
    for module_name in BUILTIN_PLUGINS:
        info = PluginInfo(
            builtin_plugin_name(module_name), own_version, module_name, builtin=True, distribution=OWN_DISTRIBUTION
        )
        if info.name in skip:
            continue
        try:
            module = _import_builtin(module_name)
        except Exception as exc:
            failures.append(failure_from_exception(info.name, "import", exc, module_name))
            continue
        if _register(pm, module, info, failures):
            plugins.append(info)

    # 2. installed plugins, one entry point at a time (pluggy's load_setuptools_entrypoints would let
    #    one broken plugin abort the others)
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if ep.name in skip:
            continue
        dist = ep.dist
        dist_version = dist.version if dist is not None else None
        dist_name = _dist_name(dist)
        info = PluginInfo(ep.name, dist_version, ep.value, builtin=False, distribution=dist_name)
        if pm.has_plugin(ep.name):
            failures.append(
                PluginFailure(
                    ep.name,
                    "register",
                    f"ValueError: plugin name '{ep.name}' is already in use: rename the entry point "
                    f"(distribution {dist_name or '?'})",
                )
            )
            continue
        try:
            plugin = ep.load()
        except Exception as exc:
            failures.append(failure_from_exception(ep.name, "import", exc, ep.value))
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


def _dist_name(dist: object) -> str | None:
    if dist is None:
        return None
    try:
        return dist.metadata["Name"] or getattr(dist, "name", None)  # type: ignore[attr-defined]
    except Exception:
        return getattr(dist, "name", None)


def _version(dist: str) -> str | None:
    from importlib.metadata import version

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
