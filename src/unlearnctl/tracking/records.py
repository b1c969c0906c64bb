"""What an unlearnctl tracker records, whatever the tracker: the opt-in rule, the parameters of a run,
its metrics, the files to upload, and where a tracked run's id is kept (docs/trackers.md).

No tracker library is imported here, nor torch: a tracker plugin's hook module imports this at
``unlearnctl plugins`` time. Everything comes from the lifecycle hooks' arguments (``unlearnctl.RunInfo``)
and the files of the run folder (``manifest.json``, ``metrics.json``, ``audit.json``: docs/manifest.md,
docs/eval.md); a manifest is read with the core's own reader, imported when one is read (it brings torch,
which every tracked command has loaded by then).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import UnlearnError
from ..rundir import (
    AUDIT_FILE,
    CHECKPOINTS_DIR,
    CHECKSUMS_FILE,
    LOCK_FILE,
    MANIFEST_FILE,
    METRICS_FILE,
    MODEL_DIR,
    RESUME_FILE,
)

#: the one switch: a comma- or space-separated list of trackers (``mlflow``, ``wandb``; ``all``; ``none``)
REPORT_TO_ENV = "UNLEARNCTL_REPORT_TO"
#: ``1``/``true``/``yes``/``on``: also upload the model weights (the run's ``model/`` folder; off by default)
LOG_MODEL_ENV = "UNLEARNCTL_LOG_MODEL"

#: runs that make something (a tracked run of their own, or the one recorded in the checkpoint they resume)
TRAINING_KINDS = ("forget", "replay", "train", "train-judge")
#: runs that study a model: they add to the tracked run of the run folder they read (or start one)
STUDY_KINDS = ("eval", "audit")
#: where each study writes its payload (``result.payload``) in its output folder
PAYLOAD_FILES = {"eval": METRICS_FILE, "audit": AUDIT_FILE}

#: never uploaded: checkpoints (large, temporary) and unlearnctl's own bookkeeping
SKIPPED_DIRS = (CHECKPOINTS_DIR,)
SKIPPED_FILES = (CHECKSUMS_FILE, RESUME_FILE, LOCK_FILE)
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")

#: the parts of a manifest that are not configuration (hashes, times, results, the file list...)
MANIFEST_NOT_CONFIG = frozenset(
    {
        "schema_version", "kind", "command", "seeds", "files", "extra", "samples", "started_at", "finished_at",
        "wall_time_s", "optimizer_steps", "final_losses", "resumed_at", "environment", "forget",
    }
)  # fmt: skip
#: the environment summary taken from a manifest's ``environment``
ENVIRONMENT_KEYS = (
    "python", "platform", "device", "device_name", "precision", "cuda_version", "num_threads", "git_commit",
    "git_dirty",
)  # fmt: skip
ENVIRONMENT_PACKAGES = ("unlearnctl", "torch", "diffusers")
#: the parts of ``metrics.json`` / ``audit.json`` that describe the study (parameters, not metrics)
PAYLOAD_CONFIG = ("model", "reference", "models", "protocol", "attacks")
PAYLOAD_SKIPPED = frozenset(
    {"schema_version", "created_at", "unlearnctl_version", "command", "files", "headlines", "left_out", "notes"}
)


class TrackingFailed(RuntimeError):
    """The tracker could not be reached or refused a call; the unlearnctl run goes on without it.

    Raised from a lifecycle hook, it becomes unlearnctl's one ``warning: plugin '...' failed in ...`` line.
    """


@contextmanager
def failures(describe: Callable[[Exception], str], on_failure: Callable[[], None] | None = None) -> Iterator[None]:
    """Turn any error of a tracker's library inside the block into one :class:`TrackingFailed` with the message
    ``describe(error)``; a :class:`TrackingFailed` raised inside passes through. ``on_failure`` runs first
    either way (a tracker marks itself broken there)."""
    try:
        yield
    except TrackingFailed:
        if on_failure is not None:
            on_failure()
        raise
    except Exception as exc:
        if on_failure is not None:
            on_failure()
        raise TrackingFailed(describe(exc)) from exc


# --- the opt-in rule -----------------------------------------------------------------------------------


def report_to() -> set[str]:
    """The trackers named by ``UNLEARNCTL_REPORT_TO`` (lower case; ``none`` and empty: none)."""
    names = {n.lower() for n in re.split(r"[\s,;]+", os.environ.get(REPORT_TO_ENV, "")) if n}
    return set() if "none" in names else names


def requested(tracker: str) -> bool:
    """``tracker`` is named by ``UNLEARNCTL_REPORT_TO`` (or ``all`` is). Nothing else switches it on."""
    names = report_to()
    return tracker in names or "all" in names


def is_main_process() -> bool:
    """False in the other processes of a ``torchrun`` / ``accelerate launch`` run (``RANK`` > 0).

    unlearnctl already fires the lifecycle hooks in the main process only; this is a second guard."""
    rank = os.environ.get("RANK", "").strip()
    return rank in ("", "0")


def wanted(tracker: str, run: Any) -> bool:
    """Track ``run``? Asked for (:func:`requested`), the main process, and a kind that is tracked."""
    kind = getattr(run, "kind", None)
    return (kind in TRAINING_KINDS or kind in STUDY_KINDS) and requested(tracker) and is_main_process()


def log_model() -> bool:
    """``UNLEARNCTL_LOG_MODEL`` asks for the model weights to be uploaded too."""
    return os.environ.get(LOG_MODEL_ENV, "").strip().lower() in ("1", "true", "yes", "on")


# --- values --------------------------------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    """``value`` as JSON values (tuples become lists, paths and other objects their ``str``)."""
    return json.loads(json.dumps(value, default=str, allow_nan=True))


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as ``{"a.b.c": leaf}``; lists and scalars are leaves."""
    out: dict[str, Any] = {}
    if isinstance(value, Mapping):
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    elif prefix:
        out[prefix] = value
    return out


def flatten_numbers(value: Any, prefix: str = "") -> dict[str, float]:
    """The numbers in nested dicts as ``{"a.b.c": float}`` (bools, strings, lists and ``None`` left out)."""
    return {key: float(leaf) for key, leaf in flatten(value, prefix).items() if is_number(leaf)}


def numbers(values: Mapping[str, Any]) -> dict[str, float]:
    """The numeric entries of a ``step_logged`` ``values`` (tensors with ``item()`` included)."""
    out: dict[str, float] = {}
    for key, value in values.items():
        if hasattr(value, "item") and not is_number(value):
            try:
                value = value.item()
            except Exception:
                continue
        if is_number(value):
            out[str(key)] = float(value)
    return out


def step_values(values: Mapping[str, Any]) -> dict[str, float]:
    """The metrics of one ``step_logged``: its numbers but ``step`` itself (the x-axis, logged as the step)."""
    return {k: v for k, v in numbers(values).items() if k != "step"}


def finite(values: Mapping[str, float]) -> dict[str, float]:
    return {k: v for k, v in values.items() if math.isfinite(v)}


def text(value: Any) -> str:
    """A parameter's value as text: strings as they are, everything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, default=str, allow_nan=True)


# --- what a run is ---------------------------------------------------------------------------------------


def run_config(run: Any) -> dict[str, Any]:
    """The configuration a run announces at ``run_started``: kind, seed, description and ``run.config``
    (``forget``: the method with its resolved options and the runner; ``eval``: the protocol...)."""
    config = jsonable(getattr(run, "config", None) or {})
    return {"kind": run.kind, "seed": getattr(run, "seed", None), "description": getattr(run, "description", ""),
            **(config if isinstance(config, dict) else {"config": config})}  # fmt: skip


def manifest_config(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The configuration a manifest records, nested: method and options, runner, model (``weights``),
    dataset, the forget set (selectors as ``name:argument``), seed, replay and an environment summary."""
    out: dict[str, Any] = {k: v for k, v in manifest.items() if k not in MANIFEST_NOT_CONFIG and v is not None}
    forget = manifest.get("forget")
    if isinstance(forget, Mapping):
        out["forget"] = {
            "selectors": ",".join(_selector_text(s) for s in forget.get("selectors") or []),
            **{k: forget[k] for k in ("size", "remain_size", "forget_classes", "fingerprint") if k in forget},
        }
    env = manifest.get("environment")
    if isinstance(env, Mapping):
        summary = {k: env[k] for k in ENVIRONMENT_KEYS if env.get(k) is not None}
        packages = env.get("packages") or {}
        summary.update({k: packages[k] for k in ENVIRONMENT_PACKAGES if k in packages})
        out["environment"] = summary
    return jsonable(out)


def _selector_text(selector: Any) -> str:
    if not isinstance(selector, Mapping):
        return str(selector)
    name = str(selector.get("name", "?"))
    argument = selector.get("argument")
    if argument:
        return f"{name}:{argument}"
    options = selector.get("options") or {}
    return f"{name}{json.dumps(options, sort_keys=True, default=str)}" if options else name


def manifest_metrics(manifest: Mapping[str, Any]) -> dict[str, float]:
    """The end-of-run numbers of a manifest: wall time and optimizer steps."""
    return {k: float(manifest[k]) for k in ("wall_time_s", "optimizer_steps") if is_number(manifest.get(k))}


def payload_config(payload: Mapping[str, Any]) -> dict[str, Any]:
    """What a study's payload (``metrics.json``, ``audit.json``) says about how it was made: the models it
    studied, the protocol (sampler, steps, judge, seeds, metric/attack options)."""
    return jsonable({k: payload[k] for k in PAYLOAD_CONFIG if payload.get(k) is not None})


def payload_metrics(payload: Mapping[str, Any], prefix: str) -> dict[str, float]:
    """Every number of a study's payload as ``{prefix}.{path}``: ``results`` without its own name
    (``eval.model.forgetting.ua``, ``eval.reference.kept.mean_rate``), then ``delta``, ``sampling``,
    ``metric_seconds``, ``wall_time_s``... (lists, such as ROC curves, are left out)."""
    out: dict[str, float] = {}
    for key, value in payload.items():
        if key in PAYLOAD_SKIPPED or key in PAYLOAD_CONFIG:
            continue
        out.update(flatten_numbers(value, prefix if key == "results" else f"{prefix}.{key}"))
    return out


def sanitize_key(key: str) -> str:
    """A metric or parameter name trackers accept: letters, digits, ``_ - . / :`` and spaces."""
    key = re.sub(r"[^\w.\- /:]", "_", key)
    return re.sub(r"/{2,}", "/", key).strip("/")[:250] or "_"


# --- run folders -----------------------------------------------------------------------------------------


def read_run_manifest(folder: Path | str) -> dict[str, Any] | None:
    """The manifest of the run folder ``folder`` as JSON values, read and checked by the core's reader
    (:func:`unlearnctl.manifest.read_manifest`); None when there is none or it cannot be read."""
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        return None
    from ..manifest import read_manifest  # pydantic and torch: loaded by every command a tracker follows

    try:
        return read_manifest(path).model_dump(mode="json")
    except UnlearnError:
        return None


def run_manifest(run: Any) -> dict[str, Any] | None:
    """At ``run_finished``: the manifest the run wrote (``forget``, ``replay``, ``train``), else None."""
    out_dir = getattr(run, "out_dir", None)
    return read_run_manifest(out_dir) if out_dir is not None else None


def studied_manifest(run: Any) -> tuple[Path, dict[str, Any]] | None:
    """For ``eval``/``audit``: the run folder studied and its manifest: the output folder when it is a run
    folder (``unlearnctl eval RUN``), else the target when it names one (``eval RUN --out OTHER``)."""
    candidates: list[Path] = []
    if getattr(run, "out_dir", None) is not None:
        candidates.append(Path(run.out_dir))
    target = (getattr(run, "config", None) or {}).get("target")
    if isinstance(target, str) and target:
        path = Path(target).expanduser()
        candidates.append(path.parent if path.name == MANIFEST_FILE else path)
    for folder in candidates:
        manifest = read_run_manifest(folder)
        if manifest is not None:
            return folder, manifest
    return None


def recorded_run(manifest: Mapping[str, Any] | None, tracker: str) -> dict[str, Any]:
    """The tracked run a manifest records in ``extra[tracker]`` (empty when none)."""
    extra = (manifest or {}).get("extra")
    record = extra.get(tracker) if isinstance(extra, Mapping) else None
    return dict(record) if isinstance(record, Mapping) and record.get("run_id") else {}


def last_step(manifest: Mapping[str, Any] | None, record: Mapping[str, Any] | None = None) -> int:
    """The step a study's numbers are logged at: the last step the tracked run logged (recorded with its
    id), else the run's step count from its manifest, else 0."""
    for value in (
        (record or {}).get("step"),
        ((manifest or {}).get("runner") or {}).get("steps"),
        ((manifest or {}).get("train") or {}).get("steps"),
        (manifest or {}).get("optimizer_steps"),
    ):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return int(value)
    return 0


def output_files(run: Any, result: Any) -> Iterator[tuple[Path, str]]:
    """The files to upload when ``run`` has finished, as (absolute path, path relative to the folder).

    A study: its payload file and the files it lists (grids, plots). Anything else: every file of its
    output folder but checkpoints, unlearnctl's bookkeeping and the weights; the weights (``model/``,
    ``*.safetensors``...) only with ``UNLEARNCTL_LOG_MODEL=1``.
    """
    out_dir = getattr(run, "out_dir", None)
    if out_dir is None or not Path(out_dir).is_dir():
        return
    root = Path(out_dir)
    if run.kind in STUDY_KINDS:
        payload = getattr(result, "payload", None) or {}
        listed = [PAYLOAD_FILES[run.kind], *(v for v in (payload.get("files") or {}).values() if isinstance(v, str))]
        for rel in dict.fromkeys(listed):
            path = root / rel
            if path.is_file() and root.resolve() in path.resolve().parents:
                yield path, Path(rel).as_posix()
        return
    weights = log_model()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        inside = path.relative_to(root)
        if inside.parts[0] in SKIPPED_DIRS or inside.name in SKIPPED_FILES:
            continue
        if not weights and (inside.parts[0] == MODEL_DIR or inside.suffix in WEIGHT_SUFFIXES):
            continue
        yield path, inside.as_posix()


def safe_uri(uri: str) -> str:
    """A tracking URI without the user name and password it may hold (what goes into a manifest)."""
    return re.sub(r"(?<=://)[^/@]*@", "", uri)


def short(exc: BaseException, limit: int = 300) -> str:
    """``Type: message`` on one line, cut at ``limit`` characters."""
    message = " ".join(str(exc).split())
    line = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."
