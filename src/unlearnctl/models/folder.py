"""The in-memory model every command works on, and its folder format.

A model folder is plain diffusers format, flat, so that ``UNet2DModel.from_pretrained(folder)`` and
``DDPMScheduler.from_pretrained(folder)`` load it with no unlearnctl code::

    config.json                          UNet2DModel config
    diffusion_pytorch_model.safetensors  weights
    scheduler_config.json                DDPMScheduler config
    unlearnctl.json                      optional: class names, dataset, judge (ours)

Class conditioning convention: a class-conditional UNet has ``num_class_embeds = K + 1`` for K
classes; the last id (K) is the *null* class used for classifier-free guidance.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import DDPMScheduler, UNet2DModel

from ..errors import ModelNotAvailableError

META_FILE = "unlearnctl.json"


@dataclass
class DiffusionModel:
    """A UNet2DModel with its noise scheduler and what unlearnctl needs to know about it."""

    unet: UNet2DModel
    scheduler: DDPMScheduler
    #: name of the preset, or the folder it came from
    source: str
    #: folder the weights were read from (None for a model built in memory)
    path: Path | None = None
    class_names: list[str] = field(default_factory=list)
    #: the dataset the model was trained on, used when --dataset is not given
    default_dataset: str | None = None
    #: folder of the judge classifier for this model's data, if one ships with it
    judge_path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def conditional(self) -> bool:
        return bool(self.unet.config.get("num_class_embeds"))

    @property
    def num_classes(self) -> int:
        """Number of real classes (0 for an unconditional model)."""
        return int(self.unet.config["num_class_embeds"]) - 1 if self.conditional else 0

    @property
    def null_class(self) -> int | None:
        """Class id of the unconditional ("null") embedding, or None for an unconditional model."""
        return self.num_classes if self.conditional else None

    @property
    def image_size(self) -> int:
        size = self.unet.config["sample_size"]
        return int(size if isinstance(size, int) else size[0])

    @property
    def channels(self) -> int:
        return int(self.unet.config["in_channels"])

    def save(self, folder: Path) -> None:
        """Write the model in flat diffusers format (see module docstring)."""
        folder.mkdir(parents=True, exist_ok=True)
        self.unet.save_pretrained(folder, safe_serialization=True)
        self.scheduler.save_pretrained(folder)
        meta = {
            "class_names": self.class_names,
            "default_dataset": self.default_dataset,
            **self.extra,
        }
        (folder / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def load_model_folder(folder: Path, source: str | None = None) -> DiffusionModel:
    """Load a flat diffusers model folder (also a run folder's ``model/``) on CPU in float32."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ModelNotAvailableError(
            f"'{folder}' is not a diffusers model folder (no config.json): pass a registered model name, "
            "a folder written by save_pretrained, or a run folder"
        )
    unet = UNet2DModel.from_pretrained(folder, torch_dtype=torch.float32)
    if (folder / "scheduler_config.json").is_file():
        scheduler = DDPMScheduler.from_pretrained(folder)
    elif (folder / "scheduler" / "scheduler_config.json").is_file():
        scheduler = DDPMScheduler.from_pretrained(folder, subfolder="scheduler")
    else:
        scheduler = DDPMScheduler(num_train_timesteps=1000)
    meta: dict[str, Any] = {}
    if (folder / META_FILE).is_file():
        meta = json.loads((folder / META_FILE).read_text())
    judge = meta.pop("judge", None)
    judge_path = (folder / judge) if judge else None
    return DiffusionModel(
        unet=unet.eval(),
        scheduler=scheduler,
        source=source or str(folder),
        path=folder,
        class_names=list(meta.pop("class_names", []) or []),
        default_dataset=meta.pop("default_dataset", None),
        judge_path=judge_path,
        extra=meta,
    )


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def folder_sha256(folder: Path) -> str:
    """sha256 over sorted (relative path, file sha256) pairs of the weight files of a model folder."""
    h = hashlib.sha256()
    for p in sorted(Path(folder).rglob("*.safetensors")):
        h.update(f"{p.relative_to(folder).as_posix()}\0{file_sha256(p)}\n".encode())
    return h.hexdigest()


def state_sha256(unet: torch.nn.Module) -> str:
    """sha256 of a module's weights in memory (names, dtypes, shapes and bytes, in sorted order)."""
    h = hashlib.sha256()
    for name, tensor in sorted(unet.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\n".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
