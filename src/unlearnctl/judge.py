"""The judge: a classifier that tells which class a (generated) image shows.

``eval`` uses it twice: its predictions measure forgetting (is a sample conditioned on the forgotten
class still recognised as that class?) and its penultimate features stand in for Inception features
when computing FID on small images.

A judge folder holds ``judge.safetensors`` (weights) and ``judge.json`` (architecture, class names,
how it was trained) -- no pickle, so loading one runs no code.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .data import ImageSet
from .errors import ModelNotAvailableError, UsageError

WEIGHTS_FILE = "judge.safetensors"
CONFIG_FILE = "judge.json"

JudgeArch = Literal["cnn-small"]


class Judge(nn.Module):
    """A small CNN for small images in [-1, 1]: two conv blocks, 2 x 2 average pool, 128 features.

    ``forward(x)`` returns logits ``(N, num_classes)``; ``features(x)`` the penultimate activations
    ``(N, feature_dim)`` (eval's FID features).
    """

    def __init__(
        self,
        num_classes: int,
        class_names: list[str] | None = None,
        image_size: int = 8,
        channels: int = 1,
        arch: JudgeArch = "cnn-small",
        width: int = 32,
        feature_dim: int = 128,
        info: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if arch != "cnn-small":
            raise UsageError(f"unknown judge architecture '{arch}': available: cnn-small")
        self.num_classes, self.image_size, self.channels = num_classes, image_size, channels
        self.class_names = list(class_names) if class_names else [str(c) for c in range(num_classes)]
        self.arch, self.width, self.feature_dim = arch, width, feature_dim
        #: how the judge was trained (dataset, fingerprint, accuracy...), saved in judge.json
        self.info: dict[str, Any] = dict(info or {})
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(channels, w, 3, padding=1), nn.ReLU(),
            nn.Conv2d(w, w, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(8 * w, feature_dim), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(feature_dim, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``(N, feature_dim)`` of images ``x`` in [-1, 1]."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(N, num_classes)`` of images ``x`` in [-1, 1]."""
        return self.head(self.body(x))

    @torch.no_grad()
    def predict_proba(self, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """Softmax probabilities ``(N, num_classes)``, on CPU, in eval mode."""
        was_training = self.training
        self.eval()
        try:
            device = next(self.parameters()).device
            out = [
                torch.softmax(self(images[i : i + batch_size].to(device)), dim=1).cpu()
                for i in range(0, len(images), batch_size)
            ]
        finally:
            self.train(was_training)
        return torch.cat(out) if out else torch.zeros(0, self.num_classes)

    @property
    def config(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "image_size": self.image_size,
            "channels": self.channels,
            "width": self.width,
            "feature_dim": self.feature_dim,
        }

    def save(self, folder: Path) -> None:
        """Write ``judge.safetensors`` and ``judge.json`` into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, folder / WEIGHTS_FILE, metadata={"format": "pt"})
        (folder / CONFIG_FILE).write_text(json.dumps({**self.config, "info": self.info}, indent=2) + "\n")


def load_judge(folder: Path) -> Judge:
    """Load a judge folder written by :meth:`Judge.save` (CPU, eval mode)."""
    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        raise ModelNotAvailableError(
            f"'{folder}' is not a judge folder (needs {CONFIG_FILE} and {WEIGHTS_FILE}): "
            "train one with `unlearnctl train-judge --dataset D --out DIR`"
        )
    config = json.loads((folder / CONFIG_FILE).read_text())
    info = config.pop("info", {})
    judge = Judge(**config, info=info)
    judge.load_state_dict(load_file(folder / WEIGHTS_FILE))
    return judge.eval()


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by up to ``max_shift`` pixels in x and y, filling with background (-1)."""
    if max_shift <= 0:
        return x
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (max_shift,) * 4, value=-1.0)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])


@torch.no_grad()
def accuracy(judge: Judge, data: ImageSet) -> float:
    """Fraction of ``data`` that ``judge`` classifies correctly."""
    images = torch.stack([data[i][0] for i in range(len(data))])
    labels = torch.tensor(data.labels)
    return float((judge.predict_proba(images).argmax(1) == labels).float().mean())


def train_judge(
    train: ImageSet,
    test: ImageSet,
    *,
    arch: JudgeArch = "cnn-small",
    epochs: int = 40,
    batch_size: int = 64,
    lr: float = 2e-3,
    max_shift: int = 1,
    noise: float = 0.05,
    seed: int = 0,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[Judge, float]:
    """Train a judge on ``train``; return it (eval mode) and its accuracy on ``test``.

    Light augmentation -- random shifts of up to ``max_shift`` pixels and Gaussian pixel noise of
    std ``noise`` -- so the judge also reads slightly imperfect generated images. Adam with a cosine
    learning-rate decay. Deterministic on CPU under ``seed``.
    """
    if not train.class_names:
        raise UsageError(f"dataset '{train.name}' has no classes: a judge needs labelled data")
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        judge = Judge(len(train.class_names), train.class_names, train.image_size, train.channels, arch=arch)
    images = torch.stack([train[i][0] for i in range(len(train))])
    labels = torch.tensor(train.labels)
    keep = labels >= 0
    images, labels = images[keep], labels[keep]
    steps_per_epoch = max(1, len(images) // batch_size)
    optimizer = torch.optim.Adam(judge.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    start = time.perf_counter()
    judge.train()
    for epoch in range(1, epochs + 1):
        perm = torch.randperm(len(images), generator=g)
        total = 0.0
        for k in range(steps_per_epoch):
            idx = perm[k * batch_size : (k + 1) * batch_size]
            x = random_shift(images[idx], max_shift, g)
            x = (x + noise * torch.randn(x.shape, generator=g)).clamp(-1, 1)
            # Dropout draws from the global generator: fork it so training stays seeded and side-effect free.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed * 100_003 + epoch * 1009 + k)
                loss = nn.functional.cross_entropy(judge(x), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item()
        if on_epoch is not None:
            on_epoch(epoch, {"loss": total / steps_per_epoch, "elapsed": time.perf_counter() - start})
    judge.eval()
    test_accuracy = accuracy(judge, test)
    judge.info = {
        "dataset": train.name,
        "dataset_version": train.version,
        "train_fingerprint": train.fingerprint(),
        "test_fingerprint": test.fingerprint(),
        "train_size": len(images),
        "test_size": len(test),
        "test_accuracy": test_accuracy,
        "seed": seed,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "augmentation": {"max_shift": max_shift, "noise": noise},
        "train_seconds": round(time.perf_counter() - start, 2),
    }
    return judge, test_accuracy


def run_train_judge(
    dataset: str,
    out: Path,
    *,
    arch: str = "cnn-small",
    epochs: int = 40,
    seed: int = 0,
    data_dir: Path | None = None,
    registry: Any = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> Judge:
    """``unlearnctl train-judge``: train on ``dataset``'s train split, test on its test split, write ``out``.

    The folder is written under a temporary name and renamed when whole; an existing ``out`` is refused.
    """
    from .loading import load_dataset
    from .rundir import atomic_run_dir, check_new_folder

    if arch not in ("cnn-small",):
        raise UsageError(f"unknown judge architecture '{arch}': available: cnn-small")
    if epochs < 1:
        raise UsageError(f"--epochs must be >= 1, got {epochs}")
    check_new_folder(Path(out))
    train = load_dataset(dataset, "train", data_dir, registry=registry)
    test = load_dataset(dataset, "test", data_dir, registry=registry)
    judge, _ = train_judge(train, test, arch=arch, epochs=epochs, seed=seed, on_epoch=on_epoch)  # type: ignore[arg-type]
    judge.info["dataset"] = dataset
    with atomic_run_dir(Path(out)) as tmp:
        judge.save(tmp)
    return judge
