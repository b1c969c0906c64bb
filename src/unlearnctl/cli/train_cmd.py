"""``unlearnctl train``: train a DDPM from scratch and write a run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from .common import (
    DataOptions,
    JsonFlag,
    console,
    err_console,
    handle_errors,
    load_registry,
    print_data_warnings,
    print_json,
)


def register(app: typer.Typer) -> None:
    """Add ``train`` to the ``unlearnctl`` app."""

    @app.command("train")
    @handle_errors
    def train_command(
        dataset: Annotated[
            str, typer.Option("--dataset", "-d", help="Dataset to train on (`unlearnctl list datasets`).")
        ],
        out: Annotated[
            Path | None,
            typer.Option("--out", "-o", help="Run folder to create [default: runs/<UTC time>-train-<dataset>/]."),
        ] = None,
        classes: Annotated[
            str | None,
            typer.Option("--classes", "-c", help="Leave these classes out, e.g. 2,5 (the retrain gold standard)."),
        ] = None,
        forget: Annotated[
            list[str] | None,
            typer.Option("--forget", "-f", help="SELECTOR:ARGS to leave out of training; repeatable (union)."),
        ] = None,
        steps: Annotated[int | None, typer.Option("--steps", help="Optimizer steps (the `steps` option).")] = None,
        sets: Annotated[
            list[str] | None,
            typer.Option("--set", "-s", help="Training option key=value (see docs/digits.md); repeatable."),
        ] = None,
        config: Annotated[
            Path | None, typer.Option("--config", help="Training options from a .toml/.yaml/.json file.")
        ] = None,
        seed: Annotated[int, typer.Option("--seed", help="Seed of the initial weights and every random draw.")] = 0,
        device: Annotated[str, typer.Option("--device", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps.")] = (
            "auto"
        ),
        data_dir: Annotated[
            Path | None, typer.Option("--data-dir", help="Folder of the dataset's files (datasets that need one).")
        ] = None,
        data_options: DataOptions = None,
        json_output: JsonFlag = False,
    ) -> None:
        """Train a class-conditional DDPM from scratch; write a run folder (model/, samples/, log.jsonl, manifest.json).

        With --classes/--forget the model sees only the remaining set. Example:
        unlearnctl train --dataset digits --out runs/digits --steps 6000
        """
        from ..commands.train import TrainRequest, run_train
        from .forget_cmd import command_line
        from .progress import attach_progress

        registry = load_registry()
        request = TrainRequest(
            dataset=dataset,
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
            command=command_line(
                "train",
                [
                    ("--dataset", dataset),
                    ("--out", out),
                    ("--classes", classes),
                    ("--forget", forget),
                    ("--steps", steps),
                    ("--set", sets),
                    ("--config", config),
                    ("--seed", seed),
                    ("--device", device),
                    ("--data-dir", data_dir),
                    ("--data-option", data_options),
                    ("--json", json_output),
                ],
            ),
        )
        with attach_progress(registry, err_console if json_output else console):
            result = run_train(request, registry)
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
