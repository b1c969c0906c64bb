"""A folder of evaluation samples kept between commands (``eval --sample-cache DIR``; a study's own).

The samples of a draw depend only on what goes into it: the model's weights and scheduler, the sampling
protocol, the command's random stream, the classes, the device and the CPU threads, and the library versions
that compute it. So a draw made once can be read back instead of sampled again: the base model of a study is
sampled in every cell's ``eval`` under the same protocol (as the reference), and a retrain model in every cell
of its forget set. :func:`draw_key` hashes every one of those inputs; a file is read back only when its
recorded key and shape match, so a changed input is a miss, never a wrong hit. The files are safetensors
(never a pickle), written to a temporary name and renamed into place, so a reader sees a whole file or none.

Commands that share a cache at once (a study's cells, ``sweep --jobs N``) would otherwise all sample the base
model at the start of a forget set: :meth:`SampleCache.claim` holds a lock per key (``flock`` on a hidden
``.KEY.lock`` file) while one of them looks the draw up, samples and stores it, and the others wait and then
read it back. The kernel drops the lock of a command that dies; where no lock can be taken (no ``fcntl``, a
folder that cannot be written, a file system without locks, or a holder that keeps it past the timeout) the
draw goes on unlocked, which costs sampling, never the result.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diffusers
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .. import __version__
from ..models.folder import DiffusionModel, state_sha256

#: bump when what a key covers changes: older files then miss instead of being read
FORMAT = 1
_TENSOR = "images"
#: how long :meth:`SampleCache.claim` waits for another command's draw of the same key before sampling anyway
CLAIM_TIMEOUT_S = 3600.0
#: how often it looks whether the lock is free
_CLAIM_POLL_S = 0.2


def draw_key(
    model: DiffusionModel,
    describe: dict[str, Any],
    *,
    command: str,
    stream: str,
    labels: list[int] | None,
    n: int,
    device: torch.device,
) -> str:
    """sha256 over every input of a draw of ``n`` samples: the weights (``state_sha256``), the UNet's and the
    scheduler's configs, the protocol (``describe``: sampler, steps, guidance, seed, batch size...), the
    command's stream and the labels, the device, torch's CPU threads and the torch, diffusers and unlearnctl
    versions (float results may differ in the last bits between them)."""
    inputs = {
        "format": FORMAT,
        "weights": state_sha256(model.unet),
        "unet": _config(model.unet.config),
        "scheduler": _config(model.scheduler.config),
        "protocol": describe,
        "command": command,
        "stream": stream,
        "labels": labels,
        "n": n,
        "device": str(device),
        "cpu_threads": torch.get_num_threads(),
        "versions": [torch.__version__, diffusers.__version__, __version__],
    }
    text = json.dumps(inputs, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _config(config: Any) -> dict[str, Any]:
    """A diffusers config without where it was read from (``_name_or_path``): a copy of a model elsewhere is
    the same model."""
    return {k: v for k, v in dict(config).items() if k != "_name_or_path"}


@dataclass(frozen=True)
class SampleCache:
    """Samples by :func:`draw_key`, one safetensors file each, in ``folder`` (created on first store)."""

    folder: Path

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.safetensors"

    @contextlib.contextmanager
    def claim(self, key: str, timeout: float = CLAIM_TIMEOUT_S) -> Iterator[bool]:
        """Hold ``key``'s lock for the block (look the draw up, sample, store): another command claiming the
        same key meanwhile waits, then finds the draw stored. Yields whether the lock is held; False when it
        cannot be taken within ``timeout`` seconds or at all (see the module docstring), and the block runs
        unlocked."""
        fd = _lock(self.folder / f".{key}.lock", timeout)
        try:
            yield fd is not None
        finally:
            if fd is not None:
                os.close(fd)  # closing the descriptor releases the lock

    def load(self, key: str, shape: tuple[int, ...]) -> torch.Tensor | None:
        """The samples stored under ``key``, or None: no file, an unreadable one, or one recorded for another
        key or shape (then it is sampled again and replaced)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with safe_open(path, framework="pt") as f:
                if (f.metadata() or {}).get("key") != key or _TENSOR not in f.keys():  # noqa: SIM118
                    return None  # the key is in the file's own header: a renamed or foreign file is a miss
                images = f.get_tensor(_TENSOR)
        except (OSError, SafetensorError, ValueError):
            return None
        if tuple(images.shape) != shape or images.dtype != torch.float32:
            return None
        return images

    def store(self, key: str, images: torch.Tensor) -> Path | None:
        """Write the samples under ``key`` (atomically); None when the folder cannot be written (a cache
        that cannot keep a draw costs a later command its sampling, never its result)."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-", suffix=".safetensors")
            os.close(fd)
            try:
                save_file({_TENSOR: images.detach().to("cpu", torch.float32).contiguous()}, tmp, {"key": key})
                os.replace(tmp, self.path(key))
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        except OSError:
            return None
        return self.path(key)


def _lock(path: Path, timeout: float) -> int | None:
    """An open descriptor of ``path`` holding an exclusive ``flock``, or None (see :meth:`SampleCache.claim`)."""
    try:
        import fcntl
    except ImportError:  # not a POSIX system
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return None
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    break
                time.sleep(_CLAIM_POLL_S)
    except OSError:  # a file system without flock
        pass
    except BaseException:  # interrupted while waiting: let the signal's exception through, without the descriptor
        os.close(fd)
        raise
    os.close(fd)
    return None
