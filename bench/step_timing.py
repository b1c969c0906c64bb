"""Time an EraseDiff step and a plain finetune step on the real ``google/ddpm-cifar10-32`` architecture.

Random initial weights (35.7 M parameters, the hub model's exact UNet2DModel config; nothing is
downloaded), CIFAR-shaped stand-in data in the official python-batch format, batch 128 (remain and
forget), through the real ``forget`` runner. For each method and precision: steps/s over the timed
steps (after warm-up steps) and peak accelerator memory. Prints a Markdown table for
``docs/performance.md`` and writes every number to ``--json``.

    python bench/step_timing.py --device cuda                      # fp32 and bf16, the GPU check
    python bench/step_timing.py --device cpu --batch 16 --steps 2 --warmup 1 --precision fp32
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch


def build_inputs(root: Path, images_per_batch: int) -> tuple[Path, Path]:
    """A random-weight model folder with the hub model's config, and CIFAR-10 stand-in batches."""
    from diffusers import DDPMScheduler, UNet2DModel
    from torchvision.datasets import CIFAR10

    from unlearnctl.builtin.realdata import CIFAR10_BASE
    from unlearnctl.testing.stand_ins import DDPM_CIFAR10_CONFIG, cifar10_checksums, write_cifar10

    model = root / "ddpm-cifar10-32-random"
    torch.manual_seed(0)
    UNet2DModel(**DDPM_CIFAR10_CONFIG).save_pretrained(model, safe_serialization=True)
    DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear").save_pretrained(
        model
    )
    data = root / "data"
    write_cifar10(data, per_batch=images_per_batch, test=10)
    for key, value in cifar10_checksums(data / CIFAR10_BASE).items():  # torchvision checks the official md5s
        setattr(CIFAR10, key, value)
    return model, data


def time_method(model: Path, data: Path, method: str, precision: str, device: str, args) -> dict:
    from unlearnctl.commands.forget import ForgetRequest, forget

    sets = [f"remain_batch_size={args.batch}"] + ([f"forget_batch_size={args.batch}"] if method != "finetune" else [])
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        request = ForgetRequest(
            model=str(model), dataset="cifar10", data_dir=data, classes="2", method=method, sets=sets,
            steps=args.warmup + args.steps, device=device, precision=precision, grid_per_class=0,
            out=Path(tmp) / "run", command=["bench/step_timing.py"],
        )  # fmt: skip
        result = forget(request)
        wall = time.perf_counter() - start
        log = [json.loads(x) for x in (result.run_dir / "log.jsonl").read_text().splitlines()]
    times = {line["step"]: line["time"] for line in log}
    timed = times[args.warmup + args.steps] - times[args.warmup] if args.warmup else times[args.steps]
    out = {
        "method": method,
        "precision": precision,
        "batch": args.batch,
        "timed_steps": args.steps,
        "steps_per_s": args.steps / timed,
        "s_per_step": timed / args.steps,
        "run_wall_s": wall,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None,
    }
    print(json.dumps(out), flush=True)
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20, help="timed steps")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first (kernels, autotuning, caches)")
    ap.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--methods", nargs="+", default=["erasediff", "finetune"])
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.warmup < 1:
        ap.error("--warmup must be >= 1 (the first step pays for start-up)")

    with tempfile.TemporaryDirectory() as tmp:
        model, data = build_inputs(Path(tmp), images_per_batch=max(args.batch, 64))
        rows = [
            time_method(model, data, method, precision, args.device, args)
            for precision in args.precision
            for method in args.methods
        ]
    env = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    print(f"\n{env}\n")
    print("| method | precision | batch (remain + forget) | steps/s | s/step | peak memory |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        mem = "-" if r["peak_memory_gib"] is None else f"{r['peak_memory_gib']:.1f} GiB"
        batch = f"{r['batch']} + {r['batch']}" if r["method"] == "erasediff" else f"{r['batch']} (remain only)"
        speed = f"{r['steps_per_s']:.2f} | {r['s_per_step']:.3f}"
        print(f"| {r['method']} | {r['precision']} | {batch} | {speed} | {mem} |")
    if args.json:
        args.json.write_text(json.dumps({"env": env, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
