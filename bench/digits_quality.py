"""The quality bar of the built-in ``ddpm-digits`` model (docs/digits.md), measured.

For each of the 10 classes, sample N images conditioned on it and count how many are recognised as
that class by (a) the shipped judge and (b) an independent classifier that never saw unlearnctl's
judge code: scikit-learn's SVC on the 64 raw pixels, trained on the real train split of `digits`.
Also the Frechet distance between the judge's 128 penultimate features of the samples and of the
1,501 real train images ("judge-FID": lower = closer to the real distribution, diversity included;
biased upwards for small sample counts, so compare settings at equal counts only).

    python bench/digits_quality.py [--model ddpm-digits] [--per-class 100] [--seed 0] \
        [--sampler ddim --steps 50 --guidance 2.0 --eta 0] [--sweep] [--json OUT.json]

``--sweep`` repeats the measurement for a few samplers / step counts / guidance scales (how the
default was chosen). Prints one line per setting; ``--json`` writes every number.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from sklearn.svm import SVC

from unlearnctl.inputs import load_dataset, load_model
from unlearnctl.judge.classifier import load_judge
from unlearnctl.sampling import SampleOptions, class_labels_for, generate


def independent_classifier() -> tuple[SVC, float]:
    """SVC (RBF, gamma=0.001, C=10) on raw pixels 0..16, trained on the train split; test accuracy."""
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")

    def pixels(images: torch.Tensor) -> np.ndarray:
        return ((images.reshape(len(images), -1) + 1) * 8).numpy()

    svc = SVC(gamma=0.001, C=10).fit(pixels(train.images), train.labels)
    return svc, float((svc.predict(pixels(test.images)) == np.array(test.labels)).mean())


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to feature sets ``a`` and ``b`` (rows = samples)."""
    from scipy import linalg

    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * covmean))


@torch.no_grad()
def real_features(judge) -> np.ndarray:
    return judge.features(load_dataset("digits", "train").images).numpy().astype(np.float64)


def measure(model, judge, svc, options: SampleOptions, per_class: int, seed: int, real: np.ndarray) -> dict:
    labels = class_labels_for(model, per_class * model.num_classes)
    start = time.perf_counter()
    images = generate(model, labels, len(labels), options, seed)
    seconds = time.perf_counter() - start
    by_judge = judge.predict_proba(images).argmax(1)
    by_svc = torch.from_numpy(svc.predict(((images.reshape(len(images), -1) + 1) * 8).numpy()))
    out = {"options": options.model_dump(), "per_class": per_class, "seed": seed, "sampling_seconds": seconds}
    with torch.no_grad():
        out["judge_fid"] = frechet(judge.eval().features(images).numpy().astype(np.float64), real)
    for name, pred in (("judge", by_judge), ("svc", by_svc)):
        rates = [float((pred[labels == c] == c).float().mean()) for c in range(model.num_classes)]
        out[name] = {"per_class": rates, "mean": float(np.mean(rates)), "min": float(np.min(rates))}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ddpm-digits")
    parser.add_argument("--judge", default=None, help="judge folder (default: the model's)")
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sampler", default="ddim")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--eta", type=float, default=0.0)
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    model = load_model(args.model)
    judge = load_judge(args.judge or model.judge_path)
    svc, svc_test = independent_classifier()
    real = real_features(judge.eval())
    print(f"independent classifier (SVC on pixels) test accuracy: {svc_test:.4f}")
    settings = [SampleOptions(sampler=args.sampler, steps=args.steps, guidance=args.guidance, eta=args.eta)]
    if args.sweep:
        settings = [
            SampleOptions(sampler="ddim", steps=s, guidance=w) for s in (10, 25, 50) for w in (0.0, 1.0, 2.0, 3.0)
        ] + [SampleOptions(sampler="ddim", steps=50, guidance=2.0, eta=1.0), SampleOptions(sampler="ddpm", steps=250)]
    results = []
    for options in settings:
        r = measure(model, judge, svc, options, args.per_class, args.seed, real)
        results.append(r)
        print(
            f"{options.sampler:4s} steps={options.steps:4d} w={options.guidance:.1f} eta={options.eta:.1f}  "
            f"judge mean={r['judge']['mean']:.3f} min={r['judge']['min']:.2f}  "
            f"svc mean={r['svc']['mean']:.3f} min={r['svc']['min']:.2f}  judge-FID={r['judge_fid']:.2f}  "
            f"{r['sampling_seconds']:.1f} s"
        )
        print("   judge per class:", " ".join(f"{x:.2f}" for x in r["judge"]["per_class"]))
        print("   svc   per class:", " ".join(f"{x:.2f}" for x in r["svc"]["per_class"]))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"model": args.model, "svc_test_accuracy": svc_test, "results": results}, fh, indent=2)


if __name__ == "__main__":
    main()
