"""A study spec (TOML, YAML or JSON) and the cells it expands to (docs/sweep.md).

A spec names a model, forget sets, seeds and methods; each method entry may fix options (``options``) and
vary others (``grid``: the cartesian product of the listed values). Every (method setting, forget set,
seed) is one *cell*: an ordinary ``forget`` run, then ``eval`` of it. An optional ``[retrain]`` table adds a
``retrain`` cell per forget set, the gold standard every other cell of that forget set is evaluated against
(``eval --retrain``); an optional ``[noise_floor]`` table adds one ``noise-floor`` cell. A cell's id is
readable and content-addressed: ``<label>.<forget set>.s<seed>.<hash>``, the hash over everything that
makes its numbers, so editing the spec adds new cells instead of reusing stale ones.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..config import load_config_file
from ..errors import UsageError

#: keys of the spec's [forget] table that the sweep sets itself, per cell
FORGET_OWN_KEYS = ("model", "classes", "forget", "method", "seed", "out", "config")
#: the sample cache of every cell's eval (``eval --sample-cache``), relative to the study folder
STUDY_SAMPLE_CACHE = "cache/samples"
#: keys of the spec's [eval] table that the sweep sets itself, per cell
EVAL_OWN_KEYS = ("target", "out", "overwrite", "retrain", "config", "classes")
#: the eval keys a noise-floor cell takes over (its sampling protocol, judge and data)
NOISE_FLOOR_EVAL_KEYS = (
    "num_samples", "sampler", "steps", "guidance", "eta", "seed", "batch_size", "device", "threads", "judge",
    "dataset", "data_dir",
)  # fmt: skip
NOISE_FLOOR_FILE = "noise-floor.json"

Role = Literal["method", "retrain", "noise-floor"]
ForgetSet = str | list[str]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MethodEntry(_Strict):
    """One ``[[methods]]`` entry: a method with fixed options and a grid of options to vary."""

    name: str = Field(description="the method (`unlearnctl list methods`)")
    label: str | None = Field(None, description="the name its cells are grouped and shown under (default: name)")
    options: dict[str, Any] = Field(default_factory=dict, description="method options every cell of the entry sets")
    grid: dict[str, list[Any]] = Field(
        default_factory=dict, description="method options to vary: every combination of the listed values is a setting"
    )
    seeds: list[int] | None = Field(None, description="this entry's seeds (default: the study's)")
    forget_sets: list[ForgetSet] | None = Field(None, description="this entry's forget sets (default: the study's)")
    retrain: bool = Field(
        True, description="with [retrain]: evaluate against the gold standard (false: no retrain cell for its own sake)"
    )

    @field_validator("grid")
    @classmethod
    def _non_empty(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in grid.items():
            if not values:
                raise ValueError(f"grid '{key}' lists no value")
        return grid

    @property
    def shown(self) -> str:
        return self.label or self.name


class RetrainEntry(_Strict):
    """``[retrain]``: one ``retrain`` run per forget set, the gold standard of that forget set's cells."""

    seed: int = 0
    options: dict[str, Any] = Field(default_factory=dict, description="the retrain method's options")


class NoiseFloorEntry(_Strict):
    """``[noise_floor]``: the base model's own seed-to-seed spread under the study's eval protocol."""

    draws: int = Field(5, ge=2, description="sample sets of the base model, seeds seed..seed+draws-1")
    classes: str | None = Field(None, description="classes left out of the kept set, as eval's --classes")


class ExecutorEntry(_Strict):
    """``[executor]``: where the cells run (``--executor`` and ``--jobs`` win over it)."""

    name: str = "local"
    jobs: int | None = Field(None, ge=1)
    options: dict[str, Any] = Field(default_factory=dict)


class StudySpec(_Strict):
    """A study: methods x option settings x forget sets x seeds on one model."""

    name: str | None = None
    description: str | None = None
    model: str = "ddpm-digits"
    seeds: list[int] = Field(default_factory=lambda: [0])
    forget_sets: list[ForgetSet] = Field(description="each entry one forget set: SELECTOR:ARGS, or a list of them")
    forget: dict[str, Any] = Field(default_factory=dict, description="[forget] options of every cell's forget")
    eval: dict[str, Any] = Field(default_factory=dict, description="[eval] options of every cell's eval")
    eval_metrics: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="[metrics.NAME] options of every cell's eval"
    )
    retrain: RetrainEntry | None = None
    noise_floor: NoiseFloorEntry | None = None
    executor: ExecutorEntry = Field(default_factory=ExecutorEntry)
    methods: list[MethodEntry]

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[int]) -> list[int]:
        if not seeds:
            raise ValueError("list at least one seed")
        return seeds


@dataclass
class Cell:
    """One unit of a study (see the module docstring); ``forget_config``/``eval_config`` are the tables of
    the config files its ``forget --config`` and ``eval --config`` read."""

    id: str
    role: Role
    method: str
    label: str
    options: dict[str, Any]
    forget: list[str]
    forget_label: str
    seed: int
    #: the cell's run folder (``cells/<id>``) or, for the noise floor, its JSON file; relative to the study
    run: str
    forget_config: dict[str, Any] = field(default_factory=dict)
    eval_config: dict[str, Any] = field(default_factory=dict)
    #: the id of the retrain cell its eval reads (``eval --retrain``)
    retrain: str | None = None
    #: the noise-floor command's arguments (role ``noise-floor`` only)
    noise_floor_args: list[str] = field(default_factory=list)

    @property
    def group(self) -> str:
        return f"{self.label}|{canonical(self.options)}"

    @property
    def log(self) -> str:
        return f"logs/{self.id}.log"


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _hash(value: Any, n: int = 6) -> str:
    return hashlib.sha256(canonical(value).encode()).hexdigest()[:n]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-.") or "x"


def forget_selectors(entry: ForgetSet) -> list[str]:
    items = [entry] if isinstance(entry, str) else list(entry)
    selectors = [s.strip() for s in items if str(s).strip()]
    if not selectors:
        raise UsageError("a forget set of the spec is empty: write SELECTOR:ARGS, e.g. classes:2")
    return selectors


def forget_label(entry: ForgetSet) -> str:
    return " + ".join(forget_selectors(entry))


def read_spec(path: Path) -> StudySpec:
    """Read and validate a spec file (one-line :class:`UsageError` on a bad one)."""
    data = load_config_file(path)
    try:
        spec = StudySpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise UsageError(f"study spec '{path}': {where}: {err['msg']} (docs/sweep.md)") from None
    own = [k for k in spec.forget if k in FORGET_OWN_KEYS]
    if own:
        raise UsageError(f"study spec '{path}': [forget] sets {', '.join(own)}, which the sweep sets per cell")
    own = [k for k in spec.eval if k in EVAL_OWN_KEYS]
    if own:
        raise UsageError(f"study spec '{path}': [eval] sets {', '.join(own)}, which the sweep sets per cell")
    if not spec.methods:
        raise UsageError(f"study spec '{path}': [[methods]] lists no method")
    return spec


def _settings(entry: MethodEntry) -> list[dict[str, Any]]:
    keys = list(entry.grid)
    combos = itertools.product(*(entry.grid[k] for k in keys)) if keys else [()]
    return [{**entry.options, **dict(zip(keys, combo, strict=True))} for combo in combos]


def expand(spec: StudySpec) -> list[Cell]:
    """Every cell of ``spec``, in the order they are run: retrain cells (the others' gold standard), the
    noise floor, then the methods' cells seed by seed (so a study cut short has whole seeds)."""
    cells: list[Cell] = []
    common = {"model": spec.model, "forget": spec.forget, "eval": spec.eval, "metrics": spec.eval_metrics}
    retrain_of: dict[str, str] = {}
    forget_sets = {
        forget_label(f): forget_selectors(f)
        for m in spec.methods
        if m.retrain
        for f in (m.forget_sets or spec.forget_sets)
    }
    if spec.retrain is not None:
        for label, selectors in forget_sets.items():
            options = dict(spec.retrain.options)
            cell = _cell(common, "retrain", "retrain", "retrain", options, selectors, label, spec.retrain.seed, None)
            retrain_of[label] = cell.id
            cells.append(cell)
    if spec.noise_floor is not None:
        nf = spec.noise_floor
        payload = {**common, "noise_floor": nf.model_dump()}
        args = [spec.model, "--draws", str(nf.draws), "--out", NOISE_FLOOR_FILE]
        if nf.classes:
            args += ["--classes", nf.classes]
        for key in NOISE_FLOOR_EVAL_KEYS:
            if key in spec.eval and spec.eval[key] is not None:
                args += [f"--{key.replace('_', '-')}", str(spec.eval[key])]
        cells.append(
            Cell(
                f"noise-floor.{_hash(payload)}", "noise-floor", "", "noise floor", {}, [], nf.classes or "",
                int(spec.eval.get("seed", 0)), NOISE_FLOOR_FILE, noise_floor_args=args,
            )
        )  # fmt: skip
    method_cells: list[tuple[int, int, int, Cell]] = []
    for m_index, entry in enumerate(spec.methods):
        for setting in _settings(entry):
            for f_index, fset in enumerate(entry.forget_sets or spec.forget_sets):
                label = forget_label(fset)
                for seed in entry.seeds or spec.seeds:
                    cell = _cell(
                        common, "method", entry.name, entry.shown, setting, forget_selectors(fset), label, seed,
                        retrain_of.get(label) if entry.retrain else None,
                    )  # fmt: skip
                    method_cells.append((seed, f_index, m_index, cell))
    cells += [c for *_, c in sorted(method_cells, key=lambda item: item[:3])]
    ids = [c.id for c in cells]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise UsageError(f"the spec makes cell {dupes[0]} twice: give one of the two method entries another label")
    return cells


def _cell(
    common: dict[str, Any],
    role: Role,
    method: str,
    label: str,
    options: dict[str, Any],
    selectors: list[str],
    fset: str,
    seed: int,
    retrain: str | None,
) -> Cell:
    payload = {**common, "method": method, "options": options, "forget_set": selectors, "seed": seed}
    payload["retrain"] = retrain
    cell_id = f"{_slug(label)}.{_slug(fset)}.s{seed}.{_hash(payload)}"
    run = f"cells/{cell_id}"
    forget_table = {
        **common["forget"],
        "model": common["model"],
        "forget": selectors,
        "method": method,
        "seed": seed,
        "out": run,
    }
    eval_table: dict[str, Any] = {**common["eval"], "target": run}
    # every cell's eval reads and keeps its draws in the study's sample cache: the base model is sampled once
    # per protocol, each retrain model once (identical draws by construction; not part of the cell's hash)
    eval_table.setdefault("sample_cache", STUDY_SAMPLE_CACHE)
    if retrain is not None:
        eval_table["retrain"] = f"cells/{retrain}"
    return Cell(
        cell_id, role, method, label, dict(options), selectors, fset, seed, run,
        forget_config={"forget": forget_table, "method": dict(options)},
        eval_config={"eval": eval_table, **({"metrics": common["metrics"]} if common["metrics"] else {})},
        retrain=retrain,
    )  # fmt: skip


def spec_summary(cells: Sequence[Cell]) -> dict[str, int]:
    """Cells by role."""
    out: dict[str, int] = {}
    for cell in cells:
        out[cell.role] = out.get(cell.role, 0) + 1
    return out
