"""Retrain: train the model's architecture from scratch on the remaining set only -- the gold standard.

What every unlearning method approximates: a model that never saw the forget set. It reuses the training
loop of ``unlearnctl train`` (``training.train_model``) with the same recipe -- every default below is
``unlearnctl train``'s, read from ``TrainOptions``, so ``forget --method retrain --seed S`` gives the
same weights as ``train --classes ... --seed S`` (``tests/test_baselines.py`` checks it on a tiny
model). The input model contributes only its architecture, noise schedule and class ids; its weights
are thrown away. The step budget is its own option: the built-in ``ddpm-digits`` was trained for 6,000
steps, the default here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from unlearnctl import Method, Options, TrainOptions, UsageError

if TYPE_CHECKING:
    from unlearnctl import DiffusionModel, ForgetSplit, UnlearnRun

_TRAIN = TrainOptions.model_fields


def _plain(value: Any) -> Any:
    return tuple(_plain(v) for v in value) if isinstance(value, list | tuple) else value


def architecture_of(model: DiffusionModel) -> str | None:
    """The ``unlearnctl train`` architecture preset the model's UNet was built from (None: not one of them)."""
    from unlearnctl import ARCHITECTURES, build_unet

    config = {k: _plain(v) for k, v in model.unet.config.items() if not k.startswith("_")}
    for arch in ARCHITECTURES:
        fresh = build_unet(arch, model.image_size, model.channels, model.num_classes)
        if {k: _plain(v) for k, v in fresh.config.items() if not k.startswith("_")} == config:
            return arch
    return None


def train_options_for(model: DiffusionModel, values: dict[str, Any]) -> TrainOptions:
    """``TrainOptions`` that rebuild ``model``'s architecture and noise schedule, with the recipe in ``values``.

    Raises ``UsageError`` when the model is not one ``unlearnctl train`` can make (another architecture or
    noise schedule).
    """
    import torch

    from unlearnctl import ARCHITECTURES, build_scheduler

    arch = architecture_of(model)
    if arch is None:
        raise UsageError(
            f"'{model.source}' has a UNet architecture that `unlearnctl train` does not build (presets: "
            f"{', '.join(ARCHITECTURES)}): training it from scratch is not supported"
        )
    sched = model.scheduler.config
    options = TrainOptions(
        **values,
        conditional=model.conditional,
        arch=arch,
        num_train_timesteps=sched.num_train_timesteps,
        beta_schedule=sched.beta_schedule if sched.beta_schedule in ("linear", "scaled_linear", "squaredcos_cap_v2")
        else "linear",
        grid_per_class=0,
    )  # fmt: skip
    if not torch.allclose(build_scheduler(options).betas, model.scheduler.betas.cpu()):
        raise UsageError(
            f"'{model.source}' uses a noise schedule that `unlearnctl train` does not make "
            f"({sched.beta_schedule}, beta {sched.beta_start}..{sched.beta_end}): training it from scratch is "
            "not supported"
        )
    return options


def class_names_of(model: DiffusionModel) -> list[str]:
    """The model's class names (ids kept), or ``0..K-1`` when it has none; [] for an unconditional model."""
    if not model.conditional:
        return []
    return list(model.class_names) or [str(c) for c in range(model.num_classes)]


class Retrain(Method):
    """Retrain from scratch on the remaining data only: the gold standard unlearning approximates.

    Same architecture, noise schedule, class ids and training recipe as `unlearnctl train` (defaults
    read from it); the input weights are discarded. Slow by design. See docs/baselines.md.
    """

    name = "retrain"

    class Options(Options):
        steps: int = Field(
            _TRAIN["steps"].default, ge=1, description="training steps from scratch (the built-in ddpm-digits: 6000)"
        )
        batch_size: int = _TRAIN["batch_size"]
        lr: float = _TRAIN["lr"]
        lr_schedule: Literal["constant", "cosine"] = _TRAIN["lr_schedule"]
        warmup_steps: int = _TRAIN["warmup_steps"]
        weight_decay: float = _TRAIN["weight_decay"]
        grad_clip: float = _TRAIN["grad_clip"]
        ema_decay: float = _TRAIN["ema_decay"]
        class_dropout: float = _TRAIN["class_dropout"]
        antithetic: bool = _TRAIN["antithetic"]
        log_every: int = _TRAIN["log_every"]

    def check(self, model: DiffusionModel, split: ForgetSplit) -> None:
        """Refuse models ``unlearnctl train`` cannot rebuild, before any work."""
        train_options_for(model, self.options.model_dump())

    def unlearn(self, run: UnlearnRun) -> None:
        import torch

        from unlearnctl import train_model

        o = self.options
        model = run.model
        options = train_options_for(model, o.model_dump())

        # 1. train a fresh UNet of the same architecture on D_r only (training.train_model: AdamW, warm-up
        #    then cosine decay, classifier-free-guidance label dropout, EMA), seeded by the run's seed.
        result = train_model(
            run.split.remain, options, seed=run.seed, on_step=run.log, device=run.device,
            class_names=class_names_of(model), source=model.source, loop=run.loop, world=run.world,
        )  # fmt: skip
        # 2. its EMA weights replace the input weights (same architecture, so the same parameter names)
        with torch.no_grad():
            model.unet.load_state_dict(result.model.unet.state_dict())
        run.optimizer_steps += result.steps
        # 3. what is saved is the EMA of the training: register it as the run's EMA (it starts from the
        #    current weights and takes no step), so the manifest records saved_weights = "ema".
        run.use_ema(o.ema_decay, save=True)
