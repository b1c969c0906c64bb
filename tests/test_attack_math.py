"""The mathematics of ``unlearnctl audit``'s attacks (``unlearnctl.builtin.attacks``), on the CPU, seeded.

- ROC figures against hand-computed values and their pairwise definitions; the bootstrap's intervals.
- Membership scores on a PLANTED member set: a UNet trained until it memorises 16 images must score them
  above 16 held-out images of the same distribution, for every attack; and on the exact memoriser (the
  optimal denoiser of the 16 images, in closed form), where each attack's premise holds exactly.
- Relearning and the embedding attack: the caller's model is untouched, the loss goes down, the new
  embedding row changes nothing else.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from unlearnctl import build_unet, state_sha256
from unlearnctl.builtin.attacks.embedding import optimise_class_embedding, with_class_embedding
from unlearnctl.builtin.attacks.mia import loss_scores, pia_scores, secmi_scores
from unlearnctl.builtin.attacks.relearn import relearn
from unlearnctl.builtin.attacks.roc import membership_summary, roc_metrics, tpr_key
from unlearnctl.diffusion import ddpm_loss, sample
from unlearnctl.testing.tiny import tiny_model


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- ROC figures ------------------------------------------------------------------------------------------


def test_roc_metrics_by_hand() -> None:
    # members 3, 2, 2, 1 against non-members 2, 1, 0 (ties across the two sets at 2 and at 1).
    # AUC: pairs won + half the ties = 3 + (2 + 1/2) + (2 + 1/2) + (1 + 1/2) = 9.5 of 12 = 19/24.
    # Thresholds (flag score >= tau): tau=3: TPR 1/4, FPR 0; tau=2: 3/4, 1/3; tau=1: 1, 2/3; tau=0: 1, 1.
    # Balanced accuracy (TPR + 1 - FPR) / 2: 5/8, 17/24, 2/3, 1/2 -> 17/24.
    members = torch.tensor([3.0, 2.0, 2.0, 1.0])
    nonmembers = torch.tensor([2.0, 1.0, 0.0])
    got = roc_metrics(members, nonmembers, fprs=(0.01, 0.4, 0.7))
    assert got == {
        "auc": 19 / 24,
        "balanced_accuracy": 17 / 24,
        "tpr_at_fpr_0.01": 0.25,  # only tau=3 has FPR 0
        "tpr_at_fpr_0.4": 0.75,  # tau=2: FPR 1/3 <= 0.4
        "tpr_at_fpr_0.7": 1.0,  # tau=1: FPR 2/3 <= 0.7
    }
    # the default rates, and the order of the sets does not matter inside each
    default = roc_metrics(members.flip(0), nonmembers.flip(0))
    assert default == {"auc": 19 / 24, "balanced_accuracy": 17 / 24, "tpr_at_fpr_0.01": 0.25, "tpr_at_fpr_0.001": 0.25}
    assert tpr_key(0.01) == "tpr_at_fpr_0.01" and tpr_key(0.001) == "tpr_at_fpr_0.001"


def test_roc_metrics_separated_identical_and_reversed() -> None:
    high, low = torch.tensor([5.0, 6.0, 7.0]), torch.tensor([1.0, 2.0])
    assert roc_metrics(high, low) == {
        "auc": 1.0,
        "balanced_accuracy": 1.0,
        "tpr_at_fpr_0.01": 1.0,
        "tpr_at_fpr_0.001": 1.0,
    }
    # identical scores: every threshold flags members and non-members alike
    same = torch.full((4,), 0.3)
    assert roc_metrics(same, same.clone()) == {
        "auc": 0.5,
        "balanced_accuracy": 0.5,
        "tpr_at_fpr_0.01": 0.0,
        "tpr_at_fpr_0.001": 0.0,
    }
    # members scoring lower: AUC 0; flagging nothing is still a threshold, so balanced accuracy 1/2
    assert roc_metrics(low, high) == {
        "auc": 0.0,
        "balanced_accuracy": 0.5,
        "tpr_at_fpr_0.01": 0.0,
        "tpr_at_fpr_0.001": 0.0,
    }
    with pytest.raises(ValueError, match="empty"):
        roc_metrics(torch.tensor([]), low)
    with pytest.raises(ValueError, match="NaN"):
        roc_metrics(high, torch.tensor([float("nan")]))


def pairwise_reference(m: list[float], n: list[float], fprs: tuple[float, ...]) -> dict[str, float]:
    """The figures straight from their definitions, in O(n^2), with exact fractions where it matters."""
    auc = sum((a > b) + 0.5 * (a == b) for a in m for b in n) / (len(m) * len(n))
    points = [(0, 0)] + [(sum(a >= tau for a in m), sum(b >= tau for b in n)) for tau in set(m) | set(n)]
    out = {
        "auc": auc,
        "balanced_accuracy": max((tp / len(m) + 1 - fp / len(n)) / 2 for tp, fp in points),
    }
    for f in fprs:
        # FPR <= f with fp an integer: fp <= f * n (compared on integers: fp * 1000 <= f * 1000 * n)
        out[tpr_key(f)] = max(tp / len(m) for tp, fp in points if fp * 1000 <= round(f * 1000) * len(n))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_roc_metrics_match_their_definitions(seed: int) -> None:
    g = seeded(seed)
    n_m, n_n = (int(v) for v in torch.randint(1, 60, (2,), generator=g))
    # few distinct values: many ties within and across the sets
    m = (torch.randint(0, 12, (n_m,), generator=g) + seed % 3).double()
    n = torch.randint(0, 12, (n_n,), generator=g).double()
    fprs = (0.0, 0.01, 0.05, 0.2, 0.5)
    got = roc_metrics(m, n, fprs=fprs)
    want = pairwise_reference(m.tolist(), n.tolist(), fprs)
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-12), key


def test_tpr_at_a_rate_below_one_nonmember_is_the_tpr_at_fpr_zero() -> None:
    # 300 non-members: FPR 0.001 allows floor(0.3) = 0 false positives; TPR = members above every non-member
    g = seeded(0)
    nonmembers = torch.randn(300, generator=g)
    members = torch.randn(200, generator=g) + 1.0
    want = float((members > nonmembers.max()).double().mean())
    assert roc_metrics(members, nonmembers)["tpr_at_fpr_0.001"] == want


def test_membership_summary_bootstrap() -> None:
    g = seeded(0)
    members, nonmembers = torch.randn(400, generator=g) + 0.5, torch.randn(400, generator=g)
    summary = membership_summary(members, nonmembers, generator=seeded(1))
    figures = ("auc", "balanced_accuracy", "tpr_at_fpr_0.01", "tpr_at_fpr_0.001")
    assert set(summary) == {*figures, *(f"{k}_ci" for k in figures), "members", "nonmembers", "bootstrap", "level"}
    assert (summary["members"], summary["nonmembers"], summary["bootstrap"], summary["level"]) == (400, 400, 1000, 0.95)
    # the point estimates are roc_metrics'
    assert {k: summary[k] for k in figures} == roc_metrics(members, nonmembers)
    for key in figures:
        lo, hi = summary[f"{key}_ci"]
        assert 0 <= lo <= hi <= 1, key
    # the interval holds the estimate for the figures that resampling does not bias (see the docstring)
    for key in ("auc", "balanced_accuracy", "tpr_at_fpr_0.01"):
        lo, hi = summary[f"{key}_ci"]
        assert lo <= summary[key] <= hi, key
    # reproducible from the generator's seed; another seed, other intervals
    assert membership_summary(members, nonmembers, generator=seeded(1)) == summary
    other = membership_summary(members, nonmembers, generator=seeded(2))
    assert other["auc"] == summary["auc"] and other["auc_ci"] != summary["auc_ci"]
    # ten times fewer scores: an interval about sqrt(10) ~ 3.2 times wider
    small = membership_summary(members[:40], nonmembers[:40], generator=seeded(1))

    def width(s: dict[str, Any]) -> float:
        return s["auc_ci"][1] - s["auc_ci"][0]

    assert width(small) > 2 * width(summary)
    # a narrower level, a narrower interval; no resampling, no interval
    narrow = membership_summary(members, nonmembers, generator=seeded(1), level=0.5)
    assert width(narrow) < width(summary)
    bare = membership_summary(members, nonmembers, generator=seeded(1), bootstrap=0)
    assert bare["auc"] == summary["auc"] and bare["auc_ci"] is None


# --- membership scores on a planted member set --------------------------------------------------------------

#: The attacks' settings: the loss attack's timesteps; PIA's t; SecMI's t and k. SecMI's paper measures at
#: t = 90 (t_SEC = 100, k = 10) on CIFAR-10; on these 8 x 8 images t = 100 adds noise of norm
#: sqrt((1 - abar) / abar) * 8 ~ 2.7, near the distance between two images of a class (~3.4), where a member's
#: posterior starts to mix with its neighbours' and SecMI's signal fades (the planted model of seed 3: AUC 0.07
#: at t = 100, 1.00 at t = 50); t = 50 adds ~1.4.
LOSS_TIMESTEPS = (10, 25, 50, 100)
PIA_T = 100
SECMI_T, SECMI_INTERVAL = 50, 10
#: the planted model is trained on the noise levels the attacks probe, t < 120 (see planted_unet)
TRAIN_MAX_T = 120


def planted_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` 8 x 8 images of two classes: a bright band whose height is the class, plus N(0, 0.3^2) noise per
    pixel (clamped to [-1, 1]); labels alternate 0, 1. Members and held-out images differ only in the noise."""
    g = seeded(seed)
    labels = torch.arange(n) % 2
    x = torch.full((n, 1, 8, 8), -1.0)
    for i, c in enumerate(labels.tolist()):
        x[i, :, 4 * c : 4 * c + 2, :] = 1.0
    return (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(-1, 1), labels


def train_to_memorise(seed: int, steps: int = 400) -> tuple[Any, Any, tuple[torch.Tensor, ...]]:
    """A class-conditional UNet trained on 16 images (the members) until it memorises them; and the data.

    The architecture is the built-in ``digits-small`` (0.8 M parameters): the 42 k-parameter test UNet fits the
    members' losses but approximates the memorised denoiser too loosely away from the noise it was trained on,
    where PIA and SecMI look (their inversions run through nearly noise-free points). Adam with a cosine
    learning rate on the DDPM loss, 64 images (with replacement) per step, t uniform on ``0 .. TRAIN_MAX_T - 1``.
    """
    images, labels = planted_images(32, 1000 + seed)
    members, held_out = (images[:16], labels[:16]), (images[16:], labels[16:])
    scheduler = tiny_model(num_classes=2).scheduler
    unet = build_unet("digits-small", image_size=8, channels=1, num_classes=2, seed=seed).train()
    g = seeded(seed)
    lr = 2e-3
    optimizer = torch.optim.Adam(unet.parameters(), lr=lr)
    for step in range(1, steps + 1):
        idx = torch.randint(0, 16, (64,), generator=g)
        t = torch.randint(0, TRAIN_MAX_T, (64,), generator=g)
        eps = torch.randn((64, 1, 8, 8), generator=g)
        for group in optimizer.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        loss = ddpm_loss(unet, scheduler, members[0][idx], members[1][idx], t, eps)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return unet.eval(), scheduler, (*members, *held_out)


@pytest.fixture(scope="module")
def planted() -> tuple[Any, Any, tuple[torch.Tensor, ...]]:
    return train_to_memorise(seed=0)


def attack_aucs(unet: Any, scheduler: Any, data: tuple[torch.Tensor, ...]) -> dict[str, float]:
    x_m, y_m, x_h, y_h = data

    def auc(score: Any, **kw: Any) -> float:
        return roc_metrics(score(unet, scheduler, x_m, y_m, **kw), score(unet, scheduler, x_h, y_h, **kw))["auc"]

    return {
        # the same generator seed for both sets: both see the same noise draws
        "loss": roc_metrics(
            loss_scores(unet, scheduler, x_m, y_m, timesteps=LOSS_TIMESTEPS, generator=seeded(7)),
            loss_scores(unet, scheduler, x_h, y_h, timesteps=LOSS_TIMESTEPS, generator=seeded(7)),
        )["auc"],
        "pia": auc(pia_scores, t=PIA_T),
        "secmi": auc(secmi_scores, t=SECMI_T, interval=SECMI_INTERVAL),
    }


#: A memorising model must separate its 16 members from 16 held-out images almost perfectly; 0.8 leaves room
#: for a few of the 256 member/held-out pairs to be misordered while staying far from chance (with 16 + 16
#: random scores, an AUC >= 0.8 has a probability of about 1e-3).
PLANTED_AUC = 0.8


def test_attacks_find_the_planted_members(planted: Any) -> None:
    unet, scheduler, data = planted
    aucs = attack_aucs(unet, scheduler, data)
    assert all(auc >= PLANTED_AUC for auc in aucs.values()), aucs


class ExactMemoriser(torch.nn.Module):
    """The optimal denoiser of the empirical distribution of ``members``, in closed form (an unconditional "UNet").

    ``E[x_0 | x_t]`` is the posterior mean over the members (weights ``softmax(-||x_t - sqrt(abar_t) m||^2 /
    (2 (1 - abar_t)))``) and ``eps = (x_t - sqrt(abar_t) E[x_0 | x_t]) / sqrt(1 - abar_t)``: the denoiser of a
    model that has memorised its training set perfectly, where every attack's premise holds exactly.
    """

    def __init__(self, members: torch.Tensor, alphas_cumprod: torch.Tensor) -> None:
        super().__init__()
        self.members = members.flatten(1).double()
        self.abar = alphas_cumprod.double()
        self.unused = torch.nn.Parameter(torch.zeros(()))  # the attacks read the device from a parameter
        self.config = {"num_class_embeds": None}

    def forward(self, x: torch.Tensor, t: torch.Tensor, class_labels: Any = None) -> SimpleNamespace:
        a = self.abar[t].view(-1, 1)
        flat = x.flatten(1).double()
        d2 = ((flat[:, None, :] - a.sqrt()[:, :, None] * self.members[None]) ** 2).sum(-1) / (1 - a)
        x0 = torch.softmax(-d2 / 2, dim=1) @ self.members
        return SimpleNamespace(sample=((flat - a.sqrt() * x0) / (1 - a).sqrt()).view_as(x).float())


@pytest.mark.parametrize("seed", range(3))
def test_attacks_find_the_members_of_an_exact_memoriser(seed: int) -> None:
    images, _ = planted_images(32, 1000 + seed)
    scheduler = tiny_model(num_classes=2).scheduler
    memoriser = ExactMemoriser(images[:16], scheduler.alphas_cumprod)
    no_labels = torch.zeros(16, dtype=torch.long)  # ignored: the memoriser is unconditional
    aucs = attack_aucs(memoriser, scheduler, (images[:16], no_labels, images[16:], no_labels))
    assert all(auc >= 0.9 for auc in aucs.values()), aucs


def test_scores_are_reproducible_and_do_not_depend_on_the_batch_size(planted: Any) -> None:
    unet, scheduler, (x_m, y_m, _, _) = planted
    before = state_sha256(unet)
    loss = loss_scores(unet, scheduler, x_m, y_m, timesteps=LOSS_TIMESTEPS, generator=seeded(3))
    assert loss.dtype == torch.float32 and loss.shape == (16,) and loss.device.type == "cpu"
    assert torch.equal(loss, loss_scores(unet, scheduler, x_m, y_m, timesteps=LOSS_TIMESTEPS, generator=seeded(3)))
    assert not torch.equal(loss, loss_scores(unet, scheduler, x_m, y_m, timesteps=LOSS_TIMESTEPS, generator=seeded(4)))
    pia = pia_scores(unet, scheduler, x_m, y_m, t=PIA_T)
    secmi = secmi_scores(unet, scheduler, x_m, y_m, t=SECMI_T)
    assert torch.equal(pia, pia_scores(unet, scheduler, x_m, y_m, t=PIA_T))
    assert torch.equal(secmi, secmi_scores(unet, scheduler, x_m, y_m, t=SECMI_T))
    # Batches of 5 instead of one of 16: the same operations on each image, but the UNet's kernels may sum in
    # another order for another batch, so its float32 outputs move by a few units of float32 rounding (~1e-7
    # relative). The loss and PIA scores are norms of differences of O(1) outputs: ~1e-6 relative (measured on
    # seed 0: 6e-7 and 2e-6), bound 2e-5. SecMI's t-error is the square of a difference of two noise predictions
    # about 20 times smaller than they are, which amplifies the rounding (measured: 8e-6), bound 1e-4. Both
    # bounds are far below the relative gaps between the scores of two different images (~1e-3 here).
    batched = loss_scores(unet, scheduler, x_m, y_m, timesteps=LOSS_TIMESTEPS, generator=seeded(3), batch_size=5)
    assert torch.allclose(loss, batched, rtol=2e-5, atol=0)
    assert torch.allclose(pia, pia_scores(unet, scheduler, x_m, y_m, t=PIA_T, batch_size=5), rtol=2e-5, atol=0)
    assert torch.allclose(secmi, secmi_scores(unet, scheduler, x_m, y_m, t=SECMI_T, batch_size=5), rtol=1e-4, atol=0)
    assert state_sha256(unet) == before and not unet.training


def test_scores_of_an_unconditional_model_and_bad_inputs() -> None:
    model = tiny_model(conditional=False)
    images, _ = planted_images(6, 0)
    unet = model.unet.train()
    scores = loss_scores(unet, model.scheduler, images, None, timesteps=[5, 500], generator=seeded(0))
    assert scores.shape == (6,) and bool(torch.isfinite(scores).all()) and bool((scores < 0).all())
    assert pia_scores(unet, model.scheduler, images, None, t=50).shape == (6,)
    assert secmi_scores(unet, model.scheduler, images, None, t=20, interval=7).shape == (6,)
    assert unet.training  # the caller's mode is restored
    conditional = tiny_model()
    with pytest.raises(ValueError, match="needs labels"):
        loss_scores(conditional.unet, conditional.scheduler, images, None, timesteps=[5], generator=seeded(0))
    with pytest.raises(ValueError, match="outside"):
        pia_scores(unet, model.scheduler, images, None, t=1000)
    with pytest.raises(ValueError, match="t \\+ interval"):
        secmi_scores(unet, model.scheduler, images, None, t=995, interval=10)


# --- relearning ---------------------------------------------------------------------------------------------


def test_relearn_fine_tunes_a_copy_and_evaluates_it() -> None:
    model = tiny_model(num_classes=2)
    unet, scheduler = model.unet.eval(), model.scheduler
    images, labels = planted_images(4, 0)
    before = state_sha256(unet)

    def evaluate(step: int, tuned: Any) -> dict[str, Any]:
        # the DDPM loss on the fine-tuning images, always with the same noise draws
        loss = -loss_scores(tuned, scheduler, images, labels, timesteps=[50, 200, 500], generator=seeded(9))
        return {"loss": float(loss.mean()), "training": tuned.training, "same": tuned is unet}

    def run() -> list[dict[str, Any]]:
        return relearn(
            unet,
            scheduler,
            images,
            labels,
            steps=30,
            eval_at=[30, 0, 10, 10],
            lr=3e-3,
            batch_size=8,
            generator=seeded(0),
            evaluate=evaluate,
        )

    records = run()
    assert [r["step"] for r in records] == [0, 10, 30]
    assert not any(r["training"] or r["same"] for r in records)
    assert records[-1]["loss"] < 0.8 * records[0]["loss"], records
    assert state_sha256(unet) == before and not unet.training
    assert run() == records  # the same generator seed, the same fine-tuning
    with pytest.raises(ValueError, match="eval_at"):
        relearn(
            unet, scheduler, images, labels, steps=3, eval_at=[4], lr=1e-3, batch_size=2, generator=seeded(0),
            evaluate=evaluate,
        )  # fmt: skip


# --- the embedding attack -----------------------------------------------------------------------------------


def test_with_class_embedding_adds_a_row_and_changes_nothing_else() -> None:
    model = tiny_model(num_classes=3)
    unet = model.unet
    rows, width = unet.class_embedding.weight.shape
    vector = torch.randn(width, generator=seeded(0))
    before = state_sha256(unet)
    grown, label = with_class_embedding(unet, vector)
    assert label == rows == 4 and grown.config.num_class_embeds == 5 and unet.config.num_class_embeds == 4
    assert state_sha256(unet) == before
    g = seeded(1)
    x, t = torch.randn((5, 1, 8, 8), generator=g), torch.randint(0, 1000, (5,), generator=g)
    with torch.inference_mode():
        for c in range(rows):  # every existing label, the null class included: the same bits
            labels = torch.full((5,), c)
            assert torch.equal(grown(x, t, class_labels=labels).sample, unet(x, t, class_labels=labels).sample)
        # the new label conditions on the vector: the original UNet with its embedding's output replaced by it
        hook = unet.class_embedding.register_forward_hook(lambda _m, _a, out: vector.expand(out.shape[0], -1))
        try:
            replaced = unet(x, t, class_labels=torch.zeros(5, dtype=torch.long)).sample
        finally:
            hook.remove()
        assert torch.equal(grown(x, t, class_labels=torch.full((5,), label)).sample, replaced)
    # guided sampling of the existing classes (conditional and null passes) is unchanged, bit for bit
    classes = torch.tensor([0, 1, 2, 2])
    assert torch.equal(
        sample(model, 4, classes, generator=seeded(2), steps=4, unet=grown),
        sample(model, 4, classes, generator=seeded(2), steps=4),
    )
    with pytest.raises(ValueError, match=r"nn\.Embedding"):
        with_class_embedding(tiny_model(conditional=False).unet, vector)


def test_optimise_class_embedding_lowers_the_loss_of_its_images(planted: Any) -> None:
    unet, scheduler, (x_m, y_m, _, _) = planted
    before = state_sha256(unet)
    target = x_m[y_m == 1]  # the 8 members of class 1
    weight = unet.class_embedding.weight.detach()

    def optimise(steps: int, **kw: Any) -> torch.Tensor:
        return optimise_class_embedding(
            unet, scheduler, target, steps=steps, lr=0.05, batch_size=16, generator=seeded(0), **kw
        )

    start = optimise(0)
    assert start.dtype == torch.float32 and torch.equal(start, weight.mean(0))
    assert torch.equal(optimise(0, init_label=1), weight[1])
    learnt = optimise(40)
    assert torch.equal(learnt, optimise(40))  # reproducible from the generator's seed

    def loss(vector: torch.Tensor) -> float:
        # the objective, E_t || eps - eps_theta(x_t, t, v) ||^2 with t uniform on 0..999, on a grid of 20 t
        # with fixed noise (the planted model learnt only t < TRAIN_MAX_T: there v has the most to gain)
        grown, label = with_class_embedding(unet, vector)
        new_label = torch.full((len(target),), label)
        scores = loss_scores(grown, scheduler, target, new_label, timesteps=range(0, 1000, 50), generator=seeded(5))
        return float(-scores.mean())

    before_loss, after_loss = loss(start), loss(learnt)  # measured on seed 0: 0.98 -> 0.22
    assert after_loss < 0.5 * before_loss, (before_loss, after_loss)
    assert state_sha256(unet) == before
