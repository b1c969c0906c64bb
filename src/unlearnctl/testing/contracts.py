"""Contract checks every component must pass, for unlearnctl's tests and for plugin authors.

From pytest, check one class (the class checks, then the runtime checks of its kind)::

    from unlearnctl.testing.contracts import check_component

    def test_my_method_contract():
        assert check_component(MyMethod) == []   # [] = every check ran

or every component the installed plugins provide (yours included, found through its entry point)::

    import pytest
    from unlearnctl.testing.contracts import check_component, component_id, registered_components

    @pytest.mark.parametrize("info", registered_components(provider="myplugin"), ids=component_id)
    def test_contract(info):
        assert check_component(info.cls) == []

Each check raises :class:`ContractError` (an ``AssertionError``) whose message says what to fix.
:func:`check_component` returns the runtime checks that could not run here, with the reason (a model
that needs the network, offline; a dataset whose files are not here; a required option not given).

The runtime checks (:mod:`unlearnctl.testing.checks`) make each component do its work on tiny real
objects: a dataset loads, a selector selects, a method unlearns on a tiny UNet (its output loads with
diffusers and is deterministic under a seed), a model preset loads, a metric computes, an attack attacks.
Extension point: more runtime checks of one kind are functions ``check(cls, options) -> None`` added with
``@runtime_check("method")``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from pydantic import ValidationError

from ..components import BASE_FOR_KIND, KINDS, Component, Options
from ..config import field_default, option_keys, options_table, resolve_options
from ..errors import OptionError
from ..registry import NAME_PATTERN, clear_registry_cache, get_registry, normalize_kind
from .checks import BUILTIN_CHECKS
from .errors import ContractError, ContractSkipped

__all__ = [
    "REQUIRED_METHOD",
    "RUNTIME_CHECKS",
    "ContractError",
    "ContractSkipped",
    "check_component",
    "check_component_class",
    "component_id",
    "registered_components",
    "reload_plugins",
    "runtime_check",
]

#: the one method each kind of component implements
REQUIRED_METHOD = {
    "dataset": "load",
    "selector": "select",
    "method": "unlearn",
    "model": "load",
    "metric": "compute",
    "attack": "run",
    "executor": "submit",
}

#: ``check(cls, options)``; a check of one argument ``check(cls)`` is accepted too
RuntimeCheck = Callable[..., None]
#: kind -> runtime checks run by :func:`check_component` (the built-in ones, then :func:`runtime_check`'s)
RUNTIME_CHECKS: dict[str, list[RuntimeCheck]] = {k: list(BUILTIN_CHECKS.get(k, [])) for k in KINDS}


def runtime_check(kind: str) -> Callable[[RuntimeCheck], RuntimeCheck]:
    """Decorator adding a runtime contract check ``check(cls, options)`` for components of ``kind``.

    It raises :class:`ContractError` for a broken contract, :class:`ContractSkipped` when it cannot run.
    """
    if kind not in RUNTIME_CHECKS:
        raise ValueError(f"unknown kind '{kind}': one of {', '.join(KINDS)}")

    def add(check: RuntimeCheck) -> RuntimeCheck:
        RUNTIME_CHECKS[kind].append(check)
        return check

    return add


def _fail(cls: type, message: str) -> NoReturn:
    raise ContractError(f"{getattr(cls, '__qualname__', cls)}: {message}")


def check_component_class(cls: type[Component], require_help: bool = True) -> None:
    """Static contract of a component class.

    - a subclass of one of ``Dataset``, ``Selector``, ``Method``, ``ModelPreset``, ``Metric``, ``Attack``,
      ``Executor``;
    - a ``name`` (letters, digits, ``-``, ``_``, ``.``) and a one-line description (docstring's first line);
    - implements its kind's one method (``load``, ``select``, ``unlearn``, ``load``, ``compute``, ``run``,
      ``submit``);
    - ``Options`` is a subclass of ``unlearnctl.Options`` that forbids unknown keys;
    - every default validates, and the defaults alone build the options when no option is required;
    - the options render (``unlearnctl show``), each with help text (``Field(description=...)``)
      unless ``require_help=False``;
    - an unknown key is rejected with an ``OptionError`` naming it.
    """
    if not isinstance(cls, type) or not issubclass(cls, Component):
        _fail(
            cls,
            "is not a component class (subclass unlearnctl.Dataset, Selector, Method, ModelPreset, Metric, Attack or "
            "Executor)",
        )
    kind = getattr(cls, "kind", None)
    if kind not in BASE_FOR_KIND or not issubclass(cls, BASE_FOR_KIND[kind]):
        _fail(cls, f"has no valid kind ({kind!r}): subclass one of the component base classes")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        _fail(cls, f"needs a class attribute `name` of letters, digits, '-', '_', '.' (got {name!r})")
    if not (cls.__dict__.get("__doc__") or "").strip() or not cls.description():
        # its own docstring: an inherited one would describe the parent
        _fail(cls, "needs a docstring whose first line describes it (shown by `unlearnctl list`)")
    method = REQUIRED_METHOD[kind]
    if getattr(cls, method) is getattr(BASE_FOR_KIND[kind], method):
        _fail(cls, f"must implement `{method}` (a {kind} does its work there)")

    # options model
    options = getattr(cls, "Options", None)
    if not (isinstance(options, type) and issubclass(options, Options)):
        _fail(cls, "`Options` must subclass unlearnctl.Options (nested pydantic model)")
    if options.model_config.get("extra") != "forbid":
        _fail(cls, "`Options` must forbid unknown keys (extra='forbid', inherited from unlearnctl.Options)")
    rows = options_table(cls)
    defaults = {}
    for key, field in option_keys(cls).items():
        required, default = field_default(field)
        if not required:
            defaults[key] = default
    try:
        options.model_validate(defaults)
    except ValidationError as exc:
        bad = [e for e in exc.errors(include_url=False) if e["type"] != "missing"]
        if bad:
            where = ".".join(str(p) for p in bad[0]["loc"])
            _fail(cls, f"the default of option '{where}' does not validate: {bad[0]['msg']}")
    if require_help:
        missing = [r["name"] for r in rows if not r["help"]]
        if missing:
            _fail(cls, f"options without help text: {', '.join(missing)} (use Field(description=...))")
    for row in rows:
        if not row["type"]:
            _fail(cls, f"option '{row['name']}' has no readable type")

    # unknown keys are rejected by name
    bogus = "__not_an_option__"
    try:
        resolve_options(cls, sets={bogus: 1})
    except OptionError as exc:
        if bogus not in str(exc):
            _fail(cls, f"the error for an unknown option does not name it: {exc}")
    else:
        _fail(cls, "accepts an unknown option key")

    # with no required option, the component builds from its defaults
    if not any(r["required"] for r in rows):
        try:
            cls(cls.Options())
        except Exception as exc:
            _fail(cls, f"cannot be created with its default options: {type(exc).__name__}: {exc}")


def check_component(
    cls: type[Component], require_help: bool = True, *, options: Mapping[str, Any] | None = None
) -> list[str]:
    """:func:`check_component_class`, then every runtime check registered for its kind.

    :param options: option values the runtime checks build the component with, over its defaults:
        required options, or smaller settings for a fast check (a method gets ``steps=1`` unless given).
    :returns: the runtime checks that could not run here, each ``"<check>: <reason>"``; ``[]`` when all ran.
    :raises ContractError: the first broken contract.
    """
    check_component_class(cls, require_help=require_help)
    skipped = []
    for check in RUNTIME_CHECKS.get(getattr(cls, "kind", ""), []):
        try:
            if len(inspect.signature(check).parameters) >= 2:
                check(cls, dict(options or {}))
            else:
                check(cls)
        except ContractSkipped as exc:
            skipped.append(f"{check.__name__}: {exc}")
    return skipped


def registered_components(kind: str | None = None, provider: str | None = None) -> list[Any]:
    """The registry's :class:`~unlearnctl.registry.ComponentInfo` objects, to parametrise a test over.

    :param kind: only this kind (singular or plural).
    :param provider: only the components of this plugin (e.g. your entry-point name).
    """
    registry = get_registry()
    kinds = [normalize_kind(kind)] if kind else list(KINDS)
    infos = [info for k in kinds for info in registry.all(k)]
    return [i for i in infos if provider is None or i.provider == provider]


def reload_plugins() -> None:
    """Forget the loaded plugins: the next command or :func:`registered_components` finds them afresh.

    For tests that install a plugin (``pip install``) or change ``UNLEARNCTL_DISABLE_PLUGINS`` mid-process.
    """
    clear_registry_cache()


def component_id(info: Any) -> str:
    """A readable pytest id: ``method:erasediff``."""
    return f"{info.kind}:{info.name}"
