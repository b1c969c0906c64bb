"""The GPU paths on the CPU: deferred host reads, ``--channels-last`` and ``--compile`` (docs/performance.md).

On an accelerator a host read (``.item()``, ``float(t)``, ``.tolist()``) waits for the device's queue to
drain, so the step loop keeps the logged values, lambda and the gradient norm on the device and reads them
every few steps (``UnlearnRun.defer_host_reads``). These tests switch that path on for a CPU run: it must
compute what the host path computes, do no read of its own between two flushes, and stop at a non-finite
value as the host path does, never checkpointing it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from unlearnctl import state_sha256
from unlearnctl.builtin.methods.erasediff import EraseDiff
from unlearnctl.builtin.methods.finetune import FineTune
from unlearnctl.checkpoints import StepLoop, list_checkpoints
from unlearnctl.commands.forget import ForgetRequest, forget
from unlearnctl.contexts.step_log import DEFERRED_LOG_LINES, StepLog
from unlearnctl.errors import NonFiniteError
from unlearnctl.manifest import read_manifest
from unlearnctl.runtime import COMPILE_BACKEND_ENV, prepare_module
from unlearnctl.testing.harness import make_unlearn_run, run_method
from unlearnctl.testing.tiny import tiny_unet

STEPS = DEFERRED_LOG_LINES + 2  # one flush after DEFERRED_LOG_LINES steps, one at the last step
SMALL = {"remain_batch_size": 4, "forget_batch_size": 4, "steps": STEPS}


def _run(method_cls, options: dict, defer: bool, tmp_path: Path, name: str) -> tuple[str, list[dict]]:
    method = method_cls(
        method_cls.Options(**{k: v for k, v in options.items() if k in method_cls.Options.model_fields})
    )
    out = tmp_path / name
    out.mkdir()
    run = make_unlearn_run(method=method, out_dir=out)
    run.defer_host_reads = defer
    model = run_method(method, run=run)
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    for line in lines:
        line.pop("time")  # elapsed seconds: the only value that is not computed from the model
    return state_sha256(model.unet), lines


@pytest.mark.parametrize(
    ("method_cls", "options"),
    [(FineTune, {}), (EraseDiff, {"lambda_rule": "fixed", "lambda": 0.125})],
    ids=["finetune", "erasediff-fixed"],
)
def test_deferred_reads_give_the_weights_and_log_of_the_host_path(method_cls, options, tmp_path: Path) -> None:
    # Exact by construction: the same float operations in the same order. The deferred path always lets
    # torch multiply the gradients by the clip coefficient, which is clamped to 1.0 when nothing is
    # clipped (x * 1.0 == x in IEEE arithmetic), where the host path skips that multiplication; a fixed
    # lambda is a Python float on both paths; the logged tensors are read as the same float64 values.
    host = _run(method_cls, {**SMALL, **options}, False, tmp_path, "host")
    deferred = _run(method_cls, {**SMALL, **options}, True, tmp_path, "deferred")
    assert deferred == host
    assert [line["step"] for line in deferred[1]] == list(range(1, STEPS + 1))


@pytest.mark.parametrize("rule", ["bome", "value", "cosine"])
def test_lambda_on_the_device_follows_the_host_formulas(rule: str, tmp_path: Path) -> None:
    options = {**SMALL, "steps": 1, "lambda_rule": rule, "eta": 0.5}
    _, host = _run(EraseDiff, options, False, tmp_path, "host")
    _, deferred = _run(EraseDiff, options, True, tmp_path, "deferred")
    h, d = host[0], deferred[0]
    # step 1's losses (and q) come before any update: the same operations, exactly equal
    assert (d["loss_r"], d["loss_f"], d.get("q")) == (h["loss_r"], h["loss_f"], h.get("q"))
    if rule == "cosine":
        # float64 on both paths; the device path takes torch's sqrt (correctly rounded), the host path
        # Python's x ** 0.5 (C pow, within one unit in the last place): cos and lambda = eta - cos then
        # differ by a few units of 2^-52 at most
        assert d["lambda"] == pytest.approx(h["lambda"], rel=0, abs=1e-14)
    else:
        # the same IEEE float64 operations (*, -, /, max with 0) on the host and in torch: equal
        assert d["lambda"] == h["lambda"]
    # The update g_F + lambda g_q: add_ with a float alpha (one fused multiply-add per element) against
    # addcmul_ with the float32 lambda (a product rounded, then a sum): each element differs by at most one
    # rounding of float32 (2^-24 relative) of terms no larger than |g_F| + |lambda g_q|; the norm of the
    # update then moves by at most 2^-24 times the norm of |g_F| + |lambda g_q| <= (1 + lambda) * max norm:
    # relative 2^-24 * (1 + lambda) * (a few) < 1e-6 for these lambdas (< 1)
    assert d["grad_norm"] == pytest.approx(h["grad_norm"], rel=1e-6, abs=0)


_READS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__")


def test_the_step_loop_reads_nothing_to_the_host_between_flushes(monkeypatch, tmp_path: Path) -> None:
    method = EraseDiff(EraseDiff.Options(**SMALL, lambda_rule="bome"))  # relabel; bome: the most host-bound rule
    run = make_unlearn_run(method=method, out_dir=tmp_path)
    run.defer_host_reads = True
    reads: list[str] = []
    flushing = [False]

    def counting(name: str):
        original = getattr(torch.Tensor, name)

        def read(self, *args, **kwargs):
            caller = sys._getframe(1)
            module = caller.f_globals.get("__name__", "")
            if not flushing[0] and module.startswith("unlearnctl"):
                reads.append(f"{name} in {module}:{caller.f_lineno}")
            return original(self, *args, **kwargs)

        return read

    flush = StepLog.flush

    def flushing_pending(self):
        flushing[0] = True
        try:
            return flush(self)
        finally:
            flushing[0] = False

    monkeypatch.setattr(StepLog, "flush", flushing_pending)
    steps: list[int] = []
    run.hook = type("Hook", (), {"step_logged": lambda self, run, step, values: steps.append(step)})()
    with monkeypatch.context() as patched:
        for name in _READS:
            patched.setattr(torch.Tensor, name, counting(name))
        method.check(run.model, run.split)
        run.model.unet.train()
        method.unlearn(run)
    assert reads == []
    # the lines arrive in two flushes, all of them, in order
    assert steps == list(range(1, STEPS + 1))


def test_a_non_finite_value_found_at_a_deferred_read_names_its_step_and_is_never_checkpointed(tmp_path) -> None:
    run = make_unlearn_run(total_steps=20)
    run.defer_host_reads = True
    run.loop = StepLoop(20, folder=tmp_path / "checkpoints", every=5)
    run.loop.on_save = run._before_checkpoint
    run.log(1, {"loss": torch.tensor(0.5)})
    run.log(2, {"loss": torch.tensor(float("nan"))})
    with pytest.raises(NonFiniteError, match="loss became nan at step 2"):
        run.loop.save(2)
    assert list_checkpoints(tmp_path / "checkpoints") == []
    # a gradient: applied without a read; the next read names the optimizer step
    w = torch.nn.Parameter(torch.zeros(1))
    sgd = torch.optim.SGD([w], lr=1.0)
    run.apply_gradients(sgd, [torch.tensor([1.0])])
    run.apply_gradients(sgd, [torch.tensor([float("inf")])])
    with pytest.raises(NonFiniteError, match="gradient norm became inf at optimizer step 2"):
        run.flush_pending()


def test_a_compiled_module_copied_deeply_runs_its_own_weights() -> None:
    import copy

    unet = tiny_unet()
    x = torch.randn(2, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size,
                    generator=torch.Generator().manual_seed(0))  # fmt: skip
    t, c = torch.tensor([3, 7]), torch.tensor([0, 1])
    with torch.no_grad():
        eager = unet(x, t, class_labels=c).sample
        prepare_module(unet, compile=True, channels_last=True)
        copied = copy.deepcopy(unet)
        for p in copied.parameters():
            p.mul_(0.5)
        # the copy runs its halved weights, not the original's (a compiled wrapper bound to the original would)
        assert not torch.equal(copied(x, t, class_labels=c).sample, unet(x, t, class_labels=c).sample)
        # channels-last changes the convolutions' kernels, not what they compute: float32 rounding, bounded
        # by the UNet's outputs (|out| ~ 1) times a few hundred roundings of 2^-24
        assert torch.allclose(unet(x, t, class_labels=c).sample, eager, rtol=0, atol=1e-4)
    assert list(unet.state_dict()) == list(copied.state_dict())  # the keys do not change


def test_compile_and_channels_last_are_recorded_and_replayed(cli, tiny, tmp_path: Path, monkeypatch) -> None:
    # aot_eager: torch.compile's tracing and autograd without code generation (inductor would compile C++ for
    # a minute on 2 cores); the `value` rule runs EraseDiff's inner copy of the compiled UNet
    monkeypatch.setenv(COMPILE_BACKEND_ENV, "aot_eager")
    request = ForgetRequest(
        model="tiny-cond", classes="1", out=tmp_path / "a", steps=2, grid_per_class=0, compile=True,
        channels_last=True, sets=["remain_batch_size=4", "forget_batch_size=4", "lambda_rule=value"],
        command=["forget"],
    )  # fmt: skip
    manifest = read_manifest(forget(request).run_dir)
    assert manifest.environment.compile and manifest.environment.channels_last
    assert manifest.environment.env[COMPILE_BACKEND_ENV] == "aot_eager"
    result = cli("replay", tmp_path / "a" / "manifest.json", "--verify", "--out", tmp_path / "b")
    assert result.exit_code == 0, result.output
    again = read_manifest(tmp_path / "b")
    assert again.environment.compile and again.environment.channels_last
    assert again.weights.output_sha256 == manifest.weights.output_sha256  # exact: the same ops on one machine


def test_sample_with_the_speedups_records_them_and_draws_the_same_images(cli, tmp_path: Path, monkeypatch) -> None:
    import numpy as np
    from PIL import Image

    from unlearnctl.testing.tiny import tiny_model

    monkeypatch.setenv(COMPILE_BACKEND_ENV, "aot_eager")
    tiny_model(num_classes=3).save(tmp_path / "m")
    args = ("sample", "--model", tmp_path / "m", "--num", "4", "--steps", "3", "--class", "1")
    assert cli(*args, "--out", tmp_path / "eager").exit_code == 0
    fast = cli(*args, "--out", tmp_path / "fast", "--channels-last", "--compile")
    assert fast.exit_code == 0, fast.output
    info = json.loads((tmp_path / "fast" / "samples.json").read_text())
    assert info["channels_last"] is True and info["compile"] is True
    for name in ("0000_1.png", "0003_1.png"):
        a = np.asarray(Image.open(tmp_path / "eager" / name), dtype=np.int16)
        b = np.asarray(Image.open(tmp_path / "fast" / name), dtype=np.int16)
        # channels-last convolutions round differently (float32, ~1e-6 of values of order 1 after three DDIM
        # steps), far below a uint8 level (1/127.5 in [-1, 1]): a pixel can differ by one level, only where its
        # value lies that close to a rounding boundary
        assert np.abs(a - b).max() <= 1


def test_eval_records_the_speedups_in_its_protocol(cli, tiny, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(COMPILE_BACKEND_ENV, "aot_eager")
    request = ForgetRequest(
        model="tiny-cond", classes="1", out=tmp_path / "run", steps=1, grid_per_class=0,
        sets=["remain_batch_size=4", "forget_batch_size=4"], command=["forget"],
    )  # fmt: skip
    forget(request)
    from unlearnctl.judge.classifier import Judge

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        Judge(3).eval().save(tmp_path / "judge")
    result = cli("eval", tmp_path / "run", "-n", "2", "--steps", "2", "--metrics", "forgetting,kept",
                 "--judge", tmp_path / "judge", "--channels-last", "--compile")  # fmt: skip
    assert result.exit_code == 0, result.output
    protocol = json.loads((tmp_path / "run" / "metrics.json").read_text())["protocol"]
    assert protocol["channels_last"] is True and protocol["compile"] is True
