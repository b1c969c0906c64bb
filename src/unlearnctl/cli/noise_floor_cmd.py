"""``unlearnctl noise-floor MODEL``: the seed-to-seed spread of ``eval``'s FID and recognition rates."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
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
    DEFAULT_SAMPLES_PER_CLASS,
    EtaOption,
    GuidanceOption,
    JudgeOption,
    NumSamplesOption,
    RealDatasetOption,
    SampleBatchOption,
    SamplerOption,
    SamplerStepsOption,
    check_sampler,
)
from .options import (
    ChannelsLastFlag,
    CompileFlag,
    DataDirOption,
    DataOptions,
    DeviceOption,
    JsonFileOption,
    JsonFlag,
    SeedOption,
    threads_option,
)

#: how to read the numbers, printed under the table
READING = (
    "The noise floor is the model's own spread from sampling noise alone (same model, same protocol, only the seed "
    "changes). Differences in FID smaller than about 2 x std are within sampling noise; so are recognition-rate "
    "differences smaller than about 2 x their std."
)


def _num(value: Any) -> str:
    """Four significant digits: FIDs on judge features can be far below 1, Inception FIDs far above."""
    if value is None:
        return "-"
    return f"{value:.4g}"


def summary_row(table: Table, label: str, s: dict[str, Any] | None) -> None:
    """One row: the values' mean, std (ddof=1), min, max and range, then the values."""
    if s is None:
        table.add_row(label, "-", "-", "-", "-", "-", "-")
        return
    cells = [_num(s[key]) for key in ("mean", "std", "min", "max", "range")]
    table.add_row(label, *cells, ", ".join(_num(v) for v in s["values"]))


def render(payload: dict[str, Any]) -> Table:
    """The noise floor as a table: one row per measure, the spread over the draws."""
    classes = payload["classes"]
    title = (
        f"noise floor of {escape(payload['model']['spec'])} - {payload['draws']} draws, seeds "
        f"{payload['seeds'][0]}..{payload['seeds'][-1]}, kept classes {classes['kept']}"
        + (f", forgotten {classes['forgotten']}" if classes["forgotten"] else "")
    )
    table = Table(title=title, title_justify="left")
    table.add_column("measure")
    for name in ("mean", "std", "min", "max", "range"):
        table.add_column(name, justify="right")
    table.add_column("values", overflow="fold")
    summary_row(table, "FID to real (kept classes)", payload["fid_to_real"])
    summary_row(table, "FID between draws", payload["fid_between_draws"])
    if payload.get("kept_rate") is not None:
        summary_row(table, "kept classes recognised", payload["kept_rate"])
    if payload.get("forgotten_rate") is not None:
        summary_row(table, "forgotten classes recognised", payload["forgotten_rate"])
    return table


def protocol_line(payload: dict[str, Any]) -> str:
    p = payload["protocol"]
    fe = payload.get("feature_extractor") or {}
    samples = payload["samples"]
    return (
        f"{p['sampler']} {p['steps']} steps, eta {p['eta']}, guidance {p['guidance']}; "
        f"{p['samples_per_class']} samples/class ({samples['generated_per_draw'][0]} kept samples per draw vs "
        f"{samples['real']} real); FID features: {fe.get('kind', '-')}; device {p['device']}; "
        f"{payload['wall_time_s']:.1f} s"
    )


@contextmanager
def draw_progress(out: Console) -> Iterator[Any]:
    """A progress bar fed by ``noise_floor``'s ``progress(done, total, label)`` callback."""
    progress = Progress(
        TextColumn("[bold]noise-floor"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[label]}"),
        TimeElapsedColumn(),
        console=out,
        transient=False,
    )
    task = progress.add_task("noise-floor", total=None, label="")
    started = False

    def update(done: int, total: int, label: str) -> None:
        nonlocal started
        if not started:  # shown from the first draw on: a refused request prints only its error line
            progress.start()
            started = True
        progress.update(task, completed=done, total=total, label=escape(label))

    try:
        yield update
    finally:
        if started:
            progress.stop()


def register(app: typer.Typer) -> None:
    """Add ``noise-floor`` to the ``unlearnctl`` app."""

    @app.command("noise-floor")
    @handle_errors
    def noise_floor_command(
        ctx: typer.Context,
        target: Annotated[
            str,
            typer.Argument(
                metavar="MODEL",
                help="A run folder (its model) or a model: registered name or diffusers folder, as `eval` takes it.",
                show_default=False,
            ),
        ],
        out: JsonFileOption,
        classes: Annotated[
            str | None,
            typer.Option(
                "--classes",
                help="Class ids treated as forgotten, e.g. 2,5: left out of the kept set, as `eval --classes` "
                "(default: the run's forgotten classes; none for a model that forgot nothing).",
                show_default=False,
            ),
        ] = None,
        draws: Annotated[
            int, typer.Option("--draws", help="Draws of the samples (seeds --seed .. --seed+K-1); at least 2.")
        ] = 5,
        num_samples: NumSamplesOption = None,
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
        overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out file.")] = False,
        json_output: JsonFlag = False,
    ) -> None:
        """The noise floor: the model's own seed-to-seed spread of eval's FID and recognition rates.

        Draws the model's evaluation samples K times under eval's protocol (--seed is the first draw's
        seed; draw k uses --seed + k) and records, per draw, the FID of the kept classes' samples to their
        real images (what `eval --seed k` reports as fidelity.fid) and the judge's recognition rates; then
        the FID between every pair of draws. Writes it all to --out (JSON). Differences between models
        smaller than about 2 x std are within sampling noise (docs/noise-floor.md).
        """
        from ..commands.noise_floor import NoiseFloorRequest, noise_floor

        check_sampler(sampler)
        registry = load_registry()
        request = NoiseFloorRequest(
            target=target,
            classes=classes,
            dataset=dataset,
            data_dir=data_dir,
            data_options=list(data_options or []),
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
            draws=draws,
            out=out,
            overwrite=overwrite,
            command=command_line(ctx),
        )
        with draw_progress(err_console if json_output else console) as progress:
            result = noise_floor(request, registry, progress)
        print_data_warnings((result.payload["protocol"].get("dataset") or {}).get("warnings"))
        for note in result.notes:
            print_warning(note)
        if json_output:
            print_json(result.payload)
            return
        payload = result.payload
        console.print(render(payload))
        console.print(f"[dim]{escape(protocol_line(payload))}[/]")
        console.print(READING)
        console.print(f"wrote {escape(str(result.path))}")
