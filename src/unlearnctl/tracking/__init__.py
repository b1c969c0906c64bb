"""Experiment trackers, whatever the service: the base of a tracker plugin (docs/trackers.md).

A tracker plugin (``unlearnctl-mlflow``, ``unlearnctl-wandb``, yours) is two small modules:

- a :class:`Tracker` subclass making the service's calls (``start(run)``, ``log_step``, ``finish(run,
  result)``, ``abort()``), in a module that imports the service's library;
- a hook module (the entry point) whose ``@unlearnctl.hookimpl`` functions ``run_started``,
  ``step_logged`` and ``run_finished`` delegate to a :class:`TrackerHooks`, which applies the opt-in rule
  (``UNLEARNCTL_REPORT_TO``), imports the tracker's module on the first tracked run, follows each run
  and ends the runs that never finish at exit.

What is logged is the same for every tracker and is decided here (:mod:`unlearnctl.tracking.records`):
the parameters of a run and of its manifest, the metrics of a step and of ``metrics.json`` /
``audit.json``, the files to upload, where a tracked run's id is kept in the manifest's ``extra`` and how
``eval`` / ``audit`` find it again. Importing this module imports neither torch nor a tracker library.
"""

from __future__ import annotations

from .hooks import Tracker, TrackerHooks
from .records import (
    LOG_MODEL_ENV,
    MANIFEST_FILE,
    MODEL_DIR,
    PAYLOAD_FILES,
    REPORT_TO_ENV,
    STUDY_KINDS,
    TRAINING_KINDS,
    TrackingFailed,
    failures,
    finite,
    flatten,
    flatten_numbers,
    is_main_process,
    is_number,
    jsonable,
    last_step,
    log_model,
    manifest_config,
    manifest_metrics,
    numbers,
    output_files,
    payload_config,
    payload_metrics,
    read_run_manifest,
    recorded_run,
    report_to,
    requested,
    run_config,
    run_manifest,
    safe_uri,
    sanitize_key,
    short,
    step_values,
    studied_manifest,
    text,
    wanted,
)

__all__ = [
    "LOG_MODEL_ENV",
    "MANIFEST_FILE",
    "MODEL_DIR",
    "PAYLOAD_FILES",
    "REPORT_TO_ENV",
    "STUDY_KINDS",
    "TRAINING_KINDS",
    "Tracker",
    "TrackerHooks",
    "TrackingFailed",
    "failures",
    "finite",
    "flatten",
    "flatten_numbers",
    "is_main_process",
    "is_number",
    "jsonable",
    "last_step",
    "log_model",
    "manifest_config",
    "manifest_metrics",
    "numbers",
    "output_files",
    "payload_config",
    "payload_metrics",
    "read_run_manifest",
    "recorded_run",
    "report_to",
    "requested",
    "run_config",
    "run_manifest",
    "safe_uri",
    "sanitize_key",
    "short",
    "step_values",
    "studied_manifest",
    "text",
    "wanted",
]
