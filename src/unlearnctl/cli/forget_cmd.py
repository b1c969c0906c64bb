"""``unlearnctl forget``: run an unlearning method and write a run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
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
    CheckpointEveryOption,
    CompileFlag,
    ConfigFormatOption,
    DataDirOption,
    DataOptions,
    DeviceOption,
    JsonFlag,
    KeepCheckpointsFlag,
    ModelOption,
    PrecisionOption,
    PrintConfigFlag,
    ResumeOption,
    SeedOption,
    command_config_option,
    run_out_option,
    set_option,
    threads_option,
)
from .runs_cmd import is_main_process, only_resume, print_stale_runs
from .verify_cmd import NoVerifyFlag


def _summary_rows(result: Any) -> list[tuple[str, str]]:
    m = result.manifest
    forget = m.forget
    selectors = ", ".join(f"{s.name}:{s.argument}" if s.argument else s.name for s in forget.selectors)
    losses = "  ".join(f"{k}={v:.4g}" for k, v in m.final_losses.items())
    rows = [
        ("run folder", str(result.run_dir)),
        ("method", m.method.name if m.method else "-"),
        ("model", m.weights.model),
        ("dataset", f"{m.dataset.name} ({m.dataset.size} images)"),
        ("forgot", f"{selectors}: {forget.size} images; {forget.remain_size} remain"),
        ("steps", f"{m.optimizer_steps} optimizer steps in {m.wall_time_s:.1f} s on {m.environment.device}"),
        ("final", losses or "-"),
        ("weights", f"{m.weights.saved_weights}, sha256 {(m.weights.output_sha256 or '')[:16]}..."),
    ]
    if m.samples is not None:
        rows.append(("samples", ", ".join(m.samples.files.values())))
    return rows


def print_run_summary(result: Any, title: str) -> None:
    table = Table(title=title, show_header=False, title_justify="left", box=None, padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in _summary_rows(result):
        table.add_row(key, value)
    console.print(table)


def run_json(result: Any) -> dict[str, Any]:
    return {"run_dir": str(result.run_dir), "manifest": result.manifest.model_dump(mode="json")}


def finish_run(result: Any, json_output: bool, title: str) -> None:
    """The summary of a finished ``forget``/``train``/``replay`` (main process only)."""
    if not is_main_process():
        return
    if json_output:
        print_json(run_json(result))
    else:
        print_run_summary(result, title)


def register(app: typer.Typer) -> None:
    """Add ``forget`` to the ``unlearnctl`` app."""

    @app.command("forget")
    @handle_errors
    def forget_command(
        ctx: typer.Context,
        model: ModelOption = "ddpm-digits",
        dataset: Annotated[
            str | None, typer.Option("--dataset", "-d", help="Dataset (default: the one the model was trained on).")
        ] = None,
        data_dir: DataDirOption = None,
        data_options: DataOptions = None,
        classes: Annotated[
            str | None, typer.Option("--classes", "-c", help="Classes to forget, e.g. 2,5 (the `classes` selector).")
        ] = None,
        forget: Annotated[
            list[str] | None,
            typer.Option("--forget", "-f", help="SELECTOR:ARGS choosing what to forget; repeatable (union)."),
        ] = None,
        method: Annotated[str, typer.Option("--method", help="Unlearning method (`unlearnctl list methods`).")] = (
            "erasediff"
        ),
        sets: Annotated[list[str] | None, set_option("Method option KEY=VALUE (`unlearnctl show method NAME`)")] = None,
        config: Annotated[
            Path | None,
            command_config_option("\\[forget] (these options) and \\[method] (the method's), or the method's alone"),
        ] = None,
        out: Annotated[Path | None, run_out_option("runs/<UTC time>-<method>-<model>/")] = None,
        seed: SeedOption = 0,
        steps: Annotated[int | None, typer.Option("--steps", help="Override the method's number of steps.")] = None,
        device: DeviceOption = "auto",
        precision: PrecisionOption = None,
        channels_last: ChannelsLastFlag = False,
        compile: CompileFlag = False,
        grid_per_class: Annotated[
            int,
            typer.Option(
                "--grid-per-class", min=0, help="Images per class in the before/after grids (0: none; at most 64)."
            ),
        ] = 8,
        threads: Annotated[int | None, threads_option("1 on cpu, torch's default on a GPU")] = None,
        checkpoint_every: CheckpointEveryOption = 50,
        keep_checkpoints: KeepCheckpointsFlag = False,
        resume: ResumeOption = None,
        no_verify: NoVerifyFlag = False,
        json_output: JsonFlag = False,
        print_config: PrintConfigFlag = False,
        config_format: ConfigFormatOption = "toml",
    ) -> None:
        """Unlearn a forget set from a diffusion model; write a run folder (model/, samples/, log.jsonl, manifest.json).

        Example: unlearnctl forget --classes 2 (--print-config > run.toml, then --config run.toml, reruns it)
        """
        from ..commands.forget import ForgetRequest, prepare_forget, resume_forget, run_forget
        from ..commands.forget_config import forget_config
        from .progress import attach_progress

        fmt = checked_config_format(ctx, print_config, config_format)
        registry = load_registry()
        if resume is not None:
            only_resume(ctx, "forget")
            prepared = resume_forget(resume, registry)
            with attach_progress(registry, err_console if json_output else console):
                result = run_forget(prepared)
            finish_run(result, json_output, "forget: done")
            return
        request = ForgetRequest(
            model=model,
            dataset=dataset,
            data_dir=data_dir,
            data_options=list(data_options or []),
            classes=classes,
            forget=list(forget or []),
            method=method,
            sets=list(sets or []),
            config=config,
            out=out,
            seed=seed,
            steps=steps,
            device=device,
            precision=precision,
            channels_last=channels_last,
            compile=compile,
            grid_per_class=grid_per_class,
            threads=threads,
            checkpoint_every=checkpoint_every,
            keep_checkpoints=keep_checkpoints,
            command=command_line(ctx),
            given=given_params(ctx),
        )
        prepared = prepare_forget(request, registry)  # every check; nothing written yet
        if prepared.world.is_main:
            print_data_warnings(prepared.dataset.warnings)
            for note in prepared.notes:
                print_warning(note)
        if fmt is not None:
            if prepared.world.is_main:
                print_config_text(forget_config(prepared).render(fmt))
            return
        if prepared.world.is_main:
            print_stale_runs(prepared.out.parent)
        with attach_progress(registry, err_console if json_output else console):
            result = run_forget(prepared)
        finish_run(result, json_output, "forget: done")
