"""The built-in metrics and the evaluation context they share (tiny UNet, stub judges, in-memory data)."""

from __future__ import annotations

import math

import pytest
import torch

from unlearnctl.builtin.metrics import (
    Fidelity,
    Forgetting,
    Kept,
    Membership,
    auc_and_tpr,
    class_shares,
    judge_stats,
)
from unlearnctl.contexts.evaluation import EvalContext
from unlearnctl.contexts.study import SamplingProtocol
from unlearnctl.diffusion import ddpm_loss, sample_timesteps
from unlearnctl.judge.classifier import Judge
from unlearnctl.testing.tiny import tiny_image_set, tiny_model

PROTOCOL = SamplingProtocol(steps=2, samples_per_class=3, seed=0)


class StubJudge:
    """A judge that answers a fixed class for every image (or a fixed probability row)."""

    def __init__(self, num_classes: int, answer: int | None = None, probs: list[float] | None = None) -> None:
        self.num_classes = num_classes
        self.answer, self.probs = answer, probs

    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        if self.probs is not None:
            return torch.tensor(self.probs).expand(len(images), -1)
        out = torch.zeros(len(images), self.num_classes)
        out[:, self.answer] = 1.0
        return out


# --- judge statistics and the attack's ROC ----------------------------------------------------------


def test_judge_stats_against_hand_computed_values():
    judge = StubJudge(3, probs=[0.5, 0.25, 0.25])
    stats = judge_stats(judge, torch.zeros(4, 1, 8, 8), target=0)
    entropy = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    assert stats["recognition_rate"] == 1.0 and stats["mean_p"] == 0.5  # exact: the mean of four 0.5s
    # float32 entropy (log, products, a 3-term sum of one sign, a mean of 4) against float64: about 8 roundings
    # of 2^-24 relative, so within 5e-7 (relative); rel=1e-6 is above that bound
    assert stats["mean_entropy"] == pytest.approx(entropy, rel=1e-6)
    assert judge_stats(judge, torch.zeros(4, 1, 8, 8), target=1)["recognition_rate"] == 0.0
    uncond = EvalContext.create(tiny_model(conditional=False), judge=StubJudge(3, answer=2), protocol=PROTOCOL)
    assert class_shares(uncond, "kept") == {0: 0.0, 1: 0.0, 2: 1.0}


def test_auc_and_tpr_extremes_and_against_sklearn():
    from sklearn.metrics import roc_auc_score

    hi, lo = torch.tensor([3.0, 4.0, 5.0]), torch.tensor([0.0, 1.0, 2.0])
    assert auc_and_tpr(hi, lo, 0.1) == (1.0, 1.0)
    assert auc_and_tpr(lo, hi, 0.1) == (0.0, 0.0)
    assert auc_and_tpr(lo, lo, 0.1)[0] == 0.5
    g = torch.Generator().manual_seed(0)
    m, n = torch.randn(200, generator=g) + 0.5, torch.randn(100, generator=g)
    auc, tpr = auc_and_tpr(m, n, 0.1)
    expected = roc_auc_score([1] * 200 + [0] * 100, torch.cat([m, n]).numpy())
    # both in float64: ours is count / 20000 (an exact count), sklearn a trapezoid sum over <= 300 ROC points,
    # each term a few roundings of 2^-53 -- within 300 * 4 * 1.1e-16 = 1.3e-13 of each other
    assert auc == pytest.approx(expected, rel=0, abs=1e-12)
    # at most 10% of the non-members are flagged at the chosen threshold
    threshold = torch.sort(n, descending=True).values[10]
    assert (n > threshold).float().mean() <= 0.1
    assert tpr == float((m > threshold).double().mean())  # exact: the same comparisons and float64 mean


# --- the context: samples once per model, same seeds for model and reference ------------------------


def test_samples_are_generated_once_in_one_batched_call():
    model = tiny_model(num_classes=3)
    ctx = EvalContext.create(model, forget_classes=[1], protocol=PROTOCOL)
    first = ctx.samples(1)
    assert first.shape == (3, 1, 8, 8)
    for c in (0, 1, 2):
        ctx.samples(c)
    cost = ctx.cost
    # all 3 classes x 3 samples in one batch: one UNet call per step, each on the conditional and
    # unconditional halves together (guidance), so 2 x 9 images per call
    assert cost.images == 9
    assert cost.unet_forward_calls == PROTOCOL.steps
    assert cost.unet_image_evaluations == 2 * 9 * PROTOCOL.steps
    assert cost.seconds > 0
    assert ctx.samples(1) is first


def test_a_class_gets_the_same_samples_whatever_else_is_asked_or_forgotten():
    model = tiny_model(num_classes=3)
    kept_2 = EvalContext.create(model, forget_classes=[0], protocol=PROTOCOL)
    forgot_2 = EvalContext.create(model, forget_classes=[2], protocol=PROTOCOL)
    assert kept_2.sample_classes == forgot_2.sample_classes == (0, 1, 2)
    first = kept_2.samples(2)
    forgot_2.samples(0)
    # exact: the same weights and one draw of the same classes from the same stream, in the same batch
    assert torch.equal(forgot_2.samples(2), first)
    assert kept_2.cost.images == forgot_2.cost.images == 9
    # a class outside the forgotten and kept ones is drawn alone and leaves the others' draw as it is
    partial = EvalContext.create(model, forget_classes=[0], kept_classes=[2], protocol=PROTOCOL)
    assert partial.samples(1).shape[0] == PROTOCOL.samples_per_class
    assert partial.sample_classes == (0, 2) and set(partial.sampled()) == {1}
    partial.samples(0)
    assert set(partial.sampled()) == {0, 1, 2} and partial.cost.images == 9


def test_model_and_reference_get_the_same_noise():
    model = tiny_model(num_classes=3)
    ctx = EvalContext.create(model, forget_classes=[0], protocol=PROTOCOL)
    same = ctx.sibling(tiny_model(num_classes=3))
    other = ctx.sibling(tiny_model(num_classes=3, seed=5))
    # exact: the same weights, noise and batch run through the same kernels on the same threads
    assert torch.equal(ctx.samples(2), same.samples(2))
    assert not torch.equal(ctx.samples(2), other.samples(2))
    assert ctx.generator("x").initial_seed() == other.generator("x").initial_seed()
    with pytest.raises(ValueError):
        ctx.samples(None)


def test_unconditional_model_samples_once_for_every_class():
    class CountingJudge(StubJudge):
        calls = 0

        def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            return super().predict_proba(images)

    model = tiny_model(conditional=False)
    judge = CountingJudge(3, answer=1)
    ctx = EvalContext.create(model, forget_classes=[1], kept_classes=[0, 2], judge=judge, protocol=PROTOCOL)
    assert ctx.samples(None).shape[0] == 3 * 3
    assert ctx.samples(2) is ctx.samples(None)
    forgetting = Forgetting().compute(ctx)
    assert forgetting["mode"] == "unconditional" and forgetting["recognition_rate"] == 1.0
    assert "ua" not in forgetting
    assert Kept().compute(ctx)["share"] == 0.0
    assert judge.calls == 1  # the samples are judged once per model, for every metric
    reference = ctx.sibling(tiny_model(conditional=False, seed=5))
    assert Kept().compute(reference)["share"] == 0.0 and judge.calls == 2


# --- forgetting and kept ------------------------------------------------------------------------------


def test_forgetting_and_kept_read_the_judge_on_each_class():
    model = tiny_model(num_classes=3)
    # a judge that says "0" for everything: class 0 fully recognised, classes 1 and 2 never
    ctx = EvalContext.create(model, forget_classes=[0, 1], judge=StubJudge(3, answer=0), protocol=PROTOCOL)
    out = Forgetting().compute(ctx)
    assert out["per_class"]["0"]["recognition_rate"] == 1.0
    assert out["per_class"]["1"]["recognition_rate"] == 0.0
    assert out["recognition_rate"] == 0.5 and out["ua"] == 0.5
    # exact: one-hot probabilities, so each entropy term is 1 * log(1) = 0 or 0 * log(1e-12) = -0
    assert out["mean_p_forgotten"] == 0.5 and out["mean_entropy"] == 0.0
    kept = Kept().compute(ctx)
    assert kept == {"mode": "conditional", "mean_rate": 0.0, "min_rate": 0.0, "per_class": {"2": 0.0}}
    assert ctx.cost.images == 9  # forgetting and kept shared one sampling pass


def test_metrics_without_a_judge_say_how_to_get_one():
    from unlearnctl.errors import UsageError

    ctx = EvalContext.create(tiny_model(num_classes=3), forget_classes=[0], protocol=PROTOCOL)
    with pytest.raises(UsageError, match="--judge"):
        Forgetting().compute(ctx)


def test_fidelity_records_its_protocol_and_compares_kept_classes_only():
    data = {"train": tiny_image_set(n_per_class=6, num_classes=3), "test": tiny_image_set(3, 3, seed=1)}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        judge = Judge(3).eval()
    ctx = EvalContext.create(tiny_model(num_classes=3), forget_classes=[1], judge=judge, protocol=PROTOCOL, data=data)
    out = Fidelity(Fidelity.Options(kid_subsets=3)).compute(ctx)
    assert out["n_generated"] == 2 * PROTOCOL.samples_per_class and out["n_real"] == 12
    assert out["kid_subset_size"] == 6 and out["fid"] >= 0
    assert ctx.records["feature_extractor"]["kind"] == "judge"
    assert ctx.records["reference_set"]["classes"] == [0, 2] and ctx.records["reference_set"]["size"] == 12


def test_fidelity_of_an_unconditional_model_leaves_out_the_samples_judged_forgotten():
    from unlearnctl.errors import UsageError

    class BrightIsOne(Judge):
        """Judges the brighter half of a batch as class 1, the rest as class 0."""

        def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
            means = images.flatten(1).mean(1)
            out = torch.zeros(len(images), self.num_classes)
            out[torch.arange(len(images)), (means > means.median()).long()] = 1.0
            return out

    data = {"train": tiny_image_set(n_per_class=6, num_classes=3), "test": tiny_image_set(3, 3, seed=1)}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        judge = BrightIsOne(3).eval()
    model = tiny_model(conditional=False)
    ctx = EvalContext.create(model, forget_classes=[1], kept_classes=[0, 2], judge=judge, protocol=PROTOCOL, data=data)
    means = ctx.samples(None).flatten(1).mean(1)
    not_one = int((means <= means.median()).sum())
    assert 0 < not_one < 9

    kept = Fidelity(Fidelity.Options(kid_subsets=3)).compute(ctx)
    assert kept["n_generated"] == not_one and kept["n_real"] == 12
    assert "not assign to a forgotten class" in ctx.records["generated_set"]
    every = Fidelity(Fidelity.Options(kid_subsets=3, unconditional_set="all")).compute(ctx)
    assert every["n_generated"] == 9 and every["fid"] != kept["fid"]
    assert ctx.records["generated_set"] == "all unconditional samples"

    no_judge = EvalContext.create(model, forget_classes=[1], kept_classes=[0, 2], protocol=PROTOCOL, data=data)
    with pytest.raises(UsageError, match="unconditional_set=all"):
        Fidelity().prepare(no_judge)  # before any sampling
    with pytest.raises(UsageError, match="unconditional_set=all"):
        Fidelity().compute(no_judge)


# --- membership inference -------------------------------------------------------------------------------


def _memorise(model, images: torch.Tensor, labels: torch.Tensor, steps: int) -> None:
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.unet.parameters(), lr=3e-3)
    model.unet.train()
    for _ in range(steps):
        t = sample_timesteps(len(images), 1000, g)
        noise = torch.randn(images.shape, generator=g)
        loss = ddpm_loss(model.unet, model.scheduler, images, labels, t, noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.unet.eval()


def _random_set(n: int, seed: int, prefix: str):
    from unlearnctl import TensorImageSet

    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, 8, 8, generator=g) * 2 - 1
    labels = [i % 2 for i in range(n)]
    return TensorImageSet(
        images, [f"{prefix}-{i}" for i in range(n)], [{"label": c} for c in labels], ["0", "1"], name="random"
    )


def test_membership_flags_a_memorised_forget_set_and_is_deterministic():
    train, test = _random_set(16, 0, "train"), _random_set(16, 1, "test")
    members = [i for i, lbl in zip(train.ids, train.labels, strict=True) if lbl == 0]
    x = torch.stack([train[i][0] for i, lbl in enumerate(train.labels) if lbl == 0])
    base = tiny_model(num_classes=2)
    memorised = tiny_model(num_classes=2)
    _memorise(memorised, x, torch.zeros(len(x), dtype=torch.long), steps=100)

    # small t: the denoising loss depends most on the exact image there
    opts = Membership.Options(draws=4, max_t=50)
    ctx = EvalContext.create(
        memorised, forget_classes=[0], data={"train": train, "test": test}, forget_ids=members, protocol=PROTOCOL
    )
    out = Membership(opts).compute(ctx)
    again = Membership(opts).compute(ctx.sibling(memorised))
    untrained = Membership(opts).compute(ctx.sibling(base))
    assert out == again
    assert out["n_members"] == 8 and out["n_heldout"] == 8
    assert out["mean_loss_forget"] < out["mean_loss_heldout"]
    assert out["auc"] > 0.75
    assert untrained["auc"] < out["auc"] - 0.15
    assert ctx.records["membership_sets"]["n_heldout"] == 8


def test_membership_skips_when_the_forget_set_is_unknown():
    ctx = EvalContext.create(tiny_model(num_classes=2), forget_classes=[0], protocol=PROTOCOL)
    assert "skipped" in Membership().compute(ctx)
