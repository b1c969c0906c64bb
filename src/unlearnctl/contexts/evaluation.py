"""What a metric's ``compute(ctx)`` receives: :class:`EvalContext`, and the sampling protocol.

``eval`` evaluates a model and its *reference* side by side under one :class:`SamplingProtocol`: the same
sampler, steps, guidance, samples per class, seeds, judge and reference images for both. Each model gets
an :class:`EvalContext`; the context generates the evaluation samples once per model and every metric
reads them from its cache. The samples are one draw of every class (:attr:`EvalContext.sample_classes`),
whichever metrics run, so that no metric's value depends on which other metrics were selected.

With several processes (``torchrun``, ``accelerate launch``; :attr:`EvalShared.world`) the main process
runs the metrics, and each draw of samples is shared among the processes in whole batches: the main
process announces the draw, the others (in :func:`serve_sample_requests`) compute their batches, and
the main process gathers the images in order. The images, and so every metric, are those of one process.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from ..components import Metric
from ..data.sets import ImageSet
from ..diffusion import Sampler, draw_step_seed, sample, uses_step_noise
from ..distributed import SINGLE, World, broadcast_from_main, gather_objects, gather_to_main
from ..errors import UsageError
from ..inputs import load_dataset_warned
from ..models.folder import DiffusionModel
from ..runtime import stream_seed

DEFAULT_SAMPLES_PER_CLASS = 50
Role = Literal["model", "reference"]
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
class EvalShared:
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
    #: the processes sharing the sampling (the main process runs the metrics); one process by default
    world: World = SINGLE
    #: the main process is inside a draw shared with the others (an error there leaves them inside it)
    drawing: bool = False
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

    def __init__(self, role: Role, model: DiffusionModel, spec: str, shared: EvalShared) -> None:
        self.role, self.model, self.spec, self._shared = role, model, spec, shared
        self._samples: dict[int | None, torch.Tensor] = {}
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
        shared = EvalShared(
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

    @property
    def sample_classes(self) -> tuple[int, ...]:
        """The classes sampled together, in one draw, when the samples of any of them are first asked for:
        the forgotten and kept classes, sorted.

        The same whichever metrics run, so a class's samples -- and every metric's value -- do not depend
        on the other metrics selected; a metric that reads one class still pays for sampling all of them.
        """
        return tuple(sorted(set(self.forget_classes) | set(self.kept_classes)))

    def samples(self, cls: int | None = None) -> torch.Tensor:
        """Evaluation samples of class ``cls`` (``None``: unconditional), generated once and cached.

        The first call for a class of :attr:`sample_classes` generates all of them in one batched call;
        a class outside them is generated alone.
        """
        if not self.conditional:
            cls = None
        elif cls is None:
            raise ValueError("a conditional model's samples are per class: pass a class id")
        if cls not in self._samples:
            if cls is None:
                self._generate([None])
            else:
                plan = self.sample_classes
                self._generate(list(plan) if cls in plan else [cls])
        return self._samples[cls]

    def _generate(self, classes: Sequence[int | None]) -> None:
        """One batched draw of the samples of ``classes``; its cost is added to ``self.cost``.

        With several processes, the main process first asks the others (waiting in
        :func:`serve_sample_requests`) to take part; each process computes a contiguous run of whole
        batches (:meth:`~unlearnctl.distributed.World.batch_shard`) and the main process gathers them.
        """
        world = self._shared.world
        if world.distributed and world.is_main:
            broadcast_from_main((self.role, list(classes)), world)
            self._shared.drawing = True
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
            # One stream per class set (the set is always `sample_classes`, or one class outside it): the
            # same class gets the same noise for the model and its reference, whatever metrics run.
            stream = "samples-" + ("uncond" if labels is None else ",".join(str(c) for c in classes))
            # what diffusion.sample draws from the stream for all n images (step-noise seed, initial noise),
            # then this process's batches of them
            generator = self.generator(stream)
            step_seed = draw_step_seed(generator) if uses_step_noise(p.sampler, p.eta) else None
            noise = torch.randn(
                (n, self.model.channels, self.model.image_size, self.model.image_size), generator=generator
            )
            mine = world.batch_shard(n, p.batch_size)
            part = noise[mine.start : mine.stop]
            if len(mine):
                part = sample(
                    self.model,
                    len(mine),
                    None if labels is None else labels[mine.start : mine.stop],
                    sampler=p.sampler,
                    steps=p.steps,
                    guidance=p.guidance,
                    eta=p.eta,
                    clip_sample=p.clip_sample,
                    batch_size=p.batch_size,
                    device=self.device,
                    unet=unet,
                    noise=part,
                    step_seed=step_seed,
                    first_index=mine.start,
                )
            gathered = gather_to_main(part, world)
        finally:
            handle.remove()
        # every process's UNet calls: the same batches, so the same sums as one process
        counted = gather_objects(tuple(calls), world)
        self._shared.drawing = False
        self.cost.seconds += time.perf_counter() - start
        self.cost.images += n
        self.cost.unet_forward_calls += sum(c[0] for c in counted)
        self.cost.unet_image_evaluations += sum(c[1] for c in counted)
        if gathered is None:  # not the main process: its images went there
            return
        images = gathered
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


# --- several processes --------------------------------------------------------------------------------


def serve_sample_requests(contexts: dict[str, EvalContext]) -> None:
    """A process other than the main one: take part in every draw of samples the main process makes
    (its metrics ask for them, in an order only it knows), until it calls :func:`end_sample_requests`.
    ``contexts`` by role, as on the main process."""
    world = next(iter(contexts.values()))._shared.world
    while True:
        request = broadcast_from_main(None, world)
        if request is None:
            return
        role, classes = request
        contexts[role]._generate(classes)


def end_sample_requests(shared: EvalShared) -> None:
    """The main process: no more draws; the other processes leave :func:`serve_sample_requests`.

    Nothing when a draw failed half-way on this process: the others are still inside it, and the
    launcher stops them when this process exits with its error.
    """
    world = shared.world
    if world.distributed and world.is_main and not shared.drawing:
        broadcast_from_main(None, world)


# --- what a metric needs ----------------------------------------------------------------------------


def metric_sample_classes(metric_cls: type[Metric], ctx: EvalContext) -> set[int]:
    """Classes a metric reads samples of (``needs_samples``: "forget", "kept"; default both).

    What the metric declares; what is generated does not follow it (see :attr:`EvalContext.sample_classes`).
    """
    needs = metric_cls.needs_samples
    out: set[int] = set()
    if "forget" in needs:
        out |= set(ctx.forget_classes)
    if "kept" in needs:
        out |= set(ctx.kept_classes)
    return out
