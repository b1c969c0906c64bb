"""The multi-GPU check of ``docs/scaling.md``: EraseDiff steps and guided sampling on 1, 2, 4, 8 GPUs.

For each number of processes N the script launches ``torchrun --nproc_per_node N`` of itself in its
worker mode (``--worker``; a free ``--master_port`` each time). Every worker builds the
``google/ddpm-cifar10-32`` architecture with random weights and a class embedding of 10 classes and the
null class (``bench/step_floor.py``'s ``load``; nothing is downloaded, the data are synthetic tensors,
``unlearnctl.testing.tiny.tiny_image_set`` at 32 x 32 x 3, in a ``ForgetSplit`` that forgets class 2),
joins the others through ``unlearnctl.distributed.init_world`` (nccl, ``cuda:LOCAL_RANK``; gloo on the
CPU) and measures, per precision (fp32, and bf16 autocast where the GPU has it):

- ``erasediff:bome:relabel`` (EraseDiff's defaults) through the real runner (``UnlearnRun`` with the
  world): a global batch of ``--batch`` remaining + ``--batch`` forget images per step, split across the
  ranks, gradients all-reduced. s/step is the median over ``--steps`` steps after ``--warmup`` steps (on
  GPUs: the mean over ``--steps`` steps after the runner's first read of its logged values), read
  on rank 0 between its ``step_logged`` calls (every step ends in collectives, so the ranks move in
  lockstep); images/s = 2 x ``--batch`` / s; peak memory is ``torch.cuda.max_memory_allocated`` of each
  rank (the table shows the largest).
- guided DDIM sampling (``unlearnctl.diffusion.sample``, ``--sample-steps`` steps, guidance 2) of
  ``--images`` images: each rank samples its contiguous run of whole batches of ``--sample-batch``
  (``World.batch_shard``, as ``eval`` shares a draw); s is the wall time of the slowest rank (the times are
  gathered with ``torch.distributed``), median over ``--repeats`` calls after a short warm-up call;
  images/s = ``--images`` / s.

Sampling rows run first, then the EraseDiff rows. Rank 0 writes the rows measured so far as JSON after
every row, so a launch that fails part-way still contributes them (the script goes on to the next N and
exits 1 at the end). This script prints a Markdown table for the docs (speed-up: images/s over that of
the same row and precision with one GPU) and writes every row to ``--json``.

    python bench/scaling.py                                   # 1, 2, 4, ... all visible GPUs
    python bench/scaling.py --gpus 1,2,4,8 --json scaling.json
    python bench/scaling.py --device cpu --tiny --gpus 1,2    # smoke test: narrow UNet, CPU processes
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ERASEDIFF = "erasediff:bome:relabel"
HEADER = "| GPUs | row | precision | s/step | images/s | speed-up vs 1 | peak GiB |"


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpus", help="numbers of processes, e.g. 1,2,4,8 (default: 1, 2, 4, ... up to all visible GPUs)")
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--tiny", action="store_true",
                    help="smoke test: narrow UNet, global batch 4+4, 2 steps, 4 images of 2 DDIM steps")  # fmt: skip
    ap.add_argument("--batch", type=int, default=128, help="global remain (and forget) batch per step")
    ap.add_argument("--steps", type=int, default=10, help="timed EraseDiff steps")
    ap.add_argument("--warmup", type=int, default=2, help="EraseDiff steps before the timed ones")
    # (the worker gets --images: torchrun reads a "--num" anywhere on its command line as its --numa-binding)
    ap.add_argument("--images", "--num", dest="num", type=int, default=1024,
                    help="images per sampling call (all ranks together)")  # fmt: skip
    ap.add_argument("--sample-batch", type=int, default=128, help="sampling batch (a rank samples whole batches)")
    ap.add_argument("--sample-steps", type=int, default=50, help="DDIM steps")
    ap.add_argument("--repeats", type=int, default=2, help="timed sampling calls")
    ap.add_argument("--precision", nargs="+", default=None, help="default: fp32, and bf16 on a GPU that has it")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds allowed to each torchrun launch")
    ap.add_argument("--json", type=Path, help="write every row (and the machine) here")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.tiny:
        args.batch, args.steps, args.warmup = 4, 2, 1
        args.num, args.sample_batch, args.sample_steps, args.repeats = 4, 2, 2, 1
    if args.steps < 1 or args.warmup < 1 or args.repeats < 1:
        ap.error("--steps, --warmup and --repeats must be >= 1")
    return args


# --- the worker: one process of a torchrun launch ------------------------------------------------


class _Clock:
    """A ``step_logged`` listener noting the wall time of each logged step (called on rank 0 only)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def step_logged(self, run: Any, step: int, values: dict[str, Any]) -> None:
        self.times.append(time.perf_counter())


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: Any) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def erasediff_row(model: Any, split: Any, args: argparse.Namespace, world: Any, device: Any, precision: str) -> dict:
    """EraseDiff (bome, relabel) steps of the global batch through the real runner, on every rank."""
    from step_floor import make_method

    from unlearnctl.contexts.step_log import DEFERRED_LOG_LINES
    from unlearnctl.contexts.unlearn import UnlearnRun
    from unlearnctl.distributed import gather_objects

    method = make_method(ERASEDIFF, args.batch)
    method.check(model, split)
    clock = _Clock()
    _reset_peak(device)
    with tempfile.TemporaryDirectory() as tmp:
        run = UnlearnRun(model, split, total_steps=1, out_dir=Path(tmp), hook=clock, device=device,
                         precision=precision, world=world)  # fmt: skip
        # an accelerator's runner reads the logged values every DEFERRED_LOG_LINES steps (a burst of lines):
        # the first read ends the warm-up, and the time from it to the last read gives the mean step
        warmup = DEFERRED_LOG_LINES if run.defer_host_reads else args.warmup
        run.total_steps = warmup + args.steps
        model.unet.train()
        method.unlearn(run)
        run.finish()
    peaks = gather_objects(_peak_gib(device), world)
    if run.defer_host_reads:
        secs = [(clock.times[-1] - clock.times[warmup - 1]) / args.steps] if world.is_main else []
    else:
        secs = [b - a for a, b in zip(clock.times, clock.times[1:], strict=False)][warmup - 1 :]
    s = statistics.median(secs) if secs else math.nan
    return {"row": ERASEDIFF, "precision": precision, "batch": f"{args.batch}+{args.batch}", "s": s,
            "images_per_s": 2 * args.batch / s, "peak_gib": None if peaks[0] is None else max(peaks),
            "peak_gib_per_rank": peaks, "step_s": secs}  # fmt: skip


def sampling_row(model: Any, args: argparse.Namespace, world: Any, device: Any, precision: str) -> dict:
    """Guided DDIM sampling of ``--images`` images, each rank its contiguous run of whole batches."""
    import torch
    from step_floor import autocast

    from unlearnctl.diffusion import sample
    from unlearnctl.distributed import barrier, gather_objects

    shard = world.batch_shard(args.num, args.sample_batch)
    labels = (torch.arange(args.num) % model.num_classes)[shard.start : shard.stop]
    shape = (args.num, model.channels, model.image_size, model.image_size)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(0))[shard.start : shard.stop]

    def call(n: int, steps: int) -> float:
        _sync(device)
        barrier(world)
        start = time.perf_counter()
        if n:
            with autocast(device, precision):
                sample(model, n, labels[:n], noise=noise[:n].clone(), steps=steps, batch_size=args.sample_batch,
                       device=device, first_index=shard.start)  # fmt: skip
        _sync(device)
        return time.perf_counter() - start

    model.unet.to(device)
    call(min(len(shard), args.sample_batch), 2)  # warm-up: one batch, 2 steps (kernels, allocator)
    _reset_peak(device)
    per_call = [gather_objects(call(len(shard), args.sample_steps), world) for _ in range(args.repeats)]
    peaks = gather_objects(_peak_gib(device), world)
    slowest = [max(times) for times in per_call]
    s = statistics.median(slowest)
    return {"row": f"sampling (DDIM {args.sample_steps}, guided)", "precision": precision, "batch": args.num,
            "s": s, "images_per_s": args.num / s, "peak_gib": None if peaks[0] is None else max(peaks),
            "peak_gib_per_rank": peaks, "rank_s": per_call}  # fmt: skip


def worker(args: argparse.Namespace) -> int:
    import torch

    sys.path.insert(0, str(HERE))
    from step_floor import load, machine

    from unlearnctl.distributed import init_world

    if args.device == "cpu":
        torch.set_num_threads(1)
    world, device = init_world(torch.device(args.device))
    precisions = args.precision or (
        ["fp32", "bf16"] if device.type == "cuda" and torch.cuda.is_bf16_supported() else ["fp32"]
    )
    model, split = load("cifar10-tiny" if args.tiny else "cifar10-arch", args.batch)  # same seed: same weights
    env = {**machine(), "device": str(device), "processes": world.size, "model": model.source}
    rows: list[dict] = []
    # Sampling first (it needs only object collectives), then the training rows; rank 0 rewrites the result
    # after every row, so a launch that fails part-way still gives the rows it measured.
    jobs = [(sampling_row, (model, args, world, device, p)) for p in precisions]
    jobs += [(erasediff_row, (model, split, args, world, device, p)) for p in precisions]
    for fn, fn_args in jobs:
        rows.append(fn(*fn_args))
        if world.is_main and args.result is not None:
            args.result.write_text(json.dumps({"env": env, "rows": rows}, indent=2) + "\n")
    if world.distributed:
        torch.distributed.destroy_process_group()
    return 0


# --- the launcher ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def visible_gpus() -> int:
    import torch

    n = torch.cuda.device_count()
    if n == 0:
        raise SystemExit("no CUDA GPU is visible: give --device cpu (processes) or run on a GPU machine")
    return n


def default_counts(device: str) -> list[int]:
    """1, 2, 4, ... up to the visible GPUs (CPU: 1 and 2 processes)."""
    if device == "cpu":
        return [1, 2]
    n = visible_gpus()
    return [2**k for k in range(n.bit_length()) if 2**k <= n]


def worker_args(args: argparse.Namespace) -> list[str]:
    out = ["--device", args.device, "--batch", args.batch, "--steps", args.steps, "--warmup", args.warmup,
           "--images", args.num, "--sample-batch", args.sample_batch, "--sample-steps", args.sample_steps,
           "--repeats", args.repeats]  # fmt: skip
    if args.tiny:
        out.append("--tiny")
    if args.precision:
        out += ["--precision", *args.precision]
    return [str(a) for a in out]


def launch(n: int, args: argparse.Namespace, result: Path) -> subprocess.CompletedProcess[str]:
    """``torchrun --nproc_per_node n`` of this file's worker mode."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n), "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(Path(__file__).resolve()), "--worker", "--result", str(result),
           *worker_args(args)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if args.device == "cpu":
        env["OMP_WAIT_POLICY"] = "PASSIVE"  # no spinning threads on shared cores
    src = str(ROOT / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    print(f"$ torchrun --nproc_per_node {n} bench/scaling.py --worker {' '.join(worker_args(args))}",
          file=sys.stderr, flush=True)  # fmt: skip
    return subprocess.run(cmd, cwd=ROOT, env=env, text=True, capture_output=True, timeout=args.timeout)


def _text(b: bytes | str | None) -> str:
    return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")


def speedups(rows: list[dict]) -> None:
    """``speedup``: images/s over that of the same row and precision with one process (None without one)."""
    base = {(r["row"], r["precision"]): r["images_per_s"] for r in rows if r["gpus"] == 1}
    for r in rows:
        b = base.get((r["row"], r["precision"]))
        r["speedup"] = r["images_per_s"] / b if b else None


def table(rows: list[dict]) -> str:
    lines = [HEADER, "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        up = "-" if r["speedup"] is None else f"{r['speedup']:.2f}"
        mem = "-" if r["peak_gib"] is None else f"{r['peak_gib']:.2f}"
        lines.append(f"| {r['gpus']} | {r['row']} | {r['precision']} | {r['s']:.4f} | {r['images_per_s']:.1f} | "
                     f"{up} | {mem} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    counts = [int(c) for c in args.gpus.split(",")] if args.gpus else default_counts(args.device)
    if args.device == "cuda" and max(counts) > (visible := visible_gpus()):
        raise SystemExit(f"--gpus asks for {max(counts)} processes, but only {visible} GPU(s) are visible")
    for n in counts:
        if n < 1 or args.batch % n:
            raise SystemExit(f"--batch {args.batch} does not split evenly across {n} processes")
    rows: list[dict] = []
    envs: dict[str, Any] = {}
    failed = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in counts:
            result = Path(tmp) / f"n{n}.json"
            start = time.perf_counter()
            try:
                done = launch(n, args, result)
                ok, out, err = done.returncode == 0 and result.exists(), done.stdout, done.stderr
            except subprocess.TimeoutExpired as e:
                ok, out, err = False, _text(e.stdout), _text(e.stderr) + f"\ntimed out after {args.timeout:.0f} s"
            wall = time.perf_counter() - start
            print(f"  {n} process(es): {wall:.0f} s, {'ok' if ok else 'FAILED'}", file=sys.stderr, flush=True)
            if not ok:  # keep going: the other counts' rows are still worth having
                failed.append(n)
                print(out[-3000:] + err[-6000:], file=sys.stderr, flush=True)
                if not result.exists():
                    continue
            got = json.loads(result.read_text())  # a failed launch: the rows measured before it failed
            envs[str(n)] = {**got["env"], "launch_wall_s": wall}
            rows += [{"gpus": n, **r} for r in got["rows"]]
            rows.sort(key=lambda r: (r["row"] != ERASEDIFF, r["row"], r["precision"] != "fp32", r["gpus"]))
            speedups(rows)
            if args.json:  # after every launch: a run cut short keeps what it measured
                args.json.write_text(json.dumps({"env": envs, "failed": failed, "rows": rows}, indent=2) + "\n")
    if rows:
        first = next(iter(envs.values()))
        print({k: first.get(k) for k in ("torch", "cuda", "cpu", "device", "model")})
        print()
        if args.device == "cpu":
            print("(CPU smoke mode: GPUs = CPU processes of one thread each)\n")
        print(table(rows))
        if failed:
            counts_failed = ", ".join(map(str, failed))
            print(f"\n{counts_failed} process(es): the launch failed (the rows it measured before are shown)")
    if args.json:
        args.json.write_text(json.dumps({"env": envs, "failed": failed, "rows": rows}, indent=2) + "\n")
    if failed:
        print(f"failed: {', '.join(map(str, failed))} process(es)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
