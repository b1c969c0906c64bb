"""Checkpoints of a step loop, and the loop itself: what ``--resume`` continues from (docs/resume.md).

A :class:`StepLoop` counts the steps of ``forget`` (a method's ``run.steps()``) and ``train``. Every
object whose state the remaining steps depend on is :meth:`~StepLoop.track`-ed: the weights, the
optimizer, the EMA, the learning-rate schedule, every random generator and the position of every data
stream. At a step boundary -- every ``every`` steps, and when a stop signal came during the step -- the
loop writes all of it to ``checkpoints/step-NNNNNN/`` of the run folder being written: tensors in
``state.safetensors`` (never a pickle), the rest in ``state.json`` with the safetensors file's sha256.
A checkpoint is written under a temporary name and renamed, so one that exists is whole; older ones
are removed. Resumed, the loop loads the newest checkpoint into the same objects (re-created by the
same code from the same inputs) and goes on from the next step: on CPU the final weights are
bit-identical to those of a run that was never stopped.

Multi-process runs: objects tracked ``per_rank`` (each process's own random generator) are gathered to
the main process, which alone writes; on resume the main process reads the checkpoint and sends it to
the others, so only the main process needs the folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import stopping
from .distributed import SINGLE, World, broadcast_from_main, gather_objects
from .errors import Interrupted, UsageError

STATE_TENSORS = "state.safetensors"
STATE_JSON = "state.json"
#: the layout of ``state.json``
CHECKPOINT_VERSION = 1


@dataclass
class Checkpoint:
    """A checkpoint read back: the step it was taken after, its tensors and its JSON state."""

    path: Path
    step: int
    tensors: dict[str, torch.Tensor]
    state: dict[str, Any]


# --- nested states <-> (JSON, flat tensors) -----------------------------------------------------


def _flatten(value: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    """``value`` as JSON, its tensors moved to ``tensors`` under path-like keys."""
    if isinstance(value, torch.Tensor):
        tensors[key] = value.detach().to("cpu", copy=True).contiguous()
        return {"__tensor__": key}
    if isinstance(value, dict):
        return {"__dict__": [[k, _flatten(v, f"{key}.{k}", tensors)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {"__tuple__": [_flatten(v, f"{key}.{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_flatten(v, f"{key}.{i}", tensors) for i, v in enumerate(value)]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"checkpoint: cannot store a {type(value).__name__} at '{key}' (tensors and JSON values only)")


def _unflatten(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, dict):
        if "__tensor__" in value:
            return tensors[value["__tensor__"]]
        if "__tuple__" in value:
            return tuple(_unflatten(v, tensors) for v in value["__tuple__"])
        return {k: _unflatten(v, tensors) for k, v in value["__dict__"]}
    if isinstance(value, list):
        return [_unflatten(v, tensors) for v in value]
    return value


def state_of(obj: Any) -> Any:
    """The state of a tracked object: a generator's bytes, or its ``state_dict()``."""
    if isinstance(obj, torch.Generator):
        return {"generator": obj.get_state()}
    return obj.state_dict()


def load_state(obj: Any, state: Any, device: torch.device | None) -> None:
    """Put ``state`` back into ``obj`` (the inverse of :func:`state_of`)."""
    if isinstance(obj, torch.Generator):
        obj.set_state(state["generator"])
        return
    obj.load_state_dict(state)
    to = getattr(obj, "to", None)
    if device is not None and callable(to) and not isinstance(obj, torch.nn.Module):
        to(device=device)  # diffusers' EMAModel keeps its shadow weights where it is told


# --- files ------------------------------------------------------------------------------------------


def _name(step: int) -> str:
    return f"step-{step:06d}"


def list_checkpoints(folder: Path) -> list[Path]:
    """The whole checkpoints in ``folder`` (``step-NNNNNN``), oldest first."""
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.iterdir() if p.is_dir() and p.name.startswith("step-") and (p / STATE_JSON).is_file()
    )


def write_checkpoint(folder: Path, step: int, state: dict[str, Any]) -> Path:
    """Write ``state`` as checkpoint ``step`` in ``folder`` (temporary name, then renamed); remove older ones."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    flat = _flatten(state, "s", tensors)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / _name(step)
    tmp = folder / f".{_name(step)}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        save_file(tensors, str(tmp / STATE_TENSORS))
        digest = hashlib.sha256((tmp / STATE_TENSORS).read_bytes()).hexdigest()
        doc = {"version": CHECKPOINT_VERSION, "step": step, "sha256": digest, "state": flat}
        (tmp / STATE_JSON).write_text(json.dumps(doc), encoding="utf-8")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(folder):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def read_checkpoint(path: Path) -> Checkpoint:
    """A checkpoint folder read back; its tensors must hash to the recorded sha256."""
    from safetensors.torch import load_file

    try:
        doc = json.loads((path / STATE_JSON).read_text(encoding="utf-8"))
        data = (path / STATE_TENSORS).read_bytes()
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read the checkpoint '{path}': {exc}") from None
    if doc.get("version") != CHECKPOINT_VERSION:
        raise UsageError(
            f"checkpoint '{path}' has layout version {doc.get('version')}; this unlearnctl reads {CHECKPOINT_VERSION}"
        )
    if hashlib.sha256(data).hexdigest() != doc.get("sha256"):
        raise UsageError(f"checkpoint '{path}' is damaged ({STATE_TENSORS} does not match its sha256)")
    tensors = load_file(str(path / STATE_TENSORS))
    return Checkpoint(path=path, step=int(doc["step"]), tensors=tensors, state=_unflatten(doc["state"], tensors))


def latest_checkpoint(folder: Path) -> Checkpoint | None:
    found = list_checkpoints(folder)
    return read_checkpoint(found[-1]) if found else None


# --- the loop -------------------------------------------------------------------------------------


@dataclass
class _Tracked:
    obj: Any
    per_rank: bool
    device: torch.device | None


class StepLoop:
    """Steps ``1..total_steps`` with checkpoints, resume and clean stops (module docstring).

    ``folder``: the checkpoints folder (None: no checkpoints; a stop signal then ends the run at the
    step boundary without one). ``every``: steps between checkpoints (0: only when stopped).
    ``resume``: the checkpoint to continue from. ``resume_hint``: the command that continues the run
    (said when a signal stops it). ``on_save(step)``: called before each checkpoint (flush logs).
    """

    def __init__(
        self,
        total_steps: int | None = None,
        *,
        folder: Path | None = None,
        every: int = 0,
        resume: Checkpoint | None = None,
        resuming: bool | None = None,
        world: World = SINGLE,
        resume_hint: str = "",
        on_save: Callable[[int], None] | None = None,
    ) -> None:
        self.total_steps = total_steps
        self.folder = folder
        self.every = max(0, int(every))
        self.resume = resume
        #: continue from a checkpoint (the main process reads it and sends it to the others)
        self.resuming = resume is not None if resuming is None else resuming
        self.world = world
        self.resume_hint = resume_hint
        self.on_save = on_save
        self._tracked: dict[str, _Tracked] = {}
        #: the step after which the newest checkpoint was written (None: none yet)
        self.saved_step: int | None = resume.step if resume is not None else None
        #: the step this run resumed after (0: it started from the beginning)
        self.resumed_from = 0
        self._active: Iterator[int] | None = None

    def track(self, name: str, obj: Any, *, per_rank: bool = False, device: torch.device | str | None = None) -> Any:
        """Keep ``obj``'s state in every checkpoint and restore it on resume; returns ``obj``.

        ``obj``: a ``torch.nn.Module``, an optimizer, an LR scheduler, diffusers' ``EMAModel``, a
        ``torch.Generator``, or anything with ``state_dict()``/``load_state_dict()`` of tensors and JSON
        values. ``per_rank``: each process has its own (a random generator of its own draws).
        """
        if name in self._tracked:
            raise ValueError(f"checkpoint: '{name}' is tracked twice")
        self._tracked[name] = _Tracked(obj, per_rank, torch.device(device) if device is not None else None)
        return obj

    def tracks(self, name: str) -> bool:
        """Whether an object is tracked under ``name``."""
        return name in self._tracked

    def steps(self, total_steps: int | None = None) -> Iterator[int]:
        """The steps not yet done; checkpoints and stops at the boundaries (see the class docstring)."""
        total = total_steps if total_steps is not None else self.total_steps
        if total is None:
            raise ValueError("the step loop needs a number of steps")
        self.total_steps = total
        gen = self._steps(total)
        self._active = gen
        return gen

    def _steps(self, total: int) -> Iterator[int]:
        start = 1
        if self.resuming:
            self.resumed_from = self._restore(self.resume)
            start = self.resumed_from + 1
        stopping.defer(True)
        try:
            for step in range(start, total + 1):
                yield step
                signum = self._stop_requested()
                if signum:
                    detail = f" after step {step} of {total}"
                    if self.folder is not None:
                        self.save(step)
                        detail += f"; checkpoint kept: resume with `{self.resume_hint}`" if self.resume_hint else ""
                    raise Interrupted(signum, detail)
                if self.folder is not None and self.every and step % self.every == 0 and step < total:
                    self.save(step)
        finally:
            stopping.defer(False)

    def close(self) -> None:
        """End the step loop early (the method returned or failed inside it)."""
        if self._active is not None:
            gen, self._active = self._active, None
            close = getattr(gen, "close", None)
            if callable(close):
                close()

    def _stop_requested(self) -> int:
        signum = stopping.pending() or 0
        if self.world.distributed:
            signum = max(gather_objects(signum, self.world))
        return int(signum)

    # -- save and restore -------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Every tracked object's state (per-rank ones gathered: ``{rank: state}``), on every process."""
        out: dict[str, Any] = {}
        for name, t in self._tracked.items():
            s = state_of(t.obj)
            if t.per_rank:
                parts = gather_objects(s, self.world)
                out[name] = {str(r): part for r, part in enumerate(parts)}
            else:
                out[name] = s
        return out

    def save(self, step: int) -> Path | None:
        """Write the checkpoint of ``step`` (main process; the others take part in the gathering)."""
        if self.on_save is not None:
            self.on_save(step)
        state = {"step": step, "world_size": self.world.size, "objects": self.state()}
        if not self.world.is_main or self.folder is None:
            return None
        path = write_checkpoint(self.folder, step, state)
        self.saved_step = step
        return path

    def _restore(self, checkpoint: Checkpoint | None) -> int:
        """Load the checkpoint (the main process's, sent to the others) into the tracked objects; its step."""
        if self.world.is_main and checkpoint is None:
            raise UsageError("there is no checkpoint to resume from")
        state = broadcast_from_main(checkpoint.state if checkpoint is not None else None, self.world)
        if int(state.get("world_size", 1)) != self.world.size:
            n = state.get("world_size")
            raise UsageError(
                f"the checkpoint was written by {n} process(es) and this run has {self.world.size}: resume it "
                + ("without a launcher" if n == 1 else f"with {n} processes (torchrun --nproc_per_node {n} ...)")
            )
        objects = state["objects"]
        missing = [n for n in self._tracked if n not in objects]
        if missing:
            raise UsageError(f"the checkpoint lacks {', '.join(missing)}: it was written by another method or version")
        for name, t in self._tracked.items():
            s = objects[name]
            load_state(t.obj, s[str(self.world.rank)] if t.per_rank else s, t.device)
        return int(state["step"])
