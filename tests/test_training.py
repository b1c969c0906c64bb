"""Training a DDPM from scratch: the loop, the run folder of `unlearnctl train`, and --forget."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel

from unlearnctl import OptionError
from unlearnctl.models.folder import load_model_folder, state_sha256
from unlearnctl.testing.tiny import tiny_image_set
from unlearnctl.training import TrainOptions, resolve_train_options, train_model

TINY = {"arch": "tiny", "batch_size": 16, "warmup_steps": 0, "lr": 3e-3, "lr_schedule": "constant"}


def test_training_lowers_the_loss_and_saves_a_loadable_folder(tmp_path):
    data = tiny_image_set(n_per_class=8, num_classes=3)
    logged = []
    result = train_model(
        data, TrainOptions(steps=80, log_every=10, **TINY), seed=0, on_step=lambda s, v: logged.append((s, v))
    )
    assert [s for s, _ in logged] == list(range(10, 81, 10))
    first, last = logged[0][1]["loss"], logged[-1][1]["loss"]
    assert last < 0.7 * first, (first, last)
    assert all(set(v) == {"loss", "lr", "elapsed"} for _, v in logged)

    model = result.model
    assert model.conditional and model.num_classes == 3 and model.null_class == 3
    assert model.extra["weights"] == "ema"
    model.save(tmp_path / "m")
    # diffusers alone loads it; unlearnctl loads it back identically
    unet = UNet2DModel.from_pretrained(tmp_path / "m")
    assert unet.config.num_class_embeds == 4
    DDPMScheduler.from_pretrained(tmp_path / "m")
    again = load_model_folder(tmp_path / "m")
    assert state_sha256(again.unet) == state_sha256(model.unet)
    assert again.class_names == ["0", "1", "2"] and again.extra["weights"] == "ema"


def test_training_is_deterministic_under_a_seed():
    data = tiny_image_set(n_per_class=4, num_classes=2)
    options = TrainOptions(steps=5, log_every=5, **TINY)
    a, b = (train_model(data, options, seed=3) for _ in range(2))
    c = train_model(data, options, seed=4)
    # exact: the same seed, ops and thread count (docs/forget.md, "When are runs bit-identical?")
    assert state_sha256(a.model.unet) == state_sha256(b.model.unet)
    assert state_sha256(a.model.unet) != state_sha256(c.model.unet)
    assert a.final_loss == b.final_loss


def test_saved_weights_are_the_ema():
    data = tiny_image_set(n_per_class=4, num_classes=2)
    # the optimizer trajectory is the same; the EMA (decay 0.999) lags behind the raw weights (decay 0)
    ema = train_model(data, TrainOptions(steps=20, log_every=20, ema_decay=0.999, **TINY), seed=0).model.unet
    from unlearnctl.training import build_unet

    init = build_unet("tiny", 8, 1, 2, seed=0)
    drift_ema = sum((p - q).abs().sum() for p, q in zip(ema.parameters(), init.parameters(), strict=True))
    raw = train_model(data, TrainOptions(steps=20, log_every=20, ema_decay=0.0, **TINY), seed=0).model.unet
    drift_raw = sum((p - q).abs().sum() for p, q in zip(raw.parameters(), init.parameters(), strict=True))
    assert drift_ema < drift_raw
    assert state_sha256(ema) != state_sha256(raw)


def test_unconditional_training_and_missing_classes():
    data = tiny_image_set(n_per_class=4, num_classes=3)
    uncond = train_model(data, TrainOptions(steps=2, conditional=False, **TINY)).model
    assert not uncond.conditional and uncond.class_names == []
    # the retrain baseline keeps every class id although the remaining set lacks one
    remain = data.subset(i for i, lbl in zip(data.ids, data.labels, strict=True) if lbl != 1)
    model = train_model(remain, TrainOptions(steps=2, **TINY), class_names=data.class_names).model
    assert model.num_classes == 3


def test_train_options_resolution():
    o = resolve_train_options({"lr": 1e-4, "steps": 10}, ["lr=2e-4"], steps=7)
    assert (o.lr, o.steps) == (2e-4, 7)
    with pytest.raises(OptionError, match="did you mean 'ema_decay'"):
        resolve_train_options(sets=["ema_decy=0.9"])
    with pytest.raises(OptionError, match="'batch_size'"):
        resolve_train_options(sets=["batch_size=0"])


def _train_cli(cli, out, *extra):
    return cli(
        "train", "--dataset", "digits", "--out", out, "--steps", "3", "--set", "arch=tiny",
        "--set", "grid_per_class=1", "--set", "log_every=1", *extra,
    )  # fmt: skip


def test_train_command_writes_a_whole_run_folder(cli, tmp_path):
    out = tmp_path / "run"
    result = _train_cli(cli, out, "--seed", "1")
    assert result.exit_code == 0, result.output
    names = ["checksums.sha256", "log.jsonl", "manifest.json", "model", "samples"]
    assert sorted(p.name for p in out.iterdir()) == names
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3] and all("loss" in line for line in lines)
    assert (out / "samples" / "grid.png").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "train" and manifest["optimizer_steps"] == 3 and manifest["seed"] == 1
    assert manifest["dataset"]["name"] == "digits" and manifest["dataset"]["size"] == 1501
    assert manifest["runner"]["train"]["arch"] == "tiny" and manifest["weights"]["saved_weights"] == "ema"
    unet = UNet2DModel.from_pretrained(out / "model")
    assert state_sha256(unet) == manifest["weights"]["output_sha256"]
    # never overwrites
    again = _train_cli(cli, out)
    assert again.exit_code == 2 and "already exists" in again.stderr


def test_train_forget_trains_on_the_remaining_set_only(cli, tmp_path, monkeypatch):
    import unlearnctl.commands.train as training

    seen = {}
    real = training.train_model

    def spy(data, *args, **kwargs):
        seen["ids"] = list(data.ids)
        seen["labels"] = list(data.labels)
        return real(data, *args, **kwargs)

    monkeypatch.setattr(training, "train_model", spy)
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("digits-0000\ndigits-0001\n")
    out = tmp_path / "retrain"
    result = _train_cli(cli, out, "--classes", "3", "--forget", f"indices:{ids_file}")
    assert result.exit_code == 0, result.output
    assert 3 not in seen["labels"]
    assert "digits-0000" not in seen["ids"] and "digits-0001" not in seen["ids"]
    manifest = json.loads((out / "manifest.json").read_text())
    forget = manifest["forget"]
    assert forget["size"] + forget["remain_size"] == 1501 == forget["size"] + len(seen["ids"])
    assert forget["forget_classes"] == [3]
    assert [s["name"] for s in forget["selectors"]] == ["classes", "indices"]
    assert torch.tensor(seen["labels"]).unique().tolist() == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    # the model keeps all ten class ids
    assert UNet2DModel.from_pretrained(out / "model").config.num_class_embeds == 11


def test_train_bad_input_exits_2_and_writes_nothing(cli, tmp_path):
    out = tmp_path / "nope"
    for extra in (["--classes", "12"], ["--set", "lr=-1"], ["--forget", "random:2"], ["--seed", "-1"]):
        result = _train_cli(cli, out, *extra)
        assert result.exit_code == 2, (extra, result.output)
        assert result.stderr.startswith("error:") and len(result.stderr.strip().splitlines()) == 1
        assert not out.exists()
    assert not any(p.name.startswith(".nope") for p in tmp_path.iterdir())
