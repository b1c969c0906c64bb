"""Sampling throughput of ``unlearnctl``'s sampler next to a bare diffusers DDIM loop, side by side.

Ours: :func:`unlearnctl.diffusion.sample` -- what ``unlearnctl sample`` and ``eval`` call. The bare loop:
``DDIMScheduler`` from the model's scheduler config, the same steps, classifier-free guidance with the
conditional and null passes batched in one forward (``eps = (1 + w) eps_c - w eps_null``), under
``torch.inference_mode``. Same model, noise, labels, batch and steps; interleaved rounds, medians.
Also checks that both give the same images (they should: the same float operations).

    OMP_WAIT_POLICY=PASSIVE python bench/sampling.py                  # ddpm-digits, 128 images, 50 DDIM steps
    python bench/sampling.py --model cifar10-arch --num 8 --rounds 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
from diffusers import DDIMScheduler

from unlearnctl.diffusion import sample

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_floor import CLOCKS, load, machine, now, set_clock


@torch.inference_mode()
def bare_ddim(model, noise: torch.Tensor, labels: torch.Tensor, steps: int, guidance: float) -> torch.Tensor:
    """Plain diffusers DDIM (eta 0, no clipping) with batched classifier-free guidance."""
    sched = DDIMScheduler.from_config(model.scheduler.config, clip_sample=False)
    sched.set_timesteps(steps)
    unet = model.unet.eval()
    x, both = noise, torch.cat([labels, torch.full_like(labels, model.null_class)])
    for t in sched.timesteps:
        eps_c, eps_u = unet(torch.cat([x, x]), t, class_labels=both).sample.chunk(2)
        x = sched.step((1 + guidance) * eps_c - guidance * eps_u, t, x).prev_sample
    return x.clamp(-1, 1)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["ddpm-digits", "cifar10-arch"], default="ddpm-digits")
    ap.add_argument("--num", type=int, default=128, help="images per call (one batch)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--guidance", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="cpu", help="process CPU time (one thread) or wall")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    set_clock(args.clock)
    model, _ = load(args.model, 8)
    g = torch.Generator().manual_seed(0)
    shape = (args.num, model.channels, model.image_size, model.image_size)
    noise = torch.randn(shape, generator=g)
    labels = torch.arange(args.num) % model.num_classes
    runs = {
        "ours": lambda: sample(
            model, args.num, labels, noise=noise, steps=args.steps, guidance=args.guidance, batch_size=args.num
        ),
        "bare": lambda: bare_ddim(model, noise, labels, args.steps, args.guidance),
    }
    secs: dict[str, list[float]] = {k: [] for k in runs}
    images: dict[str, torch.Tensor] = {}
    ratios = []
    for r in range(args.rounds):
        for name in sorted(runs, reverse=r % 2 == 1):  # alternate which one goes first
            start = now()
            images[name] = runs[name]()
            secs[name].append(now() - start)
        ratios.append(secs["ours"][-1] / secs["bare"][-1])
    med = {k: statistics.median(v) for k, v in secs.items()}
    same = torch.equal(images["ours"], images["bare"])
    env = {
        "model": args.model,
        "num": args.num,
        "steps": args.steps,
        "rounds": args.rounds,
        "clock": args.clock,
        **machine(),
    }
    print(f"{env}\n")
    print("| sampler | s per call | images/s | x bare (median of the rounds' ratios) |")
    print("| --- | --- | --- | --- |")
    for name in runs:
        ratio = statistics.median(ratios) if name == "ours" else 1.0
        print(f"| {name} | {med[name]:.2f} | {args.num / med[name]:.1f} | {ratio:.3f} |")
    print(f"\nsame images: {same} (max |diff| {(images['ours'] - images['bare']).abs().max().item():.2e})")
    if args.json:
        args.json.write_text(
            json.dumps({"env": env, "seconds": secs, "medians": med, "ratios": ratios, "same": same}, indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
