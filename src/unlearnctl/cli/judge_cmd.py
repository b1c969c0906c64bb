"""``unlearnctl train-judge``: train the classifier that ``eval`` uses to read generated images."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import JsonFlag, console, handle_errors, load_registry, print_json


def register(app: typer.Typer) -> None:
    """Add ``train-judge`` to the ``unlearnctl`` app."""

    @app.command("train-judge")
    @handle_errors
    def train_judge_command(
        dataset: Annotated[str, typer.Option("--dataset", "-d", help="Labelled dataset to train on.")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Judge folder to create (must not exist).")],
        arch: Annotated[str, typer.Option("--arch", help="Architecture: cnn-small (small images).")] = "cnn-small",
        epochs: Annotated[int, typer.Option("--epochs", min=1, help="Passes over the training split.")] = 40,
        seed: Annotated[int, typer.Option("--seed", help="Seed of the weights and every random draw.")] = 0,
        data_dir: Annotated[
            Path | None, typer.Option("--data-dir", help="Folder of the dataset's files (datasets that need one).")
        ] = None,
        json_output: JsonFlag = False,
    ) -> None:
        """Train a judge classifier on a dataset's train split; report its accuracy on the test split.

        Writes judge.safetensors and judge.json (no pickle). Pass the folder to `eval --judge DIR`.
        Example: unlearnctl train-judge --dataset digits --out judges/digits
        """
        from ..judge import run_train_judge

        result = run_train_judge(dataset, out, arch=arch, epochs=epochs, seed=seed, data_dir=data_dir,
                                 registry=load_registry())  # fmt: skip
        if json_output:
            print_json({"out": str(out), **result.info})
            return
        console.print(
            f"judge for '{dataset}' written to {out}: test accuracy {result.info['test_accuracy']:.2%} "
            f"on {result.info['test_size']} held-out images ({result.info['train_seconds']:.0f} s)"
        )
