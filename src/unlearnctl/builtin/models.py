"""Built-in model presets, registered through the public ``register_models`` hook like any plugin's.

``ddpm-digits`` (class-conditional) and ``ddpm-digits-uncond`` (unconditional) ship inside the package
(``unlearnctl/assets/<name>/``): a flat diffusers folder, the judge classifier in ``judge/`` and the
``manifest.json`` of the ``unlearnctl train`` run that made it (see docs/digits.md,
bench/train_digits.sh and bench/train_digits_uncond.sh).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

from unlearnctl import ModelNotAvailableError, ModelPreset, Options, hookimpl

if TYPE_CHECKING:
    from unlearnctl import DiffusionModel


def asset_folder(name: str) -> Path:
    """The folder of a model shipped inside the package (``unlearnctl/assets/<name>``)."""
    return Path(str(files("unlearnctl") / "assets" / name))


class DdpmDigits(ModelPreset):
    """Class-conditional DDPM for 8x8 digits (0.8 M parameters), trained by unlearnctl; ships offline."""

    name = "ddpm-digits"
    default_dataset = "digits"
    #: the script that rebuilds the shipped files
    build_script = "bench/train_digits.sh"

    class Options(Options):
        pass

    def load(self) -> DiffusionModel:
        from unlearnctl import load_model_folder

        folder = asset_folder(self.name)
        if not (folder / "diffusion_pytorch_model.safetensors").is_file():
            raise ModelNotAvailableError(
                f"the built-in model files are missing from '{folder}': reinstall unlearnctl, or rebuild them with "
                f"{self.build_script}"
            )
        model = load_model_folder(folder, source=self.name)
        model.default_dataset = model.default_dataset or self.default_dataset
        return model


class DdpmDigitsUncond(DdpmDigits):
    """Unconditional DDPM for 8x8 digits (all ten classes, 0.8 M parameters), trained by unlearnctl; ships offline.

    The offline proof of unconditional unlearning: forgetting a class removes it from the samples
    (``eval`` reports the share of samples the judge, the one of ``ddpm-digits``, assigns to it).
    """

    name = "ddpm-digits-uncond"
    build_script = "bench/train_digits_uncond.sh"


@hookimpl
def register_models(register) -> None:
    register(DdpmDigits)
    register(DdpmDigitsUncond)
