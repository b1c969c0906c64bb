"""unlearnctl: remove the influence of chosen training data from a trained diffusion model.

This module is the public API: plugins (the built-in ones included) import only from here.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from . import diffusion
from .components import Component, Dataset, Method, Metric, ModelPreset, Options, Selector
from .data import ForgetSplit, ImageSet, ImageSubset, TensorImageSet, ids_fingerprint, split_forget
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
from .models import DiffusionModel, load_model_folder

try:
    __version__ = version("unlearnctl")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = [
    "Component",
    "Dataset",
    "DiffusionModel",
    "DuplicateComponentError",
    "ExitCode",
    "ForgetSplit",
    "ImageSet",
    "ImageSubset",
    "Method",
    "Metric",
    "ModelNotAvailableError",
    "ModelPreset",
    "OptionError",
    "Options",
    "PluginError",
    "Selector",
    "TensorImageSet",
    "UnknownComponentError",
    "UnlearnError",
    "UsageError",
    "__version__",
    "diffusion",
    "hookimpl",
    "ids_fingerprint",
    "load_model_folder",
    "split_forget",
]
