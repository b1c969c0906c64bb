"""Component options: reading config files and ``--set`` values, validating them, describing them; and
command-level config files (``--config``, ``--print-config``: docs/config.md), read and written.

Precedence: the options model's defaults < ``--config FILE`` < ``--set key=value``. Every error is an
:class:`~unlearnctl.errors.OptionError` (or :class:`~unlearnctl.errors.UsageError` for a bad file)
whose one-line message names the key, what was given and what is allowed.

A config file is either a flat table of one component's options (a method's for ``forget``, the
training options for ``train``: the original format), or a command-level file with the command's own
table and its components' table (:data:`COMMAND_TABLES`; :func:`read_command_config`).
:func:`dump_config` writes such a file as TOML (:func:`to_toml`, a small writer for the values configs
hold), YAML or JSON.
"""

from __future__ import annotations

import datetime
import difflib
import json
import re
import tomllib
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types as at
import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined, to_jsonable_python

from .components import Component, Options
from .errors import OptionError, UsageError

CONFIG_SUFFIXES = {".toml": "toml", ".yaml": "yaml", ".yml": "yaml", ".json": "json"}
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


# --- reading ----------------------------------------------------------------------------------


def load_config_file(path: Path) -> dict[str, Any]:
    """Read option values from a ``.toml``, ``.yaml``/``.yml`` or ``.json`` file (a table at the top level).

    :raises UsageError: missing file, unknown format, syntax error or a top level that is not a table.
    """
    path = Path(path).expanduser()
    fmt = CONFIG_SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise UsageError(f"config file '{path}': unsupported format '{path.suffix}': use .toml, .yaml/.yml or .json")
    if not path.is_file():
        raise UsageError(f"config file '{path}' not found: check the path given to --config")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"config file '{path}': cannot read it: {_one_line(exc)}") from None
    try:
        if fmt == "toml":
            data: Any = tomllib.loads(text)
        elif fmt == "json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config file '{path}': invalid TOML: {_one_line(exc)}") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"config file '{path}': invalid JSON: {_one_line(exc)}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"config file '{path}': invalid YAML: {_yaml_error(exc)}") from None
    except RecursionError:
        raise UsageError(f"config file '{path}': nested too deeply to read") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(
            f"config file '{path}': expected a table of option = value at the top level, got {type(data).__name__}"
        )
    for key in data:
        if not isinstance(key, str):
            raise UsageError(f"config file '{path}': option names are text, got {key!r}")
    return data


def parse_value(text: str) -> Any:
    """Parse one ``--set`` value as a YAML scalar or list: ``0.1`` float, ``true`` bool, ``[1,2]`` list.

    Unlike plain YAML 1.1, only ``true``/``false`` are booleans (``on``, ``no``... stay strings),
    dates stay strings, ``1e-4`` is a float, and an empty value is the empty string. Quote a value
    (``'3'``) to keep it a string.
    """
    text = text.strip()
    if not text:
        return ""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, bool) and text.lower() not in ("true", "false"):
        return text
    if isinstance(value, datetime.date | datetime.datetime):
        return text
    if isinstance(value, str) and value == text and _FLOAT.fullmatch(value):
        return float(value)
    return value


def parse_set_values(pairs: Sequence[str], flag: str = "--set", example: str = "lr=1e-4") -> dict[str, Any]:
    """``["lr=1e-4", "mode=fixed"]`` -> ``{"lr": 0.0001, "mode": "fixed"}`` (later pairs win).

    ``flag`` and ``example`` name the command-line option in the error message.

    :raises OptionError: a pair without ``=`` or with an empty key.
    """
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise OptionError(f"{flag} '{pair}': write key=value (for example {flag} {example})")
        values[key] = parse_value(raw)
    return values


# --- validating -------------------------------------------------------------------------------


def option_keys(cls: type[Component]) -> dict[str, FieldInfo]:
    """The keys a component accepts (a field's alias when it has one), with their fields."""
    return {(f.alias or name): f for name, f in cls.Options.model_fields.items()}


def resolve_options(
    cls: type[Component],
    config: Mapping[str, Any] | None = None,
    sets: Sequence[str] | Mapping[str, Any] | None = None,
) -> Options:
    """Validate option values for ``cls``: defaults < ``config`` < ``sets``.

    :param config: values from ``--config FILE`` (see :func:`load_config_file`).
    :param sets: ``--set`` pairs (``"key=value"`` strings) or already-parsed values.
    :raises OptionError: an unknown key (with a suggestion) or a bad value, in one line.
    """
    values: dict[str, Any] = dict(config or {})
    if sets:
        values.update(sets if isinstance(sets, Mapping) else parse_set_values(sets))
    keys = option_keys(cls)
    unknown = [k for k in values if k not in keys]
    if unknown:
        raise OptionError(f"{_label(cls)}: {_unknown_message(unknown, list(keys))}{_see(cls)}")
    try:
        return cls.Options.model_validate(values)
    except ValidationError as exc:
        raise OptionError(f"{_label(cls)}: {_validation_message(cls, exc)}{_see(cls)}") from None


def _label(cls: type) -> str:
    return f"{getattr(cls, 'kind', 'component')} '{getattr(cls, 'name', cls.__name__)}'"


def _see(cls: type) -> str:
    if hasattr(cls, "kind") and hasattr(cls, "name"):
        return f" (see `unlearnctl show {cls.kind} {cls.name}`)"
    return ""


def _unknown_message(unknown: list[str], known: list[str]) -> str:
    parts = []
    for key in unknown:
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        parts.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
    noun = "option" if len(unknown) == 1 else "options"
    listing = ", ".join(known) if known else "none (this component takes no options)"
    return f"unknown {noun} {', '.join(parts)}; options: {listing}"


def _validation_message(cls: type[Component], exc: ValidationError) -> str:
    keys = option_keys(cls)
    messages = []
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err.get("loc", ())]
        key = ".".join(loc)
        field = keys.get(loc[0]) if loc else None
        allowed = f"; allowed: {describe_type(field)}" if field is not None else ""
        msg = err.get("msg", "invalid")
        msg = msg[:1].lower() + msg[1:]
        if err.get("type") == "missing":
            messages.append(f"option '{key}' is required{allowed}")
        elif not key:  # a check across options (a model validator): its own message, without pydantic's prefix
            error = (err.get("ctx") or {}).get("error")
            messages.append(str(error) if err.get("type") == "value_error" and error is not None else msg)
        else:
            messages.append(f"bad value for option '{key}': got {_show(err.get('input'))} ({msg}){allowed}")
    return "; ".join(messages)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- describing -------------------------------------------------------------------------------


def describe_type(field: FieldInfo | Any) -> str:
    """A readable type: ``'float'``, ``"'fixed' | 'bome'"``, ``'int >= 1'``, ``'0 < float <= 1'``, ``'int | None'``."""
    if isinstance(field, FieldInfo):
        return _type_name(field.annotation, tuple(field.metadata))
    return _type_name(field, ())


def _type_name(tp: Any, metadata: tuple[Any, ...]) -> str:
    origin = get_origin(tp)
    if origin is Annotated:
        base, *extra = get_args(tp)
        return _type_name(base, (*extra, *metadata))
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin is Union or origin is types.UnionType:
        args = get_args(tp)
        parts = [_type_name(a, metadata) for a in args if a is not type(None)]
        if type(None) in args:
            parts.append("None")
        return " | ".join(parts)
    if tp is type(None) or tp is None:
        return "None"
    if tp is Any:
        return "any"
    if origin is not None:
        args = get_args(tp)
        name = getattr(origin, "__name__", str(origin))
        inner = ", ".join("..." if a is Ellipsis else _type_name(a, ()) for a in args)
        return _bounds(f"{name}[{inner}]" if inner else name, metadata)
    if isinstance(tp, type):
        if issubclass(tp, Path):
            return _bounds("path", metadata)
        if issubclass(tp, BaseModel):
            return tp.__name__
        return _bounds(tp.__name__, metadata)
    return str(tp)


def _bounds(name: str, metadata: tuple[Any, ...]) -> str:
    lower = upper = None
    extra = []
    for m in metadata:
        if isinstance(m, at.Interval):
            lower = (">", m.gt) if m.gt is not None else (">=", m.ge) if m.ge is not None else lower
            upper = ("<", m.lt) if m.lt is not None else ("<=", m.le) if m.le is not None else upper
        elif isinstance(m, at.Gt):
            lower = (">", m.gt)
        elif isinstance(m, at.Ge):
            lower = (">=", m.ge)
        elif isinstance(m, at.Lt):
            upper = ("<", m.lt)
        elif isinstance(m, at.Le):
            upper = ("<=", m.le)
        elif isinstance(m, at.MultipleOf):
            extra.append(f"multiple of {m.multiple_of}")
        elif isinstance(m, at.MinLen):
            extra.append(f"length >= {m.min_length}")
        elif isinstance(m, at.MaxLen):
            extra.append(f"length <= {m.max_length}")
    if lower and upper:
        flip = {">": "<", ">=": "<="}
        text = f"{lower[1]} {flip[lower[0]]} {name} {upper[0]} {upper[1]}"
    elif lower:
        text = f"{name} {lower[0]} {lower[1]}"
    elif upper:
        text = f"{name} {upper[0]} {upper[1]}"
    else:
        text = name
    return f"{text} ({', '.join(extra)})" if extra else text


def field_default(field: FieldInfo) -> tuple[bool, Any]:
    """``(required, default)`` of an options field (``default`` is None when required)."""
    if field.default is not PydanticUndefined:
        return False, field.default
    if field.default_factory is not None:
        try:
            return False, field.default_factory()  # type: ignore[call-arg]
        except TypeError:  # a factory that wants the validated data
            return False, None
    return True, None


def options_table(cls: type[Component]) -> list[dict[str, Any]]:
    """One row per option: ``name``, ``type`` (readable), ``default`` (JSON-able), ``required``, ``help``."""
    rows = []
    for key, field in option_keys(cls).items():
        required, default = field_default(field)
        rows.append(
            {
                "name": key,
                "type": describe_type(field),
                "default": None if required else to_jsonable_python(default, fallback=str),
                "required": required,
                "help": field.description or "",
            }
        )
    return rows


# --- small helpers ----------------------------------------------------------------------------


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _yaml_error(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if problem and mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return _one_line(exc)
