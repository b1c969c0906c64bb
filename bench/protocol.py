"""The digits protocol's selection rule (docs/protocol.md, stage 1), applied to the tuning study.

Reads the tuning study through ``unlearnctl compare STUDY --json`` (the public command), applies the one rule
of docs/protocol.md to every method's settings, prints the choice with the numbers behind it as a Markdown
table, and writes the test stage's spec from ``docs/studies/digits-test.template.toml`` with each method's
chosen options filled in::

    python bench/protocol.py round2 /work/studies/digits-tuning     # write docs/studies/digits-tuning-2.toml
    python bench/protocol.py select /work/studies/digits-tuning /work/studies/digits-tuning-2 [--write-spec]
    python bench/protocol.py goal /work/studies/digits-test     # EraseDiff against its goal, class by class
    python bench/protocol.py results /work/studies/digits-test  # regenerate docs/results-digits.md's study blocks

``select`` prints the choice over every setting of the studies given (round 1 and round 2) and, with
``--write-spec``, writes ``docs/studies/digits-test.toml``. ``round2`` writes the second tuning round: around
each method's round-1 choice c, the same four settings for every method -- c with twice the steps, c with
twice the learning rate, and both again with the EMA of the weights switched (``save_ema``) -- so that every
method gets eight settings in all.

``goal`` checks EraseDiff's goal (docs/protocol.md) on the test study, one row per forget set, worst class
last: the forgotten class at most 1% recognised, the kept classes within 2 points of the base model and their
FID within 10% of the base model's, each as a mean over the seeds of that forget set, against the base
model evaluated in the same cells (same samples per class, same seeds).

The rule, per method (its label): among the settings whose forgotten class is recognised in at most 1% of the
samples and whose kept classes are within 2 points of the base model, the lowest FID of the kept classes;
when no setting forgets that well, the lowest forgotten-class recognition (ties: the lowest FID).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from unlearnctl.commands.study_compare import dominates

ROOT = Path(__file__).resolve().parents[1]
UNLEARNCTL = Path(sys.executable).parent / "unlearnctl"
TEMPLATE = ROOT / "docs" / "studies" / "digits-test.template.toml"
TEST_SPEC = ROOT / "docs" / "studies" / "digits-test.toml"
#: the rule's thresholds (docs/protocol.md)
MAX_FORGOTTEN = 0.01
MAX_KEPT_DROP = 0.02
#: EraseDiff's goal adds: the kept classes' FID within 10% of the base model's
MAX_FID_RATIO = 1.10
#: the groups of the test study that run EraseDiff at its defaults
GOAL_LABELS = ("erasediff", "erasediff (every class)")
RESULTS_PAGE = ROOT / "docs" / "results-digits.md"
FRONT_PLOT = ROOT / "docs" / "img" / "digits-test-front.png"
#: the results page's sample pictures: every method's cell (and the retrain cell) on this forget set, seed 0
SAMPLES_DIR = ROOT / "docs" / "img" / "digits-test-samples"
GOAL_PLOT = ROOT / "docs" / "img" / "digits-test-goal.png"
SAMPLES_FORGET_SET = "classes:2"
#: the test forget sets of whole classes, each compared on its own for the front (a random set has no forgotten
#: class to recognise)
FRONT_FORGET_SETS = ("classes:2", "classes:8", "classes:1,7")


def _mean(group: dict[str, Any], key: str) -> float | None:
    value = (group.get("overall") or {}).get(key)
    return None if value is None else value.get("mean")


def choose(groups: list[dict[str, Any]], base_kept: float) -> tuple[dict[str, Any], bool]:
    """The rule on one method's groups: (the chosen group, whether it met the forgetting bar)."""
    scored = [g for g in groups if _mean(g, "recognition_rate") is not None and _mean(g, "fid") is not None]
    if not scored:
        raise SystemExit(f"no setting of {groups[0]['label']} has both a forgotten-class rate and an FID")
    passing = [
        g for g in scored
        if _mean(g, "recognition_rate") <= MAX_FORGOTTEN and _mean(g, "kept_rate") >= base_kept - MAX_KEPT_DROP
    ]  # fmt: skip
    if passing:
        return min(passing, key=lambda g: _mean(g, "fid")), True
    return min(scored, key=lambda g: (_mean(g, "recognition_rate"), _mean(g, "fid"))), False


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _options(group: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in group["options"].items()) or "(defaults)"


def toml_table(options: dict[str, Any]) -> str:
    """``{ key = value, ... }`` for the spec template."""
    return "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in options.items()) + " }"


def read_study(study: Path) -> dict[str, Any]:
    out = subprocess.run(
        [str(UNLEARNCTL), "compare", str(study), "--json", "--no-plot"], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise SystemExit(out.stderr.strip())
    return json.loads(out.stdout)


def method_groups(studies: list[Path]) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]], int]:
    """The base model's group, each method's groups over all ``studies``, and the cells not done."""
    base: dict[str, Any] = {}
    by_method: dict[str, list[dict[str, Any]]] = {}
    missing = 0
    for study in studies:
        data = read_study(study)
        base = base or data["base"]
        missing += len(data.get("missing") or [])
        for group in data["groups"]:
            if group["role"] == "method":
                by_method.setdefault(group["label"], []).append(group)
    return base, by_method, missing


def select(studies: list[Path], write_spec: bool) -> None:
    base, by_method, missing = method_groups(studies)
    base_kept = _mean(base, "kept_rate") or 1.0
    print(f"base model: forgotten {_fmt(_mean(base, 'recognition_rate'), 3)}, kept {_fmt(base_kept, 3)}, "
          f"FID {_fmt(_mean(base, 'fid'), 2)}")  # fmt: skip
    print("\n| method | setting | forgotten recognised | kept | FID (kept) | method time s | chosen |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    chosen: dict[str, dict[str, Any]] = {}
    for label, groups in by_method.items():
        pick, met = choose(groups, base_kept)
        chosen[label] = pick["options"]
        for g in groups:
            mark = ("**yes**" if met else "yes (none met the bar)") if g is pick else ""
            print(
                f"| {label} | {_options(g)} | {_fmt(_mean(g, 'recognition_rate'), 3)} | "
                f"{_fmt(_mean(g, 'kept_rate'), 3)} | {_fmt(_mean(g, 'fid'), 2)} | "
                f"{_fmt(_mean(g, 'wall_time_s'), 0)} | {mark} |"
            )
    if missing:
        print(f"\nnote: {missing} cells of the studies are not done: the choice is provisional")
    if write_spec:
        text = TEMPLATE.read_text(encoding="utf-8")
        for label, options in chosen.items():
            text = text.replace(f"@{label}@", toml_table(options))
        if "@" in text:
            raise SystemExit("the template names a method the tuning study has no setting for")
        TEST_SPEC.write_text(text, encoding="utf-8")
        print(f"\nwrote {TEST_SPEC.relative_to(ROOT)}")


def method_defaults(name: str) -> dict[str, Any]:
    out = subprocess.run([str(UNLEARNCTL), "show", "method", name, "--json"], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(out.stderr.strip())
    return {o["name"]: o.get("default") for o in json.loads(out.stdout)["options"]}


def round2(study: Path) -> None:
    """Write the second tuning round (see the module docstring) next to the first one's spec."""
    first = ROOT / "docs" / "studies" / "digits-tuning.toml"
    base, by_method, missing = method_groups([study])
    if missing:
        raise SystemExit(f"{missing} cells of {study} are not done: finish round 1 first")
    base_kept = _mean(base, "kept_rate") or 1.0
    text = first.read_text(encoding="utf-8")
    head = text[text.index("name = ") : text.index("[[methods]]")]  # the study's tables, not its comments
    head = "\n".join(line for line in head.splitlines() if not line.startswith("#"))
    head = head.replace('name = "digits-tuning"', 'name = "digits-tuning-2"').replace(
        "digits protocol, tuning stage: 8 methods x 4 settings", "digits protocol, tuning stage, round 2"
    )
    lines = [
        "# Round 2 of the tuning stage, written by `python bench/protocol.py round2` from round 1's choices",
        "# (docs/protocol.md): around each method's choice c, c with twice the steps, c with twice the learning",
        "# rate, and both with the EMA of the weights switched.",
        "#",
        "#   unlearnctl sweep docs/studies/digits-tuning-2.toml --jobs 2",
        "",
    ]
    body = []
    for label, groups in by_method.items():
        pick, _met = choose(groups, base_kept)
        method = groups[0]["label"]
        defaults = method_defaults(method)
        c = dict(pick["options"])
        steps = 2 * int(c.get("steps", defaults["steps"]))
        lr = 2 * float(c.get("lr", defaults["lr"]))
        ema = not bool(c.get("save_ema", defaults.get("save_ema", False)))
        body.append(f"# --- {label}: round 1 chose {_options(pick)}")
        for extra in ({"steps": steps}, {"lr": lr}, {"save_ema": ema, "steps": steps}, {"save_ema": ema, "lr": lr}):
            body += ["[[methods]]", f'name = "{method}"', f"options = {toml_table({**c, **extra})}", ""]
    out = first.with_name("digits-tuning-2.toml")
    out.write_text("\n".join(lines) + "\n" + head.rstrip() + "\n\n" + "\n".join(body), encoding="utf-8")
    print(f"wrote {out.relative_to(ROOT)}")


def _single(forget_set: str) -> bool:
    return forget_set.startswith("classes:") and "," not in forget_set


def goal_rows(data: dict[str, Any], labels: tuple[str, ...] = GOAL_LABELS) -> list[dict[str, Any]]:
    """EraseDiff's goal, one row per forget set of the groups labelled ``labels``: the means over its seeds
    (``mean``: forgotten recognised, kept, FID, and ``interval``: their t-intervals), the base model's
    (``base``), FID / base (``ratio``), the three checks, and the retrain model's forgotten-class recognition
    (``gold``). Single classes first, worst last (most recognised, then the largest FID ratio)."""
    base = data["base"]["per_forget_set"]
    retrain: dict[str, Any] = {}
    for group in data["groups"]:
        if group["role"] == "retrain":
            retrain.update(group["per_forget_set"])
    rows = []
    for group in data["groups"]:
        if group["label"] not in labels:
            continue
        for forget_set, metrics in group["per_forget_set"].items():
            if not metrics or (metrics.get("recognition_rate") or {}).get("mean") is None:
                continue
            ref = base.get(forget_set) or {}
            mean = {k: (metrics.get(k) or {}).get("mean") for k in ("recognition_rate", "kept_rate", "fid")}
            ref_mean = {k: (ref.get(k) or {}).get("mean") for k in ("kept_rate", "fid")}
            ratio = mean["fid"] / ref_mean["fid"] if mean["fid"] is not None and ref_mean["fid"] else None
            checks = (
                mean["recognition_rate"] <= MAX_FORGOTTEN,
                ref_mean["kept_rate"] is not None and mean["kept_rate"] >= ref_mean["kept_rate"] - MAX_KEPT_DROP,
                ratio is not None and ratio <= MAX_FID_RATIO,
            )
            rows.append({
                "forget_set": forget_set,
                "n": metrics["recognition_rate"]["n"],
                "mean": mean,
                "interval": {k: metrics.get(k) for k in ("recognition_rate", "fid")},
                "base": ref_mean,
                "ratio": ratio,
                "checks": checks,
                "gold": ((retrain.get(forget_set) or {}).get("recognition_rate") or {}).get("mean"),
            })  # fmt: skip
    if not rows:
        raise SystemExit(f"the study has no done cell labelled {' or '.join(labels)}")
    rows.sort(key=lambda r: (not _single(r["forget_set"]), r["mean"]["recognition_rate"], r["ratio"] or 0))
    return rows


def goal_table(data: dict[str, Any], labels: tuple[str, ...] = GOAL_LABELS) -> tuple[str, int]:
    """:func:`goal_rows` as a Markdown table, the worst class named, and how many single classes miss the goal."""
    rows = goal_rows(data, labels)
    lines = [
        "| forget set | seeds | forgotten recognised (retrain) | kept (base) | FID (base) | FID / base | <= 1% | "
        "kept within 2 pt | FID within 10% |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        mean, ref = r["mean"], r["base"]
        marks = " | ".join("yes" if ok else "**no**" for ok in r["checks"])
        lines.append(
            f"| {r['forget_set']} | {r['n']} | {_fmt(mean['recognition_rate'], 3)} ({_fmt(r['gold'], 3)}) | "
            f"{_fmt(mean['kept_rate'], 3)} ({_fmt(ref['kept_rate'], 3)}) | {_fmt(mean['fid'], 2)} "
            f"({_fmt(ref['fid'], 2)}) | {_fmt(r['ratio'], 2)} | {marks} |"
        )
    singles = [r for r in rows if _single(r["forget_set"])]
    missed = sum(not all(r["checks"]) for r in singles)
    if singles:
        worst = singles[-1]
        lines.append(
            f"\nWorst class: {worst['forget_set']} (recognised {_fmt(worst['mean']['recognition_rate'], 3)}, "
            f"FID / base {_fmt(worst['ratio'], 2)}). Classes missing the goal: {missed} of {len(singles)}."
        )
    lines.append(
        "\nMeans over the forget set's seeds; the base model is evaluated in the same cells. In brackets after the "
        "forgotten class: the `retrain` model of that forget set (seed 0), which never saw it (`-`: no retrain cell)."
    )
    missing = data.get("missing") or []
    unfinished = [m for m in missing if m.get("status") != "failed"]
    if unfinished:
        lines.append(f"\nProvisional: {len(unfinished)} cells of the study are not done.")
    failed = sorted(
        f"{m.get('label') or m.get('group')} on {m.get('forget_label')} (seed {m.get('seed')})"
        for m in missing
        if m.get("status") == "failed"
    )
    if failed:
        lines.append(f"\nFailed for good, left out ({len(failed)}): {'; '.join(failed)}.")
    return "\n".join(lines), missed


def goal_plot(rows: list[dict[str, Any]], path: Path) -> None:
    """EraseDiff class by class (the single-class rows of :func:`goal_rows`, in class order): the forgotten class's
    recognition next to the retrain model's, and the kept classes' FID / base, each with the goal's line and, where
    a class has several seeds, the 95% interval."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    singles = sorted((r for r in rows if _single(r["forget_set"])), key=lambda r: int(r["forget_set"][8:]))
    if not singles:
        return
    xs = list(range(len(singles)))
    names = [r["forget_set"][8:] for r in singles]

    def errors(key: str, scale: float) -> list[list[float]] | None:
        low, high = [], []
        for r in singles:
            iv, mean = r["interval"].get(key) or {}, r["mean"][key]
            lo, hi = iv.get("low"), iv.get("high")
            low.append(0.0 if lo is None else (mean - lo) * scale)
            high.append(0.0 if hi is None else (hi - mean) * scale)
        return [low, high] if any(low) or any(high) else None

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    rec = [100 * r["mean"]["recognition_rate"] for r in singles]
    left.bar(xs, rec, yerr=errors("recognition_rate", 100), capsize=3, color="#4c72b0", label="EraseDiff")
    gold = [(x, 100 * r["gold"]) for x, r in zip(xs, singles, strict=True) if r["gold"] is not None]
    if gold:
        left.scatter(*zip(*gold, strict=True), marker="_", s=300, color="black", zorder=3, label="retrain")
    left.axhline(100 * MAX_FORGOTTEN, color="#c44e52", linestyle="--", linewidth=1, label="goal: <= 1%")
    left.set(xticks=xs, xticklabels=names, xlabel="forgotten class", ylabel="forgotten class recognised (%)")
    left.legend(fontsize=8)
    ratio = [r["ratio"] or 0.0 for r in singles]
    scale = [1 / r["base"]["fid"] if r["base"]["fid"] else 0.0 for r in singles]
    fid_err = errors("fid", 1.0)
    if fid_err is not None:
        fid_err = [[e * s for e, s in zip(side, scale, strict=True)] for side in fid_err]
    right.bar(xs, ratio, yerr=fid_err, capsize=3, color="#55a868")
    right.axhline(MAX_FID_RATIO, color="#c44e52", linestyle="--", linewidth=1, label="goal: within 10%")
    right.axhline(1.0, color="gray", linewidth=0.8)
    right.set(xticks=xs, xticklabels=names, xlabel="forgotten class", ylabel="kept classes' FID / base model's",
              ylim=(min(0.8, min(ratio) - 0.05), max(MAX_FID_RATIO, max(ratio)) + 0.1))  # fmt: skip
    right.legend(fontsize=8)
    n = ", ".join(f"{r['forget_set'][8:]}: {r['n']}" for r in singles if r["n"] > 1)
    fig.suptitle("EraseDiff at its defaults, class by class" + (f" (seeds per class where more than one: {n})"
                 if n else ""), fontsize=10)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _point(group: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A group's forgotten-class recognition and FID intervals (a single cell: its value at both ends)."""
    out = {}
    for key in ("recognition_rate", "fid"):
        iv = dict(group["overall"].get(key) or {})
        if iv.get("mean") is not None:
            iv["low"] = iv["mean"] if iv.get("low") is None else iv["low"]
            iv["high"] = iv["mean"] if iv.get("high") is None else iv["high"]
        out[key] = iv
    return out


def _dominates(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]]) -> bool:
    """``a``'s means dominate ``b``'s: the front's own rule (``unlearnctl compare``)."""
    a_mean, b_mean = ((p["recognition_rate"]["mean"], p["fid"]["mean"]) for p in (a, b))
    return dominates(a_mean, b_mean)


def _beyond_noise(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]], threshold: float | None) -> bool:
    """Whether ``a`` is better than ``b`` beyond the noise on some axis, by the protocol's rule: the 95% intervals
    do not overlap and, for FID, the means differ by more than the noise floor's threshold."""
    rec_a, rec_b = a["recognition_rate"], b["recognition_rate"]
    fid_a, fid_b = a["fid"], b["fid"]
    if rec_a["high"] < rec_b["low"]:
        return True
    return fid_a["high"] < fid_b["low"] and fid_b["mean"] - fid_a["mean"] > (threshold or 0.0)


def front_rows(by_forget_set: dict[str, dict[str, Any]], labels: tuple[str, ...] = GOAL_LABELS) -> list[dict[str, Any]]:
    """For each forget set's ``compare STUDY --forget-set FS --json``: its front (every group, retrain included),
    EraseDiff's point, the method groups that dominate it by their means, and whether any of them does so beyond the
    noise (:func:`_beyond_noise`) -- the last is what "EraseDiff on the front, within the noise" asks."""
    rows = []
    for forget_set, data in by_forget_set.items():
        groups = [g for g in data["groups"] if g["overall"].get("recognition_rate") and g["overall"].get("fid")]
        points = {g["key"]: _point(g) for g in groups}
        ours = [g for g in groups if g["label"] in labels]
        if not ours:
            continue
        mine = points[ours[0]["key"]]
        threshold = (data.get("noise_floor") or {}).get("threshold")
        dominators = [
            g
            for g in groups
            if g["role"] == "method" and g["label"] not in labels and _dominates(points[g["key"]], mine)
        ]
        rows.append({
            "forget_set": forget_set,
            "front": [g["label"] for g in groups if g["key"] in data["front"]],
            "erasediff": mine,
            "dominated_by": [(g["label"], points[g["key"]]) for g in dominators],
            "beyond_noise": [g["label"] for g in dominators if _beyond_noise(points[g["key"]], mine, threshold)],
        })  # fmt: skip
    return rows


def _at(point: dict[str, dict[str, Any]]) -> str:
    rec, fid = point["recognition_rate"], point["fid"]
    return f"{100 * rec['mean']:.0f}% / {fid['mean']:.2f}"


def front_table(by_forget_set: dict[str, dict[str, Any]]) -> str:
    """:func:`front_rows` as a Markdown table."""
    lines = [
        "| forget set | front (by means) | EraseDiff: recognised / FID | dominated by (recognised / FID) | "
        "beyond the noise |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in front_rows(by_forget_set):
        dominated = "; ".join(f"{label} ({_at(p)})" for label, p in r["dominated_by"]) or "- (on the front)"
        beyond = ", ".join(r["beyond_noise"]) or ("no" if r["dominated_by"] else "-")
        lines.append(
            f"| {r['forget_set']} | {', '.join(r['front'])} | {_at(r['erasediff'])} | {dominated} | {beyond} |"
        )
    lines.append(
        "\nOne `unlearnctl compare STUDY --forget-set FS` per forget set: means over its seeds, the front among every "
        "group (retrain included). Beyond the noise: a method better than EraseDiff with non-overlapping 95% "
        "intervals on recognition, or on FID by more than the noise floor's threshold too."
    )
    return "\n".join(lines)


def compare_forget_sets(study: Path, forget_sets: tuple[str, ...] = FRONT_FORGET_SETS) -> dict[str, dict[str, Any]]:
    """``unlearnctl compare STUDY --forget-set FS --json --no-plot`` for each of ``forget_sets``."""
    out = {}
    for forget_set in forget_sets:
        run = subprocess.run(
            [str(UNLEARNCTL), "compare", str(study), "--forget-set", forget_set, "--json", "--no-plot"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if run.returncode != 0:
            raise SystemExit(run.stderr.strip())
        out[forget_set] = json.loads(run.stdout)
    return out


def goal(study: Path) -> None:
    """Print :func:`goal_table` for ``study``; exit 1 when a class misses the goal."""
    text, missed = goal_table(read_study(study))
    print(text)
    if missed:
        raise SystemExit(1)


def _replace_block(text: str, name: str, body: str) -> str:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start not in text or end not in text:
        raise SystemExit(f"{RESULTS_PAGE.relative_to(ROOT)} has no {start} ... {end} block")
    head, rest = text.split(start, 1)
    return head + start + "\n" + body.strip() + "\n" + end + rest.split(end, 1)[1]


def sample_pictures(study: Path, forget_set: str = SAMPLES_FORGET_SET, seed: int = 0) -> str:
    """Copy the eval pictures (``samples/eval-forgotten.png``: the base model's and the unlearned model's samples
    conditioned on the forgotten class, side by side) of every done method and retrain cell of ``forget_set`` and
    ``seed`` into :data:`SAMPLES_DIR`, and EraseDiff's kept-class picture; return the Markdown that shows them."""
    index = read_json(study / "study.json")
    if SAMPLES_DIR.exists():
        for old in SAMPLES_DIR.glob("*.png"):
            old.unlink()
    SAMPLES_DIR.mkdir(parents=True, exist_ok=True)
    rows, kept = [], None
    for cell in index.get("cells", []):
        if (cell.get("status"), cell.get("role"), cell.get("forget_label"), cell.get("seed")) not in {
            ("done", "method", forget_set, seed),
            ("done", "retrain", forget_set, seed),
        }:
            continue
        samples = study / cell["run"] / "samples"
        if not (samples / "eval-forgotten.png").is_file():
            continue
        name = re.sub(r"[^a-z0-9]+", "-", str(cell["label"]).lower()).strip("-")
        shutil.copyfile(samples / "eval-forgotten.png", SAMPLES_DIR / f"{name}.png")
        rows.append(f"| {cell['label']} | ![{cell['label']}: samples conditioned on {forget_set}]"
                    f"({SAMPLES_DIR.relative_to(RESULTS_PAGE.parent)}/{name}.png) |")  # fmt: skip
        if cell["label"] == "erasediff" and (samples / "eval-kept.png").is_file():
            kept = SAMPLES_DIR / "erasediff-kept.png"
            shutil.copyfile(samples / "eval-kept.png", kept)
    if not rows:
        return f"No done cell of {forget_set} with seed {seed} yet."
    lines = [
        f"Samples conditioned on the forgotten class ({forget_set}, seed {seed}, eval seed 0: every model starts "
        "from the same noise); left the base model, right the model after the method.",
        "",
        "| method | base model / after |",
        "| --- | --- |",
        *rows,
    ]
    if kept is not None:
        lines += [
            "",
            "EraseDiff's kept classes, base model (left) and after (right), the same noise:",
            "",
            f"![erasediff: samples of the kept classes]({kept.relative_to(RESULTS_PAGE.parent)})",
        ]
    return "\n".join(lines)


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def results(study: Path) -> None:
    """Regenerate the study's blocks of docs/results-digits.md: ``compare STUDY --markdown`` (the tables with
    intervals, the noise floor, the wall time), the front plot (docs/img/digits-test-front.png), the goal table and
    plot (:func:`goal_plot`), the front forget set by forget set (:func:`front_table`), and the sample pictures
    (:func:`sample_pictures`)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        tables = Path(tmp) / "study.md"
        out = subprocess.run(
            [str(UNLEARNCTL), "compare", str(study), "--json", "--markdown", str(tables), "--plot", str(FRONT_PLOT),
             "--overwrite"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if out.returncode != 0:
            raise SystemExit(out.stderr.strip())
        data = json.loads(out.stdout)
        markdown = tables.read_text(encoding="utf-8")
    text = RESULTS_PAGE.read_text(encoding="utf-8")
    text = _replace_block(text, "study", markdown)
    text = _replace_block(text, "goal", goal_table(data)[0])
    text = _replace_block(text, "fronts", front_table(compare_forget_sets(study)))
    goal_plot(goal_rows(data), GOAL_PLOT)
    text = _replace_block(text, "samples", sample_pictures(study))
    RESULTS_PAGE.write_text(text, encoding="utf-8")
    print(f"wrote {RESULTS_PAGE.relative_to(ROOT)}, {FRONT_PLOT.relative_to(ROOT)} and {GOAL_PLOT.relative_to(ROOT)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sel = sub.add_parser("select", help="apply the selection rule to the tuning studies")
    sel.add_argument("studies", type=Path, nargs="+")
    sel.add_argument("--write-spec", action="store_true", help=f"write {TEST_SPEC.relative_to(ROOT)}")
    two = sub.add_parser("round2", help="write the second tuning round from the first one's choices")
    two.add_argument("study", type=Path)
    aim = sub.add_parser("goal", help="EraseDiff against its goal on the test study, forget set by forget set")
    aim.add_argument("study", type=Path)
    res = sub.add_parser("results", help=f"regenerate the study's blocks of {RESULTS_PAGE.relative_to(ROOT)}")
    res.add_argument("study", type=Path)
    args = parser.parse_args()
    if args.command == "round2":
        round2(args.study)
    elif args.command == "goal":
        goal(args.study)
    elif args.command == "results":
        results(args.study)
    else:
        select(args.studies, args.write_spec)


if __name__ == "__main__":
    main()
