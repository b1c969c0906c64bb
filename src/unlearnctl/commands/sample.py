"""``unlearnctl sample``: generate images into a folder that is whole or absent.

Images are generated and written batch by batch, so memory does not grow with ``--num``: nothing is
kept per image but what ``grid.png`` shows (at most :data:`GRID_MAX_IMAGES`), and ``samples.json`` is
written item by item. The images, file names and ``samples.json`` are the same as when every image was
generated at once: the initial noise is drawn in blocks that give the same numbers as one draw, and a
sampler that draws step noise draws it per image, keyed by the image's index (see
:func:`generate_batches`). Under a launcher the processes share the batches and the main process writes
the files, the same files as one process (docs/scaling.md). A ``--num`` whose files cannot fit on the
disk is refused before any work (:func:`check_sample_space`).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..data.files import IndexedSequence
from ..diffusion import draw_step_seed, sample, uses_step_noise
from ..distributed import SINGLE, World, barrier, gather_to_main
from ..errors import UsageError
from ..grids import GRID_MIN_TILE, save_grid, save_labelled_grid, to_pil
from ..lifecycle import Lifecycle, RunInfo
from ..models.folder import DiffusionModel
from ..rundir import GRID_FILE, SAMPLES_INFO_FILE, atomic_run_dir, check_new_folder
from ..runtime import prepare_module
from ..sampling import SampleOptions, image_file_name

#: the most images ``grid.png`` shows: the first ones, or, one row per class, the first
#: ``ceil(GRID_MAX_IMAGES / classes)`` of each class (a larger ``--num`` writes every image as a PNG all the same)
GRID_MAX_IMAGES = 1024
#: the initial noise is drawn this many values at a time at least: torch's CPU normal sampler fills
#: blocks of 16, so draws of whole blocks give the same numbers as one large draw
NOISE_BLOCK = 16


@dataclass
class SampleResult:
    out: Path
    #: every image file, in order (computed on access: a large ``--num`` is not held in memory)
    files: Sequence[Path]
    #: the class of each image; None for an unconditional model
    labels: Sequence[int] | None
    seconds: float


def check_out_folder(out: Path) -> None:
    """``--out`` must not exist, or be an empty folder (unlearnctl never overwrites images), and must be
    writable."""
    check_new_folder(Path(out), empty_ok=True)


# --- which image is which -------------------------------------------------------------------------


class SamplePlan:
    """The class and the file name of each of ``num`` images, computed per index (nothing stored per
    image): every image of ``class_id``, or every class evenly in class order, the first classes one
    image more when ``num`` is not a multiple of the number of classes (as
    :func:`unlearnctl.sampling.class_labels_for`)."""

    def __init__(self, model: DiffusionModel, num: int, class_id: int | None = None) -> None:
        self.num = int(num)
        self.class_id = class_id
        self.conditional = model.conditional
        self.num_classes = model.num_classes
        self.class_names = model.class_names

    def labels(self, start: int, stop: int) -> torch.Tensor | None:
        """The classes of images ``start..stop-1`` (None for an unconditional model)."""
        if not self.conditional:
            return None
        if self.class_id is not None:
            return torch.full((stop - start,), self.class_id, dtype=torch.long)
        index = torch.arange(start, stop, dtype=torch.long)
        per_class, extra = divmod(self.num, self.num_classes)
        if per_class == 0:  # fewer images than classes: one each for the first classes
            return index
        first = extra * (per_class + 1)  # the first `extra` classes have one image more
        big = torch.div(index, per_class + 1, rounding_mode="floor")
        small = extra + torch.div(index - first, per_class, rounding_mode="floor")
        return torch.where(index < first, big, small)

    def label(self, index: int) -> int | None:
        labels = self.labels(index, index + 1)
        return None if labels is None else int(labels[0])

    def file_name(self, index: int, label: int | None = None) -> str:
        if label is None and self.conditional:
            label = self.label(index)
        return image_file_name(index, self.num, label, self.class_names)


class _Lazy(IndexedSequence):
    """A read-only sequence of ``length`` items computed by ``item(index)``; equal to a list of the same items."""

    def __init__(self, length: int, item: Callable[[int], Any]) -> None:
        self._length, self._compute = length, item

    def _item(self, index: int) -> Any:
        return self._compute(index)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str):
            return NotImplemented
        return len(other) == len(self) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        shown = ", ".join(repr(self[i]) for i in range(min(3, self._length)))
        return f"[{shown}{', ...' if self._length > 3 else ''}] ({self._length} items)"


# --- generating batch by batch --------------------------------------------------------------------


def check_steps(model: DiffusionModel, options: SampleOptions) -> None:
    total = model.scheduler.config.num_train_timesteps
    if options.steps > total:
        raise UsageError(f"--steps {options.steps} is more than the model's {total} diffusion steps")


class NoiseStream:
    """The initial noise of ``num`` images from one generator, handed out by image range in increasing
    order while holding at most two blocks: drawn :data:`NOISE_BLOCK`-aligned blocks at a time, which give
    the same numbers as one draw of all of it (what :func:`unlearnctl.diffusion.sample` draws)."""

    def __init__(self, generator: torch.Generator, num: int, shape: tuple[int, ...], block: int) -> None:
        self.generator, self.num, self.shape, self.block = generator, num, shape, block
        self.drawn = 0
        self.blocks: list[tuple[int, torch.Tensor]] = []  # (first image, noise), in order

    def take(self, start: int, stop: int) -> torch.Tensor:
        """The noise of images ``start .. stop - 1`` (``start`` never below an earlier call's)."""
        while self.drawn < stop:
            first, count = self.drawn, min(self.block, self.num - self.drawn)
            drawn = torch.randn((count, *self.shape), generator=self.generator)
            self.drawn += count
            if first + count > start:  # the noise of images before `start` is drawn and dropped
                self.blocks.append((first, drawn))
        self.blocks = [(first, noise) for first, noise in self.blocks if first + len(noise) > start]
        parts = [noise[max(0, start - first) : stop - first] for first, noise in self.blocks if first < stop]
        return parts[0] if len(parts) == 1 else torch.cat(parts)


def generate_batches(
    model: DiffusionModel,
    plan: SamplePlan,
    options: SampleOptions,
    seed: int = 0,
    device: torch.device | str = "cpu",
    world: World = SINGLE,
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor | None, float]]:
    """``(first index, images, their labels, seconds)`` for each round of batches, in order: the same
    images as :func:`unlearnctl.sampling.generate` for all ``plan.num`` at once, holding one round.

    :func:`~unlearnctl.sampling.generate` computes batches of ``options.batch_size`` images from one
    generator: a step-noise seed first when the sampler draws step noise (DDPM, DDIM with eta > 0), then
    the initial noise of every image; each image's step noise comes from its own generator keyed by that
    seed and its index. Here the same batches are computed a round at a time: the initial noise comes from
    a :class:`NoiseStream`, and with several processes (``world``) each computes one batch of the round
    and the main process receives the round in order (the others yield nothing). The same batches
    of the same images in every case: the images do not depend on the number of processes.
    """
    o = options
    check_steps(model, o)
    shape = (model.channels, model.image_size, model.image_size)
    generator = torch.Generator().manual_seed(seed)
    step_seed = draw_step_seed(generator) if uses_step_noise(o.sampler, o.eta) else None
    # blocks of whole batches and whole NOISE_BLOCKs
    noise = NoiseStream(generator, plan.num, shape, math.lcm(o.batch_size, NOISE_BLOCK))
    settings = {"sampler": o.sampler, "steps": o.steps, "guidance": o.guidance, "eta": o.eta}
    per_round = o.batch_size * world.size  # one batch per process
    prepare_module(model.unet.to(device), channels_last=o.channels_last, compile=o.compile)
    try:
        for start in range(0, plan.num, per_round):
            began = time.perf_counter()
            count = min(per_round, plan.num - start)
            mine = world.batch_shard(count, o.batch_size)
            lo, hi = start + mine.start, start + mine.stop
            images = torch.empty((0, *shape))
            if hi > lo:
                images = sample(
                    model, hi - lo, plan.labels(lo, hi), clip_sample=o.clip_sample, batch_size=o.batch_size,
                    device=device, noise=noise.take(lo, hi), step_seed=step_seed, first_index=lo,
                    **settings,  # type: ignore[arg-type]
                )  # fmt: skip
            gathered = gather_to_main(images, world)
            if gathered is not None:
                yield start, gathered, plan.labels(start, start + count), time.perf_counter() - began
    finally:
        model.unet.to("cpu", memory_format=torch.contiguous_format)


class GridImages:
    """The images ``grid.png`` shows, collected while the batches go by: at most
    :data:`GRID_MAX_IMAGES` (one labelled row per class when a conditional model samples every class)."""

    def __init__(self, plan: SamplePlan) -> None:
        self.plan = plan
        self.by_class = plan.conditional and plan.class_id is None
        k = max(1, plan.num_classes)
        self.per_row = min(math.ceil(plan.num / k), math.ceil(GRID_MAX_IMAGES / k))
        self.limit = min(plan.num, GRID_MAX_IMAGES)
        self.kept: dict[int, list[torch.Tensor]] = {}
        self.count: dict[int, int] = {}

    def add(self, images: torch.Tensor, labels: torch.Tensor | None) -> None:
        if self.by_class and labels is not None:
            for c in labels.unique().tolist():
                self._keep(int(c), images[labels == c], self.per_row)
        else:
            self._keep(0, images, self.limit)

    def _keep(self, key: int, images: torch.Tensor, most: int) -> None:
        room = most - self.count.get(key, 0)
        if room > 0:
            self.kept.setdefault(key, []).append(images[:room].clone())  # a copy: not a view of the batch
            self.count[key] = self.count.get(key, 0) + min(room, len(images))

    def save(self, path: Path) -> None:
        if not self.by_class:
            images = torch.cat(self.kept[0])
            save_grid(images, path, nrow=math.ceil(math.sqrt(len(images))))
            return
        names = self.plan.class_names or [str(c) for c in range(self.plan.num_classes)]
        rows, row_labels = [], []
        for c in range(self.plan.num_classes):
            if c not in self.kept:
                continue
            row = torch.cat(self.kept[c])
            blank = -torch.ones_like(row[0])  # background fills short rows
            rows.append(torch.cat([row, blank.expand(self.per_row - len(row), *blank.shape)]))
            row_labels.append(names[c])
        save_labelled_grid(torch.cat(rows), row_labels, path, nrow=self.per_row)


# --- disk space -----------------------------------------------------------------------------------


def png_size_bound(channels: int, size: int) -> int:
    """An upper bound of the bytes of one ``size x size`` PNG: the raw rows (a filter byte each), zlib's
    worst case for incompressible data (5 bytes per 16 KiB block, 6 of framing) and the chunks around."""
    raw = size * (1 + size * channels)
    return raw + 5 * (raw // 16_000 + 1) + 6 + 12 * (raw // 65_536 + 1) + 128


def free_space(folder: Path) -> tuple[int, int | None, int]:
    """Bytes free to us in ``folder``'s file system, files (inodes) free (None when it does not count
    them), and its block size."""
    stat = os.statvfs(folder)
    block = stat.f_frsize or stat.f_bsize or 4096
    return stat.f_bavail * block, (stat.f_favail if stat.f_files else None), block


def check_sample_space(model: DiffusionModel, out: Path, num: int) -> None:
    """Refuse a ``--num`` whose files cannot fit where ``--out`` goes, before any work: one PNG per image
    (each at most :func:`png_size_bound`, rounded up to the file system's block), ``grid.png`` and
    ``samples.json``, against the free bytes and the free files (inodes) of the file system."""
    folder = Path(out)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free, files_free, block = free_space(folder)
    per_image = -(-png_size_bound(model.channels, model.image_size) // block) * block
    tile = max(GRID_MIN_TILE, model.image_size) + 2
    grid = png_size_bound(model.channels, tile * math.ceil(math.sqrt(GRID_MAX_IMAGES + model.num_classes)) + 200)
    need = num * per_image + grid + num * (len(str(num)) + 48) + 4 * block
    if need > free:
        raise UsageError(
            f"--num {num:,}: the images need up to {_size(need)} in '{folder}', which has {_size(free)} free: "
            "lower --num or choose another --out"
        )
    if files_free is not None and num + 3 > files_free:
        raise UsageError(
            f"--num {num:,}: one file per image needs {num + 3:,} files, but the file system of '{folder}' "
            f"has room for {files_free:,} more: lower --num or choose another --out"
        )


def _size(n: int) -> str:
    for unit, scale in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n} bytes"


# --- samples.json, written item by item -------------------------------------------------------------


@dataclass
class Streamed:
    """A JSON list that :func:`write_json_object` writes item by item (never all in memory)."""

    items: Iterable[Any]


def write_json_object(
    write: Callable[[str], Any], data: dict[str, Any], *, ensure_ascii: bool = True, default: Any = None
) -> None:
    """Write exactly what ``json.dumps(data, indent=2)`` gives, a :class:`Streamed` value as a list
    written one item at a time."""

    def dumps(value: Any) -> str:
        return json.dumps(value, indent=2, ensure_ascii=ensure_ascii, default=default)

    if not data:
        write("{}")
        return
    write("{")
    for n, (key, value) in enumerate(data.items()):
        write(("\n" if n == 0 else ",\n") + "  " + dumps(str(key)) + ": ")
        if isinstance(value, Streamed):
            empty = True
            for item in value.items:
                write(("[\n" if empty else ",\n") + "    " + dumps(item).replace("\n", "\n    "))
                empty = False
            write("[]" if empty else "\n  ]")
        else:
            write(dumps(value).replace("\n", "\n  "))
    write("\n}")


def _names_and_labels(plan: SamplePlan, block: int = 4096) -> Iterator[tuple[str, int | None]]:
    for start in range(0, plan.num, block):
        stop = min(plan.num, start + block)
        labels = plan.labels(start, stop)
        for i in range(start, stop):
            label = None if labels is None else int(labels[i - start])
            yield plan.file_name(i, label), label


# --- the command ----------------------------------------------------------------------------------


def sample_to_folder(
    model: DiffusionModel,
    out: Path,
    num: int,
    class_id: int | None = None,
    options: SampleOptions | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    model_spec: str | None = None,
    registry: Any = None,
    world: World = SINGLE,
) -> SampleResult:
    """``unlearnctl sample``: ``num`` PNGs, ``grid.png`` and ``samples.json`` in ``out``.

    Written batch by batch in a temporary sibling folder and renamed when complete. Without
    ``class_id`` a conditional model samples every class evenly and the grid has one labelled row per
    class. With ``registry``, its plugins' lifecycle hooks see a run of kind ``"sample"`` (no steps).

    With several processes (``world``, every process calls this) each process computes its batches of
    each round (:func:`generate_batches`); the main process alone writes the files, fires the lifecycle
    hooks and renames the folder, and the others wait for it at a barrier. The files are byte for byte
    those of one process.
    """
    o = options or SampleOptions()
    out = Path(out)
    if num < 1:
        raise UsageError(f"--num must be >= 1, got {num}")
    check_out_folder(out)
    check_steps(model, o)
    check_sample_space(model, out, num)
    plan = SamplePlan(model, num, class_id)
    labels_seq = None if not plan.conditional else _Lazy(num, lambda i: plan.label(i))
    files = _Lazy(num, lambda i: out / plan.file_name(i))
    if not world.is_main:
        for _ in generate_batches(model, plan, o, seed, device, world):
            pass  # this process's batches go to the main process
        barrier(world)  # the main process writes samples.json and the grid, and renames the folder
        return SampleResult(out=out, files=files, labels=labels_seq, seconds=0.0)
    names = model.class_names or [str(c) for c in range(model.num_classes)]
    hook = Lifecycle.of(registry)
    run = RunInfo(
        kind="sample",
        out_dir=out,
        config={"model": model_spec or model.source, "num": num, "class": class_id, **o.model_dump(mode="json"),
                "device": str(device)},
        description=f"sample {model_spec or model.source}",
        seed=seed,
    )  # fmt: skip
    hook.run_started(run=run)
    seconds = 0.0
    with atomic_run_dir(out, empty_ok=True) as tmp:
        run.work_dir = tmp
        grid = GridImages(plan)
        for start, images, labels, took in generate_batches(model, plan, o, seed, device, world):
            seconds += took
            for i, image in enumerate(images):
                label = None if labels is None else int(labels[i])
                to_pil(image).save(tmp / plan.file_name(start + i, label))
            grid.add(images, labels)
        grid.save(tmp / GRID_FILE)
        head = {
            "model": model_spec or model.source,
            "num": num,
            "class": None if class_id is None else {"id": class_id, "name": names[class_id] if names else None},
            "seed": seed,
            **o.model_dump(mode="json"),
            "device": str(device),
            "seconds": round(seconds, 3),
        }
        with open(tmp / SAMPLES_INFO_FILE, "w") as fh:
            info = {
                **head,
                "files": Streamed(name for name, _ in _names_and_labels(plan)),
                "labels": None if not plan.conditional else Streamed(label for _, label in _names_and_labels(plan)),
            }
            write_json_object(fh.write, info)
            fh.write("\n")
    barrier(world)
    result = SampleResult(out=out, files=files, labels=labels_seq, seconds=seconds)
    run.work_dir = out  # renamed into place: the folder is whole
    hook.run_finished(run=run, result=result)
    return result
