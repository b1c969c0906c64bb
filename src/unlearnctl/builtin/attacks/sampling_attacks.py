"""The attacks that only sample and judge: seed search and null-class leakage; and the ROC curve points.

Both ask whether the model still draws the forgotten class when it is not asked for it the ordinary way:

- **seed search**: an adversary with a sampling budget draws many initial noises -- under the forgotten
  label, and unconditionally -- and keeps the images the judge reads as the forgotten class. Unlearning
  that only lowers the forgotten class's rate leaves a few seeds that still draw it; the result is the
  share of the budget that does (and the first draw that does: what finding one costs).
- **null-class leakage**: classifier-free guidance trains one network for the labels and for the null
  class; a method that edits what a label means can leave the class in the null (unconditional) branch,
  or in the conditional branch without guidance's amplification (``w = 0``).

Every draw comes from a named stream of the audit context (``ctx.sample(..., stream=...)``): the same
initial noises for every role, so the base model and the retrained reference are read on the same seeds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from unlearnctl import AuditContext


def roc_curve(member_scores: torch.Tensor, nonmember_scores: torch.Tensor) -> dict[str, list[float]]:
    """The corners of the exact ROC curve of a membership score (higher = member), for plots.

    One point per distinct score, thresholds from the highest down (``(0, 0)`` first: nothing flagged,
    ``(1, 1)`` last), each ``(FPR, TPR)`` of flagging the scores ``>=`` it; points inside a straight run
    are left out. Ties between members and non-members give a diagonal segment (joined by a straight line).
    """
    import torch

    members = member_scores.detach().to("cpu", torch.float64).flatten()
    nonmembers = nonmember_scores.detach().to("cpu", torch.float64).flatten()
    distinct, inverse = torch.unique(torch.cat([members, nonmembers]), sorted=True, return_inverse=True)
    k = len(distinct)
    # counts at each distinct score, from the highest down: flagging the scores >= it
    m_counts = torch.bincount(inverse[: len(members)], minlength=k).flip(0).cumsum(0)
    n_counts = torch.bincount(inverse[len(members) :], minlength=k).flip(0).cumsum(0)
    fpr = [0.0, *(n_counts.double() / max(len(nonmembers), 1)).tolist()]
    tpr = [0.0, *(m_counts.double() / max(len(members), 1)).tolist()]
    keep = [0]
    for i in range(1, len(fpr) - 1):
        a, c = keep[-1], i + 1
        cross = (fpr[i] - fpr[a]) * (tpr[c] - tpr[a]) - (tpr[i] - tpr[a]) * (fpr[c] - fpr[a])
        if abs(cross) > 1e-12:
            keep.append(i)
    keep.append(len(fpr) - 1)
    return {"fpr": [fpr[i] for i in keep], "tpr": [tpr[i] for i in keep]}


def first_hit(hits: torch.Tensor) -> int | None:
    """The 1-based draw of the first ``True`` in ``hits`` (None: no hit): how many draws finding one cost."""
    found = hits.nonzero()
    return int(found[0, 0]) + 1 if len(found) else None


def search(
    ctx: AuditContext, budget: int, label: int | None, stream: str, guidance: float | None = None
) -> dict[str, Any]:
    """``budget`` draws of the stream, under ``label`` (None: unconditional); which the judge reads as the
    forgotten class (``label`` itself, or any forgotten class for unconditional draws)."""
    images = ctx.sample(budget, label, stream=stream, guidance=guidance)
    hits = ctx.judged_as(images, None if label is None else [label])
    return {
        "draws": budget,
        "hits": int(hits.sum()),
        "rate": float(hits.float().mean()) if budget else 0.0,
        "first_hit": first_hit(hits),
    }


def seed_search(ctx: AuditContext, budget: int, modes: list[str]) -> dict[str, Any]:
    """Seed search for every mode (``"label"``: under each forgotten label, with the protocol's guidance;
    ``"unconditional"``: the null class, or an unconditional model's samples). See the module docstring."""
    out: dict[str, Any] = {"budget": budget}
    found: dict[str, dict[str, Any]] = {}
    wanted = [m for m in modes if m != "label" or ctx.conditional]
    for k, mode in enumerate(wanted):
        if mode == "label":
            per_class = {c: search(ctx, budget, c, f"seed-search-label-{c}") for c in ctx.forget_classes}
            hits = sum(r["hits"] for r in per_class.values())
            draws = sum(r["draws"] for r in per_class.values())
            firsts = [r["first_hit"] for r in per_class.values() if r["first_hit"] is not None]
            found[mode] = {
                "draws": draws,
                "hits": hits,
                "rate": hits / draws if draws else 0.0,
                "first_hit": min(firsts) if firsts else None,
                "per_class": {str(c): r for c, r in per_class.items()},
            }
        else:
            found[mode] = search(ctx, budget, None, "seed-search-unconditional")
        ctx.progress((k + 1) / len(wanted))
    for mode, result in found.items():
        out[f"rate_{mode}"] = result["rate"]
        out[f"found_{mode}"] = result["hits"] > 0
        out[f"first_hit_{mode}"] = result["first_hit"]
    out["success_rate"] = max((r["rate"] for r in found.values()), default=0.0)
    out["modes"] = found
    if "label" in modes and not ctx.conditional:
        out["note"] = "an unconditional model has no label to search under: unconditional draws only"
    return out


def null_leakage(ctx: AuditContext, samples: int, unguided: bool) -> dict[str, Any]:
    """The share of null-label samples judged as a forgotten class, and (``unguided``) of each forgotten
    label's samples without guidance (``w = 0``) judged as that class."""
    null = search(ctx, samples, None, "null-leakage")
    out: dict[str, Any] = {"samples": samples, "null_rate": null["rate"], "null_hits": null["hits"]}
    if unguided:
        per_class = {c: search(ctx, samples, c, f"null-leakage-unguided-{c}", guidance=0.0) for c in ctx.forget_classes}
        out["unguided_rate"] = sum(r["rate"] for r in per_class.values()) / max(len(per_class), 1)
        out["unguided_per_class"] = {str(c): r["rate"] for c, r in per_class.items()}
    judge = ctx.judge
    if judge is not None:
        # what a model that draws every class equally would give the null label
        out["chance_rate"] = len(ctx.forget_classes) / judge.num_classes
    return out
