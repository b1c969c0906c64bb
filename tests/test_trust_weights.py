"""The trust boundary for weights: safetensors only, one line for anything else, files that follow the umask.

A pickled weights file can run code when it is loaded, so no model folder, pipeline ``unet/``, Hub
snapshot or Inception file is ever unpickled; a damaged or foreign model folder is one line (exit 2),
never a traceback. See docs/verify.md.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch

from unlearnctl import ModelNotAvailableError
from unlearnctl.inputs import load_model
from unlearnctl.models.hub import load_hub_model
from unlearnctl.testing import stand_ins as si
from unlearnctl.testing.tiny import tiny_model

WEIGHTS = "diffusion_pytorch_model.safetensors"
PICKLED = "diffusion_pytorch_model.bin"


class _Payload:
    """Unpickling this creates ``marker``: proof that a pickle was loaded with the full unpickler."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def pickled_folder(folder: Path, marker: Path | None = None) -> Path:
    """A tiny flat model folder whose weights are a plain ``torch.save`` (optionally with a payload)."""
    tiny_model().save(folder)
    state = tiny_model().unet.state_dict()
    (folder / WEIGHTS).unlink()
    torch.save({**state, "payload": _Payload(marker)} if marker else state, folder / PICKLED)
    return folder


def one_line_error(result, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


# --- finding 1: pickled weights are refused, everywhere ------------------------------------------------


def test_a_folder_with_pickled_weights_is_refused_naming_the_file(tmp_path: Path) -> None:
    folder = pickled_folder(tmp_path / "m", marker=tmp_path / "ran")
    with pytest.raises(ModelNotAvailableError, match=PICKLED) as err:
        load_model(str(folder))
    assert "safe_serialization=True" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "ran").exists()


def test_sample_refuses_pickled_weights_in_one_line(cli, tmp_path: Path) -> None:
    folder = pickled_folder(tmp_path / "m", marker=tmp_path / "ran")
    line = one_line_error(cli("sample", "--model", folder, "-n", "1", "--steps", "1", "--out", tmp_path / "s"))
    assert PICKLED in line and "safetensors" in line
    assert not (tmp_path / "ran").exists() and not (tmp_path / "s").exists()


def test_a_pipeline_folder_with_pickled_unet_weights_is_refused(tmp_path: Path) -> None:
    folder = si.save_standin_model(tmp_path / "pipe", "pipeline")
    unet = folder / "unet"
    state = si.ddpm_cifar10_standin()[0].state_dict()
    (unet / WEIGHTS).unlink()
    torch.save(state, unet / PICKLED)
    with pytest.raises(ModelNotAvailableError, match=f"unet/{PICKLED}"):
        load_hub_model(folder)
    with pytest.raises(ModelNotAvailableError, match=PICKLED):
        load_model(str(folder))


def test_a_hub_snapshot_with_only_pickled_weights_is_refused(tmp_path: Path, monkeypatch) -> None:
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    source = si.save_standin_model(tmp_path / "pipe", "pipeline")
    (source / "unet" / WEIGHTS).unlink()
    torch.save(si.ddpm_cifar10_standin()[0].state_dict(), source / "unet" / PICKLED)
    si.fill_hf_cache(cache, "someone/pickled-ddpm", source, commit="1" * 40)
    with pytest.raises(ModelNotAvailableError, match="safetensors") as err:
        load_hub_model("someone/pickled-ddpm")
    assert "\n" not in str(err.value)


def test_a_crafted_manifest_pointing_replay_at_pickled_weights_is_refused(cli, tiny, tmp_path: Path) -> None:
    run = tmp_path / "run"
    forgot = cli("forget", "--model", "tiny-cond", "--classes", "1", "--out", run, "--set", "steps=2",
                 "--set", "remain_batch_size=4", "--set", "forget_batch_size=4", "--grid-per-class", "0")  # fmt: skip
    assert forgot.exit_code == 0, forgot.output
    folder = pickled_folder(tmp_path / "pickled", marker=tmp_path / "ran")
    (folder / "unlearnctl.json").write_text(json.dumps({"default_dataset": "tiny", "class_names": ["0", "1", "2"]}))
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["weights"].update(model=str(folder), model_path=str(folder), preset=None)
    crafted = tmp_path / "crafted.json"
    crafted.write_text(json.dumps(manifest))
    line = one_line_error(cli("replay", crafted, "--verify", "--out", tmp_path / "again"))
    assert PICKLED in line
    assert not (tmp_path / "ran").exists() and not (tmp_path / "again").exists()


def test_safetensors_win_over_a_pickle_beside_them(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    tiny_model().save(folder)
    torch.save({"payload": _Payload(tmp_path / "ran")}, folder / PICKLED)
    model = load_model(str(folder))
    assert model.num_classes == 3 and not (tmp_path / "ran").exists()


def test_the_inception_file_is_never_unpickled_with_code(tmp_path: Path) -> None:
    from unlearnctl.errors import UsageError
    from unlearnctl.fidelity import FeatureExtractor

    hostile = tmp_path / "inception.pth"
    torch.save({"w": torch.zeros(2), "payload": _Payload(tmp_path / "ran")}, hostile)
    with pytest.raises(UsageError, match=r"inception\.pth"):
        FeatureExtractor.inception(hostile)
    assert not (tmp_path / "ran").exists()
    plain = tmp_path / "plain.pth"
    torch.save({"w": torch.zeros(2)}, plain)
    assert FeatureExtractor.inception(plain).source == str(plain)


# --- finding 2: foreign or damaged folders are one line ---------------------------------------------------


def test_a_config_naming_another_class_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    tiny_model().save(folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "_class_name": "UNet2DConditionModel"}))
    with pytest.raises(ModelNotAvailableError, match="UNet2DConditionModel"):
        load_model(str(folder))


@pytest.mark.parametrize("damage", ["config", "header", "shapes", "partial", "meta"])
def test_a_damaged_model_folder_is_one_line_exit_2(cli, tmp_path: Path, damage: str) -> None:
    folder = tmp_path / "m"
    tiny_model().save(folder)
    weights = folder / WEIGHTS
    if damage == "config":
        (folder / "config.json").write_text("{not json")
    elif damage == "header":
        data = bytearray(weights.read_bytes())
        data[8] ^= 0xFF  # the first byte of the JSON header (after its 8-byte length)
        weights.write_bytes(bytes(data))
    elif damage == "shapes":  # a valid safetensors file holding the weights of another network
        from safetensors.torch import save_file

        save_file({"conv_in.weight": torch.zeros(1, 1, 1, 1)}, weights)
    elif damage == "partial":  # some weights missing: diffusers would initialise them at random
        from safetensors.torch import load_file, save_file

        state = load_file(weights)
        save_file({k: v for k, v in state.items() if not k.startswith("conv_out")}, weights)
    else:
        (folder / "unlearnctl.json").write_text("[1, 2")
    line = one_line_error(cli("sample", "--model", folder, "-n", "1", "--steps", "1", "--out", tmp_path / "s"))
    assert str(folder) in line


# --- finding 3: the weights follow the umask like every other file ----------------------------------------


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield 0o644
    os.umask(old)


def test_a_run_folder_weights_file_follows_the_umask(cli, tiny, tmp_path: Path, umask_022: int) -> None:
    run = tmp_path / "run"
    result = cli("forget", "--model", "tiny-cond", "--classes", "1", "--out", run, "--set", "steps=1",
                 "--set", "remain_batch_size=4", "--set", "forget_batch_size=4", "--grid-per-class", "0")  # fmt: skip
    assert result.exit_code == 0, result.output
    modes = {p.relative_to(run).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in run.rglob("*") if p.is_file()}
    assert modes[f"model/{WEIGHTS}"] == umask_022
    assert set(modes.values()) == {umask_022}, modes


def test_saved_models_and_judges_follow_the_umask(tmp_path: Path, umask_022: int) -> None:
    from unlearnctl.judge.classifier import WEIGHTS_FILE, Judge

    tiny_model().save(tmp_path / "m")
    Judge(3).save(tmp_path / "j")
    assert stat.S_IMODE((tmp_path / "m" / WEIGHTS).stat().st_mode) == umask_022
    assert stat.S_IMODE((tmp_path / "j" / WEIGHTS_FILE).stat().st_mode) == umask_022


def test_copies_of_a_model_folder_load(tmp_path: Path) -> None:
    """Guard for the tests above: an intact copy loads (the refusals are about the damage, not the copy)."""
    tiny_model().save(tmp_path / "m")
    shutil.copytree(tmp_path / "m", tmp_path / "copy")
    assert load_model(str(tmp_path / "copy")).num_classes == 3
