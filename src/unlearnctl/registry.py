"""Components by kind and name, with the plugin that provides each.

:func:`build_registry` calls every plugin's ``register_*`` hooks one plugin at a time, so each
component knows its provider. A plugin whose hook raises or registers something that is not a
proper component is reported as a :class:`~unlearnctl.plugins.PluginFailure` (and contributes
nothing); two plugins providing one kind and name is a :class:`~unlearnctl.errors.DuplicateComponentError`
naming both. :func:`get_registry` caches the registry for the process.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pluggy

from .components import BASE_FOR_KIND, KINDS, Component, Options
from .errors import DuplicateComponentError, UnknownComponentError, UsageError
from .plugins import DISABLE_ENV, PluginFailure, PluginInfo, build_plugin_manager, describe_exception

#: a component name: letters, digits, ``-``, ``_`` and ``.``; no ``:`` (it separates ``--forget NAME:ARGS``)
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class ComponentInfo:
    """A registered component class and the plugin that provides it."""

    kind: str
    name: str
    cls: type[Component]
    provider: str
    provider_version: str | None

    @property
    def description(self) -> str:
        return self.cls.description()


def normalize_kind(kind: str) -> str:
    """``"methods"`` or ``"method"`` -> ``"method"``; anything else is a :class:`UsageError` with a suggestion."""
    k = kind.strip().lower()
    if k in KINDS:
        return k
    if k.endswith("s") and k[:-1] in KINDS:
        return k[:-1]
    plurals = [f"{x}s" for x in KINDS]
    close = difflib.get_close_matches(k, plurals + list(KINDS), n=1, cutoff=0.5)
    hint = f"did you mean '{close[0] if close[0].endswith('s') else close[0] + 's'}'? " if close else ""
    raise UsageError(f"unknown kind '{kind}': {hint}kinds: {', '.join(plurals)}")


@dataclass
class Registry:
    """Every component the enabled plugins provide."""

    pm: pluggy.PluginManager
    plugins: list[PluginInfo]
    failures: list[PluginFailure]
    components: dict[str, dict[str, ComponentInfo]] = field(default_factory=lambda: {k: {} for k in KINDS})

    @property
    def hook(self) -> Any:
        """``pm.hook``: core code calls ``registry.hook.step_logged(run=..., step=..., values=...)``."""
        return self.pm.hook

    def names(self, kind: str) -> list[str]:
        """Sorted component names of ``kind`` (singular or plural)."""
        return sorted(self.components[normalize_kind(kind)])

    def all(self, kind: str) -> list[ComponentInfo]:
        """Components of ``kind``, sorted by name."""
        by_name = self.components[normalize_kind(kind)]
        return [by_name[n] for n in sorted(by_name)]

    def get(self, kind: str, name: str) -> ComponentInfo:
        """The component ``name`` of ``kind``.

        :raises UnknownComponentError: no such name (the message suggests the closest one).
        """
        k = normalize_kind(kind)
        try:
            return self.components[k][name]
        except KeyError:
            raise UnknownComponentError(k, name, sorted(self.components[k])) from None

    def create(self, kind: str, name: str, options: Options | Mapping[str, Any] | None = None) -> Component:
        """Instantiate component ``name`` with validated options (an ``Options`` instance or a dict)."""
        from .config import resolve_options

        cls = self.get(kind, name).cls
        if not isinstance(options, cls.Options):
            options = resolve_options(cls, config=dict(options or {}))
        return cls(options)

    def provided_by(self, plugin: str) -> dict[str, list[str]]:
        """What plugin ``plugin`` provides: kind -> sorted names (kinds with none left out)."""
        out: dict[str, list[str]] = {}
        for kind in KINDS:
            names = sorted(n for n, c in self.components[kind].items() if c.provider == plugin)
            if names:
                out[kind] = names
        return out


class _RegisterError(Exception):
    """A plugin passed something that is not a proper component to ``register``."""


def _check_component(kind: str, obj: Any) -> type[Component]:
    base = BASE_FOR_KIND[kind]
    if not isinstance(obj, type):
        raise _RegisterError(
            f"register_{kind}s passed {obj!r}, not a class: pass a subclass of unlearnctl.{base.__name__}"
        )
    if not issubclass(obj, base):
        raise _RegisterError(
            f"register_{kind}s passed {obj.__name__}, which is not a subclass of unlearnctl.{base.__name__}"
        )
    name = getattr(obj, "name", None)
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise _RegisterError(
            f"{obj.__name__} has no valid `name` (got {name!r}): set a class attribute such as name = 'my-{kind}' "
            "(letters, digits, '-', '_', '.')"
        )
    options = getattr(obj, "Options", None)
    if not (isinstance(options, type) and issubclass(options, Options)):
        raise _RegisterError(f"{obj.__name__}.Options must be a subclass of unlearnctl.Options")
    return obj


def _collect(pm: pluggy.PluginManager, plugin: object, info: PluginInfo) -> list[ComponentInfo]:
    """Call ``plugin``'s own ``register_*`` hooks and return what it registered."""
    others = [p for p in pm.get_plugins() if p is not plugin]
    found: list[ComponentInfo] = []
    for kind in KINDS:
        seen: set[str] = set()

        def register(cls: Any, _kind: str = kind, _seen: set[str] = seen) -> None:
            cls = _check_component(_kind, cls)
            if cls.name in _seen:
                raise _RegisterError(f"registers {_kind} '{cls.name}' twice")
            _seen.add(cls.name)
            found.append(ComponentInfo(_kind, cls.name, cls, info.name, info.version))

        pm.subset_hook_caller(f"register_{kind}s", remove_plugins=others)(register=register)
    return found


def build_registry(disable: Iterable[str] | None = None) -> Registry:
    """Load the plugins (see :func:`~unlearnctl.plugins.build_plugin_manager`) and collect their components.

    :raises DuplicateComponentError: two plugins provide a component of one kind with one name.
    """
    pm, plugins, failures = build_plugin_manager(disable)
    registry = Registry(pm=pm, plugins=[], failures=failures)
    for info in plugins:
        plugin = pm.get_plugin(info.name)
        try:
            found = _collect(pm, plugin, info)
        except Exception as exc:
            # The plugin contributes nothing, not even its lifecycle hooks.
            pm.unregister(plugin)
            error = f"RegisterError: {exc}" if isinstance(exc, _RegisterError) else describe_exception(exc)
            failures.append(PluginFailure(info.name, "register", error))
            continue
        for comp in found:
            other = registry.components[comp.kind].get(comp.name)
            if other is not None:
                raise DuplicateComponentError(
                    f"{comp.kind} '{comp.name}' is provided by two plugins: '{other.provider}' "
                    f"({other.cls.__module__}.{other.cls.__qualname__}) and '{comp.provider}' "
                    f"({comp.cls.__module__}.{comp.cls.__qualname__}): uninstall one, or skip one with "
                    f"{DISABLE_ENV}={comp.provider}"
                )
            registry.components[comp.kind][comp.name] = comp
        registry.plugins.append(info)
    return registry


_cached: Registry | None = None


def get_registry(refresh: bool = False) -> Registry:
    """The process-wide registry, built on first use (``refresh=True`` rebuilds it)."""
    global _cached
    if _cached is None or refresh:
        _cached = build_registry()
    return _cached


def clear_registry_cache() -> None:
    """Forget the cached registry (tests call this between tests)."""
    global _cached
    _cached = None
