"""Training a class-conditional DDPM from scratch: the ``train`` command and the ``retrain`` baseline.

The loop in :func:`train_model` is the plain DDPM recipe (Ho et al. 2020, Algorithm 1) with
classifier-free guidance training (Ho & Salimans 2022): each label is replaced by the null class with
probability ``class_dropout`` so that one network learns eps(x_t, t, c) and eps(x_t, t, null).
The weights saved are the exponential moving average (``diffusers.training_utils.EMAModel``).
"""

from __future__ import annotations

import difflib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from pydantic import ValidationError

from .checkpoints import StepLoop
from .data.batching import BatchStream
from .data.sets import ImageSet
from .diffusion import ddpm_loss, drop_labels, sample_timesteps
from .distributed import SINGLE, World, all_reduce_mean_, mean_values
from .errors import NonFiniteError, OptionError
from .models.folder import DiffusionModel
from .runtime import prepare_module, stream_seed

# re-exported: defined apart so that they import without torch (docs/performance.md, "Start-up")
from .train_options import ARCHITECTURES as ARCHITECTURES
from .train_options import Arch as Arch
from .train_options import TrainOptions as TrainOptions


def build_unet(arch: str, image_size: int, channels: int, num_classes: int, seed: int = 0) -> UNet2DModel:
    """A freshly initialised ``UNet2DModel`` of preset ``arch`` (``num_classes`` = 0: unconditional).

    Conditional models get ``num_classes + 1`` class embeddings; the last is the null class.
    Initialisation is seeded without touching torch's global random state.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet2DModel(
            sample_size=image_size,
            in_channels=channels,
            out_channels=channels,
            num_class_embeds=num_classes + 1 if num_classes else None,
            **ARCHITECTURES[arch],
        )


def build_scheduler(options: TrainOptions) -> DDPMScheduler:
    """The training noise schedule. ``clip_sample=False``: see docs/sampling.md."""
    return DDPMScheduler(
        num_train_timesteps=options.num_train_timesteps,
        beta_schedule=options.beta_schedule,
        beta_start=1e-4,
        beta_end=0.02,
        prediction_type="epsilon",
        clip_sample=False,
    )


@dataclass
class TrainResult:
    """What :func:`train_model` returns."""

    model: DiffusionModel
    steps: int
    wall_s: float
    final_loss: float
    #: the last logged values
    last: dict[str, float] = field(default_factory=dict)


def train_model(
    data: ImageSet,
    options: TrainOptions | None = None,
    *,
    seed: int = 0,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    device: torch.device | str = "cpu",
    class_names: list[str] | None = None,
    source: str = "trained",
    loop: Any = None,
    world: World = SINGLE,
    precision: str = "fp32",
    channels_last: bool = False,
    compile: bool = False,
) -> TrainResult:
    """Train a DDPM from scratch on ``data``; return the model with its EMA weights (on CPU).

    ``class_names`` sets the conditioning classes (default ``data.class_names``); pass the full list
    when ``data`` lacks some classes (the ``retrain`` baseline), so the model keeps the same class ids.
    ``on_step(step, values)`` is called every ``options.log_every`` steps and at the last step with
    the mean loss since the previous call, the learning rate and the elapsed seconds.
    Deterministic on CPU under ``seed``.

    ``loop``: the :class:`~unlearnctl.checkpoints.StepLoop` that counts the steps (checkpoints, resume,
    clean stops; a forget run's ``run.loop`` for the ``retrain`` baseline); by default a plain one.
    ``world``: several processes split every batch (docs/scaling.md); one process draws everything from
    one generator seeded with ``seed``, several draw the batches from it and their noise from their own.
    ``precision``: ``bf16`` or ``fp16`` autocast of the forward pass (fp32 weights; fp16 with a gradient
    scaler), on devices that support it. ``channels_last``, ``compile``: the UNet's opt-in speed-ups
    (:func:`unlearnctl.runtime.prepare_module`). On an accelerator the losses are read to the host only
    when a line is logged (and before a checkpoint), so the step loop does not wait for the device.
    """
    options = options or TrainOptions()
    class_names = list(class_names if class_names is not None else data.class_names)
    conditional = options.conditional and bool(class_names)
    if options.conditional and not class_names:
        raise ValueError("conditional training needs labelled data (class names); set conditional=false")
    num_classes = len(class_names) if conditional else 0
    null_class = num_classes if conditional else None

    # 1. model, noise schedule, optimizer, learning-rate schedule, EMA of the weights
    g = torch.Generator().manual_seed(seed)
    # several processes: the batches from the shared generator, each process's noise from its own
    g_noise = g if not world.distributed else torch.Generator().manual_seed(stream_seed(seed, train_stream(world)))
    unet = build_unet(options.arch, data.image_size, data.channels, num_classes, seed=seed).to(device).train()
    prepare_module(unet, channels_last=channels_last, compile=compile)
    scheduler = build_scheduler(options)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    lr_scheduler = get_scheduler(
        options.lr_schedule if options.lr_schedule == "cosine" else "constant_with_warmup",
        optimizer,
        num_warmup_steps=options.warmup_steps,
        num_training_steps=options.steps,
    )
    ema = EMAModel(unet.parameters(), decay=options.ema_decay)
    ema.to(device)
    stream = BatchStream(data, options.batch_size, g, world)
    acc = _LossSum()
    defer_reads = torch.device(device).type != "cpu"  # a host read waits for the device's queue
    own_loop = loop is None  # a loop made here is closed here (it defers stop signals while it runs)
    loop = loop if loop is not None else StepLoop(options.steps, world=world)
    for name, obj in (("unet", unet), ("optimizer", optimizer), ("lr_schedule", lr_scheduler), ("ema", ema),
                      ("generator", g), ("stream", stream), ("loss_sum", acc)):  # fmt: skip
        loop.track(f"train.{name}", obj, device=device)
    if g_noise is not g:
        loop.track("train.noise_generator", g_noise, per_rank=True)
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    device_type = torch.device(device).type
    scaler = torch.amp.GradScaler(device_type, enabled=precision == "fp16")  # passes through unless fp16
    if precision == "fp16":
        loop.track("train.grad_scaler", scaler)

    start = time.perf_counter()
    values: dict[str, float] = {}
    labels: torch.Tensor | None
    try:
        for step in loop.steps(options.steps):
            # 2. a batch; labels dropped to the null class with probability class_dropout
            x0, labels = next(stream)
            x0 = x0.to(device)
            labels = drop_labels(labels, options.class_dropout, null_class, g_noise).to(device) if conditional else None
            # 3. t ~ U{0..T-1} (antithetic), eps ~ N(0, I); loss || eps - eps_theta(x_t, t, c) ||^2
            t = sample_timesteps(len(x0), options.num_train_timesteps, g_noise, options.antithetic)
            noise = torch.randn(x0.shape, generator=g_noise).to(device)
            with torch.autocast(device_type, dtype=amp or torch.bfloat16, enabled=amp is not None):
                loss = ddpm_loss(unet, scheduler, x0, labels, t, noise)
            if defer_reads:
                acc.add_later(step, loss.detach())  # read and checked when logged (or checkpointed)
            else:
                acc.add(step, loss.item())
            # 4. optimizer step (gradients averaged over the processes), then the EMA follows the new weights
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            all_reduce_mean_([p.grad for p in unet.parameters() if p.grad is not None], world)
            scaler.unscale_(optimizer)  # the same gradients on every process: the same overflow decision
            if options.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(unet.parameters(), options.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            lr_scheduler.step()
            ema.step(unet.parameters())
            if step % options.log_every == 0 or step == options.steps:
                values = mean_values(
                    {"loss": acc.take(), "lr": optimizer.param_groups[0]["lr"], "elapsed": time.perf_counter() - start},
                    world,
                )
                if on_step is not None:
                    on_step(step, values)
    finally:
        if own_loop:
            loop.close()

    # 5. keep the EMA weights (what is saved and sampled)
    ema.copy_to(unet.parameters())
    unet = unet.to("cpu", memory_format=torch.contiguous_format).eval()
    model = DiffusionModel(
        unet=unet,
        scheduler=scheduler,
        source=source,
        class_names=class_names if conditional else [],
        default_dataset=data.name or None,
        extra={"weights": "ema", "ema_decay": options.ema_decay},
    )
    return TrainResult(
        model=model,
        steps=options.steps,
        wall_s=time.perf_counter() - start,
        final_loss=float(values.get("loss", float("nan"))),
        last=values,
    )


def train_stream(world: World) -> str:
    """The name of a process's own random stream in a multi-process ``train`` (``train.rank1of2``)."""
    return f"train.rank{world.rank}of{world.size}"


class _LossSum:
    """The training loss summed since the last log line (checkpointed: a resumed run logs the same means).

    Losses are added as host floats (:meth:`add`, checked at once) or as device tensors (:meth:`add_later`),
    read in one go and checked, in step order, when the mean is taken or the state saved: the same sum.
    """

    def __init__(self) -> None:
        self.total, self.n = 0.0, 0
        self._later: list[tuple[int, torch.Tensor]] = []

    def add(self, step: int, value: float) -> None:
        if not math.isfinite(value):
            raise NonFiniteError(
                f"the training loss became {value} at step {step}: lower the learning rate (--set lr=...)"
            )
        self.total, self.n = self.total + value, self.n + 1

    def add_later(self, step: int, value: torch.Tensor) -> None:
        self._later.append((step, value))

    def _read(self) -> None:
        later, self._later = self._later, []
        if later:
            dtype = torch.float32 if later[0][1].device.type == "mps" else torch.float64  # float64 holds a float32
            for (step, _), value in zip(later, torch.stack([v.to(dtype) for _, v in later]).tolist(), strict=True):
                self.add(step, value)

    def take(self) -> float:
        self._read()
        mean = self.total / self.n if self.n else float("nan")
        self.total, self.n = 0.0, 0
        return mean

    def state_dict(self) -> dict[str, Any]:
        self._read()  # a checkpoint holds only steps whose losses were read and found finite
        return {"total": self.total, "n": self.n}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.total, self.n = float(state["total"]), int(state["n"])
        self._later = []


def resolve_train_options(
    config: dict[str, Any] | None = None, sets: Sequence[str] | dict[str, Any] | None = None, steps: int | None = None
) -> TrainOptions:
    """Training options: defaults < ``--config FILE`` < ``--set key=value`` < ``--steps``."""
    from .config import parse_set_values

    values: dict[str, Any] = dict(config or {})
    values.update(dict(sets) if isinstance(sets, dict) else parse_set_values(list(sets or [])))
    if steps is not None:
        values["steps"] = steps
    known = list(TrainOptions.model_fields)
    unknown = [k for k in values if k not in known]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            hints.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        raise OptionError(f"train: unknown option {', '.join(hints)}; options: {', '.join(known)}")
    try:
        return TrainOptions.model_validate(values)
    except ValidationError as exc:
        errors = [
            f"bad value for option '{'.'.join(str(p) for p in e['loc'])}': got {e.get('input')!r} ({e['msg']})"
            for e in exc.errors(include_url=False)
        ]
        raise OptionError("train: " + "; ".join(errors)) from None
