"""Model presets and --model resolution; the shipped ddpm-digits model, its judge and its manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel

from unlearnctl import ModelNotAvailableError, UnknownComponentError
from unlearnctl.builtin.models import asset_folder
from unlearnctl.inputs import load_dataset, load_model
from unlearnctl.integrity import run_checks
from unlearnctl.models.folder import state_sha256
from unlearnctl.testing.tiny import tiny_model

SHIPPED = asset_folder("ddpm-digits")


def test_shipped_model_loads_with_plain_diffusers():
    unet = UNet2DModel.from_pretrained(SHIPPED)
    scheduler = DDPMScheduler.from_pretrained(SHIPPED)
    assert unet.config.sample_size == 8 and unet.config.in_channels == 1 and unet.config.num_class_embeds == 11
    assert scheduler.config.num_train_timesteps == 1000 and scheduler.config.beta_schedule == "linear"
    x = torch.zeros(2, 1, 8, 8)
    out = unet(x, torch.tensor([10, 500]), class_labels=torch.tensor([3, 10])).sample
    assert out.shape == x.shape and torch.isfinite(out).all()
    size = sum(p.stat().st_size for p in SHIPPED.rglob("*") if p.is_file())
    assert size < 6 * 2**20  # a few MB at most


def test_preset_metadata_judge_and_manifest():
    model = load_model("ddpm-digits")
    assert model.source == "ddpm-digits" and model.default_dataset == "digits"
    assert model.class_names == [str(c) for c in range(10)] and model.num_classes == 10
    assert model.extra["weights"] == "ema" and model.judge_path == SHIPPED / "judge"
    manifest = json.loads((SHIPPED / "manifest.json").read_text())
    assert manifest["kind"] == "train" and manifest["dataset"]["name"] == "digits"
    assert manifest["weights"]["output_sha256"] == state_sha256(model.unet)
    # the files are the run's model/ files, unchanged (the judge beside them is not part of that hash)
    assert manifest["weights"]["output_files_sha256"] == _weights_only_sha(SHIPPED)


def _weights_only_sha(folder: Path) -> str:
    import hashlib

    from unlearnctl.models.folder import file_sha256

    h = hashlib.sha256()
    name = "diffusion_pytorch_model.safetensors"
    h.update(f"{name}\0{file_sha256(folder / name)}\n".encode())
    return h.hexdigest()


def test_shipped_judge_reads_the_test_split():
    from unlearnctl.judge.classifier import accuracy, load_judge

    judge = load_judge(SHIPPED / "judge")
    assert judge.num_classes == 10 and judge.info["dataset"] == "digits"
    assert accuracy(judge, load_dataset("digits", "test")) >= 0.97


def test_shipped_model_draws_the_class_asked_for():
    """A small version of the quality bar in docs/digits.md: 10 samples per class instead of 100, and
    10 DDIM steps instead of 50 (as good on this model, docs/sampling.md)."""
    from unlearnctl.judge.classifier import load_judge
    from unlearnctl.sampling import SampleOptions, class_labels_for, generate

    model = load_model("ddpm-digits")
    labels = class_labels_for(model, 100)
    images = generate(model, labels, 100, SampleOptions(steps=10), seed=0)
    predicted = load_judge(model.judge_path).predict_proba(images).argmax(1)
    assert (predicted == labels).float().mean() >= 0.9


def test_list_models_shows_the_preset(cli):
    result = cli("list", "models")
    assert result.exit_code == 0 and "ddpm-digits" in result.stdout


def test_load_model_from_flat_folder_and_run_folder(tmp_path):
    model = tiny_model()
    model.save(tmp_path / "flat")
    assert state_sha256(load_model(str(tmp_path / "flat")).unet) == state_sha256(model.unet)
    run = tmp_path / "run"
    model.save(run / "model")
    (run / "manifest.json").write_text("{}")
    with run_checks(False):  # `{}` records nothing to verify the run against (see docs/verify.md)
        loaded = load_model(str(run))
    assert loaded.path == run / "model" and state_sha256(loaded.unet) == state_sha256(model.unet)


def test_load_model_errors(tmp_path):
    with pytest.raises(UnknownComponentError, match="did you mean 'ddpm-digits'"):
        load_model("ddpm-digit")
    with pytest.raises(ModelNotAvailableError, match="does not exist"):
        load_model(str(tmp_path / "missing" / "model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotAvailableError, match="holds no model"):
        load_model(str(tmp_path / "empty"))


def test_load_dataset_errors():
    from unlearnctl import UsageError

    with pytest.raises(UnknownComponentError, match="did you mean 'digits'"):
        load_dataset("digit")
    with pytest.raises(UsageError, match="split"):
        load_dataset("digits", "val")  # type: ignore[arg-type]


def test_shipped_unconditional_model_and_its_judge():
    """ddpm-digits-uncond: the same network without class input, the judge of ddpm-digits beside it."""
    from unlearnctl.judge.classifier import load_judge
    from unlearnctl.judge.verdicts import class_fractions
    from unlearnctl.models.folder import folder_sha256
    from unlearnctl.sampling import SampleOptions

    folder = asset_folder("ddpm-digits-uncond")
    assert UNet2DModel.from_pretrained(folder).config.num_class_embeds is None
    model = load_model("ddpm-digits-uncond")
    assert not model.conditional and model.default_dataset == "digits" and model.extra["weights"] == "ema"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["weights"]["output_sha256"] == state_sha256(model.unet)
    assert manifest["runner"]["train"]["conditional"] is False
    assert folder_sha256(model.judge_path) == folder_sha256(SHIPPED / "judge")
    # it draws every digit: a small version of docs/digits.md's shares (1,000 samples, 50 steps there)
    shares = class_fractions(model, load_judge(model.judge_path), n=200, sampler=SampleOptions(steps=10))
    assert min(shares) >= 0.03 and max(shares) <= 0.2
