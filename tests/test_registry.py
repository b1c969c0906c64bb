"""Looking components up by kind and name, creating them with options, and the component contract."""

from __future__ import annotations

import pytest
from pydantic import ConfigDict, Field

import unlearnctl
from unlearnctl.errors import OptionError, UnknownComponentError, UsageError
from unlearnctl.registry import build_registry, get_registry, normalize_kind
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
    check_component(info.cls)


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
