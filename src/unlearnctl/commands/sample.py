"""``unlearnctl sample``: generate images into a folder that is whole or absent.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import UsageError
from ..grids import save_grid, save_labelled_grid
from ..lifecycle import Lifecycle, RunInfo
from ..models.folder import DiffusionModel
from ..rundir import GRID_FILE, SAMPLES_INFO_FILE, check_new_folder
from ..sampling import SampleOptions, class_labels_for, generate, save_images


@dataclass
class SampleResult:
    out: Path
    files: list[Path]
    labels: list[int] | None
    seconds: float


def check_out_folder(out: Path) -> None:
    """``--out`` must not exist, or be an empty folder (unlearnctl never overwrites images)."""
    check_new_folder(Path(out), empty_ok=True)


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
) -> SampleResult:
    """``unlearnctl sample``: ``num`` PNGs, ``grid.png`` and ``samples.json`` in ``out``.

    Written in a temporary sibling folder and renamed when complete. Without ``class_id`` a
    conditional model samples every class evenly and the grid has one labelled row per class.
    With ``registry``, its plugins' lifecycle hooks see a run of kind ``"sample"`` (no steps).
    """
    o = options or SampleOptions()
    out = Path(out)
    if num < 1:
        raise UsageError(f"--num must be >= 1, got {num}")
    check_out_folder(out)
    labels = class_labels_for(model, num, class_id)
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
    start = time.perf_counter()
    images = generate(model, labels, num, o, seed, device)
    seconds = time.perf_counter() - start
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    run.work_dir = tmp
    try:
        files = save_images(images, tmp, labels, model.class_names)
        names = model.class_names or [str(c) for c in range(model.num_classes)]
        if labels is not None and class_id is None:
            per_row = math.ceil(num / model.num_classes)
            rows, row_labels = [], []
            blank = -torch.ones_like(images[0])  # background fills short rows
            for c in range(model.num_classes):
                row = images[labels == c]
                if len(row):
                    rows.append(torch.cat([row, blank.expand(per_row - len(row), *blank.shape)]))
                    row_labels.append(names[c])
            save_labelled_grid(torch.cat(rows), row_labels, tmp / GRID_FILE, nrow=per_row)
        else:
            save_grid(images, tmp / GRID_FILE, nrow=math.ceil(math.sqrt(num)))
        info = {
            "model": model_spec or model.source,
            "num": num,
            "class": None if class_id is None else {"id": class_id, "name": names[class_id] if names else None},
            "seed": seed,
            **o.model_dump(mode="json"),
            "device": str(device),
            "seconds": round(seconds, 3),
            "files": [p.name for p in files],
            "labels": None if labels is None else labels.tolist(),
        }
        (tmp / SAMPLES_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    result = SampleResult(out=out, files=[out / p.name for p in files], labels=info["labels"], seconds=seconds)
    run.work_dir = out  # renamed into place: the folder is whole
    hook.run_finished(run=run, result=result)
    return result
