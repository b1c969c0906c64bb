"""SalUn: saliency-masked random-label unlearning (Fan et al., "SalUn: Empowering Machine Unlearning via
Gradient-based Weight Saliency in Both Image Classification and Generation", ICLR 2024).

1. Saliency: s_i = | sum over D_f of d L_s / d theta_i |, with L_s the DDPM loss on the forget set
   (SalUn's code; ``saliency_loss=relabel`` uses the relabel loss instead), accumulated over one pass
   through D_f at the original weights.
2. Mask: m_i = 1 for the ``threshold`` fraction of weights with the largest s_i (default 50%), else 0.
   Saved in the run folder as ``salun-mask.safetensors`` (one uint8 tensor per parameter name).
3. Unlearning: the random-label loss (``random-label``: f_relabel + alpha * F) with every gradient
   multiplied by m before the Adam step, so masked-out weights never move.

Bugs of the public SalUn DDPM code (``generate_mask``) that are not copied: it takes an optimizer step
after every saliency batch (the weights drift while the saliency is measured), it accumulates
gradients after clipping them, and its ranking (``argsort`` ascending, ``rank < k``) keeps the
*least* salient fraction. Its random label is the fixed class ``(c_f + 1) % 10``; here it is drawn
uniformly from the kept classes. ``docs/baselines.md`` has the details.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from unlearnctl import Method

from .common import ERASEDIFF_DEFAULTS, BaselineOptions, StepsOptions, Trainer
from .erasediff import draw_surrogates
from .losses import check_relabel, relabel_loss

if TYPE_CHECKING:
    import torch

    from unlearnctl import DiffusionModel, ForgetSplit, UnlearnRun

#: the mask, in the run folder
MASK_FILE = "salun-mask.safetensors"


class _SalUnOptions(StepsOptions):
    """salun's own options, shown after ``steps`` and before the shared ones (``common.py``)."""

    threshold: float = Field(
        0.5, gt=0, le=1, description="fraction of weights kept trainable: those with the largest saliency"
    )
    saliency_loss: Literal["ddpm", "relabel"] = Field(
        "ddpm", description="loss whose |gradient| over D_f is the saliency: ddpm (SalUn's code) or relabel"
    )
    alpha: float = Field(3.0, ge=0, description="weight of the remaining-set DDPM loss F (SalUn's, per pixel)")


class SalUn(Method):
    """SalUn: random-label unlearning restricted to the weights most salient for the forget set.

    A mask keeps the top `threshold` fraction of weights by |gradient of the forget loss| over D_f;
    only those are updated (Fan et al., ICLR 2024). The mask is saved in the run folder. See docs/baselines.md.
    """

    name = "salun"
    conditional_only = True

    class Options(BaselineOptions, _SalUnOptions):
        weight_decay: ClassVar[float] = 0.0  # no option: plain Adam
        forget_batch_size: int = Field(
            ERASEDIFF_DEFAULTS.forget_batch_size, ge=1, description="images of D_f per step (and per saliency batch)"
        )
        grad_clip: float = Field(
            ERASEDIFF_DEFAULTS.grad_clip, ge=0, description="gradient-norm clip of the masked gradient (0 = off)"
        )

    def check(self, model: DiffusionModel, split: ForgetSplit) -> None:
        check_relabel(self.name, model, split)

    # -- steps 1 and 2: saliency and mask --------------------------------------------------------

    def saliency(self, run: UnlearnRun, params: list[torch.Tensor], kept: torch.Tensor) -> list[torch.Tensor]:
        """s = | sum_batches grad L_s |: one pass over D_f in order, at the current weights (nothing is stepped)."""
        import torch

        from unlearnctl.diffusion import add_noise, ddpm_loss

        o, model, unet = self.options, run.model, run.model.unet
        data = run.split.forget
        labels = torch.tensor(data.labels, dtype=torch.long)
        total = [torch.zeros_like(p) for p in params]
        for start in range(0, len(data), o.forget_batch_size):
            idx = range(start, min(start + o.forget_batch_size, len(data)))
            x0 = torch.stack([data[i][0] for i in idx]).to(run.device)
            c_f = labels[start : start + len(x0)].to(run.device)
            eps, t = run.sample_noise_and_t(x0, o.antithetic)
            with run.autocast():
                if o.saliency_loss == "ddpm":
                    loss = ddpm_loss(unet, model.scheduler, x0, c_f, t, eps)
                else:
                    c_hat = draw_surrogates(c_f, kept, run.generator)
                    loss = relabel_loss(unet, add_noise(model.scheduler, x0, eps, t), t, c_f, c_hat)
            # weight each batch by its size, so the sum is over images whatever the batching
            for acc, g in zip(total, run.grads(loss * len(x0), params), strict=True):
                acc.add_(g)
        return [s.abs() for s in total]

    def make_mask(self, saliency: list[torch.Tensor]) -> list[torch.Tensor]:
        """1 for the ``threshold`` fraction of weights with the largest saliency (a global ranking), else 0."""
        import torch

        flat = torch.cat([s.flatten().float().cpu() for s in saliency])
        k = max(1, round(self.options.threshold * flat.numel()))
        keep = torch.zeros(flat.numel(), dtype=torch.bool)
        keep[torch.topk(flat, k, sorted=False).indices] = True
        masks, start = [], 0
        for s in saliency:
            masks.append(keep[start : start + s.numel()].reshape(s.shape).to(s.device))
            start += s.numel()
        return masks

    def save_mask(self, run: UnlearnRun, names: list[str], masks: list[torch.Tensor]) -> None:
        """``salun-mask.safetensors`` in the run folder: parameter name -> uint8 mask (1 = trainable)."""
        import torch

        if run.work_dir is None:  # the run folder being written (run.out_dir exists only once it is whole)
            return
        from safetensors.torch import save_file

        tensors = {name: m.to(torch.uint8).cpu().contiguous() for name, m in zip(names, masks, strict=True)}
        kept = sum(int(m.sum()) for m in masks)
        total = sum(m.numel() for m in masks)
        metadata = {
            "method": self.name,
            "threshold": str(self.options.threshold),
            "saliency_loss": self.options.saliency_loss,
            "trainable": str(kept),
            "total": str(total),
        }
        save_file(tensors, str(run.work_dir / MASK_FILE), metadata=metadata)

    # -- step 3: masked random-label unlearning --------------------------------------------------

    def unlearn(self, run: UnlearnRun) -> None:
        import torch

        o = self.options
        model, unet = run.model, run.model.unet
        self.check(model, run.split)
        named = [(n, p) for n, p in unet.named_parameters() if p.requires_grad]
        names, params = [n for n, _ in named], [p for _, p in named]
        kept = torch.tensor(run.split.remain_classes, dtype=torch.long)

        # 1-2. saliency over D_f at the original weights, then the mask of the most salient weights
        masks = self.make_mask(self.saliency(run, params, kept))
        self.save_mask(run, names, masks)
        trainable = sum(int(m.sum()) for m in masks) / sum(m.numel() for m in masks)

        trainer = Trainer(run, o, params)
        for step in run.steps():
            # 3. a remain and a forget batch; one antithetic draw of t for both
            remain, forget = trainer.draw()
            # 4. the random-label loss f_relabel + alpha F (as random-label)
            with run.autocast():
                loss_f = trainer.relabel_loss(forget)
                loss_r = trainer.ddpm_loss(remain)
            # 5. zero the gradients of masked-out weights, then clip, step, EMA (the runner). Adam moves a
            #    weight only where a gradient was ever non-zero, so masked-out weights stay exactly as they were.
            grads = [g * m for g, m in zip(run.grads(loss_f + o.alpha * loss_r, params), masks, strict=True)]
            grad_norm = trainer.apply_gradients(grads)
            run.log(
                step,
                {"loss_r": loss_r.detach(), "loss_f": loss_f.detach(), "grad_norm": grad_norm, "trainable": trainable},
            )
