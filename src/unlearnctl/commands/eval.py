"""``unlearnctl eval``: did the model forget, and what did it cost?

:func:`evaluate` evaluates a model (usually a run's unlearned model) and its *reference* (the base model
the run started from, or ``--against``) side by side under one protocol. Every metric is a plugin
(``register_metrics``) that receives an :class:`~unlearnctl.contexts.evaluation.EvalContext` per model.
Everything the protocol consists of, and what sampling cost, goes into ``metrics.json``
(:mod:`unlearnctl.commands.eval_record`); see ``docs/eval.md`` for the file format. Preparing the models,
the classes, the data set and the judge is shared with ``audit`` (:mod:`unlearnctl.commands.study`).

``--retrain`` names the *gold standard*, a model retrained from scratch without the forget set: it is
sampled under the same protocol (its context is ``EvalContext.retrain`` of both the model's and the
reference's contexts), and the metrics that declare ``requires_retrain`` (built-in: ``retrain-distance``)
measure how far each model lands from it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import resolve_options
from ..contexts.evaluation import EvalContext, end_sample_requests, serve_sample_requests
from ..contexts.sample_cache import SampleCache
from ..contexts.study import DEFAULT_SAMPLES_PER_CLASS, EvalShared, SamplingProtocol
from ..diffusion import Sampler
from ..distributed import SINGLE, World, init_world
from ..errors import UsageError
from ..inputs import parse_data_options
from ..lifecycle import Lifecycle, RunInfo
from ..models.folder import DiffusionModel
from ..registry import get_registry
from ..results import jsonable, metric_deltas
from ..rundir import METRICS_FILE, SAMPLES_DIR, check_new_file
from ..runtime import torch_threads
from .configs import EVAL_SPEC, ResolvedConfig, apply_config, explicit_nulls
from .eval_record import EvalModel, metrics_payload, open_eval_model, write_eval_grids, write_fidelity_inputs
from .study import (
    check_reference,
    check_study_request,
    reference_spec,
    results_folder,
    split_component_sets,
    study_run,
    study_shared,
    write_results,
)


def default_metrics(registry: Any, retrain: bool = False) -> list[str]:
    """The metrics ``eval`` computes without ``--metrics``: those with ``Metric.default`` set, in
    registration order (built-ins first: forgetting, kept, fidelity, membership; then plugins'); with
    ``--retrain`` (``retrain``), also those that need the retrain model (:func:`requires_retrain`)."""
    return [
        name
        for name, info in registry.components["metric"].items()
        if info.cls.default or (retrain and requires_retrain(info.cls))
    ]


def requires_retrain(metric_cls: type) -> bool:
    """Whether a metric compares with the retrained model of ``--retrain`` (its class sets
    ``requires_retrain = True``, as the built-in ``retrain-distance`` does): ``eval --retrain`` adds it to
    the default metrics, and naming it without ``--retrain`` is refused."""
    return bool(getattr(metric_cls, "requires_retrain", False))


# --- eval ---------------------------------------------------------------------------------------------


@dataclass
class EvalRequest:
    """Everything ``unlearnctl eval`` was asked (see ``unlearnctl eval --help``)."""

    #: the run folder or model to evaluate (required: here, or in the config file's [eval] table)
    target: str = ""
    against: str | None = None
    #: ``--retrain``: the gold standard, a model retrained without the forget set (a run folder or a model
    #: spec, resolved like ``against``); adds the metrics that need it (``retrain-distance``)
    retrain: str | None = None
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
    #: the UNet's opt-in speed-ups while sampling (docs/performance.md)
    channels_last: bool = False
    compile: bool = False
    device: str = "auto"
    #: torch intra-op CPU threads while evaluating (None: torch's default, which follows OMP_NUM_THREADS)
    threads: int | None = None
    out: Path | None = None
    overwrite: bool = False
    grids: bool = True
    #: ``--save-samples``: keep the images FID/KID were computed on, and how torch-fidelity re-scores them
    save_samples: bool = False
    #: ``--sample-cache DIR``: draws of samples kept between commands and read back when every input matches
    #: (a study's cells share their base and retrain models' draws; docs/eval.md)
    sample_cache: Path | None = None
    command: list[str] = field(default_factory=list)
    #: ``--config FILE``: an [eval] table (these options) and [metrics.NAME] tables (each metric's options)
    config: Path | None = None
    #: the fields set explicitly (the flags given on the command line), which the config file does not
    #: change; None: the fields whose value differs from the default
    given: list[str] | None = None


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
    #: the processes' device (resolved from ``--device``)
    device: torch.device | None = None
    #: ``--retrain``: the model retrained without the forget set, or None
    retrain: EvalModel | None = None


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


# --- preparing: each step resolves one part of the request, cheapest first -----------------------------


def check_request(req: EvalRequest) -> tuple[Path | None, torch.device]:
    """The checks that need nothing loaded: the model named, ``-n``, ``--threads``, then
    :func:`check_study_request`."""
    if not req.target:
        raise UsageError("missing argument 'RUN_OR_MODEL': name the run folder or model to evaluate")
    if req.threads is not None and req.threads < 1:
        raise UsageError("--threads must be at least 1")
    if req.num_samples < 2:
        raise UsageError("--num-samples must be at least 2 (samples per class)")
    return check_study_request(req)


def select_metrics(req: EvalRequest, registry: Any, options: dict[str, Any] | None = None) -> list[Any]:
    """The metrics to compute with their options: ``--metrics``; each metric's defaults < its table in the
    config file (``options``: ``{metric: {key: value}}``) < ``--set METRIC.KEY=VALUE``. An unknown name or
    option fails here, before anything loads; a table for a metric not computed is not used.

    With ``--retrain`` and no ``--metrics`` (nor ``metrics`` in the config file), the default metrics
    include those that need the retrain model (``retrain-distance``); an explicit list is taken as given.
    A metric that needs the retrain model, named without ``--retrain``, is refused."""
    chosen = req.metrics or default_metrics(registry, retrain=bool(req.retrain))
    names = [m.strip() for m in chosen if m.strip()]
    if not names:
        raise UsageError("--metrics is empty: name at least one metric (see `unlearnctl list metrics`)")
    for name in names:
        cls = registry.get("metric", name).cls  # UnknownComponentError with "did you mean"
        if not req.retrain and requires_retrain(cls):
            raise UsageError(
                f"metric '{name}' compares with a model retrained without the forget set: pass --retrain RUN_OR_MODEL"
            )
    tables = dict(options or {})
    for name, table in tables.items():
        registry.get("metric", name)
        if not isinstance(table, dict):
            raise UsageError(f"config file '{req.config}': [metrics.{name}] must be a table of option = value")
    sets = split_component_sets(req.metric_sets, names)
    metrics = []
    for name in dict.fromkeys(names):
        cls = registry.get("metric", name).cls
        metrics.append(cls(resolve_options(cls, config=tables.get(name), sets=sets.get(name, []))))
    return metrics


def output_folder(req: EvalRequest) -> Path | None:
    """Where ``metrics.json`` and the grids go (:func:`results_folder`). Refuses to replace a
    ``metrics.json`` without ``--overwrite``, before any work."""
    out_dir = results_folder(req.target, req.out)
    if out_dir is not None:
        check_new_file(out_dir / METRICS_FILE, req.overwrite, "--out")
    return out_dir


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
        channels_last=req.channels_last,
        compile=req.compile,
    )


def prepare_eval(request: EvalRequest, registry: Any = None) -> PreparedEval:
    """Validate the request and load models, judge and metrics; writes nothing.

    The steps run cheapest first, so that a bad name or option fails before any model loads.
    """

    registry = registry or get_registry()
    applied = apply_config(request, EVAL_SPEC)  # the config file, under the flags given (docs/config.md)
    req = applied.request
    given_data_dir, device = check_request(req)
    # under a launcher: this process's place and device (cuda:LOCAL_RANK); one process: unchanged
    world, device = init_world(device)
    metrics = select_metrics(req, registry, applied.options)
    out_dir = output_folder(req)

    subject = open_eval_model(req.target, registry)
    ref_spec, reference_source = reference_spec(req.against, subject)
    reference = None
    notes: list[str] = list(applied.notes)
    if ref_spec is not None:
        reference = open_eval_model(ref_spec, registry)
        notes += check_reference(req.target, subject, reference, explicit=bool(req.against))
    retrain = None
    if req.retrain:
        retrain = open_eval_model(req.retrain, registry)
        check_reference(req.target, subject, retrain, option="--retrain", explicit=True, what="the retrain model")
    others = [m for m in (reference, retrain) if m is not None]
    shared, class_notes = study_shared(
        req,
        registry,
        subject,
        others,
        sampling_protocol(req, subject.model),
        device,
        world,
        given_data_dir,
        command="eval",
    )
    notes += class_notes
    if req.sample_cache is not None:
        shared.sample_cache = sample_cache(Path(req.sample_cache))
    if retrain is not None:
        notes += retrain_notes(retrain, shared.forget_classes)
    return PreparedEval(
        req, registry, subject, reference, reference_source, metrics, shared, out_dir, notes, device, retrain
    )


def sample_cache(folder: Path) -> SampleCache:
    """``--sample-cache``: refuses a path that is a file (a folder that does not exist yet is created on the
    first draw stored)."""
    folder = folder.expanduser()
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--sample-cache '{folder}' is a file: name a folder (it is created when missing)")
    return SampleCache(folder)


def retrain_notes(retrain: EvalModel, forget_classes: Sequence[int]) -> list[str]:
    """A note when the retrain model is a run whose manifest records other forgotten classes than those
    evaluated (it was retrained without another forget set; a plain model folder records none)."""
    manifest = retrain.manifest
    recorded = manifest.forget if manifest is not None else None
    if recorded is None or not recorded.forget_classes:
        return []
    if sorted(recorded.forget_classes) == sorted(forget_classes):
        return []
    return [
        f"the retrain model '{retrain.spec}' forgot classes {sorted(recorded.forget_classes)}, not the evaluated "
        f"{sorted(forget_classes)}: it is not the gold standard of this run (check --retrain)"
    ]


def eval_config(p: PreparedEval) -> ResolvedConfig:
    """What ``eval --print-config`` prints: the sampling protocol, the device (``auto`` as the device
    chosen), the thread count (torch's when not given), the metrics computed and every option of each.
    What ``eval`` takes from the run when not given (``against``, ``classes``, ``dataset``, ``data_dir``,
    ``data_options``, ``judge``) stays as given: naming it changes what eval does (``--classes`` forgets
    a class whole instead of re-running the run's selectors)."""
    req = p.request
    device = p.device.type if p.device is not None else req.device
    options = {
        "target": req.target,
        "against": req.against,
        "retrain": req.retrain,
        "classes": req.classes,
        "dataset": req.dataset,
        "data_dir": str(Path(req.data_dir).expanduser().resolve()) if req.data_dir is not None else None,
        "metrics": [m.name for m in p.metrics],
        "judge": str(req.judge) if req.judge is not None else None,
        "num_samples": req.num_samples,
        "sampler": req.sampler,
        "steps": req.steps,
        "guidance": req.guidance,
        "eta": req.eta,
        "seed": req.seed,
        "batch_size": req.batch_size,
        "channels_last": req.channels_last,
        "compile": req.compile,
        "device": req.device if req.device != "auto" else device,
        "threads": req.threads if req.threads is not None else torch.get_num_threads(),
        "out": str(req.out) if req.out is not None else None,
        "overwrite": req.overwrite,
        "sample_cache": str(req.sample_cache) if req.sample_cache is not None else None,
        "data_options": parse_data_options(list(req.data_options)),
    }
    metrics = {m.name: m.options.model_dump(mode="json", by_alias=True) for m in p.metrics}
    nulls = [n for m in p.metrics for n in explicit_nulls(f"metrics.{m.name}", metrics[m.name], type(m))]
    return ResolvedConfig("eval", options, metrics, nulls)


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
    # one retrain context for both roles: its samples are drawn once, and both compare with them
    retrain = EvalContext("retrain", p.retrain.model, p.retrain.spec, shared) if p.retrain is not None else None
    contexts: dict[str, EvalContext] = {
        "model": EvalContext("model", p.subject.model, p.subject.spec, shared, retrain=retrain)
    }
    if p.reference is not None:
        contexts["reference"] = EvalContext("reference", p.reference.model, p.reference.spec, shared, retrain=retrain)
    if not world.is_main:
        serve_sample_requests({**contexts, **({"retrain": retrain} if retrain is not None else {})})
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
        saved: list[Path] = []
        if p.request.save_samples:
            payload["saved_samples"], saved = save_fidelity_inputs(p, contexts)
        payload["wall_time_s"] = round(time.perf_counter() - start, 3)
        metrics_path = write_results(p.out_dir, METRICS_FILE, payload, [*grids.values(), *saved])
    result = EvalResult(payload, metrics_path, grids, p.notes, world=shared.world)
    hook.run_finished(run=run, result=result)
    return result


def save_fidelity_inputs(p: PreparedEval, contexts: dict[str, EvalContext]) -> tuple[dict[str, Any], list[Path]]:
    """``--save-samples``: :func:`write_fidelity_inputs` into ``samples/``, after removing the folders a
    previous ``eval`` saved there (metrics.json is being replaced: ``--overwrite``)."""
    import shutil

    assert p.out_dir is not None
    folder = p.out_dir / SAMPLES_DIR
    for metric in p.metrics:
        old = folder / f"eval-{metric.name}"
        if old.is_dir():
            shutil.rmtree(old)
    return write_fidelity_inputs(contexts, p.metrics, p.out_dir, folder)


def _eval_run(p: PreparedEval, total_steps: int) -> RunInfo:
    """The lifecycle hooks' ``run`` of an evaluation (``out_dir``: where metrics.json goes, or None)."""
    return study_run(
        "eval",
        p.subject.spec,
        p.shared,
        p.out_dir,
        total_steps,
        p.request.seed,
        reference=p.reference.spec if p.reference is not None else None,
        retrain=p.retrain.spec if p.retrain is not None else None,
        metrics={m.name: m.options.model_dump(mode="json") for m in p.metrics},
    )


def evaluate(request: EvalRequest, registry: Any = None) -> EvalResult:
    """``unlearnctl eval``: validate and load everything, then evaluate and write the results."""
    prepared = prepare_eval(request, registry)
    with torch_threads(prepared.request.threads):
        return run_eval(prepared)
