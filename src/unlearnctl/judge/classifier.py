"""The judge: a classifier that tells which class a (generated) image shows.

``eval`` uses it twice: its predictions measure forgetting (is a sample conditioned on the forgotten
class still recognised as that class?) and its penultimate features stand in for Inception features
when computing FID on small images.

A judge folder holds ``judge.safetensors`` (weights) and ``judge.json`` (architecture, class names,
image size, input normalisation, how it was trained) -- no pickle, so loading one runs no code. The
architectures (a small CNN, torchvision ResNets) are built in :mod:`unlearnctl.judge.arch`.
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

from ..data.sets import ImageSet
from ..errors import ModelNotAvailableError, UsageError
from ..rundir import follow_umask
from .arch import ARCHS, RESNETS, build_cnn_small, build_resnet, check_arch, resolve_arch

WEIGHTS_FILE = "judge.safetensors"
CONFIG_FILE = "judge.json"

JudgeArch = Literal["cnn-small", "resnet18", "resnet34", "resnet50"]
Optimizer = Literal["auto", "adam", "adamw", "sgd"]


def default_normalization(channels: int) -> dict[str, list[float]]:
    """The judge's input convention, as torchvision's ``Normalize`` of pixels in [0, 1]: ``(x - 0.5) / 0.5``,
    i.e. images in [-1, 1] (what the diffusion models generate). The only one supported."""
    return {"mean": [0.5] * channels, "std": [0.5] * channels}


class Judge(nn.Module):
    """A classifier of images in [-1, 1]: ``body`` (image -> pooled features) then ``head`` (-> logits).

    ``arch`` ``cnn-small``: two conv blocks, 2 x 2 average pool, 128 features (tiny images);
    ``resnet18``/``resnet34``/``resnet50``: torchvision's ResNet, 512/512/2048 features.
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
        width: int | None = None,
        feature_dim: int | None = None,
        info: dict[str, Any] | None = None,
        normalization: dict[str, list[float]] | None = None,
    ) -> None:
        super().__init__()
        check_arch(arch)
        if normalization is not None and normalization != default_normalization(channels):
            raise UsageError(
                f"unsupported judge normalization {normalization}: judges read images in [-1, 1] "
                f"(mean {default_normalization(channels)['mean']}, std {default_normalization(channels)['std']})"
            )
        self.num_classes, self.image_size, self.channels = num_classes, image_size, channels
        self.class_names = list(class_names) if class_names else [str(c) for c in range(num_classes)]
        self.arch: str = arch
        #: how the judge was trained (dataset, fingerprint, accuracy...), saved in judge.json
        self.info: dict[str, Any] = dict(info or {})
        self.width: int | None
        if arch in RESNETS:
            if width is not None:
                raise UsageError(f"judge architecture '{arch}' takes no width (got {width})")
            self.width = None
            self.body, self.head, self.feature_dim = build_resnet(arch, channels, num_classes, image_size)
            if feature_dim is not None and feature_dim != self.feature_dim:
                raise UsageError(f"judge architecture '{arch}' has {self.feature_dim} features, not {feature_dim}")
        else:
            self.width, self.feature_dim = width or 32, feature_dim or 128
            self.body, self.head = build_cnn_small(channels, num_classes, self.width, self.feature_dim)

    @property
    def normalization(self) -> dict[str, list[float]]:
        return default_normalization(self.channels)

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
        """What :func:`load_judge` needs to rebuild the network (judge.json without ``info``)."""
        config: dict[str, Any] = {
            "arch": self.arch,
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "image_size": self.image_size,
            "channels": self.channels,
            "width": self.width,
            "feature_dim": self.feature_dim,
            "normalization": self.normalization,
        }
        if self.width is None:
            del config["width"]
        return config

    def save(self, folder: Path) -> None:
        """Write ``judge.safetensors`` and ``judge.json`` into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, folder / WEIGHTS_FILE, metadata={"format": "pt"})
        follow_umask(folder / WEIGHTS_FILE)  # safetensors writes it private (0600)
        (folder / CONFIG_FILE).write_text(json.dumps({**self.config, "info": self.info}, indent=2) + "\n")


def load_judge(folder: Path) -> Judge:
    """Load a judge folder written by :meth:`Judge.save` (CPU, eval mode)."""
    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        raise ModelNotAvailableError(
            f"'{folder}' is not a judge folder (needs {CONFIG_FILE} and {WEIGHTS_FILE}): "
            "train one with `unlearnctl train-judge --dataset D --out DIR`"
        )
    where = f"judge folder '{folder}'"
    try:
        config = json.loads((folder / CONFIG_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UsageError(f"{where}: {CONFIG_FILE} is not valid JSON ({err})") from err
    if not isinstance(config, dict):
        raise UsageError(f"{where}: {CONFIG_FILE} must hold a JSON object")
    arch = config.get("arch")
    if arch not in ARCHS:
        raise UsageError(
            f"{where}: {CONFIG_FILE} names unknown judge architecture {arch!r}: available: {', '.join(ARCHS)} "
            "(retrain it with `unlearnctl train-judge`)"
        )
    known = ("num_classes", "class_names", "image_size", "channels", "width", "feature_dim", "normalization")
    try:
        judge = Judge(
            arch=arch,
            info=config.get("info") or {},
            **{key: config[key] for key in known if key in config},
        )
    except (UsageError, TypeError, ValueError, RuntimeError) as err:
        raise UsageError(f"{where}: {CONFIG_FILE} does not describe a judge ({err})") from err
    try:
        state = load_file(folder / WEIGHTS_FILE)
    except Exception as err:  # safetensors raises its own error type for a damaged file
        raise UsageError(f"{where}: {WEIGHTS_FILE} is not a readable safetensors file ({err})") from err
    try:
        judge.load_state_dict(state)
    except RuntimeError as err:
        raise UsageError(
            f"{where}: the weights in {WEIGHTS_FILE} do not fit the network that {CONFIG_FILE} describes "
            f"({arch}, {judge.channels} channel(s), {judge.num_classes} classes): the two files do not belong together"
        ) from err
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


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(len(x), generator=generator) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


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
    arch: str = "cnn-small",
    epochs: int = 40,
    batch_size: int | None = None,
    lr: float | None = None,
    optimizer: Optimizer = "auto",
    weight_decay: float | None = None,
    max_shift: int | None = None,
    flip: bool | None = None,
    noise: float = 0.05,
    seed: int = 0,
    device: str | torch.device = "cpu",
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    on_step: Callable[[int, int, dict[str, float]], None] | None = None,
) -> tuple[Judge, float]:
    """Train a judge on ``train``; return it (on CPU, eval mode) and its accuracy on ``test``.

    ``arch`` is one of :data:`~unlearnctl.judge.arch.ARCHS` or ``auto`` (see
    :func:`~unlearnctl.judge.arch.resolve_arch`). ``None`` options take the architecture's defaults:

    - ``cnn-small``: batch 64, Adam, lr 2e-3, no weight decay, shifts of up to 1 pixel, no flip.
    - ResNets: batch 128, AdamW, lr 1e-3, weight decay 0.05; random crops with ``image_size // 8`` pixels
      of black padding (4 for 32 x 32); horizontal flips for RGB data only (``flip=False`` for data whose
      mirror image is another class, e.g. digits). ``optimizer="sgd"``: momentum 0.9, Nesterov, lr
      ``0.1 * batch / 128``, weight decay 5e-4 (without warm-up it diverged early on the 1,500 digits).

    Every judge also gets Gaussian pixel noise of std ``noise``, so it reads slightly imperfect generated
    images, and a cosine learning-rate decay to 0 over all steps. ``on_epoch(epoch, {"loss", "elapsed"})``
    and ``on_step(step, total_steps, {"epoch", "loss"})`` report progress. Deterministic on CPU under ``seed``.
    """
    if not train.class_names:
        raise UsageError(f"dataset '{train.name}' has no classes: a judge needs labelled data")
    arch = resolve_arch(arch, train.image_size, train.channels)
    resnet = arch in RESNETS
    batch_size = batch_size or (128 if resnet else 64)
    if batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {batch_size}")
    if optimizer == "auto":
        optimizer = "adamw" if resnet else "adam"
    if lr is None:
        lr = {"sgd": 0.1 * batch_size / 128, "adamw": 1e-3}.get(optimizer, 2e-3)
    if weight_decay is None:
        weight_decay = {"sgd": 5e-4, "adamw": 0.05}.get(optimizer, 0.0)
    if max_shift is None:
        max_shift = max(1, train.image_size // 8) if resnet else 1
    if flip is None:
        flip = resnet and train.channels == 3
    device = torch.device(device)
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        judge = Judge(len(train.class_names), train.class_names, train.image_size, train.channels, arch=arch)  # type: ignore[arg-type]
    judge.to(device)
    images = torch.stack([train[i][0] for i in range(len(train))])
    labels = torch.tensor(train.labels)
    keep = labels >= 0
    images, labels = images[keep], labels[keep]
    if resnet and len(images) < 2:
        raise UsageError(
            f"dataset '{train.name}' has {len(images)} labelled training image(s): a ResNet judge needs 2+"
        )
    steps_per_epoch = max(1, len(images) // batch_size)
    total_steps = epochs * steps_per_epoch
    params = judge.parameters()
    opt: torch.optim.Optimizer
    if optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    elif optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    elif optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    else:
        raise UsageError(f"unknown optimizer '{optimizer}': available: auto, adam, adamw, sgd")
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
    start = time.perf_counter()
    judge.train()
    step = 0
    for epoch in range(1, epochs + 1):
        perm = torch.randperm(len(images), generator=g)
        total = 0.0
        for k in range(steps_per_epoch):
            idx = perm[k * batch_size : (k + 1) * batch_size]
            x = random_shift(images[idx], max_shift, g)
            if flip:
                x = random_flip(x, g)
            x = (x + noise * torch.randn(x.shape, generator=g)).clamp(-1, 1)
            # Dropout draws from the global generator: fork it so training stays seeded and side-effect free.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed * 100_003 + epoch * 1009 + k)
                loss = nn.functional.cross_entropy(judge(x.to(device)), labels[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            total += loss.item()
            step += 1
            if on_step is not None:
                on_step(step, total_steps, {"epoch": epoch, "loss": total / (k + 1)})
        if on_epoch is not None:
            on_epoch(epoch, {"loss": total / steps_per_epoch, "elapsed": time.perf_counter() - start})
    judge.eval()
    train_seconds = time.perf_counter() - start
    test_accuracy = accuracy(judge, test)
    judge.cpu()
    judge.info = {
        "dataset": train.name,
        "dataset_version": train.version,
        "train_fingerprint": train.fingerprint(),
        "test_fingerprint": test.fingerprint(),
        "train_size": len(images),
        "test_size": len(test),
        "test_accuracy": test_accuracy,
        "arch": arch,
        "seed": seed,
        "epochs": epochs,
        "batch_size": batch_size,
        "optimizer": optimizer,
        "lr": lr,
        "weight_decay": weight_decay,
        "schedule": "cosine",
        "augmentation": {"max_shift": max_shift, "flip": flip, "noise": noise},
        "device": str(device),
        "train_seconds": round(train_seconds, 2),
    }
    return judge, test_accuracy
