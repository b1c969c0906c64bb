"""The options of ``unlearnctl train`` and its architecture presets (pydantic only, no torch).

Apart from :mod:`unlearnctl.training` (which re-exports them) so that the ``retrain`` baseline can read
its defaults, and ``list``/``show`` describe it, without importing torch and diffusers
(docs/performance.md, "Start-up").
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from .components import Options

#: the learning-rate schedules of an unlearning method's optimizer (``UnlearnRun.make_optimizer``; diffusers'
#: ``get_scheduler`` names)
LRSchedule = Literal["constant", "constant_with_warmup", "linear", "cosine"]

Arch = Literal["digits-small", "tiny"]

#: UNet2DModel settings of each architecture preset (sample_size, channels and classes come from the data).
ARCHITECTURES: dict[str, dict[str, Any]] = {
    # 0.81 M parameters; attention at the lowest (2 x 2) level of an 8 x 8 input.
    "digits-small": {
        "block_out_channels": (32, 32, 64),
        "layers_per_block": 1,
        "down_block_types": ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        "up_block_types": ("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        "norm_num_groups": 8,
    },
    # About 42 k parameters, for tests.
    "tiny": {
        "block_out_channels": (8, 16),
        "layers_per_block": 1,
        "down_block_types": ("DownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "UpBlock2D"),
        "norm_num_groups": 4,
    },
}


class TrainOptions(Options):
    """Options of ``unlearnctl train`` (and of the ``retrain`` baseline)."""

    steps: int = Field(6000, ge=1, description="optimizer steps")
    batch_size: int = Field(64, ge=1, description="images per step")
    lr: float = Field(1e-3, gt=0, description="AdamW peak learning rate")
    lr_schedule: Literal["constant", "cosine"] = Field(
        "cosine", description="after warm-up: constant, or cosine decay to 0"
    )
    warmup_steps: int = Field(200, ge=0, description="linear learning-rate warm-up steps")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    grad_clip: float = Field(1.0, ge=0, description="gradient-norm clip (0 = off)")
    ema_decay: float = Field(0.999, ge=0, lt=1, description="EMA rate of the saved weights (diffusers EMAModel)")
    class_dropout: float = Field(
        0.1, ge=0, lt=1, description="probability of replacing a label by the null class (classifier-free guidance)"
    )
    conditional: bool = Field(True, description="class-conditional UNet (needs labelled data)")
    arch: Arch = Field("digits-small", description="UNet architecture preset")
    num_train_timesteps: int = Field(1000, ge=1, description="DDPM diffusion steps T")
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = Field(
        "linear", description="DDPMScheduler beta schedule (linear: 1e-4 .. 0.02)"
    )
    antithetic: bool = Field(True, description="antithetic timestep sampling (t and T-1-t)")
    log_every: int = Field(50, ge=1, description="steps between log lines (log.jsonl, progress)")
    grid_per_class: int = Field(8, ge=0, le=64, description="samples per class in samples/grid.png after training")
