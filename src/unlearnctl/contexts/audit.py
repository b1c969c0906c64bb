"""What an attack's ``run(ctx)`` receives: :class:`AuditContext`.

``unlearnctl audit`` plays the adversary: every attack runs on the unlearned model (role ``"model"``), on
its base model (``"base"``) and, given ``--against``, on a model retrained without the forget set
(``"retrain"``, the gold standard a result is read against). Each role gets an :class:`AuditContext`;
all of them share one :class:`~unlearnctl.contexts.study.EvalShared` -- the object ``eval`` uses --
so they share the sampling protocol, the judge, the data set, the forget set, the records and the cache,
and every random stream (``ctx.generator(stream)``) starts from the same seed for every role: the
attacks differ between the roles only by the model they attack.

The data an attack reads: :meth:`AuditContext.members` (the forget set's training images),
:meth:`AuditContext.nonmembers` (held-out images of the same classes, as many as possible),
:meth:`AuditContext.remaining` (the training images outside the forget set) and
:meth:`AuditContext.heldout` (test images of some classes). Sampling goes through
:meth:`AuditContext.sample`, with the audit's protocol and the noise of a named stream.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Literal

import torch

from ..data.sets import ImageSet
from ..errors import UsageError
from ..models.folder import DiffusionModel
from .study import EvalShared, ModelContext, SamplingCost, initial_noise, sample_under

Role = Literal["model", "base", "retrain"]
#: the roles of an audit, in the order they are attacked and shown
ROLES: tuple[Role, ...] = ("model", "base", "retrain")

#: ``ctx.progress(...)``'s receiver: numbers for the progress channel (``step_logged`` values)
ProgressCallback = Callable[[dict[str, float]], None]

Images = tuple[torch.Tensor, torch.Tensor]


class AuditContext(ModelContext):
    """What an attack's ``run(ctx)`` works with, for one audited model.

    - ``ctx.role``: ``"model"`` (the unlearned model), ``"base"`` or ``"retrain"``; ``ctx.model``: the
      :class:`DiffusionModel` (never change it in place: fine-tune a copy).
    - ``ctx.members()`` / ``ctx.nonmembers()`` / ``ctx.remaining()`` / ``ctx.heldout()``: images and labels.
    - ``ctx.sample(num, label, stream=...)``: images under the audit's protocol, from the noise of a stream.
    - ``ctx.judge``, ``ctx.require_judge(name)``, ``ctx.judged_as(images)``: the judge classifier.
    - ``ctx.generator(stream)``: a seeded CPU generator, identical for every role.
    - ``ctx.record(key, value)``: a protocol entry of ``audit.json``; ``ctx.cache``: shared by every role.
    - ``ctx.progress(fraction, **values)``: how far the attack is, for the progress bar and listeners.

    ``AuditContext.create(model, forget_classes=..., judge=..., data={"train": ..., "test": ...})`` makes one
    outside ``audit`` (for testing an attack; ``unlearnctl.testing.harness.make_audit_context`` on tiny data).
    """

    command: ClassVar[str] = "audit"
    component: ClassVar[str] = "attack"

    def __init__(
        self,
        role: Role,
        model: DiffusionModel,
        spec: str,
        shared: EvalShared,
        progress: ProgressCallback | None = None,
    ) -> None:
        super().__init__(role, model, spec, shared)
        #: where :meth:`progress` reports go (``audit`` sets it to the lifecycle's ``step_logged`` while an
        #: attack runs; None: nowhere)
        self.on_progress = progress
        #: what this role's sampling cost (``audit.json``'s ``sampling``)
        self.cost = SamplingCost()

    def sibling(self, model: DiffusionModel, role: Role = "base", spec: str | None = None) -> AuditContext:
        """The context of another role: the same protocol, seeds, judge, data, records and cache."""
        return AuditContext(role, model, spec or role, self._shared, self.on_progress)

    def progress(self, fraction: float, **values: float) -> None:
        """Report how far the attack is on this model (``fraction`` in [0, 1]) and a few numbers: the
        progress bar and the ``step_logged`` listeners see them. Optional; cheap."""
        if self.on_progress is not None:
            self.on_progress({"progress": float(min(max(fraction, 0.0), 1.0)), **values})

    # the judge -----------------------------------------------------------------------------------------

    def judged_as(self, images: torch.Tensor, classes: Iterable[int] | None = None) -> torch.Tensor:
        """Per image, whether the judge's most likely class is one of ``classes`` (default: the forgotten
        ones): a bool tensor on the CPU."""
        judge = self.require_judge()
        wanted = torch.tensor(sorted(set(self.forget_classes if classes is None else classes)), dtype=torch.long)
        if len(images) == 0:
            return torch.zeros(0, dtype=torch.bool)
        predicted = judge.predict_proba(images).argmax(1).cpu()
        return torch.isin(predicted, wanted)

    # the data ------------------------------------------------------------------------------------------

    def _draw(self, name: str, what: str | None, data: ImageSet, every: list[int], limit: int | None) -> Images:
        """The images and labels of ``every`` (indices into ``data``), or of a seeded subset of ``limit`` of
        them (stream ``<name>-<limit>``: the same for every role), cached; with ``what``, recorded under
        ``protocol.sets.<name>``."""
        idx = every
        if limit is not None and len(every) > limit:
            keep = torch.randperm(len(every), generator=self.generator(f"{name}-{limit}"))[:limit]
            idx = sorted(every[k] for k in keep.tolist())
        if what is not None:
            sets = dict(self._shared.records.get("sets") or {})
            chosen = "all" if len(idx) == len(every) else f"seeded draw (stream '{name}-{limit}')"
            sets[name] = {"what": what, "available": len(every), "limit": limit, "chosen": chosen}
            self.record("sets", sets)
        key = f"audit:{name}:{limit}"
        if key not in self.cache:
            images = torch.stack([data[i][0] for i in idx]) if idx else torch.zeros(0)
            self.cache[key] = (images, torch.tensor([data.labels[i] for i in idx], dtype=torch.long))
        return self.cache[key]

    def _member_indices(self) -> list[int]:
        key = "audit:member-indices"
        if key not in self.cache:
            ids = self.forget_ids
            if ids is None:
                raise UsageError(
                    "the forget set is unknown: audit a run folder, or pass --classes (and --dataset when the "
                    "model names no dataset)"
                )
            data = self._shared.dataset(self._shared.forget_split)
            idx = [i for i, item in enumerate(data.ids) if item in ids]
            if not idx:
                raise UsageError(f"the forget set has no image in the {self._shared.forget_split} split of the dataset")
            self.cache[key] = idx
        return self.cache[key]

    def members(self, limit: int | None = None) -> Images:
        """The forget set's training images (``N x C x H x W`` in [-1, 1], on the CPU) and their labels:
        every one, or a seeded subset of ``limit`` (the same for every role and every attack asking for
        that limit). What a membership-inference attack should find: these were trained on.

        :raises UsageError: the forget set is unknown or empty.
        """
        split = self._shared.forget_split
        data = self._shared.dataset(split)
        return self._draw("members", f"the forget set ({split} split)", data, self._member_indices(), limit)

    def nonmembers(self, count: int | None = None) -> Images:
        """Held-out images of the forget set's classes (the ``test`` split: never trained on) and their
        labels: ``count`` of them (default: as many as the forget set has images), or all there are when
        fewer, chosen by a seeded draw. The other half of a membership-inference test."""
        member_data = self._shared.dataset(self._shared.forget_split)
        classes = sorted({member_data.labels[i] for i in self._member_indices()})
        test = self.dataset("test")
        available = [i for i, lbl in enumerate(test.labels) if lbl in set(classes)]
        want = len(self._member_indices()) if count is None else count
        return self._draw("nonmembers", f"test split, classes {classes}", test, available, want)

    def remaining(self, limit: int | None = None) -> Images:
        """The training images outside the forget set (for a class forget set: the kept classes) and their
        labels: every one, or a seeded subset of ``limit``. What a benign fine-tuner would train on."""
        split = self._shared.forget_split
        data = self._shared.dataset(split)
        members = set(self._member_indices())
        every = [i for i in range(len(data)) if i not in members]
        return self._draw("remaining", f"{split} split outside the forget set", data, every, limit)

    def heldout(self, classes: Iterable[int] | None = None, limit: int | None = None) -> Images:
        """Test-split images of ``classes`` (default: the forgotten ones) and their labels: images of the
        forgotten classes the model never saw, as an adversary could collect them."""
        wanted = sorted(set(self.forget_classes if classes is None else classes))
        test = self.dataset("test")
        every = [i for i, lbl in enumerate(test.labels) if lbl in set(wanted)]
        return self._draw("heldout-" + ",".join(map(str, wanted)), None, test, every, limit)

    # sampling ------------------------------------------------------------------------------------------

    def sample(
        self,
        num: int,
        label: int | torch.Tensor | None = None,
        *,
        stream: str,
        unet: Any = None,
        guidance: float | None = None,
    ) -> torch.Tensor:
        """``num`` images (``N x C x H x W`` in [-1, 1], CPU) under the audit's protocol, starting from the
        initial noise of ``stream``: the same noise for every role, and for every call with that stream
        (a curve of one attack reuses its stream at each point, so that only the model changes).

        :param label: a class id for every image, a tensor of ``num`` class ids, or None: unconditional
            (a class-conditional model's null class, where guidance changes nothing).
        :param unet: a modified copy of the model's UNet to sample (fine-tuned, a new class embedding);
            default the model's own.
        :param guidance: the guidance ``w`` instead of the protocol's (0: none).
        """
        model = self.model
        labels: torch.Tensor | None = None
        if model.conditional:
            if label is None:
                if model.null_class is None:
                    raise UsageError(f"'{self.spec}' has no null class: it cannot be sampled unconditionally")
                labels, guidance = torch.full((num,), model.null_class, dtype=torch.long), 0.0
            elif isinstance(label, int):
                labels = torch.full((num,), label, dtype=torch.long)
            else:
                labels = label.long().cpu()
                if len(labels) != num:
                    raise ValueError(f"{len(labels)} labels for {num} images")
        start = time.perf_counter()
        step_seed, noise = initial_noise(self.generator(stream), self.protocol, model, num)
        net = (unet if unet is not None else model.unet).to(self.device)
        images = sample_under(self.protocol, model, labels, noise, step_seed, self.device, unet=net, guidance=guidance)
        self.cost.seconds += time.perf_counter() - start
        self.cost.images += num
        return images
