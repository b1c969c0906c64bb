"""The run manifest: enough to rerun a run exactly and to audit what was forgotten.

It is a pydantic model; ``manifest_json_schema()`` is published as ``docs/manifest.schema.json``.
Written last into a run folder, so a folder with a manifest is complete.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from .errors import UnlearnError, UsageError
from .rundir import MANIFEST_FILE

SCHEMA_VERSION = 1
KEY_PACKAGES = (
    "unlearnctl",
    "torch",
    "torchvision",
    "diffusers",
    "torch-fidelity",
    "safetensors",
    "pydantic",
    "numpy",
    "scikit-learn",
    "accelerate",
)
RECORDED_ENV = (
    "HF_HUB_OFFLINE",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES",
    "CUBLAS_WORKSPACE_CONFIG",
    "PYTHONHASHSEED",
    # the CPU kernel path: a different one gives different (equally valid) float32 sums
    "ATEN_CPU_CAPABILITY",
    # --compile's backend (runtime.COMPILE_BACKEND_ENV)
    "UNLEARNCTL_COMPILE_BACKEND",
    "ONEDNN_MAX_CPU_ISA",
    "MKL_CBWR",
)


def cpu_name() -> str | None:
    """The CPU's model name (``/proc/cpuinfo`` on Linux; ``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip() or None
    except OSError:
        pass
    return platform.processor() or None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ComponentConfig(_Model):
    """One component with its fully resolved options (defaults included)."""

    name: str = Field(description="registered component name")
    provider: str | None = Field(None, description="plugin that provides it (builtin.<module> for built-ins)")
    provider_version: str | None = Field(
        None, description="that plugin's version at the run (unlearnctl's for built-ins); None: not recorded"
    )
    provider_distribution: str | None = Field(
        None, description="the distribution that installed the plugin (the pip install name); None: not recorded"
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="every option with its resolved value, defaults included (by key)"
    )


class SelectorConfig(ComponentConfig):
    """One forget-set selector as run (``--classes 2`` is the ``classes`` selector with argument ``2``)."""

    argument: str | None = Field(None, description="the text after NAME: on the command line")


class Environment(_Model):
    """Everything about the process that can move results."""

    python: str = Field(description="Python version")
    platform: str = Field(description="platform.platform()")
    packages: dict[str, str | None] = Field(
        description="versions of unlearnctl, torch (the build imported), diffusers and other key packages"
    )
    git_commit: str | None = Field(None, description="commit of the unlearnctl source tree, when it is a git checkout")
    git_dirty: bool | None = Field(None, description="uncommitted changes to tracked files of that checkout")
    device_requested: str = Field(description="--device as given (auto, cpu, cuda, cuda:N, mps)")
    device: str = Field(description="resolved device type: cpu, cuda or mps")
    device_name: str | None = Field(None, description="GPU name, or the CPU's processor string")
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="--precision (bf16/fp16: autocast)")
    channels_last: bool = Field(False, description="--channels-last: the UNet's weights in NHWC memory format")
    compile: bool = Field(False, description="--compile: torch.compile of the UNet's forward")
    cuda_version: str | None = Field(None, description="CUDA version torch was built with (CUDA runs)")
    cudnn_version: int | None = Field(None, description="cuDNN version (CUDA runs)")
    deterministic_algorithms: bool = Field(description="torch.are_deterministic_algorithms_enabled()")
    cudnn_deterministic: bool = Field(description="torch.backends.cudnn.deterministic")
    cudnn_benchmark: bool = Field(description="torch.backends.cudnn.benchmark")
    num_threads: int = Field(description="torch.get_num_threads() (CPU results can depend on it)")
    env: dict[str, str] = Field(default_factory=dict, description="environment variables that move results, if set")


class DatasetRecord(_Model):
    """The dataset the forget and remaining sets come from."""

    name: str = Field(description="registered dataset name")
    version: str = Field(description="the dataset's version string")
    split: str = Field(description="the split the forget and remaining sets come from")
    size: int = Field(description="number of items in that split")
    fingerprint: str = Field(description="the dataset's content fingerprint (sha256 over ids and pixels)")
    options: dict[str, Any] = Field(default_factory=dict, description="the dataset component's resolved options")
    provider: str | None = Field(None, description="plugin that provides the dataset")
    provider_version: str | None = Field(
        None, description="that plugin's version at the run (unlearnctl's for built-ins); None: not recorded"
    )
    provider_distribution: str | None = Field(
        None, description="the distribution that installed the plugin (the pip install name); None: not recorded"
    )
    data_dir: str | None = Field(
        None, description="absolute folder the data was read from (--data-dir); None: the default datasets folder"
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="data warnings emitted while loading the dataset, one line each (e.g. files left out)",
    )


class ForgetSetRecord(_Model):
    """What was forgotten: enough to audit it and to rebuild it exactly."""

    selectors: list[SelectorConfig] = Field(description="the selectors whose union is the forget set")
    size: int = Field(description="number of items forgotten")
    fingerprint: str = Field(description="sha256 of the sorted forget ids joined by newlines (data.ids_fingerprint)")
    remain_size: int = Field(description="number of items in the remaining set")
    forget_classes: list[int] = Field(default_factory=list, description="classes forgotten whole")


class WeightsRecord(_Model):
    """Input and output weights. ``*_sha256`` of weights is ``models.state_sha256``: sha256 over the UNet's
    state dict in memory (float32, CPU), tensors in sorted name order, each as name, dtype, shape, then
    its raw bytes -- independent of file format and of safetensors metadata."""

    model: str = Field(description="--model as given: preset name, folder or run folder")
    model_path: str | None = Field(None, description="absolute folder the input weights were read from")
    preset: ComponentConfig | None = Field(None, description="the model preset with its resolved options, if any")
    input_sha256: str | None = Field(None, description="state_sha256 of the input UNet weights")
    output_sha256: str | None = Field(None, description="state_sha256 of the saved (output) UNet weights")
    output_files_sha256: str | None = Field(
        None,
        description="models.folder_sha256 of model/: sha256 over sorted (relative path, file sha256) of its "
        "*.safetensors files",
    )
    saved_weights: Literal["ema", "raw"] = Field(
        "raw", description="whether model/ holds the EMA of the weights or the raw optimised weights"
    )


class SamplesRecord(_Model):
    """The before/after sample grids in ``samples/`` (same initial noise before and after)."""

    files: dict[str, str] = Field(description="grid name -> path relative to the run folder")
    forgotten_classes: list[int] = Field(default_factory=list, description="rows of the forgotten-* grids")
    kept_classes: list[int] = Field(default_factory=list, description="rows of the kept-* grids")
    per_class: int = Field(description="images per class (columns)")
    seed: int = Field(description="seed of the sampling generator")
    sampler: dict[str, Any] = Field(description="resolved sampler settings (sampling.SampleOptions)")


class ReplayRecord(_Model):
    """Set when the run is a ``replay`` of another run."""

    manifest: str = Field(description="path of the replayed manifest")
    output_sha256: str | None = Field(None, description="the replayed run's output_sha256")
    verified: bool | None = Field(None, description="True/False: --verify compared the output; None: not asked")


class DistributedRecord(_Model):
    """Set when several processes ran the run (``accelerate launch`` / ``torchrun``; docs/scaling.md)."""

    world_size: int = Field(description="number of processes; each took an equal shard of every global batch")
    mixed_precision: str = Field(description="fp32, bf16 or fp16")
    rank_seeds: dict[str, int] = Field(
        description="seed of each process's own random stream (noise, timesteps), by rank; the data streams "
        "are shared (`seeds`)"
    )

    @classmethod
    def of(cls, world: Any, seed: int, precision: str, stream: str = "method") -> DistributedRecord:
        from .runtime import stream_seed

        return cls(
            world_size=world.size,
            mixed_precision=precision,
            rank_seeds={str(r): stream_seed(seed, f"{stream}.rank{r}of{world.size}") for r in range(world.size)},
        )


class Manifest(_Model):
    """What a run did, with what, on what, and what came out."""

    schema_version: int = Field(SCHEMA_VERSION, description="version of this schema")
    kind: Literal["forget", "train"] = Field(description="the command that wrote the run")
    command: list[str] = Field(description="the command line, argv[0] excluded")
    seed: int = Field(description="--seed")
    seeds: dict[str, int] = Field(
        default_factory=dict, description="seed of each random stream, derived from `seed` (runner.stream_seed)"
    )
    method: ComponentConfig | None = Field(None, description="the method with its fully resolved options")
    runner: dict[str, Any] = Field(default_factory=dict, description="resolved runner settings (steps, batches...)")
    dataset: DatasetRecord = Field(description="the dataset")
    forget: ForgetSetRecord | None = Field(None, description="the forget set (forget runs)")
    weights: WeightsRecord = Field(description="input and output weights and their hashes")
    environment: Environment = Field(description="the software and hardware the run used")
    started_at: datetime = Field(description="UTC start time")
    finished_at: datetime = Field(description="UTC end time (before the manifest was written)")
    wall_time_s: float = Field(description="wall-clock seconds of the whole run, sample grids included")
    optimizer_steps: int = Field(description="optimizer steps taken on the model")
    final_losses: dict[str, float] = Field(default_factory=dict, description="the last logged values")
    samples: SamplesRecord | None = Field(None, description="the before/after sample grids")
    replay_of: ReplayRecord | None = Field(None, description="set when this run is a replay of another")
    distributed: DistributedRecord | None = Field(None, description="set when several processes ran the run")
    resumed_at: list[int] = Field(
        default_factory=list, description="the steps after which the run was stopped and resumed (--resume)"
    )
    files: dict[str, str] | None = Field(
        None,
        description="sha256 of every file the run wrote, by path relative to the run folder (manifest.json "
        "excepted; files added later are in checksums.sha256); `unlearnctl verify` checks them. None: a run "
        "made before unlearnctl recorded them",
    )
    extra: dict[str, Any] = Field(
        default_factory=dict,
        description="anything else a command or plugin records: a method or lifecycle listener fills run.extra "
        "(JSON values)",
    )

    def write(self, folder: Path) -> Path:
        path = Path(folder) / MANIFEST_FILE
        path.write_text(self.model_dump_json(indent=2) + "\n")
        return path


def manifest_extra(extra: dict[str, Any]) -> dict[str, Any]:
    """A JSON copy of a run's ``extra`` (what its method and listeners recorded) for :attr:`Manifest.extra`.

    :raises UnlearnError: a key that is not a string or a value JSON cannot hold (named, in one line).
    """
    out: dict[str, Any] = {}
    for key, value in extra.items():
        if not isinstance(key, str):
            raise UnlearnError(f"run.extra: key {key!r} is not a string: the manifest's extra needs string keys")
        try:
            out[key] = json.loads(json.dumps(value, allow_nan=True))
        except (TypeError, ValueError) as exc:
            raise UnlearnError(
                f"run.extra['{key}'] cannot be written into the manifest ({exc}): record numbers, strings, "
                "bools, lists or dicts"
            ) from None
    return out


def read_manifest(path: Path) -> Manifest:
    """Read ``manifest.json`` (or a run folder containing one); one-line errors for bad files."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_FILE
    if not path.is_file():
        raise UsageError(f"no manifest at '{path}': pass a run folder or its manifest.json")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError: ValueErrors
        raise UsageError(f"cannot read manifest '{path}': {' '.join(str(exc).split())}") from exc
    if not isinstance(data, dict):
        raise UsageError(f"manifest '{path}' is not a JSON object (got {type(data).__name__}): the file is damaged")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise UsageError(
            f"manifest '{path}' has schema version {data.get('schema_version')!r}; this unlearnctl reads "
            f"{SCHEMA_VERSION}: use the unlearnctl version recorded in it"
        )
    try:
        return Manifest.model_validate(data)
    except Exception as exc:  # pydantic.ValidationError: keep one line
        first = str(exc).splitlines()[0:3]
        raise UsageError(f"manifest '{path}' is not valid: {' '.join(first)}") from exc


def manifest_json_schema() -> dict[str, Any]:
    """The JSON schema of ``manifest.json`` (published as ``docs/manifest.schema.json``)."""
    schema = Manifest.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def render_schema_json() -> str:
    """The text of ``docs/manifest.schema.json``."""
    return json.dumps(manifest_json_schema(), indent=2, sort_keys=True) + "\n"


def _schema_type(prop: dict[str, Any]) -> str:
    if "$ref" in prop:
        name = prop["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"
    if "anyOf" in prop:
        return " \\| ".join(_schema_type(p) for p in prop["anyOf"])
    if "enum" in prop:
        return " \\| ".join(json.dumps(v) for v in prop["enum"])
    if "const" in prop:
        return json.dumps(prop["const"])
    kind = prop.get("type", "any")
    if "format" in prop:
        return f"{kind} ({prop['format']})"
    if kind == "array":
        return f"list of {_schema_type(prop.get('items', {}))}"
    if kind == "object" and isinstance(prop.get("additionalProperties"), dict):
        return f"map of {_schema_type(prop['additionalProperties'])}"
    return {"object": "map", "null": "null"}.get(kind, kind) if isinstance(kind, str) else str(kind)


def render_fields_markdown() -> str:
    """Field tables of every model in the schema (the generated part of ``docs/manifest.md``)."""
    schema = manifest_json_schema()
    models = [("Manifest", schema), *sorted(schema.get("$defs", {}).items())]
    parts = []
    for name, model in models:
        parts.append(f"### {name}\n")
        doc = " ".join((model.get("description") or "").split())
        if doc:
            parts.append(f"{doc}\n")
        parts.append("| field | type | required | description |\n| --- | --- | --- | --- |")
        required = set(model.get("required", []))
        for field, prop in model.get("properties", {}).items():
            desc = " ".join((prop.get("description") or "").split()).replace("|", "\\|")
            req = "yes" if field in required else "no"
            parts.append(f"| `{field}` | {_schema_type(prop)} | {req} | {desc} |")
        parts.append("")
    return "\n".join(parts)


FIELDS_START = "<!-- fields:start (generated by bench/gen_schema.py; do not edit by hand) -->"
FIELDS_END = "<!-- fields:end -->"


def render_manifest_doc(current: str) -> str:
    """``docs/manifest.md`` with its generated field tables replaced by the current ones."""
    head, sep, rest = current.partition(FIELDS_START)
    if not sep:
        raise ValueError(f"docs/manifest.md has no '{FIELDS_START}' marker")
    _, sep, tail = rest.partition(FIELDS_END)
    if not sep:
        raise ValueError(f"docs/manifest.md has no '{FIELDS_END}' marker")
    return f"{head}{FIELDS_START}\n\n{render_fields_markdown()}\n{FIELDS_END}{tail}"


def _package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in KEY_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    out["torch"] = torch.__version__  # the build actually imported, e.g. 2.14.1+cu130
    return out


def _git_state() -> tuple[str | None, bool | None]:
    src = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit or None, bool(status.strip())


def collect_environment(
    device_requested: str,
    device: torch.device,
    precision: str = "fp32",
    *,
    channels_last: bool = False,
    compile: bool = False,
) -> Environment:
    """Everything about this process that can move results (the run's opt-in speed-ups among them)."""
    commit, dirty = _git_state()
    cuda = device.type == "cuda"
    return Environment(
        python=sys.version.split()[0],
        platform=platform.platform(),
        packages=_package_versions(),
        git_commit=commit,
        git_dirty=dirty,
        device_requested=device_requested,
        device=device.type,
        device_name=torch.cuda.get_device_name(device) if cuda else cpu_name(),
        precision=precision,
        channels_last=channels_last,
        compile=compile,
        cuda_version=torch.version.cuda if cuda else None,
        cudnn_version=torch.backends.cudnn.version() if cuda else None,
        deterministic_algorithms=torch.are_deterministic_algorithms_enabled(),
        cudnn_deterministic=bool(torch.backends.cudnn.deterministic),
        cudnn_benchmark=bool(torch.backends.cudnn.benchmark),
        num_threads=torch.get_num_threads(),
        env={k: os.environ[k] for k in RECORDED_ENV if k in os.environ},
    )
