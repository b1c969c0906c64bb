"""``unlearnctl audit``: attack an unlearned model the way an adversary would.

:func:`audit` runs attacks (plugins of kind ``attack``, registered with ``register_attacks``) on the unlearned
model, on its base model and, given ``--against``, on a model retrained without the forget set -- the gold
standard an attack's result is read against -- side by side: every role gets an
:class:`~unlearnctl.contexts.audit.AuditContext` with the same protocol, data, judge and seeds. Loading the
models, the data set, the forget set and the judge is shared with ``eval``
(:func:`~unlearnctl.commands.study.study_shared`). Everything the protocol consists of and every result goes
into ``audit.json``, with plots next to it (:mod:`unlearnctl.commands.audit_record`); see ``docs/audit.md``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..components import Attack
from ..config import load_config_file, resolve_options
from ..contexts.audit import AuditContext, Role
from ..contexts.study import EvalShared, SamplingProtocol
from ..diffusion import Sampler
from ..distributed import SINGLE, launched
from ..errors import UnlearnError, UsageError
from ..lifecycle import Lifecycle, RunInfo
from ..models.folder import state_sha256
from ..registry import get_registry
from ..results import jsonable
from ..rundir import AUDIT_FILE, check_writable_parent
from ..runtime import torch_threads
from .audit_record import audit_payload, write_audit_plots
from .eval_record import EvalModel, open_eval_model
from .study import (
    check_reference,
    check_study_request,
    reference_spec,
    results_folder,
    split_component_sets,
    study_run,
    study_shared,
    write_results,
)

#: DDIM steps of the audit's sampling: half of eval's 50, which the judge reads as well on ddpm-digits
#: (docs/audit.md, "Cost"), so that the default audit of a ddpm-digits run fits in minutes on 2 CPU cores
DEFAULT_AUDIT_STEPS = 25


def default_attacks(registry: Any) -> list[str]:
    """The attacks ``audit`` runs without ``--attacks``: those with ``Attack.default`` set, in registration
    order (built-ins first)."""
    return [name for name, info in registry.components["attack"].items() if info.cls.default]


@dataclass
class AuditRequest:
    """Everything ``unlearnctl audit`` was asked (see ``unlearnctl audit --help``)."""

    target: str
    #: ``--against``: a model retrained without the forget set, attacked as the role ``retrain``
    against: str | None = None
    #: ``--base``: the base model (default: the one the run's manifest names)
    base: str | None = None
    classes: str | None = None
    dataset: str | None = None
    data_dir: Path | None = None
    data_options: Sequence[str] = ()
    #: ``--attacks``: names (None: the default attacks)
    attacks: Sequence[str] | None = None
    #: ``--set ATTACK.KEY=VALUE``
    attack_sets: Sequence[str] = ()
    #: ``--config FILE``: a table per attack (``[relearn]`` ``k = [5, 10]``)
    config: Path | None = None
    judge: Path | None = None
    sampler: Sampler = "ddim"
    steps: int = DEFAULT_AUDIT_STEPS
    guidance: float = 2.0
    eta: float = 0.0
    seed: int = 0
    batch_size: int = 256
    device: str = "auto"
    threads: int | None = None
    out: Path | None = None
    plots: bool = True
    command: list[str] = field(default_factory=list)


@dataclass
class AuditModel:
    """An audited model, its role and where the choice of it came from."""

    role: Role
    model: EvalModel
    #: ``"target"``, ``"--base"``, ``"manifest weights.model"`` or ``"--against"``
    source: str


@dataclass
class PreparedAudit:
    request: AuditRequest
    registry: Any
    models: list[AuditModel]
    attacks: list[Attack]
    #: default attacks that do not apply to this model, and why
    left_out: dict[str, str]
    #: what every role shares: protocol, judge, data, forget set, records, cache
    shared: EvalShared
    contexts: dict[str, AuditContext]
    out_dir: Path | None
    notes: list[str]


@dataclass
class AuditResult:
    """What :func:`audit` returns: the ``audit.json`` payload and the files written."""

    payload: dict[str, Any]
    audit_path: Path | None
    plots: dict[str, Path]
    #: one-line notes for the user (a default attack left out, a base model that is not the run's...)
    notes: list[str]


# --- preparing: each step resolves one part of the request, cheapest first ------------------------------


def select_attacks(req: AuditRequest, registry: Any) -> tuple[list[Attack], bool]:
    """The attacks with their options (defaults < ``--config`` < ``--set ATTACK.KEY=VALUE``), and whether they
    were named (``--attacks``) rather than the defaults; an unknown name or option fails here."""
    named = req.attacks is not None
    names = [a.strip() for a in (req.attacks if req.attacks is not None else default_attacks(registry)) if a.strip()]
    if not names:
        raise UsageError(
            "--attacks is empty: name at least one attack (see `unlearnctl list attacks`)"
            if named
            else "no installed attack runs by default: name some with --attacks (see `unlearnctl list attacks`)"
        )
    for name in names:
        registry.get("attack", name)  # UnknownComponentError with "did you mean"
    names = list(dict.fromkeys(names))
    config = load_config_file(req.config) if req.config is not None else {}
    for name, section in config.items():
        registry.get("attack", name)
        if not isinstance(section, dict):
            raise UsageError(
                f"config file '{req.config}': [{name}] must be a table of the attack's options, got "
                f"{type(section).__name__} (see `unlearnctl show attack {name}`)"
            )
    sets = split_component_sets(req.attack_sets, names, "attack", "relearn.steps=50")
    attacks = []
    for name in names:
        cls = registry.get("attack", name).cls
        attacks.append(cls(resolve_options(cls, config=config.get(name), sets=sets.get(name, []))))
    return attacks, named


def output_folder(req: AuditRequest) -> Path | None:
    """Where ``audit.json`` and the plots go (:func:`~unlearnctl.commands.study.results_folder`). An existing
    ``audit.json`` is never replaced: refused before any work."""
    out_dir = results_folder(req.target, req.out)
    if out_dir is None:
        return None
    path = out_dir / AUDIT_FILE
    if path.exists():
        raise UsageError(
            f"'{path}' already exists: unlearnctl never overwrites an audit; move it away or choose another --out"
        )
    check_writable_parent(path, "--out")
    return out_dir


def open_models(req: AuditRequest, registry: Any) -> tuple[list[AuditModel], list[str]]:
    """The unlearned model, its base model (``--base``, else the one a ``forget`` run records) and the
    retrained reference (``--against``): each must make the same kind of images."""
    subject = open_eval_model(req.target, registry)
    models = [AuditModel("model", subject, "target")]
    notes: list[str] = []
    base_spec, base_source = reference_spec(req.base, subject, "--base")
    if base_spec is not None and base_source is not None:
        base = open_eval_model(base_spec, registry)
        notes += check_reference(
            req.target, subject, base, option="--base", explicit=bool(req.base), what="the base model"
        )
        models.append(AuditModel("base", base, base_source))
    if req.against:
        retrain = open_eval_model(req.against, registry)
        check_reference(req.target, subject, retrain, explicit=True, what="the retrain model")
        models.append(AuditModel("retrain", retrain, "--against"))
    return models, notes


def applicable_attacks(
    attacks: list[Attack], named: bool, conditional: bool, judge: Any, target: str, forgotten: bool = True
) -> tuple[list[Attack], dict[str, str]]:
    """The attacks that apply to the model: a named attack that does not is an error; a default one is
    left out, with the reason."""
    kept: list[Attack] = []
    left_out: dict[str, str] = {}
    for attack in attacks:
        reason, fix = None, ""
        if type(attack).conditional_only and not conditional:
            reason = f"attack '{attack.name}' needs a class-conditional model and '{target}' is unconditional"
            fix = ": choose other --attacks"
        elif type(attack).needs_judge and judge is None:
            reason = f"attack '{attack.name}' needs a judge classifier and the model names none"
            fix = ": pass --judge DIR (train one with `unlearnctl train-judge --dataset D --out DIR`)"
        elif type(attack).needs_forgotten_class and not forgotten:
            reason = (
                f"attack '{attack.name}' attacks a forgotten class and the forget set of '{target}' forgets no "
                "whole class"
            )
            fix = ": choose other --attacks, or pass --classes"
        if reason is None:
            kept.append(attack)
        elif named:
            raise UsageError(reason + fix)
        else:
            left_out[attack.name] = reason
    if not kept:
        raise UsageError(
            f"no default attack applies to '{target}' ({'; '.join(left_out.values())}): name some with --attacks"
        )
    return kept, left_out


def prepare_audit(request: AuditRequest, registry: Any = None) -> PreparedAudit:
    """Validate the request, load the models, the data and the judge, and call every attack's ``prepare``;
    writes nothing. The steps run cheapest first, so that a bad name or option fails before any model loads."""
    registry = registry or get_registry()
    req = request
    if launched():
        raise UsageError("audit runs in one process: run it without torchrun or accelerate launch")
    given_data_dir, device = check_study_request(req)
    attacks, named = select_attacks(req, registry)
    out_dir = output_folder(req)

    models, notes = open_models(req, registry)
    subject = models[0].model
    protocol = SamplingProtocol(
        sampler=req.sampler,
        steps=req.steps,
        eta=req.eta,
        guidance=req.guidance if subject.model.conditional else 0.0,
        seed=req.seed,
        batch_size=req.batch_size,
    )
    shared, class_notes = study_shared(
        req, registry, subject, [m.model for m in models[1:]], protocol, device, SINGLE, given_data_dir, command="audit"
    )
    notes += class_notes
    attacks, left_out = applicable_attacks(
        attacks, named, subject.model.conditional, shared.judge, req.target, bool(shared.forget_classes)
    )
    notes += [f"left out: {reason}" for reason in left_out.values()]
    contexts: dict[str, AuditContext] = {
        m.role: AuditContext(m.role, m.model.model, m.model.spec, shared) for m in models
    }
    for attack in attacks:
        # check settings and build expensive pieces before any attack runs (fail early); a no-op by default
        attack.prepare(contexts["model"])
    return PreparedAudit(req, registry, models, attacks, left_out, shared, contexts, out_dir, notes)


# --- running ----------------------------------------------------------------------------------------------


def run_audit(prepared: PreparedAudit) -> AuditResult:
    """Run every attack on every role, then write audit.json and the plots.

    Progress goes through the lifecycle hooks (a run of kind ``"audit"``, one step per attack and role):
    ``step_logged`` while an attack runs on a model (its ``ctx.progress`` values) and once it has finished
    (``seconds``), ``run_finished`` with the :class:`AuditResult`.
    """
    p = prepared
    start = time.perf_counter()
    shared = p.shared
    if shared.judge is not None:
        shared.judge.to(shared.device)
    for ctx in p.contexts.values():
        ctx.model.unet.to(shared.device).eval()
    hook = Lifecycle.of(p.registry)
    run = _audit_run(p, len(p.attacks) * len(p.contexts))
    hook.run_started(run=run)
    digests: dict[str, str] = {m.role: m.model.sha256 for m in p.models}
    results: dict[str, dict[str, Any]] = {role: {} for role in p.contexts}
    seconds: dict[str, dict[str, float]] = {role: {} for role in p.contexts}
    step = 0
    for attack in p.attacks:
        for role, ctx in p.contexts.items():
            step += 1

            def report(values: dict[str, float], _step: int = step) -> None:
                hook.step_logged(run=run, step=_step, values=values)

            ctx.on_progress = report
            t0 = time.perf_counter()
            try:
                results[role][attack.name] = jsonable(attack.run(ctx))
            finally:
                ctx.on_progress = None
            seconds[role][attack.name] = round(time.perf_counter() - t0, 3)
            if state_sha256(ctx.model.unet) != digests[role]:
                raise UnlearnError(
                    f"attack '{attack.name}' changed the {role} model it attacks: an attack must work on a copy "
                    "(copy.deepcopy(ctx.model.unet)), never on ctx.model itself"
                )
            hook.step_logged(run=run, step=step, values={"seconds": seconds[role][attack.name]})

    payload = audit_payload(p, results, seconds)
    audit_path = None
    plots: dict[str, Path] = {}
    if p.out_dir is not None:
        p.out_dir.mkdir(parents=True, exist_ok=True)
        if p.request.plots:
            plots = write_audit_plots(payload, p.out_dir)
        payload["files"] = {k: str(v.relative_to(p.out_dir)) for k, v in plots.items()}
        payload["wall_time_s"] = round(time.perf_counter() - start, 3)
        audit_path = write_results(p.out_dir, AUDIT_FILE, payload, list(plots.values()))
    else:
        payload["files"] = {}
        payload["wall_time_s"] = round(time.perf_counter() - start, 3)
    result = AuditResult(payload, audit_path, plots, p.notes)
    hook.run_finished(run=run, result=result)
    return result


def _audit_run(p: PreparedAudit, total_steps: int) -> RunInfo:
    """The lifecycle hooks' ``run`` of an audit (``out_dir``: where audit.json goes, or None)."""
    return study_run(
        "audit",
        p.models[0].model.spec,
        p.shared,
        p.out_dir,
        total_steps,
        p.request.seed,
        models={m.role: m.model.spec for m in p.models},
        attacks={a.name: a.options.model_dump(mode="json", by_alias=True) for a in p.attacks},
    )


def audit(request: AuditRequest, registry: Any = None) -> AuditResult:
    """``unlearnctl audit``: validate and load everything, then attack every model and write the results."""
    if request.threads is not None and request.threads < 1:
        raise UsageError("--threads must be at least 1")
    with torch_threads(request.threads):
        return run_audit(prepare_audit(request, registry))
