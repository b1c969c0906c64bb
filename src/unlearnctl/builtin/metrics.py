"""Built-in metrics of ``unlearnctl eval``, registered through the public ``register_metrics`` hook.

Each metric's ``compute(ctx)`` runs once for the evaluated model and once for its reference, with an
``unlearnctl.contexts.evaluation.EvalContext``: samples come from ``ctx.samples(c)`` (generated once per model
and shared by every metric), the judge from ``ctx.judge``. ``needs_samples`` says which classes'
samples a metric reads. Whichever metrics run, the samples are one batched draw of every class per model,
so each metric's value is the same alone as next to the others.

- ``forgetting``: does the model still produce the forgotten classes? (judge on their samples)
- ``kept``: does it still produce the other classes? (judge on their samples)
- ``fidelity``: FID, KID, precision/recall of the kept classes' samples against real images (torch-fidelity)
- ``membership``: can a loss-based membership-inference attack still tell the forget set from held-out images?
- ``retrain-distance`` (:mod:`unlearnctl.builtin.gold_metric`; with ``eval --retrain``): how far the model lands
  from a model retrained without the forget set
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from unlearnctl import Metric, Options, UsageError, hookimpl

from .gold_metric import RetrainDistance
from .metric_parts import ExtractorOptions, cached_extractor, unconditional_predictions

if TYPE_CHECKING:
    import torch


def judge_stats(judge: Any, images: torch.Tensor, target: int) -> dict[str, float]:
    """How the judge reads ``images`` (all conditioned on class ``target``), via ``judging.judge_images``.

    ``recognition_rate``: share of images whose most likely class is ``target``; ``mean_p``: mean
    probability of ``target``; ``mean_entropy``: mean predictive entropy in nats (``log K`` = no idea).
    """
    import torch

    from unlearnctl import judge_images

    out = judge_images(judge, images, torch.full((len(images),), target, dtype=torch.long), [target])
    return {
        "recognition_rate": out["rates"][target],
        "mean_p": out["mean_p"][target],
        "mean_entropy": out["mean_entropy"][target],
        "samples": len(images),
    }


def class_shares(ctx: Any, metric: str) -> dict[int, float]:
    """Share of ``ctx``'s unconditional samples the judge assigns to each class (its most likely class)."""
    from unlearnctl import fractions

    return dict(enumerate(fractions(unconditional_predictions(ctx, metric), ctx.judge.num_classes)))


class Forgetting(Metric):
    """Judge's recognition of the forgotten classes in their samples: rate, UA = 1 - rate, p(c_f), entropy.

    Conditional models: samples conditioned on each forgotten class; ``recognition_rate`` is the share
    the judge labels as that class (the literature's "accuracy"), ``ua`` = 1 - rate, ``mean_p_forgotten``
    the judge's mean probability of the class, ``mean_entropy`` its mean predictive entropy (nats).
    Averages over forgotten classes weigh each class equally (same number of samples each).
    Unconditional models: ``recognition_rate`` is the share of unconditional samples the judge assigns
    to any forgotten class (no ``ua``: the model is never asked for the class).
    """

    name = "forgetting"
    default = True
    needs_samples: ClassVar[tuple[str, ...]] = ("forget",)

    def prepare(self, ctx: Any) -> None:
        ctx.require_judge(self.name)

    def compute(self, ctx: Any) -> dict[str, Any]:
        judge = ctx.require_judge(self.name)
        if not ctx.forget_classes:
            return {"skipped": "no forgotten classes"}
        if not ctx.conditional:
            shares = class_shares(ctx, self.name)
            return {
                "mode": "unconditional",
                "recognition_rate": sum(shares[c] for c in ctx.forget_classes),
                "per_class_share": {str(c): shares[c] for c in ctx.forget_classes},
                "samples": ctx.num_unconditional_samples,
            }
        per_class = {c: judge_stats(judge, ctx.samples(c), c) for c in ctx.forget_classes}
        n = len(per_class)
        rate = sum(s["recognition_rate"] for s in per_class.values()) / n
        return {
            "mode": "conditional",
            "recognition_rate": rate,
            "ua": 1.0 - rate,
            "mean_p_forgotten": sum(s["mean_p"] for s in per_class.values()) / n,
            "mean_entropy": sum(s["mean_entropy"] for s in per_class.values()) / n,
            "per_class": {str(c): s for c, s in per_class.items()},
        }


class Kept(Metric):
    """Judge's recognition rate of each kept class in samples conditioned on it (mean and worst class).

    Unconditional models: the share of unconditional samples the judge assigns to each kept class.
    """

    name = "kept"
    default = True
    needs_samples: ClassVar[tuple[str, ...]] = ("kept",)

    def prepare(self, ctx: Any) -> None:
        ctx.require_judge(self.name)

    def compute(self, ctx: Any) -> dict[str, Any]:
        judge = ctx.require_judge(self.name)
        if not ctx.kept_classes:
            return {"skipped": "no kept classes"}
        if not ctx.conditional:
            shares = class_shares(ctx, self.name)
            return {
                "mode": "unconditional",
                "share": sum(shares[c] for c in ctx.kept_classes),
                "per_class_share": {str(c): shares[c] for c in ctx.kept_classes},
            }
        rates = {c: judge_stats(judge, ctx.samples(c), c)["recognition_rate"] for c in ctx.kept_classes}
        return {
            "mode": "conditional",
            "mean_rate": sum(rates.values()) / len(rates),
            "min_rate": min(rates.values()),
            "per_class": {str(c): r for c, r in rates.items()},
        }


class Fidelity(Metric):
    """FID, KID and precision/recall of the kept classes' samples vs. their real images (torch-fidelity).

    Generated set: the samples of every kept class (conditional models). Unconditional models:
    ``unconditional_set=kept`` (the default) takes only the samples the judge does not assign to a
    forgotten class -- the samples "of the remaining classes" of the protocol; with all of them, a model
    that stops drawing the forgotten class moves towards the kept-class reference whatever happens to
    its other samples. ``all`` takes every sample. Real set: the images of the kept classes in
    ``real_split`` of the evaluation data set.
    Features: ``judge`` (the judge's penultimate layer; the default when there is a judge) or
    ``inception`` (standard Inception-v3 pool3 from a local weights file; see docs/eval.md).
    FID on judge features is not comparable with published Inception FIDs, only across runs.
    """

    name = "fidelity"
    default = True
    needs_samples: ClassVar[tuple[str, ...]] = ("kept",)

    class Options(ExtractorOptions):
        real_split: Literal["train", "test"] = Field("train", description="split of the real images")
        unconditional_set: Literal["kept", "all"] = Field(
            "kept",
            description="unconditional models: the samples compared -- kept = those the judge does not assign to a "
            "forgotten class (needs a judge), all = every sample",
        )
        kid_subsets: int = Field(100, ge=1, description="KID: number of subsets")
        kid_subset_size: int = Field(1000, ge=2, description="KID: subset size (lowered to the smaller set's size)")
        prc_neighborhood: int = Field(3, ge=1, description="precision/recall: k of the k-NN radius")

    def _extractor(self, ctx: Any) -> Any:
        return cached_extractor(ctx, self.name, self.options)

    def prepare(self, ctx: Any) -> None:
        if ctx.kept_classes:
            self._check_filter(ctx)
            self._extractor(ctx)

    def _filters(self, ctx: Any) -> bool:
        """Whether the unconditional samples judged as a forgotten class are left out."""
        return not ctx.conditional and self.options.unconditional_set == "kept" and bool(ctx.forget_classes)

    def _check_filter(self, ctx: Any) -> None:
        if self._filters(ctx) and ctx.judge is None:
            raise UsageError(
                "metric 'fidelity' compares the unconditional samples not judged as a forgotten class, and this "
                "model names no judge: pass --judge DIR, or --set fidelity.unconditional_set=all"
            )

    def compute(self, ctx: Any) -> dict[str, Any]:
        import torch

        from unlearnctl import fidelity_metrics

        if not ctx.kept_classes:
            return {"skipped": "no kept classes"}
        if ctx.conditional:
            generated = torch.cat([ctx.samples(c) for c in ctx.kept_classes])
        else:
            generated = self._unconditional(ctx)
            if len(generated) < 2:
                n = len(generated)
                return {"skipped": f"{n} samples not judged as a forgotten class", "n_generated": n}
        extractor = self._extractor(ctx)
        real = ctx.real(self.options.real_split, ctx.kept_classes)
        if len(real) < 2:
            raise UsageError(
                f"metric 'fidelity': the {self.options.real_split} split has no images of the kept classes "
                f"{list(ctx.kept_classes)}: check --dataset"
            )
        ctx.record("feature_extractor", extractor.describe())
        ctx.record(
            "reference_set",
            {
                "dataset": ctx.dataset_name,
                "split": self.options.real_split,
                "classes": list(ctx.kept_classes),
                "size": len(real),
                "fingerprint": ctx.dataset(self.options.real_split).fingerprint(),
            },
        )
        call: dict[str, Any] = {}
        values = fidelity_metrics(
            generated,
            real,
            extractor,
            device=ctx.device,
            kid_subsets=self.options.kid_subsets,
            kid_subset_size=self.options.kid_subset_size,
            prc_neighborhood=self.options.prc_neighborhood,
            seed=ctx.seed,
            call=call,
        )
        # the exact torch-fidelity call, which `eval --save-samples` saves the inputs of (docs/eval.md)
        call["judge_folder"] = ctx.judge_source if extractor.kind == "judge" else None
        ctx.cache[f"torch-fidelity:call:{self.name}:{ctx.role}"] = call
        return {**values, "n_generated": len(generated), "n_real": len(real)}

    def _unconditional(self, ctx: Any) -> torch.Tensor:
        """The unconditional samples compared: all of them, or those not judged as a forgotten class."""
        import torch

        images = ctx.samples(None)
        if not self._filters(ctx):
            ctx.record("generated_set", "all unconditional samples")
            return images
        self._check_filter(ctx)
        predicted = unconditional_predictions(ctx, self.name)
        keep = ~torch.isin(predicted, torch.tensor(ctx.forget_classes, dtype=predicted.dtype))
        ctx.record("generated_set", "unconditional samples the judge does not assign to a forgotten class")
        return images[keep.to(images.device)]


def auc_and_tpr(member_scores: torch.Tensor, nonmember_scores: torch.Tensor, fpr: float) -> tuple[float, float]:
    """ROC AUC of telling members (higher score) from non-members, and the TPR at false-positive rate <= ``fpr``.

    AUC is the Mann-Whitney probability that a random member outscores a random non-member (ties count
    half). The TPR uses the strictest threshold that flags at most ``fpr`` of the non-members.
    """
    import torch

    m, n = member_scores.double(), nonmember_scores.double()
    greater = (m[:, None] > n[None, :]).double().mean()
    ties = (m[:, None] == n[None, :]).double().mean()
    auc = float(greater + 0.5 * ties)
    ranked = torch.sort(n, descending=True).values
    allowed = int(fpr * len(n))  # non-members allowed above the threshold
    threshold = ranked[allowed] if allowed < len(n) else ranked[-1] - 1
    tpr = float((m > threshold).double().mean())
    return auc, tpr


class Membership(Metric):
    """Loss-based membership inference: can the forget set still be told from held-out images of its classes?

    Score of an image = minus its denoising loss ``|| eps - eps_theta(x_t, t, c) ||^2`` averaged over
    ``draws`` fixed, seeded ``(t, eps)`` pairs (the same for every model), with ``c`` the image's own
    class. Members: the forget set (training split); non-members: test-split images of the same classes.
    ``auc`` = 0.5 means indistinguishable (the goal after unlearning); above 0.5, the model fits the
    forget set better than unseen images of its classes. ``tpr_at_fpr`` is the attack's true-positive rate
    at a false-positive rate of at most ``fpr`` (coarse with few held-out images: see ``n_heldout``).
    """

    name = "membership"
    default = True
    needs_samples: ClassVar[tuple[str, ...]] = ()

    class Options(Options):
        draws: int = Field(16, ge=1, description="(t, noise) draws per image, averaged")
        max_t: int | None = Field(None, ge=1, description="draw t from [0, max_t) (default: every training timestep)")
        max_images: int = Field(500, ge=2, description="at most this many images per side (a seeded subset)")
        fpr: float = Field(0.1, gt=0, lt=1, description="false-positive rate for tpr_at_fpr")
        batch_size: int = Field(512, ge=1, description="images per forward pass")

    def _sets(self, ctx: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | str:
        import torch

        key = f"membership:sets:{self.options.max_images}"
        if key in ctx.cache:
            return ctx.cache[key]
        if ctx.forget_ids is None:
            ctx.cache[key] = "the forget set is unknown (pass a run folder, or --classes with a dataset)"
            return ctx.cache[key]
        train, test = ctx.dataset("train"), ctx.dataset("test")
        member_idx = [i for i, item_id in enumerate(train.ids) if item_id in ctx.forget_ids]
        labels = {train.labels[i] for i in member_idx}
        held_idx = [i for i, lbl in enumerate(test.labels) if lbl in labels]
        if len(member_idx) < 2 or len(held_idx) < 2:
            ctx.cache[key] = (
                f"too few images ({len(member_idx)} in the forget set, {len(held_idx)} held out of its classes)"
            )
            return ctx.cache[key]
        g = ctx.generator("membership-subset")

        def pick(idx: list[int]) -> list[int]:
            if len(idx) <= self.options.max_images:
                return idx
            keep = torch.randperm(len(idx), generator=g)[: self.options.max_images]
            return sorted(idx[k] for k in keep.tolist())

        member_idx, held_idx = pick(member_idx), pick(held_idx)
        x_m = torch.stack([train[i][0] for i in member_idx])
        y_m = torch.tensor([train.labels[i] for i in member_idx])
        x_h = torch.stack([test[i][0] for i in held_idx])
        y_h = torch.tensor([test.labels[i] for i in held_idx])
        ctx.cache[key] = (x_m, y_m, x_h, y_h)
        ctx.record(
            "membership_sets",
            {
                "members": "forget set (train split)",
                "heldout": "test split, same classes",
                "n_members": len(member_idx),
                "n_heldout": len(held_idx),
            },
        )
        return ctx.cache[key]

    def _losses(self, ctx: Any, images: torch.Tensor, labels: torch.Tensor, stream: str) -> torch.Tensor:
        import torch

        from unlearnctl.diffusion import add_noise, predict_noise

        with torch.no_grad():  # scoring only
            model, opt = ctx.model, self.options
            unet = model.unet.to(ctx.device).eval()
            T = int(model.scheduler.config.num_train_timesteps)
            high = min(opt.max_t or T, T)
            g = ctx.generator(f"membership-{stream}")
            total = torch.zeros(len(images))
            class_labels = labels.clamp_min(0) if model.conditional else None
            for _ in range(opt.draws):
                # 1. one (t, eps) per image, drawn in a fixed order from a seeded generator: the same for every model
                t = torch.randint(0, high, (len(images),), generator=g)
                eps = torch.randn(images.shape, generator=g)
                for s in range(0, len(images), opt.batch_size):
                    sl = slice(s, s + opt.batch_size)
                    x0 = images[sl].to(ctx.device)
                    # 2. x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps; loss = mean over pixels of (eps - eps_theta)^2
                    x_t = add_noise(model.scheduler, x0, eps[sl].to(ctx.device), t[sl])
                    c = class_labels[sl].to(ctx.device) if class_labels is not None else None
                    pred = predict_noise(unet, x_t, t[sl].to(ctx.device), c)
                    total[sl] += ((pred - eps[sl].to(ctx.device)) ** 2).flatten(1).mean(1).float().cpu()
            return total / opt.draws

    def compute(self, ctx: Any) -> dict[str, Any]:
        sets = self._sets(ctx)
        if isinstance(sets, str):
            return {"skipped": sets}
        x_m, y_m, x_h, y_h = sets
        loss_m = self._losses(ctx, x_m, y_m, "members")
        loss_h = self._losses(ctx, x_h, y_h, "heldout")
        # Members are expected to have the lower loss: the attack's score is minus the loss.
        auc, tpr = auc_and_tpr(-loss_m, -loss_h, self.options.fpr)
        return {
            "auc": auc,
            "tpr_at_fpr": tpr,
            "fpr": self.options.fpr,
            "mean_loss_forget": float(loss_m.mean()),
            "mean_loss_heldout": float(loss_h.mean()),
            "n_members": len(x_m),
            "n_heldout": len(x_h),
        }


@hookimpl
def register_metrics(register) -> None:
    register(Forgetting)
    register(Kept)
    register(Fidelity)
    register(Membership)
    register(RetrainDistance)
