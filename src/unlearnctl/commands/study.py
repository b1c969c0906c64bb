"""What ``eval`` and ``audit`` share: a model under study, prepared the same way for both commands.

``eval`` (:mod:`unlearnctl.commands.eval`, metrics) and ``audit`` (:mod:`unlearnctl.commands.audit`, attacks)
each build on this module. It holds:

- the model under study and its references: :func:`reference_spec` (``--against``, ``--base``, else the base
  model a ``forget`` run records) and :func:`check_reference` (they must make the same kind of images);
- the forgotten and kept classes (:func:`forgotten_classes`, :func:`kept_classes`), the data set of real
  images (:func:`study_dataset`) and the judge (:func:`load_study_judge`), together :func:`study_shared`:
  the :class:`~unlearnctl.contexts.study.EvalShared` every model of the study receives;
- the checks that need nothing loaded (:func:`check_study_request`) and ``--set NAME.OPTION=VALUE`` pairs by
  component (:func:`split_component_sets`);
- the results folder (:func:`results_folder`) and writing a results file into it (:func:`write_results`);
- the lifecycle hooks' ``run`` (:func:`study_run`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from ..contexts.study import EvalShared, SamplingProtocol
from ..distributed import World
from ..errors import UsageError
from ..inputs import base_model_spec, parse_data_options, resolve_data_dir
from ..inputs import dataset_options as resolve_dataset_options
from ..judge.classifier import load_judge
from ..lifecycle import RunInfo
from ..models.folder import DiffusionModel
from ..rundir import MANIFEST_FILE, atomic_write_text, record_files
from ..runtime import resolve_device
from .eval_record import EvalModel


class StudyRequest(Protocol):
    """What the preparation steps shared by ``eval`` and ``audit`` read of a request
    (``commands.eval.EvalRequest``, ``commands.audit.AuditRequest``): the model, what it forgot, the data,
    the judge, the sampling size."""

    target: str
    classes: str | None
    dataset: str | None
    data_dir: Path | None
    data_options: Sequence[str]
    judge: Path | None
    steps: int
    batch_size: int
    device: str


@dataclass(frozen=True)
class StudyData:
    """The data set of real images: its name (None: none), options and folder (None: the default)."""

    name: str | None
    options: dict[str, Any]
    data_dir: Path | None


def _parse_classes(text: str, num_classes: int | None) -> tuple[int, ...]:
    try:
        classes = sorted({int(p) for p in text.replace(" ", "").split(",") if p != ""})
    except ValueError:
        raise UsageError(f"--classes '{text}': write class ids separated by commas, e.g. --classes 2,5") from None
    if not classes:
        raise UsageError("--classes is empty: name at least one class id, e.g. --classes 2")
    if num_classes and any(c < 0 or c >= num_classes for c in classes):
        raise UsageError(f"--classes {text}: class ids must be between 0 and {num_classes - 1}")
    return tuple(classes)


def split_component_sets(
    pairs: Sequence[str], selected: Sequence[str], kind: str = "metric", example: str = "fidelity.kid_subset_size=100"
) -> dict[str, list[str]]:
    """``--set NAME.OPTION=VALUE`` pairs by component name (``kind``: ``"metric"``, ``"attack"``); a pair
    naming a component that is not selected is refused."""
    out: dict[str, list[str]] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        name, dot, option = key.strip().partition(".")
        if not sep or not dot or not option:
            raise UsageError(f"--set '{pair}': write {kind.upper()}.OPTION=VALUE, e.g. --set {example}")
        if name not in selected:
            doing = "computed" if kind == "metric" else "run"
            raise UsageError(f"--set '{pair}': {kind} '{name}' is not being {doing} ({kind}s: {', '.join(selected)})")
        out.setdefault(name, []).append(f"{option}={value}")
    return out


# --- preparing: each step resolves one part of the request, cheapest first -----------------------------


def check_study_request(req: StudyRequest) -> tuple[Path | None, torch.device]:
    """The checks that need nothing loaded: ``--data-dir`` (returned as an absolute folder, or None),
    ``--data-option`` pairs, ``--steps``, ``--batch-size``; and the device to work on."""
    given_data_dir = resolve_data_dir(req.data_dir)
    parse_data_options(list(req.data_options))
    if req.steps < 1:
        raise UsageError("--steps must be at least 1")
    if req.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    return given_data_dir, resolve_device(req.device)


def results_folder(target: str, out: Path | None) -> Path | None:
    """Where ``eval``'s or ``audit``'s files go: ``--out``, else the run folder ``target`` names, else
    nowhere (a model that is not a run folder). ``--out`` must not be a file."""
    folder = Path(target).expanduser()
    is_run = folder.is_dir() and (folder / MANIFEST_FILE).is_file()
    out_dir = out if out is not None else (folder if is_run else None)
    if out_dir is None:
        return None
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out '{out_dir}' is a file, not a folder")
    return out_dir


def reference_spec(
    explicit: str | None, subject: EvalModel, option: str = "--against"
) -> tuple[str | None, str | None]:
    """The model to compare with and where that choice came from: ``explicit`` (the value of ``option``),
    else the base model a ``forget`` run records (a ``train`` run starts from scratch: ``option`` only),
    else none."""
    if explicit:
        return explicit, option
    manifest = subject.manifest
    if manifest is not None and manifest.kind == "forget":
        return base_model_spec(manifest), "manifest weights.model"
    return None, None


def check_reference(
    target: str,
    subject: EvalModel,
    reference: EvalModel,
    *,
    option: str = "--against",
    explicit: bool = False,
    what: str = "the reference",
) -> list[str]:
    """Refuse a reference that makes other images than the subject; a note when the run's own base
    model (not named by ``option``: ``explicit`` False) is not the weights the run started from."""
    ref, model = reference.model, subject.model
    if (ref.conditional, ref.num_classes, ref.image_size, ref.channels) != (
        model.conditional,
        model.num_classes,
        model.image_size,
        model.channels,
    ):
        raise UsageError(
            f"{what} '{reference.spec}' does not produce the same kind of images as '{target}' "
            f"(conditioning, classes, size or channels differ): pass a matching {option}"
        )
    manifest = subject.manifest
    if manifest is not None and not explicit and manifest.weights.input_sha256 not in (None, reference.sha256):
        return [
            f"{what} '{reference.spec}' is not the model this run started from (its weights' sha256 differs "
            f"from the manifest's input_sha256): pass the right one with {option}"
        ]
    return []


def forgotten_classes(req: StudyRequest, subject: EvalModel, command: str) -> tuple[tuple[int, ...], list[str]]:
    """The forgotten classes: ``--classes`` (with a note when they differ from the run's), else the run's;
    a bare model needs ``--classes`` (the message names ``command``, ``"eval"`` or ``"audit"``)."""
    manifest = subject.manifest
    recorded = manifest.forget if manifest is not None else None
    if req.classes is None:
        if recorded is None:
            raise UsageError(
                f"'{req.target}' is not a run folder, so {command} cannot know what was forgotten: pass --classes 2,5"
            )
        return tuple(recorded.forget_classes), []
    classes = _parse_classes(req.classes, subject.model.num_classes or None)
    if recorded is not None and recorded.forget_classes and tuple(recorded.forget_classes) != classes:
        return classes, [
            f"--classes {req.classes} differs from the run's forgotten classes "
            f"{list(recorded.forget_classes)}; using --classes"
        ]
    return classes, []


def load_study_judge(explicit: Path | None, *models: DiffusionModel | None) -> tuple[Any | None, str | None]:
    """The judge (one for both models) and where it came from: ``--judge``, else the first judge folder
    a model names, else none."""
    if explicit is not None:
        return load_judge(Path(explicit).expanduser()), str(explicit)
    for m in models:
        if m is not None and m.judge_path is not None and Path(m.judge_path).is_dir():
            return load_judge(Path(m.judge_path)), str(m.judge_path)
    return None, None


def study_dataset(req: StudyRequest, subject: EvalModel, registry: Any, given_data_dir: Path | None) -> StudyData:
    """The data set of real images: ``--dataset``, else the run's (with its recorded options and folder),
    else the model's default; ``--data-option`` pairs over the recorded options, ``--data-dir`` over the
    recorded folder."""
    manifest = subject.manifest
    data_dir = None
    name: str | None
    if manifest is not None:
        name = req.dataset or manifest.dataset.name
        options = dict(manifest.dataset.options) if name == manifest.dataset.name else {}
        if name == manifest.dataset.name and manifest.dataset.data_dir:
            data_dir = Path(manifest.dataset.data_dir)
    else:
        name = req.dataset or subject.model.default_dataset
        options = dict(subject.model.extra.get("dataset_options") or {}) if not req.dataset else {}
    if given_data_dir is not None:
        data_dir = given_data_dir
    if name is not None:
        registry.get("dataset", name)
        if req.data_options:
            options = resolve_dataset_options(name, list(req.data_options), options, registry)
    elif req.data_options:
        raise UsageError("--data-option needs a dataset: pass --dataset NAME")
    return StudyData(name, options, data_dir)


def kept_classes(target: str, model: DiffusionModel, judge: Any | None, forget: tuple[int, ...]) -> tuple[int, ...]:
    """Every class but the forgotten ones: of the model, else of the judge, else up to the largest
    forgotten one."""
    label_count = model.num_classes or (judge.num_classes if judge is not None else 0)
    if not label_count and forget:
        label_count = max(forget) + 1
    if label_count and any(c >= label_count for c in forget):
        raise UsageError(f"forgotten classes {list(forget)} are not classes of '{target}' (0..{label_count - 1})")
    return tuple(c for c in range(label_count) if c not in forget)


def study_shared(
    req: StudyRequest,
    registry: Any,
    subject: EvalModel,
    others: Sequence[EvalModel],
    protocol: SamplingProtocol,
    device: torch.device,
    world: World,
    given_data_dir: Path | None,
    *,
    command: str,
) -> tuple[EvalShared, list[str]]:
    """What every model of an ``eval`` or ``audit`` (``command``, for messages) shares, with the notes for the
    user: the forgotten and kept classes, the judge (``--judge``, else the first a model names: ``subject``,
    then ``others``), the data set, and how to find the forget set (a run's recorded selectors, re-run on its
    dataset)."""
    forget_classes, notes = forgotten_classes(req, subject, command)
    judge, judge_source = load_study_judge(req.judge, subject.model, *(m.model for m in others))
    data = study_dataset(req, subject, registry, given_data_dir)
    shared = EvalShared(
        protocol=protocol,
        device=device,
        forget_classes=forget_classes,
        kept_classes=kept_classes(req.target, subject.model, judge, forget_classes),
        judge=judge,
        judge_source=judge_source,
        dataset_name=data.name,
        dataset_options=data.options,
        forget_ids=None,
        registry=registry,
        data_dir=data.data_dir,
        world=world,
    )
    manifest = subject.manifest
    if manifest is not None and manifest.forget is not None and req.classes is None and not req.dataset:
        # the forget set is the run's: its recorded selectors, re-run on the dataset
        shared.forget_selectors = list(manifest.forget.selectors)
        shared.forget_split = manifest.dataset.split
    return shared, notes


# --- results and progress ---------------------------------------------------------------------------------


def write_results(out_dir: Path, name: str, payload: dict[str, Any], files: Sequence[Path]) -> Path:
    """Write ``payload`` as the JSON file ``name`` of ``out_dir`` (atomically, after ``files``, the grids or
    plots already written there); in a run folder, record their sha256 so that `unlearnctl verify` covers
    what the command added. Returns the file's path."""
    path = out_dir / name
    atomic_write_text(path, json.dumps(payload, indent=2, allow_nan=True) + "\n")
    if (out_dir / MANIFEST_FILE).is_file():
        # paths relative to the run folder: out_dir itself may be relative to the working directory
        record_files(out_dir, [name, *(f.relative_to(out_dir) for f in files)])
    return path


def study_run(
    kind: str, spec: str, shared: EvalShared, out_dir: Path | None, total_steps: int, seed: int, **config: Any
) -> RunInfo:
    """The lifecycle hooks' ``run`` of an ``eval`` or ``audit`` of the model ``spec`` (``out_dir``: where
    its files go, or None; ``work_dir`` is the same folder): ``config`` is the command's own part of the
    configuration, next to the protocol, device and classes."""
    return RunInfo(
        kind=kind,
        out_dir=out_dir,
        work_dir=out_dir,
        config={
            "target": spec,
            **config,
            "protocol": shared.protocol.describe(),
            "device": shared.device.type,
            "forget_classes": list(shared.forget_classes),
            "kept_classes": list(shared.kept_classes),
        },
        total_steps=total_steps,
        description=f"{kind} {spec}",
        seed=seed,
    )
