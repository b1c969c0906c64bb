"""The judge classifier: save/load round trip, training beats chance, the train-judge command, ResNet judges."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from unlearnctl import ModelNotAvailableError, UsageError
from unlearnctl.judge.arch import resolve_arch
from unlearnctl.judge.classifier import Judge, accuracy, load_judge, random_flip, random_shift, train_judge
from unlearnctl.testing import stand_ins
from unlearnctl.testing.tiny import tiny_image_set


def test_save_load_round_trip(tmp_path):
    judge = Judge(3, ["a", "b", "c"], image_size=8, channels=1, info={"note": "x"})
    judge.save(tmp_path / "j")
    assert sorted(p.name for p in (tmp_path / "j").iterdir()) == ["judge.json", "judge.safetensors"]
    assert set(load_file(tmp_path / "j" / "judge.safetensors")) == set(judge.state_dict())
    again = load_judge(tmp_path / "j")
    assert again.class_names == ["a", "b", "c"] and again.info == {"note": "x"} and not again.training
    x = torch.rand(5, 1, 8, 8) * 2 - 1
    judge.eval()
    assert torch.equal(judge(x), again(x))  # exact: the same weights (safetensors), input, kernels, threads
    assert again.features(x).shape == (5, again.feature_dim)
    # softmax over 3 classes in float32: exp, a 3-term sum and a division round each probability by a few
    # 2^-24 (6e-8) relative, so the sum is 1 within ~5e-7; allclose's default (1e-5 + 1e-8 here) is 20x that
    assert again.predict_proba(x).sum(1).allclose(torch.ones(5))


def test_load_judge_errors(tmp_path):
    with pytest.raises(ModelNotAvailableError, match="train-judge"):
        load_judge(tmp_path)
    with pytest.raises(UsageError, match="unknown judge architecture"):
        Judge(3, arch="resnet")  # type: ignore[arg-type]


def test_random_shift_keeps_content_and_fills_background():
    x = torch.full((4, 1, 8, 8), -1.0)
    x[:, :, 3:5, 3:5] = 1.0
    shifted = random_shift(x, 1, torch.Generator().manual_seed(0))
    assert shifted.shape == x.shape and (shifted == 1).sum() == (x == 1).sum()
    assert not torch.equal(shifted, x)


def test_briefly_trained_judge_beats_chance_and_is_seeded():
    train = tiny_image_set(n_per_class=20, num_classes=3, seed=0)
    test = tiny_image_set(n_per_class=10, num_classes=3, seed=1)
    judge, acc = train_judge(train, test, epochs=4, batch_size=16, seed=0)
    assert acc > 0.8  # chance is 1/3
    assert acc == accuracy(judge, test)
    assert judge.info["test_accuracy"] == acc and judge.info["train_fingerprint"] == train.fingerprint()
    again, _ = train_judge(train, test, epochs=4, batch_size=16, seed=0)  # exact: same seed, ops, threads
    assert all(torch.equal(a, b) for a, b in zip(judge.state_dict().values(), again.state_dict().values(), strict=True))


def test_train_judge_command(cli, tmp_path):
    out = tmp_path / "judge"
    result = cli("train-judge", "--dataset", "digits", "--out", out, "--epochs", "3", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    info = json.loads((out / "judge.json").read_text())["info"]
    assert report["test_accuracy"] == info["test_accuracy"] > 0.5  # chance is 0.1
    assert info["dataset"] == "digits" and info["test_size"] == 296 and info["epochs"] == 3
    assert load_judge(out).num_classes == 10
    again = cli("train-judge", "--dataset", "digits", "--out", out, "--epochs", "1")
    assert again.exit_code == 2 and "already exists" in again.stderr
    bad = cli("train-judge", "--dataset", "digits", "--out", tmp_path / "x", "--arch", "vit")
    assert bad.exit_code == 2 and "unknown judge architecture" in bad.stderr
    assert bad.stderr.strip().count("\n") == 0 and "auto, cnn-small, resnet18, resnet34, resnet50" in bad.stderr
    assert not (tmp_path / "x").exists()
    assert info["arch"] == "cnn-small" and json.loads((out / "judge.json").read_text())["arch"] == "cnn-small"


def test_tiny_judge_for_other_tests():
    from unlearnctl.testing.tiny import tiny_judge

    judge = tiny_judge(num_classes=3)
    assert accuracy(judge, tiny_image_set(n_per_class=5, num_classes=3, seed=7)) > 0.8
    untrained = tiny_judge(num_classes=4, epochs=0)
    assert untrained.num_classes == 4 and not untrained.training


# --- architectures ------------------------------------------------------------------------------


def test_auto_arch_keeps_cnn_small_for_small_images_and_picks_resnet18_for_natural_images():
    assert resolve_arch("auto", 8, 1) == "cnn-small"  # the built-in digits
    assert resolve_arch("auto", 16, 3) == "cnn-small"
    assert resolve_arch("auto", 28, 1) == "cnn-small"  # MNIST-like grey images
    assert resolve_arch("auto", 32, 3) == "resnet18"  # CIFAR-10
    assert resolve_arch("auto", 64, 1) == "resnet18"
    assert resolve_arch("resnet50", 8, 1) == "resnet50"
    with pytest.raises(UsageError, match="unknown judge architecture 'vit': available: auto, cnn-small, resnet18"):
        resolve_arch("vit", 8, 1)


@pytest.mark.parametrize(("arch", "image_size", "feature_dim"), [("resnet18", 32, 512), ("resnet50", 8, 2048)])
def test_resnet_judges_adapt_to_the_images(arch, image_size, feature_dim):
    judge = Judge(4, image_size=image_size, channels=1, arch=arch).eval()
    first = judge.body[0]
    assert isinstance(first, torch.nn.Conv2d) and first.in_channels == 1
    assert first.kernel_size == (3, 3) and first.stride == (1, 1)  # the CIFAR stem, no max-pool
    assert isinstance(judge.body[3], torch.nn.Identity)
    x = torch.rand(2, 1, image_size, image_size) * 2 - 1
    assert judge(x).shape == (2, 4) and judge.features(x).shape == (2, feature_dim) == (2, judge.feature_dim)
    assert torch.equal(judge.head(judge.features(x)), judge(x))  # exact: forward is head(body(x)), the same ops
    big = Judge(2, image_size=96, channels=3, arch="resnet18")  # larger images keep torchvision's stem
    assert big.body[0].kernel_size == (7, 7) and isinstance(big.body[3], torch.nn.MaxPool2d)


def test_random_flip_mirrors_some_images():
    x = torch.arange(8 * 4.0).view(8, 1, 1, 4)
    flipped = random_flip(x, torch.Generator().manual_seed(0))
    mirrored = [torch.equal(f, o.flip(-1)) for f, o in zip(flipped, x, strict=True)]
    assert all(m or torch.equal(f, o) for m, f, o in zip(mirrored, flipped, x, strict=True)) and 0 < sum(mirrored) < 8


def test_resnet_judge_trains_and_round_trips(tmp_path):
    train = tiny_image_set(n_per_class=8, num_classes=3, image_size=8, channels=3, seed=0)
    test = tiny_image_set(n_per_class=4, num_classes=3, image_size=8, channels=3, seed=1)
    judge, acc = train_judge(train, test, arch="resnet18", epochs=1, batch_size=8, seed=0)
    assert judge.arch == "resnet18" and not judge.training and judge.feature_dim == 512
    assert 0.0 <= acc <= 1.0 and judge.info["test_accuracy"] == acc
    assert judge.info["optimizer"] == "adamw" and judge.info["augmentation"]["flip"] is True  # RGB data
    judge.save(tmp_path / "j")
    config = json.loads((tmp_path / "j" / "judge.json").read_text())
    assert config["arch"] == "resnet18" and config["image_size"] == 8 and config["channels"] == 3
    assert config["class_names"] == ["0", "1", "2"] and config["normalization"] == {"mean": [0.5] * 3, "std": [0.5] * 3}
    again = load_judge(tmp_path / "j")
    assert again.arch == "resnet18" and not again.training
    x = torch.rand(5, 3, 8, 8) * 2 - 1
    assert torch.equal(judge(x), again(x)) and torch.equal(judge.features(x), again.features(x))
    grey, _ = train_judge(
        tiny_image_set(4, 3, seed=0), tiny_image_set(2, 3, seed=1), arch="resnet18", epochs=1, batch_size=6
    )
    assert grey.info["augmentation"]["flip"] is False  # never flip grey (digit-like) data by default


def test_load_judge_rejects_a_tampered_or_unknown_arch(tmp_path):
    Judge(3, image_size=8, channels=1).save(tmp_path / "j")
    config_file = tmp_path / "j" / "judge.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "arch": "vit-huge"}))
    with pytest.raises(UsageError, match=r"judge.json names unknown judge architecture 'vit-huge': available: cnn"):
        load_judge(tmp_path / "j")
    config_file.write_text(json.dumps({**config, "arch": "resnet18", "width": None, "feature_dim": None}))
    with pytest.raises(UsageError, match=r"do not fit the network that judge\.json describes \(resnet18") as err:
        load_judge(tmp_path / "j")
    assert "\n" not in str(err.value)
    config_file.write_text(json.dumps({**config, "arch": "resnet18"}))  # a cnn-small width left in
    with pytest.raises(UsageError, match="does not describe a judge"):
        load_judge(tmp_path / "j")
    config_file.write_text(json.dumps({**config, "normalization": {"mean": [0.0], "std": [1.0]}}))
    with pytest.raises(UsageError, match="unsupported judge normalization"):
        load_judge(tmp_path / "j")
    config_file.write_text("{not json")
    with pytest.raises(UsageError, match="not valid JSON"):
        load_judge(tmp_path / "j")


def test_old_judge_json_without_normalization_still_loads(tmp_path):
    Judge(2, image_size=8, channels=1).save(tmp_path / "j")
    config_file = tmp_path / "j" / "judge.json"
    config = json.loads(config_file.read_text())
    del config["normalization"]
    config_file.write_text(json.dumps(config))
    assert load_judge(tmp_path / "j").arch == "cnn-small"


def test_train_judge_command_resnet18(cli, tmp_path):
    stand_ins.write_imagefolder(tmp_path, layout="split", per_class=3)  # 3 classes, RGB, read at 64 px
    out = tmp_path / "judge"
    result = cli(
        "train-judge", "--dataset", "imagefolder", "--data-dir", tmp_path / "imagefolder", "--out", out,
        "--arch", "resnet18", "--epochs", "1", "--batch-size", "4", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["arch"] == "resnet18" and report["batch_size"] == 4 and report["epochs"] == 1
    assert report["augmentation"]["flip"] is True and report["train_size"] == 6 and report["test_size"] == 3
    judge = load_judge(out)
    assert judge.arch == "resnet18" and judge.image_size == 64 and judge.class_names == ["cat", "dog", "fish"]
    assert judge.features(torch.zeros(1, 3, 64, 64)).shape == (1, 512)
