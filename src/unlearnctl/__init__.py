"""unlearnctl: remove the influence of chosen training data from a trained diffusion model.

This module is the public API: plugins (the built-in ones included) import only from here
(``from unlearnctl import ...``; see ``docs/plugins.md``). Everything in ``__all__`` is stable:

- components to subclass: :class:`Dataset`, :class:`Selector`, :class:`Method`, :class:`ModelPreset`,
  :class:`Metric`, :class:`Attack`, :class:`Executor`, with their nested :class:`Options`;
- what components receive: :class:`UnlearnRun` (a method's ``unlearn(run)``), :class:`EvalContext` (a
  metric's ``compute(ctx)``), :class:`AuditContext` (an attack's ``run(ctx)``), :class:`DiffusionModel`,
  :class:`ImageSet` and :class:`ForgetSplit`;
- what lifecycle hooks receive: :class:`RunInfo` (``run``, the same attributes for every command);
  a listener's failure is a :class:`PluginHookWarning`;
- building blocks: :mod:`unlearnctl.diffusion` (noising, the DDPM loss, guided sampling), training
  (:func:`train_model`), the judge's verdicts, FID (:func:`fidelity_metrics`), image files on disk
  (:class:`FileImageSet`...);
- experiment trackers: :mod:`unlearnctl.tracking` (the :class:`~unlearnctl.tracking.Tracker` base class,
  the hook driver and what every tracker logs; no torch, no tracker library);
- errors (:class:`UsageError`...) and :data:`hookimpl`.

Plugin tests use :mod:`unlearnctl.testing` (tiny models, contract checks, run and eval harnesses).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Light names (pluggy, platformdirs; no torch, no pydantic) are imported now: ``import unlearnctl``,
# ``--version`` and ``--help`` must not pay for torch and diffusers (docs/performance.md, "Start-up").
# Every other public name is imported on first use (PEP 562 ``__getattr__`` below): the components'
# base classes (pydantic), and torch-backed ones; ``from unlearnctl import X`` works for every ``X``
# in ``__all__``.
from .errors import (
    DuplicateComponentError,
    ExitCode,
    ModelNotAvailableError,
    OptionError,
    PluginError,
    UnknownComponentError,
    UnlearnError,
    UsageError,
)
from .hookspecs import hookimpl
from .lifecycle import PluginHookWarning, RunInfo
from .paths import dataset_folder

if TYPE_CHECKING:  # what type checkers see; at run time these come from __getattr__
    __version__: str
    from . import diffusion, tracking
    from .cells import CellOutcome, CellTask, run_cell
    from .components import (
        Attack,
        Component,
        Dataset,
        Executor,
        Method,
        Metric,
        ModelPreset,
        Options,
        Selector,
    )
    from .contexts.audit import AuditContext
    from .contexts.evaluation import EvalContext
    from .contexts.study import SamplingProtocol
    from .contexts.unlearn import UnlearnRun
    from .data.files import (
        ArrayImageSet,
        ColumnMetadata,
        DataWarning,
        FileImageSet,
        LoadReport,
        hash_split,
        list_images,
    )
    from .data.formats import IMAGE_EXTENSIONS, OnProblem
    from .data.sets import ForgetSplit, ImageSet, ImageSubset, TensorImageSet, ids_fingerprint, split_forget
    from .fidelity import FeatureExtractor, fidelity_metrics
    from .judge.verdicts import class_fractions, fractions, judge_images
    from .models.folder import DiffusionModel, file_sha256, folder_sha256, load_model_folder, state_sha256
    from .models.hub import load_hub_model
    from .train_options import ARCHITECTURES, LRSchedule, TrainOptions
    from .training import TrainResult, build_scheduler, build_unet, train_model

#: public name -> the module (relative to this package) that defines it, imported on first use
_LAZY: dict[str, str] = {
    "diffusion": "",
    "tracking": "",
    "Attack": "components",
    "CellOutcome": "cells",
    "CellTask": "cells",
    "run_cell": "cells",
    "Executor": "components",
    "Component": "components",
    "Dataset": "components",
    "Method": "components",
    "Metric": "components",
    "ModelPreset": "components",
    "Options": "components",
    "Selector": "components",
    "AuditContext": "contexts.audit",
    "EvalContext": "contexts.evaluation",
    "SamplingProtocol": "contexts.study",
    "UnlearnRun": "contexts.unlearn",
    "IMAGE_EXTENSIONS": "data.formats",
    "ArrayImageSet": "data.files",
    "ColumnMetadata": "data.files",
    "DataWarning": "data.files",
    "FileImageSet": "data.files",
    "LoadReport": "data.files",
    "OnProblem": "data.formats",
    "hash_split": "data.files",
    "list_images": "data.files",
    "ForgetSplit": "data.sets",
    "ImageSet": "data.sets",
    "ImageSubset": "data.sets",
    "TensorImageSet": "data.sets",
    "ids_fingerprint": "data.sets",
    "split_forget": "data.sets",
    "FeatureExtractor": "fidelity",
    "fidelity_metrics": "fidelity",
    "class_fractions": "judge.verdicts",
    "fractions": "judge.verdicts",
    "judge_images": "judge.verdicts",
    "DiffusionModel": "models.folder",
    "file_sha256": "models.folder",
    "folder_sha256": "models.folder",
    "load_model_folder": "models.folder",
    "state_sha256": "models.folder",
    "load_hub_model": "models.hub",
    "ARCHITECTURES": "train_options",
    "LRSchedule": "train_options",
    "TrainOptions": "train_options",
    "TrainResult": "training",
    "build_scheduler": "training",
    "build_unet": "training",
    "train_model": "training",
}


__all__ = [
    "ARCHITECTURES",
    "IMAGE_EXTENSIONS",
    "ArrayImageSet",
    "Attack",
    "AuditContext",
    "CellOutcome",
    "CellTask",
    "ColumnMetadata",
    "Component",
    "DataWarning",
    "Dataset",
    "DiffusionModel",
    "DuplicateComponentError",
    "EvalContext",
    "Executor",
    "ExitCode",
    "FeatureExtractor",
    "FileImageSet",
    "ForgetSplit",
    "ImageSet",
    "ImageSubset",
    "LRSchedule",
    "LoadReport",
    "Method",
    "Metric",
    "ModelNotAvailableError",
    "ModelPreset",
    "OnProblem",
    "OptionError",
    "Options",
    "PluginError",
    "PluginHookWarning",
    "RunInfo",
    "SamplingProtocol",
    "Selector",
    "TensorImageSet",
    "TrainOptions",
    "TrainResult",
    "UnknownComponentError",
    "UnlearnError",
    "UnlearnRun",
    "UsageError",
    "__version__",
    "build_scheduler",
    "build_unet",
    "class_fractions",
    "dataset_folder",
    "diffusion",
    "fidelity_metrics",
    "file_sha256",
    "folder_sha256",
    "fractions",
    "hash_split",
    "hookimpl",
    "ids_fingerprint",
    "judge_images",
    "list_images",
    "load_hub_model",
    "load_model_folder",
    "run_cell",
    "split_forget",
    "state_sha256",
    "tracking",
    "train_model",
]


def __getattr__(name: str) -> Any:
    """Import a heavy public name (torch, diffusers) the first time it is used (PEP 562)."""
    if name == "__version__":  # read from the installed package's metadata (importlib.metadata: ~40 ms)
        globals()[name] = _read_version()
        return globals()[name]
    try:
        module_name = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    if not module_name:  # a submodule: ``unlearnctl.diffusion``, ``unlearnctl.tracking``
        value: Any = importlib.import_module(f".{name}", __name__)
    else:
        value = getattr(importlib.import_module(f".{module_name}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def _read_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("unlearnctl")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
        return "0.0.0+unknown"


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
