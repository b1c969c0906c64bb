"""Command-level config files: ``--config FILE`` applied to a request, ``--print-config``, and a run's
manifest turned back into such a file (``unlearnctl config RUN``). The format and the precedence are in
``docs/config.md``.

A request (``ForgetRequest``, ``TrainRequest``, ``EvalRequest``) names its config file in ``config`` and
the fields the caller set explicitly in ``given`` (the command line's flags; None: the fields whose value
differs from the default). :func:`apply_config` fills every other field from the file's command table and
returns the file's component options apart, for the command to resolve with its ``--set`` values. The
commands build what ``--print-config`` prints from what they resolved (``forget_config``,
``train_config``, ``eval_config``: a :class:`ResolvedConfig`), and ``forget`` and ``train`` the same from
a run's manifest (``forget_config_of``, ``train_config_of``; :func:`recorded_options` what they share).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config_files import COMMAND_TABLES, dump_config, read_command_config
from ..errors import OptionError, UsageError
from ..inputs import parse_data_options
from ..manifest import Manifest

# --- what a config file may hold, by command -----------------------------------------------------------


@dataclass(frozen=True)
class ConfigSpec:
    """The command table of one command's config file: which request fields it may set, and how."""

    command: str
    #: the keys of the command table: the request fields a file may set (the command's flags, by name)
    keys: tuple[str, ...]
    #: keys that are chosen as a whole: when the command line gives one of them, the file gives none of them
    together: tuple[str, ...] = ()
    #: the key naming the component whose options the component table holds (``forget``: ``method``)
    component_key: str | None = None
    #: a file without the command's tables (the original format) is the component's options
    legacy_ok: bool = True
    #: the request holds ``data_options`` as ``KEY=VALUE`` pairs only (``eval``): the file's table is
    #: written as pairs whose values read back as they were (JSON, which ``--set`` values read as YAML)
    data_option_pairs: bool = False

    @property
    def component_table(self) -> str:
        return COMMAND_TABLES[self.command][1]


FORGET_SPEC = ConfigSpec(
    "forget",
    (
        "model", "dataset", "data_dir", "data_options", "classes", "forget", "method", "out", "seed",
        "device", "precision", "channels_last", "compile", "grid_per_class", "threads", "checkpoint_every",
        "keep_checkpoints",
    ),
    together=("classes", "forget"),
    component_key="method",
)  # fmt: skip
TRAIN_SPEC = ConfigSpec(
    "train",
    (
        "dataset", "data_dir", "data_options", "classes", "forget", "out", "seed", "device", "precision",
        "channels_last", "compile", "checkpoint_every", "keep_checkpoints",
    ),
    together=("classes", "forget"),
)  # fmt: skip
EVAL_SPEC = ConfigSpec(
    "eval",
    (
        "target", "against", "retrain", "classes", "dataset", "data_dir", "data_options", "metrics", "judge",
        "num_samples", "sampler", "steps", "guidance", "eta", "seed", "batch_size", "channels_last", "compile",
        "device", "threads", "out", "overwrite", "sample_cache",
    ),
    legacy_ok=False,
    data_option_pairs=True,
)  # fmt: skip

#: the flag of a key in messages, where it is not ``--`` + the key with dashes
_FLAGS = {"data_options": "--data-option", "target": "RUN_OR_MODEL", "num_samples": "--num-samples"}


def flag_of(key: str) -> str:
    return _FLAGS.get(key, "--" + key.replace("_", "-"))


# --- reading: the file applied to a request --------------------------------------------------------------


@dataclass
class AppliedConfig:
    """A request with its config file applied (:func:`apply_config`)."""

    request: Any
    #: the file's component options (the method's, the training options, or ``{metric: options}``); None: none
    options: dict[str, Any] | None = None
    #: one-line notes for the user (a part of the file that does not apply)
    notes: list[str] = field(default_factory=list)


def given_fields(request: Any) -> set[str]:
    """The fields of ``request`` set explicitly: ``request.given``, else those that differ from their default."""
    given = getattr(request, "given", None)
    if given is not None:
        return set(given)
    out = set()
    for f in dataclasses.fields(request):
        if f.default is not dataclasses.MISSING:
            default: Any = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            out.add(f.name)
            continue
        if getattr(request, f.name) != default:
            out.add(f.name)
    return out


def apply_config(request: Any, spec: ConfigSpec) -> AppliedConfig:
    """``request`` with the command table of its ``config`` file applied to every field not in
    :func:`given_fields` (the command line wins over the file, the file over the defaults), and the
    file's component options apart. ``config`` is left as it is.

    Per key: a flag given on the command line wins. ``spec.together`` keys (the forget set: ``classes``
    and ``forget``) go as a whole: one of them on the command line and the file's are all unused. The
    ``data_options`` table is merged with ``--data-option`` pairs (the pairs win, key by key), unless the
    command line names another dataset than the file; the component table likewise belongs to the
    component the file names (``forget``: its ``method``), and is unused (with a note) when the command
    line names another one (a file that names none: its table goes to the component that runs).

    :raises UsageError: a bad file, an unknown key (with a suggestion), a value of the wrong type.
    """
    if request.config is None:
        return AppliedConfig(request)
    path = Path(request.config)
    cfg = read_command_config(path, spec.command)
    if cfg.legacy:
        if not spec.legacy_ok and cfg.options:
            own, component = COMMAND_TABLES[spec.command]
            raise UsageError(
                f"config file '{path}': `unlearnctl {spec.command}` reads a [{own}] table (its own options) and "
                f"[{component}.NAME] tables (each metric's options); got {', '.join(map(repr, cfg.options))}"
            )
        return AppliedConfig(request, cfg.options)
    table = cfg.command
    where = f"config file '{path}' [{spec.command}]"
    unknown = [key for key in table if key not in spec.keys]
    if unknown:
        parts = []
        for key in unknown:
            close = difflib.get_close_matches(key, spec.keys, n=1, cutoff=0.6)
            parts.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        raise OptionError(f"{where}: unknown option {', '.join(parts)}; options: {', '.join(spec.keys)}")
    given = given_fields(request)
    hints = typing.get_type_hints(type(request))
    options = cfg.options
    notes: list[str] = []
    skip = set(spec.together) if given & set(spec.together) else set()
    bound = spec.component_key
    if bound is not None and bound in given and options and table.get(bound) not in (None, getattr(request, bound)):
        notes.append(
            f"{flag_of(bound)} {getattr(request, bound)}: the [{spec.component_table}] options of config file "
            f"'{path}' are for {bound} '{table[bound]}' and are not used"
        )
        options = None
    if "data_options" in table and "dataset" in given and table.get("dataset") not in (None, request.dataset):
        notes.append(
            f"--dataset {request.dataset}: the data_options of config file '{path}' are for dataset "
            f"'{table['dataset']}' and are not used"
        )
        skip.add("data_options")
    values: dict[str, Any] = {}
    for name, raw in table.items():
        if name in skip or (name in given and name != "data_options"):
            continue
        if name == "data_options":
            values[name] = _data_options(where, raw, request.data_options if name in given else (), spec)
        else:
            values[name] = _validated(where, name, _normalised(name, raw), hints[name])
    return AppliedConfig(dataclasses.replace(request, **values), options, notes)


def _data_options(where: str, raw: Any, pairs: Any, spec: ConfigSpec) -> Any:
    """The file's ``data_options`` (a table, or a list of ``KEY=VALUE``) with the ``--data-option`` pairs
    given over it, key by key."""
    if not isinstance(raw, dict | list) or (isinstance(raw, list) and not all(isinstance(p, str) for p in raw)):
        raise OptionError(f"{where}: bad value for 'data_options': got {raw!r} (a table of option = value)")
    value = {**parse_data_options(raw), **parse_data_options(pairs)}
    if spec.data_option_pairs:
        return [f"{k}={json.dumps(v)}" for k, v in value.items()]
    return value


def _normalised(key: str, value: Any) -> Any:
    """The shapes a file may write a key in besides the flag's own: ``classes = [2, 5]`` or ``2``,
    ``forget = "classes:2"``, ``metrics = "kept,fidelity"``."""
    if key == "classes" and isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    if key == "classes" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if key == "forget" and isinstance(value, str):
        return [value]
    if key == "metrics" and isinstance(value, str):
        return [m.strip() for m in value.split(",") if m.strip()]
    return value


def _validated(where: str, key: str, value: Any, hint: Any) -> Any:
    from pydantic import TypeAdapter, ValidationError

    try:
        return TypeAdapter(hint).validate_python(value)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        msg = str(first.get("msg", "invalid"))
        raise OptionError(f"{where}: bad value for '{key}': got {value!r} ({msg[:1].lower() + msg[1:]})") from None


# --- writing: --print-config and `unlearnctl config` -------------------------------------------------------


@dataclass
class ResolvedConfig:
    """A command's fully resolved options, as a config file ``--config`` reads back (:meth:`render`)."""

    command: str
    #: the command table (``[forget]``...): every flag the file may set, resolved
    options: dict[str, Any]
    #: the component table (``[method]``...): fully resolved, defaults included
    components: dict[str, Any]
    #: dotted keys whose value is None where the default is not: TOML, which has no null, cannot write them
    explicit_nulls: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        own, component = COMMAND_TABLES[self.command]
        return {own: dict(self.options), component: dict(self.components)}

    def render(self, fmt: str) -> str:
        """The config file's text in ``fmt`` (toml, yaml, json). :raises UsageError: a bad format; a None
        TOML cannot write."""
        from ..config_files import check_config_format

        fmt = check_config_format(fmt)
        if fmt == "toml" and self.explicit_nulls:
            raise UsageError(
                f"{', '.join(self.explicit_nulls)} is None (not its default), which TOML cannot write: "
                "print the config as yaml or json"
            )
        header = [
            f"unlearnctl {self.command}: every option resolved. `unlearnctl {self.command} --config FILE` runs it "
            "again;",
            "flags given on the command line win over this file (docs/config.md).",
        ]
        return dump_config(self.as_dict(), fmt, header)


def explicit_nulls(table: str, options: Mapping[str, Any], cls: Any) -> list[str]:
    """The keys of ``options`` (of the component class ``cls``, or a pydantic model) that are None where
    their default is not, as ``table.key``."""
    if cls is None:
        return []
    model = getattr(cls, "Options", cls)
    defaults: dict[str, Any] = {}
    for name, f in getattr(model, "model_fields", {}).items():
        defaults[f.alias or name] = f.get_default(call_default_factory=True)
    return [f"{table}.{k}" for k, v in options.items() if v is None and defaults.get(k) is not None]


def selector_specs(selectors: Sequence[Any]) -> list[str]:
    """Recorded selectors as ``--forget NAME:ARGS`` values."""
    return [f"{s.name}:{s.argument}" if s.argument else s.name for s in selectors]


def recorded_options(manifest: Manifest) -> dict[str, Any]:
    """What ``forget`` and ``train`` share in their command table, from a run's manifest: the dataset (its
    name, folder and resolved options), the forget set (its selectors as ``--forget NAME:ARGS``, from their
    recorded arguments), the seed, the device as recorded (``auto`` as the device it chose), the precision
    and the UNet's speed-ups; ``out`` none (a new run needs a new folder)."""
    env = manifest.environment
    data = manifest.dataset
    return {
        "dataset": data.name,
        "data_dir": data.data_dir,
        "classes": None,
        "forget": selector_specs(manifest.forget.selectors) if manifest.forget is not None else [],
        "out": None,
        "seed": manifest.seed,
        "device": env.device_requested if env.device_requested not in ("auto", "") else env.device,
        "precision": env.precision,
        "channels_last": env.channels_last,
        "compile": env.compile,
        "data_options": dict(data.options),
    }


def component_class(registry: Any, kind: str, name: str) -> Any:
    """The class of component ``name`` (None when no installed plugin provides it: its defaults are unknown)."""
    from ..errors import UnlearnError
    from ..registry import get_registry

    try:
        return (registry if registry is not None else get_registry()).get(kind, name).cls
    except UnlearnError:
        return None
