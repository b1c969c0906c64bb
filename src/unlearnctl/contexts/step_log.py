"""A run's step log: the lines of ``log.jsonl``, checked and written as :class:`~unlearnctl.UnlearnRun` logs them.

Each line is averaged over the processes of a multi-process run, refused when a value is not finite, written
by the main process (the file is opened at the first line and kept open), then handed to the run (its last
values, the lifecycle hooks). On an accelerator the logged tensors and the gradient norms stay on the device
and are read to the host :data:`DEFERRED_LOG_LINES` steps at a time, in one read (docs/performance.md).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from ..distributed import World, mean_values
from ..errors import NonFiniteError
from ..rundir import LOG_FILE

#: on an accelerator, the steps whose logged values are read to the host at once (UnlearnRun.log)
DEFERRED_LOG_LINES = 10


def nonfinite_gradient(norm: float, optimizer_step: int) -> NonFiniteError:
    """The error of a gradient norm that is not finite (a loss diverged)."""
    return NonFiniteError(
        f"the gradient norm became {norm} at optimizer step {optimizer_step} (a loss diverged): "
        "lower the learning rate (--set lr=...)"
    )


class StepLog:
    """``log.jsonl`` of one run.

    ``folder``: where the file goes, asked when the first line is written (a run's ``work_dir``; None: no
    file). ``on_line``: called with every line, checked and averaged, in every process.
    """

    def __init__(
        self,
        world: World,
        device: torch.device,
        folder: Callable[[], Path | None],
        on_line: Callable[[dict[str, Any]], None],
    ) -> None:
        self.world, self.device = world, device
        self._folder, self._on_line = folder, on_line
        self._lines: list[dict[str, Any]] = []
        self._norms: list[tuple[int, torch.Tensor]] = []
        self._fh: IO[str] | None = None

    @property
    def pending(self) -> bool:
        """Whether lines or gradient norms wait on the device to be read."""
        return bool(self._lines or self._norms)

    def add(self, line: dict[str, Any], *, defer: bool, last: bool) -> None:
        """Log ``line`` (numbers or 0-d tensors): at once, or with ``defer`` kept until
        :data:`DEFERRED_LOG_LINES` lines wait or the ``last`` step's line comes."""
        if not defer:
            self._emit({k: (float(v) if isinstance(v, torch.Tensor) else v) for k, v in line.items()})
            return
        self._lines.append(line)
        if len(self._lines) >= DEFERRED_LOG_LINES or last:
            self.flush()

    def add_norm(self, optimizer_step: int, norm: torch.Tensor) -> None:
        """Keep the gradient norm of ``optimizer_step`` on the device, to be checked at the next :meth:`flush`."""
        self._norms.append((optimizer_step, norm.detach()))

    def flush(self) -> None:
        """Read the kept lines and gradient norms to the host (one read), check them, write the lines.

        Raises :class:`NonFiniteError` for the first non-finite value.
        """
        lines, self._lines = self._lines, []
        norms, self._norms = self._norms, []
        tensors = [v for line in lines for v in line.values() if isinstance(v, torch.Tensor)]
        tensors += [n for _, n in norms]
        if tensors:
            # float64 holds every float32 value exactly (MPS has no float64: the values are float32 there)
            dtype = torch.float32 if self.device.type == "mps" else torch.float64
            read = iter(torch.stack([t.detach().reshape(()).to(self.device, dtype) for t in tensors]).tolist())
            lines = [{k: (next(read) if isinstance(v, torch.Tensor) else v) for k, v in ln.items()} for ln in lines]
            for optimizer_step, _ in norms:
                norm = next(read)
                if not math.isfinite(norm):
                    raise nonfinite_gradient(norm, optimizer_step)
        for line in lines:
            self._emit(line)

    def _emit(self, line: dict[str, Any]) -> None:
        line = mean_values(line, self.world)  # several processes: the mean over their shards
        step = line["step"]
        for key, value in line.items():
            if isinstance(value, float) and not math.isfinite(value) and key != "time":
                raise NonFiniteError(
                    f"{key} became {value} at step {step}: lower the learning rate (--set lr=...) or the "
                    "method's weights on that loss"
                )
        if self.world.is_main:
            path = self._path()
            if path is not None:
                if self._fh is None:  # opened once, kept open (flushed per line, closed by close())
                    self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115
                self._fh.write(json.dumps(line) + "\n")
                self._fh.flush()
        self._on_line(line)

    def _path(self) -> Path | None:
        folder = self._folder()
        return folder / LOG_FILE if folder is not None else None

    def size(self) -> int:
        """The file's size in bytes, flushed (what a checkpoint records)."""
        if self._fh is not None:
            self._fh.flush()
            return self._fh.tell()
        path = self._path()
        return path.stat().st_size if path is not None and path.exists() else 0

    def truncate(self, size: int) -> None:
        """Cut the file back to ``size`` bytes (a resumed run: the lines after its checkpoint go)."""
        if not self.world.is_main:
            return
        self.close_file()
        path = self._path()
        if path is not None and path.exists():
            with open(path, "r+b") as fh:
                fh.truncate(size)

    def close(self) -> None:
        """Write what can still be written and close the file (also when the run failed or stopped: the run's
        own error is the one reported, not a non-finite value found here or a device error)."""
        if self.pending:
            with contextlib.suppress(NonFiniteError, RuntimeError):
                self.flush()
        self.close_file()

    def close_file(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
