"""Erasure losses shared by several built-in methods, each identical by definition to EraseDiff's.

``shared/spec/erasediff.md`` defines two erasure objectives f on the forget set; the baselines reuse
them unchanged (random-label and SalUn use ``relabel``; joint uses either):

- ``relabel`` (EraseDiff v4): ``f = E || eps_theta(x_t, t, c_f) - sg[eps_theta(x_t, t, c^)] ||^2``,
  x_t noised with eps ~ N(0, I), c^ a kept class (:func:`erasediff.draw_surrogates`);
- ``uniform`` (EraseDiff v1/v2): ``f = E || u - eps_theta(x~_t, t, c_f) ||^2``, u ~ U[0, 1)^d.

``EraseDiff.forget_loss`` computes the same numbers (``tests/test_baselines.py`` checks it). Means are
over pixels and batch, like every loss in unlearnctl.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from unlearnctl import UsageError

if TYPE_CHECKING:
    import torch
    from diffusers import UNet2DModel

    from unlearnctl import DiffusionModel, ForgetSplit


def relabel_loss(
    unet: UNet2DModel, x_t: torch.Tensor, t: torch.Tensor, c_f: torch.Tensor, c_hat: torch.Tensor
) -> torch.Tensor:
    """``|| eps_theta(x_t, t, c_f) - sg[eps_theta(x_t, t, c^)] ||^2``: the forget class answers like a kept one."""
    import torch
    from torch.nn.functional import mse_loss

    from unlearnctl.diffusion import predict_noise

    pred = predict_noise(unet, x_t, t, c_f).float()
    with torch.no_grad():
        target = predict_noise(unet, x_t, t, c_hat).float()
    return mse_loss(pred, target)


def uniform_loss(
    unet: UNet2DModel, x_t: torch.Tensor, t: torch.Tensor, c_f: torch.Tensor | None, u: torch.Tensor
) -> torch.Tensor:
    """``|| u - eps_theta(x~_t, t, c_f) ||^2`` with u ~ U[0, 1): train the forget set toward non-Gaussian noise."""
    from torch.nn.functional import mse_loss

    from unlearnctl.diffusion import predict_noise

    return mse_loss(predict_noise(unet, x_t, t, c_f).float(), u)


def check_relabel(method: str, model: DiffusionModel, split: ForgetSplit) -> None:
    """Refuse, in one line, what the relabel loss cannot do: no classes, or no kept class to relabel to."""
    if not model.conditional:
        raise UsageError(
            f"{method}: the relabel loss needs a class-conditional model and '{model.source}' is unconditional"
        )
    forget_labels = set(split.forget.labels)
    if any(lbl < 0 for lbl in forget_labels):
        raise UsageError(f"{method}: the forget set has unlabelled items, but the model is class-conditional")
    kept = set(split.remain_classes)
    for y in sorted(forget_labels):
        if not kept - {y}:
            raise UsageError(
                f"{method}: no kept class to relabel class {y} to (kept classes: {sorted(kept)}): forget fewer classes"
            )
