"""The ``ddpm-cifar10`` model preset: ``google/ddpm-cifar10-32`` from the Hugging Face Hub.

Loading itself (hub ids, the cache, pipeline folders) is ``unlearnctl.load_hub_model``; see docs/models.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from pydantic import Field

from unlearnctl import ModelPreset, Options, hookimpl
from unlearnctl.builtin.realdata import CIFAR10_CLASSES

if TYPE_CHECKING:
    from unlearnctl import DiffusionModel


class DdpmCifar10(ModelPreset):
    """google/ddpm-cifar10-32: unconditional DDPM (Ho et al. 2020) for CIFAR-10, 32x32 RGB, 35.7M parameters.

    Loaded from the Hugging Face cache or the Hub (``HF_HUB_OFFLINE=1``: cache only). Paired with the
    ``cifar10`` dataset; the class names are CIFAR-10's (for the judge: the model has no class input).
    Offline without the files: ``hf download google/ddpm-cifar10-32 --local-dir DIR`` on a connected
    machine, then ``--model DIR`` here (or copy the Hugging Face cache).
    """

    name = "ddpm-cifar10"
    default_dataset = "cifar10"
    repo_id: ClassVar[str] = "google/ddpm-cifar10-32"

    class Options(Options):
        revision: str = Field("main", description="Hub branch, tag or commit to load; a commit pins the exact weights")

    def load(self) -> DiffusionModel:
        from unlearnctl import load_hub_model

        return load_hub_model(
            self.repo_id,
            revision=self.options.revision,
            class_names=list(CIFAR10_CLASSES),
            default_dataset="cifar10",
            source=self.name,
        )


@hookimpl
def register_models(register) -> None:
    register(DdpmCifar10)
