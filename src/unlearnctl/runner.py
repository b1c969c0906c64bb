"""The shared unlearning runner (:class:`UnlearnRun`) and the ``forget`` / ``replay`` core functions.

A method's ``unlearn(run)`` gets an :class:`UnlearnRun`: the model and the forget/remain split, seeded
data streams, the optimizer, device and precision, gradient clipping, EMA, ``log.jsonl`` and the
lifecycle hooks. The method's own update reads top to bottom in its ``unlearn``; everything it shares
with other methods is here.

Randomness: every random draw (batches, timesteps, noise, surrogate classes, sample grids) comes from
a seeded CPU ``torch.Generator`` and is moved to the device afterwards, so a CPU run is bit-for-bit
reproducible from its seed (``replay --verify`` checks it). Each stream has its own generator seeded
by :func:`stream_seed` from the run's ``--seed``: changing how many numbers a method draws per step does
not change which batches it sees.

:func:`forget` is two phases: :func:`prepare_forget` validates everything and loads the inputs
without writing anything (bad input = one :class:`~unlearnctl.errors.UsageError`), then
:func:`run_forget` does the work inside an atomic run folder.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import torch
from diffusers.training_utils import EMAModel

from .components import Method, Options
from .config import resolve_options
from .data import ForgetSplit, ImageSet, split_forget
from .diffusion import sample, sample_timesteps
from .errors import UnlearnError, UsageError
from .manifest import (
    ComponentConfig,
    DatasetRecord,
    Environment,
    ForgetSetRecord,
    Manifest,
    ReplayRecord,
    SamplesRecord,
    SelectorConfig,
    WeightsRecord,
    collect_environment,
    read_manifest,
)
from .models import DiffusionModel, folder_sha256, state_sha256
from .rundir import atomic_run_dir, check_new_folder, default_run_dir
from .sampling import SampleOptions

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")
DEFAULT_MODEL = "ddpm-digits"
DEFAULT_METHOD = "erasediff"
LOG_FILE = "log.jsonl"
MODEL_DIR = "model"
SAMPLES_DIR = "samples"
#: kept classes shown in the sample grids next to the forgotten ones
GRID_KEPT_CLASSES = 3
#: the sampler of the before/after grids: the tool's defaults (``sampling.SampleOptions``)
GRID_SAMPLER = SampleOptions()


class VerificationError(UnlearnError):
    """``replay`` found a recorded input or output that does not match (exit code 1)."""


# --- device, precision, seeds -------------------------------------------------------------------


def resolve_device(requested: str = "auto") -> torch.device:
    """``auto`` -> cuda, then mps, then cpu; ``cpu``, ``cuda``, ``cuda:1``, ``mps`` as given, if available."""
    req = (requested or "auto").strip().lower()
    if req == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(req)
    except RuntimeError:
        raise UsageError(f"unknown device '{requested}': use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device '{requested}' is not available (no CUDA device found): use --device cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UsageError(f"device '{requested}' does not exist: {torch.cuda.device_count()} CUDA device(s) found")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"device '{requested}' is not available (no MPS device): use --device cpu or auto")
    if device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"unsupported device '{requested}': use auto, cpu, cuda, cuda:N or mps")
    return device


def check_precision(precision: str, device: torch.device) -> Precision:
    """fp32 everywhere; bf16 and fp16 (autocast, fp32 master weights) on cuda and mps only."""
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision '{precision}': use fp32, bf16 or fp16")
    if precision != "fp32" and device.type == "cpu":
        raise UsageError(f"--precision {precision} needs a cuda or mps device; on cpu use --precision fp32")
    return precision  # type: ignore[return-value]


def stream_seed(seed: int, stream: str) -> int:
    """The seed of one random stream of a run: the first 63 bits of ``sha256("unlearnctl:<seed>:<stream>")``."""
    digest = hashlib.sha256(f"unlearnctl:{seed}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


#: the random streams of a run (recorded in the manifest's ``seeds``)
STREAMS = ("method", "remain", "forget", "samples")


def seeded_generator(seed: int, stream: str) -> torch.Generator:
    return torch.Generator().manual_seed(stream_seed(seed, stream))


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch CPU threads set to ``n`` inside the block (None: unchanged)."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _set_determinism(device: torch.device) -> None:
    """Deterministic kernels where the device needs asking (CPU kernels used here are deterministic)."""
    if device.type == "cuda":
        # cuBLAS reads this when its first handle is created; it must be set before any CUDA work.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)


# --- the runner that methods use ----------------------------------------------------------------


class UnlearnRun:
    """What a method's ``unlearn(run)`` works with. See ``docs/forget.md`` for the contract.

    Attributes set for the method: ``model`` (its UNet on ``device``, train mode), ``split``,
    ``device``, ``precision``, ``generator`` (seeded CPU generator for the method's own draws),
    ``total_steps``, ``ema`` (after :meth:`use_ema`), ``optimizer`` (after :meth:`make_optimizer`).
    For progress and trackers: ``description``, ``out_dir`` (the folder being written; the final
    folder once the run is finished), ``config`` (the resolved configuration) and ``seed``.
    """

    def __init__(
        self,
        model: DiffusionModel,
        split: ForgetSplit,
        *,
        seed: int = 0,
        total_steps: int | None = None,
        device: torch.device | str = "cpu",
        precision: Precision = "fp32",
        out_dir: Path | None = None,
        description: str = "unlearn",
        config: dict[str, Any] | None = None,
        hook: Any = None,
    ) -> None:
        self.model, self.split = model, split
        self.seed = seed
        self.total_steps = total_steps
        self.device = torch.device(device)
        self.precision: Precision = check_precision(precision, self.device)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.description = description
        self.config: dict[str, Any] = dict(config or {})
        self.hook = hook
        self.generator = seeded_generator(seed, "method")
        self.optimizer: torch.optim.Optimizer | None = None
        self.ema: EMAModel | None = None
        self.save_ema = False
        #: optimizer steps actually taken (a step skipped for an fp16 overflow does not count)
        self.optimizer_steps = 0
        #: the values of the last :meth:`log` call (the manifest's final losses)
        self.last_values: dict[str, float] = {}
        self._loss_scale = 2.0**16 if self.precision == "fp16" else 1.0
        self._start = time.perf_counter()
        self.model.unet.to(self.device).train()

    # -- data and randomness ---------------------------------------------------------------------

    def batches(
        self, which: Literal["remain", "forget"], batch_size: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Endless ``(x0, labels)`` batches of the remaining or the forget set, on the device.

        Seeded shuffling from the stream's own generator, a new permutation each epoch; a batch is
        ``min(batch_size, len(set))`` items (the tail of an epoch that does not fill one is skipped).
        """
        from .training import batches

        if which not in ("remain", "forget"):
            raise ValueError(f"run.batches: which must be 'remain' or 'forget', not {which!r}")
        data = self.split.remain if which == "remain" else self.split.forget
        for x0, labels in batches(data, batch_size, seeded_generator(self.seed, which)):
            yield x0.to(self.device), labels.to(self.device)

    def timesteps(self, n: int, antithetic: bool = True) -> torch.Tensor:
        """``n`` timesteps ~ U{0..T-1} on the device (antithetic: t and T-1-t, the authors' setting)."""
        T = self.model.scheduler.config.num_train_timesteps
        return sample_timesteps(n, T, self.generator, antithetic).to(self.device)

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        """eps ~ N(0, I) shaped like ``x``, drawn on CPU from ``run.generator``."""
        return torch.randn(x.shape, generator=self.generator).to(device=x.device, dtype=x.dtype)

    def rand_like(self, x: torch.Tensor) -> torch.Tensor:
        """u ~ U[0, 1) shaped like ``x``, drawn on CPU from ``run.generator``."""
        return torch.rand(x.shape, generator=self.generator).to(device=x.device, dtype=x.dtype)

    def sample_noise_and_t(self, x0: torch.Tensor, antithetic: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """``(noise, t)`` for a batch: t as :meth:`timesteps`, noise ~ N(0, I)."""
        t = self.timesteps(len(x0), antithetic)
        return self.randn_like(x0), t

    # -- optimisation ----------------------------------------------------------------------------

    def make_optimizer(
        self,
        params: Any,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
    ) -> torch.optim.Optimizer:
        """Adam (the authors' optimizer), or AdamW when ``weight_decay`` > 0."""
        params = list(params)
        if weight_decay > 0:
            self.optimizer = torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay)
        else:
            self.optimizer = torch.optim.Adam(params, lr=lr, betas=betas)
        return self.optimizer

    def use_ema(self, decay: float, save: bool = True) -> EMAModel | None:
        """Keep an exponential moving average of the UNet's weights with a fixed ``decay``.

        It starts from the weights the run was given (a model folder holds one set of weights: for the
        built-in models, the EMA weights of their training) and follows every optimizer step:
        ``ema <- decay * ema + (1 - decay) * theta``. With ``save`` the EMA weights are what the run
        saves (``manifest.weights.saved_weights = "ema"``), else the raw weights. ``decay`` 0: no EMA.
        """
        if decay <= 0:
            self.ema, self.save_ema = None, False
            return None
        # min_decay = decay and update_after_step = -1 make diffusers' EMAModel use the fixed rate from
        # the first step (its default warm-up would copy the weights at step 1, then ramp (1+n)/(10+n)).
        self.ema = EMAModel(self.model.unet.parameters(), decay=decay, min_decay=decay, update_after_step=-1)
        self.ema.to(self.device)
        self.save_ema = save
        return self.ema

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Mixed-precision autocast for forward passes (bf16/fp16); a no-op in fp32."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def grads(self, loss: torch.Tensor, params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Gradients of ``loss`` w.r.t. ``params`` (zeros where unused), unscaled, in fp32.

        For methods that need gradients separately (EraseDiff's g_F and g_q) before combining them
        with :meth:`apply_gradients`. In fp16 the loss is scaled before the backward pass.
        """
        scaled = loss * self._loss_scale if self._loss_scale != 1.0 else loss
        gs = torch.autograd.grad(scaled, list(params), allow_unused=True)
        inv = 1.0 / self._loss_scale
        return [
            torch.zeros_like(p) if g is None else (g.float() * inv if inv != 1.0 else g)
            for g, p in zip(gs, params, strict=True)
        ]

    def apply_gradients(
        self, optimizer: torch.optim.Optimizer, grads: Sequence[torch.Tensor], clip: float = 1.0
    ) -> float:
        """Set the optimizer's parameters' ``.grad`` to ``grads``, clip the global norm, step, update the EMA.

        Returns the gradient norm before clipping. In fp16 a step whose gradients overflowed is skipped
        and the loss scale halved; in fp32/bf16 a non-finite gradient is an error.
        """
        params = [p for group in optimizer.param_groups for p in group["params"]]
        if len(params) != len(grads):
            raise ValueError(f"apply_gradients: {len(grads)} gradients for {len(params)} parameters")
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        norm = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else float("inf"))
        if not torch.isfinite(norm):
            if self.precision == "fp16":
                self._loss_scale /= 2.0
                optimizer.zero_grad(set_to_none=True)
                return float(norm)
            raise FloatingPointError(
                f"gradient became {float(norm)} at optimizer step {self.optimizer_steps + 1}: lower the learning rate"
            )
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        self.optimizer_steps += 1
        if self.ema is not None:
            self.ema.step(self.model.unet.parameters())
        return float(norm)

    def backward_step(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor, clip: float = 1.0) -> float:
        """Backward, gradient-norm clip (``clip`` 0: off), optimizer step, EMA update; returns the grad norm."""
        params = [p for group in optimizer.param_groups for p in group["params"]]
        return self.apply_gradients(optimizer, self.grads(loss, params), clip)

    # -- progress --------------------------------------------------------------------------------

    def steps(self) -> Iterator[int]:
        """The outer steps ``1..total_steps``."""
        if self.total_steps is None:
            raise ValueError("run.total_steps is not set: the method must declare a `steps` option")
        return iter(range(1, self.total_steps + 1))

    def log(self, step: int, values: dict[str, float]) -> None:
        """Append one line to ``log.jsonl`` (step, values, learning rate, elapsed seconds) and tell the hooks."""
        line: dict[str, Any] = {"step": step}
        line.update({k: (float(v) if isinstance(v, torch.Tensor) else v) for k, v in values.items()})
        if self.optimizer is not None and "lr" not in line:
            line["lr"] = self.optimizer.param_groups[0]["lr"]
        line["time"] = round(time.perf_counter() - self._start, 4)
        self.last_values = {k: v for k, v in line.items() if k not in ("step", "time", "lr")}
        if self.out_dir is not None:
            with open(self.out_dir / LOG_FILE, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(line) + "\n")
        if self.hook is not None:
            self.hook.step_logged(run=self, step=step, values=line)

    # -- end -------------------------------------------------------------------------------------

    def finish(self) -> Literal["ema", "raw"]:
        """Put the weights to save into the UNet (the EMA's, when kept and asked for); say which."""
        if self.ema is not None and self.save_ema:
            self.ema.copy_to(self.model.unet.parameters())
            return "ema"
        return "raw"


# --- forget: requests, preparation, execution ----------------------------------------------------


@dataclass
class ForgetRequest:
    """What ``unlearnctl forget`` was asked to do (CLI values, unvalidated)."""

    model: str = DEFAULT_MODEL
    dataset: str | None = None
    #: ``--data-dir``: the folder of the dataset's files (None: ``unlearnctl.paths.data_dir()``)
    data_dir: Path | None = None
    #: ``--data-option KEY=VALUE``, repeatable (or already-parsed values): the dataset's options
    data_options: list[str] | dict[str, Any] = field(default_factory=list)
    #: ``--classes 2,5`` (shorthand for the ``classes`` selector)
    classes: str | None = None
    #: ``--forget NAME:ARGS``, repeatable (union)
    forget: list[str] = field(default_factory=list)
    method: str = DEFAULT_METHOD
    sets: list[str] = field(default_factory=list)
    config: Path | None = None
    out: Path | None = None
    seed: int = 0
    steps: int | None = None
    device: str = "auto"
    precision: str = "fp32"
    #: images per class in each before/after sample grid (0: no grids)
    grid_per_class: int = 8
    #: torch CPU threads; None: 1 on a CPU device (see docs/forget.md), torch's default on an accelerator
    threads: int | None = None
    #: the command line (argv without the program name) recorded in the manifest
    command: list[str] | None = None


@dataclass
class PreparedForget:
    """Everything validated and loaded; nothing written yet."""

    request: ForgetRequest
    registry: Any
    model: DiffusionModel
    model_preset: ComponentConfig | None
    model_path: Path | None
    data: ImageSet
    dataset: DatasetRecord
    split: ForgetSplit
    selectors: list[SelectorConfig]
    method: Method
    method_config: ComponentConfig
    device: torch.device
    precision: Precision
    out: Path
    input_sha256: str
    command: list[str]
    #: set by replay: the run replayed, and whether to compare the output sha256 with it
    replay_of: ReplayRecord | None = None
    verify: bool = False


@dataclass
class ForgetResult:
    """What :func:`run_forget` returns."""

    run_dir: Path
    manifest: Manifest


def _options_dict(options: Options) -> dict[str, Any]:
    return options.model_dump(mode="json", by_alias=True)


def _component_config(registry: Any, kind: str, component: Any) -> ComponentConfig:
    info = registry.get(kind, component.name)
    return ComponentConfig(name=component.name, provider=info.provider, options=_options_dict(component.options))


def _resolve_method(
    registry: Any,
    name: str,
    config: dict[str, Any] | None,
    sets: Sequence[str] | dict[str, Any] | None,
    steps: int | None,
) -> Method:
    from .config import parse_set_values

    cls = registry.get("method", name).cls
    set_values = dict(sets) if isinstance(sets, dict) else parse_set_values(list(sets or []))
    if steps is not None:
        if "steps" not in cls.Options.model_fields:
            raise UsageError(f"method '{name}' has no `steps` option, so --steps does not apply to it")
        set_values["steps"] = steps
    return cls(resolve_options(cls, config=config, sets=set_values))


def _check_model_data(model: DiffusionModel, data: ImageSet, model_spec: str) -> None:
    if (data.image_size, data.channels) != (model.image_size, model.channels):
        raise UsageError(
            f"dataset '{data.name}' has {data.channels}x{data.image_size}x{data.image_size} images but model "
            f"'{model_spec}' expects {model.channels}x{model.image_size}x{model.image_size}: pick the dataset the "
            "model was trained on (--dataset)"
        )
    if model.conditional and data.num_classes != model.num_classes:
        raise UsageError(
            f"model '{model_spec}' is conditioned on {model.num_classes} classes but dataset '{data.name}' has "
            f"{data.num_classes}: pick the dataset the model was trained on (--dataset)"
        )


def _selectors(
    registry: Any, data: ImageSet, classes: str | None, forget: Sequence[str]
) -> tuple[set[str], list[SelectorConfig]]:
    """Run ``--classes`` and every ``--forget NAME:ARGS``; the union of their ids and their records."""
    from .loading import select_forget

    ids, selections = select_forget(data, forget, classes, registry)
    records = [
        SelectorConfig(name=s.name, provider=s.provider, options=s.options, argument=s.argument) for s in selections
    ]
    return ids, records


def _select_recorded(registry: Any, data: ImageSet, records: Sequence[SelectorConfig]) -> set[str]:
    """Re-run recorded selectors from their resolved options (replay)."""
    ids: set[str] = set()
    for rec in records:
        ids |= set(registry.create("selector", rec.name, rec.options).select(data))
    return ids


def _load_model(registry: Any, spec: str) -> tuple[DiffusionModel, ComponentConfig | None, Path | None]:
    """``--model`` (a preset, a diffusers or run folder, a hub id): the model, its preset record, its folder."""
    from .loading import load_model, resolve_model_folder

    model = load_model(spec, registry)
    preset = None
    if resolve_model_folder(spec) is None and spec in registry.names("model"):
        info = registry.get("model", spec)
        preset = ComponentConfig(name=spec, provider=info.provider, options=_options_dict(info.cls.Options()))
    return model, preset, Path(model.path).resolve() if model.path else None


def resolve_data_dir(data_dir: Path | str | None) -> Path | None:
    """``--data-dir`` as an absolute folder (None: not given, the datasets' default folder)."""
    if data_dir is None:
        return None
    path = Path(data_dir).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise UsageError(f"--data-dir '{data_dir}' is a file, not a folder")
    return path


def _load_dataset(
    registry: Any, name: str, options: dict[str, Any] | None = None, data_dir: Path | None = None
) -> tuple[ImageSet, DatasetRecord]:
    """The train split of dataset ``name``, and its manifest record (data warnings included)."""
    from .loading import load_dataset_warned

    data, warnings = load_dataset_warned(name, "train", data_dir, options, registry)
    info = registry.get("dataset", name)
    record = DatasetRecord(
        name=name,
        version=data.version or getattr(info.cls, "version", "") or "",
        split="train",
        size=len(data),
        fingerprint=data.fingerprint(),
        options=_options_dict(resolve_options(info.cls, config=options or {})),
        provider=info.provider,
        data_dir=str(data_dir) if data_dir is not None else None,
        warnings=warnings,
    )
    return data, record


def prepare_forget(request: ForgetRequest, registry: Any = None) -> PreparedForget:
    """Validate the whole request and load its inputs. Writes nothing; bad input raises ``UsageError``.

    Order: cheap checks first (device, precision, method and its options, output folder), then the
    model, the dataset and the forget set, then the method's own check against them.
    """
    from .config import load_config_file
    from .loading import dataset_options, parse_data_options
    from .registry import get_registry

    registry = registry if registry is not None else get_registry()
    req = request
    # 1. device and precision; the shape of --data-dir and --data-option
    data_dir = resolve_data_dir(req.data_dir)
    parse_data_options(req.data_options)
    device = resolve_device(req.device)
    precision = check_precision(req.precision, device)
    if req.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {req.seed}")
    if req.steps is not None and req.steps < 1:
        raise UsageError(f"--steps must be >= 1, got {req.steps}")
    if req.threads is not None and req.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {req.threads}")
    # 2. the method and its options: defaults < --config FILE < --set < --steps
    config = load_config_file(req.config) if req.config is not None else None
    method = _resolve_method(registry, req.method, config, req.sets, req.steps)
    method_config = _component_config(registry, "method", method)
    # 3. the output folder must not exist
    out = Path(req.out) if req.out is not None else default_run_dir(method.name, req.model)
    check_new_folder(out)
    # 4. the model, its dataset, the forget set
    model, preset, model_path = _load_model(registry, req.model)
    if type(method).conditional_only and not model.conditional:
        raise UsageError(f"method '{method.name}' needs a class-conditional model; '{req.model}' is unconditional")
    dataset_name = req.dataset or model.default_dataset
    if not dataset_name:
        raise UsageError(f"model '{req.model}' does not name its training data: pass --dataset NAME")
    data_options = dataset_options(dataset_name, req.data_options, registry=registry)
    data, dataset_record = _load_dataset(registry, dataset_name, data_options, data_dir)
    _check_model_data(model, data, req.model)
    forget_ids, selectors = _selectors(registry, data, req.classes, req.forget)
    split = split_forget(data, forget_ids)
    # 5. the method's own check against the model and the split (it may resolve 'auto' options)
    check = getattr(method, "check", None)
    if callable(check):
        check(model, split)
        method_config = _component_config(registry, "method", method)
    command = list(req.command) if req.command is not None else list(sys.argv[1:])
    return PreparedForget(
        request=req,
        registry=registry,
        model=model,
        model_preset=preset,
        model_path=model_path,
        data=data,
        dataset=dataset_record,
        split=split,
        selectors=selectors,
        method=method,
        method_config=method_config,
        device=device,
        precision=precision,
        out=out,
        input_sha256=state_sha256(model.unet),
        command=command,
    )


def _grid_classes(model: DiffusionModel, split: ForgetSplit) -> tuple[list[int], list[int]]:
    """Forgotten classes and up to ``GRID_KEPT_CLASSES`` kept classes, spread over the kept ones."""
    if not model.conditional:
        return [], []
    forgotten = list(split.forget_classes)
    if not forgotten:  # not whole classes: show the classes most represented in the forget set
        counts: dict[int, int] = {}
        for lbl in split.forget.labels:
            if lbl >= 0:
                counts[lbl] = counts.get(lbl, 0) + 1
        forgotten = sorted(sorted(counts, key=lambda c: (-counts[c], c))[:GRID_KEPT_CLASSES])
    kept_all = [c for c in split.remain_classes if c not in forgotten]
    if len(kept_all) > GRID_KEPT_CLASSES:
        stride = len(kept_all) / GRID_KEPT_CLASSES
        kept = [kept_all[int(i * stride)] for i in range(GRID_KEPT_CLASSES)]
    else:
        kept = kept_all
    return forgotten, kept


def _write_grids(
    model: DiffusionModel,
    classes: tuple[list[int], list[int]],
    n: int,
    seed: int,
    device: torch.device,
    folder: Path,
    phase: str,
) -> dict[str, str]:
    """Sample ``n`` images per class (same seed before and after, so the grids compare image by image)."""
    from .sampling import save_grid, save_labelled_grid

    if n <= 0:
        return {}
    o = GRID_SAMPLER
    settings = {"sampler": o.sampler, "steps": o.steps, "guidance": o.guidance, "eta": o.eta}
    settings.update(clip_sample=o.clip_sample, batch_size=o.batch_size, device=device)
    files: dict[str, str] = {}
    forgotten, kept = classes
    groups = {"forgotten": forgotten, "kept": kept} if model.conditional else {"samples": []}
    for group, group_classes in groups.items():
        if model.conditional and not group_classes:
            continue
        generator = seeded_generator(seed, "samples")
        name = f"{group}-{phase}.png"
        if model.conditional:
            labels = torch.tensor([c for c in group_classes for _ in range(n)], dtype=torch.long)
            images = sample(model, len(labels), labels, generator=generator, **settings)
            names = [model.class_names[c] if c < len(model.class_names) else str(c) for c in group_classes]
            save_labelled_grid(images, names, folder / name, nrow=n)
        else:
            images = sample(model, 4 * n, None, generator=generator, **settings)
            save_grid(images, folder / name, nrow=n)
        files[f"{group}-{phase}"] = f"{SAMPLES_DIR}/{name}"
    return files


def run_forget(prepared: PreparedForget) -> ForgetResult:
    """Run the prepared method and write the run folder atomically (``manifest.json`` last)."""
    threads = prepared.request.threads
    if threads is None and prepared.device.type == "cpu":
        threads = 1
    with torch_threads(threads):
        return _run_forget(prepared)


def _run_forget(prepared: PreparedForget) -> ForgetResult:
    p = prepared
    req = p.request
    hook = p.registry.hook
    _set_determinism(p.device)
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    model = p.model
    grid_classes = _grid_classes(model, p.split)
    with atomic_run_dir(p.out) as tmp:
        runner_config = {
            "steps": getattr(p.method.options, "steps", None),
            "device": p.device.type,
            "precision": p.precision,
            "grid_per_class": req.grid_per_class,
            "threads": torch.get_num_threads(),
        }
        run = UnlearnRun(
            model,
            p.split,
            seed=req.seed,
            total_steps=getattr(p.method.options, "steps", None),
            device=p.device,
            precision=p.precision,
            out_dir=tmp,
            description=f"{p.method.name} {req.model}",
            config={"method": p.method_config.model_dump(), "runner": runner_config},
            hook=hook,
        )
        (tmp / LOG_FILE).touch()
        # 1. samples of the input model (the same seed is used after, image for image)
        samples = _write_grids(model, grid_classes, req.grid_per_class, req.seed, p.device, tmp / SAMPLES_DIR, "before")
        # 2. the method
        hook.run_started(run=run)
        model.unet.train()
        p.method.unlearn(run)
        saved = run.finish()
        model.unet.eval()
        # 3. samples of the unlearned model, then the model folder
        samples.update(
            _write_grids(model, grid_classes, req.grid_per_class, req.seed, p.device, tmp / SAMPLES_DIR, "after")
        )
        model.unet.to("cpu")
        output_sha = state_sha256(model.unet)
        replay_of = p.replay_of
        if replay_of is not None and p.verify:
            replay_of = replay_of.model_copy(update={"verified": output_sha == replay_of.output_sha256})
        out_model = _output_model(model, p, saved)
        out_model.save(tmp / MODEL_DIR)
        # 4. the manifest, last
        finished = datetime.now(UTC)
        manifest = Manifest(
            kind="forget",
            command=p.command,
            seed=req.seed,
            seeds={s: stream_seed(req.seed, s) for s in STREAMS},
            method=p.method_config,
            runner=runner_config,
            dataset=p.dataset,
            forget=ForgetSetRecord(
                selectors=p.selectors,
                size=len(p.split.forget),
                fingerprint=p.split.forget_fingerprint,
                remain_size=len(p.split.remain),
                forget_classes=list(p.split.forget_classes),
            ),
            weights=WeightsRecord(
                model=req.model,
                model_path=str(p.model_path) if p.model_path else None,
                preset=p.model_preset,
                input_sha256=p.input_sha256,
                output_sha256=output_sha,
                output_files_sha256=folder_sha256(tmp / MODEL_DIR),
                saved_weights=saved,
            ),
            environment=collect_environment(req.device, p.device, p.precision),
            samples=SamplesRecord(
                files=samples,
                forgotten_classes=grid_classes[0],
                kept_classes=grid_classes[1],
                per_class=req.grid_per_class,
                seed=stream_seed(req.seed, "samples"),
                sampler=GRID_SAMPLER.model_dump(mode="json"),
            )
            if samples
            else None,
            started_at=started,
            finished_at=finished,
            wall_time_s=round(time.perf_counter() - t0, 3),
            optimizer_steps=run.optimizer_steps,
            final_losses={k: float(v) for k, v in run.last_values.items() if _is_number(v)},
            replay_of=replay_of,
        )
        manifest.write(tmp)
    run.out_dir = p.out
    hook.run_finished(run=run, result=manifest)
    return ForgetResult(run_dir=p.out, manifest=manifest)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))


def _output_model(model: DiffusionModel, p: PreparedForget, saved: str) -> DiffusionModel:
    """The unlearned model with its ``unlearnctl.json``: which weights were saved and where they came from."""
    extra = {k: v for k, v in model.extra.items() if k not in ("weights", "ema_decay", "unlearned")}
    extra["weights"] = saved
    if saved == "ema":
        extra["ema_decay"] = getattr(p.method.options, "ema_decay", None)
    extra["base_model"] = p.request.model
    extra["unlearned"] = {
        "method": p.method.name,
        "forget": [s.name + (f":{s.argument}" if s.argument else "") for s in p.selectors],
        "forget_classes": list(p.split.forget_classes),
        "input_sha256": p.input_sha256,
    }
    if model.judge_path is not None:
        extra["judge"] = str(Path(model.judge_path).resolve())
    out = copy.copy(model)
    out.extra = extra
    out.default_dataset = p.dataset.name
    return out


def forget(request: ForgetRequest, registry: Any = None) -> ForgetResult:
    """``unlearnctl forget``: validate everything, then run and write the run folder."""
    return run_forget(prepare_forget(request, registry))


# --- replay ---------------------------------------------------------------------------------------


@dataclass
class PreparedReplay:
    original: Manifest
    manifest_path: Path
    prepared: PreparedForget
    #: differences between the recorded environment and this one (warnings)
    warnings: list[str]
    verify: bool


@dataclass
class ReplayResult:
    run_dir: Path
    manifest: Manifest
    original: Manifest
    warnings: list[str]
    #: True: output sha256 matches; None: not checked (no --verify)
    verified: bool | None


def environment_differences(recorded: Environment, current: Environment) -> list[str]:
    """Human-readable differences that may change results."""
    out = []
    for key in (
        "python",
        "platform",
        "git_commit",
        "device",
        "device_name",
        "cuda_version",
        "cudnn_version",
        "deterministic_algorithms",
        "cudnn_deterministic",
        "num_threads",
    ):
        a, b = getattr(recorded, key), getattr(current, key)
        if a != b:
            out.append(f"{key}: recorded {a!r}, now {b!r}")
    if current.git_dirty:
        out.append("git_dirty: the unlearnctl source tree has uncommitted changes now")
    for name in sorted(set(recorded.packages) | set(current.packages)):
        a, b = recorded.packages.get(name), current.packages.get(name)
        if a != b:
            out.append(f"package {name}: recorded {a}, now {b}")
    for name in sorted(set(recorded.env) | set(current.env)):
        a, b = recorded.env.get(name), current.env.get(name)
        if a != b:
            out.append(f"environment variable {name}: recorded {a!r}, now {b!r}")
    return out


def prepare_replay(
    manifest_path: Path,
    *,
    out: Path | None = None,
    device: str | None = None,
    verify: bool = False,
    registry: Any = None,
    command: list[str] | None = None,
    data_dir: Path | None = None,
) -> PreparedReplay:
    """Read a manifest, check inputs against it, and prepare the same run. Writes nothing.

    The dataset is read with its recorded options from ``data_dir`` (``--data-dir``), else from the
    recorded folder; its fingerprint must match the recorded one either way.

    Raises :class:`VerificationError` when the dataset, the forget set or the input weights differ
    from what the manifest recorded, and ``UsageError`` when ``verify`` cannot be exact.
    """
    from .registry import get_registry

    registry = registry if registry is not None else get_registry()
    path = Path(manifest_path)
    original = read_manifest(path)
    if original.kind != "forget" or original.method is None or original.forget is None:
        raise UsageError(f"'{path}' records a '{original.kind}' run; replay reruns `forget` runs only")
    rec_env = original.environment
    dev = resolve_device(device or rec_env.device)
    if verify and dev.type != rec_env.device:
        raise UsageError(
            f"the run was recorded on {rec_env.device}; a run on {dev.type} cannot be bit-identical to it: "
            f"replay without --verify, or on a {rec_env.device} device"
        )
    precision = check_precision(rec_env.precision, dev)
    current = collect_environment(device or rec_env.device_requested, dev, precision)
    warnings = environment_differences(rec_env, current)

    # 1. method with its recorded resolved options
    method = _resolve_method(registry, original.method.name, original.method.options, None, None)
    out = Path(out) if out is not None else default_run_dir(f"replay-{method.name}", original.weights.model)
    check_new_folder(out)
    # 2. inputs: weights, dataset, forget set -- each must hash to what was recorded
    spec = original.weights.model
    model_spec = spec
    if original.weights.preset is None and original.weights.model_path and not Path(spec).expanduser().is_dir():
        model_spec = original.weights.model_path  # a relative folder given elsewhere: use the resolved path
    model, preset, model_path = _load_model(registry, model_spec)
    input_sha = state_sha256(model.unet)
    if original.weights.input_sha256 and input_sha != original.weights.input_sha256:
        raise VerificationError(
            f"input weights of '{model_spec}' differ from the recorded ones (sha256 {input_sha[:12]}... vs "
            f"{original.weights.input_sha256[:12]}...): the model changed since the run"
        )
    recorded_dir = original.dataset.data_dir
    replay_dir = resolve_data_dir(data_dir if data_dir is not None else recorded_dir)
    data, dataset_record = _load_dataset(registry, original.dataset.name, original.dataset.options, replay_dir)
    if dataset_record.fingerprint != original.dataset.fingerprint:
        raise VerificationError(
            f"dataset '{original.dataset.name}' differs from the recorded one (fingerprint "
            f"{dataset_record.fingerprint[:12]}... vs {original.dataset.fingerprint[:12]}...)"
        )
    _check_model_data(model, data, model_spec)
    forget_ids = _select_recorded(registry, data, original.forget.selectors)
    split = split_forget(data, forget_ids)
    if split.forget_fingerprint != original.forget.fingerprint:
        raise VerificationError(
            f"the selectors now choose a different forget set ({len(split.forget)} items, fingerprint "
            f"{split.forget_fingerprint[:12]}...) than recorded ({original.forget.size} items, "
            f"{original.forget.fingerprint[:12]}...)"
        )
    check = getattr(method, "check", None)
    if callable(check):
        check(model, split)
    method_config = _component_config(registry, "method", method)
    if method_config.options != original.method.options:
        raise VerificationError(f"method '{method.name}' resolves the recorded options differently now")
    request = ForgetRequest(
        model=spec,
        dataset=original.dataset.name,
        data_dir=replay_dir,
        data_options=dict(original.dataset.options),
        method=method.name,
        out=out,
        seed=original.seed,
        device=device or rec_env.device_requested,
        precision=precision,
        grid_per_class=int(original.runner.get("grid_per_class", 0)),
        threads=rec_env.num_threads,  # CPU sums depend on the thread count: use the recorded one
        command=list(command) if command is not None else list(sys.argv[1:]),
    )
    prepared = PreparedForget(
        request=request,
        registry=registry,
        model=model,
        model_preset=preset,
        model_path=model_path,
        data=data,
        dataset=dataset_record,
        split=split,
        selectors=list(original.forget.selectors),
        method=method,
        method_config=method_config,
        device=dev,
        precision=precision,
        out=out,
        input_sha256=input_sha,
        command=request.command or [],
        replay_of=ReplayRecord(
            manifest=str(path.resolve()),
            output_sha256=original.weights.output_sha256,
            verified=None,
        ),
    )
    return PreparedReplay(original, path, prepared, warnings, verify)


def run_replay(prepared: PreparedReplay) -> ReplayResult:
    """Rerun; with ``verify``, compare the output weights' sha256 with the recorded one.

    The new run folder is written either way (its manifest's ``replay_of.verified`` says whether the
    output matched); a mismatch then raises :class:`VerificationError`.
    """
    p = prepared
    p.prepared.verify = p.verify
    result = run_forget(p.prepared)
    record = result.manifest.replay_of
    verified = record.verified if record is not None and p.verify else None
    if verified is False:
        where = (
            ""
            if p.prepared.device.type == "cpu"
            else (f" ({p.prepared.device.type} kernels are not guaranteed to be bit-identical)")
        )
        raise VerificationError(
            f"output weights differ from the recorded run: sha256 {result.manifest.weights.output_sha256[:16]}... "
            f"vs {(p.original.weights.output_sha256 or '')[:16]}...{where}; the new run is in '{result.run_dir}'"
        )
    return ReplayResult(result.run_dir, result.manifest, p.original, p.warnings, verified)


def replay(
    manifest_path: Path,
    *,
    verify: bool = False,
    out: Path | None = None,
    device: str | None = None,
    registry: Any = None,
    data_dir: Path | None = None,
) -> ReplayResult:
    """``unlearnctl replay``: rerun a recorded ``forget`` run (see :func:`prepare_replay`, :func:`run_replay`)."""
    return run_replay(
        prepare_replay(manifest_path, out=out, device=device, verify=verify, registry=registry, data_dir=data_dir)
    )
