"""Turning command-line names into objects: ``--model``, ``--dataset`` and forget-set selectors.

- :func:`load_model`: a registered model name, a run folder (its ``model/``), a diffusers folder or a hub id.
- :func:`load_dataset`: a registered dataset name and a split; :func:`load_dataset_warned` also returns
  the :class:`~unlearnctl.datasets_io.DataWarning` lines the loader emitted (files left out...).
- :func:`dataset_options`: ``--data-option KEY=VALUE`` pairs validated against a dataset's options.
- :func:`select_forget` / :func:`build_forget_ids`: ``--classes 2,5`` and ``--forget NAME:ARGS ...``
  (the union of the selections), refusing an empty forget set or one that leaves nothing to remain.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .components import Selector
from .data import ImageSet
from .errors import ModelNotAvailableError, UsageError
from .models import DiffusionModel, load_model_folder

#: sub-folder of a run folder that holds its model
RUN_MODEL_DIR = "model"
RUN_MANIFEST = "manifest.json"


def _registry(registry: Any | None) -> Any:
    if registry is not None:
        return registry
    from .registry import get_registry

    return get_registry()


def resolve_model_folder(spec: str | Path) -> Path | None:
    """The diffusers folder that ``spec`` names, or None when ``spec`` is not an existing folder.

    A run folder (``model/`` + ``manifest.json``) resolves to its ``model/``; a flat diffusers folder
    (``config.json``) or a pipeline folder (``unet/config.json``) to itself.
    """
    path = Path(spec).expanduser()
    if not path.is_dir():
        return None
    if (path / RUN_MODEL_DIR / "config.json").is_file():
        return path / RUN_MODEL_DIR
    return path


def load_model(spec: str, registry: Any | None = None) -> DiffusionModel:
    """``--model``: a registered model name (``ddpm-digits``), a run folder, a diffusers folder, or a
    Hugging Face hub id (``owner/name[@revision]``, see docs/models.md).

    An existing folder wins over a registered name, a registered name over a hub id. Loads on CPU in float32.

    :raises ModelNotAvailableError: a folder that holds no model.
    :raises UnknownComponentError: neither a folder nor a registered name (with a suggestion).
    """
    folder = resolve_model_folder(spec)
    if folder is not None:
        if (folder / "config.json").is_file():
            return load_model_folder(folder, source=str(spec))
        if (folder / "unet" / "config.json").is_file():  # a DDPMPipeline folder
            from .builtin.hub_models import load_hub_model

            return load_hub_model(folder, source=str(spec))
        raise ModelNotAvailableError(
            f"'{spec}' holds no model: expected a run folder (model/ and {RUN_MANIFEST}), a diffusers folder "
            "(config.json + diffusion_pytorch_model.safetensors) or a pipeline folder (unet/)"
        )
    reg = _registry(registry)
    text = str(spec)
    if text in reg.names("model"):
        return reg.create("model", text).load()
    if "/" in text and not text.startswith((".", "~", "/")):
        # owner/name[@revision] on the Hugging Face Hub (its cache first; one-line error when offline)
        from .builtin.hub_models import load_hub_model

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
    from .datasets_io import DataWarning

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
    from .config import parse_set_values

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
    from .config import resolve_options
    from .errors import OptionError

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
    from .config import resolve_options

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
