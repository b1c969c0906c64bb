"""The in-memory model every command works on, and its folder format.

A model folder is plain diffusers format, flat, so that ``UNet2DModel.from_pretrained(folder)`` and
``DDPMScheduler.from_pretrained(folder)`` load it with no unlearnctl code::

    config.json                          UNet2DModel config
    diffusion_pytorch_model.safetensors  weights
    scheduler_config.json                DDPMScheduler config
    unlearnctl.json                      optional: class names, dataset, judge (ours)

Weights are read from safetensors only (:func:`load_unet`): pickled weights (``.bin``...) can run code
when loaded and are refused, naming the file; a damaged or foreign folder is one
:class:`~unlearnctl.errors.ModelNotAvailableError` line (see docs/verify.md).

Class conditioning convention: a class-conditional UNet has ``num_class_embeds = K + 1`` for K
classes; the last id (K) is the *null* class used for classifier-free guidance.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import DDPMScheduler, UNet2DModel
from safetensors import SafetensorError

from ..errors import ModelNotAvailableError
from ..rundir import file_sha256, follow_umask

META_FILE = "unlearnctl.json"
#: the UNet's weights: safetensors, the only format unlearnctl reads (loading one runs no code)
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
#: sharded safetensors weights (diffusers writes an index next to the shards)
WEIGHTS_INDEX = WEIGHTS_FILE + ".index.json"
#: suffixes of pickled weights (``torch.save``, pickle): refused, since unpickling can run code
PICKLED_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


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
        follow_umask(folder / WEIGHTS_FILE)  # safetensors writes it private (0600)
        self.scheduler.save_pretrained(folder)
        meta = {
            "class_names": self.class_names,
            "default_dataset": self.default_dataset,
            **self.extra,
        }
        (folder / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def load_model_folder(folder: Path, source: str | None = None) -> DiffusionModel:
    """Load a flat diffusers model folder (also a run folder's ``model/``) on CPU in float32.

    :raises ModelNotAvailableError: no ``config.json``, a config of another class, pickled or damaged
        weights, or unreadable JSON (one line naming the file; see :func:`load_unet`).
    """
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ModelNotAvailableError(
            f"'{folder}' is not a diffusers model folder (no config.json): pass a registered model name, "
            "a folder written by save_pretrained, or a run folder"
        )
    unet = load_unet(folder)
    try:
        if (folder / "scheduler_config.json").is_file():
            scheduler = DDPMScheduler.from_pretrained(folder)
        elif (folder / "scheduler" / "scheduler_config.json").is_file():
            scheduler = DDPMScheduler.from_pretrained(folder, subfolder="scheduler")
        else:
            scheduler = DDPMScheduler(num_train_timesteps=1000)
    except (OSError, ValueError, TypeError) as exc:
        raise ModelNotAvailableError(f"cannot read the scheduler config in '{folder}' ({_reason(exc)})") from None
    meta = read_json_object(folder / META_FILE) if (folder / META_FILE).is_file() else {}
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


# --- reading a UNet folder: safetensors only, one line for anything wrong ------------------------------


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``. :raises ModelNotAvailableError: unreadable, not JSON, or not an object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = _reason(exc)
        raise ModelNotAvailableError(f"'{path}' is not valid JSON ({reason}): the model folder is damaged") from None
    if not isinstance(data, dict):
        raise ModelNotAvailableError(f"'{path}' must hold a JSON object: the model folder is damaged")
    return data


def check_unet_config(config_path: Path) -> dict[str, Any]:
    """The UNet config in ``config_path``; refuse one whose ``_class_name`` is not ``UNet2DModel``."""
    config = read_json_object(config_path)
    cls_name = config.get("_class_name")
    if cls_name not in (None, "UNet2DModel"):
        raise ModelNotAvailableError(
            f"'{config_path.parent}' holds a {cls_name} (its {config_path.name}): unlearnctl works on pixel-space "
            "UNet2DModel models (DDPM/DDIM)"
        )
    return config


def check_weights(unet_dir: Path) -> Path:
    """The safetensors weights of a UNet folder; pickled weights are refused, naming the file.

    :raises ModelNotAvailableError: no ``diffusion_pytorch_model.safetensors`` (one line saying how to
        convert a pickled file, when there is one).
    """
    unet_dir = Path(unet_dir)
    if (unet_dir / WEIGHTS_FILE).is_file() or (unet_dir / WEIGHTS_INDEX).is_file():
        return unet_dir / WEIGHTS_FILE
    pickled = sorted(
        p for p in unet_dir.iterdir() if p.is_file() and p.name.split(".index.json")[0].endswith(PICKLED_SUFFIXES)
    )
    if pickled:
        raise ModelNotAvailableError(
            f"'{pickled[0]}' holds pickled weights, which can run code when loaded: unlearnctl reads only "
            f"{WEIGHTS_FILE}; if you trust the file, convert the folder with diffusers: "
            f"UNet2DModel.from_pretrained('{unet_dir}').save_pretrained('{unet_dir}', safe_serialization=True)"
        )
    raise ModelNotAvailableError(
        f"'{unet_dir}' has a config.json but no weights ({WEIGHTS_FILE}; unlearnctl reads safetensors only): "
        "copy the complete folder"
    )


def load_unet(unet_dir: Path) -> UNet2DModel:
    """The ``UNet2DModel`` of a diffusers folder (``config.json`` + safetensors weights), float32 on CPU.

    Only safetensors are read (``use_safetensors=True``): nothing is unpickled.

    :raises ModelNotAvailableError: a config of another class or not JSON, pickled weights (named, with
        how to convert them), or weights that do not load (damaged, or not this config's network).
    """
    unet_dir = Path(unet_dir)
    check_unet_config(unet_dir / "config.json")
    check_weights(unet_dir)
    try:
        unet, info = UNet2DModel.from_pretrained(
            unet_dir, torch_dtype=torch.float32, use_safetensors=True, output_loading_info=True
        )
    except (OSError, ValueError, TypeError, RuntimeError, KeyError, SafetensorError) as exc:
        raise ModelNotAvailableError(
            f"cannot load the UNet in '{unet_dir}' ({_reason(exc)}): the files are damaged or do not belong together"
        ) from None
    missing = list(info.get("missing_keys") or []) + [m[0] for m in info.get("mismatched_keys") or []]
    if missing:  # diffusers would leave these weights randomly initialised
        raise ModelNotAvailableError(
            f"'{unet_dir / WEIGHTS_FILE}' lacks {len(missing)} weight(s) of the network config.json describes "
            f"(e.g. {sorted(missing)[0]}): the files are damaged or do not belong together"
        )
    return unet


def folder_sha256(folder: Path, file_hash: Callable[[Path], str] = file_sha256) -> str:
    """sha256 over sorted (relative path, file sha256) pairs of the weight files of a model folder.

    ``file_hash``: how to get a file's sha256 (default: read it; ``verify`` passes the ones it computed).
    """
    h = hashlib.sha256()
    for p in sorted(Path(folder).rglob("*.safetensors")):
        h.update(f"{p.relative_to(folder).as_posix()}\0{file_hash(p)}\n".encode())
    return h.hexdigest()


def state_sha256(unet: torch.nn.Module) -> str:
    """sha256 of a module's weights in memory (names, dtypes, shapes and bytes, in sorted order)."""
    h = hashlib.sha256()
    for name, tensor in sorted(unet.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\n".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
