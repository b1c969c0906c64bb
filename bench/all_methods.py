"""Every built-in method on the built-in ``ddpm-digits`` model, forgetting class 2: one table, one plot.

Each method runs through the CLI exactly as a user would run it (``unlearnctl forget --method NAME``, the
same seed, its default options and one step budget -- every unlearning method gets EraseDiff's default
number of steps, passed explicitly; ``retrain`` trains from scratch with the built-in model's own recipe,
6,000 steps), then ``unlearnctl
eval RUN`` (default protocol), then ``unlearnctl compare`` for the trade-off plot. The table goes into
``docs/results-digits.md`` between the ``<!-- results:start -->`` / ``<!-- results:end -->`` markers;
the text around them (the reading of the numbers) is kept.

    python bench/all_methods.py                          # everything; runs under bench/out/all-methods/
    python bench/all_methods.py --only erasediff,finetune
    python bench/all_methods.py --retrain-steps 3000     # a smaller retrain budget (stated in the table)

A run or evaluation that already exists is reused, so an interrupted call resumes; a run recorded with
another step budget is run again. One thread per
process (``OMP_NUM_THREADS=1``, recorded in every manifest); the methods run one after the other.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

from _cli import ROOT, call, method_seconds

METHODS = [
    "erasediff",
    "finetune",
    "neggrad",
    "random-label",
    "joint",
    "salun",
    "blindspot",
    "selective-amnesia",
    "retrain",
]
START, END = "<!-- results:start -->", "<!-- results:end -->"


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(rows: list[dict], reference: dict) -> str:
    head = (
        "| method | options | forgotten class recognised (UA) | kept classes recognised | FID (kept) | "
        "method time | run wall time | optimizer steps |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n"
    )
    lines = [
        f"| **base model** (ddpm-digits) | | {fmt(reference['recognition_rate'], '.1%')} | "
        f"{fmt(reference['kept_rate'], '.1%')} | {fmt(reference['fid'], '.2f')} | | | |"
    ]
    for r in rows:
        opts = ", ".join(f"{k}={v}" for k, v in r["key_options"].items())
        ua = f" ({fmt(r['ua'], '.0%')})" if r.get("ua") is not None else ""
        lines.append(
            f"| {r['name']} | {opts} | {fmt(r['recognition_rate'], '.1%')}{ua} | {fmt(r['kept_rate'], '.1%')} | "
            f"{fmt(r['fid'], '.2f')} | {fmt(r['method_s'], '.0f')} s | {fmt(r['wall_time_s'], '.0f')} s | "
            f"{r['optimizer_steps']} |"
        )
    return head + "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench/out/all-methods", help="folder of the runs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--classes", default="2")
    ap.add_argument("--only", default="", help="comma-separated run names (default: all)")
    ap.add_argument("--retrain-steps", type=int, default=None, help="retrain budget (default: its `steps`, 6000)")
    ap.add_argument("--num-samples", type=int, default=50, help="eval samples per class")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs/results-digits.md")
    ap.add_argument("--plot", type=Path, default=ROOT / "docs/img/compare-all-methods.png")
    ap.add_argument(
        "--steps", type=int, default=None, help="budget of every unlearning method (default: erasediff's default steps)"
    )
    args = ap.parse_args()
    from unlearnctl.builtin.methods.erasediff import DEFAULT_STEPS
    from unlearnctl.builtin.methods.retrain import Retrain

    budget = args.steps or DEFAULT_STEPS
    retrain_budget = args.retrain_steps or Retrain.Options().steps

    names = [n for n in METHODS if not args.only or n in args.only.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    for method in names:
        run = args.out / method
        steps = retrain_budget if method == "retrain" else budget
        if (run / "manifest.json").is_file():
            recorded = json.loads((run / "manifest.json").read_text())["method"]["options"]["steps"]
            if recorded != steps:  # an older budget: this run is not comparable any more
                print(f"{method}: recorded with steps={recorded}, the budget is {steps}: running it again")
                shutil.rmtree(run)
        # 1. unlearn (or retrain) with the method's defaults and the common budget, the same seed for every method
        if not (run / "manifest.json").is_file():
            call(["forget", "--model", "ddpm-digits", "--classes", args.classes, "--method", method,
                  "--steps", str(steps), "--seed", str(args.seed), "--device", "cpu", "--out", str(run)])  # fmt: skip
        # 2. evaluate against the base model, the default protocol
        if not (run / "metrics.json").is_file():
            call(["eval", str(run), "--seed", str(args.seed), "-n", str(args.num_samples), "--device", "cpu"])

    # 3. one table and one plot over every run that exists (so --only can add runs to a previous bench)
    done = [args.out / n for n in METHODS if (args.out / n / "metrics.json").is_file()]
    out = call(["compare", *map(str, done), "--plot", str(args.plot), "--overwrite", "--json"])
    result = json.loads(out.stdout)
    rows = result["runs"]
    for r in rows:
        r["method_s"] = method_seconds(Path(r["run"]))
    text = table(rows, result["references"][0])
    text += (
        f"\nBudget: {budget} optimizer steps for every unlearning method (EraseDiff's default), {retrain_budget} "
        f"training steps for retrain; each method's other options at their defaults"
    )
    erasediff = args.out / "erasediff" / "manifest.json"
    if erasediff.is_file():
        o = json.loads(erasediff.read_text())["method"]["options"]
        keys = ("target", "lambda_rule", "lambda", "eta", "inner_steps", "save_ema")
        text += " (EraseDiff: " + ", ".join(f"{k}={o[k]}" for k in keys if k in o) + ")"
    text += (
        f". Seed {args.seed}, forgetting class {args.classes}; eval: {args.num_samples} samples per class, DDIM 50 "
        "steps, guidance 2.0, the shipped judge, FID on the judge's features against the kept classes' training "
        "images (comparable between these rows only). Method time: the method's own work (from `log.jsonl`); run "
        "wall time adds the before/after sample grids. CPU, one thread, shared machine.\n"
    )
    for w in result.get("warnings", []):
        text += f"\n> warning from `compare`: {w}\n"
    doc = args.doc
    body = doc.read_text() if doc.is_file() else f"# Results on ddpm-digits\n\n{START}\n{END}\n"
    if START not in body or END not in body:
        raise SystemExit(f"{doc} has no {START} ... {END} markers to write the table between")
    before, rest = body.split(START, 1)
    _, after = rest.split(END, 1)
    plot = os.path.relpath(args.plot, doc.parent)
    doc.write_text(f"{before}{START}\n{text}\n![trade-off plot]({plot})\n{END}{after}")
    print(f"wrote {doc} and {args.plot}")


if __name__ == "__main__":
    main()
