"""Every built-in method's run audited the way an adversary would: the tables of ``docs/audit-digits.md``.

Reads the runs of ``bench/all_methods.py`` (one per method, forgetting class 2 of ``ddpm-digits``; the
``retrain`` run is the gold standard), runs ``unlearnctl audit RUN --against RETRAIN`` on each run that has
no ``audit.json`` yet (default attacks and protocol, seed 0; the ``retrain`` run itself without
``--against``), and writes the tables between the ``<!-- audit:start -->`` / ``<!-- audit:end -->``
markers of the page; the text around them (the reading of the numbers) is kept. ``--positive-control``
does the same for a study of a random 20% of the training images (``--forget random:0.2``), whose
members and non-members are many and spread over every class, between ``<!-- control:start -->`` /
``<!-- control:end -->``.

    python bench/all_methods.py                          # the runs (bench/out/all-methods/), if not there
    python bench/audit_digits.py                         # audit them, write the page
    python bench/audit_digits.py --runs DIR --positive-control --methods erasediff,retrain

One thread per process (``OMP_NUM_THREADS=1``); the audits run one after the other. An existing
``audit.json`` is reused, so an interrupted call resumes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _cli import ROOT, call

METHODS = ["erasediff", "finetune", "neggrad", "random-label", "joint", "salun", "blindspot", "selective-amnesia"]
MEMBERSHIP = [("membership-loss", "loss"), ("membership-pia", "PIA"), ("membership-secmi", "SecMI")]
ROLE_NAMES = {"model": "unlearned", "base": "base", "retrain": "retrain"}


def audit(run: Path, retrain: Path | None) -> dict:
    if not (run / "audit.json").is_file():
        call(["audit", str(run), *(["--against", str(retrain)] if retrain else []), "--device", "cpu"])
    return json.loads((run / "audit.json").read_text())


def _ci(result: dict, key: str) -> str:
    lo, hi = result.get(f"{key}_ci") or (None, None)
    value = result[key]
    return f"{value:.2f}" if lo is None else f"{value:.2f} [{lo:.2f}, {hi:.2f}]"


def membership_table(rows: list[tuple[str, dict]]) -> str:
    out = ["| model | members / non-members | " + " | ".join(f"{n} AUC [95% CI]" for _, n in MEMBERSHIP) + " |"]
    out.append("| --- | --- |" + " --- |" * len(MEMBERSHIP))
    for name, res in rows:
        first = res[MEMBERSHIP[0][0]]
        cells = [_ci(res[a], "auc") if a in res else "-" for a, _ in MEMBERSHIP]
        out.append(f"| {name} | {first['members']} / {first['nonmembers']} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def _curve(res: dict, condition: str) -> str:
    curve = res["relearn"]["curves"].get(condition)
    if not curve:
        return "-"
    return " → ".join(f"{y:.0%}" for y in curve["y"])


def generation_table(rows: list[tuple[str, dict]], steps: list[int]) -> str:
    at = "/".join(str(s) for s in steps)
    out = [
        f"| model | relearn k=5 (steps {at}) | k=10 | k=50 | benign fine-tuning | embedding attack | "
        "label alone | seed search (label) | null label | guidance-free |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, res in rows:
        emb, seeds, null = res.get("embedding", {}), res.get("seed-search", {}), res.get("null-leakage", {})

        def pct(d: dict, key: str) -> str:
            return f"{d[key]:.0%}" if key in d else "-"

        out.append(
            f"| {name} | {_curve(res, 'k=5')} | {_curve(res, 'k=10')} | {_curve(res, 'k=50')} | "
            f"{_curve(res, 'benign')} | {pct(emb, 'success_rate')} | {pct(emb, 'label_rate')} | "
            f"{pct(seeds, 'rate_label')} | {pct(null, 'null_rate')} | {pct(null, 'unguided_rate')} |"
        )
    return "\n".join(out)


def seconds_table(audits: list[tuple[str, dict]]) -> str:
    attacks = list(audits[0][1]["attacks"])
    out = ["| run | " + " | ".join(attacks) + " | wall time |", "| --- |" + " --- |" * (len(attacks) + 1)]
    for name, a in audits:
        per = {k: sum(a["seconds"][role].get(k, 0.0) for role in a["seconds"]) for k in attacks}
        roles = len(a["seconds"])
        out.append(
            f"| {name} ({roles} models) | " + " | ".join(f"{per[k]:.0f} s" for k in attacks)
            + f" | {a['wall_time_s']:.0f} s |"
        )  # fmt: skip
    return "\n".join(out)


def write_between(doc: Path, marker: str, text: str) -> None:
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    body = doc.read_text() if doc.is_file() else f"# Audits on ddpm-digits\n\n{start}\n{end}\n"
    if start not in body or end not in body:
        raise SystemExit(f"{doc} has no {start} ... {end} markers to write the tables between")
    before, rest = body.split(start, 1)
    _, after = rest.split(end, 1)
    doc.write_text(f"{before}{start}\n{text}\n{end}{after}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, default=ROOT / "bench/out/all-methods", help="folder of the runs")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated run names (besides retrain)")
    ap.add_argument("--retrain", default="retrain", help="the run (a folder in --runs) of the retrained model")
    ap.add_argument("--positive-control", action="store_true", help="write the control section")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs/audit-digits.md")
    args = ap.parse_args()

    retrain = args.runs / args.retrain
    names = [m for m in args.methods.split(",") if m and m != args.retrain and (args.runs / m).is_dir()]
    audits = [(m, audit(args.runs / m, retrain)) for m in names]
    if retrain.is_dir():
        audits.append((args.retrain, audit(retrain, None)))
    first = audits[0][1]
    # one row per unlearned model, then the base model (the same in every audit: its first) and retrain
    rows = [(name, a["results"]["model"]) for name, a in audits if name != args.retrain]
    rows.append(("base (ddpm-digits)", first["results"]["base"]))
    if "retrain" in first["results"]:
        rows.append(("retrain (gold standard)", first["results"]["retrain"]))
    protocol = first["protocol"]
    sets = protocol.get("sets", {})
    parts = [
        "Membership inference (members: the forget set's training images; non-members: held-out test images "
        "of the same classes; AUC 0.5 = chance; 95% bootstrap intervals):",
        membership_table(rows),
    ]
    if all("relearn" in res for _, res in rows):  # the attacks on a forgotten class (not a random forget set)
        steps = first["results"]["model"]["relearn"]["curves"]["k=5"]["x"]
        parts += [
            f"Relearning (the judged forgotten-class rate of {protocol['attacks']['relearn']['samples']} samples after "
            + ", ".join(map(str, steps))
            + " fine-tuning steps on k forget images, or on remaining images only), the embedding attack, seed "
            "search and null-class leakage (share of samples the judge reads as the forgotten class):",
            generation_table(rows, steps),
        ]
    text = "\n\n".join(
        [
            *parts,
            "Time of each attack, summed over the models of the audit:",
            seconds_table(audits),
            f"Protocol: seed {protocol['seed']}, {protocol['sampler']} {protocol['steps']} steps, guidance "
            f"{protocol['guidance']}, the shipped judge; sets: "
            + "; ".join(f"{k}: {v.get('what')} ({v.get('available')} available)" for k, v in sets.items())
            + ". CPU, one thread, shared machine. Regenerate with `python bench/audit_digits.py"
            + (" --positive-control" if args.positive_control else "")
            + "`.",
        ]
    )
    write_between(args.doc, "control" if args.positive_control else "audit", text)
    print(f"wrote {args.doc}")


if __name__ == "__main__":
    main()
