"""Which plugin provided each component of a run: recorded in the manifest, checked again by ``replay``.

A manifest records, for the method, the dataset, each selector and the model preset, the plugin that
provided it, that plugin's version and the distribution that installed it (:func:`provenance`).
``replay`` looks each one up again with :meth:`Registry.require <unlearnctl.registry.Registry.require>`:
a component whose plugin is missing is a one-line error naming the plugin and how to install it, and a
plugin whose version changed since the run is a warning (:func:`check_providers`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from .manifest import ComponentConfig, DatasetRecord, Manifest, SelectorConfig
from .plugins import BUILTIN_PREFIX

# ``SelectorConfig`` is a constraint of its own so that selectors come back as ``SelectorConfig``
Record = TypeVar("Record", SelectorConfig, ComponentConfig, DatasetRecord)


def provenance(info: Any) -> dict[str, str | None]:
    """The manifest fields saying where a component comes from, from its registry ``ComponentInfo``."""
    return {
        "provider": info.provider,
        "provider_version": info.provider_version,
        "provider_distribution": info.provider_distribution,
    }


def with_current_provider(registry: Any, kind: str, records: Sequence[Record]) -> list[Record]:
    """``records`` (say, a replayed run's selectors) with the provider that serves them now."""
    return [r.model_copy(update=provenance(registry.get(kind, r.name))) for r in records]


def recorded_components(manifest: Manifest) -> list[tuple[str, ComponentConfig | DatasetRecord]]:
    """``(kind, record)`` of every component a run used: method, dataset, selectors, model preset."""
    out: list[tuple[str, ComponentConfig | DatasetRecord]] = []
    if manifest.method is not None:
        out.append(("method", manifest.method))
    out.append(("dataset", manifest.dataset))
    if manifest.forget is not None:
        out += [("selector", s) for s in manifest.forget.selectors]
    if manifest.weights.preset is not None:
        out.append(("model", manifest.weights.preset))
    return out


def _builtin(provider: str | None) -> bool:
    return provider is not None and provider.startswith(BUILTIN_PREFIX)


def _plugin(provider: str, version: str | None) -> str:
    return f"plugin '{provider}' ({version or 'version unknown'})"


def check_providers(registry: Any, manifest: Manifest) -> list[str]:
    """Look every recorded component up again; one warning per plugin that changed since the run.

    Warns when a component now comes from another plugin than recorded, and when a plugin's version
    differs from the recorded one (once per plugin, naming the components it provided). Built-in
    components are left out: their version is unlearnctl's, whose change the environment check reports.
    Records without a provider or version (manifests written before they were recorded) are looked up
    by name only.

    :raises MissingProviderError: a recorded component is not registered now; the message names the
        recorded plugin, its version and how to install it.
    """
    warnings: list[str] = []
    changed: dict[str, tuple[str, str | None, list[str]]] = {}
    for kind, rec in recorded_components(manifest):
        info = registry.require(
            kind, rec.name, rec.provider, rec.provider_version, distribution=rec.provider_distribution
        )
        if rec.provider is None or (_builtin(rec.provider) and _builtin(info.provider)):
            continue
        what = f"{kind} '{rec.name}'"
        if info.provider != rec.provider:
            warnings.append(
                f"{what}: recorded from {_plugin(rec.provider, rec.provider_version)}, now from "
                f"{_plugin(info.provider, info.provider_version)}"
            )
        elif rec.provider_version is not None and info.provider_version != rec.provider_version:
            entry = changed.setdefault(rec.provider, (rec.provider_version, info.provider_version, []))
            entry[2].append(what)
    for provider, (was, now, components) in changed.items():
        listed = ", ".join(components)
        warnings.append(f"plugin {provider}: recorded {was}, now {now or 'version unknown'} ({listed})")
    return warnings
