"""Run a component the way the commands do, on tiny real objects: for plugin tests.

- :func:`run_method`: a method's ``check`` then ``unlearn`` through an :class:`~unlearnctl.UnlearnRun`,
  exactly as ``unlearnctl forget`` calls them (without the run folder); returns the unlearned model.
- :func:`make_unlearn_run`: the :class:`~unlearnctl.UnlearnRun` itself, to call ``unlearn`` by hand or
  to read ``run.extra``, ``run.last_values``, ``run.optimizer_steps`` afterwards.
- :func:`make_eval_context`: the :class:`~unlearnctl.EvalContext` a metric's ``prepare``/``compute``
  receive from ``unlearnctl eval``, with tiny data, a tiny judge and a cheap sampling protocol.
- :func:`make_audit_context`: the :class:`~unlearnctl.AuditContext` an attack's ``prepare``/``run`` receive
  from ``unlearnctl audit``, likewise.
- :class:`RecordingHook`: stands in for the lifecycle hooks and records what a run told them.

Everything defaults to :mod:`unlearnctl.testing.tiny` objects (an 8x8 grey, 3-class image set; a ~42k
parameter UNet), runs on CPU in a second or two, and is deterministic under ``seed``::

    from unlearnctl.testing.harness import run_method
    from unlearnctl.testing.tiny import tiny_model

    model = run_method(MyMethod(MyMethod.Options(steps=2)), tiny_model(), seed=0)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from ..components import Method
from ..contexts.audit import AuditContext
from ..contexts.evaluation import EvalContext
from ..contexts.study import SamplingProtocol
from ..contexts.unlearn import UnlearnRun
from ..data.sets import ForgetSplit, ImageSet, split_forget
from ..errors import UsageError
from ..models.folder import DiffusionModel
from ..runtime import Precision
from .tiny import tiny_image_set, tiny_judge, tiny_model

#: the classes :func:`tiny_split` and :func:`make_eval_context` forget by default
TINY_FORGET_CLASSES = (1,)


@dataclass
class RecordingHook:
    """A stand-in for ``registry.hook``: records ``run_started``, ``step_logged`` and ``run_finished``.

    Pass it as ``hook=`` to :func:`run_method` / :func:`make_unlearn_run`. ``on_started`` and ``on_step``
    (optional) are called like a listener plugin's ``run_started(run)`` / ``step_logged(run, step, values)``,
    e.g. to test a listener that fills ``run.extra``.
    """

    on_started: Any = None
    on_step: Any = None
    started: list[Any] = field(default_factory=list)
    steps: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    finished: list[tuple[Any, Any]] = field(default_factory=list)

    def run_started(self, run: Any) -> None:
        self.started.append(run)
        if self.on_started is not None:
            self.on_started(run)

    def step_logged(self, run: Any, step: int, values: dict[str, Any]) -> None:
        self.steps.append((step, dict(values)))
        if self.on_step is not None:
            self.on_step(run, step, values)

    def run_finished(self, run: Any, result: Any) -> None:
        self.finished.append((run, result))


def tiny_split(data: ImageSet | None = None, forget_classes: Iterable[int] = TINY_FORGET_CLASSES) -> ForgetSplit:
    """Forget every item of ``forget_classes`` from ``data`` (default: :func:`tiny_image_set`, 24 items)."""
    data = data if data is not None else tiny_image_set()
    wanted = set(forget_classes)
    return split_forget(data, {i for i, lbl in zip(data.ids, data.labels, strict=True) if lbl in wanted})


def _split_for(model: DiffusionModel, split: ForgetSplit | None) -> ForgetSplit:
    if split is not None:
        return split
    classes = model.num_classes or 3
    return tiny_split(tiny_image_set(num_classes=classes, image_size=model.image_size, channels=model.channels))


def make_unlearn_run(
    model: DiffusionModel | None = None,
    split: ForgetSplit | None = None,
    *,
    method: Method | None = None,
    seed: int = 0,
    total_steps: int | None = None,
    device: torch.device | str = "cpu",
    precision: Precision = "fp32",
    out_dir: Path | None = None,
    hook: Any = None,
) -> UnlearnRun:
    """The :class:`~unlearnctl.UnlearnRun` ``forget`` would give a method.

    :param model: default :func:`~unlearnctl.testing.tiny.tiny_model` (class-conditional, 3 classes).
    :param split: default :func:`tiny_split` of a tiny image set shaped like ``model``'s images.
    :param method: sets ``total_steps`` from ``method.total_steps()`` (as ``forget`` does).
    :param out_dir: a folder for ``log.jsonl`` (default: no log file).
    :param hook: receives ``step_logged`` (e.g. a :class:`RecordingHook`).
    """
    model = model if model is not None else tiny_model()
    if total_steps is None and method is not None:
        total_steps = method.total_steps()
    return UnlearnRun(
        model,
        _split_for(model, split),
        seed=seed,
        total_steps=total_steps,
        device=device,
        precision=precision,
        out_dir=out_dir,
        description=f"{method.name if method is not None else 'unlearn'} (test)",
        config={"method": method.options.model_dump(mode="json")} if method is not None else {},
        hook=hook,
    )


def run_method(
    method: Method,
    model: DiffusionModel | None = None,
    split: ForgetSplit | None = None,
    *,
    seed: int = 0,
    run: UnlearnRun | None = None,
    hook: Any = None,
    device: torch.device | str = "cpu",
) -> DiffusionModel:
    """Run ``method`` as ``unlearnctl forget`` does and return the unlearned model (on CPU, eval mode).

    In order: ``conditional_only`` against the model; ``method.check(model, split)``;
    ``hook.run_started(run)``; ``method.unlearn(run)`` with the UNet in train mode; ``run.finish()`` (the
    EMA weights replace the raw ones when the method saves them); the UNet back to eval mode and CPU.
    What it returns holds the weights ``forget`` would save.

    :param run: an :func:`make_unlearn_run` run to use (then ``model``, ``split``, ``seed`` and ``device``
        come from it); read ``run.extra``, ``run.last_values`` afterwards.
    """
    if run is None:
        run = make_unlearn_run(model, split, method=method, seed=seed, device=device, hook=hook)
    elif hook is not None:
        run.hook = hook
    if type(method).conditional_only and not run.model.conditional:
        raise UsageError(f"method '{method.name}' needs a class-conditional model; this one is unconditional")
    method.check(run.model, run.split)
    if run.hook is not None:
        run.hook.run_started(run=run)
    run.model.unet.train()
    method.unlearn(run)
    run.finish()
    run.model.unet.eval()
    run.model.unet.to("cpu")
    return run.model


def make_eval_context(
    model: DiffusionModel | None = None,
    *,
    forget_classes: Sequence[int] = TINY_FORGET_CLASSES,
    judge: Any | Literal["tiny"] | None = "tiny",
    data: Mapping[str, ImageSet] | None = None,
    samples_per_class: int = 4,
    steps: int = 2,
    seed: int = 0,
    forget_ids: Iterable[str] | None = None,
    device: torch.device | str = "cpu",
) -> EvalContext:
    """The :class:`~unlearnctl.EvalContext` ``eval`` would give a metric for ``model``.

    Use ``ctx.sibling(other_model)`` for the reference model's context (same protocol, judge, data, cache).

    :param model: default :func:`~unlearnctl.testing.tiny.tiny_model`.
    :param judge: ``"tiny"``: :func:`~unlearnctl.testing.tiny.tiny_judge` trained for a second on the tiny
        images; a judge object; or None (no judge: metrics that need one raise ``UsageError``).
    :param data: split -> image set; default: tiny image sets shaped like the model's images (8 train and
        4 test images per class).
    :param samples_per_class: evaluation samples per class (``eval``'s ``--num-samples``), drawn with
        ``steps`` DDIM steps.
    :param forget_ids: the forget set's training ids; default: every training item of ``forget_classes``.
    """
    model = model if model is not None else tiny_model()
    setup = _tiny_setup(model, forget_classes, judge, data, forget_ids, seed)
    protocol = SamplingProtocol(
        steps=steps,
        samples_per_class=samples_per_class,
        seed=seed,
        guidance=SamplingProtocol.guidance if model.conditional else 0.0,
    )
    return EvalContext.create(model, forget_classes=forget_classes, protocol=protocol, device=device, **setup)


def make_audit_context(
    model: DiffusionModel | None = None,
    *,
    forget_classes: Sequence[int] = TINY_FORGET_CLASSES,
    judge: Any | Literal["tiny"] | None = "tiny",
    data: Mapping[str, ImageSet] | None = None,
    steps: int = 2,
    seed: int = 0,
    forget_ids: Iterable[str] | None = None,
    device: torch.device | str = "cpu",
) -> AuditContext:
    """The :class:`~unlearnctl.AuditContext` ``audit`` would give an attack for ``model`` (role ``"model"``).

    Use ``ctx.sibling(other_model, role="base")`` (or ``"retrain"``) for another role's context (same
    protocol, seeds, judge, data and cache). The arguments are :func:`make_eval_context`'s: tiny train/test
    data (8 and 4 images per class), a tiny judge, ``steps`` DDIM steps; ``forget_ids`` default to every
    training item of ``forget_classes``.
    """
    model = model if model is not None else tiny_model()
    setup = _tiny_setup(model, forget_classes, judge, data, forget_ids, seed)
    guidance = SamplingProtocol.guidance if model.conditional else 0.0
    protocol = SamplingProtocol(steps=steps, seed=seed, guidance=guidance)
    return AuditContext.create(model, forget_classes=forget_classes, protocol=protocol, device=device, **setup)


def _tiny_setup(
    model: DiffusionModel,
    forget_classes: Sequence[int],
    judge: Any,
    data: Mapping[str, ImageSet] | None,
    forget_ids: Iterable[str] | None,
    seed: int,
) -> dict[str, Any]:
    """What a tiny evaluation or audit context is made of: the kept classes, the judge (``"tiny"``:
    :func:`~unlearnctl.testing.tiny.tiny_judge`), the data (default: tiny image sets shaped like the
    model's images) and the forget set's ids (default: every training item of ``forget_classes``)."""
    size, channels = model.image_size, model.channels
    if judge == "tiny":
        judge = tiny_judge(model.num_classes or 3, size, channels, seed=seed)
    classes = model.num_classes or (judge.num_classes if judge is not None else 0) or 3
    if data is None:
        data = {
            "train": tiny_image_set(8, classes, size, channels, seed=seed),
            "test": tiny_image_set(4, classes, size, channels, seed=seed + 1),
        }
    if forget_ids is None and "train" in data:
        train = data["train"]
        forget_ids = [i for i, lbl in zip(train.ids, train.labels, strict=True) if lbl in set(forget_classes)]
    return {
        "kept_classes": [c for c in range(classes) if c not in set(forget_classes)],
        "judge": judge,
        "data": dict(data),
        "forget_ids": forget_ids,
    }
