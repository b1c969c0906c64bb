"""``unlearnctl eval``: did the model forget, and what did it cost?

:func:`evaluate` evaluates a model (usually a run's unlearned model) and its *reference* (the base model
the run started from, or ``--against``) side by side under one protocol. Every metric is a plugin
(``register_metrics``) that receives an :class:`~unlearnctl.contexts.evaluation.EvalContext` per model.
Everything the protocol consists of, and what sampling cost, goes into ``metrics.json``
(:mod:`unlearnctl.commands.eval_record`); see ``docs/eval.md`` for the file format.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import resolve_options
from ..contexts.evaluation import (
    DEFAULT_SAMPLES_PER_CLASS,
    EvalContext,
    EvalShared,
    SamplingProtocol,
    end_sample_requests,
    serve_sample_requests,
)
from ..diffusion import Sampler
from ..distributed import SINGLE, World, init_world
from ..errors import UsageError
from ..inputs import base_model_spec, parse_data_options, resolve_data_dir
from ..inputs import dataset_options as resolve_dataset_options
from ..judge.classifier import load_judge
from ..lifecycle import Lifecycle, RunInfo
from ..models.folder import DiffusionModel
from ..registry import get_registry
from ..results import jsonable, metric_deltas
from ..rundir import MANIFEST_FILE, METRICS_FILE, SAMPLES_DIR, atomic_write_text, check_new_file, record_files
from ..runtime import resolve_device, torch_threads
from .eval_record import EvalModel, metrics_payload, open_eval_model, write_eval_grids


def default_metrics(registry: Any) -> list[str]:
    """The metrics ``eval`` computes without ``--metrics``: those with ``Metric.default`` set, in
    registration order (built-ins first: forgetting, kept, fidelity, membership; then plugins')."""
    return [name for name, info in registry.components["metric"].items() if info.cls.default]


# --- eval ---------------------------------------------------------------------------------------------


@dataclass
class EvalRequest:
    """Everything ``unlearnctl eval`` was asked (see ``unlearnctl eval --help``)."""

    target: str
    against: str | None = None
    classes: str | None = None
    dataset: str | None = None
    #: ``--data-dir``: the folder of the dataset's files (None: the run's recorded one, else the default)
    data_dir: Path | None = None
    #: ``--data-option KEY=VALUE``: dataset options over the run's recorded ones
    data_options: Sequence[str] = ()
    metrics: Sequence[str] | None = None
    metric_sets: Sequence[str] = ()
    judge: Path | None = None
    #: samples per class; chosen so that `eval` of a ddpm-digits run (base and unlearned) takes well under
    #: 5 minutes on 2 CPU cores (see docs/eval.md for the measurement)
    num_samples: int = DEFAULT_SAMPLES_PER_CLASS
    sampler: Sampler = "ddim"
    steps: int = 50
    guidance: float = 2.0
    eta: float = 0.0
    seed: int = 0
    #: images per forward pass when sampling; with several processes, the unit of work each one takes
    batch_size: int = 256
    device: str = "auto"
    #: torch intra-op CPU threads while evaluating (None: torch's default, which follows OMP_NUM_THREADS)
    threads: int | None = None
    out: Path | None = None
    overwrite: bool = False
    grids: bool = True
    command: list[str] = field(default_factory=list)


@dataclass
class PreparedEval:
    request: EvalRequest
    registry: Any
    subject: EvalModel
    reference: EvalModel | None
    reference_source: str | None
    metrics: list[Any]
    shared: EvalShared
    out_dir: Path | None
    notes: list[str]


@dataclass
class EvalResult:
    """What ``evaluate`` returns: the ``metrics.json`` payload and the files written."""

    payload: dict[str, Any]
    metrics_path: Path | None
    grids: dict[str, Path]
    #: one-line notes for the user (the reference does not match the manifest...)
    notes: list[str]
    #: the processes that evaluated; only the main one has the payload and wrote the files
    world: World = SINGLE


@dataclass(frozen=True)
class EvalData:
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


def _split_metric_sets(pairs: Sequence[str], selected: Sequence[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        name, dot, option = key.strip().partition(".")
        if not sep or not dot or not option:
            raise UsageError(f"--set '{pair}': write METRIC.OPTION=VALUE, e.g. --set fidelity.kid_subset_size=100")
        if name not in selected:
            raise UsageError(f"--set '{pair}': metric '{name}' is not being computed (metrics: {', '.join(selected)})")
        out.setdefault(name, []).append(f"{option}={value}")
    return out


# --- preparing: each step resolves one part of the request, cheapest first -----------------------------


def check_request(req: EvalRequest) -> tuple[Path | None, torch.device]:
    """The checks that need nothing loaded: ``--data-dir`` (returned as an absolute folder, or None),
    ``--data-option`` pairs, ``-n``, ``--steps``; and the device to evaluate on."""
    given_data_dir = resolve_data_dir(req.data_dir)
    parse_data_options(list(req.data_options))
    if req.num_samples < 2:
        raise UsageError("--num-samples must be at least 2 (samples per class)")
    if req.steps < 1:
        raise UsageError("--steps must be at least 1")
    if req.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    return given_data_dir, resolve_device(req.device)


def select_metrics(req: EvalRequest, registry: Any) -> list[Any]:
    """The metrics to compute with their options (``--metrics``, ``--set METRIC.KEY=VALUE``); an unknown
    name or option fails here, before anything loads."""
    names = [m.strip() for m in (req.metrics or default_metrics(registry)) if m.strip()]
    if not names:
        raise UsageError("--metrics is empty: name at least one metric (see `unlearnctl list metrics`)")
    for name in names:
        registry.get("metric", name)  # UnknownComponentError with "did you mean"
    sets = _split_metric_sets(req.metric_sets, names)
    metrics = []
    for name in dict.fromkeys(names):
        cls = registry.get("metric", name).cls
        metrics.append(cls(resolve_options(cls, sets=sets.get(name, []))))
    return metrics


def output_folder(req: EvalRequest) -> Path | None:
    """Where ``metrics.json`` and the grids go: ``--out``, else the run folder, else nowhere. Refuses to
    replace a ``metrics.json`` without ``--overwrite``, before any work."""
    target = Path(req.target).expanduser()
    is_run = target.is_dir() and (target / MANIFEST_FILE).is_file()
    out_dir = req.out if req.out is not None else (target if is_run else None)
    if out_dir is None:
        return None
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out '{out_dir}' is a file, not a folder")
    check_new_file(out_dir / METRICS_FILE, req.overwrite, "--out")
    return out_dir


def reference_spec(req: EvalRequest, subject: EvalModel) -> tuple[str | None, str | None]:
    """The model to compare with and where that choice came from: ``--against``, else the base model a
    ``forget`` run records (a ``train`` run starts from scratch: ``--against`` only), else none."""
    if req.against:
        return req.against, "--against"
    manifest = subject.manifest
    if manifest is not None and manifest.kind == "forget":
        return base_model_spec(manifest), "manifest weights.model"
    return None, None


def check_reference(req: EvalRequest, subject: EvalModel, reference: EvalModel) -> list[str]:
    """Refuse a reference that makes other images than the subject; a note when the run's own base
    model is not the weights the run started from."""
    ref, model = reference.model, subject.model
    if (ref.conditional, ref.num_classes, ref.image_size, ref.channels) != (
        model.conditional,
        model.num_classes,
        model.image_size,
        model.channels,
    ):
        raise UsageError(
            f"the reference '{reference.spec}' does not produce the same kind of images as '{req.target}' "
            "(conditioning, classes, size or channels differ): pass a matching --against"
        )
    manifest = subject.manifest
    if manifest is not None and not req.against and manifest.weights.input_sha256 not in (None, reference.sha256):
        return [
            f"the reference '{reference.spec}' is not the model this run started from (its weights' sha256 differs "
            "from the manifest's input_sha256): pass the right one with --against"
        ]
    return []


def forgotten_classes(req: EvalRequest, subject: EvalModel) -> tuple[tuple[int, ...], list[str]]:
    """The forgotten classes: ``--classes`` (with a note when they differ from the run's), else the run's;
    a bare model needs ``--classes``."""
    manifest = subject.manifest
    recorded = manifest.forget if manifest is not None else None
    if req.classes is None:
        if recorded is None:
            raise UsageError(
                f"'{req.target}' is not a run folder, so eval cannot know what was forgotten: pass --classes 2,5"
            )
        return tuple(recorded.forget_classes), []
    classes = _parse_classes(req.classes, subject.model.num_classes or None)
    if recorded is not None and recorded.forget_classes and tuple(recorded.forget_classes) != classes:
        return classes, [
            f"--classes {req.classes} differs from the run's forgotten classes "
            f"{list(recorded.forget_classes)}; using --classes"
        ]
    return classes, []


def _load_judge(explicit: Path | None, *models: DiffusionModel | None) -> tuple[Any | None, str | None]:
    """The judge (one for both models) and where it came from: ``--judge``, else the first judge folder
    a model names, else none."""
    if explicit is not None:
        return load_judge(Path(explicit).expanduser()), str(explicit)
    for m in models:
        if m is not None and m.judge_path is not None and Path(m.judge_path).is_dir():
            return load_judge(Path(m.judge_path)), str(m.judge_path)
    return None, None


def eval_dataset(req: EvalRequest, subject: EvalModel, registry: Any, given_data_dir: Path | None) -> EvalData:
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
    return EvalData(name, options, data_dir)


def kept_classes(target: str, model: DiffusionModel, judge: Any | None, forget: tuple[int, ...]) -> tuple[int, ...]:
    """Every class but the forgotten ones: of the model, else of the judge, else up to the largest
    forgotten one."""
    label_count = model.num_classes or (judge.num_classes if judge is not None else 0)
    if not label_count and forget:
        label_count = max(forget) + 1
    if label_count and any(c >= label_count for c in forget):
        raise UsageError(f"forgotten classes {list(forget)} are not classes of '{target}' (0..{label_count - 1})")
    return tuple(c for c in range(label_count) if c not in forget)


def sampling_protocol(req: EvalRequest, model: DiffusionModel) -> SamplingProtocol:
    """How both models are sampled (no guidance for an unconditional model)."""
    return SamplingProtocol(
        sampler=req.sampler,
        steps=req.steps,
        eta=req.eta,
        guidance=req.guidance if model.conditional else 0.0,
        samples_per_class=req.num_samples,
        seed=req.seed,
        batch_size=req.batch_size,
    )


def prepare_eval(request: EvalRequest, registry: Any = None) -> PreparedEval:
    """Validate the request and load models, judge and metrics; writes nothing.

    The steps run cheapest first, so that a bad name or option fails before any model loads.
    """

    registry = registry or get_registry()
    req = request
    given_data_dir, device = check_request(req)
    # under a launcher: this process's place and device (cuda:LOCAL_RANK); one process: unchanged
    world, device = init_world(device)
    metrics = select_metrics(req, registry)
    out_dir = output_folder(req)

    subject = open_eval_model(req.target, registry)
    ref_spec, reference_source = reference_spec(req, subject)
    reference = None
    notes: list[str] = []
    if ref_spec is not None:
        reference = open_eval_model(ref_spec, registry)
        notes += check_reference(req, subject, reference)
    forget_classes, class_notes = forgotten_classes(req, subject)
    notes += class_notes

    judge, judge_source = _load_judge(req.judge, subject.model, reference.model if reference else None)
    data = eval_dataset(req, subject, registry, given_data_dir)
    shared = EvalShared(
        protocol=sampling_protocol(req, subject.model),
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
    return PreparedEval(req, registry, subject, reference, reference_source, metrics, shared, out_dir, notes)


# --- running ----------------------------------------------------------------------------------------------


def run_eval(prepared: PreparedEval) -> EvalResult:
    """Compute every metric for the model and its reference, then write metrics.json and the grids.

    Progress goes through the lifecycle hooks (a run of kind ``"eval"``): ``step_logged`` after each
    metric of each model (``values``: ``seconds``), ``run_finished`` with the :class:`EvalResult`.

    With several processes (``prepared.shared.world``) the main process does all of that; the others
    only compute their share of each draw of samples it makes (:func:`serve_sample_requests`) and return
    an empty result once it has written the files.
    """
    p = prepared
    start = time.perf_counter()
    shared = p.shared
    world = shared.world
    # informational: the images and the numbers do not depend on it (docs/scaling.md)
    shared.records["processes"] = world.size
    if shared.judge is not None:
        shared.judge.to(shared.device)
    contexts: dict[str, EvalContext] = {"model": EvalContext("model", p.subject.model, p.subject.spec, shared)}
    if p.reference is not None:
        contexts["reference"] = EvalContext("reference", p.reference.model, p.reference.spec, shared)
    if not world.is_main:
        serve_sample_requests(contexts)
        return EvalResult({}, None, {}, [], world=world)
    try:
        result = _evaluate_on_main(p, contexts, start)
    except Exception:
        end_sample_requests(shared)  # the other processes stop waiting; this one reports the error
        raise
    end_sample_requests(shared)
    return result


def _evaluate_on_main(p: PreparedEval, contexts: dict[str, EvalContext], start: float) -> EvalResult:
    shared = p.shared
    for metric in p.metrics:
        # check settings and build expensive pieces before any sampling (fail early); a no-op by default
        metric.prepare(contexts["model"])
    hook = Lifecycle.of(p.registry)
    run = _eval_run(p, len(p.metrics) * len(contexts))
    hook.run_started(run=run)
    results: dict[str, dict[str, Any]] = {}
    timings: dict[str, dict[str, float]] = {}
    step = 0
    for role, ctx in contexts.items():
        results[role] = {}
        timings[role] = {}
        for metric in p.metrics:
            t0 = time.perf_counter()
            results[role][metric.name] = jsonable(metric.compute(ctx))
            timings[role][metric.name] = round(time.perf_counter() - t0, 3)
            step += 1
            hook.step_logged(run=run, step=step, values={"seconds": timings[role][metric.name]})

    delta = metric_deltas(results.get("model", {}), results.get("reference", {})) if p.reference is not None else {}
    payload = metrics_payload(p, contexts, results, delta, time.perf_counter() - start)
    payload["metric_seconds"] = timings
    metrics_path = None
    grids: dict[str, Path] = {}
    if p.out_dir is not None:
        p.out_dir.mkdir(parents=True, exist_ok=True)
        if p.request.grids:
            grids = write_eval_grids(contexts, shared, p.out_dir / SAMPLES_DIR)
            payload["files"] = {k: str(v.relative_to(p.out_dir)) for k, v in grids.items()}
        payload["wall_time_s"] = round(time.perf_counter() - start, 3)
        metrics_path = p.out_dir / METRICS_FILE
        atomic_write_text(metrics_path, json.dumps(payload, indent=2, allow_nan=True) + "\n")
        if (p.out_dir / MANIFEST_FILE).is_file():  # a run folder: `unlearnctl verify` covers what eval added
            # paths relative to the run folder: out_dir itself may be relative to the working directory
            record_files(p.out_dir, [METRICS_FILE, *(g.relative_to(p.out_dir) for g in grids.values())])
    result = EvalResult(payload, metrics_path, grids, p.notes, world=shared.world)
    hook.run_finished(run=run, result=result)
    return result


def _eval_run(p: PreparedEval, total_steps: int) -> RunInfo:
    """The lifecycle hooks' ``run`` of an evaluation (``out_dir``: where metrics.json goes, or None)."""
    shared = p.shared
    config = {
        "target": p.subject.spec,
        "reference": p.reference.spec if p.reference is not None else None,
        "metrics": {m.name: m.options.model_dump(mode="json") for m in p.metrics},
        "protocol": shared.protocol.describe(),
        "device": shared.device.type,
        "forget_classes": list(shared.forget_classes),
        "kept_classes": list(shared.kept_classes),
    }
    return RunInfo(
        kind="eval",
        out_dir=p.out_dir,
        work_dir=p.out_dir,
        config=config,
        total_steps=total_steps,
        description=f"eval {p.subject.spec}",
        seed=p.request.seed,
    )


def evaluate(request: EvalRequest, registry: Any = None) -> EvalResult:
    """``unlearnctl eval``: validate and load everything, then evaluate and write the results."""
    if request.threads is not None and request.threads < 1:
        raise UsageError("--threads must be at least 1")

    with torch_threads(request.threads):
        return run_eval(prepare_eval(request, registry))
