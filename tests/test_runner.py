"""The shared runner: devices, seeds, data streams, optimizer steps, EMA, logging and lifecycle hooks."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from unlearnctl import UsageError, split_forget
from unlearnctl.commands.forget import ForgetRequest, forget
from unlearnctl.contexts.unlearn import UnlearnRun
from unlearnctl.errors import NonFiniteError
from unlearnctl.runtime import check_precision, resolve_device, stream_seed
from unlearnctl.testing.tiny import tiny_image_set, tiny_model


def make_run(seed: int = 0, **kwargs) -> UnlearnRun:
    data = tiny_image_set()
    split = split_forget(data, {i for i, lbl in zip(data.ids, data.labels, strict=True) if lbl == 1})
    return UnlearnRun(tiny_model(), split, seed=seed, total_steps=3, **kwargs)


# --- devices and precision ------------------------------------------------------------------------


def test_auto_device_prefers_cuda_then_mps_then_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto").type == "mps"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto").type == "cuda"


def test_unavailable_or_unknown_devices_are_usage_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(UsageError, match="not available"):
        resolve_device("cuda")
    with pytest.raises(UsageError, match="unknown device"):
        resolve_device("gpu0")


def test_precision_is_fp32_on_cpu() -> None:
    assert check_precision("fp32", torch.device("cpu")) == "fp32"
    with pytest.raises(UsageError, match="bf16 needs a cuda"):
        check_precision("bf16", torch.device("cpu"))
    with pytest.raises(UsageError, match="unknown precision"):
        check_precision("fp8", torch.device("cpu"))
    with make_run().autocast():
        assert not torch.is_autocast_enabled()


# --- seeds and random streams ---------------------------------------------------------------------


def test_stream_seeds_are_fixed_and_distinct() -> None:
    seeds = {(s, name): stream_seed(s, name) for s in (0, 1) for name in ("method", "remain", "forget")}
    assert len(set(seeds.values())) == len(seeds)
    assert stream_seed(0, "method") == stream_seed(0, "method") < 2**63


def test_batches_are_seeded_and_reshuffled_each_epoch() -> None:
    run = make_run()
    data = run.split.remain  # 16 images of classes 0 and 2
    images = {tuple(data[i][0].flatten().tolist()): data[i][1] for i in range(len(data))}
    stream = run.batches("remain", 8)
    epoch1 = [next(stream) for _ in range(2)]
    epoch2 = [next(stream) for _ in range(2)]
    for epoch in (epoch1, epoch2):
        x = torch.cat([b[0] for b in epoch])
        labels = torch.cat([b[1] for b in epoch])
        seen = [tuple(img.flatten().tolist()) for img in x]
        assert sorted(seen) == sorted(images)  # each image once per epoch
        assert [images[s] for s in seen] == labels.tolist()  # labels travel with their images
        assert set(labels.tolist()) == {0, 2}
    assert not torch.equal(epoch1[0][0], epoch2[0][0])
    again = make_run().batches("remain", 8)
    assert torch.equal(next(again)[0], epoch1[0][0])
    other_seed = make_run(seed=1).batches("remain", 8)
    assert not torch.equal(next(other_seed)[0], epoch1[0][0])
    forget_batch = next(run.batches("forget", 100))
    assert len(forget_batch[0]) == 8 and set(forget_batch[1].tolist()) == {1}  # capped at the set's size


def test_antithetic_timesteps_and_noise() -> None:
    run = make_run()
    x0 = torch.zeros(6, 1, 8, 8)
    noise, t = run.sample_noise_and_t(x0)
    T = run.model.scheduler.config.num_train_timesteps
    assert noise.shape == x0.shape and t.shape == (6,)
    assert torch.equal(t[4:], T - 1 - t[:2])  # n/2+1 draws of t, then T-1-t, cut to n
    n2, t2 = make_run().sample_noise_and_t(x0)
    assert torch.equal(noise, n2) and torch.equal(t, t2)


# --- optimizer steps, clipping, EMA ---------------------------------------------------------------


def test_apply_gradients_clips_the_global_norm_and_counts_steps() -> None:
    run = make_run()
    w = torch.nn.Parameter(torch.zeros(2))
    sgd = torch.optim.SGD([w], lr=1.0)
    norm = run.apply_gradients(sgd, [torch.tensor([3.0, 4.0])], clip=1.0)
    assert norm == 5.0  # exact: sqrt(3^2 + 4^2) in float32
    # torch clips by 1 / (norm + 1e-6): relative 2e-7 from 1/5, plus three float32 roundings (2^-24 each)
    assert torch.allclose(w.detach(), torch.tensor([-0.6, -0.8]), rtol=1e-6, atol=0)
    assert run.optimizer_steps == 1
    run.apply_gradients(sgd, [torch.tensor([3.0, 4.0])], clip=0.0)  # 0: no clipping
    assert torch.allclose(w.detach(), torch.tensor([-3.6, -4.8]), rtol=1e-6, atol=0)  # the same, plus one step


def test_non_finite_gradient_is_an_error_in_fp32() -> None:
    run = make_run()
    w = torch.nn.Parameter(torch.zeros(1))
    with pytest.raises(NonFiniteError, match="lower the learning rate"):
        run.apply_gradients(torch.optim.SGD([w], lr=1.0), [torch.tensor([float("nan")])])


def test_ema_has_a_fixed_rate_from_the_first_step() -> None:
    run = make_run()
    unet = run.model.unet
    before = [p.detach().clone() for p in unet.parameters()]
    optimizer = run.make_optimizer(unet.parameters(), lr=1e-2)
    run.use_ema(0.9)
    x0, labels = next(run.batches("remain", 8))
    noise, t = run.sample_noise_and_t(x0)
    from unlearnctl.diffusion import ddpm_loss

    run.backward_step(optimizer, ddpm_loss(unet, run.model.scheduler, x0, labels, t, noise))
    after = [p.detach().clone() for p in unet.parameters()]
    assert run.finish() == "ema"
    for p, b, a in zip(unet.parameters(), before, after, strict=True):
        # diffusers computes ema - (1 - 0.9) * (ema - theta), the test 0.9 b + 0.1 a: each a few float32 roundings
        # (2^-24 relative) of numbers the size of b (a is b after one step of lr 1e-2), so they agree within
        # ~3e-7 |b|; the default rtol 1e-5 is 30x that, atol 1e-7 covers weights near 0
        assert torch.allclose(p.detach(), 0.9 * b + 0.1 * a, atol=1e-7)


def test_log_appends_json_lines_and_calls_the_hook(tmp_path: Path) -> None:
    calls = []

    class Hook:
        def step_logged(self, run, step, values):
            calls.append((step, values))

    run = make_run(out_dir=tmp_path, hook=Hook())
    run.make_optimizer(run.model.unet.parameters(), lr=3e-4)
    run.log(1, {"loss": torch.tensor(0.5), "lambda": 0.1})
    run.log(2, {"loss": 0.25, "lambda": 0.2})
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [(line["step"], line["loss"], line["lr"]) for line in lines] == [(1, 0.5, 3e-4), (2, 0.25, 3e-4)]
    assert all(line["time"] >= 0 for line in lines)
    assert [c[0] for c in calls] == [1, 2] and calls[1][1] == lines[1]
    assert run.last_values == {"loss": 0.25, "lambda": 0.2}
    assert list(run.steps()) == [1, 2, 3]


# --- the lifecycle hooks through the real plugin path ---------------------------------------------

TRACKER = """
import unlearnctl
CALLS = []

@unlearnctl.hookimpl
def run_started(run):
    CALLS.append(("started", run.total_steps, run.description, run.out_dir.name, run.work_dir.name))

@unlearnctl.hookimpl
def step_logged(run, step, values):
    CALLS.append(("step", step, sorted(values)))

@unlearnctl.hookimpl
def run_finished(run, result):
    CALLS.append(("finished", str(run.out_dir), result.optimizer_steps))
"""


def test_lifecycle_hooks_reach_a_tracker_plugin(fake_plugins, tmp_path: Path) -> None:
    fake_plugins.add("tiny", "from tiny_plugin import register_datasets, register_models")
    module = fake_plugins.add("tracker", TRACKER)
    out = tmp_path / "run"
    request = ForgetRequest(model="tiny-cond", classes="1", out=out, steps=2, grid_per_class=0,
                            sets=["remain_batch_size=4", "forget_batch_size=4"], command=["forget"])  # fmt: skip
    forget(request)
    calls = sys.modules[module].CALLS
    # out_dir is the final folder from the start; the files are written in work_dir, a hidden sibling
    assert calls[0][:4] == ("started", 2, "erasediff tiny-cond", "run") and calls[0][4].startswith(".run.partial-")
    assert [c[1] for c in calls[1:3]] == [1, 2] and "loss_r" in calls[1][2]
    assert calls[3] == ("finished", str(out), 2)
