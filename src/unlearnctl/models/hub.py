"""Models from the Hugging Face Hub: the ``ddpm-cifar10`` preset, and any diffusers UNet2DModel as ``--model``.

Loading follows diffusers and ``huggingface_hub``: files come from the Hugging Face cache
(``HF_HOME`` / ``HF_HUB_CACHE``), are downloaded into it when missing, and ``HF_HUB_OFFLINE=1`` uses
the cache only. :func:`load_hub_model` accepts a hub id (``google/ddpm-cifar10-32``, optionally
``@revision``) or a local folder in either diffusers layout:

- flat: ``config.json`` + ``diffusion_pytorch_model.safetensors`` (+ ``scheduler_config.json``), as
  ``UNet2DModel.save_pretrained`` and unlearnctl's run folders write it;
- pipeline: ``model_index.json``, ``unet/`` and ``scheduler/``, as ``DDPMPipeline.save_pretrained`` writes it.

Weights are read from safetensors only (:func:`~unlearnctl.models.folder.load_unet`): pickled ``.bin``
files can run code when loaded and are refused with one line saying how to convert them.

When both are present the ``unet/`` and ``scheduler/`` sub-folders win, as in ``DiffusionPipeline``.
A scheduler config whose class is not a diffusers scheduler (early Hub repos, e.g.
``GaussianDDPMScheduler``) is skipped; with no usable one the DDPM paper's schedule is used (linear
betas 1e-4..0.02 over 1000 steps) and ``model.extra["origin"]["scheduler"]`` says so.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from diffusers import DDPMScheduler

from ..errors import ModelNotAvailableError
from .folder import META_FILE, PICKLED_SUFFIXES, WEIGHTS_FILE, DiffusionModel, load_unet, read_json_object

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
#: the noise schedule of Ho et al. (2020), used when a folder has no usable scheduler config
DDPM_PAPER_SCHEDULE = {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02, "beta_schedule": "linear"}


def load_hub_model(
    spec: str | Path,
    *,
    revision: str | None = None,
    class_names: list[str] | None = None,
    default_dataset: str | None = None,
    source: str | None = None,
) -> DiffusionModel:
    """Load a diffusers ``UNet2DModel`` and its scheduler from a local folder or a Hugging Face hub id.

    :param spec: a folder (flat or pipeline layout, see the module docstring), or ``owner/name`` on the
        Hub, optionally ``owner/name@revision``. An existing folder wins over a hub id of the same name.
    :param revision: branch, tag or commit on the Hub (overrides ``@revision``).
    :param class_names: class names to attach (default: those in the folder's ``unlearnctl.json``).
    :param default_dataset: dataset to pair the model with (default: from ``unlearnctl.json``).
    :param source: how the model is named in outputs (default: ``spec``).
    :raises ModelNotAvailableError: no such folder or hub model, or the files are not in the Hugging Face
        cache and cannot be downloaded (offline); the message says how to provide them.
    """
    text = str(spec)
    path = Path(text).expanduser()
    origin: dict[str, Any] = {}
    if path.exists():
        if not path.is_dir():
            raise ModelNotAvailableError(
                f"'{spec}' is a file: pass the model folder (holding config.json, or unet/config.json)"
            )
        folder = path
    else:
        repo_id, _, at_revision = text.partition("@")
        if not HUB_ID.match(repo_id):
            raise ModelNotAvailableError(
                f"model '{spec}': no such folder, and not a Hugging Face model id (owner/name): pass a registered "
                "model name (see `unlearnctl list models`), a diffusers model folder or a hub id"
            )
        folder, commit = fetch_hub_model(repo_id, revision or at_revision or None)
        origin = {"hub_repo": repo_id, "commit": commit}
    return load_diffusers_folder(
        folder, source=source or text, class_names=class_names, default_dataset=default_dataset, origin=origin
    )


def fetch_hub_model(repo_id: str, revision: str | None = None) -> tuple[Path, str]:
    """Make the configs and UNet weights of ``repo_id`` available in the Hugging Face cache.

    Downloads only what is needed: first every ``*.json`` (to see the layout), then the UNet's safetensors
    weights of that layout (never a pickled ``.bin``). Returns the snapshot folder and its commit.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        snapshot = Path(snapshot_download(repo_id, revision=revision, allow_patterns=["*.json"]))
        commit = snapshot.name
        prefix = "unet/" if (snapshot / "unet" / "config.json").is_file() else ""
        snapshot = Path(snapshot_download(repo_id, revision=commit, allow_patterns=[prefix + WEIGHTS_FILE]))
    except RevisionNotFoundError:
        raise ModelNotAvailableError(
            f"model '{repo_id}' has no revision '{revision}' on the Hugging Face Hub"
        ) from None
    except GatedRepoError:
        raise ModelNotAvailableError(
            f"model '{repo_id}' is gated on the Hugging Face Hub: accept its terms on the website and log in "
            "with `hf auth login`"
        ) from None
    except RepositoryNotFoundError:
        raise ModelNotAvailableError(
            f"model '{repo_id}' is not on the Hugging Face Hub (or is private): check the id, or log in with "
            "`hf auth login`"
        ) from None
    except HFValidationError as exc:
        raise ModelNotAvailableError(f"model '{repo_id}': not a valid Hugging Face model id ({exc})") from None
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        raise _not_available(repo_id, exc) from None
    unet_dir = snapshot / prefix
    if not (unet_dir / WEIGHTS_FILE).is_file() and not any(p.suffix in PICKLED_SUFFIXES for p in unet_dir.iterdir()):
        raise _no_safetensors(repo_id, prefix)
    return snapshot, commit


def _no_safetensors(repo_id: str, prefix: str) -> ModelNotAvailableError:
    """No safetensors weights after a download: not in the cache (offline), or only pickled ones on the Hub."""
    from huggingface_hub import constants

    where = "and HF_HUB_OFFLINE is set" if getattr(constants, "HF_HUB_OFFLINE", False) else "nor on the Hub"
    subfolder = ", subfolder='unet'" if prefix else ""
    return ModelNotAvailableError(
        f"model '{repo_id}' has no weights in safetensors format ({prefix}{WEIGHTS_FILE}) in the Hugging Face "
        f"cache {where}: unlearnctl never loads pickled .bin weights, which can run code; if you trust them, "
        f"convert them with diffusers (UNet2DModel.from_pretrained('{repo_id}'{subfolder}).save_pretrained(DIR, "
        "safe_serialization=True)) and pass --model DIR"
    )


def _not_available(repo_id: str, exc: BaseException) -> ModelNotAvailableError:
    from huggingface_hub import constants

    offline = getattr(constants, "HF_HUB_OFFLINE", False)
    why = "HF_HUB_OFFLINE is set" if offline else f"no connection to the Hub: {type(exc).__name__}"
    return ModelNotAvailableError(
        f"model '{repo_id}' is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and cannot be downloaded "
        f"({why}): on a machine with internet run `hf download {repo_id} --local-dir DIR`, copy DIR here and pass "
        "`--model DIR`, or copy that machine's Hugging Face cache into HF_HUB_CACHE"
    )


def load_scheduler(folder: Path) -> tuple[DDPMScheduler, str]:
    """The ``DDPMScheduler`` of a model folder and where its config came from (a path, or ``defaults``)."""
    import diffusers

    for rel in ("scheduler/scheduler_config.json", "scheduler_config.json"):
        path = folder / rel
        if not path.is_file():
            continue
        config = read_json_object(path)
        cls = getattr(diffusers, str(config.get("_class_name", "")), None)
        if isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin):
            try:
                return DDPMScheduler.from_config(config), rel
            except (TypeError, ValueError) as exc:
                reason = " ".join(str(exc).split())[:200]
                raise ModelNotAvailableError(f"'{path}' is not a usable scheduler config ({reason})") from None
    return DDPMScheduler(**DDPM_PAPER_SCHEDULE), "defaults (DDPM paper: linear betas 1e-4..0.02, 1000 steps)"


def load_diffusers_folder(
    folder: Path,
    *,
    source: str | None = None,
    class_names: list[str] | None = None,
    default_dataset: str | None = None,
    origin: dict[str, Any] | None = None,
) -> DiffusionModel:
    """Load a local diffusers folder (flat or pipeline layout) on CPU in float32."""
    folder = Path(folder)
    unet_dir = folder / "unet" if (folder / "unet" / "config.json").is_file() else folder
    if not (unet_dir / "config.json").is_file():
        raise ModelNotAvailableError(
            f"'{folder}' is not a diffusers model folder (no config.json or unet/config.json): pass a folder "
            "written by save_pretrained, a run folder, or a hub id"
        )
    unet = load_unet(unet_dir)
    scheduler, scheduler_from = load_scheduler(folder)
    meta = read_json_object(folder / META_FILE) if (folder / META_FILE).is_file() else {}
    judge = meta.pop("judge", None)
    names = class_names if class_names is not None else list(meta.pop("class_names", []) or [])
    meta.pop("class_names", None)
    dataset = default_dataset or meta.pop("default_dataset", None)
    meta.pop("default_dataset", None)
    meta.setdefault("origin", {**(origin or {}), "scheduler": scheduler_from})
    return DiffusionModel(
        unet=unet.eval(),
        scheduler=scheduler,
        source=source or str(folder),
        path=unet_dir,
        class_names=names,
        default_dataset=dataset,
        judge_path=(folder / judge) if judge else None,
        extra=meta,
    )
