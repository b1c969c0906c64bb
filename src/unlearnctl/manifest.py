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

from .errors import UsageError

SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"
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
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ComponentConfig(_Model):
    """One component with its fully resolved options (defaults included)."""

    name: str
    provider: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class SelectorConfig(ComponentConfig):
    argument: str | None = Field(None, description="the text after NAME: on the command line")


class Environment(_Model):
    python: str
    platform: str
    packages: dict[str, str | None]
    git_commit: str | None = Field(None, description="commit of the unlearnctl source tree, when it is a git checkout")
    git_dirty: bool | None = None
    device_requested: str
    device: str = Field(description="resolved device type: cpu, cuda or mps")
    device_name: str | None = None
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    cuda_version: str | None = None
    cudnn_version: int | None = None
    deterministic_algorithms: bool
    cudnn_deterministic: bool
    cudnn_benchmark: bool
    num_threads: int
    env: dict[str, str] = Field(default_factory=dict, description="environment variables that move results")


class DatasetRecord(_Model):
    name: str
    version: str
    split: str
    size: int
    fingerprint: str
    options: dict[str, Any] = Field(default_factory=dict)
    data_dir: str | None = None


class ForgetSetRecord(_Model):
    selectors: list[SelectorConfig]
    size: int
    fingerprint: str = Field(description="sha256 of the sorted forget ids, one per line")
    remain_size: int
    forget_classes: list[int] = Field(default_factory=list, description="classes forgotten whole")


class WeightsRecord(_Model):
    model: str = Field(description="--model as given: preset name, folder or run folder")
    input_sha256: str | None = Field(None, description="sha256 of the input weights (see docs/manifest.md)")
    output_sha256: str | None = None
    saved_weights: Literal["ema", "raw"] = "raw"


class Manifest(_Model):
    """What a run did, with what, on what, and what came out."""

    schema_version: int = SCHEMA_VERSION
    kind: Literal["forget", "train"]
    command: list[str] = Field(description="the command line, argv[0] excluded")
    seed: int
    method: ComponentConfig | None = None
    runner: dict[str, Any] = Field(default_factory=dict, description="resolved runner settings (steps, batches...)")
    dataset: DatasetRecord
    forget: ForgetSetRecord | None = None
    weights: WeightsRecord
    environment: Environment
    started_at: datetime
    finished_at: datetime
    wall_time_s: float
    optimizer_steps: int
    final_losses: dict[str, float] = Field(default_factory=dict)
    extra: dict[str, Any] = Field(default_factory=dict)

    def write(self, folder: Path) -> Path:
        path = Path(folder) / MANIFEST_FILE
        path.write_text(self.model_dump_json(indent=2) + "\n")
        return path


def read_manifest(path: Path) -> Manifest:
    """Read ``manifest.json`` (or a run folder containing one); one-line errors for bad files."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_FILE
    if not path.is_file():
        raise UsageError(f"no manifest at '{path}': pass a run folder or its manifest.json")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"cannot read manifest '{path}': {exc}") from exc
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
    return Manifest.model_json_schema()


def _package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in KEY_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
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


def collect_environment(device_requested: str, device: torch.device, precision: str = "fp32") -> Environment:
    """Everything about this process that can move results."""
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
        device_name=torch.cuda.get_device_name(device) if cuda else platform.processor() or None,
        precision=precision,  # type: ignore[arg-type]
        cuda_version=torch.version.cuda if cuda else None,
        cudnn_version=torch.backends.cudnn.version() if cuda else None,
        deterministic_algorithms=torch.are_deterministic_algorithms_enabled(),
        cudnn_deterministic=bool(torch.backends.cudnn.deterministic),
        cudnn_benchmark=bool(torch.backends.cudnn.benchmark),
        num_threads=torch.get_num_threads(),
        env={k: os.environ[k] for k in RECORDED_ENV if k in os.environ},
    )
