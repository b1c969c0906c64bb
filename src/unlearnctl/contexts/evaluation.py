"""What a metric's ``compute(ctx)`` receives: :class:`EvalContext`, and sharing its draws among processes.

``eval`` evaluates a model and its *reference* side by side under one
:class:`~unlearnctl.contexts.study.SamplingProtocol` (:mod:`unlearnctl.contexts.study`): the same
sampler, steps, guidance, samples per class, seeds, judge and reference images for both. Each model gets
an :class:`EvalContext`; the context generates the evaluation samples once per model and every metric
reads them from its cache. The samples are one draw of every class (:attr:`EvalContext.sample_classes`),
whichever metrics run, so that no metric's value depends on which other metrics were selected.

With several processes (``torchrun``, ``accelerate launch``;
:attr:`~unlearnctl.contexts.study.EvalShared.world`) the main process runs the metrics, and each draw of
samples is shared among the processes in whole batches: the main process announces the draw, the others
(in :func:`serve_sample_requests`) compute their batches, and the main process gathers the images in order.
The images, and so every metric, are those of one process.

With ``eval --retrain`` a third model joins: the *gold standard*, retrained from scratch without the forget
set. Its context (role ``"retrain"``) is :attr:`EvalContext.retrain` of both the model's and the
reference's contexts (one object: its samples are drawn once and shared), sampled under the same protocol
and noise streams, so that identical models give identical samples.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import torch

from ..components import Metric
from ..distributed import broadcast_from_main, gather_objects, gather_to_main
from ..models.folder import DiffusionModel
from ..runtime import prepare_module
from .sample_cache import draw_key
from .study import EvalShared, ModelContext, SamplingCost, initial_noise, sample_under

#: ``"retrain"``: the gold-standard model of ``eval --retrain`` (:attr:`EvalContext.retrain`)
Role = Literal["model", "reference", "retrain"]


class EvalContext(ModelContext):
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
    - ``ctx.retrain``: the gold-standard model's context (``eval --retrain``), or None.
    """

    def __init__(
        self, role: Role, model: DiffusionModel, spec: str, shared: EvalShared, *, retrain: EvalContext | None = None
    ) -> None:
        super().__init__(role, model, spec, shared)
        self._samples: dict[int | None, torch.Tensor] = {}
        self._speedups_applied = False
        self.cost = SamplingCost()
        self._retrain: EvalContext | None = None
        self.retrain = retrain

    @property
    def retrain(self) -> EvalContext | None:
        """The context of the model retrained without the forget set (``eval --retrain``; role ``"retrain"``),
        or None when there is none (and in the retrain context itself).

        The same object for the model's and the reference's contexts, under the same protocol, judge, data,
        cache and noise streams: its samples are drawn once and both compare with them, and a model identical
        to it draws identical samples. Set it to ``ctx.sibling(model, role="retrain", spec=...)`` when testing a
        metric outside ``eval``.
        """
        return self._retrain

    @retrain.setter
    def retrain(self, value: EvalContext | None) -> None:
        if value is not None:
            if value._shared is not self._shared or value.role != "retrain":
                raise ValueError("ctx.retrain must be a sibling context of role 'retrain' (ctx.sibling(m, 'retrain'))")
            if self.role == "retrain":
                raise ValueError("the retrain context has no retrain context of its own")
        self._retrain = value

    def sibling(self, model: DiffusionModel, role: Role = "reference", spec: str = "reference") -> EvalContext:
        """A context for another model under the same protocol, judge, data and cache (and the same
        :attr:`retrain` context, except for a context of role ``"retrain"``)."""
        return EvalContext(role, model, spec, self._shared, retrain=None if role == "retrain" else self._retrain)

    @property
    def num_unconditional_samples(self) -> int:
        """Unconditional models: samples per class times the number of classes the judge knows."""
        classes = (
            self.judge.num_classes
            if self.judge is not None
            else max(1, len(self.kept_classes) + len(self.forget_classes))
        )
        return self.protocol.samples_per_class * classes

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

    def _plan(self, classes: Sequence[int | None]) -> tuple[int, torch.Tensor | None, str]:
        """A draw of ``classes``: how many images, their labels (None: unconditional) and its random stream."""
        p = self.protocol
        if classes == [None]:
            n, labels = self.num_unconditional_samples, None
        else:
            n = p.samples_per_class * len(classes)
            labels = torch.tensor([c for c in classes for _ in range(p.samples_per_class)], dtype=torch.long)
        # One stream per class set (the set is always `sample_classes`, or one class outside it): the same
        # class gets the same noise for the model and its reference, whatever metrics run.
        stream = "samples-" + ("uncond" if labels is None else ",".join(str(c) for c in classes))
        return n, labels, stream

    def _generate(self, classes: Sequence[int | None]) -> None:
        """One batched draw of the samples of ``classes``; its cost is added to ``self.cost``.

        With a sample cache (one process), a draw it holds is read back instead, and a new one is stored; the
        key is claimed meanwhile (:meth:`~unlearnctl.contexts.sample_cache.SampleCache.claim`), so commands
        sharing the cache at once sample each draw once.
        """
        n, labels, stream = self._plan(classes)
        cache = self._shared.sample_cache if not self._shared.world.distributed else None
        if cache is None:
            images = self._draw(classes, n, labels, stream)
            if images is not None:  # None: not the main process, whose images went there
                self._keep(classes, labels, images)
            return
        start = time.perf_counter()
        key = draw_key(
            self.model, self.protocol.describe(), command=self.command, stream=stream, n=n, device=self.device,
            labels=None if labels is None else labels.tolist(),
        )  # fmt: skip
        shape = (n, self.model.channels, self.model.image_size, self.model.image_size)
        with cache.claim(key):
            images = cache.load(key, shape)
            if images is not None:
                self.cost.seconds += time.perf_counter() - start  # waiting for another command's draw included
                self.cost.images += n
                self.cost.cached_images += n
            else:
                images = self._draw(classes, n, labels, stream)
                assert images is not None  # one process: its own images
                cache.store(key, images)
        self._keep(classes, labels, images)

    def _draw(
        self, classes: Sequence[int | None], n: int, labels: torch.Tensor | None, stream: str
    ) -> torch.Tensor | None:
        """Sample the ``n`` images of ``stream``; the main process's result (None on the others).

        With several processes, the main process first asks the others (waiting in
        :func:`serve_sample_requests`) to take part; each process computes a contiguous run of whole
        batches (:meth:`~unlearnctl.distributed.World.batch_shard`) and the main process gathers them.
        """
        world = self._shared.world
        p = self.protocol
        if world.distributed and world.is_main:
            broadcast_from_main((self.role, list(classes)), world)
            self._shared.drawing = True
        unet = self.model.unet.to(self.device)
        if not self._speedups_applied:  # once per model: each application compiles anew
            prepare_module(unet, channels_last=p.channels_last, compile=p.compile)
            self._speedups_applied = True
        calls = [0, 0]

        def count(_module: Any, args: tuple[Any, ...]) -> None:
            calls[0] += 1
            calls[1] += int(args[0].shape[0])

        _warm_up(self.model, unet, self.device)
        handle = unet.register_forward_pre_hook(count)
        start = time.perf_counter()
        try:
            # what diffusion.sample draws from the stream for all n images (step-noise seed, initial noise),
            # then this process's batches of them
            step_seed, noise = initial_noise(self.generator(stream), p, self.model, n)
            mine = world.batch_shard(n, p.batch_size)
            part = noise[mine.start : mine.stop]
            if len(mine):
                part = sample_under(
                    p,
                    self.model,
                    None if labels is None else labels[mine.start : mine.stop],
                    part,
                    step_seed,
                    self.device,
                    unet=unet,
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
        return gathered

    def _keep(self, classes: Sequence[int | None], labels: torch.Tensor | None, images: torch.Tensor) -> None:
        """Keep a draw's images by class."""
        if labels is None:
            self._samples[None] = images
        else:
            per_class = self.protocol.samples_per_class
            for k, c in enumerate(classes):
                self._samples[c] = images[k * per_class : (k + 1) * per_class]

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
