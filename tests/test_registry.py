"""Looking components up by kind and name, creating them with options, and the component contract."""

from __future__ import annotations

import pytest
from pydantic import ConfigDict, Field

import unlearnctl
from unlearnctl.errors import OptionError, UnknownComponentError, UsageError
from unlearnctl.registry import MissingProviderError, build_registry, get_registry, normalize_kind
from unlearnctl.testing.contracts import (
    ContractError,
    check_component,
    check_component_class,
    component_id,
    registered_components,
    runtime_check,
)


@pytest.mark.parametrize(("given", "kind"), [("methods", "method"), ("method", "method"), (" Selectors ", "selector")])
def test_kinds_accept_singular_and_plural(given, kind):
    assert normalize_kind(given) == kind


def test_unknown_kind_suggests_the_closest():
    with pytest.raises(UsageError, match=r"unknown kind 'metod': did you mean 'methods'\? kinds: datasets, "):
        normalize_kind("metod")


def test_lookup_create_and_suggestions(fake_plugins):
    fake_plugins.selectors("acme", "acme-half", "acme-most")
    registry = build_registry()
    assert {"acme-half", "acme-most"} <= set(registry.names("selector"))
    assert [i.name for i in registry.all("selectors") if i.provider == "acme"] == ["acme-half", "acme-most"]

    with pytest.raises(UnknownComponentError) as info:
        registry.get("selectors", "acme-hlaf")
    assert info.value.suggestion == "acme-half"
    assert "unknown selector 'acme-hlaf': did you mean 'acme-half'?" in str(info.value)
    assert info.value.exit_code == 2

    selector = registry.create("selector", "acme-half", {"fraction": 0.25})
    assert selector.options.fraction == 0.25
    default = registry.create("selector", "acme-half")
    assert default.options.fraction == 0.5
    options = registry.get("selector", "acme-half").cls.Options(fraction=1.0)
    assert registry.create("selector", "acme-half", options).options is options
    with pytest.raises(OptionError, match=r"bad value for option 'fraction': got 2"):
        registry.create("selector", "acme-half", {"fraction": 2})


def test_get_registry_is_cached_until_refreshed():
    first = get_registry()
    assert get_registry() is first
    assert get_registry(refresh=True) is not first


def test_registry_hook_is_the_plugin_manager_hook():
    registry = get_registry()
    assert registry.hook is registry.pm.hook


# --- the component contract ---------------------------------------------------------------------


@pytest.mark.parametrize("info", registered_components(), ids=component_id)
def test_every_registered_component_meets_the_contract(info):
    # the class checks; the runtime checks of every built-in run in test_contract_runtime.py
    check_component_class(info.cls)


class GoodMethod(unlearnctl.Method):
    """A well-formed method."""

    name = "good"

    class Options(unlearnctl.Options):
        lr: float = Field(1e-4, gt=0, description="learning rate")

    def unlearn(self, run):
        pass


class NoDoc(GoodMethod):
    name = "nodoc"
    __doc__ = None


class Lazy(unlearnctl.Method):
    """Forgot to implement unlearn."""

    name = "lazy"


class AllowsExtra(GoodMethod):
    """Accepts anything."""

    class Options(unlearnctl.Options):
        model_config = ConfigDict(extra="allow")


class BadDefault(GoodMethod):
    """A default its own constraint rejects."""

    class Options(unlearnctl.Options):
        lr: float = Field(-1.0, gt=0, description="learning rate")


class NoHelp(GoodMethod):
    """An option without help."""

    class Options(unlearnctl.Options):
        lr: float = 1e-4


class BrokenInit(GoodMethod):
    """Cannot be built from defaults."""

    def __init__(self, options=None):
        raise RuntimeError("needs a GPU")


def test_contract_accepts_a_good_component():
    check_component_class(GoodMethod)


@pytest.mark.parametrize(
    ("cls", "expected"),
    [
        (NoDoc, "needs a docstring"),
        (Lazy, "must implement `unlearn`"),
        (AllowsExtra, "must forbid unknown keys"),
        (BadDefault, "the default of option 'lr' does not validate"),
        (NoHelp, "options without help text: lr"),
        (BrokenInit, "cannot be created with its default options: RuntimeError: needs a GPU"),
        (int, "is not a component class"),
    ],
)
def test_contract_rejects(cls, expected):
    with pytest.raises(ContractError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        check_component_class(cls)


def test_help_can_be_optional():
    check_component_class(NoHelp, require_help=False)


def test_runtime_checks_extend_the_contract(monkeypatch):
    from unlearnctl.testing import contracts

    monkeypatch.setattr(contracts, "RUNTIME_CHECKS", {k: [] for k in contracts.RUNTIME_CHECKS})
    seen = []

    @runtime_check("method")
    def runs(cls):
        seen.append(cls)
        raise ContractError("did not run on a tiny UNet")

    with pytest.raises(ContractError, match="tiny UNet"):
        check_component(GoodMethod)
    assert seen == [GoodMethod]
    with pytest.raises(ValueError, match="unknown kind"):
        runtime_check("methods")


# --- plugin versions and looking recorded components up again (manifests, replay) -----------------


def test_plugin_versions_map_each_loaded_plugin_to_its_version(fake_plugins):
    fake_plugins.selectors("acme", "acme-half", version="2.3.4")
    registry = build_registry()
    versions = registry.plugin_versions()
    assert versions["acme"] == "2.3.4"
    assert versions["builtin.selectors"] == unlearnctl.__version__
    assert list(versions) == [p.name for p in registry.plugins]  # built-ins first
    info = registry.get("selector", "acme-half")
    assert (info.provider, info.provider_version, info.provider_distribution) == ("acme", "2.3.4", "fake-acme")
    assert registry.get("selector", "classes").provider_distribution == "unlearnctl"
    assert registry.plugin("acme").distribution == "fake-acme"
    assert registry.plugin("nope") is None


def test_require_returns_registered_components_and_is_get_without_a_provider(fake_plugins):
    fake_plugins.selectors("acme", "acme-half")
    registry = build_registry()
    assert registry.require("selectors", "acme-half", provider="acme", version="9") is registry.get(
        "selector", "acme-half"
    )
    with pytest.raises(UnknownComponentError, match=r"unknown selector 'acme-hlaf': did you mean 'acme-half'\?"):
        registry.require("selector", "acme-hlaf")


def test_require_names_the_missing_plugin_and_how_to_install_it():
    registry = build_registry()
    with pytest.raises(MissingProviderError) as info:
        registry.require("methods", "x", provider="pkg", version="1.2")
    assert str(info.value) == (
        "method 'x' was provided by plugin 'pkg' (version 1.2) which is not installed: pip install 'pkg==1.2'"
    )
    assert isinstance(info.value, UnknownComponentError) and info.value.exit_code == 2
    assert (info.value.kind, info.value.name) == ("method", "x")
    with pytest.raises(MissingProviderError, match=r"pip install 'unlearnctl-pkg==1.2'$"):
        registry.require("method", "x", provider="pkg", version="1.2", distribution="unlearnctl-pkg")
    with pytest.raises(MissingProviderError, match=r"\(version unknown\) which is not installed: pip install 'pkg'$"):
        registry.require("method", "x", provider="pkg")
    with pytest.raises(
        MissingProviderError,
        match=r"^method 'x' was provided by built-in plugin 'builtin.gone' \(unlearnctl 0.0.1\), which this "
        r"unlearnctl does not have: pip install 'unlearnctl==0.0.1'$",
    ):
        registry.require("method", "x", provider="builtin.gone", version="0.0.1")


def test_require_explains_a_disabled_failed_refused_or_changed_plugin(fake_plugins, monkeypatch):
    fake_plugins.selectors("acme", "acme-half", version="2.0")
    fake_plugins.selectors("alpha", "shared")
    fake_plugins.selectors("beta", "shared")
    fake_plugins.add("broken", "import does_not_exist_anywhere\n")
    fake_plugins.selectors("off", "off-one")
    monkeypatch.setenv("UNLEARNCTL_DISABLE_PLUGINS", "off")
    registry = build_registry()

    with pytest.raises(MissingProviderError, match=r"which is disabled: remove 'off' from UNLEARNCTL_DISABLE_PLUGINS"):
        registry.require("selector", "off-one", provider="off", version="1.0.0")
    with pytest.raises(
        MissingProviderError,
        match=r"which is installed but failed to import: ModuleNotFoundError: No module named "
        r"'does_not_exist_anywhere' \(see `unlearnctl plugins`\)",
    ):
        registry.require("method", "b", provider="broken", version="1.0.0")
    # a recorded component now provided by another plugin is returned: the caller compares providers
    assert registry.require("selector", "shared", provider="beta").provider == "alpha"
    with pytest.raises(
        MissingProviderError,
        match=r"^selector 'old-one' was provided by plugin 'acme' \(version 1.0\), but the installed version \(2.0\) "
        r"does not provide it: pip install 'acme==1.0'$",
    ):
        registry.require("selector", "old-one", provider="acme", version="1.0")
