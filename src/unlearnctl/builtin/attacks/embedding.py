"""The embedding attack on a class-conditional UNet: learn a new class embedding that draws the forgotten images.

Unlearning that changes what a *label* means can leave the knowledge in the rest of the network; an
attacker who may feed the UNet any conditioning vector then looks for one that draws the forgotten data.
For text-to-image models this is the prompt attack: UnlearnDiffAtk (Zhang et al. 2024, "To Generate or Not?
Safety-Driven Unlearned Diffusion Models Are Still Easy To Generate Unsafe Images ... For Now", ECCV) and,
closest to what is done here, Concept Inversion (Pham et al. 2024, "Circumventing Concept Erasure Methods
for Text-to-Image Generative Models", ICLR), which learns a new word embedding with the Textual Inversion
objective (Gal et al. 2023, "An Image is Worth One Word: Personalizing Text-to-Image Generation using
Textual Inversion", ICLR). A ``UNet2DModel``'s conditioning is a row of ``unet.class_embedding`` (an
``nn.Embedding`` whose rows live in the time-embedding space), so the analogue is one new row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .relearn import EpochStream, check_training_inputs

if TYPE_CHECKING:
    import torch
    from diffusers import DDPMScheduler, UNet2DModel


def optimise_class_embedding(
    unet: UNet2DModel,
    scheduler: DDPMScheduler,
    images: torch.Tensor,
    *,
    steps: int,
    lr: float,
    batch_size: int,
    generator: torch.Generator,
    init_label: int | None = None,
) -> torch.Tensor:
    """One fresh class-embedding vector ``v`` that minimises the DDPM loss of ``images``, every UNet weight frozen.

        v* = argmin_v  E_{x_0 ~ images, t, eps} || eps - eps_theta(x_t, t, v) ||^2

    where ``eps_theta(., ., v)`` is the UNet with its class embedding's output replaced by ``v`` (the
    Textual Inversion objective, Gal et al. 2023, on a class embedding). ``v`` starts at the mean of the
    embedding's rows (all of them, the null class's included), or at row ``init_label`` when given, and
    takes ``steps`` Adam steps (learning rate ``lr``, torch's other defaults; no clipping). Each step draws
    from ``generator`` (a CPU generator) as :func:`~unlearnctl.builtin.attacks.relearn.relearn` does: the
    next ``batch_size`` images of a stream of shuffled epochs, one timestep per image uniform on
    ``0 .. T-1``, then the noise. The UNet runs in eval mode, on a frozen deep copy: the caller's ``unet``
    is not touched. Returns ``v`` (1-D, the embedding's width; CPU, float32); install it with
    :func:`with_class_embedding`.
    """
    import copy

    import torch

    from unlearnctl.diffusion import ddpm_loss

    table = _class_embedding(unet)
    check_training_inputs(unet, images, None, batch_size, lr, labels_needed=False)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    weight = table.weight.detach()
    if init_label is None:
        start = weight.mean(0)
    elif 0 <= init_label < len(weight):
        start = weight[init_label]
    else:
        raise ValueError(f"init_label must be a row of the class embedding (0..{len(weight) - 1}), got {init_label}")
    frozen = copy.deepcopy(unet).requires_grad_(False).eval()
    vector = torch.nn.Parameter(start.clone().float())
    # The copy's class embedding answers v for every label: the hook's return value replaces its output.
    frozen.class_embedding.register_forward_hook(
        lambda _module, _args, out: vector.to(out.dtype).expand(out.shape[0], -1)
    )
    optimizer = torch.optim.Adam([vector], lr=lr)
    stream = EpochStream(len(images), generator)
    num_t = int(scheduler.config.num_train_timesteps)
    device = weight.device
    with torch.enable_grad():
        for _ in range(steps):
            # 1. a batch, t ~ U{0..T-1}, eps ~ N(0, I), all from generator
            idx = stream.next(batch_size)
            t = torch.randint(0, num_t, (len(idx),), generator=generator)
            eps = torch.randn((len(idx), *images.shape[1:]), generator=generator)
            x0 = images[idx].to(device, torch.float32)
            # 2. the DDPM loss with v as the conditioning (any label id: the hook replaces its row by v)
            any_label = torch.zeros(len(idx), dtype=torch.long, device=device)
            loss = ddpm_loss(frozen, scheduler, x0, any_label, t.to(device), eps.to(device))
            # 3. an Adam step on v alone
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return vector.detach().to("cpu", torch.float32).clone()


def with_class_embedding(unet: UNet2DModel, vector: torch.Tensor) -> tuple[Any, int]:
    """A deep copy of ``unet`` whose class embedding has one more row, ``vector``; and that row's label.

    The existing rows keep their ids and values (the null class of classifier-free guidance included), so
    the copy computes exactly what ``unet`` computes for every existing label; the new label ``K`` (the
    number of rows before) conditions on ``vector``. The copy's config says ``num_class_embeds = K + 1``.
    Draws no random numbers. Returns ``(copy, K)``.
    """
    import copy

    import torch

    table = _class_embedding(unet)
    rows, width = table.weight.shape
    v = vector.detach().to(table.weight.device, table.weight.dtype).flatten()
    if len(v) != width:
        raise ValueError(f"the vector has {len(v)} values; the class embedding's rows have {width}")
    out = copy.deepcopy(unet)
    # from_pretrained keeps the given weights (a fresh nn.Embedding would draw random ones first)
    grown = torch.nn.Embedding.from_pretrained(
        torch.cat([table.weight.detach(), v[None]]).clone(),
        freeze=not table.weight.requires_grad,
        padding_idx=table.padding_idx,
        max_norm=table.max_norm,
        norm_type=table.norm_type,
        scale_grad_by_freq=table.scale_grad_by_freq,
        sparse=table.sparse,
    )
    out.class_embedding = grown
    out.register_to_config(num_class_embeds=rows + 1)
    return out, rows


def _class_embedding(unet: UNet2DModel) -> Any:
    """The UNet's class-embedding table; refuse an unconditional UNet or another kind of class embedding."""
    import torch

    table = getattr(unet, "class_embedding", None)
    if not isinstance(table, torch.nn.Embedding):
        raise ValueError(
            "the embedding attack needs a class-conditional UNet whose class_embedding is an nn.Embedding "
            f"(num_class_embeds set), got {type(table).__name__}"
        )
    return table
