"""Components by kind and name, with the plugin that provides each.

:func:`build_registry` calls every plugin's ``register_*`` hooks one plugin at a time, so each
component knows its provider. A plugin whose hook raises or registers something that is not a
proper component is reported as a :class:`~unlearnctl.plugins.PluginFailure` (and contributes
nothing). When a plugin registers a kind and name that another plugin already has, the first
registrant keeps it (built-ins register first, then installed plugins by entry-point name) and only
the newcomer's component is refused, recorded as a ``"component"`` failure naming both plugins; every
command keeps working. :func:`get_registry` caches the registry for the process.

For run manifests and replays: :meth:`Registry.plugin_versions` maps each loaded plugin to its version,
:attr:`ComponentInfo.provider` / :attr:`ComponentInfo.provider_version` /
:attr:`ComponentInfo.provider_distribution` say where a component comes from, and
:meth:`Registry.require` looks a recorded component up again, saying which plugin to install when it
is missing.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pluggy

from .components import BASE_FOR_KIND, KINDS, Component, Options
from .errors import UnknownComponentError, UsageError
from .plugins import (
    BUILTIN_PREFIX,
    DISABLE_ENV,
    OWN_DISTRIBUTION,
    PluginFailure,
    PluginInfo,
    build_plugin_manager,
    code_location,
    disabled_plugin_names,
    failure_from_exception,
)

#: a component name: letters, digits, ``-``, ``_`` and ``.``; no ``:`` (it separates ``--forget NAME:ARGS``)
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class ComponentInfo:
    """A registered component class and the plugin that provides it."""

    kind: str
    name: str
    cls: type[Component]
    #: the plugin that provides it (``builtin.<module>`` for built-ins, else the entry-point name)
    provider: str
    #: that plugin's version: its distribution's version; unlearnctl's version for built-ins
    provider_version: str | None
    #: the distribution that installed the plugin (the ``pip install`` name; ``"unlearnctl"`` for built-ins)
    provider_distribution: str | None = None

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

    def require(
        self,
        kind: str,
        name: str,
        provider: str | None = None,
        version: str | None = None,
        *,
        distribution: str | None = None,
    ) -> ComponentInfo:
        """The component ``name`` of ``kind``, looked up again from a record (a run's manifest, a replay).

        With ``provider`` (and ``version``, ``distribution``: what the record says provided it), a
        missing component is explained by its plugin: ``method 'x' was provided by plugin 'pkg'
        (version 1.2) which is not installed: pip install 'pkg==1.2'`` — or is disabled, failed to
        load, or (another version) does not provide it. Without ``provider`` this is :meth:`get`.
        A registered component is returned even when another plugin provides it now (say the recorded
        plugin's component was refused because another plugin has the name): compare
        ``info.provider`` (and ``info.provider_version``) with the record to warn about that.

        :param distribution: the ``pip install`` name, when it differs from the plugin name.
        :raises UnknownComponentError: not registered (a :class:`MissingProviderError` when
            ``provider`` is given).
        """
        k = normalize_kind(kind)
        info = self.components[k].get(name)
        if info is not None:
            return info
        if provider is None:
            return self.get(k, name)
        raise MissingProviderError(
            k, name, sorted(self.components[k]), self._why_missing(k, name, provider, version, distribution)
        )

    def _why_missing(self, kind: str, name: str, provider: str, version: str | None, distribution: str | None) -> str:
        builtin = provider.startswith(BUILTIN_PREFIX)
        dist = OWN_DISTRIBUTION if builtin else distribution or provider
        pin = f"{dist}=={version}" if version else dist
        install = f"pip install '{pin}'"
        what = f"{kind} '{name}' was provided by " + (
            f"built-in plugin '{provider}' (unlearnctl {version or 'version unknown'})"
            if builtin
            else f"plugin '{provider}' (version {version or 'unknown'})"
        )
        if provider in disabled_plugin_names():
            return f"{what}, which is disabled: remove '{provider}' from {DISABLE_ENV}"
        failed = [f for f in self.failures if f.name == provider and f.stage != "component"]
        if failed:
            return (
                f"{what}, which is installed but failed to {failed[0].stage}: {failed[0].error} "
                "(see `unlearnctl plugins`)"
            )
        loaded = self.plugin(provider)
        if loaded is not None:
            now = loaded.version or "unknown"
            return f"{what}, but the installed version ({now}) does not provide it: {install}"
        if builtin:
            return f"{what}, which this unlearnctl does not have: {install}"
        return f"{what} which is not installed: {install}"

    def plugin(self, name: str) -> PluginInfo | None:
        """The loaded plugin ``name`` (``None`` if it is not loaded: not installed, disabled or failed)."""
        return next((p for p in self.plugins if p.name == name), None)

    def plugin_versions(self) -> dict[str, str | None]:
        """Every loaded plugin's name -> version, in registration order (built-ins first).

        The version is the plugin's distribution version (``None`` if unknown); for the built-in
        plugins (``builtin.<module>``) it is unlearnctl's own version. Record the entries of the
        providers a run used, e.g. ``{p: versions[p] for p in used_providers}``.
        """
        return {p.name: p.version for p in self.plugins}

    def lifecycle_hooks(self, plugin: str) -> list[str]:
        """The hooks other than ``register_*`` that plugin ``plugin`` implements (``[]`` if not loaded)."""
        info = self.plugin(plugin)
        return info.lifecycle_hooks if info is not None else []

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


class MissingProviderError(UnknownComponentError):
    """A recorded component whose plugin is not installed, not loaded, or no longer provides it.

    Raised by :meth:`Registry.require`; a :class:`~unlearnctl.errors.UnknownComponentError`
    (exit code 2) whose message names the plugin, its version and how to get it back.
    """

    def __init__(self, kind: str, name: str, known: list[str], message: str) -> None:
        super().__init__(kind, name, known)
        self.args = (message,)


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
            found.append(ComponentInfo(_kind, cls.name, cls, info.name, info.version, info.distribution))

        pm.subset_hook_caller(f"register_{kind}s", remove_plugins=others)(register=register)
    return found


def build_registry(disable: Iterable[str] | None = None) -> Registry:
    """Load the plugins (see :func:`~unlearnctl.plugins.build_plugin_manager`) and collect their components.

    A component whose kind and name another plugin already has is refused (the first registrant keeps
    the name) and recorded in ``registry.failures`` with stage ``"component"``; the rest of that
    plugin is used.
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
            error = f"RegisterError: {exc}" if isinstance(exc, _RegisterError) else None
            failures.append(failure_from_exception(info.name, "register", exc, info.module, error=error))
            continue
        for comp in found:
            other = registry.components[comp.kind].get(comp.name)
            if other is not None:
                failures.append(_refusal(comp, other))
                continue
            registry.components[comp.kind][comp.name] = comp
        registry.plugins.append(info)
    return registry


def _refusal(comp: ComponentInfo, kept: ComponentInfo) -> PluginFailure:
    """The failure recorded when ``comp`` is refused because ``kept`` has its kind and name."""
    kept_where = f"{kept.cls.__module__}.{kept.cls.__qualname__}"
    where = f"{comp.cls.__module__}.{comp.cls.__qualname__}"
    kept_by = (
        f"built-in plugin '{kept.provider}'"
        if kept.provider.startswith(BUILTIN_PREFIX)
        else f"plugin '{kept.provider}'"
    )
    error = (
        f"{comp.kind} '{comp.name}' ({where}) refused: {kept_by} already provides a {comp.kind} named "
        f"'{comp.name}' ({kept_where}) and keeps the name; plugin '{comp.provider}' should rename its "
        f"{comp.kind}, or skip the plugin with {DISABLE_ENV}={comp.provider}"
    )
    if not kept.provider.startswith(BUILTIN_PREFIX):
        error += f" (or skip '{kept.provider}' with {DISABLE_ENV}={kept.provider} to use this one)"
    return PluginFailure(
        comp.provider,
        "component",
        error,
        location=code_location(comp.cls),
        component=(comp.kind, comp.name),
        kept_by=kept.provider,
    )


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
