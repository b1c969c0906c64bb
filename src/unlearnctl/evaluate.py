"""``unlearnctl eval`` and ``unlearnctl compare``: did the model forget, and what did it cost?

:func:`evaluate` evaluates a model (usually a run's unlearned model) and its *reference* (the base
model the run started from, or ``--against``) side by side, under one protocol: the same sampler,
steps, guidance, samples per class, seeds, judge and reference images for both. Every metric is a
plugin (``register_metrics``) that receives an :class:`EvalContext` per model; the context generates
the evaluation samples once per model (all needed classes in one batched ``diffusion.sample`` call,
conditional and unconditional passes in one forward) and every metric reads them from its cache.

:func:`compare` reads the ``manifest.json`` and ``metrics.json`` of several runs into one table
(and :func:`trade_off_plot` draws forgetting against FID).

Everything the protocol consists of, and what sampling cost, goes into ``metrics.json``; see
``docs/eval.md`` for the file format.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import torch

from .data import ImageSet
from .diffusion import Sampler, sample
from .errors import UsageError
from .manifest import MANIFEST_FILE, Manifest, read_manifest
from .models import DiffusionModel, state_sha256

METRICS_FILE = "metrics.json"
METRICS_SCHEMA_VERSION = 1
SAMPLES_DIR = "samples"
#: default metrics, in table order
DEFAULT_METRICS: tuple[str, ...] = ("forgetting", "kept", "fidelity", "membership")
#: samples per class; chosen so that `eval` of a ddpm-digits run (base and unlearned) takes well under
#: 5 minutes on 2 CPU cores (see docs/eval.md for the measurement)
DEFAULT_SAMPLES_PER_CLASS = 50
#: images per class shown in the before/after grids
GRID_PER_CLASS = 8

Role = Literal["model", "reference"]
Progress = Callable[[str], None]


# --- the protocol ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SamplingProtocol:
    """How evaluation samples are drawn: identical for the model and its reference."""

    sampler: Sampler = "ddim"
    steps: int = 50
    eta: float = 0.0
    guidance: float = 2.0
    clip_sample: bool = False
    samples_per_class: int = DEFAULT_SAMPLES_PER_CLASS
    seed: int = 0
    batch_size: int = 256

    def describe(self) -> dict[str, Any]:
        return {
            "sampler": self.sampler,
            "steps": self.steps,
            "eta": self.eta,
            "guidance": self.guidance,
            "guidance_rule": "eps = (1 + w) eps_c - w eps_null",
            "clip_sample": self.clip_sample,
            "samples_per_class": self.samples_per_class,
            "seed": self.seed,
            "batch_size": self.batch_size,
        }


def stream_generator(seed: int, stream: str) -> torch.Generator:
    """A CPU generator for one random stream of the evaluation (the same for model and reference)."""
    from .runner import stream_seed

    return torch.Generator().manual_seed(stream_seed(seed, f"eval-{stream}"))


@dataclass
class SamplingCost:
    """What generating the evaluation samples of one model cost (measured, not estimated)."""

    seconds: float = 0.0
    images: int = 0
    #: calls of the UNet's forward
    unet_forward_calls: int = 0
    #: images through the UNet summed over calls (a guided step counts each image twice)
    unet_image_evaluations: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 3),
            "images": self.images,
            "unet_forward_calls": self.unet_forward_calls,
            "unet_image_evaluations": self.unet_image_evaluations,
        }


@dataclass
class _Shared:
    """What the model's and the reference's contexts share: one protocol, one judge, one data set."""

    protocol: SamplingProtocol
    device: torch.device
    forget_classes: tuple[int, ...]
    kept_classes: tuple[int, ...]
    judge: Any | None
    judge_source: str | None
    dataset_name: str | None
    dataset_options: dict[str, Any]
    #: ids of the forget set in the training split (None: unknown); see ``resolve_forget_ids``
    forget_ids: frozenset[str] | None
    registry: Any
    data_dir: Path | None = None
    #: data warnings emitted while loading the evaluation data (one line each, in order, no repeats)
    data_warnings: list[str] = field(default_factory=list)
    #: protocol entries recorded by metrics (``EvalContext.record``)
    records: dict[str, Any] = field(default_factory=dict)
    data: dict[str, ImageSet] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)
    #: how to find the forget ids when first asked: the run's recorded selectors (re-run on the
    #: dataset, as ``replay`` does), else every training image of the forgotten classes
    forget_selectors: list[Any] | None = None
    forget_split: str = "train"
    _forget_ids_resolved: bool = False

    def resolve_forget_ids(self) -> frozenset[str] | None:
        if self.forget_ids is None and not self._forget_ids_resolved and self.dataset_name is not None:
            data = self.dataset(self.forget_split)
            if self.forget_selectors is not None:
                ids: set[str] = set()
                for rec in self.forget_selectors:
                    ids |= set(self.registry.create("selector", rec.name, rec.options).select(data))
                self.forget_ids = frozenset(ids)
            elif self.forget_classes:
                wanted = set(self.forget_classes)
                self.forget_ids = frozenset(i for i, lbl in zip(data.ids, data.labels, strict=True) if lbl in wanted)
        self._forget_ids_resolved = True
        return self.forget_ids

    def dataset(self, split: str) -> ImageSet:
        """The evaluation data set (the run's dataset, or the model's default), loaded once per split."""
        from .loading import load_dataset_warned

        if split not in self.data:
            if not self.dataset_name:
                raise UsageError("no dataset to compare with: pass --dataset NAME (see `unlearnctl list datasets`)")
            self.data[split], warnings = load_dataset_warned(
                self.dataset_name,
                split,  # type: ignore[arg-type]
                self.data_dir,
                self.dataset_options,
                self.registry,
            )
            self.data_warnings += [w for w in warnings if w not in self.data_warnings]
        return self.data[split]


class EvalContext:
    """What a metric's ``compute(ctx)`` works with, for one model (the evaluated one or its reference).

    - ``ctx.role``: ``"model"`` or ``"reference"``; ``ctx.model``: the :class:`DiffusionModel`.
    - ``ctx.samples(c)``: the evaluation samples conditioned on class ``c`` (``N x C x H x W`` in
      [-1, 1]; ``c=None``: unconditional samples), generated once per model and cached.
    - ``ctx.judge``: the judge classifier (``forward`` = logits, ``features`` = penultimate), or None.
    - ``ctx.forget_classes`` / ``ctx.kept_classes``; ``ctx.forget_ids`` (training-split ids of the
      forget set, when known).
    - ``ctx.real(split, classes)``: real images of those classes from the evaluation data set.
    - ``ctx.generator(stream)``: a seeded CPU generator, identical for the model and its reference.
    - ``ctx.record(key, value)``: add a protocol entry to ``metrics.json`` (``protocol.<key>``).
    - ``ctx.cache``: a dict shared by both contexts for expensive set-up (a feature extractor...).
    """

    def __init__(self, role: Role, model: DiffusionModel, spec: str, shared: _Shared) -> None:
        self.role, self.model, self.spec, self._shared = role, model, spec, shared
        self._samples: dict[int | None, torch.Tensor] = {}
        #: classes generated together in the first batched call (``evaluate`` sets them from the metrics'
        #: ``needs_samples``; None: the forgotten and kept classes)
        self.planned_classes: tuple[int, ...] | None = None
        self.cost = SamplingCost()

    @classmethod
    def create(
        cls,
        model: DiffusionModel,
        *,
        forget_classes: Sequence[int] = (),
        kept_classes: Sequence[int] | None = None,
        judge: Any | None = None,
        protocol: SamplingProtocol | None = None,
        dataset: str | None = None,
        data: dict[str, ImageSet] | None = None,
        forget_ids: Iterable[str] | None = None,
        device: torch.device | str = "cpu",
        registry: Any = None,
        spec: str = "model",
    ) -> EvalContext:
        """A context outside ``eval`` (for testing a metric): ``data`` maps split -> image set.

        ``kept_classes`` defaults to the model's classes minus ``forget_classes``. Use :meth:`sibling`
        for the reference model's context (same protocol, judge, data and cache).
        """
        if kept_classes is None:
            kept_classes = [c for c in range(model.num_classes) if c not in set(forget_classes)]
        shared = _Shared(
            protocol=protocol or SamplingProtocol(),
            device=torch.device(device),
            forget_classes=tuple(forget_classes),
            kept_classes=tuple(kept_classes),
            judge=judge,
            judge_source=None,
            dataset_name=dataset or (next(iter(data.values())).name if data else None),
            dataset_options={},
            forget_ids=frozenset(forget_ids) if forget_ids is not None else None,
            registry=registry,
            data=dict(data or {}),
        )
        return cls("model", model, spec, shared)

    def sibling(self, model: DiffusionModel, role: Role = "reference", spec: str = "reference") -> EvalContext:
        """A context for another model under the same protocol, judge, data and cache."""
        return EvalContext(role, model, spec, self._shared)

    @property
    def records(self) -> dict[str, Any]:
        """Protocol entries recorded so far (see :meth:`record`)."""
        return dict(self._shared.records)

    # what metrics read ---------------------------------------------------------------------------

    @property
    def protocol(self) -> SamplingProtocol:
        return self._shared.protocol

    @property
    def device(self) -> torch.device:
        return self._shared.device

    @property
    def seed(self) -> int:
        return self._shared.protocol.seed

    @property
    def conditional(self) -> bool:
        return self.model.conditional

    @property
    def judge(self) -> Any | None:
        return self._shared.judge

    @property
    def forget_classes(self) -> tuple[int, ...]:
        return self._shared.forget_classes

    @property
    def kept_classes(self) -> tuple[int, ...]:
        return self._shared.kept_classes

    @property
    def forget_ids(self) -> frozenset[str] | None:
        """Ids of the forget set in the training split (found on first use), or None when unknown."""
        return self._shared.resolve_forget_ids()

    @property
    def judge_source(self) -> str | None:
        """Where the judge was loaded from (a folder), for the record."""
        return self._shared.judge_source

    @property
    def dataset_name(self) -> str | None:
        """The evaluation data set's component name (real images, forget set, held-out images)."""
        return self._shared.dataset_name

    @property
    def cache(self) -> dict[str, Any]:
        return self._shared.cache

    @property
    def num_unconditional_samples(self) -> int:
        """Unconditional models: samples per class times the number of classes the judge knows."""
        classes = (
            self.judge.num_classes
            if self.judge is not None
            else max(1, len(self.kept_classes) + len(self.forget_classes))
        )
        return self.protocol.samples_per_class * classes

    def generator(self, stream: str) -> torch.Generator:
        return stream_generator(self.seed, stream)

    def record(self, key: str, value: Any) -> None:
        """Record a protocol knob in ``metrics.json`` under ``protocol.<key>``."""
        self._shared.records[key] = value

    def require_judge(self, metric: str) -> Any:
        if self.judge is None:
            raise UsageError(
                f"metric '{metric}' needs a judge classifier and this model names none: pass --judge DIR "
                "(train one with `unlearnctl train-judge --dataset D --out DIR`)"
            )
        return self.judge

    def dataset(self, split: Literal["train", "test"] = "train") -> ImageSet:
        """The evaluation data set (the run's dataset, or the model's default), loaded once per split."""
        return self._shared.dataset(split)

    def real(self, split: Literal["train", "test"] = "train", classes: Iterable[int] | None = None) -> torch.Tensor:
        """Real images of ``classes`` (all when None) from ``split``, as one ``N x C x H x W`` tensor."""
        key = f"real:{split}:{None if classes is None else tuple(sorted(classes))}"
        if key not in self.cache:
            data = self.dataset(split)
            wanted = None if classes is None else set(classes)
            idx = [i for i, lbl in enumerate(data.labels) if wanted is None or lbl in wanted]
            self.cache[key] = torch.stack([data[i][0] for i in idx]) if idx else torch.zeros(0)
        return self.cache[key]

    # the samples ----------------------------------------------------------------------------------

    def samples(self, cls: int | None = None) -> torch.Tensor:
        """Evaluation samples of class ``cls`` (``None``: unconditional), generated once and cached."""
        if not self.conditional:
            cls = None
        elif cls is None:
            raise ValueError("a conditional model's samples are per class: pass a class id")
        if cls not in self._samples:
            if cls is None:
                self._generate([None])
            else:
                plan = self.planned_classes
                if plan is None:
                    plan = tuple(sorted(set(self.forget_classes) | set(self.kept_classes)))
                planned = [c for c in plan if c not in self._samples]
                self._generate(planned if cls in planned else [cls])
        return self._samples[cls]

    def _generate(self, classes: Sequence[int | None]) -> None:
        """One batched ``diffusion.sample`` call for ``classes``; its cost is added to ``self.cost``."""
        p = self.protocol
        unet = self.model.unet.to(self.device)
        calls = [0, 0]

        def count(_module: Any, args: tuple[Any, ...]) -> None:
            calls[0] += 1
            calls[1] += int(args[0].shape[0])

        _warm_up(self.model, unet, self.device)
        handle = unet.register_forward_pre_hook(count)
        start = time.perf_counter()
        try:
            if classes == [None]:
                n = self.num_unconditional_samples
                labels = None
            else:
                n = p.samples_per_class * len(classes)
                labels = torch.tensor([c for c in classes for _ in range(p.samples_per_class)], dtype=torch.long)
            # One stream per class set, so the same class gets the same noise for model and reference.
            stream = "samples-" + ("uncond" if labels is None else ",".join(str(c) for c in classes))
            images = sample(
                self.model,
                n,
                labels,
                generator=self.generator(stream),
                sampler=p.sampler,
                steps=p.steps,
                guidance=p.guidance,
                eta=p.eta,
                clip_sample=p.clip_sample,
                batch_size=p.batch_size,
                device=self.device,
                unet=unet,
            )
        finally:
            handle.remove()
        self.cost.seconds += time.perf_counter() - start
        self.cost.images += n
        self.cost.unet_forward_calls += calls[0]
        self.cost.unet_image_evaluations += calls[1]
        if labels is None:
            self._samples[None] = images
        else:
            for k, c in enumerate(classes):
                self._samples[c] = images[k * p.samples_per_class : (k + 1) * p.samples_per_class]

    def sampled(self) -> dict[int | None, torch.Tensor]:
        """The samples generated so far, by class."""
        return dict(self._samples)


@torch.no_grad()
def _warm_up(model: DiffusionModel, unet: Any, device: torch.device) -> None:
    """One small untimed forward, so the recorded cost leaves out one-time library start-up."""
    x = torch.zeros(2, model.channels, model.image_size, model.image_size, device=device)
    t = torch.zeros(2, dtype=torch.long, device=device)
    labels = torch.zeros(2, dtype=torch.long, device=device) if model.conditional else None
    was_training = unet.training
    unet.eval()
    unet(x, t, class_labels=labels)
    unet.train(was_training)


# --- what a metric needs ----------------------------------------------------------------------------


def metric_sample_classes(metric_cls: type, ctx: EvalContext) -> set[int]:
    """Classes a metric will ask samples of (``needs_samples``: "forget", "kept"; default both)."""
    needs = getattr(metric_cls, "needs_samples", ("forget", "kept"))
    out: set[int] = set()
    if "forget" in needs:
        out |= set(ctx.forget_classes)
    if "kept" in needs:
        out |= set(ctx.kept_classes)
    return out


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
    num_samples: int = DEFAULT_SAMPLES_PER_CLASS
    sampler: Sampler = "ddim"
    steps: int = 50
    guidance: float = 2.0
    eta: float = 0.0
    seed: int = 0
    device: str = "auto"
    #: torch intra-op CPU threads while evaluating (None: torch's default, which follows OMP_NUM_THREADS)
    threads: int | None = None
    out: Path | None = None
    overwrite: bool = False
    grids: bool = True
    command: list[str] = field(default_factory=list)


@dataclass
class _Loaded:
    spec: str
    model: DiffusionModel
    #: "run" (a run folder with manifest.json) or "model"
    kind: str
    path: Path | None
    manifest: Manifest | None
    weights: str
    sha256: str


@dataclass
class PreparedEval:
    request: EvalRequest
    registry: Any
    subject: _Loaded
    reference: _Loaded | None
    reference_source: str | None
    metrics: list[Any]
    shared: _Shared
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


def _load(registry: Any, spec: str) -> tuple[DiffusionModel, Path | None, Manifest | None]:
    """A run folder (its ``model/`` and manifest), a model folder, or a registered model name."""
    from .loading import RUN_MODEL_DIR, load_model

    path = Path(spec).expanduser()
    manifest = None
    if path.is_dir() and (path / MANIFEST_FILE).is_file() and (path / RUN_MODEL_DIR / "config.json").is_file():
        manifest = read_manifest(path)
    return load_model(spec, registry), (path if path.is_dir() else None), manifest


def _weights_kind(model: DiffusionModel, manifest: Manifest | None) -> str:
    if manifest is not None:
        return manifest.weights.saved_weights
    value = model.extra.get("weights")
    return value if value in ("ema", "raw") else "unknown"


def _reference_spec(manifest: Manifest) -> str:
    """The base model of a run: ``weights.model`` as given, or its absolute folder if that moved."""
    spec = manifest.weights.model
    p = Path(spec).expanduser()
    if (os.sep in spec or "/" in spec) and not p.exists() and manifest.weights.model_path:
        return manifest.weights.model_path
    return spec


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


def prepare_eval(request: EvalRequest, registry: Any = None, progress: Progress | None = None) -> PreparedEval:
    """Validate the request and load models, judge and metrics; writes nothing."""
    from .loading import dataset_options as resolve_dataset_options
    from .loading import parse_data_options
    from .registry import get_registry
    from .runner import resolve_data_dir, resolve_device

    registry = registry or get_registry()
    say = progress or (lambda _m: None)
    req = request
    notes: list[str] = []
    given_data_dir = resolve_data_dir(req.data_dir)
    parse_data_options(list(req.data_options))
    if req.num_samples < 2:
        raise UsageError("--num-samples must be at least 2 (samples per class)")
    if req.steps < 1:
        raise UsageError("--steps must be at least 1")
    device = resolve_device(req.device)

    # 1. metrics (cheap checks first: unknown names and options fail before anything loads)
    names = [m.strip() for m in (req.metrics or DEFAULT_METRICS) if m.strip()]
    if not names:
        raise UsageError("--metrics is empty: name at least one metric (see `unlearnctl list metrics`)")
    for name in names:
        registry.get("metric", name)  # UnknownComponentError with "did you mean"
    sets = _split_metric_sets(req.metric_sets, names)
    from .config import resolve_options

    metrics = []
    for name in dict.fromkeys(names):
        cls = registry.get("metric", name).cls
        metrics.append(cls(resolve_options(cls, sets=sets.get(name, []))))

    # 2. where results go (refuse to clobber before any work)
    target_path = Path(req.target).expanduser()
    is_run = target_path.is_dir() and (target_path / MANIFEST_FILE).is_file()
    out_dir = req.out if req.out is not None else (target_path if is_run else None)
    if out_dir is not None:
        out_dir = Path(out_dir)
        if out_dir.exists() and not out_dir.is_dir():
            raise UsageError(f"--out '{out_dir}' is a file, not a folder")
        if (out_dir / METRICS_FILE).exists() and not req.overwrite:
            raise UsageError(
                f"'{out_dir / METRICS_FILE}' already exists: pass --overwrite to replace it (and its eval grids)"
            )

    # 3. the evaluated model and its reference
    say(f"loading {req.target}")
    model, path, manifest = _load(registry, req.target)
    subject = _Loaded(
        req.target,
        model,
        "run" if manifest else "model",
        path,
        manifest,
        _weights_kind(model, manifest),
        state_sha256(model.unet),
    )
    reference = None
    reference_source = None
    # a `forget` run starts from a model (its reference); a `train` run starts from scratch: --against only
    ref_spec = req.against or (
        _reference_spec(manifest) if manifest is not None and manifest.kind == "forget" else None
    )
    if ref_spec is not None:
        reference_source = "--against" if req.against else "manifest weights.model"
        say(f"loading reference {ref_spec}")
        ref_model, ref_path, ref_manifest = _load(registry, ref_spec)
        reference = _Loaded(
            ref_spec,
            ref_model,
            "run" if ref_manifest else "model",
            ref_path,
            ref_manifest,
            _weights_kind(ref_model, ref_manifest),
            state_sha256(ref_model.unet),
        )
        if (ref_model.conditional, ref_model.num_classes, ref_model.image_size, ref_model.channels) != (
            model.conditional,
            model.num_classes,
            model.image_size,
            model.channels,
        ):
            raise UsageError(
                f"the reference '{ref_spec}' does not produce the same kind of images as '{req.target}' "
                "(conditioning, classes, size or channels differ): pass a matching --against"
            )
        if manifest is not None and not req.against and manifest.weights.input_sha256 not in (None, reference.sha256):
            notes.append(
                f"the reference '{ref_spec}' is not the model this run started from (its weights' sha256 differs "
                "from the manifest's input_sha256): pass the right one with --against"
            )

    # 4. forgotten and kept classes
    num_classes = model.num_classes
    if req.classes is not None:
        forget_classes = _parse_classes(req.classes, num_classes or None)
        if (
            manifest is not None
            and manifest.forget is not None
            and manifest.forget.forget_classes
            and tuple(manifest.forget.forget_classes) != forget_classes
        ):
            notes.append(
                f"--classes {req.classes} differs from the run's forgotten classes "
                f"{list(manifest.forget.forget_classes)}; using --classes"
            )
    elif manifest is not None and manifest.forget is not None:
        forget_classes = tuple(manifest.forget.forget_classes)
    else:
        raise UsageError(
            f"'{req.target}' is not a run folder, so eval cannot know what was forgotten: pass --classes 2,5"
        )

    # 5. judge (one for both models) and the data set of real images
    judge, judge_source = _load_judge(req.judge, model, reference.model if reference else None)
    data_dir = None
    if manifest is not None:
        dataset_name = req.dataset or manifest.dataset.name
        dataset_options = dict(manifest.dataset.options) if dataset_name == manifest.dataset.name else {}
        if dataset_name == manifest.dataset.name and manifest.dataset.data_dir:
            data_dir = Path(manifest.dataset.data_dir)
    else:
        dataset_name = req.dataset or model.default_dataset
        dataset_options = dict(model.extra.get("dataset_options") or {}) if not req.dataset else {}
    if given_data_dir is not None:
        data_dir = given_data_dir
    if dataset_name is not None:
        registry.get("dataset", dataset_name)
        if req.data_options:
            dataset_options = resolve_dataset_options(dataset_name, list(req.data_options), dataset_options, registry)
    elif req.data_options:
        raise UsageError("--data-option needs a dataset: pass --dataset NAME")
    label_count = num_classes or (judge.num_classes if judge is not None else 0)
    if not label_count and forget_classes:
        label_count = max(forget_classes) + 1
    kept = tuple(c for c in range(label_count) if c not in forget_classes)
    if label_count and any(c >= label_count for c in forget_classes):
        raise UsageError(
            f"forgotten classes {list(forget_classes)} are not classes of '{req.target}' (0..{label_count - 1})"
        )

    protocol = SamplingProtocol(
        sampler=req.sampler,
        steps=req.steps,
        eta=req.eta,
        guidance=req.guidance if model.conditional else 0.0,
        samples_per_class=req.num_samples,
        seed=req.seed,
    )
    shared = _Shared(
        protocol=protocol,
        device=device,
        forget_classes=forget_classes,
        kept_classes=kept,
        judge=judge,
        judge_source=judge_source,
        dataset_name=dataset_name,
        dataset_options=dataset_options,
        forget_ids=None,
        registry=registry,
        data_dir=data_dir,
    )
    if manifest is not None and manifest.forget is not None and req.classes is None and not req.dataset:
        shared.forget_selectors = list(manifest.forget.selectors)
        shared.forget_split = manifest.dataset.split
    return PreparedEval(req, registry, subject, reference, reference_source, metrics, shared, out_dir, notes)


def _load_judge(explicit: Path | None, *models: DiffusionModel | None) -> tuple[Any | None, str | None]:
    from .judge import load_judge

    if explicit is not None:
        return load_judge(Path(explicit).expanduser()), str(explicit)
    for m in models:
        if m is not None and m.judge_path is not None and Path(m.judge_path).is_dir():
            return load_judge(Path(m.judge_path)), str(m.judge_path)
    return None, None


def run_eval(prepared: PreparedEval, progress: Progress | None = None) -> EvalResult:
    """Compute every metric for the model and its reference, then write metrics.json and the grids."""
    p = prepared
    say = progress or (lambda _m: None)
    start = time.perf_counter()
    shared = p.shared
    if shared.judge is not None:
        shared.judge.to(shared.device)
    contexts: dict[str, EvalContext] = {"model": EvalContext("model", p.subject.model, p.subject.spec, shared)}
    if p.reference is not None:
        contexts["reference"] = EvalContext("reference", p.reference.model, p.reference.spec, shared)
    planned: set[int] = set()
    for metric in p.metrics:
        planned |= metric_sample_classes(type(metric), contexts["model"])
        # optional: check settings and build expensive pieces before any sampling (fail early)
        if callable(getattr(metric, "prepare", None)):
            metric.prepare(contexts["model"])
    results: dict[str, dict[str, Any]] = {}
    timings: dict[str, dict[str, float]] = {}
    for role, ctx in contexts.items():
        ctx.planned_classes = tuple(sorted(planned))
        label = "unlearned model" if role == "model" and p.reference is not None else role
        if p.reference is not None and role == "reference":
            label = "reference (base) model"
        results[role] = {}
        timings[role] = {}
        for metric in p.metrics:
            say(f"{label}: {metric.name}")
            t0 = time.perf_counter()
            results[role][metric.name] = _jsonable(metric.compute(ctx))
            timings[role][metric.name] = round(time.perf_counter() - t0, 3)

    delta = _delta(results.get("model", {}), results.get("reference", {})) if p.reference is not None else {}
    payload = _payload(p, contexts, results, delta, time.perf_counter() - start)
    payload["metric_seconds"] = timings
    metrics_path = None
    grids: dict[str, Path] = {}
    if p.out_dir is not None:
        say("writing metrics.json and sample grids")
        p.out_dir.mkdir(parents=True, exist_ok=True)
        if p.request.grids:
            grids = write_eval_grids(contexts, shared, p.out_dir / SAMPLES_DIR)
            payload["files"] = {k: str(v.relative_to(p.out_dir)) for k, v in grids.items()}
        payload["wall_time_s"] = round(time.perf_counter() - start, 3)
        metrics_path = p.out_dir / METRICS_FILE
        atomic_write_text(metrics_path, json.dumps(payload, indent=2, allow_nan=True) + "\n")
    return EvalResult(payload, metrics_path, grids, p.notes)


def evaluate(request: EvalRequest, registry: Any = None, progress: Progress | None = None) -> EvalResult:
    """``unlearnctl eval``: validate and load everything, then evaluate and write the results."""
    if request.threads is not None and request.threads < 1:
        raise UsageError("--threads must be at least 1")
    from .runner import torch_threads

    with torch_threads(request.threads):
        return run_eval(prepare_eval(request, registry, progress), progress)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _jsonable(value.tolist()) if value.numel() != 1 else _jsonable(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, int | str | bool) or value is None:
        return value
    if hasattr(value, "item"):
        return _jsonable(value.item())
    return str(value)


def flatten_numbers(results: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """``{"fidelity": {"fid": 3.1}}`` -> ``{"fidelity.fid": 3.1}`` (numbers only, booleans left out)."""
    out: dict[str, float] = {}
    for key, value in results.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten_numbers(value, name + "."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def _delta(model: dict[str, Any], reference: dict[str, Any]) -> dict[str, float]:
    a, b = flatten_numbers(model), flatten_numbers(reference)
    return {k: a[k] - b[k] for k in a if k in b}


def _describe_loaded(x: _Loaded) -> dict[str, Any]:
    out: dict[str, Any] = {
        "spec": x.spec,
        "kind": x.kind,
        "path": str(x.path) if x.path else (str(x.model.path) if x.model.path else None),
        "weights": x.weights,
        "sha256": x.sha256,
        "conditional": x.model.conditional,
        "num_classes": x.model.num_classes,
    }
    if x.manifest is not None:
        out["method"] = x.manifest.method.name if x.manifest.method else None
    return out


def _payload(
    p: PreparedEval, contexts: dict[str, EvalContext], results: dict[str, Any], delta: dict[str, float], wall: float
) -> dict[str, Any]:
    from . import __version__

    shared = p.shared
    protocol = shared.protocol.describe()
    protocol.update(
        {
            "device": shared.device.type,
            "cpu_threads": torch.get_num_threads(),
            "forget_classes": list(shared.forget_classes),
            "kept_classes": list(shared.kept_classes),
            "judge": _judge_record(shared),
            "dataset": _dataset_record(shared),
            "metrics": {m.name: m.options.model_dump(mode="json") for m in p.metrics},
            "seeds": {"seed": shared.protocol.seed, "streams": "runner.stream_seed(seed, 'eval-<stream>')"},
            **shared.records,
        }
    )
    reference = None
    if p.reference is not None:
        reference = {**_describe_loaded(p.reference), "source": p.reference_source}
        if p.subject.manifest is not None:
            reference["matches_manifest_input"] = p.subject.manifest.weights.input_sha256 in (None, p.reference.sha256)
    return {
        "schema_version": METRICS_SCHEMA_VERSION,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "unlearnctl_version": __version__,
        "command": list(p.request.command),
        "model": _describe_loaded(p.subject),
        "reference": reference,
        "protocol": protocol,
        "sampling": {role: ctx.cost.as_dict() for role, ctx in contexts.items()},
        "results": results,
        "delta": delta,
        "notes": list(p.notes),
        "wall_time_s": round(wall, 3),
    }


def _dataset_record(shared: _Shared) -> dict[str, Any] | None:
    if shared.dataset_name is None:
        return None
    out: dict[str, Any] = {
        "name": shared.dataset_name,
        "options": shared.dataset_options,
        "data_dir": str(shared.data_dir) if shared.data_dir else None,
        "warnings": list(shared.data_warnings),
    }
    for split, data in sorted(shared.data.items()):
        out[split] = {"size": len(data), "fingerprint": data.fingerprint(), "version": data.version}
    return out


def _judge_record(shared: _Shared) -> dict[str, Any] | None:
    if shared.judge is None:
        return None
    info = getattr(shared.judge, "info", {}) or {}
    return {
        "path": shared.judge_source,
        "sha256": state_sha256(shared.judge),
        "test_accuracy": info.get("test_accuracy"),
        "dataset": info.get("dataset"),
    }


# --- files -------------------------------------------------------------------------------------------


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``path`` via a temporary file in the same folder and a rename: never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def _panel(images: torch.Tensor, nrow: int) -> torch.Tensor:
    from torchvision.utils import make_grid

    x = (images.clamp(-1, 1) + 1) / 2
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    return make_grid(x, nrow=nrow, padding=1, pad_value=1.0)


def side_by_side_png(
    panels: Sequence[torch.Tensor], nrow: int, path: Path, titles: Sequence[str] | None = None, gap: int = 4
) -> None:
    """Grids of ``panels`` (each ``N x C x H x W`` in [-1, 1]) next to each other, upscaled, as one PNG,
    with a title above each panel."""
    import io

    from PIL import Image, ImageDraw

    grids = [_panel(p, nrow) for p in panels]
    height = max(g.shape[1] for g in grids)
    parts, offsets, x = [], [], 0
    for k, g in enumerate(grids):
        if g.shape[1] < height:
            g = torch.nn.functional.pad(g, (0, 0, 0, height - g.shape[1]), value=1.0)
        parts.append(g)
        offsets.append(x)
        x += g.shape[2]
        if k < len(grids) - 1:
            parts.append(torch.full((3, height, gap), 0.5))
            x += gap
    image = torch.cat(parts, dim=2)
    scale = max(1, 48 // max(1, panels[0].shape[-1]))  # 8x8 digits: 6x, 48 px each
    array = (image * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    grid = Image.fromarray(array)
    if scale > 1:
        grid = grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)
    header = 16 if titles else 0
    canvas = Image.new("RGB", (grid.width, grid.height + header), "white")
    canvas.paste(grid, (0, header))
    if titles:
        draw = ImageDraw.Draw(canvas)
        for title, offset in zip(titles, offsets, strict=False):
            draw.text((offset * scale + 2, 2), title, fill="black")
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def write_eval_grids(contexts: dict[str, EvalContext], shared: _Shared, folder: Path) -> dict[str, Path]:
    """``samples/eval-forgotten.png`` and ``eval-kept.png`` (reference left, model right; same noise).

    Rows are classes, columns the first :data:`GRID_PER_CLASS` evaluation samples of each class.
    Unconditional models get ``eval-unconditional.png``. Only samples already generated are shown.
    """
    order = [r for r in ("reference", "model") if r in contexts]
    titles = ["base (reference)", "unlearned"] if len(order) == 2 else ["model"]
    files: dict[str, Path] = {}
    model = contexts["model"]
    if not model.conditional:
        if None in model.sampled():
            panels = [contexts[r].sampled()[None][: GRID_PER_CLASS * GRID_PER_CLASS] for r in order]
            path = folder / "eval-unconditional.png"
            side_by_side_png(panels, GRID_PER_CLASS, path, titles)
            files["eval-unconditional"] = path
        return files
    for group, classes in (("forgotten", shared.forget_classes), ("kept", shared.kept_classes)):
        present = [c for c in classes if all(c in contexts[r].sampled() for r in order)]
        if not present:
            continue
        panels = [torch.cat([contexts[r].sampled()[c][:GRID_PER_CLASS] for c in present]) for r in order]
        n = min(GRID_PER_CLASS, len(contexts["model"].sampled()[present[0]]))
        path = folder / f"eval-{group}.png"
        side_by_side_png(
            panels, n, path, [f"{t}: {group} classes {list(present)}" if k == 0 else t for k, t in enumerate(titles)]
        )
        files[f"eval-{group}"] = path
    return files


# --- compare ------------------------------------------------------------------------------------------


def read_metrics(run: Path) -> dict[str, Any]:
    """A run's ``metrics.json``; a clear error when there is none."""
    path = Path(run) / METRICS_FILE
    if not path.is_file():
        raise UsageError(f"run '{run}' has no {METRICS_FILE}: run `unlearnctl eval {run}` first")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"cannot read '{path}': {exc}") from exc
    if data.get("schema_version") != METRICS_SCHEMA_VERSION:
        raise UsageError(
            f"'{path}' has schema version {data.get('schema_version')!r}; this unlearnctl reads "
            f"{METRICS_SCHEMA_VERSION}: re-run `unlearnctl eval {run} --overwrite`"
        )
    return data


#: the protocol entries that must agree for runs to be comparable
COMPARABLE_KEYS = ("sampler", "steps", "eta", "guidance", "samples_per_class", "seed", "forget_classes")


def _get(results: dict[str, Any], dotted: str) -> float | None:
    value: Any = results
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _key_options(registry: Any, manifest: Manifest) -> dict[str, Any]:
    """The method options that differ from the method's defaults (all of them if it is not installed)."""
    if manifest.method is None:
        return {}
    options = dict(manifest.method.options)
    try:
        cls = registry.get("method", manifest.method.name).cls if registry is not None else None
    except UsageError:
        cls = None
    if cls is None:
        return options
    defaults = cls.Options().model_dump(mode="json", by_alias=True)
    # `steps` has its own column
    return {k: v for k, v in options.items() if defaults.get(k, object()) != v and k != "steps"}


def _distinguishing_options(rows: list[dict[str, Any]]) -> None:
    """Where several runs share a method, their ``key_options`` become the options that tell them apart
    (values not all equal); a method's only run keeps its non-default options."""
    by_method: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_method.setdefault(row["method"], []).append(row)
    for group in by_method.values():
        if len(group) < 2:
            continue
        keys = sorted({k for row in group for k in row["options"]} - {"steps"})
        varying = [k for k in keys if len({json.dumps(r["options"].get(k), sort_keys=True) for r in group}) > 1]
        for row in group:
            row["key_options"] = {k: row["options"].get(k) for k in varying}


def summary_row(results: dict[str, Any]) -> dict[str, float | None]:
    """The headline numbers of one model's results (what `compare` tabulates and plots)."""
    return {
        "recognition_rate": _get(results, "forgetting.recognition_rate"),
        "ua": _get(results, "forgetting.ua"),
        "kept_rate": _get(results, "kept.mean_rate"),
        "fid": _get(results, "fidelity.fid"),
        "kid": _get(results, "fidelity.kid_mean"),
        "mia_auc": _get(results, "membership.auc"),
    }


@dataclass
class CompareResult:
    rows: list[dict[str, Any]]
    #: one row per distinct reference model (usually one: the base model)
    references: list[dict[str, Any]]
    warnings: list[str]


def compare(runs: Sequence[Path], registry: Any = None) -> CompareResult:
    """One row per run: method, key options, forgetting, kept-class rate, FID, wall time, steps.

    ``key_options``: for runs of one method, the options whose values differ between them; for a
    method's only run, the options that differ from the method's defaults. ``options``: all of them.
    """
    if not runs:
        raise UsageError("compare needs at least one run folder")
    rows = []
    references: dict[str, dict[str, Any]] = {}
    warnings: list[str] = []
    protocols: dict[str, tuple[Any, ...]] = {}
    for run in runs:
        run = Path(run)
        if not run.is_dir():
            raise UsageError(f"'{run}' is not a run folder")
        manifest = read_manifest(run)
        metrics = read_metrics(run)
        proto = metrics.get("protocol", {})
        extractor_kind = (proto.get("feature_extractor") or {}).get("kind")
        protocols[str(run)] = (*(json.dumps(proto.get(k), sort_keys=True) for k in COMPARABLE_KEYS), extractor_kind)
        row: dict[str, Any] = {
            "run": str(run),
            "name": run.name,
            "method": manifest.method.name if manifest.method else manifest.kind,
            "key_options": _key_options(registry, manifest),
            "options": dict(manifest.method.options) if manifest.method else {},
            "forget_classes": list(manifest.forget.forget_classes) if manifest.forget else [],
            **summary_row(metrics.get("results", {}).get("model", {})),
            "wall_time_s": manifest.wall_time_s,
            "optimizer_steps": manifest.optimizer_steps,
            "weights": manifest.weights.saved_weights,
        }
        rows.append(row)
        ref = metrics.get("reference")
        if ref is not None and ref.get("sha256") not in references:
            references[ref["sha256"]] = {
                "name": f"base: {Path(str(ref.get('spec'))).name}",
                "spec": ref.get("spec"),
                **summary_row(metrics.get("results", {}).get("reference", {})),
            }
    _distinguishing_options(rows)
    if len(set(protocols.values())) > 1:
        warnings.append(
            "the runs were evaluated under different protocols (sampler, steps, guidance, samples, seed, forgotten "
            "classes or feature extractor differ): their numbers are not directly comparable"
        )
    return CompareResult(rows, list(references.values()), warnings)


def _short(text: str, limit: int = 70) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run_label(row: dict[str, Any]) -> str:
    """``run-name: method (non-default options)`` for tables and plot legends."""
    opts = ", ".join(f"{a}={b}" for a, b in row["key_options"].items())
    return _short(f"{row['name']}: {row['method']}" + (f" ({opts})" if opts else ""), 100)


def trade_off_plot(result: CompareResult, path: Path, overwrite: bool = False) -> Path:
    """Forgetting (recognition rate of the forgotten classes, lower = more forgotten) against FID of the
    kept classes: one numbered point per run and a star per reference (base) model, as a PNG."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise UsageError(f"'{path}' already exists: pass --overwrite to replace it, or choose another --plot")
    import io

    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    points = [r for r in result.rows if r.get("recognition_rate") is not None and r.get("fid") is not None]
    refs = [r for r in result.references if r.get("recognition_rate") is not None and r.get("fid") is not None]
    if not points and not refs:
        raise UsageError("nothing to plot: the runs' metrics.json have no forgetting.recognition_rate and fidelity.fid")
    fig, ax = plt.subplots(figsize=(7.5, 5.5), dpi=120)
    for ref in refs:
        ax.scatter(
            [ref["recognition_rate"]],
            [ref["fid"]],
            marker="*",
            s=260,
            color="black",
            zorder=2,
            label=_short(ref["name"]),
        )
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, row in enumerate(points, start=1):
        color = colors[(k - 1) % len(colors)]
        ax.scatter(
            [row["recognition_rate"]],
            [row["fid"]],
            s=80,
            color=color,
            zorder=3,
            label=f"{k}  {run_label(row)}",
            edgecolors="white",
            linewidths=0.8,
        )
        ax.annotate(
            str(k),
            (row["recognition_rate"], row["fid"]),
            textcoords="offset points",
            xytext=(6, 5),
            fontsize=9,
            color=color,
            weight="bold",
        )
    fids = [r["fid"] for r in points + refs]
    ax.set_xlabel("forgotten-class recognition rate by the judge  (\u2190 more forgotten)")
    ax.set_ylabel("FID of the kept classes  (lower = better)")
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(0, max(fids) * 1.2 + 1e-9)
    ax.grid(True, alpha=0.3)
    ax.set_title("Forgetting vs. utility (ideal: bottom left)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize=8, frameon=False, ncol=1)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path
