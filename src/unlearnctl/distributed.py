"""The processes of a run started by ``accelerate launch`` or ``torchrun``: which one this is, its share of
the work, and the few collectives the commands need (docs/scaling.md).

A command started without a launcher is one process (:data:`SINGLE`) and none of this costs anything.
Under a launcher (``WORLD_SIZE`` > 1 in the environment) :func:`init_world` lets accelerate's
``PartialState`` set up the process group (gloo on CPU, nccl on CUDA) and pick this process's device.

- Training-like commands split every global batch into contiguous shards, one per process
  (:meth:`World.shard`), and average gradients with :func:`all_reduce_mean_`: one all-reduce of a flat
  buffer per gradient computation (EraseDiff needs its two gradients apart, which DDP's backward hooks
  cannot give; the arithmetic is DDP's).
- Sampling commands split the images into contiguous runs of whole sampling batches
  (:meth:`World.batch_shard`) and :func:`gather_to_main` reassembles them in image order on the main
  process.
- Only the main process (rank 0) writes files, prints and fires the lifecycle hooks that write.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from .errors import UsageError


@dataclass(frozen=True)
class World:
    """This process's place among the processes of one run."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    #: where this process computes; small collectives (log values) use it too (nccl has no CPU tensors)
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def shard(self, n: int, rank: int | None = None) -> range:
        """The contiguous part of ``range(n)`` for ``rank`` (default: this process); the first ``n % size``
        ranks get one item more. Concatenated in rank order the shards are ``range(n)``."""
        r = self.rank if rank is None else rank
        base, extra = divmod(n, self.size)
        start = r * base + min(r, extra)
        return range(start, start + base + (1 if r < extra else 0))

    def batch_shard(self, n: int, batch_size: int, rank: int | None = None) -> range:
        """The part of ``range(n)`` for ``rank`` (default: this process) when the work is dealt in whole
        batches of ``batch_size`` (the last one may be short): a contiguous run of batches, the
        :meth:`shard` of the batches. Whole batches keep each image's arithmetic that of one process: the
        UNet's float results depend on the batch an image is computed in. Concatenated in rank order the
        parts are ``range(n)``; a rank may get none when there are fewer batches than processes."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        batches = self.shard(-(-n // batch_size), rank)
        return range(min(batches.start * batch_size, n), min(batches.stop * batch_size, n))

    def even_shard(self, n: int, what: str = "batch") -> range:
        """:meth:`shard` of a global batch that must split evenly (equal shards keep the mean of the
        per-process means equal to the mean over the global batch)."""
        if n % self.size:
            raise UsageError(
                f"a global {what} of {n} does not split evenly across {self.size} processes: use a size "
                f"divisible by {self.size}, or launch {self._divisors(n)} processes"
            )
        return self.shard(n)

    @staticmethod
    def _divisors(n: int) -> str:
        ds = [d for d in range(1, min(n, 16) + 1) if n % d == 0]
        return " or ".join(str(d) for d in ds[-3:])


#: a command that was not started by a launcher
SINGLE = World()


def launched() -> bool:
    """Whether a launcher (``accelerate launch``, ``torchrun``) started this process as one of several."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def main_process_env() -> bool:
    """Whether this is the main process, from the launcher's environment (before :func:`init_world`)."""
    try:
        return int(os.environ.get("RANK", "0")) == 0
    except ValueError:
        return True


def launcher_precision() -> str:
    """The precision ``accelerate launch --mixed_precision`` asked for (``fp32`` when none)."""
    value = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").strip().lower()
    return {"no": "fp32", "": "fp32"}.get(value, value)


def init_world(device: torch.device) -> tuple[World, torch.device]:
    """This process's :class:`World` and the device it computes on.

    Without a launcher: :data:`SINGLE` and ``device`` unchanged. Under one: accelerate's ``PartialState``
    initialises the process group (gloo for ``cpu``, nccl for ``cuda``), and each process on a GPU
    machine takes its own GPU (``cuda:LOCAL_RANK``).
    """
    if not launched():
        return SINGLE, device
    from accelerate import PartialState

    if device.type == "mps":
        raise UsageError("multi-process runs need cpu or cuda devices; mps is one device: run one process")
    state = PartialState(cpu=device.type == "cpu", timeout=collective_timeout())
    atexit.register(_end_process_group)
    here = torch.device("cpu") if device.type == "cpu" else torch.device(state.device)
    world = World(
        rank=state.process_index, size=state.num_processes, local_rank=state.local_process_index, device=str(here)
    )
    return world, here


def _end_process_group() -> None:
    """At exit, release the process group before the interpreter tears down: left to the garbage collector,
    the backend's threads can be destroyed while still joinable, and a process whose work is done then
    aborts ("terminate called without an active exception", exit -6), which the launcher reports as a
    failure of the whole run. Destroying a gloo or NCCL group is local to this process."""
    if dist.is_available() and dist.is_initialized():
        with contextlib.suppress(Exception):  # exiting anyway: a failure here must not mask the real exit code
            dist.destroy_process_group()


def collective_timeout() -> timedelta:
    """How long a process waits in a collective (``UNLEARNCTL_COLLECTIVE_TIMEOUT_S``, default one hour): the
    other processes of ``eval`` wait while the main one computes every metric."""
    raw = os.environ.get("UNLEARNCTL_COLLECTIVE_TIMEOUT_S", "3600")
    try:
        seconds = float(raw)
    except ValueError:
        raise UsageError(f"UNLEARNCTL_COLLECTIVE_TIMEOUT_S must be a number of seconds, got {raw!r}") from None
    if seconds <= 0:
        raise UsageError(f"UNLEARNCTL_COLLECTIVE_TIMEOUT_S must be > 0, got {raw!r}")
    return timedelta(seconds=seconds)


def all_reduce_mean_(tensors: list[torch.Tensor], world: World) -> None:
    """Replace each tensor by its mean over the processes, in place (one all-reduce of a flat buffer)."""
    if not world.distributed or not tensors:
        return

    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat.div_(world.size)
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()


def mean_values(values: dict[str, Any], world: World) -> dict[str, Any]:
    """The numeric values of a log line averaged over the processes (others unchanged)."""
    if not world.distributed:
        return values

    keys = [k for k, v in values.items() if isinstance(v, int | float) and not isinstance(v, bool)]
    if not keys:
        return values
    buf = [torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=world.device)]
    all_reduce_mean_(buf, world)
    out = dict(values)
    out.update({k: float(v) for k, v in zip(keys, buf[0].tolist(), strict=True)})
    return out


def gather_to_main(tensor: torch.Tensor, world: World) -> torch.Tensor | None:
    """The tensors of all processes concatenated along dim 0 in rank order, on the main process (CPU);
    ``None`` elsewhere. Shards may differ in length by one (:meth:`World.shard`)."""
    if not world.distributed:
        return tensor

    parts: list[Any] = [None] * world.size
    dist.all_gather_object(parts, tensor.cpu())
    if not world.is_main:
        return None

    return torch.cat(parts)


def gather_objects(obj: Any, world: World) -> list[Any]:
    """``obj`` of every process, in rank order (every process gets the list)."""
    if not world.distributed:
        return [obj]

    parts: list[Any] = [None] * world.size
    dist.all_gather_object(parts, obj)
    return parts


def broadcast_from_main(obj: Any, world: World) -> Any:
    """The main process's ``obj`` on every process."""
    if not world.distributed:
        return obj

    box = [obj if world.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(world: World) -> None:
    """Wait until every process gets here."""
    if world.distributed:
        dist.barrier()
