"""``unlearnctl noise-floor``: how much ``eval``'s numbers move from sampling noise alone.

With a few hundred samples, the FID of a model's kept-class samples (``eval``'s ``fidelity`` metric) moves
by a few points from one seed to the next, and so do the judge's recognition rates. A study that claims
method A beats method B has to know that spread: the *noise floor*, the model's own seed-to-seed spread
under the exact ``eval`` protocol.

:func:`noise_floor` draws the model's evaluation samples ``draws`` times, with seeds ``seed .. seed+K-1``,
each draw exactly as ``eval --seed k`` draws them (the same preparation: :func:`~.eval.check_request`,
:func:`~.eval_record.open_eval_model`, :func:`~.study.study_shared`, :func:`~.eval.sampling_protocol`; the same
:class:`~unlearnctl.contexts.evaluation.EvalContext` and the same registered metrics), so that draw ``k``'s
``fid_to_real`` *is* ``eval --seed k``'s ``results.model.fidelity.fid``. Between every pair of draws it computes
the FID of one draw's kept samples against the other's with the same torch-fidelity call the ``fidelity``
metric made (same feature extractor, same settings; only the inputs differ). See docs/noise-floor.md.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..contexts.evaluation import EvalContext
from ..contexts.study import DEFAULT_SAMPLES_PER_CLASS, EvalShared
from ..diffusion import Sampler
from ..distributed import SINGLE
from ..errors import UsageError
from ..fidelity import calculate
from ..registry import get_registry
from ..results import jsonable
from ..rundir import atomic_write_text, check_new_file
from ..runtime import torch_threads
from .eval import EvalRequest, check_request, sampling_protocol, select_metrics
from .eval_record import TORCH_FIDELITY_CALL, EvalModel, describe_model, open_eval_model, protocol_record
from .study import kept_classes, study_shared

SCHEMA_VERSION = 1
#: the metrics each draw computes: the judge's recognition rates (when there is a judge) and FID to real
JUDGE_METRICS = ("forgetting", "kept")
FIDELITY = "fidelity"

#: ``progress(done, total, label)``: called before each step (a draw, then the pairs) and once at the end
ProgressCallback = Callable[[int, int, str], None]


@dataclass
class NoiseFloorRequest:
    """Everything ``unlearnctl noise-floor`` was asked (see ``unlearnctl noise-floor --help``).

    The sampling options have ``eval``'s names and defaults (:class:`~.eval.EvalRequest`).
    """

    #: the run folder or model, resolved as ``eval``'s target
    target: str = ""
    #: the classes treated as forgotten (left out of the kept set), as ``eval --classes``; None: the run's,
    #: or none for a model that is not a forget run (every class kept)
    classes: str | None = None
    dataset: str | None = None
    data_dir: Path | None = None
    data_options: Sequence[str] = ()
    judge: Path | None = None
    num_samples: int = DEFAULT_SAMPLES_PER_CLASS
    sampler: Sampler = EvalRequest.sampler
    steps: int = EvalRequest.steps
    guidance: float = EvalRequest.guidance
    eta: float = EvalRequest.eta
    #: the first draw's seed; draw k uses seed + k
    seed: int = EvalRequest.seed
    batch_size: int = EvalRequest.batch_size
    channels_last: bool = False
    compile: bool = False
    device: str = EvalRequest.device
    threads: int | None = None
    #: how many draws (at least 2: one draw has no spread)
    draws: int = 5
    #: the JSON file to write (refused when it exists, unless ``overwrite``)
    out: Path | None = None
    overwrite: bool = False
    command: list[str] = field(default_factory=list)

    def eval_request(self, seed: int | None = None) -> EvalRequest:
        """The ``eval`` request whose model samples draw ``seed`` (default: the first draw's) are: the same
        model, classes, data, judge and sampling protocol, only the draws' own metrics, writing nothing."""
        return EvalRequest(
            target=self.target,
            classes=self.classes,
            dataset=self.dataset,
            data_dir=self.data_dir,
            data_options=list(self.data_options),
            metrics=[*JUDGE_METRICS, FIDELITY],
            judge=self.judge,
            num_samples=self.num_samples,
            sampler=self.sampler,
            steps=self.steps,
            guidance=self.guidance,
            eta=self.eta,
            seed=self.seed if seed is None else seed,
            batch_size=self.batch_size,
            channels_last=self.channels_last,
            compile=self.compile,
            device=self.device,
            threads=self.threads,
            grids=False,
        )


@dataclass
class PreparedNoiseFloor:
    request: NoiseFloorRequest
    registry: Any
    subject: EvalModel
    #: what every draw shares (classes, judge, data); each draw gets a copy with its own seed and cache
    shared: EvalShared
    #: the metrics each draw computes (``fidelity``, and ``forgetting``/``kept`` when there is a judge)
    metrics: list[Any]
    out: Path
    notes: list[str]


@dataclass
class NoiseFloorResult:
    """What :func:`noise_floor` returns: the JSON payload written to ``path``, and notes for the user."""

    payload: dict[str, Any]
    path: Path
    notes: list[str]


# --- preparing -----------------------------------------------------------------------------------------


def prepare_noise_floor(request: NoiseFloorRequest, registry: Any = None) -> PreparedNoiseFloor:
    """Validate the request and load the model, judge and data as ``eval`` does; writes nothing.

    The checks that need nothing loaded come first (``--draws``, ``--out``, then ``eval``'s own), so a bad
    option fails before any model loads.
    """
    registry = registry or get_registry()
    req = request
    if not req.target:
        raise UsageError("missing argument 'MODEL': name the run folder or model whose noise floor to measure")
    if req.draws < 2:
        raise UsageError(f"--draws {req.draws}: the spread needs at least 2 draws (default 5)")
    if req.out is None:
        raise UsageError("missing option --out FILE.json: where to write the noise floor")
    check_new_file(req.out, req.overwrite, "--out")
    ev = req.eval_request()
    given_data_dir, device = check_request(ev)
    select_metrics(ev, registry)  # every name is known before anything loads

    subject = open_eval_model(req.target, registry)
    no_classes = req.classes is None and (subject.manifest is None or subject.manifest.forget is None)
    # A model that forgot nothing, without --classes: every class kept. eval requires --classes there;
    # study_shared is given a placeholder class and its forgotten/kept sets are then replaced below.
    study_req = dataclasses.replace(ev, classes="0") if no_classes else ev
    shared, notes = study_shared(
        study_req,
        registry,
        subject,
        [],
        sampling_protocol(ev, subject.model),
        device,
        SINGLE,
        given_data_dir,
        command="noise-floor",
    )
    if no_classes:
        shared = dataclasses.replace(
            shared, forget_classes=(), kept_classes=kept_classes(req.target, subject.model, shared.judge, ())
        )
    if not shared.kept_classes:
        raise UsageError(
            f"'{req.target}' has no kept classes to measure FID on (forgotten: {list(shared.forget_classes)}): "
            "pass fewer --classes, or --judge DIR for an unconditional model"
        )
    names = [FIDELITY] if shared.judge is None else [*JUDGE_METRICS, FIDELITY]
    metrics = select_metrics(dataclasses.replace(ev, metrics=names), registry)
    return PreparedNoiseFloor(req, registry, subject, shared, metrics, Path(req.out), notes)


# --- running ---------------------------------------------------------------------------------------------


def summary(values: Sequence[float]) -> dict[str, Any]:
    """``values`` with their mean, sample standard deviation (ddof=1), min, max and range (max - min)."""
    vals = [float(v) for v in values]
    if any(not math.isfinite(v) for v in vals):
        nan = float("nan")
        return {"values": vals, "mean": nan, "std": nan, "min": nan, "max": nan, "range": nan}
    return {
        "values": vals,
        "mean": statistics.fmean(vals),
        "std": statistics.stdev(vals) if len(vals) > 1 else float("nan"),
        "min": min(vals),
        "max": max(vals),
        "range": max(vals) - min(vals),
    }


def draw_shared(shared: EvalShared, seed: int) -> EvalShared:
    """One draw's :class:`EvalShared`: ``shared`` with the protocol's seed set to ``seed`` and its own records
    and cache (a cache entry may be per draw, e.g. the judged unconditional samples); the loaded data sets
    are shared."""
    return dataclasses.replace(
        shared, protocol=dataclasses.replace(shared.protocol, seed=seed), records={}, cache={}, drawing=False
    )


@dataclass
class Draw:
    """One draw: its seed, the metrics' values, the torch-fidelity call of ``fidelity`` and the context."""

    seed: int
    results: dict[str, Any]
    call: dict[str, Any]
    context: EvalContext
    #: the draw's shared state (its protocol, records)
    shared: EvalShared


def run_draw(p: PreparedNoiseFloor, seed: int) -> Draw:
    """The model's evaluation samples under seed ``seed`` and the metrics on them, as ``eval --seed seed``
    computes them for its model."""
    shared = draw_shared(p.shared, seed)
    ctx = EvalContext("model", p.subject.model, p.subject.spec, shared)
    for metric in p.metrics:
        metric.prepare(ctx)
    results = {metric.name: jsonable(metric.compute(ctx)) for metric in p.metrics}
    fid = results[FIDELITY]
    if "skipped" in fid:
        raise UsageError(f"draw with seed {seed}: metric 'fidelity' skipped ({fid['skipped']}): raise --num-samples")
    call = ctx.cache.get(TORCH_FIDELITY_CALL.format(metric=FIDELITY, role=ctx.role))
    if call is None:
        raise RuntimeError("metric 'fidelity' did not record its torch-fidelity call")
    return Draw(seed, results, call, ctx, shared)


def fid_between(a: Draw, b: Draw) -> float:
    """FID between draw ``a``'s kept samples and draw ``b``'s: the torch-fidelity call ``fidelity`` made for
    ``a`` (same extractor, batch size, device), with ``b``'s generated images in place of the real ones and
    only FID computed."""
    kwargs = {k: v for k, v in a.call.items() if k != "judge_folder"}  # judge_folder: a record, no argument
    kwargs.update(input2=b.call["input1"], fid=True, kid=False, prc=False)
    return calculate(kwargs)["fid"]


def rate_summary(draws: Sequence[Draw], metric: str, classes: Sequence[int]) -> dict[str, Any] | None:
    """The judge's recognition rates of ``metric`` (``kept``, ``forgetting``) over the draws, with their
    spread: the headline rate and each class's; None when the metric was not computed or skipped."""
    results = [d.results.get(metric) for d in draws]
    if not classes or any(r is None or "skipped" in r for r in results):
        return None
    rows: list[dict[str, Any]] = [r for r in results if r is not None]
    conditional = rows[0]["mode"] == "conditional"
    # the headline number: kept's mean rate (unconditional: share), forgetting's recognition rate
    key = ("mean_rate" if conditional else "share") if metric == "kept" else "recognition_rate"

    def per_class(row: dict[str, Any], c: int) -> float:
        if conditional:
            value = row["per_class"][str(c)]
            return float(value["recognition_rate"] if isinstance(value, dict) else value)
        return float(row["per_class_share"][str(c)])

    out = {
        "measure": key if conditional else f"{key} (unconditional: share of samples the judge assigns to the classes)",
        **summary([row[key] for row in rows]),
        "per_class": {str(c): summary([per_class(row, c) for row in rows]) for c in classes},
    }
    if metric == "kept" and conditional:
        out["min_rate"] = summary([row["min_rate"] for row in rows])
    return out


def run_noise_floor(p: PreparedNoiseFloor, progress: ProgressCallback | None = None) -> NoiseFloorResult:
    """Draw the samples ``draws`` times, compute every number, write the JSON file."""
    start = time.perf_counter()
    req = p.request
    seeds = [req.seed + k for k in range(req.draws)]
    pairs = list(itertools.combinations(range(req.draws), 2))
    total = len(seeds) + len(pairs)

    def report(done: int, label: str) -> None:
        if progress is not None:
            progress(done, total, label)

    if p.shared.judge is not None:
        p.shared.judge.to(p.shared.device)
    draws: list[Draw] = []
    for k, seed in enumerate(seeds):
        report(k, f"draw {k + 1}/{len(seeds)} (seed {seed})")
        draws.append(run_draw(p, seed))
    between: list[float] = []
    for i, (a, b) in enumerate(pairs):
        report(len(seeds) + i, f"FID between draws {a} and {b}")
        between.append(fid_between(draws[a], draws[b]))
    report(total, "done")

    shared = p.shared
    first = draws[0]
    fid_values = [float(d.results[FIDELITY]["fid"]) for d in draws]
    payload: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "unlearnctl_version": _version(),
        "command": list(req.command),
        "model": describe_model(p.subject),
        # the first draw's protocol (eval's metrics.json "protocol"); draw k uses seed + k
        "protocol": {
            **protocol_record(first.shared, p.metrics),
            "seed_rule": "draw k uses --seed + k",
        },
        "feature_extractor": first.context.records.get("feature_extractor"),
        "classes": {"forgotten": list(shared.forget_classes), "kept": list(shared.kept_classes)},
        "draws": req.draws,
        "seeds": seeds,
        "samples": {
            "per_class": req.num_samples,
            "generated_per_draw": [int(d.results[FIDELITY]["n_generated"]) for d in draws],
            "real": int(first.results[FIDELITY]["n_real"]),
        },
        "fid_to_real": summary(fid_values),
        "fid_between_draws": {**summary(between), "pairs": [list(pair) for pair in pairs]},
        "kept_rate": rate_summary(draws, "kept", shared.kept_classes),
        "forgotten_rate": rate_summary(draws, "forgetting", shared.forget_classes),
        "per_draw": [{"seed": d.seed, "results": d.results, "sampling": d.context.cost.as_dict()} for d in draws],
        "notes": list(p.notes),
    }
    payload["wall_time_s"] = round(time.perf_counter() - start, 3)
    p.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(p.out, json.dumps(payload, indent=2, allow_nan=True) + "\n")
    return NoiseFloorResult(payload, p.out, p.notes)


def _version() -> str:
    from .. import __version__

    return __version__


def noise_floor(
    request: NoiseFloorRequest, registry: Any = None, progress: ProgressCallback | None = None
) -> NoiseFloorResult:
    """``unlearnctl noise-floor``: validate and load everything, then draw, measure and write the JSON file.

    One process: under a launcher every process would draw and write the same file, so it is refused."""
    from ..distributed import launched

    if launched():
        raise UsageError("noise-floor runs in one process: run it without torchrun / accelerate launch")
    prepared = prepare_noise_floor(request, registry)
    with torch_threads(prepared.request.threads):
        return run_noise_floor(prepared, progress)


__all__ = [
    "NoiseFloorRequest",
    "NoiseFloorResult",
    "PreparedNoiseFloor",
    "noise_floor",
    "prepare_noise_floor",
    "run_noise_floor",
    "summary",
]
