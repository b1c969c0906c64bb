"""torch-fidelity glue: the judge-feature extractor, FID/KID/PR sanity on real digits, Inception weights."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest
import torch

from unlearnctl.builtin.datasets import Digits
from unlearnctl.errors import ModelNotAvailableError, UsageError
from unlearnctl.fidelity import (
    INCEPTION_FILE,
    JUDGE_EXTRACTOR,
    FeatureExtractor,
    UInt8Images,
    fidelity_metrics,
    register_feature_extractors,
)

SHIPPED_JUDGE = Path(__file__).resolve().parents[1] / "src/unlearnctl/assets/ddpm-digits/judge"


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    train, test = Digits().load("train"), Digits().load("test")
    return train.images, torch.tensor(train.labels), test.images, torch.tensor(test.labels)


@pytest.fixture(scope="module")
def judge(digits):
    """The judge shipped with ddpm-digits when it is there, else one trained here for a few seconds."""
    from unlearnctl.judge.classifier import load_judge, train_judge

    if (SHIPPED_JUDGE / "judge.json").is_file():
        return load_judge(SHIPPED_JUDGE)
    with torch.random.fork_rng(devices=[]):
        trained, _accuracy = train_judge(Digits().load("train"), Digits().load("test"), epochs=3, seed=0)
    return trained


def test_fid_sanity_on_real_digits(digits, judge):
    """Two disjoint halves of the real digits are close; digits vs. noise or vs. another class are far."""
    x, y, _, _ = digits
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    half_a, half_b = x[perm[: len(x) // 2]], x[perm[len(x) // 2 :]]
    extractor = FeatureExtractor.from_judge(judge)
    noise = torch.rand(len(half_a), *x.shape[1:], generator=torch.Generator().manual_seed(1)) * 2 - 1

    same = fidelity_metrics(half_a, half_b, extractor, kid_subsets=20)
    vs_noise = fidelity_metrics(noise, half_b, extractor, kid_subsets=20)
    zeros, ones = x[y == 0], x[y == 1]
    vs_class = fidelity_metrics(zeros, ones, extractor, kid_subsets=20)

    assert same["fid"] >= 0
    assert vs_noise["fid"] > 20 * same["fid"]
    assert vs_class["fid"] > 20 * same["fid"]
    assert vs_noise["kid_mean"] > 10 * abs(same["kid_mean"])
    # Precision/recall: halves overlap; noise lies outside the digit manifold and covers none of it.
    assert same["precision"] > 0.8 and same["recall"] > 0.8
    assert vs_noise["precision"] < 0.5 and vs_noise["recall"] < 0.5


def test_same_class_train_vs_test_is_closer_than_other_class(digits, judge):
    x, y, xt, yt = digits
    extractor = FeatureExtractor.from_judge(judge)
    same = fidelity_metrics(x[y == 3], xt[yt == 3], extractor, kid=False, prc=False)
    other = fidelity_metrics(x[y == 3], xt[yt == 8], extractor, kid=False, prc=False)
    assert other["fid"] > 3 * same["fid"]


def test_kid_subset_size_is_lowered_to_the_smaller_set(digits, judge):
    x, _, xt, _ = digits
    out = fidelity_metrics(x[:40], xt[:25], FeatureExtractor.from_judge(judge), kid_subset_size=1000, kid_subsets=5)
    assert out["kid_subset_size"] == 25
    assert set(out) >= {"fid", "kid_mean", "kid_std", "precision", "recall", "f_score"}


def test_judge_extractor_reads_uint8_as_the_judge_reads_floats(digits, judge):
    """uint8 -> [-1, 1] in the extractor matches the judge on the same (quantised) images."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    register_feature_extractors()
    register_feature_extractors()  # once per process: a second call must not assert
    cls = FEATURE_EXTRACTORS_REGISTRY[JUDGE_EXTRACTOR]
    extractor = cls(JUDGE_EXTRACTOR, ["features", "logits"], unlearnctl_judge=judge)
    images = UInt8Images(digits[0][:16]).images
    feats, logits = extractor(images)
    floats = images.float() / 127.5 - 1
    # exact by construction: the extractor's judge is a copy with the same weights, its input conversion is this
    # one (float / 127.5 - 1), and both run the same kernels on the same batch, on the same threads
    with torch.no_grad():
        assert torch.equal(feats, judge.eval().features(floats))
        assert torch.equal(logits, judge(floats))
    assert extractor.judge is not judge  # torch-fidelity moves its extractor; the caller's judge stays put


def test_uint8_images_rgb_and_range():
    x = torch.tensor([-1.0, 0.0, 1.0]).view(3, 1, 1, 1)
    data = UInt8Images(x, rgb=True)
    assert data[0].dtype == torch.uint8 and data[0].shape == (3, 1, 1)
    assert [int(data[i][0, 0, 0]) for i in range(3)] == [0, 128, 255]


def test_torch_fidelity_is_called_offline_quiet_uncached(digits, judge):
    """cuda from the device, cache off, quiet, no loader workers, KID subset <= n; Inception gets RGB + weights."""
    import torch_fidelity

    calls = []

    def fake(**kwargs):
        calls.append(kwargs)
        return {"frechet_inception_distance": 1.0}

    x = digits[0][:6]
    with mock.patch.object(torch_fidelity, "calculate_metrics", fake):
        fidelity_metrics(x, x[:5], FeatureExtractor.from_judge(judge), device="cpu", kid=False, prc=False)
        fidelity_metrics(x, x[:5], FeatureExtractor(kind="inception", source="/w.pth"), device="cuda")
    judge_call, inception_call = calls
    for call in calls:
        assert call["cache"] is False and call["verbose"] is False and call["save_cpu_ram"] is True
        assert call["kid_subset_size"] <= 5
    assert judge_call["cuda"] is False and judge_call["feature_extractor"] == JUDGE_EXTRACTOR
    assert judge_call["unlearnctl_judge"] is judge
    assert inception_call["cuda"] is True and inception_call["feature_extractor"] == "inception-v3-compat"
    assert inception_call["feature_extractor_weights_path"] == "/w.pth"
    assert inception_call["input1"][0].shape[0] == 3 and inception_call["input1"][0].dtype == torch.uint8


def test_inception_without_weights_says_how_to_provide_them(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(ModelNotAvailableError, match=r"fidelity\.inception_weights=FILE"):
        FeatureExtractor.inception(None)
    with pytest.raises(UsageError, match="does not exist"):
        FeatureExtractor.inception(tmp_path / "missing.pth")


def test_inception_weights_are_hashed_and_the_pin_is_enforced(tmp_path, monkeypatch):
    import hashlib

    weights = tmp_path / "w.pth"
    torch.save({"w": torch.zeros(2)}, weights)  # a plain state dict: torch's restricted loader reads it
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    extractor = FeatureExtractor.inception(weights)
    assert extractor.sha256 == digest and extractor.describe()["sha256"] == digest
    assert FeatureExtractor.inception(weights, expected_sha256=digest.upper()).describe()["pinned"] is True
    with pytest.raises(UsageError, match="not the pinned"):
        FeatureExtractor.inception(weights, expected_sha256="0" * 64)
    # torch hub's checkpoint folder is used when no file is named
    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    torch.save({"w": torch.zeros(1)}, hub / "checkpoints" / INCEPTION_FILE)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    assert FeatureExtractor.inception(None).source == str(hub / "checkpoints" / INCEPTION_FILE)


@pytest.mark.slow
def test_standard_inception_runs_from_a_local_weights_file(tmp_path):
    """End to end through torch-fidelity's Inception with a local (randomly initialised) weights file."""
    import torch_fidelity.feature_extractor_inceptionv3 as inception

    with (
        mock.patch.object(inception, "load_state_dict_from_url", lambda *a, **k: None),
        mock.patch.object(inception.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None),
    ):
        module = inception.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    weights = tmp_path / INCEPTION_FILE
    torch.save(module.state_dict(), weights)
    g = torch.Generator().manual_seed(0)
    out = fidelity_metrics(
        torch.rand(2, 1, 8, 8, generator=g) * 2 - 1,
        torch.rand(2, 1, 8, 8, generator=g) * 2 - 1,
        FeatureExtractor.inception(weights),
        kid_subsets=2,
    )
    assert out["kid_subset_size"] == 2 and out["fid"] == out["fid"]  # a number, not NaN
