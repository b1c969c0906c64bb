"""The study the eval, audit and re-scoring tests share: a tiny 10-class model of the real digits that names
an (untrained) judge, and one EraseDiff step forgetting class 2 of it."""

from __future__ import annotations

from pathlib import Path

import torch

from unlearnctl.judge.classifier import Judge
from unlearnctl.testing.tiny import tiny_model


def tiny_digits_study(root: Path, extra_models: dict[str, int] | None = None) -> dict[str, Path]:
    """Write into ``root``: ``judge/``, the model ``tiny/`` (seed 0), one model per ``extra_models`` entry
    (name: seed), and ``run/``, ``tiny`` unlearned for one step (class 2, batches of 8). Returns the paths
    by name (``root``, ``judge``, ``model``, ``run`` and the extra models')."""
    from unlearnctl.commands.forget import ForgetRequest, forget

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        Judge(10).eval().save(root / "judge")
    paths = {"root": root, "judge": root / "judge", "model": root / "tiny", "run": root / "run"}
    for name, seed in {"tiny": 0, **(extra_models or {})}.items():
        model = tiny_model(num_classes=10, seed=seed)
        model.default_dataset = "digits"
        model.extra = {"judge": str(root / "judge"), "weights": "ema"}
        model.save(root / name)
        paths.setdefault(name, root / name)
    forget(
        ForgetRequest(
            model=str(root / "tiny"),
            classes="2",
            steps=1,
            grid_per_class=0,
            out=root / "run",
            device="cpu",
            sets=["remain_batch_size=8", "forget_batch_size=8"],
        )
    )
    return paths
