"""The options several commands share, each declared once: flags, short flag, type and help text.

A command uses them as parameter annotations (``device: DeviceOption = "auto"``). Where a command's
default legitimately differs (``replay`` reruns on the recorded device; each command names its run
folder its own way), a function here builds the option from the same flags and wording, so the
command says only what differs. The manifest's command line is rebuilt from the parsed parameters
(:func:`unlearnctl.cli.common.command_line`), so an option is written once: here, or in its command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

# --- --device, --seed, --threads ------------------------------------------------------------------

DEVICE_HELP = "Device: auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps."


def _device(show_default: bool | str = True) -> Any:
    return typer.Option("--device", help=DEVICE_HELP, show_default=show_default)


#: ``device: DeviceOption = "auto"``
DeviceOption = Annotated[str, _device()]
#: ``replay``: ``None`` reruns on the device the run recorded
RecordedDeviceOption = Annotated[str | None, _device("the recorded device")]

#: ``seed: SeedOption = 0``
SeedOption = Annotated[int, typer.Option("--seed", help="Seed of every random draw (same seed, same result).")]


def threads_option(default: str) -> Any:
    """``--threads N`` (torch CPU threads); ``default`` says what the command does without it."""
    return typer.Option(
        "--threads",
        min=1,
        help=f"torch CPU threads (default: {default}); 1 is fastest when other jobs share the cores.",
        show_default=False,
    )


# --- --out: one rule, never overwrite (rundir.check_new_folder) -----------------------------------

OUT_RULE = "an existing path is refused before any work (unlearnctl never overwrites)"


def run_out_option(default: str) -> Any:
    """``--out DIR`` of a command that writes a run folder; ``default`` is its folder name pattern."""
    return typer.Option(
        "--out", "-o", help=f"Run folder to create (default: {default}); {OUT_RULE}.", show_default=False
    )


#: ``out: NewFolderOption``: a folder to create, required (``train-judge``)
NewFolderOption = Annotated[
    Path, typer.Option("--out", "-o", help=f"Folder to create; {OUT_RULE}.", show_default=False)
]
#: ``sample --out``: the same rule, except that an empty folder is used (docs/sampling.md)
SampleFolderOption = Annotated[
    Path,
    typer.Option("--out", "-o", help=f"Folder to create (or an empty folder); {OUT_RULE}.", show_default=False),
]
#: ``eval --out``: the folder metrics.json and the grids go into (an existing metrics.json is refused)
EvalFolderOption = Annotated[
    Path | None,
    typer.Option(
        "--out",
        "-o",
        help="Folder for metrics.json and the grids (default: the run folder; a model that is not a run folder "
        "writes nothing); an existing metrics.json is never overwritten unless --overwrite is given.",
        show_default=False,
    ),
]
#: ``report --out``: a file, never overwritten unless --overwrite (docs/report.md)
ReportFileOption = Annotated[
    Path,
    typer.Option(
        "--out",
        "-o",
        help="The HTML file to write (default: report.html); an existing file is never overwritten unless "
        "--overwrite is given.",
        show_default=False,
    ),
]

# --- data --------------------------------------------------------------------------------------------

#: ``data_dir: DataDirOption = None``: ``--data-dir DIR``, the folder of the dataset's files
DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Folder of the dataset's files (default: the one the run recorded for eval and replay, else "
        "$UNLEARNCTL_DATA_DIR, else the platform's data folder).",
        show_default=False,
    ),
]

#: ``data_options: DataOptions = None``: ``--data-option KEY=VALUE``, repeatable
DataOptions = Annotated[
    list[str] | None,
    typer.Option(
        "--data-option",
        help="Dataset option KEY=VALUE, e.g. download=true (`unlearnctl show dataset NAME`); repeatable.",
        show_default=False,
    ),
]

#: ``model: ModelOption = "ddpm-digits"``
ModelOption = Annotated[
    str, typer.Option("--model", "-m", help="Registered model name, diffusers folder, or run folder.")
]

# --- options of components: --set, --config -----------------------------------------------------------


def set_option(what: str) -> Any:
    """``--set KEY=VALUE`` (repeatable); ``what`` names the options, e.g. ``"Method option KEY=VALUE (...)"``."""
    return typer.Option("--set", "-s", help=f"{what}; repeatable.", show_default=False)


def config_option(what: str) -> Any:
    """``--config FILE``; ``what`` names the options it holds, e.g. ``"Method options"``."""
    return typer.Option("--config", help=f"{what} from a .toml/.yaml/.json file (--set wins over it).")


def command_config_option(tables: str) -> Any:
    """``--config FILE`` of a command that reads command-level config files (docs/config.md); ``tables``
    says what the file holds, with its tables' brackets escaped for rich markup, e.g.
    ``"\\\\[forget] (these options) and \\\\[method] (the method's)"``."""
    return typer.Option(
        "--config",
        help=f"Options from a .toml/.yaml/.json file: {tables}, as --print-config writes it. Flags given on the "
        f"command line win over the file, the file over the defaults (docs/config.md).",
        show_default=False,
    )


#: ``print_config: PrintConfigFlag = False``: print the resolved options as a config file, run nothing
PrintConfigFlag = Annotated[
    bool,
    typer.Option(
        "--print-config",
        help="Check everything as the run would, then print every option resolved (defaults included) as a "
        "config file that --config reads, and exit: nothing runs, nothing is written.",
    ),
]
#: ``config_format: ConfigFormatOption = "toml"``: the format --print-config writes
ConfigFormatOption = Annotated[
    str, typer.Option("--config-format", help="Format of --print-config: toml, yaml or json.")
]


#: ``noise-floor --out``: a JSON file, never overwritten unless --overwrite (docs/noise-floor.md)
JsonFileOption = Annotated[
    Path,
    typer.Option(
        "--out",
        "-o",
        help="The JSON file to write; an existing file is never overwritten unless --overwrite is given.",
        show_default=False,
    ),
]

#: ``sweep --out``: the study folder, created, or resumed when it holds a study of unlearnctl's
StudyOutOption = Annotated[
    Path | None,
    typer.Option(
        "--out",
        "-o",
        help="The study folder (default: studies/<spec name>): created, or resumed when it holds a study; any "
        "other existing folder is refused before any work (unlearnctl never writes into a folder it did not create).",
        show_default=False,
    ),
]

# --- output --------------------------------------------------------------------------------------------

#: ``json_output: JsonFlag = False``: the ``--json`` flag of commands that report results
JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]

# --- long runs: precision, checkpoints, resume (docs/resume.md, docs/scaling.md) -----------------------

#: ``precision: PrecisionOption = None``
PrecisionOption = Annotated[
    str | None,
    typer.Option(
        "--precision",
        help="fp32, or bf16/fp16 autocast on cuda/mps [default: accelerate launch's --mixed_precision, else fp32].",
        show_default=False,
    ),
]
#: ``checkpoint_every: CheckpointEveryOption = N``
CheckpointEveryOption = Annotated[
    int,
    typer.Option("--checkpoint-every", min=0, help="Steps between checkpoints (0: only when stopped by a signal)."),
]
#: ``keep_checkpoints: KeepCheckpointsFlag = False``
KeepCheckpointsFlag = Annotated[
    bool,
    typer.Option("--keep-checkpoints", help="Keep the checkpoints in the finished run folder (checkpoints/)."),
]
#: ``resume: ResumeOption = None``
ResumeOption = Annotated[
    Path | None,
    typer.Option(
        "--resume",
        help="Continue the interrupted run writing this folder (its --out) from its newest checkpoint; "
        "takes no other option.",
        show_default=False,
    ),
]

# --- opt-in speed-ups of the UNet (docs/performance.md, "GPU paths") -----------------------------------

#: ``channels_last: ChannelsLastFlag = False``
ChannelsLastFlag = Annotated[
    bool,
    typer.Option(
        "--channels-last",
        help="The UNet's weights in channels-last (NHWC) memory format: faster convolutions on tensor-core GPUs; "
        "recorded (the weights differ in the last bits).",
    ),
]
#: ``compile: CompileFlag = False``
CompileFlag = Annotated[
    bool,
    typer.Option(
        "--compile",
        help="torch.compile the UNet's forward (compiling takes seconds to minutes first; for long GPU runs); "
        "recorded (the weights differ in the last bits).",
    ),
]
