"""``unlearnctl eval RUN_OR_MODEL``: forgetting and utility metrics, before vs. after, side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from .common import (
    checked_config_format,
    command_line,
    console,
    err_console,
    given_params,
    handle_errors,
    load_registry,
    print_config_text,
    print_data_warnings,
    print_json,
    print_warning,
)
from .options import (
    ChannelsLastFlag,
    CompileFlag,
    ConfigFormatOption,
    DataDirOption,
    DataOptions,
    DeviceOption,
    EvalFolderOption,
    JsonFlag,
    PrintConfigFlag,
    SeedOption,
    command_config_option,
    set_option,
    threads_option,
)
from .verify_cmd import NoVerifyFlag

# --- the options eval shares with audit (the model studied, what it forgot, the judge, the sampling) ---------

#: ``classes: ClassesOption = None``
ClassesOption = Annotated[
    str | None,
    typer.Option(
        "--classes", help="Forgotten class ids, e.g. 2,5 (default: the run's forgotten classes).", show_default=False
    ),
]
#: ``judge: JudgeOption = None``
JudgeOption = Annotated[
    Path | None,
    typer.Option("--judge", help="Judge folder (default: the one the model names).", show_default=False),
]
#: ``sampler: SamplerOption = "ddim"``
SamplerOption = Annotated[str, typer.Option("--sampler", help="ddim or ddpm.")]
#: ``steps: SamplerStepsOption = N``
SamplerStepsOption = Annotated[int, typer.Option("--steps", help="Sampler steps.")]
#: ``guidance: GuidanceOption = 2.0``
GuidanceOption = Annotated[float, typer.Option("--guidance", help="Classifier-free guidance w.")]
#: ``eta: EtaOption = 0.0``
EtaOption = Annotated[float, typer.Option("--eta", help="DDIM eta (0 deterministic, 1 ancestral-like).")]


def check_sampler(sampler: str) -> None:
    """``--sampler`` names one of diffusion's samplers (checked here: --help needs no torch import)."""
    if sampler not in ("ddim", "ddpm"):
        from ..errors import UsageError

        raise UsageError(f"--sampler '{sampler}': use ddim or ddpm")


#: must equal ``unlearnctl.contexts.study.DEFAULT_SAMPLES_PER_CLASS`` (kept here so --help needs no torch import)
DEFAULT_SAMPLES_PER_CLASS = 50
#: ``num_samples: NumSamplesOption = None`` (eval and noise-floor: the same protocol)
NumSamplesOption = Annotated[
    int | None,
    typer.Option(
        "--num-samples",
        "-n",
        help="Samples per class (unconditional models: times the number of classes). "
        f"Default {DEFAULT_SAMPLES_PER_CLASS}.",
        show_default=False,
    ),
]
#: ``dataset: RealDatasetOption = None``
RealDatasetOption = Annotated[
    str | None,
    typer.Option("--dataset", help="Dataset of real images (default: the run's, or the model's).", show_default=False),
]
#: ``batch_size: SampleBatchOption = 256``
SampleBatchOption = Annotated[
    int,
    typer.Option(
        "--batch-size",
        help="Images per forward pass when sampling; under a launcher, the unit of work each process takes "
        "(docs/scaling.md).",
    ),
]

#: table rows: (metric, key) in order, with a readable label; other numeric top-level keys follow
HEADLINES: dict[str, list[tuple[str, str]]] = {
    "forgetting": [
        ("recognition_rate", "forgotten classes recognised"),
        ("ua", "UA (1 - recognised)"),
        ("mean_p_forgotten", "mean p(forgotten class)"),
        ("mean_entropy", "mean predictive entropy (nats)"),
    ],
    "kept": [
        ("mean_rate", "kept classes recognised (mean)"),
        ("min_rate", "kept classes recognised (worst)"),
        ("share", "samples assigned to kept classes"),
    ],
    "fidelity": [
        ("fid", "FID, kept classes"),
        ("kid_mean", "KID, kept classes"),
        ("precision", "precision"),
        ("recall", "recall"),
    ],
    "membership": [
        ("auc", "membership-inference AUC (0.5 = unseen)"),
        ("tpr_at_fpr", "MIA true-positive rate at low FPR"),
    ],
    "retrain-distance": [
        ("fid", "FID to the retrained model, kept classes"),
        ("recognition_gap", "recognition gap to retrained (all classes)"),
        ("kept_gap", "recognition gap, kept classes"),
        ("forgotten_gap", "recognition gap, forgotten classes"),
    ],
}


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return escape(str(value))
    if isinstance(value, int):
        return str(value)
    return f"{value:.3f}" if abs(value) < 1000 else f"{value:.4g}"


def _fmt_delta(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:+.3f}" if abs(value) < 1000 else f"{value:+.4g}"


def table_rows(payload: dict[str, Any]) -> list[tuple[str, str, Any, Any, Any]]:
    """(metric, label, reference value, model value, delta) for every headline number."""
    results = payload.get("results", {})
    model = results.get("model", {})
    reference = results.get("reference", {})
    delta = payload.get("delta", {})
    rows = []
    for metric, values in model.items():
        if not isinstance(values, dict):
            continue
        if "skipped" in values:
            rows.append((metric, f"skipped: {values['skipped']}", None, None, None))
            continue
        known = HEADLINES.get(metric)
        keys = known or [(k, k) for k, v in values.items() if isinstance(v, int | float) and not isinstance(v, bool)]
        for key, label in keys:
            if key not in values:
                continue
            ref = reference.get(metric, {}).get(key) if isinstance(reference.get(metric), dict) else None
            rows.append((metric, label, ref, values[key], delta.get(f"{metric}.{key}")))
    return rows


def render(payload: dict[str, Any]) -> Table:
    has_ref = payload.get("reference") is not None
    proto = payload["protocol"]
    title = (
        f"{escape(payload['model']['spec'])}"
        + (f" vs. {escape(payload['reference']['spec'])}" if has_ref else "")
        + f" - forgotten classes {proto['forget_classes']}"
    )
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    table.add_column("")
    if has_ref:
        table.add_column("base (reference)", justify="right")
    table.add_column("unlearned" if has_ref else "model", justify="right")
    if has_ref:
        table.add_column("delta", justify="right")
    last = None
    for metric, label, ref, value, delta in table_rows(payload):
        name = metric if metric != last else ""
        last = metric
        if has_ref:
            table.add_row(name, label, _fmt(ref), _fmt(value), _fmt_delta(delta))
        else:
            table.add_row(name, label, _fmt(value))
    return table


def protocol_line(payload: dict[str, Any]) -> str:
    p = payload["protocol"]
    fe = p.get("feature_extractor") or {}
    parts = [
        f"{p['sampler']} {p['steps']} steps, eta {p['eta']}, guidance {p['guidance']}",
        f"{p['samples_per_class']} samples/class, seed {p['seed']}",
        f"device {p['device']}"
        + (f", CPU threads {p['cpu_threads']}" if p["device"] == "cpu" else "")
        + (f", {p['processes']} processes" if p.get("processes", 1) > 1 else ""),
        f"weights: {payload['model']['weights']}"
        + (f" vs. {payload['reference']['weights']}" if payload.get("reference") else ""),
    ]
    retrain = payload.get("retrain")
    if retrain:
        parts.append(f"retrained (gold standard): {retrain['spec']}")
    if fe:
        parts.append(f"FID features: {fe.get('kind')}")
    ref_set = p.get("reference_set")
    if ref_set:
        parts.append(
            f"real set: {ref_set['dataset']}/{ref_set['split']} classes {ref_set['classes']} ({ref_set['size']})"
        )
    return "; ".join(parts)


def cost_line(payload: dict[str, Any]) -> str:
    parts = []
    for role, cost in payload.get("sampling", {}).items():
        name = "unlearned" if role == "model" and payload.get("reference") else role
        parts.append(
            f"{name}: {cost['images']} images in {cost['seconds']:.1f} s "
            f"({cost['unet_forward_calls']} UNet calls, {cost['unet_image_evaluations']} image evaluations)"
        )
    return "sampling " + "; ".join(parts) + f"; total {payload['wall_time_s']:.1f} s"


def register(app: typer.Typer) -> None:
    """Add ``eval`` to the ``unlearnctl`` app."""

    @app.command("eval")
    @handle_errors
    def eval_command(
        ctx: typer.Context,
        target: Annotated[
            str | None,
            typer.Argument(
                metavar="RUN_OR_MODEL",
                help="A run folder (its unlearned model, evaluated against the base model in its manifest), "
                "or a model: registered name or diffusers folder (then pass --classes). Required, here or as "
                "`target` in the --config file.",
                show_default=False,
            ),
        ] = None,
        against: Annotated[
            str | None,
            typer.Option(
                "--against", help="Reference model to compare with (default: the run's base model).", show_default=False
            ),
        ] = None,
        retrain: Annotated[
            str | None,
            typer.Option(
                "--retrain",
                help="The gold standard: a model retrained without the forget set (a `forget --method retrain` "
                "run folder, or a model). Adds the retrain-distance metric (unless --metrics is given): how far "
                "the model and its reference land from it, sampled with the same noise (docs/eval.md).",
                show_default=False,
            ),
        ] = None,
        num_samples: NumSamplesOption = None,
        metrics: Annotated[
            str | None,
            typer.Option(
                "--metrics",
                help="Comma-separated metric names (see `unlearnctl list metrics`). "
                "Default: the metrics marked default (built-in: forgetting,kept,fidelity,membership), "
                "plus retrain-distance with --retrain.",
                show_default=False,
            ),
        ] = None,
        classes: ClassesOption = None,
        dataset: RealDatasetOption = None,
        data_dir: DataDirOption = None,
        data_options: DataOptions = None,
        judge: JudgeOption = None,
        sampler: SamplerOption = "ddim",
        steps: SamplerStepsOption = 50,
        guidance: GuidanceOption = 2.0,
        eta: EtaOption = 0.0,
        batch_size: SampleBatchOption = 256,
        seed: SeedOption = 0,
        device: DeviceOption = "auto",
        channels_last: ChannelsLastFlag = False,
        compile: CompileFlag = False,
        threads: Annotated[int | None, threads_option("torch's: OMP_NUM_THREADS or the core count")] = None,
        sets: Annotated[
            list[str] | None, set_option("Metric option METRIC.KEY=VALUE, e.g. fidelity.kid_subsets=50")
        ] = None,
        config: Annotated[
            Path | None, command_config_option("\\[eval] (these options) and \\[metrics.NAME] (each metric's options)")
        ] = None,
        out: EvalFolderOption = None,
        overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing metrics.json.")] = False,
        save_samples: Annotated[
            bool,
            typer.Option(
                "--save-samples",
                help="Keep the exact images FID/KID were computed on (samples/eval-fidelity/<role>/ and real/, "
                "PNG) and record the torch-fidelity call that re-scores them (docs/eval.md).",
            ),
        ] = False,
        sample_cache: Annotated[
            Path | None,
            typer.Option(
                "--sample-cache",
                help="Keep each draw of samples in this folder (safetensors) and read it back when every input "
                "matches (weights, protocol, seed, device, threads, versions): a study's cells sample their base "
                "and retrain models once (docs/eval.md).",
                show_default=False,
            ),
        ] = None,
        no_verify: NoVerifyFlag = False,
        json_output: JsonFlag = False,
        print_config: PrintConfigFlag = False,
        config_format: ConfigFormatOption = "toml",
    ) -> None:
        """Forgetting and utility metrics of a model and its reference, side by side, under one protocol.

        Writes metrics.json (every protocol knob, the sampling cost, all values) and before/after sample
        grids (samples/eval-*.png) into the run folder. Under `torchrun` or `accelerate launch` the sampling
        is shared among the processes and the numbers are the same as with one process (docs/scaling.md).
        """
        from ..commands.eval import EvalRequest, eval_config, evaluate, prepare_eval
        from ..distributed import main_process_env
        from .progress import attach_progress

        fmt = checked_config_format(ctx, print_config, config_format)
        check_sampler(sampler)
        registry = load_registry()
        given = given_params(ctx)
        if "sets" in given:
            given.append("metric_sets")
        request = EvalRequest(
            target=target or "",
            against=against,
            retrain=retrain,
            classes=classes,
            dataset=dataset,
            data_dir=data_dir,
            data_options=list(data_options or []),
            metrics=metrics.split(",") if metrics is not None else None,
            metric_sets=list(sets or []),
            judge=judge,
            num_samples=num_samples or DEFAULT_SAMPLES_PER_CLASS,
            sampler=sampler,  # type: ignore[arg-type]
            steps=steps,
            guidance=guidance,
            eta=eta,
            seed=seed,
            batch_size=batch_size,
            channels_last=channels_last,
            compile=compile,
            device=device,
            threads=threads,
            out=out,
            overwrite=overwrite,
            save_samples=save_samples,
            sample_cache=sample_cache,
            command=command_line(ctx),
            config=config,
            given=given,
        )
        if fmt is not None:
            prepared = prepare_eval(request, registry)
            if main_process_env():
                for note in prepared.notes:
                    print_warning(note)
                print_config_text(eval_config(prepared).render(fmt))
            return
        if not main_process_env():  # another process of a launched run: it samples its share, the main one reports
            evaluate(request, registry)
            return
        with attach_progress(registry, err_console if json_output else console):
            result = evaluate(request, registry)
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
        fe = payload["protocol"].get("feature_extractor") or {}
        if fe.get("kind") == "inception":
            console.print(
                f"Inception weights {escape(str(fe.get('source')))}: sha256 {fe.get('sha256')} "
                "(a pickle: pin it with --set fidelity.inception_sha256=...)"
            )
        if result.metrics_path is not None:
            console.print(f"wrote {escape(str(result.metrics_path))}")
            for path in result.grids.values():
                console.print(f"wrote {escape(str(path))}")
            for metric, roles in (payload.get("saved_samples") or {}).items():
                for role, saved in roles.items():
                    one, two = saved["input1"], saved["input2"]
                    console.print(
                        f"saved the {metric} images of the {role}: {escape(one['folder'])} ({one['count']}) "
                        f"vs {escape(two['folder'])} ({two['count']})"
                    )
        else:
            console.print("[dim]nothing written: pass --out DIR to keep metrics.json and the grids[/]")
