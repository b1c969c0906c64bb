"""FID, KID and precision/recall with torch-fidelity, offline, with a pluggable feature extractor.

torch-fidelity's default feature extractor is an Inception-v3 whose weights are downloaded at first
use; that cannot happen here, and Inception features mean little for 8 x 8 grey digits anyway. So:

- ``judge``: the penultimate features of the judge classifier (the one ``eval`` uses to recognise
  classes), registered as a torch-fidelity feature extractor named ``unlearnctl-judge``. The judge
  module travels to torch-fidelity as the ``unlearnctl_judge`` keyword argument, which torch-fidelity
  passes to the extractor's constructor with every other argument of ``calculate_metrics``.
- ``inception``: torch-fidelity's standard ``inception-v3-compat`` (pool3, 2048 features), from a
  local weights file. That file is a pickle (torch-fidelity loads it with
  ``torch.load(weights_only=False)``, which can run code), so it is first read with torch's restricted
  loader (``weights_only=True``: tensors and plain containers only) and refused unless that succeeds;
  pass only a file you trust all the same. Its sha256 is computed, returned with the results (``eval``
  prints and records it) and checked against ``expected_sha256`` when one is given.

Inputs are in-memory datasets of ``uint8`` ``C x H x W`` tensors (no PNG round trip, no cache:
``cache=False``, because a stale cache name silently serves old statistics).
"""

from __future__ import annotations

import copy
import math
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import Dataset as TorchDataset

from .errors import ModelNotAvailableError, UsageError
from .models.folder import file_sha256, state_sha256

JUDGE_EXTRACTOR = "unlearnctl-judge"
INCEPTION_EXTRACTOR = "inception-v3-compat"
#: torch-fidelity's Inception weights: release file name and address (for the error message).
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"


class UInt8Images(TorchDataset):
    """A torch dataset of ``uint8`` ``C x H x W`` images, what torch-fidelity reads.

    ``images`` are float in ``[-1, 1]`` or already ``uint8``; ``rgb=True`` repeats one grey channel
    three times (Inception needs RGB).
    """

    def __init__(self, images: torch.Tensor, rgb: bool = False) -> None:
        if images.dtype != torch.uint8:
            images = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        if rgb and images.shape[1] == 1:
            images = images.repeat(1, 3, 1, 1)
        self.images = images.contiguous()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]


def _judge_extractor_class() -> type:
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase

    class JudgeFeatureExtractor(FeatureExtractorBase):
        """The judge's penultimate features (``features``) and logits, for uint8 images."""

        def __init__(self, name: str, features_list: list[str], unlearnctl_judge: Any = None, **kwargs: Any) -> None:
            super().__init__(name, features_list)
            if unlearnctl_judge is None:
                raise ValueError(f"feature extractor '{name}' needs the judge module as unlearnctl_judge=")
            # A copy: torch-fidelity moves the extractor to CUDA and switches it to eval mode.
            self.judge = copy.deepcopy(unlearnctl_judge).float().eval().requires_grad_(False)

        @staticmethod
        def get_provided_features_list() -> tuple[str, ...]:
            return ("features", "logits")

        @staticmethod
        def get_default_feature_layer_for_metric(metric: str) -> str:
            return {"isc": "logits", "fid": "features", "kid": "features", "prc": "features"}[metric]

        @staticmethod
        def can_be_compiled() -> bool:
            return False

        @staticmethod
        def get_dummy_input_for_compile() -> torch.Tensor:
            return (torch.rand([1, 1, 8, 8]) * 255).to(torch.uint8)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            x = x.float() / 127.5 - 1.0  # uint8 -> [-1, 1], the judge's input convention
            out = {}
            if "features" in self.features_list:
                out["features"] = self.judge.features(x).float()
            if "logits" in self.features_list:
                out["logits"] = self.judge(x).float()
            return tuple(out[name] for name in self.features_list)

    return JudgeFeatureExtractor


def register_feature_extractors() -> None:
    """Register ``unlearnctl-judge`` with torch-fidelity, once per process (a second time asserts there)."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    if JUDGE_EXTRACTOR not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(JUDGE_EXTRACTOR, _judge_extractor_class())


@dataclass
class FeatureExtractor:
    """Which features FID/KID/precision/recall are computed on, and how to describe that in metrics.json."""

    kind: Literal["judge", "inception"]
    #: the judge module (kind ``judge``)
    judge: torch.nn.Module | None = None
    #: where the judge or the Inception weights came from
    source: str | None = None
    #: sha256 of the Inception weights file (kind ``inception``)
    sha256: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def torch_fidelity_name(self) -> str:
        return JUDGE_EXTRACTOR if self.kind == "judge" else INCEPTION_EXTRACTOR

    def describe(self) -> dict[str, Any]:
        """What goes into metrics.json."""
        layer = "judge penultimate features" if self.kind == "judge" else "Inception-v3 pool3 (2048)"
        return {
            "kind": self.kind,
            "torch_fidelity_name": self.torch_fidelity_name,
            "layer": layer,
            "source": self.source,
            "sha256": self.sha256,
            **self.extra,
        }

    @classmethod
    def from_judge(cls, judge: torch.nn.Module, source: str | None = None, **extra: Any) -> FeatureExtractor:
        """The judge's penultimate features; ``sha256`` is that of its weights (``models.state_sha256``)."""
        return cls(kind="judge", judge=judge, source=source, sha256=state_sha256(judge), extra=extra)

    @classmethod
    def inception(cls, weights: Path | None = None, expected_sha256: str | None = None) -> FeatureExtractor:
        """The standard Inception from a local weights file (a trusted pickle; see the module docstring).

        Without ``weights``, torch hub's checkpoint folder is tried (where torch-fidelity would have
        downloaded the file); nothing is downloaded.
        """
        if weights is None:
            hub_copy = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
            if not hub_copy.is_file():
                raise ModelNotAvailableError(
                    "the Inception weights for FID cannot be downloaded here: fetch "
                    f"{INCEPTION_URL} on a machine with network and pass it with "
                    f"`--set fidelity.inception_weights=FILE` (or copy it to {hub_copy})"
                )
            weights = hub_copy
        weights = Path(weights).expanduser()
        if not weights.is_file():
            raise UsageError(f"Inception weights file '{weights}' does not exist: pass the path of {INCEPTION_FILE}")
        digest = file_sha256(weights)
        if expected_sha256 and digest != expected_sha256.strip().lower():
            raise UsageError(
                f"Inception weights '{weights}' have sha256 {digest}, not the pinned {expected_sha256}: "
                "the file is a pickle and is loaded only when it matches; check the file or the pin"
            )
        check_plain_state_dict(weights)
        return cls(kind="inception", source=str(weights), sha256=digest, extra={"pinned": bool(expected_sha256)})


def check_plain_state_dict(path: Path) -> None:
    """Refuse a ``torch.save`` file unless torch's restricted unpickler (``weights_only=True``) reads it: then
    it holds tensors and plain containers only, and unpickling it again (torch-fidelity) runs no other code."""
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError) as exc:
        reason = " ".join(str(exc).split())[:160]
        raise UsageError(
            f"Inception weights '{path}' are not a plain state dict of tensors ({reason}): unlearnctl does not "
            f"unpickle other objects; pass torch-fidelity's {INCEPTION_FILE}"
        ) from None


def fidelity_metrics(
    generated: torch.Tensor,
    real: torch.Tensor,
    extractor: FeatureExtractor,
    *,
    device: torch.device | str = "cpu",
    fid: bool = True,
    kid: bool = True,
    prc: bool = True,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    prc_neighborhood: int = 3,
    seed: int = 0,
    batch_size: int = 256,
) -> dict[str, float]:
    """FID, KID (mean, std) and precision/recall/F between ``generated`` and ``real`` images.

    Images are ``N x C x H x W`` float in ``[-1, 1]`` (or uint8). ``kid_subset_size`` is lowered to the
    size of the smaller set (torch-fidelity asserts otherwise) and the value used is returned.
    Precision: share of generated images inside the real manifold; recall: the reverse (input1 is
    the generated set, input2 the real set, as torch-fidelity expects).
    """
    import torch_fidelity

    if len(generated) < 2 or len(real) < 2:
        raise UsageError(f"FID needs at least 2 images per side (got {len(generated)} generated, {len(real)} real)")
    register_feature_extractors()
    rgb = extractor.kind == "inception"
    subset = min(kid_subset_size, len(generated), len(real))
    device = torch.device(device)
    kwargs: dict[str, Any] = {
        "input1": UInt8Images(generated, rgb=rgb),
        "input2": UInt8Images(real, rgb=rgb),
        "fid": fid,
        "kid": kid,
        "prc": prc,
        "feature_extractor": extractor.torch_fidelity_name,
        "cuda": device.type == "cuda",
        "cache": False,
        "verbose": False,
        "save_cpu_ram": True,
        "batch_size": batch_size if extractor.kind == "judge" else min(batch_size, 64),
        "kid_subsets": kid_subsets,
        "kid_subset_size": subset,
        "prc_neighborhood": min(prc_neighborhood, len(generated) - 1, len(real) - 1),
        "rng_seed": seed,
    }
    if extractor.kind == "judge":
        kwargs["unlearnctl_judge"] = extractor.judge
    else:
        kwargs["feature_extractor_weights_path"] = extractor.source
    raw = torch_fidelity.calculate_metrics(**kwargs)
    out: dict[str, float] = {}
    names = {
        "frechet_inception_distance": "fid",
        "kernel_inception_distance_mean": "kid_mean",
        "kernel_inception_distance_std": "kid_std",
        "precision": "precision",
        "recall": "recall",
        "f_score": "f_score",
    }
    for key, value in raw.items():
        value = float(value)
        out[names.get(key, key)] = value if math.isfinite(value) else float("nan")
    if kid:
        out["kid_subset_size"] = subset
    return out
