"""Judging generated samples: which class does the judge see in images sampled for each class?

The forgetting figure of the literature: sample images conditioned on a class with the model's usual
sampler and guidance, classify them with the judge, and count how often the judge names the class
the images were conditioned on. For a forgotten class that rate should fall to chance or below; for
the kept classes it should stay where the base model had it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

from ..diffusion import sample
from ..models.folder import DiffusionModel
from ..sampling import SampleOptions
from .classifier import Judge


@torch.no_grad()
def recognition_rates(
    model: DiffusionModel,
    judge: Judge,
    classes: Iterable[int] | None = None,
    n_per_class: int = 100,
    seed: int = 0,
    sampler: SampleOptions | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Sample ``n_per_class`` images for each of ``classes`` (default: all) and judge them.

    One generator seeded with ``seed`` draws the noise of all images in class order, so two models
    judged with the same arguments start from the same noise, image for image.

    :return: ``{"rates": {c: share judged c}, "mean_p": {c: mean judge probability of c},
        "predicted": {c: [count of each predicted class]}, "n_per_class", "seed", "sampler"}``
        (class ids as ints).
    """
    if not model.conditional:
        raise ValueError("recognition rates need a class-conditional model; use class_fractions for unconditional ones")
    o = sampler or SampleOptions()
    classes = list(range(model.num_classes)) if classes is None else [int(c) for c in classes]
    labels = torch.tensor([c for c in classes for _ in range(n_per_class)], dtype=torch.long)
    images = sample(
        model, len(labels), labels, generator=torch.Generator().manual_seed(seed), sampler=o.sampler,
        steps=o.steps, guidance=o.guidance, eta=o.eta, clip_sample=o.clip_sample, batch_size=o.batch_size,
        device=device,
    )  # fmt: skip
    out = judge_images(judge, images, labels, classes)
    out.update(n_per_class=n_per_class, seed=seed, sampler=o.model_dump(mode="json"))
    return out


@torch.no_grad()
def judge_images(
    judge: Judge, images: torch.Tensor, labels: torch.Tensor, classes: Iterable[int] | None = None
) -> dict[str, Any]:
    """Judge images already generated, ``labels[i]`` being the class image ``i`` was conditioned on.

    :return: per class of ``classes`` (default: those in ``labels``): ``{"rates": {c: share judged c},
        "mean_p": {c: mean judge probability of c}, "mean_entropy": {c: mean predictive entropy in nats},
        "predicted": {c: [count of each predicted class]}}`` (class ids as ints).
    """
    classes = sorted({int(c) for c in labels.tolist()}) if classes is None else [int(c) for c in classes]
    probs = judge.predict_proba(images)
    predicted = probs.argmax(1)
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(1)
    out: dict[str, Any] = {"rates": {}, "mean_p": {}, "mean_entropy": {}, "predicted": {}}
    for c in classes:
        mask = labels == c
        out["rates"][c] = float((predicted[mask] == c).float().mean())
        out["mean_p"][c] = float(probs[mask, c].mean())
        out["mean_entropy"][c] = float(entropy[mask].mean())
        out["predicted"][c] = torch.bincount(predicted[mask], minlength=judge.num_classes).tolist()
    return out


@torch.no_grad()
def class_fractions(
    model: DiffusionModel,
    judge: Judge,
    n: int = 1000,
    seed: int = 0,
    sampler: SampleOptions | None = None,
    device: torch.device | str = "cpu",
) -> list[float]:
    """For an unconditional model: the share of ``n`` samples the judge assigns to each class."""
    o = sampler or SampleOptions()
    images = sample(
        model, n, None, generator=torch.Generator().manual_seed(seed), sampler=o.sampler, steps=o.steps,
        guidance=o.guidance, eta=o.eta, clip_sample=o.clip_sample, batch_size=o.batch_size, device=device,
    )  # fmt: skip
    return predicted_fractions(judge, images)


@torch.no_grad()
def predicted_fractions(judge: Judge, images: torch.Tensor) -> list[float]:
    """The share of ``images`` the judge assigns to each class (its most likely class)."""
    return fractions(judge.predict_proba(images).argmax(1), judge.num_classes)


def fractions(predicted: torch.Tensor, num_classes: int) -> list[float]:
    """The share of each class ``0..num_classes-1`` among the class ids ``predicted``."""
    counts = torch.bincount(predicted, minlength=num_classes)
    return (counts.float() / max(1, len(predicted))).tolist()


def summarize(rates: dict[int, float], forget_classes: Sequence[int]) -> dict[str, float]:
    """``forgotten``: mean rate over the forgotten classes; ``kept``: mean rate over the others."""
    forgotten = [rates[c] for c in forget_classes if c in rates]
    kept = [r for c, r in rates.items() if c not in forget_classes]
    return {
        "forgotten": sum(forgotten) / len(forgotten) if forgotten else float("nan"),
        "kept": sum(kept) / len(kept) if kept else float("nan"),
    }
