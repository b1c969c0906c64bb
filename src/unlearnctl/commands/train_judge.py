"""``unlearnctl train-judge``: train the classifier ``eval`` uses to tell which class a generated image shows."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..errors import UsageError
from ..inputs import load_dataset_warned
from ..judge.arch import ARCH_CHOICES, check_arch
from ..judge.classifier import Judge, train_judge
from ..lifecycle import Lifecycle, RunInfo
from ..registry import get_registry
from ..rundir import atomic_run_dir, check_new_folder


def run_train_judge(
    dataset: str,
    out: Path,
    *,
    arch: str = "auto",
    epochs: int = 40,
    batch_size: int | None = None,
    flip: bool | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    data_dir: Path | None = None,
    data_options: dict[str, Any] | None = None,
    registry: Any = None,
    on_data_warning: Callable[[str], None] | None = None,
) -> Judge:
    """``unlearnctl train-judge``: train on ``dataset``'s train split, test on its test split, write ``out``.

    ``arch="auto"`` picks by the dataset's image size and channels (cnn-small for the 8x8 digits,
    resnet18 for CIFAR-10). The folder is written under a temporary name and renamed when whole; an
    existing ``out`` is refused. ``data_options`` are the dataset's options (``--data-option``); the data
    warnings of loading it (files left out...) go to ``on_data_warning`` and into ``judge.json``.
    Progress goes through the lifecycle hooks of ``registry``'s plugins (a run of kind ``"train-judge"``;
    ``step_logged`` after each optimizer step with ``epoch`` and ``loss``; ``run_finished`` with the judge).
    """

    check_arch(arch, ARCH_CHOICES)
    if epochs < 1:
        raise UsageError(f"--epochs must be >= 1, got {epochs}")
    if batch_size is not None and batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {batch_size}")
    check_new_folder(Path(out))
    train, warned = load_dataset_warned(dataset, "train", data_dir, data_options, registry)
    test, warned_test = load_dataset_warned(dataset, "test", data_dir, data_options, registry)
    data_warnings = list(dict.fromkeys([*warned, *warned_test]))
    for message in data_warnings:
        if on_data_warning is not None:
            on_data_warning(message)
    hook = Lifecycle.of(registry if registry is not None else get_registry())
    run = RunInfo(
        kind="train-judge",
        out_dir=Path(out),
        config={"dataset": dataset, "arch": arch, "epochs": epochs, "batch_size": batch_size, "flip": flip,
                "device": str(device), "data_options": dict(data_options or {})},
        description=f"train-judge {dataset}",
        seed=seed,
    )  # fmt: skip

    def on_step(step: int, total: int, values: dict[str, float]) -> None:
        run.total_steps = total  # known once training has started
        hook.step_logged(run=run, step=step, values=values)

    hook.run_started(run=run)
    judge, _ = train_judge(
        train, test, arch=arch, epochs=epochs, batch_size=batch_size, flip=flip, seed=seed, device=device,
        on_step=on_step,
    )  # fmt: skip
    judge.info["dataset"] = dataset
    if data_options:
        judge.info["dataset_options"] = dict(data_options)
    if data_warnings:
        judge.info["data_warnings"] = data_warnings
    with atomic_run_dir(Path(out)) as tmp:
        run.work_dir = tmp
        judge.save(tmp)
    run.work_dir = run.out_dir  # renamed into place: the folder is whole
    hook.run_finished(run=run, result=judge)
    return judge
