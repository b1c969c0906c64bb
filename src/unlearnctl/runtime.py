"""Devices, precision, seeds and threads: what every command that computes shares.

Randomness: every random draw comes from a seeded CPU ``torch.Generator`` (moved to the device afterwards),
so a CPU run is bit-for-bit reproducible from its seed. Each stream has its own generator seeded by
:func:`stream_seed` from the run's ``--seed``: changing how many numbers one stream draws does not change
another stream's draws.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from typing import Literal

import torch

from .errors import UsageError

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")
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


def set_determinism(device: torch.device) -> None:
    """Deterministic kernels where the device needs asking (CPU kernels used here are deterministic)."""
    if device.type == "cuda":
        # cuBLAS reads this when its first handle is created; it must be set before any CUDA work.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)


# --- opt-in speed-ups of a UNet (docs/performance.md, "GPU paths") ----------------------------------

#: torch.compile's backend for ``--compile`` (default inductor; ``aot_eager`` traces and differentiates the
#: same graph without generating code: a quick check that a model compiles)
COMPILE_BACKEND_ENV = "UNLEARNCTL_COMPILE_BACKEND"


def prepare_module(module: torch.nn.Module, *, channels_last: bool = False, compile: bool = False) -> torch.nn.Module:
    """Apply the opt-in speed-ups to ``module`` in place (and return it).

    - ``channels_last``: the 4-d weights in NHWC memory format, which cuDNN's convolutions prefer on
      tensor-core GPUs (the activations follow the weights' format). Values unchanged, kernels differ, so
      the weights a run ends with differ in the last bits.
    - ``compile``: ``torch.compile`` of the module's ``forward``, as a method bound to the module: a
      ``copy.deepcopy`` of the module (EraseDiff's inner copy) rebinds it to the copy, where a compiled
      ``Module.compile``/``torch.compile(module)`` wrapper would keep calling the original's weights.
      The first calls compile (seconds to minutes); the state dict's keys do not change.
    """
    import types

    if channels_last:
        module.to(memory_format=torch.channels_last)
    if compile:
        backend = os.environ.get(COMPILE_BACKEND_ENV) or "inductor"
        forward = torch.compile(type(module).forward, backend=backend)
        module.forward = types.MethodType(forward, module)
    return module
