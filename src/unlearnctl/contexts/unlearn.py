"""What a method's ``unlearn(run)`` receives: :class:`UnlearnRun`.

The model and the forget/remain split, seeded data streams, the optimizer, device and precision,
gradient clipping, EMA, ``log.jsonl`` and the lifecycle hooks. A method's own update reads top to
bottom in its ``unlearn``; everything it shares with other methods is here.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel

from ..checkpoints import StepLoop
from ..data.batching import BatchStream
from ..data.sets import ForgetSplit
from ..diffusion import sample_timesteps
from ..distributed import SINGLE, World, all_reduce_mean_
from ..errors import UsageError
from ..lifecycle import RunInfo
from ..models.folder import DiffusionModel
from ..runtime import Precision, check_precision, prepare_module, seeded_generator
from ..train_options import LRSchedule
from .step_log import StepLog, nonfinite_gradient

LR_SCHEDULES: tuple[str, ...] = get_args(LRSchedule)

# --- the runner that methods use ----------------------------------------------------------------


class UnlearnRun(RunInfo):
    """What a method's ``unlearn(run)`` works with. See ``docs/forget.md`` for the contract.

    Attributes set for the method: ``model`` (its UNet on ``device``, train mode), ``split``,
    ``device``, ``precision``, ``generator`` (seeded CPU generator for the method's own draws),
    ``total_steps`` (``Method.total_steps()``), ``ema`` and ``ema_decay`` (after :meth:`use_ema`),
    ``optimizer`` (after :meth:`make_optimizer`), ``lr_scheduler`` (its schedule; None: a constant rate),
    ``optimizer_steps``.
    For progress and trackers it is the run's :class:`~unlearnctl.lifecycle.RunInfo`: ``kind``
    (``"forget"`` or ``"replay"``), ``description``, ``out_dir`` (the final run folder, which exists
    once the run has finished), ``work_dir`` (the folder being written: ``log.jsonl`` is there),
    ``config`` (the resolved configuration), ``total_steps`` and ``seed``.
    ``extra``: a dict the method and the ``run_started``/``step_logged`` listeners may fill; it is
    written into the manifest's ``extra`` (JSON values only). See ``docs/plugins.md``.
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
        work_dir: Path | None = None,
        kind: str = "forget",
        loop: StepLoop | None = None,
        world: World = SINGLE,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        self.model, self.split = model, split
        self.seed = seed
        self.total_steps = total_steps
        self.device = torch.device(device)
        self.precision: Precision = check_precision(precision, self.device)
        self.kind = kind
        self.out_dir = Path(out_dir) if out_dir is not None else None
        #: where log.jsonl is written (default: ``out_dir``)
        self.work_dir = Path(work_dir) if work_dir is not None else self.out_dir
        self.description = description
        self.config: dict[str, Any] = dict(config or {})
        #: the lifecycle channel (a :class:`~unlearnctl.lifecycle.Lifecycle`, or anything with ``step_logged``)
        self.hook = hook
        #: this process's place in a multi-process run (docs/scaling.md)
        self.world = world
        #: the step loop: checkpoints, resume and clean stops (``run.steps()``; docs/resume.md)
        self.loop = loop if loop is not None else StepLoop(total_steps, world=world)
        # every process draws its own noise and timesteps for its shard of each batch
        self.generator = seeded_generator(seed, method_stream(world))
        self.optimizer: torch.optim.Optimizer | None = None
        #: the learning-rate schedule of ``optimizer`` (None: a constant rate, no scheduler at all)
        self.lr_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        self._lr_schedulers: dict[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler] = {}
        #: the rate the last step of a scheduled ``optimizer`` used (what log.jsonl's ``lr`` shows)
        self._step_lr: float | None = None
        self.ema: EMAModel | None = None
        #: the EMA's decay (set by :meth:`use_ema`; None: no EMA)
        self.ema_decay: float | None = None
        self.save_ema = False
        #: values for the manifest's ``extra`` (filled by the method and the lifecycle listeners)
        self.extra: dict[str, Any] = {}
        #: optimizer steps actually taken (a step skipped for an fp16 overflow does not count)
        self.optimizer_steps = 0
        #: the values of the last :meth:`log` call (the manifest's final losses)
        self.last_values: dict[str, float] = {}
        self._loss_scale = 2.0**16 if self.precision == "fp16" else 1.0
        self._start = time.perf_counter()
        #: when this process started the run (a resumed run: when it was resumed)
        self.started_at = datetime.now(UTC)
        self._resumed_before: list[int] = []
        self._streams = 0
        #: read logged values and gradient norms to the host only every few steps (accelerators: each read
        #: waits for the device's queue to drain); on the CPU a read costs nothing and they are read at once
        self.defer_host_reads = self.device.type != "cpu"
        self._step_log = StepLog(world, self.device, lambda: self.work_dir, self._logged)
        self.model.unet.to(self.device).train()
        #: the UNet's opt-in speed-ups (docs/performance.md, "GPU paths"), recorded in the manifest
        self.channels_last, self.compiled = channels_last, compile
        prepare_module(self.model.unet, channels_last=channels_last, compile=compile)
        self.loop.on_save = self._before_checkpoint
        self.loop.track("model", self.model.unet)
        self.loop.track("generator", self.generator, per_rank=True)
        self.loop.track("run", _RunCounters(self))

    # -- data and randomness ---------------------------------------------------------------------

    def batches(
        self, which: Literal["remain", "forget"], batch_size: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Endless ``(x0, labels)`` batches of the remaining or the forget set, on the device.

        Seeded shuffling from the stream's own generator, a new permutation each epoch; a batch is
        ``min(batch_size, len(set))`` items (the tail of an epoch that does not fill one is skipped).
        In a multi-process run ``batch_size`` is the global batch and each process gets its shard.
        The stream's position is part of every checkpoint.
        """

        if which not in ("remain", "forget"):
            raise ValueError(f"run.batches: which must be 'remain' or 'forget', not {which!r}")
        data = self.split.remain if which == "remain" else self.split.forget
        generator = seeded_generator(self.seed, which)
        stream = BatchStream(data, batch_size, generator, self.world, device=self.device)
        self._streams += 1
        self.loop.track(f"stream{self._streams}.{which}", stream)
        self.loop.track(f"stream{self._streams}.{which}.generator", generator)
        return stream

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
        *,
        lr_schedule: LRSchedule = "constant",
        lr_warmup_steps: int = 0,
    ) -> torch.optim.Optimizer:
        """Adam (the authors' optimizer), or AdamW when ``weight_decay`` > 0, with a learning-rate schedule.

        ``lr_schedule`` ``constant`` with no warm-up (the default, the authors' setting) makes no scheduler at
        all. Otherwise diffusers' ``get_scheduler(lr_schedule, num_warmup_steps=lr_warmup_steps,
        num_training_steps=total_steps)``: ``constant_with_warmup``, ``linear`` or ``cosine`` (to 0 at the last
        step), each after a linear warm-up from 0 over ``lr_warmup_steps`` steps. It is stepped after every
        optimizer step taken (not after an fp16 step skipped for an overflow), kept in checkpoints
        (``run.lr_scheduler``), and ``log.jsonl``'s ``lr`` is the rate each step used.
        """
        self._check_schedule(lr_schedule, lr_warmup_steps)
        params = list(params)
        if weight_decay > 0:
            self.optimizer = torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay)
        else:
            self.optimizer = torch.optim.Adam(params, lr=lr, betas=betas)
        self.track("optimizer", self.optimizer)
        self.lr_scheduler, self._step_lr = None, None
        if lr_schedule != "constant" or lr_warmup_steps > 0:
            scheduler = get_scheduler(
                lr_schedule,
                self.optimizer,
                num_warmup_steps=lr_warmup_steps,
                num_training_steps=self.total_steps,
            )
            self.lr_scheduler = self._lr_schedulers[self.optimizer] = self.track("lr_scheduler", scheduler)
            self._step_lr = self.optimizer.param_groups[0]["lr"]
        return self.optimizer

    def _check_schedule(self, lr_schedule: str, lr_warmup_steps: int) -> None:
        """Refuse a schedule :meth:`make_optimizer` cannot follow, in one line naming the option."""
        if lr_schedule not in LR_SCHEDULES:
            raise UsageError(f"unknown lr_schedule '{lr_schedule}': use one of {', '.join(LR_SCHEDULES)}")
        if lr_warmup_steps < 0:
            raise UsageError(f"lr_warmup_steps must be >= 0, got {lr_warmup_steps}")
        if lr_schedule == "constant" and lr_warmup_steps > 0:
            raise UsageError(
                f"lr_warmup_steps={lr_warmup_steps} needs a schedule with a warm-up: set lr_schedule to "
                "constant_with_warmup, linear or cosine (constant has none)"
            )
        if lr_schedule == "constant" and lr_warmup_steps == 0:
            return
        if self.total_steps is None:
            raise ValueError(f"lr_schedule '{lr_schedule}' needs run.total_steps (the method's `steps` option)")
        if lr_warmup_steps > self.total_steps:
            raise UsageError(
                f"lr_warmup_steps={lr_warmup_steps} is longer than the run ({self.total_steps} steps): set "
                f"lr_warmup_steps to at most {self.total_steps}, or more steps"
            )

    def track(self, name: str, obj: Any, *, per_rank: bool = False) -> Any:
        """Keep ``obj``'s state in the run's checkpoints and restore it on ``--resume`` (returns ``obj``).

        The run tracks what it makes itself (the UNet, ``generator``, the optimizers of
        :meth:`make_optimizer`, the EMA, the streams of :meth:`batches`); a method tracks any other state
        that lives across steps (an optimizer or a schedule of its own). ``obj``: a module, an optimizer, an
        LR scheduler, a ``torch.Generator``, or anything with ``state_dict()``/``load_state_dict()`` of
        tensors and JSON values; ``per_rank``: each process has its own. A second object under a name
        already used gets a numbered name.
        """
        base, n = name, 1
        while self.loop.tracks(name):
            n += 1
            name = f"{base}.{n}"
        return self.loop.track(name, obj, per_rank=per_rank, device=self.device)

    def use_ema(self, decay: float, save: bool = True) -> EMAModel | None:
        """Keep an exponential moving average of the UNet's weights with a fixed ``decay``.

        It starts from the weights the run was given (a model folder holds one set of weights: for the
        built-in models, the EMA weights of their training) and follows every optimizer step:
        ``ema <- decay * ema + (1 - decay) * theta``. With ``save`` the EMA weights are what the run
        saves (``manifest.weights.saved_weights = "ema"``), else the raw weights. ``decay`` 0: no EMA.
        """
        if decay <= 0:
            self.ema, self.ema_decay, self.save_ema = None, None, False
            return None
        self.ema_decay = decay
        # min_decay = decay and update_after_step = -1 make diffusers' EMAModel use the fixed rate from
        # the first step (its default warm-up would copy the weights at step 1, then ramp (1+n)/(10+n)).
        self.ema = EMAModel(self.model.unet.parameters(), decay=decay, min_decay=decay, update_after_step=-1)
        self.ema.to(self.device)
        self.track("ema", self.ema)
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
        out = [
            torch.zeros_like(p) if g is None else (g.float() * inv if inv != 1.0 else g)
            for g, p in zip(gs, params, strict=True)
        ]
        # several processes: each gradient is the mean over the processes' shards (the global batch's)
        all_reduce_mean_(out, self.world)
        return out

    def apply_gradients(
        self, optimizer: torch.optim.Optimizer, grads: Sequence[torch.Tensor], clip: float = 1.0
    ) -> torch.Tensor:
        """Set the optimizer's parameters' ``.grad`` to ``grads``, clip the global norm, step, update the EMA.

        Returns the gradient norm before clipping, a 0-d tensor on the run's device (``float()`` reads it;
        on an accelerator that waits for the device, so pass it to :meth:`log` as it is). In fp16 a step
        whose gradients overflowed is skipped and the loss scale halved; in fp32/bf16 a non-finite gradient
        is an error (:class:`NonFiniteError`): at once on the CPU, at the next read of the logged values
        on an accelerator (:attr:`defer_host_reads`; always before a checkpoint is written).
        """
        if optimizer is self.optimizer and optimizer in self._lr_schedulers:
            self._step_lr = optimizer.param_groups[0]["lr"]  # the rate of this step (taken or skipped)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        if len(params) != len(grads):
            raise ValueError(f"apply_gradients: {len(grads)} gradients for {len(params)} parameters")
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        total = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        if self.defer_host_reads and self.precision != "fp16":
            # no host read: torch's clip multiplies by its coefficient clamped to 1 (x * 1.0 == x, so the
            # same weights as the branch below, which skips that pass when it reads that nothing is clipped)
            if clip > 0:
                torch.nn.utils.clip_grads_with_norm_(params, clip, total)
            self._step_log.add_norm(self.optimizer_steps + 1, total)
            self._step(optimizer)
            return total
        # the norm is read to the host once (one sync on an accelerator) for the check and the clip decision
        host = total.cpu()
        norm = float(host)
        # torch's clip_grad_norm_, less its multiplication by a coefficient clamped to 1 (x * 1.0 == x): one
        # pass over every gradient saved on the steps that are not clipped. The coefficient is torch's
        # float32 arithmetic on the norm, on the host copy (IEEE: the same on every device).
        if clip > 0 and math.isfinite(norm) and float(torch.clamp(clip / (host + 1e-6), max=1.0)) < 1.0:
            torch.nn.utils.clip_grads_with_norm_(params, clip, total)
        if not math.isfinite(norm):
            if self.precision == "fp16":
                self._loss_scale /= 2.0
                optimizer.zero_grad(set_to_none=True)
                return total
            raise nonfinite_gradient(norm, self.optimizer_steps + 1)
        self._step(optimizer)
        return total

    def _step(self, optimizer: torch.optim.Optimizer) -> None:
        optimizer.step()
        scheduler = self._lr_schedulers.get(optimizer)
        if scheduler is not None:  # only here: a step skipped for an fp16 overflow does not advance it
            scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        self.optimizer_steps += 1
        if self.ema is not None:
            self.ema.step(self.model.unet.parameters())

    def backward_step(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor, clip: float = 1.0) -> torch.Tensor:
        """Backward, gradient-norm clip (``clip`` 0: off), optimizer step, EMA update; returns the grad norm."""
        params = [p for group in optimizer.param_groups for p in group["params"]]
        return self.apply_gradients(optimizer, self.grads(loss, params), clip)

    # -- progress --------------------------------------------------------------------------------

    def steps(self) -> Iterator[int]:
        """The outer steps ``1..total_steps``; a resumed run starts after its checkpoint's step.

        Between two steps the run may write a checkpoint (every ``--checkpoint-every`` steps, and when a
        stop signal came during the step, after which it stops: docs/resume.md).
        """
        if self.total_steps is None:
            raise ValueError(
                "run.total_steps is not set: the method must declare a `steps` option or override Method.total_steps()"
            )
        return self.loop.steps(self.total_steps)

    def log(self, step: int, values: Mapping[str, float | torch.Tensor]) -> None:
        """Append one line to ``log.jsonl`` (step, values, learning rate, elapsed seconds) and tell the hooks.

        ``values``: numbers or 0-d tensors (a loss as ``loss.detach()``, not ``loss.item()``: on an
        accelerator the run reads the tensors of a few steps to the host at once (``DEFERRED_LOG_LINES`` of
        :mod:`~unlearnctl.contexts.step_log`), so the step loop never waits for the device; the line is written
        then, and before each checkpoint).
        """
        line: dict[str, Any] = {"step": step, **values}
        if self.optimizer is not None and "lr" not in line:
            # a schedule: the rate the step's update used (the optimizer's now is the next step's)
            line["lr"] = self._step_lr if self._step_lr is not None else self.optimizer.param_groups[0]["lr"]
        line["time"] = round(time.perf_counter() - self._start, 4)
        self._step_log.add(line, defer=self.defer_host_reads, last=step == self.total_steps)

    def flush_pending(self) -> None:
        """Read the logged values and gradient norms kept on the device (one host read), check them, write them.

        Raises :class:`NonFiniteError` for the first non-finite value, as :meth:`log` does at once on the CPU.
        """
        self._step_log.flush()

    def _logged(self, line: dict[str, Any]) -> None:
        """A line of log.jsonl was checked (and, by the main process, written): keep it, tell the hooks."""
        self.last_values = {k: v for k, v in line.items() if k not in ("step", "time", "lr")}
        if self.world.is_main and self.hook is not None:
            self.hook.step_logged(run=self, step=line["step"], values=line)

    def _before_checkpoint(self, step: int) -> None:
        # a checkpoint holds only steps whose logged values and gradients were read and found finite
        self._step_log.flush()

    # -- end -------------------------------------------------------------------------------------

    def finish(self) -> Literal["ema", "raw"]:
        """Put the weights to save into the UNet (the EMA's, when kept and asked for); say which.

        The UNet is back in the default memory format (``--channels-last`` is for the steps only).
        """
        self.flush_pending()
        self.close()
        self.model.unet.to(memory_format=torch.contiguous_format)
        if self.ema is not None and self.save_ema:
            self.ema.copy_to(self.model.unet.parameters())
            return "ema"
        return "raw"

    def close(self) -> None:
        """End the step loop and close ``log.jsonl`` (also when the method failed)."""
        self.loop.close()
        self._step_log.close()

    @property
    def started(self) -> float:
        """``time.perf_counter()`` when this process started the run."""
        return self._start

    @property
    def resumed_at(self) -> list[int]:
        """The steps after which this run was resumed (empty: it ran in one go)."""
        now = [self.loop.resumed_from] if self.loop.resumed_from else []
        return self._resumed_before + now

    def flush_log(self) -> int:
        """Flush ``log.jsonl``; its size in bytes (recorded in checkpoints)."""
        return self._step_log.size()


def method_stream(world: World) -> str:
    """The name of the method's random stream: ``method``, or one per process (``method.rank1of2``)."""
    return "method" if not world.distributed else f"method.rank{world.rank}of{world.size}"


class _RunCounters:
    """The run's own counters in a checkpoint: optimizer steps, the fp16 loss scale, the last logged
    values and the length of ``log.jsonl`` (cut back to it on resume)."""

    def __init__(self, run: UnlearnRun) -> None:
        self.run = run

    def state_dict(self) -> dict[str, Any]:
        r = self.run
        return {
            "optimizer_steps": r.optimizer_steps,
            "loss_scale": r._loss_scale,
            "last_values": dict(r.last_values),
            "log_bytes": r.flush_log() if r.world.is_main else 0,
            "extra": dict(r.extra),
            "resumed_at": r.resumed_at,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        r = self.run
        r.optimizer_steps = int(state["optimizer_steps"])
        r._loss_scale = float(state["loss_scale"])
        r.last_values = dict(state["last_values"])
        r.extra.update(state.get("extra") or {})
        r._resumed_before = [int(x) for x in state.get("resumed_at") or []]
        r._step_log.truncate(int(state["log_bytes"]))
