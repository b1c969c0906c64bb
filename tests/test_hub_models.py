"""``ddpm-cifar10`` and any diffusers UNet2DModel folder or hub id, offline, with a tiny stand-in model.

The stand-in has ``google/ddpm-cifar10-32``'s config (tiny channels) and is saved with diffusers'
own ``save_pretrained``; the Hugging Face cache is laid out as ``huggingface_hub`` leaves it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from unlearnctl import ModelNotAvailableError
from unlearnctl.builtin.hub_models import DdpmCifar10
from unlearnctl.models import hub as hm
from unlearnctl.models.folder import state_sha256
from unlearnctl.testing import stand_ins as si

REPO = "google/ddpm-cifar10-32"
COMMIT = "1f2e3d4c5b6a79881f2e3d4c5b6a79881f2e3d4c"


@pytest.fixture(scope="module")
def pipeline_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DDPMPipeline-layout stand-in that also carries an early-Hub root scheduler config."""
    return si.save_standin_model(tmp_path_factory.mktemp("m") / "pipe", "pipeline", legacy_root_scheduler=True)


@pytest.fixture(scope="module")
def reference_sha(pipeline_folder: Path) -> str:
    return state_sha256(si.ddpm_cifar10_standin()[0])


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache, offline. ``huggingface_hub`` reads HF_HUB_OFFLINE and HF_HUB_CACHE
    once, at import, so the test patches its constants as well as the environment."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_standin_has_the_real_config_keys(pipeline_folder: Path) -> None:
    config = json.loads((pipeline_folder / "unet" / "config.json").read_text())
    assert config["_class_name"] == "UNet2DModel"
    for key, value in si.DDPM_CIFAR10_CONFIG.items():
        if key not in ("block_out_channels", "norm_num_groups"):
            assert config[key] == value, key
    index = json.loads((pipeline_folder / "model_index.json").read_text())
    assert index["_class_name"] == "DDPMPipeline" and index["unet"] == ["diffusers", "UNet2DModel"]


def test_pipeline_folder_loads_unet_and_scheduler_subfolders(pipeline_folder: Path, reference_sha: str) -> None:
    model = hm.load_hub_model(pipeline_folder)
    assert state_sha256(model.unet) == reference_sha
    assert not model.conditional and model.image_size == 32 and model.channels == 3
    assert model.path == pipeline_folder / "unet"
    assert model.extra["origin"]["scheduler"] == "scheduler/scheduler_config.json"
    assert model.scheduler.config.num_train_timesteps == 1000 and model.scheduler.config.beta_end == 0.02
    assert next(model.unet.parameters()).dtype == torch.float32


def test_flat_folder_with_legacy_scheduler_falls_back_to_the_ddpm_schedule(tmp_path: Path, reference_sha: str) -> None:
    folder = si.save_standin_model(tmp_path / "flat", "flat", legacy_root_scheduler=True)
    model = hm.load_hub_model(folder)
    assert state_sha256(model.unet) == reference_sha and model.path == folder
    assert model.extra["origin"]["scheduler"].startswith("defaults")
    config = model.scheduler.config
    assert (config.num_train_timesteps, config.beta_start, config.beta_end, config.beta_schedule) == (
        1000,
        1e-4,
        0.02,
        "linear",
    )


def test_ddpm_cifar10_loads_from_the_hugging_face_cache_offline(
    pipeline_folder: Path, reference_sha: str, hf_cache: Path
) -> None:
    from unlearnctl.registry import get_registry

    si.fill_hf_cache(hf_cache, REPO, pipeline_folder, commit=COMMIT)
    info = get_registry().get("model", "ddpm-cifar10")
    assert info.cls.default_dataset == "cifar10" and "realdata" not in info.provider
    model = info.cls().load()
    assert state_sha256(model.unet) == reference_sha
    assert model.source == "ddpm-cifar10" and model.default_dataset == "cifar10"
    assert model.class_names == si.CIFAR10_NAMES and not model.conditional
    assert model.extra["origin"] == {"hub_repo": REPO, "commit": COMMIT, "scheduler": "scheduler/scheduler_config.json"}
    pinned = hm.load_hub_model(f"{REPO}@{COMMIT}")
    assert state_sha256(pinned.unet) == reference_sha and pinned.class_names == []


def test_ddpm_cifar10_offline_without_files_says_how_to_provide_them(hf_cache: Path) -> None:
    with pytest.raises(ModelNotAvailableError) as info:
        DdpmCifar10().load()
    message = str(info.value)
    assert "\n" not in message and "HF_HUB_OFFLINE is set" in message and str(hf_cache) in message
    assert f"hf download {REPO} --local-dir DIR" in message and "--model DIR" in message


def test_cache_without_weights_is_reported(pipeline_folder: Path, hf_cache: Path, tmp_path: Path) -> None:
    partial = tmp_path / "partial"
    partial.mkdir()
    for rel in ("model_index.json", "unet/config.json", "scheduler/scheduler_config.json"):
        (partial / rel).parent.mkdir(parents=True, exist_ok=True)
        (partial / rel).write_bytes((pipeline_folder / rel).read_bytes())
    si.fill_hf_cache(hf_cache, REPO, partial, commit=COMMIT)
    with pytest.raises(ModelNotAvailableError, match="no weights"):
        hm.load_hub_model(REPO)


def test_saved_models_keep_class_names_and_origin(pipeline_folder: Path, tmp_path: Path) -> None:
    model = hm.load_hub_model(pipeline_folder, class_names=list(si.CIFAR10_NAMES), default_dataset="cifar10")
    model.save(tmp_path / "out")
    again = hm.load_hub_model(tmp_path / "out")
    assert again.class_names == si.CIFAR10_NAMES and again.default_dataset == "cifar10"
    assert again.extra["origin"] == model.extra["origin"]
    assert state_sha256(again.unet) == state_sha256(model.unet)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("no/such/folder", "no such folder, and not a Hugging Face model id"),
        ("file.txt", "is a file"),
        ("cond", "holds a UNet2DConditionModel"),
        ("noweights", "no weights"),
        ("empty", "not a diffusers model folder"),
    ],
)
def test_bad_model_specs_get_one_clear_line(spec: str, match: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file.txt").write_text("x")
    for name in ("cond", "noweights", "empty"):
        (tmp_path / name).mkdir()
    (tmp_path / "cond" / "config.json").write_text('{"_class_name": "UNet2DConditionModel"}')
    (tmp_path / "noweights" / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(ModelNotAvailableError, match=match) as info:
        hm.load_hub_model(spec)
    assert "\n" not in str(info.value)
