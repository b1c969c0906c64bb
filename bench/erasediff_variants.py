"""EraseDiff variants on the built-in ddpm-digits model, forgetting class 2: both erasure targets x the
four lambda rules. For each: how often the judge still recognises class 2 in samples conditioned on it,
the mean recognition rate of the 9 kept classes (and its change from the base model), and wall time.

    .venv/bin/python bench/erasediff_variants.py                   # writes docs/erasediff-variants.md
    .venv/bin/python bench/erasediff_variants.py --rules fixed --targets relabel --no-write

Each variant is a real `forget` run (the runner, a run folder in a temporary directory, no sample
grids), then 100 samples per class with the default sampler (DDIM 50 steps, guidance 2.0) judged by
the model's judge. Runs one at a time; the machine is shared, so wall times are indicative (compare
them within one table).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from unlearnctl.commands.forget import ForgetRequest, forget
from unlearnctl.inputs import load_model
from unlearnctl.judge.classifier import load_judge
from unlearnctl.judge.verdicts import recognition_rates, summarize
from unlearnctl.models.folder import load_model_folder

ROOT = Path(__file__).resolve().parents[1]
FORGET = 2
RULES = ("fixed", "bome", "cosine", "value")


def variants(targets: list[str], rules: list[str], gaussian: bool) -> list[dict[str, str]]:
    out = []
    for target in targets:
        corruptions = ["uniform", "gaussian"] if target == "uniform" and gaussian else ["uniform"]
        for corruption in corruptions:
            for rule in rules:
                v = {"target": target, "lambda_rule": rule}
                if target == "uniform":
                    v["corruption"] = corruption
                out.append(v)
    return out


def judge_model(model, judge, n: int, seed: int) -> dict:
    rates = recognition_rates(model, judge, n_per_class=n, seed=seed)["rates"]
    return {"rates": rates, **summarize(rates, [FORGET])}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ddpm-digits")
    ap.add_argument("--targets", nargs="+", default=["relabel", "uniform"])
    ap.add_argument("--rules", nargs="+", default=list(RULES))
    ap.add_argument("--no-gaussian", action="store_true", help="skip the uniform target with gaussian corruption")
    ap.add_argument("--set", action="append", default=[], help="extra method option key=value for every variant")
    ap.add_argument("--steps", type=int, default=None, help="override the method's steps")
    ap.add_argument("--n-per-class", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: fastest for this model on 2 cores)")
    ap.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "erasediff-variants.md")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    base = load_model(args.model)
    judge = load_judge(base.judge_path)
    t0 = time.perf_counter()
    base_result = judge_model(base, judge, args.n_per_class, args.seed)
    judge_s = time.perf_counter() - t0
    print(f"base: class {FORGET} {base_result['forgotten']:.2%}, kept {base_result['kept']:.2%} ({judge_s:.0f} s)")

    rows = []
    for v in variants(args.targets, args.rules, not args.no_gaussian):
        sets = [f"{k}={val}" for k, val in v.items()] + args.set
        with tempfile.TemporaryDirectory() as tmp:
            request = ForgetRequest(
                model=args.model, classes=str(FORGET), sets=sets, steps=args.steps, seed=args.seed,
                out=Path(tmp) / "run", grid_per_class=0, device="cpu", threads=args.threads, command=["bench", *sets],
            )  # fmt: skip
            result = forget(request)
            log = [json.loads(line) for line in (result.run_dir / "log.jsonl").read_text().splitlines()]
            model = load_model_folder(result.run_dir / "model")
        judged = judge_model(model, judge, args.n_per_class, args.seed)
        m = result.manifest
        row = {
            **v,
            "steps": m.optimizer_steps,
            "forgotten": judged["forgotten"],
            "kept": judged["kept"],
            "kept_delta": judged["kept"] - base_result["kept"],
            "mean_lambda": sum(line["lambda"] for line in log) / len(log),
            "final_q": log[-1].get("q"),  # logged only where computed (the value rule, or log_q)
            "wall_s": m.wall_time_s,
            "rates": judged["rates"],
        }
        rows.append(row)
        if args.json:  # after every variant, so a long sweep that stops keeps what it measured
            args.json.write_text(json.dumps({"base": base_result, "rows": rows}, indent=2, default=str) + "\n")
        print(
            f"{v}: class {FORGET} {row['forgotten']:.0%}, kept {row['kept']:.1%} ({row['kept_delta']:+.1%}), "
            f"mean lambda {row['mean_lambda']:.3g}, {row['wall_s']:.0f} s",
            flush=True,
        )

    if not args.no_write:
        args.out.write_text(render(args, base_result, rows))
        print(f"wrote {args.out}")
    return 0


def render(args: argparse.Namespace, base: dict, rows: list[dict]) -> str:
    lines = [
        "# EraseDiff variants on ddpm-digits",
        "",
        "Generated by `bench/erasediff_variants.py` "
        f"(`{' '.join(['.venv/bin/python', 'bench/erasediff_variants.py', *sys.argv[1:]])}`).",
        "",
        f"Forgetting class {FORGET} of the built-in `{args.model}` model (0.8 M parameters, 8x8 digits) with "
        "`unlearnctl forget --classes 2` and the method's defaults except the columns shown "
        f"({', '.join(args.set) or 'no other changes'}; steps: {args.steps or 'default'}). "
        f"Judged on {args.n_per_class} samples per class (DDIM 50 steps, guidance 2.0, seed {args.seed}) by the "
        "model's judge: *class 2* is the share of samples conditioned on class 2 that the judge reads as a 2 "
        "(lower is better); *kept* is the mean of the same rate over the 9 other classes (should stay at the "
        "base model's). Wall time is the whole `forget` run on CPU "
        f"({torch.get_num_threads()} torch threads, {platform.processor() or platform.machine()}, a shared "
        "machine: compare within the table).",
        "",
        f"Base model: class 2 recognised in **{base['forgotten']:.0%}**, kept classes **{base['kept']:.1%}**.",
        "",
        "| target | corruption | lambda rule | steps | class 2 | kept | kept vs base | mean lambda | final q "
        "| wall s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['target']} | {r.get('corruption', '-')} | {r['lambda_rule']} | {r['steps']} | "
            f"{r['forgotten']:.0%} | {r['kept']:.1%} | {r['kept_delta'] * 100:+.1f} pt | {r['mean_lambda']:.3g} | "
            f"{'-' if r['final_q'] is None else format(r['final_q'], '.3g')} | {r['wall_s']:.0f} |"
        )
    lines += ["", "Per-class recognition rates (0-9) of each variant:", ""]
    lines.append("| variant | " + " | ".join(str(c) for c in range(10)) + " |")
    lines.append("| --- |" + " --- |" * 10)
    lines.append("| base | " + " | ".join(f"{base['rates'][c]:.2f}" for c in range(10)) + " |")
    for r in rows:
        name = f"{r['target']}/{r.get('corruption', '-')}/{r['lambda_rule']}"
        lines.append(f"| {name} | " + " | ".join(f"{r['rates'][c]:.2f}" for c in range(10)) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
