"""The runtime contract checks (unlearnctl.testing.checks): every built-in passes them, and each check
catches the break it is there for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import Field

import unlearnctl
from unlearnctl.testing.contracts import (
    ContractError,
    check_component,
    component_id,
    registered_components,
)
from unlearnctl.testing.tiny import tiny_image_set, tiny_model

#: option values the checks need (required options), or that keep them fast: the smallest settings
#: of the methods that train or sample (blindspot's proxy, selective-amnesia's replay and Fisher) and of
#: the attacks that fine-tune or sample
OPTIONS: dict[str, dict[str, Any]] = {
    "selector:classes": {"classes": ["1"]},
    "selector:random": {"fraction": 0.25},
    "selector:where": {"field": "label", "values": ["2"]},
    "selector:attribute": {"attribute": "odd"},
    "method:blindspot": {"proxy_steps": 1},
    "method:selective-amnesia": {"samples_per_class": 1, "fisher_samples": 1, "fisher_timesteps": 1, "sample_steps": 1},
    "metric:membership": {"draws": 2},
    "attack:relearn": {"steps": 2, "k": [2], "evaluations": 1, "samples": 2},
    "attack:embedding": {"steps": 2, "samples": 2},
    "attack:seed-search": {"budget": 4},
    "attack:null-leakage": {"samples": 4},
    "dataset:cifar10": {"download": False},  # no network in a contract check
}
#: built-ins whose runtime check cannot run on an offline test machine, and why
CANNOT_RUN_HERE = {
    "dataset:celeba": "has no data here",
    "dataset:celeba-hq": "has no data here",
    "dataset:cifar10": "has no data here",
    "dataset:imagefolder": "has no data here",
    "dataset:utkface": "has no data here",
    "model:ddpm-cifar10": "is not available here",
}


@pytest.mark.parametrize("info", registered_components(), ids=component_id)
def test_every_builtin_component_passes_its_runtime_contract(info, tmp_path: Path) -> None:
    key = component_id(info)
    options = dict(OPTIONS.get(key, {}))
    if key == "selector:indices":
        (tmp_path / "ids.txt").write_text("tiny-0000\n3\n")
        options = {"file": str(tmp_path / "ids.txt")}
    skipped = check_component(info.cls, options=options)
    if key in CANNOT_RUN_HERE:
        assert len(skipped) == 1 and CANNOT_RUN_HERE[key] in skipped[0], skipped
    else:
        assert skipped == []


def test_the_hub_model_passes_once_its_weights_are_in_the_cache(tmp_path: Path, monkeypatch) -> None:
    # offline, with a stand-in of google/ddpm-cifar10-32 in the Hugging Face cache (as after a download)
    from unlearnctl.registry import get_registry
    from unlearnctl.testing import stand_ins

    source = stand_ins.save_standin_model(tmp_path / "standin", layout="flat")
    cache = tmp_path / "hf-cache"
    stand_ins.fill_hf_cache(cache, "google/ddpm-cifar10-32", source)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    # huggingface_hub reads both at import time
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    assert check_component(get_registry().get("model", "ddpm-cifar10").cls) == []


# --- each check catches what it is for ----------------------------------------------------------------


class Steps(unlearnctl.Method):
    """Adam steps on the remain-set DDPM loss (a well-behaved method)."""

    name = "steps-ok"

    class Options(unlearnctl.Options):
        steps: int = Field(3, ge=1, description="optimizer steps")

    def unlearn(self, run: unlearnctl.UnlearnRun) -> None:
        optimizer = run.make_optimizer(run.model.unet.parameters(), lr=1e-3)
        remain = run.batches("remain", 8)
        for step in run.steps():
            x0, labels = next(remain)
            noise, t = run.sample_noise_and_t(x0)
            c = labels if run.model.conditional else None
            loss = unlearnctl.diffusion.ddpm_loss(run.model.unet, run.model.scheduler, x0, c, t, noise)
            run.backward_step(optimizer, loss)
            run.log(step, {"loss": loss.item()})


class GlobalRng(Steps):
    """Draws its noise from the global torch RNG."""

    name = "global-rng"

    def unlearn(self, run: unlearnctl.UnlearnRun) -> None:
        with torch.no_grad():
            for p in run.model.unet.parameters():
                p.add_(1e-3 * torch.randn_like(p))


class Explodes(Steps):
    """Leaves NaN weights."""

    name = "explodes"

    def unlearn(self, run: unlearnctl.UnlearnRun) -> None:
        with torch.no_grad():
            next(iter(run.model.unet.parameters())).fill_(float("nan"))


def test_a_well_behaved_method_passes() -> None:
    assert check_component(Steps) == []


@pytest.mark.parametrize(
    ("cls", "message"),
    [(GlobalRng, "never the global torch RNG"), (Explodes, "non-finite weights")],
)
def test_method_check_catches(cls: type, message: str) -> None:
    with pytest.raises(ContractError, match=message):
        check_component(cls)


class PickFirst(unlearnctl.Selector):
    """Forget the first n items."""

    name = "pick-first"

    class Options(unlearnctl.Options):
        n: int = Field(ge=1, description="how many")

    def select(self, data: unlearnctl.ImageSet) -> set[str]:
        return set(data.ids[: self.options.n])


class Invents(PickFirst):
    """Returns an id the data does not have."""

    name = "invents"

    def select(self, data: unlearnctl.ImageSet) -> set[str]:
        return {"no-such-id"}


class AList(PickFirst):
    """Returns a list."""

    name = "a-list"

    def select(self, data: unlearnctl.ImageSet) -> set[str]:
        return list(data.ids[:2])  # type: ignore[return-value]


def test_selector_checks_need_required_options_and_catch_bad_ids() -> None:
    (skipped,) = check_component(PickFirst)
    assert "needs option(s) n" in skipped
    assert check_component(PickFirst, options={"n": 2}) == []
    with pytest.raises(ContractError, match="not in the data"):
        check_component(Invents, options={"n": 1})
    with pytest.raises(ContractError, match="must return a set"):
        check_component(AList, options={"n": 1})


class Shipped(unlearnctl.Dataset):
    """A dataset that ships its images."""

    name = "shipped"

    def load(self, split="train", data_dir=None) -> unlearnctl.ImageSet:
        return tiny_image_set(4, seed=0 if split == "train" else 1)


class TooBright(Shipped):
    """Images outside [-1, 1]."""

    name = "too-bright"

    def load(self, split="train", data_dir=None) -> unlearnctl.ImageSet:
        data = super().load(split, data_dir)
        return unlearnctl.TensorImageSet(
            data.images * 3, ids=data.ids, metadata=data.metadata, class_names=data.class_names
        )


class Shifting(Shipped):
    """Other content each load."""

    name = "shifting"
    loads = 0

    def load(self, split="train", data_dir=None) -> unlearnctl.ImageSet:
        Shifting.loads += 1
        return tiny_image_set(4, seed=Shifting.loads)


class NeedsFiles(Shipped):
    """Files the user places first."""

    name = "needs-files"

    def load(self, split="train", data_dir=None) -> unlearnctl.ImageSet:
        raise unlearnctl.UsageError(f"dataset 'needs-files': no files in '{data_dir}'")


def test_dataset_checks() -> None:
    assert check_component(Shipped) == []
    with pytest.raises(ContractError, match=r"outside \[-1, 1\]"):
        check_component(TooBright)
    with pytest.raises(ContractError, match="other items or content the second time"):
        check_component(Shifting)
    (skipped,) = check_component(NeedsFiles)
    assert "has no data here: dataset 'needs-files': no files in" in skipped


class Tiny(unlearnctl.ModelPreset):
    """The tiny UNet."""

    name = "tiny-ok"

    def load(self) -> unlearnctl.DiffusionModel:
        return tiny_model()


class Half(Tiny):
    """Loads in float16."""

    name = "half"

    def load(self) -> unlearnctl.DiffusionModel:
        model = tiny_model()
        model.unet.half()
        return model


class Offline(Tiny):
    """Weights on a server."""

    name = "offline"

    def load(self) -> unlearnctl.DiffusionModel:
        raise unlearnctl.ModelNotAvailableError("model 'offline' cannot be downloaded: no network")


def test_model_checks() -> None:
    assert check_component(Tiny) == []
    with pytest.raises(ContractError, match="on CPU in float32"):
        check_component(Half)
    (skipped,) = check_component(Offline)
    assert "model 'offline' is not available here: model 'offline' cannot be downloaded" in skipped


class Mean(unlearnctl.Metric):
    """Mean pixel of the forgotten classes' samples."""

    name = "mean"
    needs_samples = ("forget",)

    def compute(self, ctx: unlearnctl.EvalContext) -> dict[str, Any]:
        if not ctx.conditional:
            return {"mean": float(ctx.samples(None).mean())}
        return {"mean": float(torch.cat([ctx.samples(c) for c in ctx.forget_classes]).mean())}


class Noisy(Mean):
    """Adds global-RNG noise."""

    name = "noisy"

    def compute(self, ctx: unlearnctl.EvalContext) -> dict[str, Any]:
        return {"mean": float(torch.rand(()))}


class IntKeys(Mean):
    """Keys that are not strings."""

    name = "int-keys"

    def compute(self, ctx: unlearnctl.EvalContext) -> dict[str, Any]:
        return {1: 0.5}  # type: ignore[dict-item]


class BadNeeds(Mean):
    """Declares a sample group that does not exist."""

    name = "bad-needs"
    needs_samples = ("remain",)  # type: ignore[assignment]


def test_metric_checks() -> None:
    assert check_component(Mean) == []
    with pytest.raises(ContractError, match="other values on a fresh context"):
        check_component(Noisy)
    with pytest.raises(ContractError, match="dict with string keys"):
        check_component(IntKeys)
    with pytest.raises(ContractError, match="needs_samples"):
        check_component(BadNeeds)
