"""``unlearnctl train``: train a DDPM from scratch and write a run folder."""

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
    PrecisionOption,
    PrintConfigFlag,
    ResumeOption,
    SeedOption,
    command_config_option,
    run_out_option,
    set_option,
)
from .runs_cmd import is_main_process, only_resume, print_stale_runs


def register(app: typer.Typer) -> None:
    """Add ``train`` to the ``unlearnctl`` app."""

    @app.command("train")
    @handle_errors
    def train_command(
        ctx: typer.Context,
        dataset: Annotated[
            str | None,
            typer.Option(
                "--dataset",
                "-d",
                help="Dataset to train on (`unlearnctl list datasets`); required (here or in the --config file).",
                show_default=False,
            ),
        ] = None,
        out: Annotated[Path | None, run_out_option("runs/<UTC time>-train-<dataset>/")] = None,
        classes: Annotated[
            str | None,
            typer.Option("--classes", "-c", help="Leave these classes out, e.g. 2,5 (the retrain gold standard)."),
        ] = None,
        forget: Annotated[
            list[str] | None,
            typer.Option("--forget", "-f", help="SELECTOR:ARGS to leave out of training; repeatable (union)."),
        ] = None,
        steps: Annotated[int | None, typer.Option("--steps", help="Optimizer steps (the `steps` option).")] = None,
        sets: Annotated[list[str] | None, set_option("Training option KEY=VALUE (see docs/digits.md)")] = None,
        config: Annotated[
            Path | None,
            command_config_option(
                "\\[train] (these options) and \\[training] (the training options), or the latter alone"
            ),
        ] = None,
        seed: SeedOption = 0,
        device: DeviceOption = "auto",
        precision: PrecisionOption = None,
        channels_last: ChannelsLastFlag = False,
        compile: CompileFlag = False,
        data_dir: DataDirOption = None,
        data_options: DataOptions = None,
        checkpoint_every: CheckpointEveryOption = 500,
        keep_checkpoints: KeepCheckpointsFlag = False,
        resume: ResumeOption = None,
        json_output: JsonFlag = False,
        print_config: PrintConfigFlag = False,
        config_format: ConfigFormatOption = "toml",
    ) -> None:
        """Train a class-conditional DDPM from scratch; write a run folder (model/, samples/, log.jsonl, manifest.json).

        With --classes/--forget the model sees only the remaining set. Example:
        unlearnctl train --dataset digits --out runs/digits --steps 6000
        """
        from ..commands.train import TrainRequest, prepare_train, resume_train, train_config, train_prepared
        from .progress import attach_progress

        fmt = checked_config_format(ctx, print_config, config_format)
        registry = load_registry()
        if resume is not None:
            only_resume(ctx, "train")
            with attach_progress(registry, err_console if json_output else console):
                result = resume_train(resume, registry)
            _print_result(result, json_output)
            return
        request = TrainRequest(
            dataset=dataset or "",
            out=out,
            forget=list(forget or []),
            classes=classes,
            sets=list(sets or []),
            config=config,
            steps=steps,
            seed=seed,
            device=device,
            data_dir=data_dir,
            data_options=list(data_options or []),
            on_data_warning=print_data_warnings,
            command=command_line(ctx),
            checkpoint_every=checkpoint_every,
            keep_checkpoints=keep_checkpoints,
            precision=precision,
            channels_last=channels_last,
            compile=compile,
            given=given_params(ctx),
        )
        prepared = prepare_train(request, registry)  # every check; nothing written yet
        main = is_main_process()
        for note in prepared.notes if main else []:
            print_warning(note)
        if fmt is not None:
            if main:
                print_config_text(train_config(prepared).render(fmt))
            return
        print_stale_runs(prepared.out.parent)
        with attach_progress(registry, err_console if json_output else console):
            result = train_prepared(prepared, registry)
        _print_result(result, json_output)


def _print_result(result: Any, json_output: bool) -> None:
    """The summary of a finished ``train`` (main process only)."""
    if not is_main_process():
        return
    m = result.manifest
    if json_output:
        print_json({"run_dir": str(result.run_dir), "manifest": m.model_dump(mode="json")})
        return
    table = Table(title="trained", show_header=False, title_justify="left", box=None, padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("run folder", str(result.run_dir))
    table.add_row("dataset", f"{m.dataset.name}: {m.extra.get('train_images')} of {m.dataset.size} images")
    if m.forget is not None:
        left_out = ", ".join(f"{s.name}:{s.argument}" for s in m.forget.selectors)
        table.add_row("left out", f"{m.forget.size} images ({left_out})")
    table.add_row("steps", f"{m.optimizer_steps} in {m.wall_time_s:.1f} s on {m.environment.device}")
    table.add_row("final", "  ".join(f"{k}={v:.4g}" for k, v in m.final_losses.items()))
    table.add_row("model", f"{result.run_dir / 'model'} (EMA weights)")
    console.print(table)
