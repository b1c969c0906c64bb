"""Command-level config files: what ``--config FILE`` holds for ``forget``, ``train`` and ``eval`` (its
command's own table and its components' options), and what ``--print-config`` writes (docs/config.md).

Reading one file (TOML, YAML, JSON) is :func:`unlearnctl.config.load_config_file`; this module gives the
file's tables their meaning per command and writes such files back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

import yaml

from .config import _show, load_config_file
from .errors import UsageError

#: the tables of a command-level config file, by command: the command's own options (its flags), then
#: the options of its components (``forget``: the method's; ``train``: the training options; ``eval``: one
#: table per metric, ``[metrics.NAME]``)
COMMAND_TABLES: dict[str, tuple[str, str]] = {
    "forget": ("forget", "method"),
    "train": ("train", "training"),
    "eval": ("eval", "metrics"),
}
_COMPONENT_WORDS = {"forget": "the method's options", "train": "the training options", "eval": "the metrics' options"}

#: what ``--print-config`` and ``unlearnctl config`` write
CONFIG_FORMATS = ("toml", "yaml", "json")


@dataclass(frozen=True)
class CommandConfig:
    """A config file as one command reads it (:func:`read_command_config`)."""

    path: Path
    #: the command's own table (``[forget]``...): its options by flag name; empty when the file has none
    command: dict[str, Any]
    #: the components' table (``[method]``...), or the whole file in the original format; None: none
    options: dict[str, Any] | None
    #: the original format: the file is a flat table of the component's options only
    legacy: bool


def read_command_config(path: Path, command: str) -> CommandConfig:
    """Read ``path`` as ``command`` (a key of :data:`COMMAND_TABLES`) reads its ``--config``.

    A file whose top level has one of the tables of :data:`COMMAND_TABLES` is a command-level file: it
    holds the command's two tables and nothing else. Any other file keeps its original meaning: a flat
    table of the component's options (``legacy``).

    :raises UsageError: a bad file (:func:`load_config_file`), another command's file, a stray key, or a
        table that is not one.
    """
    data = load_config_file(path)
    own, component = COMMAND_TABLES[command]
    known = {table: name for name, tables in COMMAND_TABLES.items() for table in tables}
    tables = [key for key, value in data.items() if key in known and isinstance(value, dict)]
    if not tables:
        return CommandConfig(Path(path), {}, data, legacy=True)
    reads = f"`unlearnctl {command}` reads [{own}] (its own options) and [{component}] ({_COMPONENT_WORDS[command]})"
    if own not in tables and component not in tables:
        other = known[tables[0]]
        raise UsageError(f"config file '{path}' is for `unlearnctl {other}` ([{tables[0]}]); {reads}")
    stray = [key for key in data if key not in (own, component)]
    if stray:
        raise UsageError(f"config file '{path}': unknown top-level key {', '.join(repr(k) for k in stray)}; {reads}")
    for table in (own, component):
        if table in data and not isinstance(data[table], dict):
            raise UsageError(f"config file '{path}': '{table}' must be a table, got {_show(data[table])}; {reads}")
    options = dict(data[component]) if component in data else None
    return CommandConfig(Path(path), dict(data.get(own) or {}), options, legacy=False)


def check_config_format(fmt: str, flag: str = "--config-format") -> str:
    """``fmt`` in lower case when it is one of :data:`CONFIG_FORMATS` (``yml`` is ``yaml``).

    :raises UsageError: another format, naming ``flag``.
    """
    value = str(fmt).strip().lower()
    value = "yaml" if value == "yml" else value
    if value not in CONFIG_FORMATS:
        raise UsageError(f"{flag} '{fmt}': use toml, yaml or json")
    return value


def dump_config(data: Mapping[str, Any], fmt: str, header: Sequence[str] = ()) -> str:
    """``data`` as the text of a config file in ``fmt`` (toml, yaml or json) that :func:`load_config_file`
    reads back to the same values (paths as strings, tuples as lists). ``header``: comment lines (TOML
    and YAML; JSON has no comments). TOML has no null: a None value becomes a comment (:func:`to_toml`).

    :raises UsageError: an unknown format; a value TOML cannot hold (None in a list, an integer beyond 64 bits).
    """
    fmt = check_config_format(fmt)
    plain = _plain(data)
    if fmt == "json":
        return json.dumps(plain, indent=2, ensure_ascii=False) + "\n"
    comments = "".join(f"# {line}\n" for line in header)
    if fmt == "yaml":
        return comments + yaml.safe_dump(plain, sort_keys=False, allow_unicode=True, default_flow_style=False)
    try:
        return to_toml(plain, header)
    except ValueError as exc:
        raise UsageError(f"cannot write the config as TOML: {exc}: print it as yaml or json") from None


def _plain(value: Any) -> Any:
    """Paths as strings, tuples as lists, mappings as dicts, all the way down."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, PurePath):
        return str(value)
    return value


def to_toml(data: Mapping[str, Any], header: Sequence[str] = ()) -> str:
    """A TOML document holding ``data`` (written by ``tomli_w``): ``tomllib.loads(to_toml(data)) == data``
    for the values configs hold. TOML has no null: a key whose value is None is left out and named in a
    comment line at the top (read back, it is absent: its default applies). ``header``: comment lines first.

    :raises ValueError: None inside a list, or a value TOML has no form for.
    """
    import tomli_w

    unset: list[str] = []

    def without_none(table: Mapping[str, Any], path: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in table.items():
            where = ".".join([*path, str(key)])
            if value is None:
                unset.append(where)
            elif isinstance(value, Mapping):
                out[str(key)] = without_none(value, [*path, str(key)])
            elif isinstance(value, list) and any(v is None for v in value):
                raise ValueError(f"'{where}' holds None in a list (TOML has no null)")
            else:
                out[str(key)] = value
        return out

    try:
        body = tomli_w.dumps(without_none(data, []))
    except TypeError as exc:
        raise ValueError(str(exc)) from None
    comments = [f"# {line}" for line in header]
    if unset:
        comments.append(f"# not set (their defaults apply): {', '.join(unset)}")
    return "\n".join(comments) + ("\n\n" if comments else "") + body
