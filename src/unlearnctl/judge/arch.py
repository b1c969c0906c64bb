"""The judge's architectures: which networks a judge can be, and how each is built.

- ``cnn-small``: four 3x3 convolutions, 128 features; made for tiny grey images (the 8x8 digits).
- ``resnet18``, ``resnet34``, ``resnet50``: torchvision's ResNets (``weights=None``: nothing is
  downloaded), with the first convolution taking the dataset's channels and the last layer its
  classes. For images of at most :data:`SMALL_INPUT_MAX` pixels a side they get the usual CIFAR
  adaptation: a 3x3 stride-1 first convolution and no max-pool, so a 32x32 image keeps 4x4 pixels
  at the last stage instead of 1x1.
- ``auto`` (:func:`resolve_arch`): ``cnn-small`` for images of at most 16 pixels a side, and for grey
  images of at most 32; ``resnet18`` otherwise.

Every judge is split into ``body`` (image -> penultimate, pooled features) and ``head`` (features ->
logits), so ``features()`` works the same for all of them (eval's FID-on-judge-features).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..errors import UsageError

#: architectures a judge can be (recorded as ``arch`` in judge.json)
ARCHS: tuple[str, ...] = ("cnn-small", "resnet18", "resnet34", "resnet50")
#: what ``--arch`` accepts
ARCH_CHOICES: tuple[str, ...] = ("auto", *ARCHS)
RESNETS: tuple[str, ...] = ("resnet18", "resnet34", "resnet50")
#: images of at most this side get the CIFAR stem (3x3 stride-1 conv, no max-pool)
SMALL_INPUT_MAX = 64


def check_arch(arch: str, allowed: tuple[str, ...] = ARCHS) -> str:
    """Return ``arch`` or raise a one-line :class:`UsageError` listing the allowed names."""
    if arch not in allowed:
        raise UsageError(f"unknown judge architecture '{arch}': available: {', '.join(allowed)}")
    return arch


def resolve_arch(arch: str, image_size: int, channels: int) -> str:
    """``auto`` -> ``cnn-small`` for images <= 16 px (or grey and <= 32 px), else ``resnet18``."""
    check_arch(arch, ARCH_CHOICES)
    if arch != "auto":
        return arch
    if image_size <= 16 or (channels == 1 and image_size <= 32):
        return "cnn-small"
    return "resnet18"


def build_cnn_small(channels: int, num_classes: int, width: int, feature_dim: int) -> tuple[nn.Module, nn.Module]:
    """``(body, head)`` of the small CNN: two conv blocks, 2 x 2 average pool, ``feature_dim`` features."""
    w = width
    body = nn.Sequential(
        nn.Conv2d(channels, w, 3, padding=1), nn.ReLU(),
        nn.Conv2d(w, w, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(),
        nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * w, feature_dim), nn.ReLU(),
    )  # fmt: skip
    head = nn.Sequential(nn.Dropout(0.3), nn.Linear(feature_dim, num_classes))
    return body, head


def build_resnet(arch: str, channels: int, num_classes: int, image_size: int) -> tuple[nn.Module, nn.Module, int]:
    """``(body, head, feature_dim)`` of a torchvision ResNet (random weights) for these images.

    ``body`` is the network up to and including the global average pool, flattened (512 features for
    resnet18/34, 2048 for resnet50); ``head`` its final ``fc`` layer.
    """
    from torchvision import models

    factory: Callable[..., models.ResNet] = {
        "resnet18": models.resnet18,
        "resnet34": models.resnet34,
        "resnet50": models.resnet50,
    }[check_arch(arch, RESNETS)]
    net = factory(weights=None, num_classes=num_classes)
    if image_size <= SMALL_INPUT_MAX:
        net.conv1 = nn.Conv2d(channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif channels != 3:
        net.conv1 = nn.Conv2d(channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    if image_size <= SMALL_INPUT_MAX or channels != 3:  # a new stem: initialise it as torchvision does
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    body = nn.Sequential(
        net.conv1, net.bn1, net.relu, net.maxpool,
        net.layer1, net.layer2, net.layer3, net.layer4,
        net.avgpool, nn.Flatten(),
    )  # fmt: skip
    return body, net.fc, net.fc.in_features
