"""The example plugin's own tests: what a plugin author runs with `pytest` in their package.

They use only unlearnctl's public API (`import unlearnctl`) and its test helpers (`unlearnctl.testing`).
"""

from __future__ import annotations

import pytest
import torch
from unlearnctl_example.label_range import LabelRange
from unlearnctl_example.null_target import NullTarget

import unlearnctl
from unlearnctl import diffusion
from unlearnctl.testing.contracts import check_component, component_id, registered_components
from unlearnctl.testing.harness import RecordingHook, run_method, tiny_split
from unlearnctl.testing.tiny import tiny_image_set, tiny_model


@pytest.mark.parametrize(
    ("cls", "options"),
    # label-range has required options: the runtime check (select on a tiny image set) needs values
    [(LabelRange, {"lo": 1, "hi": 2}), (NullTarget, {"batch_size": 4})],
)
def test_component_contract(cls, options):
    # the class checks, then the runtime checks: a tiny `select`; a tiny `unlearn` on CPU whose output
    # diffusers loads back and that is deterministic under a seed. [] = every check ran.
    assert check_component(cls, options=options) == []


def test_found_through_the_entry_point():
    # Installed with pip, the plugin is found by its entry point "example", not by importing it.
    found = {component_id(i) for i in registered_components(provider="example")}
    assert found == {"selector:label-range", "method:null-target"}


@pytest.mark.parametrize(
    ("argument", "expected"),
    [("3-5", {"lo": 3, "hi": 5}), ("4", {"lo": 4, "hi": 4}), ("lo=1;hi=2", {"lo": "1", "hi": "2"})],
)
def test_parse_argument(argument, expected):
    assert LabelRange.parse_argument(argument) == expected


@pytest.mark.parametrize("argument", ["three-five", "3-", "-5", "3-5-7"])
def test_parse_argument_rejects(argument):
    with pytest.raises(unlearnctl.OptionError, match="write LO-HI"):
        LabelRange.parse_argument(argument)


def _digits(num_classes=6, per_class=2):
    labels = [c for c in range(num_classes) for _ in range(per_class)]
    return unlearnctl.TensorImageSet(
        torch.zeros(len(labels), 1, 4, 4),
        ids=[f"item-{i}" for i in range(len(labels))],
        metadata=[{"label": c} for c in labels],
        class_names=[str(c) for c in range(num_classes)],
        name="toy",
    )


def test_select_keeps_the_range_only():
    data = _digits()
    selector = LabelRange(LabelRange.Options(lo=2, hi=3))
    assert selector.select(data) == {"item-4", "item-5", "item-6", "item-7"}


def test_select_rejects_a_class_the_dataset_lacks():
    with pytest.raises(unlearnctl.UsageError, match=r"class 9 does not exist .* 0\.\.5"):
        LabelRange(LabelRange.Options(lo=1, hi=9)).select(_digits())


def test_options_reject_a_reversed_range():
    with pytest.raises(ValueError, match="must be >= lo"):
        LabelRange.Options(lo=5, hi=2)


# --- the method, run for real on a tiny UNet through unlearnctl's runner --------------------------


def _run_null_target(steps, seed=0, **options):
    """null-target on a tiny class-conditional UNet, forgetting class 1 of a tiny image set, as `forget` runs it."""
    data = tiny_image_set(n_per_class=4, num_classes=3)
    split = unlearnctl.split_forget(data, LabelRange(LabelRange.Options(lo=1, hi=1)).select(data))
    hook = RecordingHook()  # stands in for the lifecycle hooks: records the logged steps
    method = NullTarget(NullTarget.Options(steps=steps, batch_size=4, **options))
    model = run_method(method, tiny_model(num_classes=3), split, seed=seed, hook=hook)
    return model, split, hook.steps


def _forget_gap(model, split):
    """MSE between the predictions under the forgotten class and under the null class, on fixed noise."""
    g = torch.Generator().manual_seed(1)
    x0 = split.forget.stacked()
    labels = torch.tensor(split.forget.labels)
    noise = torch.randn(x0.shape, generator=g)
    t = torch.randint(0, model.scheduler.config.num_train_timesteps, (len(x0),), generator=g)
    x_t = diffusion.add_noise(model.scheduler, x0, noise, t)
    with torch.no_grad():
        eps_c = diffusion.predict_noise(model.unet, x_t, t, labels)
        eps_null = diffusion.predict_noise(model.unet, x_t, t, torch.full_like(labels, model.null_class))
    return torch.nn.functional.mse_loss(eps_c, eps_null).item()


def test_null_target_pulls_the_forgotten_class_to_the_null_prediction():
    split = tiny_split(tiny_image_set(n_per_class=4, num_classes=3), forget_classes=[1])
    before = _forget_gap(tiny_model(num_classes=3), split)
    model, split, logged = _run_null_target(10, lr=1e-3)
    assert [step for step, _ in logged] == list(range(1, 11))
    # loss is the float32 sum (weight 1.0: an exact product), the test adds the two in float64: they differ by
    # one float32 rounding of a sum of two positive terms, <= 2^-24 (6e-8) relative; approx allows 1e-6
    assert all(v["loss"] == pytest.approx(v["loss_remain"] + v["loss_forget"]) for _, v in logged)
    assert _forget_gap(model, split) < 0.7 * before


def test_null_target_is_deterministic_under_a_seed():
    first, _, _ = _run_null_target(2, seed=3)
    second, _, _ = _run_null_target(2, seed=3)
    other, _, _ = _run_null_target(2, seed=4)
    assert unlearnctl.state_sha256(first.unet) == unlearnctl.state_sha256(second.unet)
    assert unlearnctl.state_sha256(first.unet) != unlearnctl.state_sha256(other.unet)


def test_null_target_refuses_an_unconditional_model():
    with pytest.raises(unlearnctl.UsageError, match="needs a class-conditional model"):
        run_method(NullTarget(NullTarget.Options(steps=1)), tiny_model(conditional=False))
