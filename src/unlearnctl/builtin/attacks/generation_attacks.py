"""The attacks of ``unlearnctl audit`` that ask whether the model generates the forgotten class again:
``relearn``, ``embedding``, ``seed-search``, ``null-leakage``.

Each samples the attacked model (or a modified copy: fine-tuned, with a learned class embedding) and lets
the judge read the images; :func:`forgotten_rate` is the judged forgotten-class rate relearning tracks. The
mathematics is in :mod:`.relearn`, :mod:`.embedding` and :mod:`.sampling_attacks`; :mod:`.plugin` registers
the attacks.

This module imports neither torch nor the attacks' mathematics: ``unlearnctl list attacks`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from unlearnctl import Attack, OptionError, Options

if TYPE_CHECKING:
    from unlearnctl import AuditContext


def forgotten_rate(ctx: AuditContext, samples: int, stream: str, unet: Any = None) -> float:
    """The judged forgotten-class rate of a model (``unet``: a modified copy of ``ctx.model``'s UNet):
    conditional models, the share of ``samples`` images per forgotten class (under its label, the
    protocol's guidance) judged as that class, averaged over the classes; unconditional models, the share
    of ``samples`` unconditional images judged as any forgotten class. The same noise at every call."""
    if not ctx.conditional:
        images = ctx.sample(samples, None, stream=f"{stream}-unconditional", unet=unet)
        return float(ctx.judged_as(images).float().mean())
    rates = []
    for c in ctx.forget_classes:
        images = ctx.sample(samples, c, stream=f"{stream}-{c}", unet=unet)
        rates.append(float(ctx.judged_as(images, [c]).float().mean()))
    return sum(rates) / len(rates)


class Relearn(Attack):
    """Relearning: fine-tune on k forget images (or remaining data only); does the forgotten class come back?

    For each ``k``, a copy of the model is fine-tuned for ``steps`` Adam steps on the DDPM loss of ``k``
    images of the forget set (a seeded draw, the same for every role; the smaller sets inside the larger);
    with ``benign``, another copy on the remaining training data only (no forget image). At step 0 and
    ``evaluations`` evenly spaced steps after it, the judge reads ``samples`` images per forgotten class
    (the same noise at every point and for every role): the forgotten-class rate against fine-tuning steps.
    An unlearned model whose rate climbs back faster than the retrained reference's only hid the class.
    """

    name = "relearn"
    default = True
    needs_judge = True
    needs_forgotten_class = True
    headline = ("rate_after", "relearn")

    class Options(Options):
        k: list[int] = Field([5, 10, 50], min_length=1, description="numbers of forget images to fine-tune on")
        benign: bool = Field(True, description="also fine-tune on remaining data only (no forget image)")
        benign_images: int | None = Field(
            2000, ge=1, description="at most this many remaining images for the benign run: a seeded subset (None: all)"
        )
        steps: int = Field(60, ge=1, description="fine-tuning steps of each run")
        evaluations: int = Field(3, ge=1, description="evaluation points after step 0, evenly spaced up to steps")
        lr: float = Field(1e-4, gt=0, description="Adam learning rate of the fine-tuning")
        batch_size: int = Field(16, ge=1, description="images per fine-tuning step")
        samples: int = Field(64, ge=1, description="samples judged per forgotten class at each evaluation point")

    def eval_at(self) -> list[int]:
        o = self.options
        return sorted({0, *(round(o.steps * i / o.evaluations) for i in range(1, o.evaluations + 1))})

    def prepare(self, ctx: AuditContext) -> None:
        bad = [k for k in self.options.k if k < 1]
        if bad:
            raise OptionError(f"attack 'relearn': option 'k' must hold numbers >= 1, got {bad}")
        ctx.require_judge(self.name)
        ctx.members()

    def run(self, ctx: AuditContext) -> dict[str, Any]:
        import torch

        from .relearn import relearn

        o = self.options
        model = ctx.model
        x_m, y_m = ctx.members()
        order = torch.randperm(len(x_m), generator=ctx.generator("relearn-images"))
        conditions: list[tuple[str, torch.Tensor, torch.Tensor]] = []
        for k in sorted(set(o.k)):
            idx = order[: min(k, len(x_m))]
            conditions.append((f"k={k}", x_m[idx], y_m[idx]))
        if o.benign:
            x_r, y_r = ctx.remaining(o.benign_images)
            if len(x_r):
                conditions.append(("benign", x_r, y_r))
        eval_at = self.eval_at()
        before: list[float] = []

        results: dict[str, Any] = {}
        for n, (name, images, labels) in enumerate(conditions):

            def evaluate(step: int, unet: Any, _n: int = n) -> dict[str, Any]:
                if step == 0 and before:  # the model itself: the same for every condition
                    return {"rate": before[0]}
                rate = forgotten_rate(ctx, o.samples, "relearn-eval", unet=unet)
                if step == 0:
                    before.append(rate)
                ctx.progress((_n + step / o.steps) / len(conditions), rate=rate)
                return {"rate": rate}

            curve = relearn(
                model.unet,
                model.scheduler,
                images,
                labels.clamp_min(0) if ctx.conditional else None,
                steps=o.steps,
                eval_at=eval_at,
                lr=o.lr,
                batch_size=o.batch_size,
                generator=ctx.generator(f"relearn-{name}"),
                evaluate=evaluate,
            )
            results[name] = {"images": len(images), "curve": curve, "final_rate": curve[-1]["rate"]}

        out: dict[str, Any] = {"rate_before": before[0] if before else None}
        for name, result in results.items():
            out["rate_" + name.replace("=", "")] = result["final_rate"]
        largest = [r for name, r in results.items() if name != "benign"]
        out["rate_after"] = largest[-1]["final_rate"] if largest else None
        out["steps"] = o.steps
        out["conditions"] = results
        out["curves"] = {
            name: {"x": [p["step"] for p in r["curve"]], "y": [p["rate"] for p in r["curve"]]}
            for name, r in results.items()
        }
        out["curve_axes"] = {"x": "fine-tuning steps", "y": "judged forgotten-class rate"}
        return out


class Embedding(Attack):
    """Learn a new class embedding on held-out images of the forgotten class, then sample with it.

    Every UNet weight frozen, one fresh class-embedding vector is optimised with the DDPM loss on the
    held-out (test split) images of each forgotten class -- images the model never trained on, as an
    attacker could collect them -- then ``samples`` images are drawn with it as a new label (the
    protocol's guidance). ``success_rate``: the share the judge reads as the forgotten class;
    ``label_rate``: the same with the forgotten label itself (same noise), for comparison.
    Class-conditional models only.
    """

    name = "embedding"
    default = True
    conditional_only = True
    needs_judge = True
    needs_forgotten_class = True
    headline = ("success_rate", "embed")

    class Options(Options):
        steps: int = Field(150, ge=1, description="Adam steps of the embedding's optimisation")
        lr: float = Field(0.05, gt=0, description="Adam learning rate of the embedding")
        batch_size: int = Field(16, ge=1, description="held-out images per optimisation step")
        samples: int = Field(64, ge=1, description="samples drawn with the learned embedding, per forgotten class")
        init: Literal["mean", "null", "forgotten"] = Field(
            "mean",
            description="start vector: the mean of the embedding's rows, the null class's, the forgotten class's",
        )
        max_images: int | None = Field(
            None, ge=1, description="at most this many held-out images per class (None: all)"
        )

    def prepare(self, ctx: AuditContext) -> None:
        ctx.require_judge(self.name)
        empty = [c for c in ctx.forget_classes if len(ctx.heldout([c], self.options.max_images)[0]) == 0]
        if empty:
            raise OptionError(
                f"attack 'embedding': no held-out (test split) image of forgotten class(es) {empty} to learn an "
                "embedding from: choose other --attacks"
            )

    def run(self, ctx: AuditContext) -> dict[str, Any]:
        from .embedding import optimise_class_embedding, with_class_embedding

        o, model = self.options, ctx.model
        per_class: dict[str, Any] = {}
        for n, c in enumerate(ctx.forget_classes):
            images, _ = ctx.heldout([c], o.max_images)
            init = {"mean": None, "null": model.null_class, "forgotten": c}[o.init]
            vector = optimise_class_embedding(
                model.unet,
                model.scheduler,
                images,
                steps=o.steps,
                lr=o.lr,
                batch_size=o.batch_size,
                generator=ctx.generator(f"embedding-{c}"),
                init_label=init,
            )
            ctx.progress((n + 0.6) / len(ctx.forget_classes))
            unet, label = with_class_embedding(model.unet, vector)
            learned = ctx.sample(o.samples, label, stream=f"embedding-samples-{c}", unet=unet)
            plain = ctx.sample(o.samples, c, stream=f"embedding-samples-{c}")
            per_class[str(c)] = {
                "images": len(images),
                "success_rate": float(ctx.judged_as(learned, [c]).float().mean()),
                "label_rate": float(ctx.judged_as(plain, [c]).float().mean()),
                "vector_norm": float(vector.norm()),
            }
            ctx.progress((n + 1) / len(ctx.forget_classes))
        mean = {key: sum(r[key] for r in per_class.values()) / len(per_class) for key in ("success_rate", "label_rate")}
        return {**mean, "samples": o.samples, "per_class": per_class}


class SeedSearch(Attack):
    """Seed search: the share of many initial noises that the judge reads as the forgotten class.

    A budget of ``budget`` initial noises under each forgotten label (the protocol's guidance) and as many
    unconditional ones (the null class; an unconditional model's samples): ``rate_<mode>`` is the share
    judged as the forgotten class, ``first_hit_<mode>`` the draw that found the first one (what finding one
    costs), ``success_rate`` the better mode's rate. The same noises for every role.
    """

    name = "seed-search"
    default = True
    needs_judge = True
    needs_forgotten_class = True
    headline = ("success_rate", "seeds")

    class Options(Options):
        budget: int = Field(256, ge=1, description="initial noises drawn per mode (and per forgotten class)")
        modes: list[Literal["label", "unconditional"]] = Field(
            ["label", "unconditional"], min_length=1, description="under the forgotten label, unconditionally, or both"
        )

    def prepare(self, ctx: AuditContext) -> None:
        ctx.require_judge(self.name)

    def run(self, ctx: AuditContext) -> dict[str, Any]:
        from .sampling_attacks import seed_search

        return seed_search(ctx, self.options.budget, list(dict.fromkeys(self.options.modes)))


class NullLeakage(Attack):
    """Null-class leakage: guidance-free samples (null label; the label at w = 0) judged as the forgotten class.

    ``null_rate``: of ``samples`` images of the null (unconditional) class, the share the judge reads as a
    forgotten class -- a method that edits only the label's meaning can leave the class in the
    unconditional branch of classifier-free guidance; ``chance_rate`` is what an even share of the
    classes gives. ``unguided_rate``: the forgotten label sampled without guidance (``w = 0``), judged as
    that class. Class-conditional models only (an unconditional model's samples: ``seed-search``).
    """

    name = "null-leakage"
    default = True
    conditional_only = True
    needs_judge = True
    needs_forgotten_class = True
    headline = ("null_rate", "null")

    class Options(Options):
        samples: int = Field(256, ge=1, description="samples of the null class (and of each forgotten label at w = 0)")
        unguided: bool = Field(True, description="also sample each forgotten label without guidance (w = 0)")

    def prepare(self, ctx: AuditContext) -> None:
        ctx.require_judge(self.name)
        if ctx.model.null_class is None:
            raise OptionError("attack 'null-leakage' needs a model with a null class (classifier-free guidance)")

    def run(self, ctx: AuditContext) -> dict[str, Any]:
        from .sampling_attacks import null_leakage

        return null_leakage(ctx, self.options.samples, self.options.unguided)
