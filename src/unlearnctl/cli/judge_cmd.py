"""``unlearnctl train-judge``: train the classifier that ``eval`` uses to read generated images."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import console, err_console, handle_errors, load_registry, print_data_warnings, print_json
from .options import DataDirOption, DataOptions, DeviceOption, JsonFlag, NewFolderOption, SeedOption


def register(app: typer.Typer) -> None:
    """Add ``train-judge`` to the ``unlearnctl`` app."""

    @app.command("train-judge")
    @handle_errors
    def train_judge_command(
        dataset: Annotated[str, typer.Option("--dataset", "-d", help="Labelled dataset to train on.")],
        out: NewFolderOption,
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
        seed: SeedOption = 0,
        device: DeviceOption = "auto",
        data_dir: DataDirOption = None,
        data_options: DataOptions = None,
        json_output: JsonFlag = False,
    ) -> None:
        """Train a judge classifier on a dataset's train split; report its accuracy on the test split.

        Writes judge.safetensors and judge.json (no pickle). Pass the folder to `eval --judge DIR`.
        Example: unlearnctl train-judge --dataset digits --out judges/digits
        """
        from ..commands.train_judge import run_train_judge
        from ..inputs import dataset_options
        from ..runtime import resolve_device
        from .progress import attach_progress

        registry = load_registry()
        options = dataset_options(dataset, data_options, registry=registry) if data_options else None
        torch_device = resolve_device(device)
        with attach_progress(registry, err_console if json_output else console):
            result = run_train_judge(dataset, out, arch=arch, epochs=epochs, batch_size=batch_size, flip=flip,
                                     seed=seed, device=torch_device, data_dir=data_dir, data_options=options,
                                     registry=registry, on_data_warning=lambda m: print_data_warnings([m]))  # fmt: skip
        if json_output:
            print_json({"out": str(out), **result.info})
            return
        console.print(
            f"{result.arch} judge for '{dataset}' written to {out}: test accuracy {result.info['test_accuracy']:.2%} "
            f"on {result.info['test_size']} held-out images ({result.info['train_seconds']:.0f} s)"
        )
