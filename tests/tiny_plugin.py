"""A test plugin for the forget/replay tests: a tiny labelled dataset and tiny model presets.

Installed per test through the ``fake_plugins`` fixture (an entry point whose module re-exports these
hooks), so runs go through the real registry exactly as a third-party plugin's would.
"""

from __future__ import annotations

from pydantic import Field

import unlearnctl
from unlearnctl.testing.tiny import tiny_image_set, tiny_model


class TinyData(unlearnctl.Dataset):
    """Tiny 8x8 band images in 3 classes (tests)."""

    name = "tiny"
    version = "1"

    class Options(unlearnctl.Options):
        n_per_class: int = Field(8, ge=1, description="images per class")

    def load(self, split="train", data_dir=None):
        return tiny_image_set(n_per_class=self.options.n_per_class, seed=0 if split == "train" else 1)


class TinyCond(unlearnctl.ModelPreset):
    """Tiny class-conditional UNet over the 3 tiny classes (tests)."""

    name = "tiny-cond"
    default_dataset = "tiny"

    def load(self):
        model = tiny_model(conditional=True)
        model.source, model.default_dataset = self.name, "tiny"
        return model


class TinyUncond(unlearnctl.ModelPreset):
    """Tiny unconditional UNet (tests)."""

    name = "tiny-uncond"
    default_dataset = "tiny"

    def load(self):
        model = tiny_model(conditional=False)
        model.source, model.default_dataset = self.name, "tiny"
        return model


@unlearnctl.hookimpl
def register_datasets(register):
    register(TinyData)


@unlearnctl.hookimpl
def register_models(register):
    register(TinyCond)
    register(TinyUncond)
