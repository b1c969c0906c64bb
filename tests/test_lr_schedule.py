"""Learning-rate schedules of the unlearning methods (``lr_schedule``, ``lr_warmup_steps``).

The schedule is diffusers' own ``get_scheduler``; these tests hold the runner to it: the default is today's
constant rate with no scheduler at all, a schedule's logged rates are diffusers' values, its state survives a
stop and ``resume``, a warm-up the schedule cannot take is refused with the options (and by the runner),
and the baselines take the same options.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers.optimization import get_scheduler

from unlearnctl import OptionError, UsageError, split_forget, stopping
from unlearnctl.builtin.methods.blindspot import Blindspot
from unlearnctl.builtin.methods.erasediff import EraseDiff
from unlearnctl.builtin.methods.finetune import FineTune
from unlearnctl.builtin.methods.selective_amnesia import SelectiveAmnesia
from unlearnctl.checkpoints import StepLoop, latest_checkpoint
from unlearnctl.config import resolve_options
from unlearnctl.contexts.unlearn import UnlearnRun
from unlearnctl.errors import Interrupted
from unlearnctl.models.folder import state_sha256
from unlearnctl.testing.tiny import tiny_image_set, tiny_model

STEPS = 6
FAST = {"steps": STEPS, "remain_batch_size": 8, "forget_batch_size": 8}
COSINE = {"lr_schedule": "cosine", "lr_warmup_steps": 2}


class Recorder:
    """A lifecycle hook that keeps every logged line, and can ask the step loop to stop after one step."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.lines: list[dict[str, Any]] = []
        self.stop_after = stop_after

    def step_logged(self, run: UnlearnRun, step: int, values: dict[str, Any]) -> None:
        self.lines.append(dict(values))
        if step == self.stop_after:
            stopping.handle(signal.SIGTERM, None)  # as if SIGTERM came during this step

    def lrs(self) -> list[float]:
        return [line["lr"] for line in self.lines]


def forget(method_cls: type = EraseDiff, loop: StepLoop | None = None, hook: Recorder | None = None, **options):
    """Run a method on the tiny conditional model forgetting class 1; (sha256 of the weights, the run)."""
    model = tiny_model(conditional=True)
    data = tiny_image_set()
    split = split_forget(data, {i for i, lbl in zip(data.ids, data.labels, strict=True) if lbl == 1})
    fast = {k: v for k, v in FAST.items() if k in method_cls.Options.model_fields}
    method = method_cls(resolve_options(method_cls, sets={**fast, **options}))
    method.check(model, split)
    run = UnlearnRun(model, split, seed=0, total_steps=method.options.steps, loop=loop, hook=hook)
    try:
        method.unlearn(run)
        run.finish()
    finally:
        run.close()
    return state_sha256(model.unet), run


def diffusers_lrs(lr: float, name: str, warmup: int, steps: int) -> list[float]:
    """The rate of each of ``steps`` updates under diffusers' scheduler, computed on its own: a one-parameter
    Adam, the scheduler stepped after each update (the rate of update k is the one after k-1 steps)."""
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=steps)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_the_default_is_the_constant_rate_with_no_scheduler() -> None:
    default_sha, default = forget()
    explicit_sha, explicit = forget(lr_schedule="constant", lr_warmup_steps=0)
    assert default_sha == explicit_sha
    for run in (default, explicit):
        assert run.lr_scheduler is None
        assert not run.loop.tracks("lr_scheduler")
        assert run.optimizer is not None and run.optimizer.param_groups[0]["lr"] == EraseDiff.Options().lr


def test_cosine_with_warmup_follows_diffusers_and_changes_the_weights() -> None:
    constant_sha, _ = forget()
    hook = Recorder()
    sha, run = forget(hook=hook, **COSINE)
    assert run.loop.tracks("lr_scheduler") and run.lr_scheduler is not None
    expected = diffusers_lrs(EraseDiff.Options().lr, "cosine", 2, STEPS)
    # Exact equality: both sides are the same diffusers lambda times the same base rate, in the same float64
    # Python arithmetic, evaluated at the same step counts; any other schedule or an off-by-one step differs.
    assert [float(x) for x in hook.lrs()] == expected
    assert expected[0] == 0.0 and expected[2] == EraseDiff.Options().lr  # warm-up from 0, then the peak
    assert sha != constant_sha


def test_a_stopped_cosine_run_resumes_to_the_same_weights(tmp_path: Path) -> None:
    whole_sha, _ = forget(**COSINE)
    folder = tmp_path / "checkpoints"
    with pytest.raises(Interrupted):
        forget(loop=StepLoop(STEPS, folder=folder, every=0), hook=Recorder(stop_after=3), **COSINE)
    checkpoint = latest_checkpoint(folder)
    assert checkpoint is not None and checkpoint.step == 3
    hook = Recorder()
    resumed_sha, resumed = forget(loop=StepLoop(STEPS, resume=checkpoint), hook=hook, **COSINE)
    assert resumed.loop.resumed_from == 3
    assert resumed_sha == whole_sha
    # exact, as above: the restored schedule continues at step 4 (a fresh one would restart its warm-up)
    assert [float(x) for x in hook.lrs()] == diffusers_lrs(EraseDiff.Options().lr, "cosine", 2, STEPS)[3:]


@pytest.mark.parametrize("method_cls", [EraseDiff, SelectiveAmnesia, Blindspot])
def test_a_warmup_the_schedule_cannot_take_is_refused_with_the_options(method_cls: type) -> None:
    # when the options are made: selective-amnesia and blindspot prepare for minutes before their first step
    with pytest.raises(OptionError) as refused:
        resolve_options(method_cls, sets={"steps": STEPS, "lr_schedule": "linear", "lr_warmup_steps": STEPS + 1})
    message = str(refused.value)
    assert "\n" not in message and "lr_warmup_steps" in message and str(STEPS) in message
    assert "value error" not in message.lower()  # the check's own words, not pydantic's wrapper
    with pytest.raises(OptionError, match="lr_warmup_steps=2 needs a schedule"):  # constant has no warm-up
        resolve_options(method_cls, sets={"steps": STEPS, "lr_warmup_steps": 2})
    resolve_options(method_cls, sets={"steps": STEPS, "lr_schedule": "linear", "lr_warmup_steps": STEPS})


def test_make_optimizer_refuses_what_it_cannot_follow() -> None:
    # a plugin method's own options may not check: the runner refuses at the optimizer, in one line
    model = tiny_model(conditional=True)
    data = tiny_image_set()
    split = split_forget(data, {data.ids[0]})
    run = UnlearnRun(model, split, seed=0, total_steps=STEPS)
    params = list(model.unet.parameters())
    try:
        with pytest.raises(UsageError, match=f"at most {STEPS}") as refused:
            run.make_optimizer(params, lr=1e-4, lr_schedule="cosine", lr_warmup_steps=STEPS + 1)
        assert "\n" not in str(refused.value)
        with pytest.raises(UsageError, match="needs a schedule with a warm-up"):
            run.make_optimizer(params, lr=1e-4, lr_warmup_steps=1)
        with pytest.raises(UsageError, match="unknown lr_schedule 'step'"):
            run.make_optimizer(params, lr=1e-4, lr_schedule="step")  # type: ignore[arg-type]
        run.make_optimizer(params, lr=1e-4, lr_schedule="linear", lr_warmup_steps=STEPS)  # the whole run: fine
        assert run.lr_scheduler is not None
    finally:
        run.close()


def test_a_baseline_takes_the_schedule() -> None:
    constant_sha, constant = forget(FineTune)
    hook = Recorder()
    sha, run = forget(FineTune, hook=hook, lr_schedule="linear", lr_warmup_steps=1)
    assert constant.lr_scheduler is None and run.lr_scheduler is not None
    # exact, as above
    assert [float(x) for x in hook.lrs()] == diffusers_lrs(FineTune.Options().lr, "linear", 1, STEPS)
    assert sha != constant_sha
