"""``unlearnctl audit RUN_OR_MODEL``: attack the unlearned model, its base model and a retrained reference."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from .common import (
    command_line,
    console,
    err_console,
    handle_errors,
    load_registry,
    print_data_warnings,
    print_json,
    print_warning,
)
from .eval_cmd import (
    ClassesOption,
    EtaOption,
    GuidanceOption,
    JudgeOption,
    SamplerOption,
    SamplerStepsOption,
    check_sampler,
)
from .options import (
    DataDirOption,
    DataOptions,
    DeviceOption,
    EvalFolderOption,
    JsonFlag,
    SeedOption,
    config_option,
    set_option,
    threads_option,
)
from .verify_cmd import NoVerifyFlag


def _reworded(option: Any, help_text: str) -> Any:
    """A shared option of :mod:`unlearnctl.cli.options` (its flags declared there, once) with this command's help."""
    info = copy.copy(option.__metadata__[0])
    info.help = help_text
    return Annotated[option.__origin__, info]


#: ``--out``: eval's flags, with what audit writes there
AuditFolderOption = _reworded(
    EvalFolderOption,
    "Folder for audit.json and the plots (default: the run folder; a model that is not a run folder writes "
    "nothing); an existing audit.json is never overwritten.",
)
#: must equal ``unlearnctl.commands.audit.DEFAULT_AUDIT_STEPS`` (kept here so --help needs no torch import)
DEFAULT_AUDIT_STEPS = 25
#: the roles' column titles, in order
ROLE_TITLES = {"model": "unlearned", "base": "base", "retrain": "retrain"}

#: table rows of the built-in attacks: (key, label) in order; other numeric top-level keys follow
HEADLINES: dict[str, list[tuple[str, str]]] = {
    **{
        name: [
            ("auc", "AUC (0.5 = unseen)"),
            ("balanced_accuracy", "best balanced accuracy"),
            ("tpr_at_fpr_0.01", "TPR at 1% FPR"),
            ("tpr_at_fpr_0.001", "TPR at 0.1% FPR"),
            ("members", "members / non-members"),
        ]
        for name in ("membership-loss", "membership-pia", "membership-secmi")
    },
    "relearn": [
        ("rate_before", "forgotten-class rate before"),
        ("rate_k5", "after fine-tuning on 5 forget images"),
        ("rate_k10", "after 10 forget images"),
        ("rate_k50", "after 50 forget images"),
        ("rate_benign", "after remaining data only (benign)"),
    ],
    "embedding": [
        ("success_rate", "judged forgotten, learned embedding"),
        ("label_rate", "judged forgotten, the label itself"),
    ],
    "seed-search": [
        ("rate_label", "share of seeds, under the label"),
        ("first_hit_label", "first hit (draw), under the label"),
        ("rate_unconditional", "share of seeds, unconditional"),
        ("first_hit_unconditional", "first hit (draw), unconditional"),
    ],
    "null-leakage": [
        ("null_rate", "null-label samples judged forgotten"),
        ("chance_rate", "an even share of the classes"),
        ("unguided_rate", "the label at w = 0 judged forgotten"),
    ],
}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _fmt(value: Any, ci: Any = None, other: Any = None) -> str:
    if value is None:
        return "-"
    if not _number(value):
        return escape(str(value))
    text = str(value) if isinstance(value, int) else f"{value:.3f}"
    if isinstance(ci, list) and len(ci) == 2 and all(_number(v) for v in ci):
        text += f" [{ci[0]:.2f}, {ci[1]:.2f}]"
    if other is not None:
        text += f" / {other}"
    return text


def table_rows(payload: dict[str, Any]) -> list[tuple[str, str, dict[str, str]]]:
    """(attack, label, role -> formatted value) for every headline number of every attack."""
    results = payload.get("results", {})
    roles = [r for r in ROLE_TITLES if r in results]
    rows = []
    for attack in payload.get("attacks", []):
        model = results.get("model", {}).get(attack)
        if not isinstance(model, dict):
            continue
        if "skipped" in model:
            rows.append((attack, f"skipped: {model['skipped']}", {}))
            continue
        known = HEADLINES.get(attack)
        keys = known or [(k, k) for k, v in model.items() if _number(v) and not k.endswith("_ci")]
        for key, label in keys:
            if key not in model:
                continue
            cells = {}
            for role in roles:
                result = results[role].get(attack)
                if isinstance(result, dict):
                    other = result.get("nonmembers") if key == "members" else None
                    cells[role] = _fmt(result.get(key), result.get(f"{key}_ci"), other)
            rows.append((attack, label, cells))
    return rows


def render(payload: dict[str, Any]) -> Table:
    proto = payload["protocol"]
    models = payload["models"]
    roles = [r for r in ROLE_TITLES if r in payload.get("results", {})]
    title = f"audit of {escape(models['model']['spec'])} - forgotten classes {proto['forget_classes']}"
    table = Table(title=title, title_justify="left")
    table.add_column("attack")
    table.add_column("")
    for role in roles:
        table.add_column(ROLE_TITLES[role], justify="right")
    last = None
    for attack, label, cells in table_rows(payload):
        name = attack if attack != last else ""
        last = attack
        table.add_row(escape(name), escape(label), *(cells.get(r, "") for r in roles))
    return table


def protocol_line(payload: dict[str, Any]) -> str:
    p = payload["protocol"]
    sets = p.get("sets") or {}
    parts = [
        f"{p['sampler']} {p['steps']} steps, eta {p['eta']}, guidance {p['guidance']}, seed {p['seed']}",
        f"device {p['device']}" + (f", CPU threads {p['cpu_threads']}" if p["device"] == "cpu" else ""),
    ]
    if "members" in sets and "nonmembers" in sets:
        parts.append(
            f"members: {sets['members']['what']} ({sets['members']['available']}); non-members: "
            f"{sets['nonmembers']['what']} ({sets['nonmembers']['available']})"
        )
    parts.append("models: " + ", ".join(f"{ROLE_TITLES[r]} {m['spec']}" for r, m in payload["models"].items()))
    return "; ".join(parts)


def cost_line(payload: dict[str, Any]) -> str:
    per_attack: dict[str, float] = {}
    for role_seconds in payload.get("seconds", {}).values():
        for attack, s in role_seconds.items():
            per_attack[attack] = per_attack.get(attack, 0.0) + s
    parts = [f"{attack} {s:.1f} s" for attack, s in per_attack.items()]
    return "time per attack (all models): " + ", ".join(parts) + f"; total {payload['wall_time_s']:.1f} s"


def register(app: typer.Typer) -> None:
    """Add ``audit`` to the ``unlearnctl`` app."""

    @app.command("audit")
    @handle_errors
    def audit_command(
        ctx: typer.Context,
        target: Annotated[
            str,
            typer.Argument(
                metavar="RUN_OR_MODEL",
                help="A run folder (its unlearned model, attacked next to the base model in its manifest), "
                "or a model: registered name or diffusers folder (then pass --classes).",
                show_default=False,
            ),
        ],
        against: Annotated[
            str | None,
            typer.Option(
                "--against",
                help="A model retrained without the forget set (`unlearnctl train --forget ...`): attacked too, "
                "as the gold standard the results are read against.",
                show_default=False,
            ),
        ] = None,
        base: Annotated[
            str | None,
            typer.Option(
                "--base", help="The base model (default: the one the run's manifest names).", show_default=False
            ),
        ] = None,
        attacks: Annotated[
            str | None,
            typer.Option(
                "--attacks",
                help="Comma-separated attack names (see `unlearnctl list attacks`). Default: the attacks marked "
                "default that apply to the model (built-in: all seven).",
                show_default=False,
            ),
        ] = None,
        sets: Annotated[list[str] | None, set_option("Attack option ATTACK.KEY=VALUE, e.g. relearn.steps=100")] = None,
        config: Annotated[
            Path | None, config_option("Attack options, one table per attack name (relearn: k = [5, 10], steps = 100)")
        ] = None,
        classes: ClassesOption = None,
        dataset: Annotated[
            str | None,
            typer.Option(
                "--dataset",
                help="Dataset of the forget set and the held-out images (default: the run's, or the model's).",
                show_default=False,
            ),
        ] = None,
        data_dir: DataDirOption = None,
        data_options: DataOptions = None,
        judge: JudgeOption = None,
        sampler: SamplerOption = "ddim",
        steps: SamplerStepsOption = DEFAULT_AUDIT_STEPS,
        guidance: GuidanceOption = 2.0,
        eta: EtaOption = 0.0,
        batch_size: Annotated[int, typer.Option("--batch-size", help="Images per forward pass when sampling.")] = 256,
        seed: SeedOption = 0,
        device: DeviceOption = "auto",
        threads: Annotated[int | None, threads_option("torch's: OMP_NUM_THREADS or the core count")] = None,
        out: AuditFolderOption = None,
        plots: Annotated[
            bool, typer.Option("--plots/--no-plots", help="Write the PNG plots next to audit.json.")
        ] = True,
        no_verify: NoVerifyFlag = False,
        json_output: JsonFlag = False,
    ) -> None:
        """Attack a model the way an adversary would: membership inference, relearning, a learned class
        embedding, seed search, null-class leakage.

        Every attack runs on the unlearned model, its base model and (--against) a retrained reference, side
        by side under the same seeds. Writes audit.json (every protocol knob, every result per model) and
        plots (audit-*.png) into the run folder. See docs/audit.md.
        """
        from ..commands.audit import AuditRequest, audit
        from .progress import attach_progress

        check_sampler(sampler)
        registry = load_registry()
        request = AuditRequest(
            target=target,
            against=against,
            base=base,
            classes=classes,
            dataset=dataset,
            data_dir=data_dir,
            data_options=list(data_options or []),
            attacks=attacks.split(",") if attacks is not None else None,
            attack_sets=list(sets or []),
            config=config,
            judge=judge,
            sampler=sampler,  # type: ignore[arg-type]
            steps=steps,
            guidance=guidance,
            eta=eta,
            seed=seed,
            batch_size=batch_size,
            device=device,
            threads=threads,
            out=out,
            plots=plots,
            command=command_line(ctx),
        )
        with attach_progress(registry, err_console if json_output else console):
            result = audit(request, registry)
        print_data_warnings((result.payload["protocol"].get("dataset") or {}).get("warnings"))
        for note in result.notes:
            print_warning(note)
        if json_output:
            print_json(result.payload)
            return
        payload = result.payload
        console.print(render(payload))
        console.print(f"[dim]{escape(protocol_line(payload))}[/]")
        console.print(f"[dim]{escape(cost_line(payload))}[/]")
        if result.audit_path is not None:
            console.print(f"wrote {escape(str(result.audit_path))}")
            for path in result.plots.values():
                console.print(f"wrote {escape(str(path))}")
        else:
            console.print("[dim]nothing written: pass --out DIR to keep audit.json and the plots[/]")
