"""The per-model context both ``eval`` and ``audit`` build on: :class:`ModelContext`, and the sampling protocol.

A metric's context (:class:`~unlearnctl.contexts.evaluation.EvalContext`) and an attack's
(:class:`~unlearnctl.contexts.audit.AuditContext`) are each a :class:`ModelContext`: one model's view of an
:class:`EvalShared`, what every model of one command shares (the :class:`SamplingProtocol`, the device, the
judge, the data set, the forgotten and kept classes, the records and the cache). Here too: the command's
seeded random streams (:func:`stream_generator`), the initial noise a stream gives (:func:`initial_noise`),
sampling under the protocol (:func:`sample_under`) and what sampling cost (:class:`SamplingCost`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import torch

from ..data.sets import ImageSet
from ..diffusion import Sampler, draw_step_seed, sample, uses_step_noise
from ..distributed import SINGLE, World
from ..errors import UsageError
from ..inputs import load_dataset_warned
from ..models.folder import DiffusionModel
from ..runtime import stream_seed
from .sample_cache import SampleCache

DEFAULT_SAMPLES_PER_CLASS = 50
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
    #: the UNet's opt-in speed-ups while sampling (``--channels-last``, ``--compile``; docs/performance.md)
    channels_last: bool = False
    compile: bool = False

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
            "channels_last": self.channels_last,
            "compile": self.compile,
        }


def stream_generator(seed: int, stream: str, command: str = "eval") -> torch.Generator:
    """A CPU generator for one random stream of ``command`` (``eval``, ``audit``), seeded by
    ``stream_seed(seed, "<command>-<stream>")``: the same for every model the command compares."""

    return torch.Generator().manual_seed(stream_seed(seed, f"{command}-{stream}"))


def initial_noise(
    generator: torch.Generator, protocol: SamplingProtocol, model: DiffusionModel, n: int
) -> tuple[int | None, torch.Tensor]:
    """What :func:`~unlearnctl.diffusion.sample` draws from ``generator`` for ``n`` images, in its order:
    the step-noise seed (``None`` when the protocol's sampler draws no step noise), then the initial noise.

    Drawn whole before any batch is sampled, so that an image's noise depends only on the stream and its
    index (not on the batches, the processes or the model): the same stream gives every model the same
    noise.
    """
    step_seed = draw_step_seed(generator) if uses_step_noise(protocol.sampler, protocol.eta) else None
    noise = torch.randn((n, model.channels, model.image_size, model.image_size), generator=generator)
    return step_seed, noise


def sample_under(
    protocol: SamplingProtocol,
    model: DiffusionModel,
    labels: torch.Tensor | None,
    noise: torch.Tensor,
    step_seed: int | None,
    device: torch.device,
    *,
    unet: Any = None,
    guidance: float | None = None,
    first_index: int = 0,
) -> torch.Tensor:
    """:func:`~unlearnctl.diffusion.sample` of the images that start from ``noise`` under ``protocol``
    (sampler, steps, eta, guidance unless ``guidance`` is given, clipping, batch size), on ``device``;
    ``unet`` (default the model's) lets a caller sample a modified copy of the model's UNet."""
    return sample(
        model,
        len(noise),
        labels,
        sampler=protocol.sampler,
        steps=protocol.steps,
        guidance=protocol.guidance if guidance is None else guidance,
        eta=protocol.eta,
        clip_sample=protocol.clip_sample,
        batch_size=protocol.batch_size,
        device=device,
        unet=unet,
        noise=noise,
        step_seed=step_seed,
        first_index=first_index,
    )


@dataclass
class SamplingCost:
    """What generating the evaluation samples of one model cost (measured, not estimated)."""

    seconds: float = 0.0
    images: int = 0
    #: calls of the UNet's forward
    unet_forward_calls: int = 0
    #: images through the UNet summed over calls (a guided step counts each image twice)
    unet_image_evaluations: int = 0
    #: of ``images``, those read back from the sample cache instead of sampled (``eval --sample-cache``)
    cached_images: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 3),
            "images": self.images,
            "unet_forward_calls": self.unet_forward_calls,
            "unet_image_evaluations": self.unet_image_evaluations,
            "cached_images": self.cached_images,
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
    #: draws of samples kept between commands (``eval --sample-cache``; one process only), or None
    sample_cache: SampleCache | None = None
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


class ModelContext:
    """One model's view of an :class:`EvalShared`: what a metric's and an attack's contexts have in common
    (:class:`~unlearnctl.contexts.evaluation.EvalContext`, :class:`~unlearnctl.contexts.audit.AuditContext`).

    ``role`` names the model's place in the command (``"model"``, ``"reference"``, ``"base"``...);
    every role's context of one command shares the protocol, the judge, the data, the records, the cache
    and the seeds of ``generator``.
    """

    #: the command whose random streams :meth:`generator` seeds (``"<command>-<stream>"``)
    command: ClassVar[str] = "eval"
    #: what the command's components are called, in messages
    component: ClassVar[str] = "metric"

    def __init__(self, role: str, model: DiffusionModel, spec: str, shared: EvalShared) -> None:
        self.role, self.model, self.spec, self._shared = role, model, spec, shared

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
    ) -> Self:
        """A context outside a command (for testing a metric or an attack): ``data`` maps split -> image set.

        ``kept_classes`` defaults to the model's classes minus ``forget_classes``; ``forget_ids`` to every
        training image of ``forget_classes`` (found on first use). Use ``sibling`` for another role's
        context (same protocol, judge, data, seeds and cache).
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

    @property
    def records(self) -> dict[str, Any]:
        """Protocol entries recorded so far (see :meth:`record`)."""
        return dict(self._shared.records)

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
        """The judge classifier (``predict_proba``, ``features``, ``num_classes``), or None."""
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
        """The data set's component name (real images, forget set, held-out images)."""
        return self._shared.dataset_name

    @property
    def cache(self) -> dict[str, Any]:
        """A dict shared by every role's context: expensive set-up, built once."""
        return self._shared.cache

    def generator(self, stream: str) -> torch.Generator:
        """A fresh CPU generator for ``stream``, seeded by ``stream_seed(seed, "<command>-<stream>")``: the
        same numbers for every role, and for every call with the same stream."""
        return stream_generator(self.seed, stream, self.command)

    def record(self, key: str, value: Any) -> None:
        """Record a protocol knob in the command's file (``metrics.json``, ``audit.json``) under
        ``protocol.<key>``."""
        self._shared.records[key] = value

    def require_judge(self, name: str | None = None) -> Any:
        """The judge, or a one-line :class:`UsageError` naming the component ``name`` and how to get a judge."""
        if self.judge is None:
            who = f"{self.component} '{name}'" if name else f"this {self.component}"
            raise UsageError(
                f"{who} needs a judge classifier and this model names none: pass --judge DIR "
                "(train one with `unlearnctl train-judge --dataset D --out DIR`)"
            )
        return self.judge

    def dataset(self, split: Literal["train", "test"] = "train") -> ImageSet:
        """The data set (the run's dataset, or the model's default), loaded once per split."""
        return self._shared.dataset(split)
