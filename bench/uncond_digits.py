"""Unconditional unlearning on the built-in ``ddpm-digits-uncond`` model, forgetting class 2.

The quality bar of issue #7: ``unlearnctl forget --model ddpm-digits-uncond --classes 2`` cuts the share of
samples the judge assigns to class 2 from about 10% to at most 2% (1,000 samples), every other class keeps
its share within a factor of 1.5, and FID stays within 25% of the base model's.

Each variant is run through the CLI as a user would (``forget``, then ``eval RUN -n 100``: 100 samples per
class the judge knows, i.e. 1,000 unconditional samples, for the unlearned and the base model alike), and
the table goes into ``docs/uncond-digits.md`` between the ``<!-- results:start/end -->`` markers.

    python bench/uncond_digits.py                                  # the defaults, and the authors' setting
    python bench/uncond_digits.py --variant "" --variant "lambda_rule=fixed,corruption=uniform"

A run or evaluation that exists already is reused (``--fresh`` deletes them first).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from _cli import ROOT, call, method_seconds

FORGET = 2

START, END = "<!-- results:start -->", "<!-- results:end -->"
#: the defaults, the class-conditional defaults, and the authors' setting (uniform corruption, fixed lambda 0.1)
CONDITIONAL = "corruption=uniform,lambda_rule=bome,lambda=0.1,lr=1e-4,remain_batch_size=128,steps=150"
AUTHORS = "corruption=uniform,lambda_rule=fixed,lambda=0.1,lr=1e-4,remain_batch_size=128,steps=288"
VARIANTS = ["", CONDITIONAL, AUTHORS]
LABELS = {
    "": "**defaults** (unconditional)",
    CONDITIONAL: "the class-conditional defaults",
    AUTHORS: "the authors' setting (288 steps)",
}


def run_name(variant: str) -> str:
    return "defaults" if not variant else variant.replace(",", "_").replace("=", "-")


def kept_sample_fid(model_path: str) -> tuple[float, int]:
    """FID of the samples the judge does NOT read as the forgotten class, against the kept classes' images.

    ``eval``'s FID takes every sample, so a model that stops drawing the forgotten class moves towards
    the kept-class reference whatever happens to the other samples; this one looks only at those others
    (1,000 samples, DDIM 50 steps, seed 0; the judge's features). Returns (FID, samples used).
    """
    import sys

    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    from digits_quality import frechet

    from unlearnctl.diffusion import sample
    from unlearnctl.judge import load_judge
    from unlearnctl.loading import load_dataset, load_model

    torch.set_num_threads(1)
    model = load_model(model_path)
    judge = load_judge(load_model("ddpm-digits-uncond").judge_path).eval()
    train = load_dataset("digits", "train")
    with torch.no_grad():
        real = judge.features(train.images[torch.tensor([y != FORGET for y in train.labels])]).double().numpy()
        images = sample(
            model, 1000, None, generator=torch.Generator().manual_seed(0), sampler="ddim", steps=50, guidance=0.0,
            eta=0.0, clip_sample=False, batch_size=256, device="cpu",
        )  # fmt: skip
        keep = judge.predict_proba(images).argmax(1) != FORGET
        fake = judge.features(images[keep]).double().numpy()
    return frechet(np.asarray(fake), np.asarray(real)), int(keep.sum())


def row(variant: str, run: Path) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    manifest = json.loads((run / "manifest.json").read_text())
    res, ref = metrics["results"]["model"], metrics["results"]["reference"]
    after_kept, before_kept = res["kept"]["per_class_share"], ref["kept"]["per_class_share"]
    ratios = [after_kept[c] / before_kept[c] for c in before_kept if before_kept[c] > 0]
    return {
        "variant": LABELS.get(variant, variant or "defaults"),
        "options": manifest["method"]["options"],
        "share_before": ref["forgetting"]["recognition_rate"],
        "share_after": res["forgetting"]["recognition_rate"],
        "kept_ratio_min": min(ratios),
        "kept_ratio_max": max(ratios),
        "fid_before": ref["fidelity"]["fid"],
        "fid_after": res["fidelity"]["fid"],
        "kept_fid_after": kept_sample_fid(str(run / "model"))[0],
        "samples": res["forgetting"].get("samples"),
        "method_s": method_seconds(run),
        "wall_s": manifest.get("wall_time_s"),
        "steps": manifest["method"]["options"]["steps"],
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| variant | steps | class 2 share, base -> after | other classes' share, after / base (min .. max) | "
        "FID (eval), base -> after | FID of the samples not judged 2, base -> after | method time | run wall time |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    base_kept_fid = kept_sample_fid("ddpm-digits-uncond")[0]
    for r in rows:
        o = r["options"]
        desc = (
            f"{r['variant']}: target={o['target']}, corruption={o['corruption']}, lambda_rule={o['lambda_rule']}, "
            f"lambda={o['lambda']}, lr={o['lr']}, remain_batch_size={o['remain_batch_size']}"
        )
        lines.append(
            f"| {desc} | {r['steps']} | {r['share_before']:.1%} -> **{r['share_after']:.1%}** | "
            f"{r['kept_ratio_min']:.2f} .. {r['kept_ratio_max']:.2f} | {r['fid_before']:.2f} -> {r['fid_after']:.2f} "
            f"({r['fid_after'] / r['fid_before'] - 1:+.0%}) | {base_kept_fid:.2f} -> {r['kept_fid_after']:.2f} "
            f"({r['kept_fid_after'] / base_kept_fid - 1:+.0%}) | {r['method_s']:.0f} s | {r['wall_s']:.0f} s |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", action="append", default=None, help="KEY=VALUE,... of erasediff options")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num-samples", type=int, default=100, help="eval samples per judge class (x10 in all)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/out/uncond-digits")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs/uncond-digits.md")
    ap.add_argument("--fresh", action="store_true")
    args = ap.parse_args()
    variants = VARIANTS if args.variant is None else args.variant

    rows = []
    for variant in variants:
        run = args.out / run_name(variant)
        if args.fresh and run.exists():
            shutil.rmtree(run)
        sets = [x for kv in variant.split(",") if kv for x in ("--set", kv)]
        if not (run / "manifest.json").is_file():
            run.parent.mkdir(parents=True, exist_ok=True)
            call(["forget", "--model", "ddpm-digits-uncond", "--classes", "2", "--seed", str(args.seed),
                  "--device", "cpu", "--out", str(run), *sets])  # fmt: skip
        if not (run / "metrics.json").is_file():
            call(["eval", str(run), "-n", str(args.num_samples), "--seed", str(args.seed), "--device", "cpu"])
        rows.append(row(variant, run))
        r = rows[-1]
        print(
            f"{r['variant']}: class 2 {r['share_before']:.1%} -> {r['share_after']:.1%}, others x"
            f"{r['kept_ratio_min']:.2f}..{r['kept_ratio_max']:.2f}, FID {r['fid_before']:.1f} -> {r['fid_after']:.1f}"
        )

    text = table(rows) + (
        f"\n\nSeed {args.seed}; eval: {args.num_samples * 10} unconditional samples per model (DDIM 50 steps), "
        "judged by the judge of `ddpm-digits`; FID on the judge's features against the training images of the "
        "nine kept classes. Method time: the method's own work; run wall time adds loading and the sample grids. "
        "CPU, one thread. Made by `python bench/uncond_digits.py`.\n"
    )
    doc = args.doc.read_text() if args.doc.is_file() else f"# Unconditional unlearning\n\n{START}\n{END}\n"
    head, rest = doc.split(START, 1)
    args.doc.write_text(head + START + "\n" + text + rest[rest.index(END) :])
    print(f"wrote {args.doc}")


if __name__ == "__main__":
    main()
