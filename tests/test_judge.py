"""The judge classifier: save/load round trip, training beats chance, the train-judge command."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from unlearnctl import ModelNotAvailableError, UsageError
from unlearnctl.judge import Judge, accuracy, load_judge, random_shift, train_judge
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
    assert torch.equal(judge(x), again(x))
    assert again.features(x).shape == (5, again.feature_dim)
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
    again, _ = train_judge(train, test, epochs=4, batch_size=16, seed=0)
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


def test_tiny_judge_for_other_tests():
    from unlearnctl.testing.tiny import tiny_judge

    judge = tiny_judge(num_classes=3)
    assert accuracy(judge, tiny_image_set(n_per_class=5, num_classes=3, seed=7)) > 0.8
    untrained = tiny_judge(num_classes=4, epochs=0)
    assert untrained.num_classes == 4 and not untrained.training
