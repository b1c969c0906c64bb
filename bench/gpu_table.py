"""The accelerator table of ``docs/performance.md``: step time, images/s, peak memory and model FLOP utilisation.

On the ``google/ddpm-cifar10-32`` architecture (random weights from its config plus a class embedding
of 10 classes and the null class; nothing is downloaded), per precision (fp32, and bf16 autocast where
the device supports it): the floor (a plain diffusers/torch step: forward, MSE, backward, Adam),
``finetune`` and EraseDiff (``bome``, ``relabel``, the defaults) through the real runner, and guided
DDIM sampling (``unlearnctl.diffusion.sample``, conditional and null passes in one forward). Each row
runs in each variant of ``--variants``: ``eager`` (the defaults) and the opt-in speed-ups
``channels_last``, ``compile`` (inductor) or both (``channels_last+compile``), each on a fresh model; the
floor gets the same speed-ups as the methods, so a ratio compares like with like. Compiling takes a while
per row (it is outside the timed steps: the warm-up).

FLOPs: a forward pass of one image is counted with ``torch.utils.flop_counter`` (about 12.1 GFLOP for
the full-size UNet at 32 x 32); a forward + backward pass costs three times that (36.3 GFLOP). Per step:
floor and finetune ``3F x batch``, EraseDiff relabel ``(2 x 3F + F) x batch`` (remain and forget
fwd+bwd, the surrogate forward); sampling ``2F x steps`` per image. MFU = FLOPs / s / ``--peak-tflops``.

    python bench/gpu_table.py                                    # CUDA, batch 128, H200 bf16 dense peak
    python bench/gpu_table.py --device cpu --tiny                # smoke test: a narrow UNet, seconds
    python bench/gpu_table.py --variants eager                   # without the compiled rows (minutes less)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_floor import autocast, floor_times, load, machine, method_times

from unlearnctl.diffusion import sample
from unlearnctl.runtime import prepare_module

#: the speed-ups of each variant (``--channels-last``, ``--compile``)
VARIANTS = {
    "eager": {},
    "channels_last": {"channels_last": True},
    "compile": {"compile": True},
    "channels_last+compile": {"channels_last": True, "compile": True},
}

#: (forward passes, forward+backward passes) per image of each row
PASSES = {"floor": (0, 1), "finetune": (0, 1), "erasediff:bome:relabel": (1, 2)}


def forward_flops(model: Any, device: torch.device) -> float:
    """FLOPs of one forward pass of one image (conv and matmul FLOPs, as torch's counter counts them)."""
    x = torch.zeros(1, model.channels, model.image_size, model.image_size, device=device)
    t, c = torch.zeros(1, dtype=torch.long, device=device), torch.zeros(1, dtype=torch.long, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.unet.to(device)(x, t, class_labels=c)
    return float(counter.get_total_flops())


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def sampling_seconds(
    model: Any, args: argparse.Namespace, device: torch.device, precision: str, speedups: dict[str, bool]
) -> list[float]:
    """Seconds per call of guided DDIM sampling of ``--num`` images (one batch), after one warm-up call."""
    import time

    prepare_module(model.unet.to(device), **speedups)
    labels = torch.arange(args.num) % model.num_classes
    out = []
    for _ in range(args.repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        with autocast(device, precision):
            sample(model, args.num, labels, generator=torch.Generator().manual_seed(0), steps=args.sample_steps,
                   batch_size=args.num, device=device)  # fmt: skip
        out.append(time.perf_counter() - start)
    return out[1:]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="smoke test: narrow UNet, batch 2, 1 step, 2 DDIM steps")
    ap.add_argument("--batch", type=int, default=128, help="remain (and forget) images per step")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per row (after one warm-up step)")
    ap.add_argument("--num", type=int, default=256, help="images per sampling call")
    ap.add_argument("--sample-steps", type=int, default=50, help="DDIM steps")
    ap.add_argument("--repeats", type=int, default=3, help="timed sampling calls")
    ap.add_argument("--precision", nargs="+", default=None, help="default: fp32, and bf16 on a CUDA device that has it")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="dense peak of the device (H200 bf16: 989)")
    ap.add_argument(
        "--variants", nargs="+", choices=list(VARIANTS), default=None,
        help="default: eager and channels_last+compile on CUDA, eager elsewhere",
    )  # fmt: skip
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.tiny:
        args.batch, args.steps, args.num, args.sample_steps, args.repeats = 2, 1, 2, 2, 1
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)
    precisions = args.precision or (
        ["fp32", "bf16"] if device.type == "cuda" and torch.cuda.is_bf16_supported() else ["fp32"]
    )
    variants = args.variants or (["eager", "channels_last+compile"] if device.type == "cuda" else ["eager"])
    arch = "cifar10-tiny" if args.tiny else "cifar10-arch"
    model, split = load(arch, args.batch)
    fwd = forward_flops(model, device)
    rows = []
    for variant in variants:
        speedups = VARIANTS[variant]
        for precision in precisions:
            for name, (n_f, n_fb) in PASSES.items():
                model, split = load(arch, args.batch)  # fresh weights, not compiled, default memory format
                _peak_reset(device)
                if name == "floor":
                    secs = floor_times(model, split, args.batch, args.steps, "floor", str(device), precision, speedups)
                else:
                    secs = method_times(model, split, name, args.batch, args.steps, str(device), precision, speedups)
                s = statistics.median(secs)
                flops = (n_f + 3 * n_fb) * fwd * args.batch
                rows.append({"row": name, "variant": variant, "precision": precision, "batch": args.batch, "s": s,
                             "images_per_s": args.batch / s, "peak_gib": _peak_gib(device),
                             "mfu": flops / s / (args.peak_tflops * 1e12)})  # fmt: skip
            model, split = load(arch, args.batch)
            _peak_reset(device)
            s = statistics.median(sampling_seconds(model, args, device, precision, speedups))
            flops = 2 * fwd * args.sample_steps * args.num
            rows.append({"row": f"sampling (DDIM {args.sample_steps}, guided)", "variant": variant,
                         "precision": precision, "batch": args.num, "s": s, "images_per_s": args.num / s,
                         "peak_gib": _peak_gib(device), "mfu": flops / s / (args.peak_tflops * 1e12)})  # fmt: skip
    env = {**machine(), "device": str(device), "forward_gflop_per_image": fwd / 1e9, "peak_tflops": args.peak_tflops}
    print(f"{env}\n")
    print("| row | variant | precision | batch | s/step (sampling: s/call) | images/s | peak memory | MFU |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        mem = "-" if r["peak_gib"] is None else f"{r['peak_gib']:.1f} GiB"
        print(f"| {r['row']} | {r['variant']} | {r['precision']} | {r['batch']} | {r['s']:.4f} | "
              f"{r['images_per_s']:.1f} | {mem} | {100 * r['mfu']:.1f}% |")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"env": env, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
