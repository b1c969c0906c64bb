"""One optimizer step of a tiny model, run by ``tests/test_distributed_training.py`` as one process and
as two (``torchrun --nproc_per_node 2``): ``python distributed_step.py OUT.safetensors``.

The global batch (8 images of the remaining set), its timesteps and its noise are the same whatever the
number of processes: the batch comes from the run's shared data stream (each process keeps its shard) and
the noise is drawn for the whole global batch, then sliced to the process's shard. Only the arithmetic
differs: one mean over 8 images, or the mean over the processes of their means over 4. The step is SGD
(lr 1) in float64, so the weights after it are ``theta - g`` with ``g`` the averaged gradient.
"""

from __future__ import annotations

import sys

import torch
from safetensors.torch import save_file

from unlearnctl import split_forget
from unlearnctl.contexts.unlearn import UnlearnRun
from unlearnctl.diffusion import ddpm_loss
from unlearnctl.distributed import init_world
from unlearnctl.testing.tiny import tiny_image_set, tiny_model

BATCH = 8


def main(out: str) -> None:
    torch.set_num_threads(1)
    world, device = init_world(torch.device("cpu"))
    data = tiny_image_set(n_per_class=8)
    split = split_forget(data, {i for i, label in zip(data.ids, data.labels, strict=True) if label == 1})
    model = tiny_model(conditional=True)
    model.unet.double()
    run = UnlearnRun(model, split, seed=0, total_steps=1, device=device, world=world)
    params = [p for p in model.unet.parameters() if p.requires_grad]
    x0, labels = next(run.batches("remain", BATCH))
    shard = world.even_shard(BATCH)
    g = torch.Generator().manual_seed(7)
    t = torch.randint(0, model.scheduler.config.num_train_timesteps, (BATCH,), generator=g)[shard.start : shard.stop]
    eps = torch.randn((BATCH, *x0.shape[1:]), generator=g, dtype=torch.float64)[shard.start : shard.stop]
    loss = ddpm_loss(model.unet, model.scheduler, x0.double(), labels, t, eps)
    grads = run.grads(loss, params)  # averaged over the processes
    run.apply_gradients(torch.optim.SGD(params, lr=1.0), grads, clip=0.0)
    if world.is_main:
        names = [n for n, p in model.unet.named_parameters() if p.requires_grad]
        tensors = {f"weight.{n}": p.detach().contiguous() for n, p in zip(names, params, strict=True)}
        tensors.update({f"grad.{n}": g.contiguous() for n, g in zip(names, grads, strict=True)})
        save_file(tensors, out)


if __name__ == "__main__":
    main(sys.argv[1])
