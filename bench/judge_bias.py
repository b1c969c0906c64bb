"""What the shipped ddpm-digits judge reads in images that are no digit: averages of digits.

An unlearning method that forgets a class by blurring its samples toward an average digit is scored by the
judge's verdict on those averages. This prints the judge's class for the mean of every training image (and of
every image but the 8s), and the share of pixel-wise averages of two training images of different classes that
it reads as each class (chance: 10%); docs/results-digits.md cites the numbers::

    python bench/judge_bias.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits

from unlearnctl.judge.classifier import load_judge

ROOT = Path(__file__).resolve().parents[1]
JUDGE = ROOT / "src" / "unlearnctl" / "assets" / "ddpm-digits" / "judge"
PAIRS = 2000


def main() -> None:
    torch.manual_seed(0)
    judge = load_judge(JUDGE).eval()
    digits = load_digits()
    images = torch.tensor(digits.images / 16.0, dtype=torch.float32)[:, None] * 2 - 1  # the model's [-1, 1]
    labels = torch.tensor(digits.target)
    for name, subset in (("every training image", images), ("every image but the 8s", images[labels != 8])):
        proba = judge.predict_proba(subset.mean(0, keepdim=True))[0]
        print(f"mean of {name}: read as {proba.argmax().item()} (p = {proba.max().item():.2f})")
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randint(0, len(images), (PAIRS,), generator=gen) for _ in range(2))
    different = labels[a] != labels[b]
    mixed = (images[a][different] + images[b][different]) / 2
    read = np.bincount(judge.predict_proba(mixed).argmax(1).numpy(), minlength=10) / int(different.sum())
    print(f"averages of two digits of different classes ({int(different.sum())}), read as each class:")
    print("  " + ", ".join(f"{c}: {100 * r:.1f}%" for c, r in enumerate(read)))
    accuracy = (judge.predict_proba(images).argmax(1) == labels).float().mean().item()
    print(f"(the judge on the training images themselves: {100 * accuracy:.1f}% correct)")


if __name__ == "__main__":
    main()
