"""Models: a diffusers UNet with its scheduler and class names (:class:`DiffusionModel`), model folders
and weight hashes (:mod:`.folder`)."""

from __future__ import annotations

from .folder import META_FILE, DiffusionModel, file_sha256, folder_sha256, load_model_folder, state_sha256

__all__ = ["META_FILE", "DiffusionModel", "file_sha256", "folder_sha256", "load_model_folder", "state_sha256"]
