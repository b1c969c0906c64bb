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
``cache=False``, because a stale cache name silently serves old statistics). ``eval --save-samples``
saves those exact images as PNG folders (:func:`save_png_folder`) and records the call that re-scores
them with torch-fidelity itself (:func:`rescoring_call`; docs/eval.md).
"""

from __future__ import annotations

import copy
import math
import pickle
from collections.abc import Callable
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

        def __init__(
            self,
            name: str,
            features_list: list[str],
            unlearnctl_judge: Any = None,
            feature_extractor_weights_path: str | None = None,
            **kwargs: Any,
        ) -> None:
            super().__init__(name, features_list)
            if unlearnctl_judge is None and feature_extractor_weights_path and _JUDGE_LOADER:
                # the judge folder, as the saved-samples re-scoring command names it (docs/eval.md)
                unlearnctl_judge = _JUDGE_LOADER[0](Path(feature_extractor_weights_path).expanduser())
            if unlearnctl_judge is None:
                raise ValueError(
                    f"feature extractor '{name}' needs the judge: the module as unlearnctl_judge=, or its folder "
                    "as feature_extractor_weights_path= (--feature-extractor-weights-path)"
                )
            # A copy: torch-fidelity moves the extractor to CUDA and switches it to eval mode.
            self.judge = copy.deepcopy(unlearnctl_judge).float().eval().requires_grad_(False)
            self.channels = int(getattr(self.judge, "channels", 0) or 0)

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
            if self.channels == 1 and x.shape[1] == 3:
                # torch-fidelity reads image files as RGB: a grey PNG comes back as 3 equal channels
                if not (torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])):
                    raise ValueError("the judge reads grey images, and these RGB images are not grey")
                x = x[:, :1]
            x = x.float() / 127.5 - 1.0  # uint8 -> [-1, 1], the judge's input convention
            out = {}
            if "features" in self.features_list:
                out["features"] = self.judge.features(x).float()
            if "logits" in self.features_list:
                out["logits"] = self.judge(x).float()
            return tuple(out[name] for name in self.features_list)

    return JudgeFeatureExtractor


#: how ``unlearnctl-judge`` loads a judge from ``feature_extractor_weights_path`` (a judge folder), when the
#: module itself is not passed as ``unlearnctl_judge``: set by ``register_feature_extractors(judge_loader=)``
_JUDGE_LOADER: list[Callable[[Path], Any]] = []


def register_feature_extractors(judge_loader: Callable[[Path], Any] | None = None) -> None:
    """Register ``unlearnctl-judge`` with torch-fidelity, once per process (a second time asserts there).

    ``judge_loader`` (``unlearnctl.judge.classifier.load_judge``) lets the extractor load the judge from the
    folder given as ``feature_extractor_weights_path``, which torch-fidelity's command line can pass."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    if judge_loader is not None:
        _JUDGE_LOADER[:] = [judge_loader]

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


def fidelity_kwargs(
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
) -> dict[str, Any]:
    """The keyword arguments of ``torch_fidelity.calculate_metrics`` that :func:`fidelity_metrics` makes:
    ``input1``/``input2`` are :class:`UInt8Images` (the exact uint8 images torch-fidelity reads)."""
    if len(generated) < 2 or len(real) < 2:
        raise UsageError(f"FID needs at least 2 images per side (got {len(generated)} generated, {len(real)} real)")
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
    return kwargs


#: torch-fidelity's result keys -> the names ``eval`` records
RESULT_NAMES = {
    "frechet_inception_distance": "fid",
    "kernel_inception_distance_mean": "kid_mean",
    "kernel_inception_distance_std": "kid_std",
    "precision": "precision",
    "recall": "recall",
    "f_score": "f_score",
}


def calculate(kwargs: dict[str, Any]) -> dict[str, float]:
    """``torch_fidelity.calculate_metrics(**kwargs)`` (with ``unlearnctl-judge`` registered), its values
    under :data:`RESULT_NAMES` (a non-finite value as NaN), plus ``kid_subset_size`` when KID is computed."""
    import torch_fidelity

    register_feature_extractors()
    raw = torch_fidelity.calculate_metrics(**kwargs)
    out: dict[str, float] = {}
    for key, value in raw.items():
        value = float(value)
        out[RESULT_NAMES.get(key, key)] = value if math.isfinite(value) else float("nan")
    if kwargs.get("kid"):
        out["kid_subset_size"] = kwargs["kid_subset_size"]
    return out


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
    call: dict[str, Any] | None = None,
) -> dict[str, float]:
    """FID, KID (mean, std) and precision/recall/F between ``generated`` and ``real`` images.

    Images are ``N x C x H x W`` float in ``[-1, 1]`` (or uint8). ``kid_subset_size`` is lowered to the
    size of the smaller set (torch-fidelity asserts otherwise) and the value used is returned.
    Precision: share of generated images inside the real manifold; recall: the reverse (input1 is
    the generated set, input2 the real set, as torch-fidelity expects). ``call``, when given, receives
    the keyword arguments passed to ``torch_fidelity.calculate_metrics`` (:func:`fidelity_kwargs`).
    """
    kwargs = fidelity_kwargs(
        generated,
        real,
        extractor,
        device=device,
        fid=fid,
        kid=kid,
        prc=prc,
        kid_subsets=kid_subsets,
        kid_subset_size=kid_subset_size,
        prc_neighborhood=prc_neighborhood,
        seed=seed,
        batch_size=batch_size,
    )
    if call is not None:
        call.update(kwargs)
    return calculate(kwargs)


# --- saving the inputs, and the call that re-scores them (eval --save-samples) -----------------------------

#: the entry point that runs torch-fidelity's own command line with ``unlearnctl-judge`` registered
CLI_WITH_JUDGE = ["python", "-m", "unlearnctl.commands.eval_record"]
#: the keyword arguments recorded for re-scoring (the in-memory judge becomes its folder)
RECORDED_KWARGS = (
    "input1", "input2", "fid", "kid", "prc", "feature_extractor", "feature_extractor_weights_path", "cuda",
    "cache", "verbose", "save_cpu_ram", "batch_size", "kid_subsets", "kid_subset_size", "prc_neighborhood",
    "rng_seed", "samples_find_deep", "samples_find_ext",
)  # fmt: skip


def save_png_folder(images: torch.Tensor, folder: Path) -> list[Path]:
    """Write ``uint8`` ``N x C x H x W`` images (C = 1 or 3) as lossless PNG files ``000000.png``... in
    ``folder``: decoding them gives back exactly these values, and their sorted names (the order
    torch-fidelity reads a folder in) are the tensor's order, which KID's random subsets depend on."""
    from PIL import Image

    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError("save_png_folder takes uint8 N x C x H x W images with 1 or 3 channels")
    folder.mkdir(parents=True, exist_ok=True)
    width = max(6, len(str(len(images) - 1)))
    paths = []
    for i, image in enumerate(images.cpu()):
        array = image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()
        path = folder / f"{i:0{width}d}.png"
        Image.fromarray(array, mode="L" if image.shape[0] == 1 else "RGB").save(path, format="PNG")
        paths.append(path)
    return paths


def rescoring_call(kwargs: dict[str, Any], input1: str, input2: str, judge_folder: str | None) -> dict[str, Any]:
    """How to re-score saved inputs with torch-fidelity: the ``calculate_metrics`` keyword arguments (with
    ``input1``/``input2`` the saved folders as given) and the equivalent command line.

    torch-fidelity reads a folder's images as RGB ``uint8`` in sorted name order: the same values as the
    in-memory inputs (grey images: 3 equal channels, which the judge extractor reads back as one).
    ``unlearnctl-judge`` is not one of torch-fidelity's extractors: the plain ``fidelity`` command refuses it
    (its ``--feature-extractor`` choices are its registry when it starts), so the command is
    ``python -m unlearnctl.commands.eval_record``, torch-fidelity's own command line after registering it; with
    ``inception-v3-compat`` the plain ``fidelity`` command computes the same numbers.
    """
    rec = {k: v for k, v in kwargs.items() if k in RECORDED_KWARGS}
    rec.update(input1=input1, input2=input2, samples_find_deep=False, samples_find_ext="png", cache=False)
    judge = kwargs["feature_extractor"] == JUDGE_EXTRACTOR
    if judge:
        rec["feature_extractor_weights_path"] = judge_folder
    argv = [
        *(CLI_WITH_JUDGE if judge else ["fidelity"]),
        *(["--gpu", "0"] if rec["cuda"] else ["--cpu"]),
        *(f"--{m}" for m in ("fid", "kid", "prc") if rec.get(m)),
        "--input1", input1, "--input2", input2,
        "--feature-extractor", str(rec["feature_extractor"]),
    ]  # fmt: skip
    if rec.get("feature_extractor_weights_path"):
        argv += ["--feature-extractor-weights-path", str(rec["feature_extractor_weights_path"])]
    argv += [
        "--batch-size", str(rec["batch_size"]),
        "--kid-subsets", str(rec["kid_subsets"]),
        "--kid-subset-size", str(rec["kid_subset_size"]),
        "--prc-neighborhood", str(rec["prc_neighborhood"]),
        "--rng-seed", str(rec["rng_seed"]),
        "--samples-find-ext", "png",
        "--no-cache", "--save-cpu-ram", "--silent", "--json",
    ]  # fmt: skip
    record: dict[str, Any] = {
        "function": "torch_fidelity.calculate_metrics",
        "kwargs": rec,
        "command": argv,
        "plain_fidelity_command": not judge,
        "result_names": RESULT_NAMES,
    }
    if judge and judge_folder is None:
        record["note"] = "the judge came from no folder: register it and pass it as unlearnctl_judge="
    return record


def torch_fidelity_cli(argv: list[str] | None = None, judge_loader: Callable[[Path], Any] | None = None) -> None:
    """torch-fidelity's own ``fidelity`` command line (``torch_fidelity.fidelity.main``), with
    ``unlearnctl-judge`` registered first; ``argv``: the arguments (default: ``sys.argv[1:]``)."""
    import sys

    from torch_fidelity.fidelity import main

    register_feature_extractors(judge_loader)
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    main()
