"""unlearnctl: remove the influence of chosen training data from a trained diffusion model.

This module is the public API: plugins (the built-in ones included) import only from here
(``from unlearnctl import ...``; see ``docs/plugins.md``). Everything in ``__all__`` is stable:

- components to subclass: :class:`Dataset`, :class:`Selector`, :class:`Method`, :class:`ModelPreset`,
  :class:`Metric`, with their nested :class:`Options`;
- what components receive: :class:`UnlearnRun` (a method's ``unlearn(run)``), :class:`EvalContext` (a
  metric's ``compute(ctx)``), :class:`DiffusionModel`, :class:`ImageSet` and :class:`ForgetSplit`;
- what lifecycle hooks receive: :class:`RunInfo` (``run``, the same attributes for every command);
  a listener's failure is a :class:`PluginHookWarning`;
- building blocks: :mod:`unlearnctl.diffusion` (noising, the DDPM loss, guided sampling), training
  (:func:`train_model`), the judge's verdicts, FID (:func:`fidelity_metrics`), image files on disk
  (:class:`FileImageSet`...);
- errors (:class:`UsageError`...) and :data:`hookimpl`.

Plugin tests use :mod:`unlearnctl.testing` (tiny models, contract checks, run and eval harnesses).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from . import diffusion
from .components import Component, Dataset, Method, Metric, ModelPreset, Options, Selector
from .contexts.evaluation import EvalContext, SamplingProtocol
from .contexts.unlearn import UnlearnRun
from .data.files import (
    IMAGE_EXTENSIONS,
    ArrayImageSet,
    ColumnMetadata,
    DataWarning,
    FileImageSet,
    LoadReport,
    OnProblem,
    hash_split,
    list_images,
)
from .data.sets import ForgetSplit, ImageSet, ImageSubset, TensorImageSet, ids_fingerprint, split_forget
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
from .fidelity import FeatureExtractor, fidelity_metrics
from .hookspecs import hookimpl
from .judge.verdicts import class_fractions, fractions, judge_images
from .lifecycle import PluginHookWarning, RunInfo
from .models.folder import DiffusionModel, file_sha256, folder_sha256, load_model_folder, state_sha256
from .models.hub import load_hub_model
from .paths import dataset_folder
from .training import ARCHITECTURES, TrainOptions, TrainResult, build_scheduler, build_unet, train_model

try:
    __version__ = version("unlearnctl")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = [
    "ARCHITECTURES",
    "IMAGE_EXTENSIONS",
    "ArrayImageSet",
    "ColumnMetadata",
    "Component",
    "DataWarning",
    "Dataset",
    "DiffusionModel",
    "DuplicateComponentError",
    "EvalContext",
    "ExitCode",
    "FeatureExtractor",
    "FileImageSet",
    "ForgetSplit",
    "ImageSet",
    "ImageSubset",
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
    "split_forget",
    "state_sha256",
    "train_model",
]
