"""Turning command-line names into objects: ``--model``, ``--dataset`` and forget-set selectors.

- :func:`load_model`: a registered model name, a run folder (its ``model/``), a diffusers folder or a hub id.
- :func:`load_dataset`: a registered dataset name and a split; :func:`load_dataset_warned` also returns
  the :class:`~unlearnctl.data.files.DataWarning` lines the loader emitted (files left out...).
- :func:`dataset_options`: ``--data-option KEY=VALUE`` pairs validated against a dataset's options.
- :func:`select_forget` / :func:`build_forget_ids`: ``--classes 2,5`` and ``--forget NAME:ARGS ...``
  (the union of the selections), refusing an empty forget set or one that leaves nothing to remain.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from .components import Method, Options, Selector
from .config import parse_set_values, resolve_options
from .data.files import DataWarning
from .data.sets import ImageSet
from .errors import ModelNotAvailableError, OptionError, UsageError
from .integrity import check_run
from .manifest import ComponentConfig, DatasetRecord, Manifest, SelectorConfig, read_manifest
from .models.folder import DiffusionModel, load_model_folder
from .models.hub import load_hub_model
from .provenance import provenance
from .registry import get_registry
from .rundir import MANIFEST_FILE, MODEL_DIR

#: sub-folder of a run folder that holds its model


def _registry(registry: Any | None) -> Any:
    if registry is not None:
        return registry

    return get_registry()


def resolve_model_folder(spec: str | Path) -> Path | None:
    """The diffusers folder that ``spec`` names, or None when ``spec`` is not an existing folder.

    A run folder (``model/`` + ``manifest.json``) resolves to its ``model/``; a flat diffusers folder
    (``config.json``) or a pipeline folder (``unet/config.json``) to itself.
    """
    path = Path(spec).expanduser()
    if not path.is_dir():
        return None
    if (path / MODEL_DIR / "config.json").is_file():
        return path / MODEL_DIR
    return path


def load_model(spec: str, registry: Any | None = None) -> DiffusionModel:
    """``--model``: a registered model name (``ddpm-digits``), a run folder, a diffusers folder, or a
    Hugging Face hub id (``owner/name[@revision]``, see docs/models.md).

    An existing folder wins over a registered name, a registered name over a hub id. Loads on CPU in float32.

    A run folder (or its ``model/``) is verified first (:func:`unlearnctl.integrity.check_run`; ``--no-verify``
    skips it): every file must still match the sha256 its records hold.

    :raises ModelNotAvailableError: a folder that holds no model, pickled or damaged weights.
    :raises RunIntegrityError: a run folder with a changed or missing file.
    :raises UnknownComponentError: neither a folder nor a registered name (with a suggestion).
    """
    folder = resolve_model_folder(spec)
    if folder is not None:
        if folder.name == MODEL_DIR and (folder.parent / MANIFEST_FILE).is_file():
            check_run(folder.parent)  # a run folder, or its model/: its files must match their records
        if (folder / "config.json").is_file():
            return load_model_folder(folder, source=str(spec))
        if (folder / "unet" / "config.json").is_file():  # a DDPMPipeline folder
            return load_hub_model(folder, source=str(spec))
        raise ModelNotAvailableError(
            f"'{spec}' holds no model: expected a run folder (model/ and {MANIFEST_FILE}), a diffusers folder "
            "(config.json + diffusion_pytorch_model.safetensors) or a pipeline folder (unet/)"
        )
    reg = _registry(registry)
    text = str(spec)
    if text in reg.names("model"):
        return reg.create("model", text).load()
    if "/" in text and not text.startswith((".", "~", "/")):
        # owner/name[@revision] on the Hugging Face Hub (its cache first; one-line error when offline)

        return load_hub_model(text)
    if "/" in text or text.startswith((".", "~")):
        raise ModelNotAvailableError(
            f"model folder '{spec}' does not exist: pass a registered model name (see `unlearnctl list models`), "
            "a run folder or a diffusers folder"
        )
    reg.get("model", text)  # raises UnknownComponentError with a "did you mean"
    raise AssertionError("unreachable")  # pragma: no cover


def load_dataset(
    name: str,
    split: Literal["train", "test"] = "train",
    data_dir: Path | None = None,
    options: dict[str, Any] | None = None,
    registry: Any | None = None,
) -> ImageSet:
    """``--dataset``: the ``split`` of registered dataset ``name`` (options validated by the component)."""
    if split not in ("train", "test"):
        raise UsageError(f"unknown split '{split}': use train or test")
    component = _registry(registry).create("dataset", name, options or {})
    return component.load(split, Path(data_dir).expanduser() if data_dir is not None else None)


def load_dataset_warned(
    name: str,
    split: Literal["train", "test"] = "train",
    data_dir: Path | None = None,
    options: dict[str, Any] | None = None,
    registry: Any | None = None,
) -> tuple[ImageSet, list[str]]:
    """:func:`load_dataset`, and the messages of the ``DataWarning``s emitted while loading (one line each).

    The data warnings are captured instead of shown, so that the command can print them its own way and
    record them (manifest, ``metrics.json``); any other warning is passed on unchanged.
    """

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        data = load_dataset(name, split, data_dir, options, registry)
    messages: list[str] = []
    for w in caught:
        if issubclass(w.category, DataWarning):
            line = " ".join(str(w.message).split())
            if line not in messages:
                messages.append(line)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    return data, messages


def parse_data_options(pairs: Sequence[str] | Mapping[str, Any] | None) -> dict[str, Any]:
    """``["download=true", "resolution=64"]`` -> ``{"download": True, "resolution": 64}`` (later pairs win).

    Values are read as ``--set`` values are (:func:`unlearnctl.config.parse_value`); a mapping is taken as
    already parsed. :raises UsageError: a pair without ``=`` or with an empty key.
    """

    if pairs is None:
        return {}
    if isinstance(pairs, Mapping):
        return dict(pairs)
    return parse_set_values(pairs, flag="--data-option", example="download=true")


def dataset_options(
    name: str,
    pairs: Sequence[str] | Mapping[str, Any] | None,
    base: Mapping[str, Any] | None = None,
    registry: Any | None = None,
) -> dict[str, Any]:
    """The options of dataset ``name``: ``base`` (e.g. recorded options) < ``--data-option`` pairs,
    validated and fully resolved (defaults included, by key).

    :raises UsageError: an unknown dataset, a malformed pair, an unknown key (naming the allowed ones)
        or a bad value, in one line.
    """

    info = _registry(registry).get("dataset", name)
    given = parse_data_options(pairs)
    try:
        options = resolve_options(info.cls, config=dict(base or {}), sets=given)
    except OptionError as exc:
        raise OptionError(f"--data-option: {exc}") from None
    return options.model_dump(mode="json", by_alias=True)


@dataclass(frozen=True)
class Selection:
    """One selector as run: its name, the argument as given, the selector with its resolved options."""

    name: str
    argument: str
    selector: Selector
    provider: str | None
    size: int

    @property
    def options(self) -> dict[str, Any]:
        return self.selector.options.model_dump(mode="json", by_alias=True)


def parse_forget_spec(spec: str) -> tuple[str, str]:
    """``"classes:2,5"`` -> ``("classes", "2,5")``; ``"random"`` -> ``("random", "")``."""
    name, _, argument = spec.partition(":")
    if not name.strip():
        raise UsageError(f"--forget '{spec}': write SELECTOR:ARGS, e.g. --forget classes:2,5")
    return name.strip(), argument.strip()


def build_selector(name: str, argument: str, registry: Any | None = None) -> tuple[Selector, str | None]:
    """The selector ``name`` with options read from ``argument`` (``Selector.parse_argument``)."""

    info = _registry(registry).get("selector", name)
    options = resolve_options(info.cls, config=info.cls.parse_argument(argument))
    return info.cls(options), info.provider


def select_forget(
    data: ImageSet,
    forget_specs: Sequence[str] = (),
    classes: str | Sequence[str] | None = None,
    registry: Any | None = None,
) -> tuple[set[str], list[Selection]]:
    """Run ``--classes`` and each ``--forget NAME:ARGS``; return the union of their ids and what ran.

    :raises UsageError: nothing asked for, a selector error, an empty union, or a union that is the
        whole dataset (nothing would remain).
    """
    specs: list[tuple[str, str]] = []
    if classes is not None:
        text = classes if isinstance(classes, str) else ",".join(str(c) for c in classes)
        specs.append(("classes", text))
    specs += [parse_forget_spec(s) for s in forget_specs]
    if not specs:
        raise UsageError("nothing to forget: pass --classes 2,5 or --forget SELECTOR:ARGS")
    ids: set[str] = set()
    selections = []
    for name, argument in specs:
        selector, provider = build_selector(name, argument, registry)
        chosen = set(selector.select(data))
        ids |= chosen
        selections.append(Selection(name, argument, selector, provider, len(chosen)))
    if not ids:
        raise UsageError("the forget set is empty: the selectors matched no item; check their arguments")
    if len(ids & set(data.ids)) >= len(data):
        raise UsageError(
            f"the forget set is all {len(data)} items of dataset '{data.name}': nothing would remain; select fewer"
        )
    return ids, selections


def build_forget_ids(
    data: ImageSet,
    forget_specs: Sequence[str] = (),
    classes: str | Sequence[str] | None = None,
    registry: Any | None = None,
) -> set[str]:
    """The forget ids of ``--classes`` / ``--forget`` specs (see :func:`select_forget`)."""
    return select_forget(data, forget_specs, classes, registry)[0]


def options_dict(options: Options) -> dict[str, Any]:
    return options.model_dump(mode="json", by_alias=True)


def component_config(registry: Any, kind: str, component: Any) -> ComponentConfig:
    info = registry.get(kind, component.name)
    return ComponentConfig(name=component.name, options=options_dict(component.options), **provenance(info))


def resolve_method(
    registry: Any,
    name: str,
    config: dict[str, Any] | None,
    sets: Sequence[str] | dict[str, Any] | None,
    steps: int | None,
) -> Method:

    cls = registry.get("method", name).cls
    set_values = dict(sets) if isinstance(sets, dict) else parse_set_values(list(sets or []))
    if steps is not None:
        if "steps" not in cls.Options.model_fields:
            raise UsageError(f"method '{name}' has no `steps` option, so --steps does not apply to it")
        set_values["steps"] = steps
    return cls(resolve_options(cls, config=config, sets=set_values))


def check_model_data(model: DiffusionModel, data: ImageSet, model_spec: str) -> None:
    if (data.image_size, data.channels) != (model.image_size, model.channels):
        raise UsageError(
            f"dataset '{data.name}' has {data.channels}x{data.image_size}x{data.image_size} images but model "
            f"'{model_spec}' expects {model.channels}x{model.image_size}x{model.image_size}: pick the dataset the "
            "model was trained on (--dataset)"
        )
    if model.conditional and data.num_classes != model.num_classes:
        raise UsageError(
            f"model '{model_spec}' is conditioned on {model.num_classes} classes but dataset '{data.name}' has "
            f"{data.num_classes}: pick the dataset the model was trained on (--dataset)"
        )


def resolve_selectors(
    registry: Any, data: ImageSet, classes: str | None, forget: Sequence[str]
) -> tuple[set[str], list[SelectorConfig]]:
    """Run ``--classes`` and every ``--forget NAME:ARGS``; the union of their ids and their records."""

    ids, selections = select_forget(data, forget, classes, registry)
    reg = _registry(registry)
    records = [
        SelectorConfig(name=s.name, options=s.options, argument=s.argument, **provenance(reg.get("selector", s.name)))
        for s in selections
    ]
    return ids, records


def select_recorded(registry: Any, data: ImageSet, records: Sequence[SelectorConfig]) -> set[str]:
    """Re-run recorded selectors from their resolved options (replay)."""
    ids: set[str] = set()
    for rec in records:
        ids |= set(registry.create("selector", rec.name, rec.options).select(data))
    return ids


def resolve_model(registry: Any, spec: str) -> tuple[DiffusionModel, ComponentConfig | None, Path | None]:
    """``--model`` (a preset, a diffusers or run folder, a hub id): the model, its preset record, its folder.

    :func:`open_model` with the three parts ``forget``, ``replay`` and ``train`` record.
    """
    resolved = open_model(spec, registry)
    return resolved.model, resolved.preset, resolved.path


def resolve_data_dir(data_dir: Path | str | None) -> Path | None:
    """``--data-dir`` as an absolute folder (None: not given, the datasets' default folder)."""
    if data_dir is None:
        return None
    path = Path(data_dir).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise UsageError(f"--data-dir '{data_dir}' is a file, not a folder")
    return path


def load_dataset_record(
    registry: Any, name: str, options: dict[str, Any] | None = None, data_dir: Path | None = None
) -> tuple[ImageSet, DatasetRecord]:
    """The train split of dataset ``name``, and its manifest record (data warnings included)."""

    data, warnings = load_dataset_warned(name, "train", data_dir, options, registry)
    info = registry.get("dataset", name)
    record = DatasetRecord(
        name=name,
        version=data.version or info.cls.version or "",
        split="train",
        size=len(data),
        fingerprint=data.fingerprint(),
        options=options_dict(resolve_options(info.cls, config=options or {})),
        **provenance(info),
        data_dir=str(data_dir) if data_dir is not None else None,
        warnings=warnings,
    )
    return data, record


# --- what --model names, once for every command --------------------------------------------------------

#: how a model spec resolved: a run folder, a diffusers (or pipeline) folder, a registered name, a hub id
ModelKind = Literal["run", "folder", "preset", "hub"]


@dataclass
class ResolvedModel:
    """A model spec (``--model``, eval's target or ``--against``) resolved and loaded: see :func:`open_model`."""

    spec: str
    model: DiffusionModel
    kind: ModelKind
    #: the model preset with its default options, when ``spec`` is a registered model name
    preset: ComponentConfig | None
    #: the absolute folder the weights were read from (a run's ``model/``); None when not read from a folder
    path: Path | None
    #: the folder ``spec`` names, as given (a run folder itself, not its ``model/``); None for a name or hub id
    folder: Path | None

    @cached_property
    def manifest(self) -> Manifest | None:
        """The run's manifest when ``spec`` is a run folder (read on first use), else None."""
        return read_manifest(self.folder) if self.kind == "run" and self.folder is not None else None


def open_model(spec: str, registry: Any | None = None) -> ResolvedModel:
    """What ``spec`` names, loaded (see :func:`load_model` for the order of precedence).

    A run folder is a folder holding ``model/`` and ``manifest.json``; a folder holding only ``model/``
    is a model folder. :raises ModelNotAvailableError, UnknownComponentError: as :func:`load_model`.
    """
    reg = _registry(registry)
    model = load_model(spec, reg)
    weights_folder = resolve_model_folder(spec)
    folder = Path(spec).expanduser() if weights_folder is not None else None
    preset = None
    kind: ModelKind
    if folder is not None:
        is_run = weights_folder == folder / MODEL_DIR and (folder / MANIFEST_FILE).is_file()
        kind = "run" if is_run else "folder"
    elif spec in reg.names("model"):
        kind = "preset"
        info = reg.get("model", spec)
        preset = ComponentConfig(name=spec, options=options_dict(info.cls.Options()), **provenance(info))
    else:
        kind = "hub"
    path = Path(model.path).resolve() if model.path else None
    return ResolvedModel(spec, model, kind, preset, path, folder)


def base_model_spec(manifest: Manifest) -> str:
    """The model a run started from, as a spec for :func:`open_model`: ``weights.model`` as given, or the
    absolute folder its weights were read from (``weights.model_path``) when ``weights.model`` is no preset
    and names no folder from here (a relative folder of another working directory, or a moved one)."""
    weights = manifest.weights
    if weights.preset is None and weights.model_path and not Path(weights.model).expanduser().is_dir():
        return weights.model_path
    return weights.model
