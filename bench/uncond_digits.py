"""Unconditional unlearning on the built-in ``ddpm-digits-uncond`` model, forgetting class 2.

The quality bar of issue #7: ``unlearnctl forget --model ddpm-digits-uncond --classes 2`` cuts the share of
samples the judge assigns to class 2 from about 10% to at most 2% (1,000 samples), every other class keeps
its share within a factor of 1.5, and FID stays within 25% of the base model's.

Each row is run through the CLI as a user would (``forget``, then ``eval RUN -n 100``: 100 samples per
class the judge knows, i.e. 1,000 unconditional samples, for the unlearned and the base model alike), and
the table goes into ``docs/uncond-digits.md`` between the ``<!-- results:start/end -->`` markers. ``eval``'s
FID of an unconditional model compares only the samples the judge does not assign to the forgotten class.

    python bench/uncond_digits.py                          # every row (the retrain takes about 20 minutes)
    python bench/uncond_digits.py --only defaults --seed 1

A run or evaluation that exists already is reused (``--fresh`` deletes them first).
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from _cli import ROOT, call, method_seconds

FORGET = 2

START, END = "<!-- results:start -->", "<!-- results:end -->"


@dataclass(frozen=True)
class Variant:
    """One row: a run of ``forget --method METHOD --set ...`` on ddpm-digits-uncond, forgetting class 2."""

    key: str
    label: str
    method: str = "erasediff"
    sets: str = ""


#: the unconditional defaults; the same budget without the erasure term (finetune, as a control); the
#: defaults saving raw weights; the authors' setting; and the gold standard, retraining without class 2
ROWS = [
    Variant("defaults", "**erasediff, defaults** (unconditional)"),
    Variant(
        "finetune-same-budget",
        "finetune: the same steps, learning rate, batch and EMA, no erasure term",
        "finetune",
        "steps=450,lr=3e-4,remain_batch_size=256,save_ema=true",
    ),
    Variant("raw-weights", "erasediff, defaults but raw weights saved", sets="save_ema=false"),
    Variant(
        "lambda-0.03-raw",
        "erasediff, lambda 0.03, raw weights (the previous defaults)",
        sets="lambda=0.03,steps=300,save_ema=false",
    ),
    Variant(
        "authors",
        "erasediff, the authors' setting (uniform corruption, fixed lambda 0.1, 288 steps, EMA)",
        sets="corruption=uniform,lambda_rule=fixed,lambda=0.1,lr=1e-4,remain_batch_size=128,steps=288,save_ema=true",
    ),
    Variant("retrain", "retrain from scratch without class 2 (6,000 steps)", "retrain"),
]


def row(v: Variant, run: Path) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    manifest = json.loads((run / "manifest.json").read_text())
    res, ref = metrics["results"]["model"], metrics["results"]["reference"]
    after_kept, before_kept = res["kept"]["per_class_share"], ref["kept"]["per_class_share"]
    ratios = [after_kept[c] / before_kept[c] for c in before_kept if before_kept[c] > 0]
    options = manifest["method"]["options"]
    return {
        "variant": v.label,
        "method": v.method,
        "options": options,
        "share_before": ref["forgetting"]["recognition_rate"],
        "share_after": res["forgetting"]["recognition_rate"],
        "kept_ratio_min": min(ratios),
        "kept_ratio_max": max(ratios),
        "fid_before": ref["fidelity"]["fid"],
        "fid_after": res["fidelity"]["fid"],
        "n_before": ref["fidelity"]["n_generated"],
        "n_after": res["fidelity"]["n_generated"],
        "samples": res["forgetting"].get("samples"),
        "method_s": method_seconds(run),
        "wall_s": manifest.get("wall_time_s"),
        "steps": options["steps"],
        "weights": manifest["weights"]["saved_weights"],
    }


def describe(r: dict) -> str:
    o = r["options"]
    if r["method"] != "erasediff":
        return r["variant"]
    return (
        f"{r['variant']}: corruption={o['corruption']}, lambda_rule={o['lambda_rule']}, lambda={o['lambda']}, "
        f"lr={o['lr']}, remain_batch_size={o['remain_batch_size']}"
    )


def table(rows: list[dict]) -> str:
    lines = [
        "| run | steps | weights | class 2 share, base -> after | other classes' share, after / base (min .. max) | "
        "FID of the samples not judged 2, base -> after | method time |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {describe(r)} | {r['steps']} | {r['weights']} | {r['share_before']:.1%} -> **{r['share_after']:.1%}** "
            f"| {r['kept_ratio_min']:.2f} .. {r['kept_ratio_max']:.2f} "
            f"| {r['fid_before']:.2f} -> **{r['fid_after']:.2f}** "
            f"({r['fid_after'] / r['fid_before'] - 1:+.0%}) | {r['method_s']:.0f} s |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", default=None, help=f"run only these rows: {[v.key for v in ROWS]}")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num-samples", type=int, default=100, help="eval samples per judge class (x10 in all)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/out/uncond-digits")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs/uncond-digits.md")
    ap.add_argument("--fresh", action="store_true")
    args = ap.parse_args()
    variants = [v for v in ROWS if args.only is None or v.key in args.only]

    rows = []
    for v in variants:
        run = args.out / f"{v.key}-seed{args.seed}"
        if args.fresh and run.exists():
            shutil.rmtree(run)
        sets = [x for kv in v.sets.split(",") if kv for x in ("--set", kv)]
        if not (run / "manifest.json").is_file():
            run.parent.mkdir(parents=True, exist_ok=True)
            call(["forget", "--model", "ddpm-digits-uncond", "--classes", str(FORGET), "--method", v.method,
                  "--seed", str(args.seed), "--device", "cpu", "--out", str(run), *sets])  # fmt: skip
        if not (run / "metrics.json").is_file():
            call(["eval", str(run), "-n", str(args.num_samples), "--seed", str(args.seed), "--device", "cpu",
                  "--metrics", "forgetting,kept,fidelity"])  # fmt: skip
        rows.append(row(v, run))
        r = rows[-1]
        print(
            f"{v.key}: class 2 {r['share_before']:.1%} -> {r['share_after']:.1%}, others x"
            f"{r['kept_ratio_min']:.2f}..{r['kept_ratio_max']:.2f}, FID {r['fid_before']:.2f} -> {r['fid_after']:.2f}"
        )

    text = table(rows) + (
        f"\n\nSeed {args.seed}; `unlearnctl eval RUN -n {args.num_samples}`: {args.num_samples * 10} unconditional "
        "samples per model (DDIM 50 steps, the same noise for both), judged by the judge of `ddpm-digits`; FID on "
        "the judge's features, of the samples the judge does not assign to class 2 against the training images of "
        "the nine kept classes (eval's default for unconditional models). Method time: the method's own work. "
        "CPU, one thread. Made by `python bench/uncond_digits.py`.\n"
    )
    doc = args.doc.read_text() if args.doc.is_file() else f"# Unconditional unlearning\n\n{START}\n{END}\n"
    head, rest = doc.split(START, 1)
    args.doc.write_text(head + START + "\n" + text + rest[rest.index(END) :])
    print(f"wrote {args.doc}")


if __name__ == "__main__":
    main()
