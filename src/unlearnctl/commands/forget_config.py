"""``forget``'s config files (docs/config.md): what ``--print-config`` prints, and a manifest turned back
into the config that reruns it (``unlearnctl config RUN``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ..errors import UsageError
from ..inputs import base_model_spec
from .configs import ResolvedConfig, component_class, explicit_nulls, recorded_options
from .forget import ForgetRequest

if TYPE_CHECKING:
    from ..manifest import Manifest
    from .forget import PreparedForget


def forget_config(p: PreparedForget) -> ResolvedConfig:
    """What ``forget --print-config`` prints: the request as :func:`prepare_forget` resolved it. The
    dataset (the model's when not given) with every option, the device (``auto`` as the device chosen),
    the precision, the thread count the run uses, the method's options after its ``check`` (``auto`` values
    resolved); the forget set as given (``classes``, ``forget``), ``out`` only when given."""
    req = p.request
    threads = req.threads
    if threads is None:
        threads = 1 if p.device.type == "cpu" else torch.get_num_threads()
    options = {
        "model": req.model,
        "dataset": p.dataset.name,
        "data_dir": p.dataset.data_dir,
        "classes": req.classes,
        "forget": list(req.forget),
        "method": p.method.name,
        "out": str(req.out) if req.out is not None else None,
        "seed": req.seed,
        "device": req.device if req.device != "auto" else p.device.type,
        "precision": p.precision,
        "channels_last": req.channels_last,
        "compile": req.compile,
        "grid_per_class": req.grid_per_class,
        "threads": threads,
        "checkpoint_every": req.checkpoint_every,
        "keep_checkpoints": req.keep_checkpoints,
        "data_options": dict(p.dataset.options),
    }
    method = dict(p.method_config.options)
    return ResolvedConfig("forget", options, method, explicit_nulls("method", method, type(p.method)))


def forget_config_of(manifest: Manifest, registry: Any = None) -> ResolvedConfig:
    """The config file that reruns the ``forget`` run ``manifest`` records (``unlearnctl config RUN``): its
    base model, dataset, selectors, method options, seed, device, precision, grids and thread count; what
    a manifest does not record (``--checkpoint-every``, ``--keep-checkpoints``) takes its default.

    :raises UsageError: a manifest without a method or a forget set.
    """
    if manifest.kind != "forget" or manifest.method is None or manifest.forget is None:
        raise UsageError(f"the manifest records a '{manifest.kind}' run without a method or forget set")
    recorded = recorded_options(manifest)
    options = {
        "model": base_model_spec(manifest),
        **{k: recorded[k] for k in ("dataset", "data_dir", "classes", "forget")},
        "method": manifest.method.name,
        **{k: recorded[k] for k in ("out", "seed", "device", "precision", "channels_last", "compile")},
        "grid_per_class": manifest.runner.get("grid_per_class", ForgetRequest.grid_per_class),
        "threads": manifest.runner.get("threads", manifest.environment.num_threads),
        "checkpoint_every": ForgetRequest.checkpoint_every,
        "keep_checkpoints": ForgetRequest.keep_checkpoints,
        "data_options": recorded["data_options"],
    }
    method = dict(manifest.method.options)
    nulls = explicit_nulls("method", method, component_class(registry, "method", manifest.method.name))
    return ResolvedConfig("forget", options, method, nulls)
