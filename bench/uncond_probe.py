"""Quick probe of unconditional digits models after forgetting a class: the sweep behind the defaults.

For each model folder: 1,000 unconditional samples (DDIM 50 steps, eta 0) from ONE generator seeded
``--seed`` (so sample i of every model starts from the same noise), read by the judge of ``ddpm-digits``:

- the share judged as the forgotten class, and every other class's share relative to the base model's;
- the Frechet distance of the judge features of the samples NOT judged as the forgotten class to the
  kept classes' train images (what ``eval``'s fidelity measures on an unconditional model);
- the same restricted to the samples whose base-model counterpart (same noise) was not the forgotten
  class either: the damage to what the model drew before, apart from what became of the erased class.

Quicker than ``bench/uncond_digits.py`` (no run folders, no CLI, the base sampled once and cached), and
a different noise stream from ``eval``'s, so its numbers differ from that table's by sampling noise.

    python bench/uncond_probe.py RUN/model [RUN2/model ...] [--seed 0] [--forget 2]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from digits_quality import frechet

from unlearnctl.diffusion import sample
from unlearnctl.inputs import load_dataset, load_model
from unlearnctl.judge.classifier import load_judge

BASE = "ddpm-digits-uncond"
N = 1000


def generate(spec: str, seed: int) -> torch.Tensor:
    with torch.no_grad():
        return sample(
            load_model(spec), N, None, generator=torch.Generator().manual_seed(seed), sampler="ddim", steps=50,
            guidance=0.0, eta=0.0, clip_sample=False, batch_size=250, device="cpu",
        )  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="model folders (or registered names)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--forget", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)

    judge = load_judge(load_model(BASE).judge_path).eval()
    train = load_dataset("digits", "train")
    with torch.no_grad():
        real = judge.features(train.images[torch.tensor([y != args.forget for y in train.labels])]).double().numpy()

    def read(images: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with torch.no_grad():
            predicted = judge.predict_proba(images).argmax(1).numpy()
            features = judge.features(images).double().numpy()
        return predicted, features, np.bincount(predicted, minlength=judge.num_classes) / len(images)

    base_pred, base_feat, base_share = read(generate(BASE, args.seed))
    kept = [c for c in range(judge.num_classes) if c != args.forget]
    print(
        f"{BASE}: class {args.forget} share {base_share[args.forget]:.1%}, "
        f"kept-sample FID {frechet(base_feat[base_pred != args.forget], real):.2f}"
    )
    for spec in args.models:
        predicted, features, share = read(generate(spec, args.seed))
        ratios = [share[c] / base_share[c] for c in kept if base_share[c] > 0]
        not_forgotten = predicted != args.forget
        fid = frechet(features[not_forgotten], real)
        fid_before_other = frechet(features[not_forgotten & (base_pred != args.forget)], real)
        print(
            f"{Path(spec)}: class {args.forget} share {share[args.forget]:.1%}, "
            f"others x{min(ratios):.2f}..{max(ratios):.2f}, kept-sample FID {fid:.2f}, "
            f"on what the base drew as other classes {fid_before_other:.2f}"
        )


if __name__ == "__main__":
    main()
