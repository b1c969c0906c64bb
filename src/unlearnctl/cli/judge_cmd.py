"""``unlearnctl train-judge``: train the classifier that ``eval`` uses to read generated images."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import DataOptions, JsonFlag, console, handle_errors, load_registry, print_json


def register(app: typer.Typer) -> None:
    """Add ``train-judge`` to the ``unlearnctl`` app."""

    @app.command("train-judge")
    @handle_errors
    def train_judge_command(
        dataset: Annotated[str, typer.Option("--dataset", "-d", help="Labelled dataset to train on.")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Judge folder to create (must not exist).")],
        arch: Annotated[
            str,
            typer.Option(
                "--arch",
                help="Architecture: auto, cnn-small (tiny images), resnet18, resnet34 or resnet50 (torchvision, "
                "random init). auto: cnn-small up to 16 px (grey: 32 px), else resnet18.",
            ),
        ] = "auto",
        epochs: Annotated[int, typer.Option("--epochs", min=1, help="Passes over the training split.")] = 40,
        batch_size: Annotated[
            int | None,
            typer.Option("--batch-size", min=1, help="Images per step (default: 64 for cnn-small, 128 for a resnet)."),
        ] = None,
        flip: Annotated[
            bool | None,
            typer.Option(
                "--flip/--no-flip",
                help="Random horizontal flips (default: on for a resnet on RGB data, off otherwise).",
                show_default=False,
            ),
        ] = None,
        seed: Annotated[int, typer.Option("--seed", help="Seed of the weights and every random draw.")] = 0,
        device: Annotated[
            str, typer.Option("--device", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps.")
        ] = "auto",
        data_dir: Annotated[
            Path | None, typer.Option("--data-dir", help="Folder of the dataset's files (datasets that need one).")
        ] = None,
        data_options: DataOptions = None,
        json_output: JsonFlag = False,
    ) -> None:
        """Train a judge classifier on a dataset's train split; report its accuracy on the test split.

        Writes judge.safetensors and judge.json (no pickle). Pass the folder to `eval --judge DIR`.
        Example: unlearnctl train-judge --dataset digits --out judges/digits
        """
        from types import SimpleNamespace

        from ..commands.train_judge import run_train_judge
        from ..inputs import dataset_options
        from ..runtime import resolve_device
        from .common import err_console, print_data_warnings
        from .progress import RichProgress

        registry = load_registry()
        options = dataset_options(dataset, data_options, registry=registry) if data_options else None
        torch_device = resolve_device(device)
        bar = RichProgress(err_console if json_output else console)
        run = SimpleNamespace(description=f"train-judge {dataset}", total_steps=None)

        def on_step(step: int, total: int, values: dict[str, float]) -> None:
            run.total_steps = total
            bar.step_logged(run=run, step=step, values=values)

        try:
            result = run_train_judge(dataset, out, arch=arch, epochs=epochs, batch_size=batch_size, flip=flip,
                                     seed=seed, device=torch_device, data_dir=data_dir, data_options=options,
                                     registry=registry, on_step=on_step,
                                     on_data_warning=lambda m: print_data_warnings([m]))  # fmt: skip
        finally:
            bar.stop()
        if json_output:
            print_json({"out": str(out), **result.info})
            return
        console.print(
            f"{result.arch} judge for '{dataset}' written to {out}: test accuracy {result.info['test_accuracy']:.2%} "
            f"on {result.info['test_size']} held-out images ({result.info['train_seconds']:.0f} s)"
        )
