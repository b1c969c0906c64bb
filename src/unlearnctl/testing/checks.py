"""The runtime contract checks of each kind: the component does its work, on tiny real objects.

:func:`~unlearnctl.testing.contracts.check_component` runs them after the class checks; each is a
function ``check(cls, options)`` (``options``: option values to build the component with, over its
defaults) that raises :class:`ContractError` for a broken contract and :class:`ContractSkipped` when it
cannot run here (a model that needs the network offline, a dataset whose files are not here, a required
option nobody gave). All of them run on CPU in seconds.

- dataset: ``load("train")`` and ``load("test")`` (from an empty data folder: datasets that ship their
  data, like ``digits``) return image sets with unique string ids, ``C x H x W`` float32 images in
  [-1, 1], valid labels, and the same ids and fingerprint when loaded again.
- selector: ``select`` on :func:`~unlearnctl.testing.tiny.tiny_image_set` returns a set of the data's
  ids, the same from a fresh instance.
- method: on a tiny class-conditional UNet (and an unconditional one unless ``conditional_only``), one
  ``steps`` (when the method has that option) of ``check`` + ``unlearn`` as ``forget`` runs them leaves
  finite weights that diffusers' ``UNet2DModel.from_pretrained`` loads back unchanged after
  ``DiffusionModel.save``, identical on a second run under the same seed (whatever the global torch RNG
  holds: all randomness must come from ``run``).
- model: ``load()`` returns a CPU float32 ``DiffusionModel`` whose UNet denoises a batch to the right
  shape, the same weights when loaded again (skipped on ``ModelNotAvailableError``, e.g. offline).
- metric: ``needs_samples`` names "forget"/"kept" only; ``prepare`` then ``compute`` on tiny conditional
  and unconditional models (model and reference contexts) return dicts with string keys, the same values
  on a fresh context. A ``UsageError`` for an unconditional model is an accepted refusal.
- attack: ``prepare`` then ``run`` on tiny conditional and (unless ``conditional_only``) unconditional
  models, as ``audit`` runs them (roles ``model`` and ``base``): dicts with string keys and JSON values,
  the audited models left unchanged, the same values on a fresh context whatever the global torch RNG
  holds (all randomness from ``ctx.generator`` / ``ctx.sample``). A ``UsageError`` for an unconditional
  model is an accepted refusal.
- executor: ``start(1)`` allows at least one cell; a cell of two cheap ``unlearnctl`` commands comes back
  ``ok`` with both outputs in its log; a cell whose first command fails comes back with that command's exit
  status (2), its name and its log's tail, and its second command never runs; ``close()`` ends it.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn

import torch
from diffusers import UNet2DModel

from ..components import Attack, Component, Dataset, Method, Metric, ModelPreset, Selector
from ..config import field_default, option_keys, resolve_options
from ..data.sets import ImageSet
from ..errors import ModelNotAvailableError, OptionError, UsageError
from ..models.folder import DiffusionModel, state_sha256
from ..results import jsonable
from .errors import ContractError, ContractSkipped
from .harness import make_audit_context, make_eval_context, run_method, tiny_split
from .tiny import tiny_image_set, tiny_judge, tiny_model

RuntimeCheck = Callable[[type[Component], Mapping[str, Any]], None]


def _fail(cls: type, message: str) -> NoReturn:
    raise ContractError(f"{cls.__qualname__}: {message}")


def build(cls: type[Component], options: Mapping[str, Any], base: Mapping[str, Any] | None = None) -> Any:
    """``cls`` with ``base`` < ``options`` over its defaults; skipped when a required option is not given."""
    values = {**(base or {}), **options}
    missing = [k for k, f in option_keys(cls).items() if field_default(f)[0] and k not in values]
    if missing:
        raise ContractSkipped(
            f"{cls.kind} '{cls.name}' needs option(s) {', '.join(missing)}: pass them with "
            f"check_component(cls, options={{...}})"
        )
    try:
        return cls(resolve_options(cls, config=values))
    except OptionError as exc:
        raise ContractError(f"{cls.__qualname__}: the options given to the check are refused: {exc}") from None


# --- dataset ---------------------------------------------------------------------------------------


def _check_image_set(cls: type, data: Any, split: str) -> None:
    where = f"load('{split}')"
    if not isinstance(data, ImageSet):
        _fail(cls, f"{where} returned {type(data).__name__}, not an unlearnctl.ImageSet")
    ids = data.ids
    if len(data) == 0:
        _fail(cls, f"{where} returned no items")
    if not all(isinstance(i, str) for i in ids) or len(set(ids)) != len(ids):
        _fail(cls, f"{where}: item ids must be unique strings")
    for label in set(data.labels):
        if label != -1 and not 0 <= label < data.num_classes:
            _fail(cls, f"{where}: label {label} is not a class id (0..{data.num_classes - 1}) nor -1 (unlabelled)")
    shape = (data.channels, data.image_size, data.image_size)
    for index in sorted({0, len(data) // 2, len(data) - 1}):
        image, _ = data[index]
        if not isinstance(image, torch.Tensor) or image.dtype != torch.float32 or tuple(image.shape) != shape:
            _fail(cls, f"{where}: item {index} is not a float32 tensor of shape {shape} (channels, size, size)")
        if float(image.min()) < -1.0 or float(image.max()) > 1.0:
            _fail(cls, f"{where}: item {index} has values outside [-1, 1]")


def dataset_loads(cls: type[Component], options: Mapping[str, Any]) -> None:
    """``load`` of both splits from an empty data folder (datasets that ship their data)."""
    dataset: Dataset = build(cls, options)
    with tempfile.TemporaryDirectory() as empty:
        for split in ("train", "test"):
            try:
                first = dataset.load(split, Path(empty))
            except UsageError as exc:  # files to download or to place first
                raise ContractSkipped(f"dataset '{cls.name}' has no data here: {exc}") from None
            _check_image_set(cls, first, split)
            again = build(cls, options).load(split, Path(empty))
            if again.ids != first.ids or again.fingerprint() != first.fingerprint():
                _fail(cls, f"load('{split}') returned other items or content the second time")


# --- selector --------------------------------------------------------------------------------------


def selector_selects(cls: type[Component], options: Mapping[str, Any]) -> None:
    """``select`` on the tiny image set: a set of its ids, the same from a fresh instance."""
    selector: Selector = build(cls, options)
    data = tiny_image_set()
    try:
        chosen = selector.select(data)
    except UsageError as exc:
        raise ContractSkipped(f"selector '{cls.name}' refused the tiny image set: {exc}") from None
    if not isinstance(chosen, set | frozenset) or not all(isinstance(i, str) for i in chosen):
        _fail(cls, f"select must return a set of item ids (str), not {type(chosen).__name__}")
    unknown = chosen - set(data.ids)
    if unknown:
        _fail(cls, f"select returned ids that are not in the data, e.g. {sorted(unknown)[:3]}")
    if build(cls, options).select(tiny_image_set()) != chosen:
        _fail(cls, "select chose other items the second time (it must be deterministic under its options)")


# --- method ----------------------------------------------------------------------------------------


def _unlearned(cls: type[Component], options: Mapping[str, Any], conditional: bool, global_seed: int) -> DiffusionModel:
    base = {"steps": 1} if "steps" in option_keys(cls) else {}
    method: Method = build(cls, options, base)
    model = tiny_model(conditional=conditional)
    kind = "class-conditional" if conditional else "unconditional"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(global_seed)  # a method drawing from the global RNG gives other weights per run
        try:
            return run_method(method, model, tiny_split(), seed=0)
        except UsageError as exc:
            raise ContractSkipped(f"method '{cls.name}' refused the tiny {kind} UNet: {exc}") from None


def method_unlearns(cls: type[Component], options: Mapping[str, Any]) -> None:
    """A tiny ``unlearn`` on CPU: finite weights, saved and loaded back by diffusers, deterministic."""
    model = _unlearned(cls, options, conditional=True, global_seed=1)
    if not all(torch.isfinite(p).all() for p in model.unet.parameters()):
        _fail(cls, "unlearn left non-finite weights on a tiny UNet")
    digest = state_sha256(model.unet)
    with tempfile.TemporaryDirectory() as folder:
        model.save(Path(folder))
        loaded = UNet2DModel.from_pretrained(folder, use_safetensors=True)
        if state_sha256(loaded) != digest:
            _fail(cls, "the unlearned UNet does not load back unchanged with UNet2DModel.from_pretrained")
    if state_sha256(_unlearned(cls, options, conditional=True, global_seed=2).unet) != digest:
        _fail(
            cls,
            "two runs under the same seed gave different weights: draw every random number from run.generator "
            "or the runner's helpers (run.batches, run.sample_noise_and_t...), never the global torch RNG",
        )
    if issubclass(cls, Method) and not cls.conditional_only:
        uncond = _unlearned(cls, options, conditional=False, global_seed=1)
        if not all(torch.isfinite(p).all() for p in uncond.unet.parameters()):
            _fail(cls, "unlearn left non-finite weights on a tiny unconditional UNet")


# --- model -----------------------------------------------------------------------------------------


def model_loads(cls: type[Component], options: Mapping[str, Any]) -> None:
    """``load()``: a CPU float32 model that denoises a batch; the same weights twice."""
    preset: ModelPreset = build(cls, options)
    try:
        model = preset.load()
    except ModelNotAvailableError as exc:
        raise ContractSkipped(f"model '{cls.name}' is not available here: {exc}") from None
    if not isinstance(model, DiffusionModel):
        _fail(cls, f"load() returned {type(model).__name__}, not an unlearnctl.DiffusionModel")
    params = list(model.unet.parameters())
    if any(p.device.type != "cpu" or p.dtype != torch.float32 for p in params):
        _fail(cls, "load() must return the model on CPU in float32")
    x = torch.zeros(2, model.channels, model.image_size, model.image_size)
    labels = torch.zeros(2, dtype=torch.long) if model.conditional else None
    with torch.no_grad():
        out = model.unet(x, torch.tensor([0, 1]), class_labels=labels).sample
    if tuple(out.shape) != tuple(x.shape):
        _fail(cls, f"the UNet's prediction has shape {tuple(out.shape)} for images of shape {tuple(x.shape)}")
    if model.conditional and len(model.class_names) not in (0, model.num_classes):
        _fail(cls, f"{len(model.class_names)} class names for {model.num_classes} classes")
    if state_sha256(build(cls, options).load().unet) != state_sha256(model.unet):
        _fail(cls, "load() returned other weights the second time")


# --- metric ----------------------------------------------------------------------------------------


def _computed(metric: Metric, conditional: bool, judge: Any) -> dict[str, Any]:
    ctx = make_eval_context(tiny_model(conditional=conditional, seed=0), judge=judge, samples_per_class=2, steps=2)
    reference = ctx.sibling(tiny_model(conditional=conditional, seed=1))
    metric.prepare(ctx)
    out = {}
    for role, context in (("model", ctx), ("reference", reference)):
        values = metric.compute(context)
        if not isinstance(values, dict) or not all(isinstance(k, str) for k in values):
            raise ContractError(
                f"{type(metric).__qualname__}: compute must return a dict with string keys, not {type(values).__name__}"
            )
        out[role] = jsonable(values)
    return out


def metric_computes(cls: type[Component], options: Mapping[str, Any]) -> None:
    """``prepare`` and ``compute`` on tiny models; JSON values; the same on a fresh context."""
    needs = cls.needs_samples if issubclass(cls, Metric) else ()
    if not isinstance(needs, tuple) or not set(needs) <= {"forget", "kept"}:
        _fail(cls, f"needs_samples must be a tuple of 'forget' and/or 'kept', not {needs!r}")
    judge = tiny_judge(epochs=0)  # untrained: the contract is about shapes and determinism, not accuracy
    for conditional in (True, False):
        try:
            first = _computed(build(cls, options), conditional, judge)
        except UsageError as exc:
            if conditional:
                raise ContractSkipped(f"metric '{cls.name}' refused the tiny class-conditional model: {exc}") from None
            continue  # a metric may refuse unconditional models, in one line
        if _computed(build(cls, options), conditional, judge) != first:
            _fail(cls, "compute gave other values on a fresh context (draw from ctx.generator(stream))")
        json.dumps(first, allow_nan=True)


# --- attack ----------------------------------------------------------------------------------------


def _attacked(attack: Attack, conditional: bool, judge: Any, global_seed: int) -> dict[str, Any]:
    ctx = make_audit_context(tiny_model(conditional=conditional, seed=0), judge=judge, steps=2)
    contexts = {"model": ctx, "base": ctx.sibling(tiny_model(conditional=conditional, seed=1), role="base")}
    out = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(global_seed)  # an attack drawing from the global RNG gives other results per run
        attack.prepare(ctx)
        for role, context in contexts.items():
            digest = state_sha256(context.model.unet)
            values = attack.run(context)
            if not isinstance(values, dict) or not all(isinstance(k, str) for k in values):
                raise ContractError(
                    f"{type(attack).__qualname__}: run must return a dict with string keys, not {type(values).__name__}"
                )
            if state_sha256(context.model.unet) != digest:
                raise ContractError(
                    f"{type(attack).__qualname__}: run changed the model it attacks: work on a copy "
                    "(copy.deepcopy(ctx.model.unet))"
                )
            out[role] = jsonable(values)
    return out


def attack_runs(cls: type[Component], options: Mapping[str, Any]) -> None:
    """``prepare`` and ``run`` on tiny models for two roles; JSON values; models unchanged; the same on a
    fresh context under another global seed."""
    judge = tiny_judge(epochs=0)  # untrained: the contract is about shapes and determinism, not accuracy
    conditional_only = issubclass(cls, Attack) and cls.conditional_only
    for conditional in (True, False) if not conditional_only else (True,):
        try:
            first = _attacked(build(cls, options), conditional, judge, global_seed=1)
        except UsageError as exc:
            if conditional:
                raise ContractSkipped(f"attack '{cls.name}' refused the tiny class-conditional model: {exc}") from None
            continue  # an attack may refuse unconditional models, in one line
        if _attacked(build(cls, options), conditional, judge, global_seed=2) != first:
            _fail(
                cls,
                "run gave other values on a fresh context: draw every random number from ctx.generator(stream) or "
                "ctx.sample(..., stream=...), never the global torch RNG",
            )
        json.dumps(first, allow_nan=True)


# --- executor ----------------------------------------------------------------------------------------


def executor_runs(cls: type[Component], options: Mapping[str, Any]) -> None:
    """Two real cells through the executor: one that succeeds, one whose first command fails."""
    from concurrent.futures import Future

    from ..cells import CellOutcome, CellTask

    executor = build(cls, options)
    with tempfile.TemporaryDirectory(prefix="unlearnctl-executor-") as tmp:
        capacity = executor.start(1)
        try:
            if not isinstance(capacity, int) or capacity < 1:
                _fail(cls, f"start(1) must return how many cells may run at once (>= 1), not {capacity!r}")
            good = CellTask("good", (("--version",), ("list", "executors", "--json")), tmp, "logs/good.log")
            bad = CellTask("bad", (("no-such-command",), ("--version",)), tmp, "logs/bad.log")
            futures = {t.id: executor.submit(t) for t in (good, bad)}
            outcomes: dict[str, CellOutcome] = {}
            for key, future in futures.items():
                if not isinstance(future, Future):
                    _fail(cls, f"submit must return a concurrent.futures.Future, not {type(future).__name__}")
                outcomes[key] = future.result(timeout=600)
        finally:
            executor.close()
        ok, failed = outcomes["good"], outcomes["bad"]
        log = (Path(tmp) / "logs" / "good.log").read_text(encoding="utf-8", errors="replace")
        if not (ok.ok and ok.id == "good") or "unlearnctl" not in log or '"local"' not in log:
            _fail(cls, f"a cell of two good commands did not run both, with their output in its log: {ok}")
        bad_log = (Path(tmp) / "logs" / "bad.log").read_text(encoding="utf-8", errors="replace")
        if failed.ok or failed.returncode != 2 or failed.failed_command != "no-such-command" or not failed.log_tail:
            _fail(cls, f"a cell whose first command fails must end with that command's status and log: {failed}")
        if "$ unlearnctl --version" in bad_log:
            _fail(cls, "a cell went on after its first command failed")


#: the runtime checks of each kind, in the order they run
BUILTIN_CHECKS: dict[str, list[RuntimeCheck]] = {
    "dataset": [dataset_loads],
    "selector": [selector_selects],
    "method": [method_unlearns],
    "model": [model_loads],
    "metric": [metric_computes],
    "attack": [attack_runs],
    "executor": [executor_runs],
}
