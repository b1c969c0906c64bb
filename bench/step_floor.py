"""Per-step cost of ``finetune`` and EraseDiff next to the floor: a plain diffusers/torch DDPM step.

The floor is written with diffusers and torch only: ``UNet2DModel`` forward with class labels, MSE,
backward, Adam step, on the same batch as the methods. Also timed, to count the passes a method needs:
forward + backward without the optimizer (``fb``), a forward pass alone under ``no_grad`` (``fwd``) and
the Adam step alone (``adam``). A method's "passes needed" time is ``n_fb * fb + n_fwd * fwd + n_adam * adam``
(finetune 1/0/1; EraseDiff relabel 2/1/1 -- remain and forget fwd+bwd, the surrogate's forward --,
uniform 2/0/1; the ``value`` rule adds its K=2 inner steps: relabel 3/4/3, uniform 3/1/3).

Everything runs in one process, interleaved: each round times every configuration once (the floor
loops ``--steps`` steps; a method is a fresh ``UnlearnRun`` of ``--steps`` steps, timed between its
``step_logged`` calls, so its set-up is not counted). Seconds are medians over all rounds; ratios are
medians over rounds of each round's ratio, which cancels the drift of a shared machine's load.

    OMP_WAIT_POLICY=PASSIVE python bench/step_floor.py                          # ddpm-digits, batch 128
    OMP_WAIT_POLICY=PASSIVE python bench/step_floor.py --model cifar10-arch --batch 8 --rounds 2 --steps 2
    python bench/step_floor.py --profile erasediff:bome:relabel                 # torch.profiler table
    python bench/step_floor.py --parts finetune erasediff:bome:relabel --steps 5  # seconds per part of a step
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from diffusers import DDPMScheduler, UNet2DModel
from torch.nn.functional import mse_loss

from unlearnctl.builtin.methods.erasediff import EraseDiff
from unlearnctl.builtin.methods.finetune import FineTune
from unlearnctl.contexts.unlearn import UnlearnRun

RULES = ("fixed", "bome", "cosine", "value")
TARGETS = ("relabel", "uniform")
#: (fwd+bwd, forward only, optimizer steps) each configuration needs per outer step
PASSES: dict[str, tuple[int, int, int]] = {"finetune": (1, 0, 1)}
for _rule in RULES:
    inner = _rule == "value"  # K = 2 inner steps: one more fwd+bwd of f, f(phi^K), two inner Adam steps
    PASSES[f"erasediff:{_rule}:relabel"] = (3, 4, 3) if inner else (2, 1, 1)
    PASSES[f"erasediff:{_rule}:uniform"] = (3, 1, 3) if inner else (2, 0, 1)


#: the clock every figure is read from: wall time, or (``--clock cpu``) the process's CPU time, which on a
#: one-thread CPU run is what the step costs, whatever else the shared machine is doing
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = ["wall"]


def set_clock(name: str) -> None:
    _clock[0] = name


def now() -> float:
    return CLOCKS[_clock[0]]()


class _Clock:
    """A ``step_logged`` listener noting the time of each logged step."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def step_logged(self, run: Any, step: int, values: dict[str, Any]) -> None:
        self.times.append(now())


def load(name: str, batch: int) -> tuple[Any, Any]:
    """(DiffusionModel, ForgetSplit forgetting class 2) of the built-in model, or the CIFAR-10 architecture."""
    if name == "ddpm-digits":
        from unlearnctl.commands.forget import ForgetRequest, prepare_forget

        with tempfile.TemporaryDirectory() as tmp:
            p = prepare_forget(ForgetRequest(classes="2", out=Path(tmp) / "run", grid_per_class=0))
        return p.model, p.split
    from unlearnctl import DiffusionModel
    from unlearnctl.testing.harness import tiny_split
    from unlearnctl.testing.stand_ins import DDPM_CIFAR10_CONFIG
    from unlearnctl.testing.tiny import tiny_image_set

    config = dict(DDPM_CIFAR10_CONFIG)
    if name == "cifar10-tiny":  # the smoke-test size: the same blocks, narrow (ddpm_cifar10_standin's widths)
        config.update(block_out_channels=[16, 32, 32, 32], norm_num_groups=8)
    torch.manual_seed(0)  # google/ddpm-cifar10-32's UNet, random weights, + 10 classes and the null class
    unet = UNet2DModel(**config, num_class_embeds=11)
    sched = DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
    model = DiffusionModel(unet=unet, scheduler=sched, source="ddpm-cifar10-32 architecture (random weights)")
    data = tiny_image_set(n_per_class=max(batch, 2), num_classes=10, image_size=32, channels=3)
    return model, tiny_split(data, [2])


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, precision: str) -> Any:
    """bf16/fp16 autocast as the runner's (``UnlearnRun.autocast``); a no-op in fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def floor_times(
    model: Any,
    split: Any,
    batch: int,
    steps: int,
    kind: str,
    device: str = "cpu",
    precision: str = "fp32",
    speedups: dict[str, bool] | None = None,
) -> list[float]:
    """Seconds per step of the plain diffusers/torch loop: ``floor`` (fwd+bwd+Adam), ``fb``, ``fwd`` or ``adam``

    (``adam``: the loop of ``floor``, timing the optimizer step only). ``speedups``: ``channels_last`` and
    ``compile`` applied to the UNet as ``--channels-last``/``--compile`` do (``prepare_module``).
    """
    from unlearnctl.runtime import prepare_module

    dev = torch.device(device)
    unet, sched = model.unet.to(dev).train(), model.scheduler
    prepare_module(unet, **(speedups or {}))
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(split.remain), generator=g)[:batch].tolist()
    x0 = torch.stack([split.remain[i][0] for i in idx]).to(dev)
    c = torch.tensor([split.remain[i][1] for i in idx]).to(dev)
    opt = torch.optim.Adam(unet.parameters(), lr=1e-4)
    out = []
    for _ in range(steps + 1):  # the first step is a warm-up
        _sync(dev)
        start = now()
        t = torch.randint(0, sched.config.num_train_timesteps, (batch,), generator=g).to(dev)
        noise = torch.randn(x0.shape, generator=g).to(dev)
        x_t = sched.add_noise(x0, noise, t)
        if kind == "fwd":
            with torch.no_grad(), autocast(dev, precision):
                unet(x_t, t, class_labels=c)
        else:
            with autocast(dev, precision):
                loss = mse_loss(unet(x_t, t, class_labels=c).sample.float(), noise)
            loss.backward()
            if kind == "adam":  # the optimizer step alone
                _sync(dev)
                start = now()
            if kind != "fb":
                opt.step()
            opt.zero_grad(set_to_none=True)
        _sync(dev)
        out.append(now() - start)
    return out[1:]


def make_method(config: str, batch: int) -> Any:
    if config == "finetune":
        return FineTune(FineTune.Options(remain_batch_size=batch))
    _, rule, target = config.split(":")
    return EraseDiff(
        EraseDiff.Options(lambda_rule=rule, target=target, remain_batch_size=batch, forget_batch_size=batch)
    )


def method_times(
    model: Any,
    split: Any,
    config: str,
    batch: int,
    steps: int,
    device: str = "cpu",
    precision: str = "fp32",
    speedups: dict[str, bool] | None = None,
) -> list[float]:
    """Seconds per outer step of a method through the real runner (``log.jsonl`` written), set-up excluded.

    On the CPU each step's losses are read and logged at once, so the clock reads after the step's work is
    done: one time per step after the first. On an accelerator the runner reads the logged values every
    ``DEFERRED_LOG_LINES`` steps (no host read inside a step): the first read ends the warm-up, then
    ``steps`` more steps run and the mean step time from that read to the last one is returned.
    """
    from unlearnctl.contexts.step_log import DEFERRED_LOG_LINES

    method = make_method(config, batch)
    method.check(model, split)
    clock = _Clock()
    with tempfile.TemporaryDirectory() as tmp:
        run = UnlearnRun(
            model, split, total_steps=1, out_dir=Path(tmp), hook=clock, device=device, precision=precision,
            **(speedups or {}),
        )  # fmt: skip
        warmup = DEFERRED_LOG_LINES if run.defer_host_reads else 1
        run.total_steps = warmup + steps
        model.unet.train()
        method.unlearn(run)
        run.finish()
    if run.defer_host_reads:  # a burst of lines per read: the time from the first read to the last, per step
        return [(clock.times[-1] - clock.times[warmup - 1]) / steps]
    return [b - a for a, b in zip(clock.times, clock.times[1:], strict=False)]


def parts(model: Any, split: Any, config: str, batch: int, steps: int) -> None:
    """Seconds per step in each part of a method's step (the runner's and the losses' functions, wrapped)."""
    import collections

    import unlearnctl.diffusion as diffusion
    from unlearnctl.builtin.methods import erasediff

    spent: dict[str, float] = collections.defaultdict(float)
    wrapped = [(UnlearnRun, "grads", "backward passes (run.grads)"),
               (UnlearnRun, "apply_gradients", "clip + Adam (+ EMA) (run.apply_gradients)"),
               (UnlearnRun, "log", "run.log"), (erasediff, "bilevel_lambda", "bilevel_lambda (float64 sums)"),
               (erasediff.EraseDiff, "forget_loss", "forward f (relabel: with the surrogate forward)"),
               (diffusion, "ddpm_loss", "forward F (ddpm_loss)")]  # fmt: skip

    def timed(fn: Any, label: str) -> Any:
        def inner(*a: Any, **k: Any) -> Any:
            start = now()
            try:
                return fn(*a, **k)
            finally:
                spent[label] += now() - start

        return inner

    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in wrapped]
    for (owner, name, label), (_, _, fn) in zip(wrapped, originals, strict=True):
        setattr(owner, name, timed(fn, label))
    try:
        per_step = statistics.median(method_times(model, split, config, batch, steps))
    finally:
        for owner, name, fn in originals:
            setattr(owner, name, fn)
    print(f"{config}: {per_step:.4f} s/step (median); per step, averaged over all {steps + 1} steps:")
    for label, secs in spent.items():
        print(f"  {label}: {secs / (steps + 1):.4f}")


def profile(model: Any, split: Any, config: str, batch: int, steps: int) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        method_times(model, split, config, batch, steps)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["ddpm-digits", "cifar10-arch", "cifar10-tiny"], default="ddpm-digits")
    ap.add_argument("--batch", type=int, default=128, help="remain (and forget) images per step")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (medians over all of them)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per configuration and round")
    ap.add_argument(
        "--configs", nargs="+", default=["finetune", *[f"erasediff:{r}:{t}" for r in RULES for t in TARGETS]]
    )
    ap.add_argument("--profile", metavar="CONFIG", help="print a torch.profiler table of CONFIG's steps instead")
    ap.add_argument("--parts", nargs="+", metavar="CONFIG", help="print where each CONFIG's step goes instead")
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="cpu", help="process CPU time (one thread) or wall")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    set_clock(args.clock)
    model, split = load(args.model, args.batch)
    if args.profile:
        profile(model, split, args.profile, args.batch, args.steps)
        return 0
    if args.parts:
        for config in args.parts:
            parts(model, split, config, args.batch, args.steps)
        return 0
    kinds = ("floor", "fb", "fwd", "adam")
    rounds: list[dict[str, float]] = []  # per round: the median of each configuration's steps
    times: dict[str, list[float]] = {k: [] for k in (*kinds, *args.configs)}
    for r in range(args.rounds):
        rounds.append({})
        for kind in kinds:
            times[kind] += (got := floor_times(model, split, args.batch, args.steps, kind))
            rounds[-1][kind] = statistics.median(got)
        for config in args.configs:
            times[config] += (got := method_times(model, split, config, args.batch, args.steps))
            rounds[-1][config] = statistics.median(got)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {v:.3f}" for k, v in rounds[-1].items()),
              file=sys.stderr, flush=True)  # fmt: skip
    med = {k: statistics.median(v) for k, v in times.items()}

    def needed(config: str, m: dict[str, float]) -> float:
        n_fb, n_fwd, n_adam = PASSES[config]
        return n_fb * m["fb"] + n_fwd * m["fwd"] + n_adam * m["adam"]

    env = {"model": args.model, "batch": args.batch, "rounds": args.rounds, "steps": args.steps,
           "clock": args.clock, **machine()}  # fmt: skip
    print(f"{env}\n")
    print(f"floor (fwd+bwd+Adam) {med['floor']:.4f} s/step; fwd+bwd {med['fb']:.4f}; forward only {med['fwd']:.4f}; "
          f"Adam step {med['adam']:.4f}\n")  # fmt: skip
    print("Ratios are medians over rounds of the round's ratio (each round measures everything once).\n")
    print("| step | s/step | x floor step | passes needed (fwd+bwd, fwd, Adam) | s at floor speed | x passes needed |")
    print("| --- | --- | --- | --- | --- | --- |")
    rows = []
    for config in args.configs:
        row = {"config": config, "s_per_step": med[config],
               "x_floor": statistics.median(rd[config] / rd["floor"] for rd in rounds),
               "passes": list(PASSES[config]), "needed_s": needed(config, med),
               "x_needed": statistics.median(rd[config] / needed(config, rd) for rd in rounds)}  # fmt: skip
        rows.append(row)
        print(f"| {config} | {row['s_per_step']:.4f} | {row['x_floor']:.2f} | {', '.join(map(str, row['passes']))} | "
              f"{row['needed_s']:.4f} | {row['x_needed']:.3f} |")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"env": env, "medians": med, "rounds": rounds, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
