"""Tiny stand-ins for real datasets and hub models, written in their exact on-disk formats.

The real files cannot be downloaded on an offline test machine, so these writers create a few small
images with the publishers' file names, folder layouts and annotation formats. unlearnctl's real
loaders then read them through exactly the code path they use for the real data. Everything is
deterministic under ``seed``.

- :func:`write_cifar10`: ``cifar-10-batches-py/`` pickled batches as in the official archive
  (torchvision checks their md5: :func:`cifar10_checksums` gives the stand-ins' sums to patch in).
- :func:`write_celeba`, :func:`write_celeba_hq`: JPEGs plus CelebA's text annotation files.
- :func:`write_utkface`: JPEGs named ``age_gender_race_datetime.jpg.chip.jpg``.
- :func:`write_imagefolder`: class sub-folders, or images plus ``metadata.csv``.
- :func:`ddpm_cifar10_standin`, :func:`save_standin_model`, :func:`fill_hf_cache`: a UNet with
  ``google/ddpm-cifar10-32``'s config but tiny channels, in either diffusers layout or in a
  Hugging Face cache.
"""

from __future__ import annotations

import csv
import hashlib
import os
import pickle
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

# --- images ------------------------------------------------------------------------------------


def _image(rng: np.random.Generator, width: int, height: int, colour: Sequence[int]) -> Image.Image:
    """A flat colour with a little noise (so files differ), as an RGB image."""
    base = np.broadcast_to(np.asarray(colour, dtype=np.int16), (height, width, 3))
    noise = rng.integers(-12, 13, size=(height, width, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")


def _colour(k: int) -> tuple[int, int, int]:
    palette = [(220, 40, 40), (40, 200, 60), (40, 60, 220), (230, 200, 40), (160, 40, 200), (40, 200, 200)]
    return palette[k % len(palette)]


# --- CIFAR-10 ----------------------------------------------------------------------------------

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR10_TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]


def write_cifar10(root: Path, per_batch: int = 4, test: int = 6, seed: int = 0) -> Path:
    """Write ``root/cifar-10-batches-py/`` like the official python archive, with few images.

    Batches are pickled dicts with the official keys (``batch_label``, ``labels``, ``data`` as uint8
    ``N x 3072`` in channel-major order, ``filenames``); ``batches.meta`` holds ``label_names``,
    ``num_cases_per_batch`` and ``num_vis``. Labels cycle through the 10 classes; each image is a flat
    colour that encodes its label in the red channel (``label * 20``).
    """
    base = Path(root) / "cifar-10-batches-py"
    base.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    counter = 0

    def batch(label: str, n: int) -> dict:
        nonlocal counter
        labels = [(counter + i) % 10 for i in range(n)]
        data = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
        data[:, 0] = np.asarray(labels, dtype=np.uint8)[:, None, None] * 20
        counter += n
        return {
            "batch_label": label,
            "labels": labels,
            "data": data.reshape(n, 3072),
            "filenames": [f"standin_{counter - n + i:05d}.png" for i in range(n)],
        }

    for i, name in enumerate(CIFAR10_TRAIN_BATCHES, start=1):
        _pickle(base / name, batch(f"training batch {i} of 5", per_batch))
    _pickle(base / "test_batch", batch("testing batch 1 of 1", test))
    _pickle(base / "batches.meta", {"num_cases_per_batch": per_batch, "label_names": CIFAR10_NAMES, "num_vis": 3072})
    return base


def _pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def cifar10_checksums(base: Path) -> dict[str, object]:
    """torchvision ``CIFAR10`` class attributes (``train_list``, ``test_list``, ``meta``) for stand-in files.

    Tests ``monkeypatch.setattr(CIFAR10, key, value)`` for each so that torchvision's md5 check, which
    only accepts the official files, accepts the stand-ins and still runs.
    """
    base = Path(base)
    return {
        "train_list": [[name, _md5(base / name)] for name in CIFAR10_TRAIN_BATCHES],
        "test_list": [["test_batch", _md5(base / "test_batch")]],
        "meta": {"filename": "batches.meta", "key": "label_names", "md5": _md5(base / "batches.meta")},
    }


# --- CelebA ------------------------------------------------------------------------------------


def _attribute_lines(names: Sequence[str], rows: Iterable[tuple[str, Sequence[int]]]) -> list[str]:
    """CelebA's attribute file layout: count, names (trailing space), then ``file`` and ``%2d`` values."""
    rows = list(rows)
    lines = [str(len(rows)), " ".join(names) + " "]
    lines += [f"{file} " + " ".join(f"{v:2d}" for v in values) for file, values in rows]
    return lines


def _attribute_values(rng: np.random.Generator, n: int, names: Sequence[str], forced: dict[str, Sequence[int]]):
    values = np.where(rng.random((n, len(names))) < 0.3, 1, -1)
    for name, column in forced.items():
        values[:, list(names).index(name)] = column
    return values


def write_celeba(
    root: Path,
    partitions: Sequence[int] = (0, 0, 0, 0, 0, 0, 1, 1, 2, 2, 2, 2),
    eyeglasses: Sequence[int] | None = None,
    seed: int = 0,
) -> Path:
    """Write ``root/celeba/`` as torchvision expects it: ``img_align_celeba/000001.jpg``.. (178 x 218),
    ``list_attr_celeba.txt`` (40 attributes, 1/-1) and ``list_eval_partition.txt`` (0/1/2).

    ``partitions[i]`` is the official partition of image ``i + 1``; ``eyeglasses`` (1/-1 per image,
    default: every third) fixes the ``Eyeglasses`` column.
    """
    from unlearnctl.builtin.realdata import CELEBA_ATTRIBUTES

    folder = Path(root) / "celeba"
    images = folder / "img_align_celeba"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = len(partitions)
    files = [f"{i + 1:06d}.jpg" for i in range(n)]
    glasses = list(eyeglasses) if eyeglasses is not None else [1 if i % 3 == 0 else -1 for i in range(n)]
    values = _attribute_values(rng, n, CELEBA_ATTRIBUTES, {"Eyeglasses": glasses})
    for i, file in enumerate(files):
        _image(rng, 178, 218, _colour(int(glasses[i] > 0))).save(images / file, quality=90)
    lines = _attribute_lines(CELEBA_ATTRIBUTES, zip(files, values.tolist(), strict=True))
    (folder / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    partition_lines = [f"{f} {p}\n" for f, p in zip(files, partitions, strict=True)]
    (folder / "list_eval_partition.txt").write_text("".join(partition_lines))
    return folder


def write_celeba_hq(root: Path, n: int = 10, with_mapping: bool = True, size: int = 64, seed: int = 0) -> Path:
    """Write ``root/celeba-hq/`` as CelebAMask-HQ ships it: ``CelebA-HQ-img/0.jpg``.., the attribute file
    ``CelebAMask-HQ-attribute-anno.txt`` and (``with_mapping``) ``CelebA-HQ-to-CelebA-mapping.txt`` with a
    CelebA ``list_eval_partition.txt`` that puts the originals of images 0..n-3 in train and the last 2 in test.

    Images are ``size`` pixels square (the real ones are 1024).
    """
    from unlearnctl.builtin.realdata import CELEBA_ATTRIBUTES

    folder = Path(root) / "celeba-hq"
    images = folder / "CelebA-HQ-img"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    files = [f"{i}.jpg" for i in range(n)]
    glasses = [1 if i % 2 == 0 else -1 for i in range(n)]
    values = _attribute_values(rng, n, CELEBA_ATTRIBUTES, {"Eyeglasses": glasses})
    for i, file in enumerate(files):
        _image(rng, size, size, _colour(i)).save(images / file, quality=90)
    lines = _attribute_lines(CELEBA_ATTRIBUTES, zip(files, values.tolist(), strict=True))
    (folder / "CelebAMask-HQ-attribute-anno.txt").write_text("\n".join(lines) + "\n")
    if with_mapping:
        originals = [(i, 1000 + 7 * i) for i in range(n)]
        mapping = ["idx         orig_idx    orig_file   "]
        mapping += [f"{i:<12d}{o:<12d}{o + 1:06d}.jpg" for i, o in originals]
        (folder / "CelebA-HQ-to-CelebA-mapping.txt").write_text("\n".join(mapping) + "\n")
        partition = [f"{o + 1:06d}.jpg {0 if i < n - 2 else 2}" for i, o in originals]
        (folder / "list_eval_partition.txt").write_text("\n".join(partition) + "\n")
    return folder


# --- UTKFace -----------------------------------------------------------------------------------

#: Three names that really are malformed in UTKFace's aligned & cropped release (race missing).
UTKFACE_REAL_BAD_NAMES = (
    "39_1_20170116174525125.jpg.chip.jpg",
    "61_1_20170109142408075.jpg.chip.jpg",
    "61_1_20170109150557335.jpg.chip.jpg",
)


def utkface_names(n: int = 20, seed: int = 0) -> list[str]:
    """Well-formed UTKFace names ``age_gender_race_datetime.jpg.chip.jpg`` covering every race."""
    rng = np.random.default_rng(seed)
    names = []
    for i in range(n):
        age, gender, race = int(rng.integers(1, 90)), i % 2, i % 5
        names.append(f"{age}_{gender}_{race}_2017011{i % 10}{100000000 + i:09d}.jpg.chip.jpg")
    return names


def write_utkface(
    root: Path, names: Sequence[str] | None = None, sub: str = "UTKFace", size: int = 40, seed: int = 0
) -> Path:
    """Write ``root/utkface/<sub>/<name>`` for each name (default: :func:`utkface_names` plus the three
    real malformed names). The real aligned images are 200 x 200; these are ``size`` square."""
    folder = Path(root) / "utkface"
    images = folder / sub
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = list(names) if names is not None else [*utkface_names(), *UTKFACE_REAL_BAD_NAMES]
    for i, name in enumerate(names):
        _image(rng, size, size, _colour(i)).save(images / name, format="JPEG", quality=90)
    return folder


# --- imagefolder -------------------------------------------------------------------------------


def write_imagefolder(
    root: Path,
    classes: Sequence[str] = ("cat", "dog", "fish"),
    per_class: int = 4,
    layout: str = "classes",
    size: int = 24,
    seed: int = 0,
) -> Path:
    """Write ``root/imagefolder/`` in one of three layouts.

    - ``classes``: ``<class>/img_000.png``..
    - ``split``: ``train/<class>/..`` and ``test/<class>/..`` (one test image per class)
    - ``csv``: ``images/img_000.png``.. plus ``metadata.csv`` with columns ``file_name``, ``id``,
      ``species`` (the class name), ``weight`` (float), ``group`` (int 0/1) and ``split`` (last image of
      each class in test)
    """
    folder = Path(root) / "imagefolder"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for c, cls in enumerate(classes):
        for k in range(per_class):
            image = _image(rng, size, size, _colour(c))
            test = k == per_class - 1
            if layout == "classes":
                path = Path(cls) / f"img_{k:03d}.png"
            elif layout == "split":
                path = Path("test" if test else "train") / cls / f"img_{k:03d}.png"
            elif layout == "csv":
                path = Path("images") / f"img_{c * per_class + k:03d}.png"
                rows.append(
                    {
                        "file_name": path.as_posix(),
                        "id": f"{cls}-{k}",
                        "species": cls,
                        "weight": f"{1.5 + k:.2f}",
                        "group": str(k % 2),
                        "split": "test" if test else "train",
                    }
                )
            else:
                raise ValueError(f"unknown layout '{layout}'")
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            image.save(folder / path)
    if layout == "csv":
        with open(folder / "metadata.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return folder


# --- google/ddpm-cifar10-32 stand-in -----------------------------------------------------------

#: ``google/ddpm-cifar10-32``'s UNet2DModel config, except ``block_out_channels``/``norm_num_groups``
DDPM_CIFAR10_CONFIG = {
    "sample_size": 32,
    "in_channels": 3,
    "out_channels": 3,
    "center_input_sample": False,
    "time_embedding_type": "positional",
    "freq_shift": 1,
    "flip_sin_to_cos": False,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [128, 256, 256, 256],
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "downsample_padding": 0,
    "act_fn": "silu",
    "attention_head_dim": None,
    "norm_num_groups": 32,
    "norm_eps": 1e-06,
}


def ddpm_cifar10_standin(seed: int = 0):
    """(UNet2DModel, DDPMScheduler) shaped like ``google/ddpm-cifar10-32`` with channels (16, 32, 32, 32)."""
    import torch
    from diffusers import DDPMScheduler, UNet2DModel

    config = {**DDPM_CIFAR10_CONFIG, "block_out_channels": [16, 32, 32, 32], "norm_num_groups": 8}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DModel(**config)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
    return unet, scheduler


def save_standin_model(
    folder: Path, layout: str = "pipeline", legacy_root_scheduler: bool = False, seed: int = 0
) -> Path:
    """Save :func:`ddpm_cifar10_standin` with diffusers' own ``save_pretrained``.

    ``pipeline``: ``DDPMPipeline.save_pretrained`` (``model_index.json``, ``unet/``, ``scheduler/``);
    ``flat``: UNet and scheduler files side by side. ``legacy_root_scheduler`` adds (or replaces) a root
    ``scheduler_config.json`` in the pre-1.0 format some early Hub repos still carry
    (``GaussianDDPMScheduler``, ``timesteps``, ``variance_type: fixed_large``).
    """
    import json

    from diffusers import DDPMPipeline

    folder = Path(folder)
    unet, scheduler = ddpm_cifar10_standin(seed)
    if layout == "pipeline":
        DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(folder, safe_serialization=True)
    elif layout == "flat":
        unet.save_pretrained(folder, safe_serialization=True)
        scheduler.save_pretrained(folder)
    else:
        raise ValueError(f"unknown layout '{layout}'")
    if legacy_root_scheduler:
        legacy = {
            "_class_name": "GaussianDDPMScheduler",
            "beta_end": 0.02,
            "beta_schedule": "linear",
            "beta_start": 0.0001,
            "timesteps": 1000,
            "variance_type": "fixed_large",
        }
        (folder / "scheduler_config.json").write_text(json.dumps(legacy, indent=2))
    return folder


def fill_hf_cache(cache: Path, repo_id: str, source: Path, commit: str = "0" * 40, ref: str = "main") -> Path:
    """Lay out ``source``'s files as the Hugging Face hub cache does after a download of ``repo_id``.

    ``<cache>/models--owner--name/blobs/<sha256>`` holds the bytes, ``snapshots/<commit>/<path>`` links
    to them, ``refs/<ref>`` holds the commit. Returns the snapshot folder.
    """
    repo = Path(cache) / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    for path in sorted(Path(source).rglob("*")):
        if not path.is_file():
            continue
        data = path.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / path.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        try:
            link.symlink_to(os.path.relpath(blob, link.parent))
        except OSError:  # no symlinks (Windows without privileges): the cache then holds copies
            link.write_bytes(data)
    return snapshot
