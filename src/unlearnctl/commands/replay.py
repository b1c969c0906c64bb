"""``unlearnctl replay``: rerun a recorded ``forget`` run from its manifest, and verify it."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.files import rehashing
from ..errors import UsageError, VerificationError
from ..inputs import base_model_spec
from ..integrity import check_run, is_run_folder, run_folder
from ..manifest import (
    Environment,
    Manifest,
    ReplayRecord,
    collect_environment,
    read_manifest,
)
from ..provenance import check_providers
from ..registry import get_registry
from ..rundir import default_run_dir
from ..runtime import check_precision, resolve_device
from .forget import ForgetRequest, PreparedForget, Recorded, prepare_forget, run_forget

# --- replay ---------------------------------------------------------------------------------------


@dataclass
class PreparedReplay:
    original: Manifest
    manifest_path: Path
    prepared: PreparedForget
    #: differences between the recorded environment and this one (warnings)
    warnings: list[str]
    verify: bool


@dataclass
class ReplayResult:
    run_dir: Path
    manifest: Manifest
    original: Manifest
    warnings: list[str]
    #: True: output sha256 matches; None: not checked (no --verify)
    verified: bool | None


def environment_differences(recorded: Environment, current: Environment) -> list[str]:
    """Human-readable differences that may change results."""
    out = []
    for key in (
        "python",
        "platform",
        "git_commit",
        "device",
        "device_name",
        "cuda_version",
        "cudnn_version",
        "deterministic_algorithms",
        "cudnn_deterministic",
        "num_threads",
    ):
        a, b = getattr(recorded, key), getattr(current, key)
        if a != b:
            out.append(f"{key}: recorded {a!r}, now {b!r}")
    if current.git_dirty:
        out.append("git_dirty: the unlearnctl source tree has uncommitted changes now")
    for name in sorted(set(recorded.packages) | set(current.packages)):
        a, b = recorded.packages.get(name), current.packages.get(name)
        if a != b:
            out.append(f"package {name}: recorded {a}, now {b}")
    for name in sorted(set(recorded.env) | set(current.env)):
        a, b = recorded.env.get(name), current.env.get(name)
        if a != b:
            out.append(f"environment variable {name}: recorded {a!r}, now {b!r}")
    return out


def prepare_replay(
    manifest_path: Path,
    *,
    out: Path | None = None,
    device: str | None = None,
    verify: bool = False,
    registry: Any = None,
    command: list[str] | None = None,
    data_dir: Path | None = None,
) -> PreparedReplay:
    """Read a manifest, check inputs against it, and prepare the same run. Writes nothing.

    The dataset is read with its recorded options from ``data_dir`` (``--data-dir``), else from the
    recorded folder; its fingerprint must match the recorded one either way.

    Raises :class:`VerificationError` when the dataset, the forget set or the input weights differ
    from what the manifest recorded, :class:`~unlearnctl.errors.RunIntegrityError` when a file of the
    replayed run folder differs from its record (:func:`unlearnctl.integrity.check_run`; ``--no-verify``
    skips that), and ``UsageError`` when ``verify`` cannot be exact. With ``verify`` the dataset's files
    are all hashed again (:func:`unlearnctl.data.files.rehashing`), whatever the hash cache says.
    """

    registry = registry if registry is not None else get_registry()
    path = Path(manifest_path)
    original = read_manifest(path)
    if is_run_folder(run_folder(path)):
        check_run(path)  # the replayed run's own files must match their records
    if original.kind != "forget" or original.method is None or original.forget is None:
        raise UsageError(f"'{path}' records a '{original.kind}' run; replay reruns `forget` runs only")
    rec_env = original.environment
    dev = resolve_device(device or rec_env.device)
    if verify and dev.type != rec_env.device:
        raise UsageError(
            f"the run was recorded on {rec_env.device}; a run on {dev.type} cannot be bit-identical to it: "
            f"replay without --verify, or on a {rec_env.device} device"
        )
    precision = check_precision(rec_env.precision, dev)
    current = collect_environment(
        device or rec_env.device_requested,
        dev,
        precision,
        channels_last=rec_env.channels_last,
        compile=rec_env.compile,
    )
    # the rerun uses the recorded thread count (below), so that is the one to compare
    current = current.model_copy(update={"num_threads": rec_env.num_threads})
    warnings = environment_differences(rec_env, current)
    warnings += check_providers(registry, original)  # a missing plugin: one error naming it
    spec = original.weights.model
    location = base_model_spec(original)  # the recorded spec, or its resolved folder when that moved
    recorded_dir = original.dataset.data_dir
    grid_per_class = original.runner.get("grid_per_class", 0)
    if not isinstance(grid_per_class, int) or isinstance(grid_per_class, bool):
        raise UsageError(f"manifest '{path}': runner.grid_per_class is {grid_per_class!r}, not a whole number")
    # The same path as `forget`, with every input taken from the manifest's records and checked against them.
    request = ForgetRequest(
        model=spec,
        dataset=original.dataset.name,
        data_dir=Path(data_dir) if data_dir is not None else (Path(recorded_dir) if recorded_dir else None),
        data_options=dict(original.dataset.options),
        method=original.method.name,
        out=Path(out) if out is not None else default_run_dir(f"replay-{original.method.name}", spec),
        seed=original.seed,
        device=device or rec_env.device_requested,
        precision=precision,
        channels_last=rec_env.channels_last,
        compile=rec_env.compile,
        grid_per_class=grid_per_class,
        threads=rec_env.num_threads,  # CPU sums depend on the thread count: use the recorded one
        command=list(command) if command is not None else list(sys.argv[1:]),
        recorded=Recorded(
            method_options=dict(original.method.options),
            selectors=list(original.forget.selectors),
            input_sha256=original.weights.input_sha256,
            model_location=location if location != spec else None,
            dataset_fingerprint=original.dataset.fingerprint,
            forget_fingerprint=original.forget.fingerprint,
            forget_size=original.forget.size,
            replay_of=ReplayRecord(
                manifest=str(path.resolve()), output_sha256=original.weights.output_sha256, verified=None
            ),
        ),
    )
    with rehashing(verify):  # --verify trusts no cached data-file hash
        prepared = prepare_forget(request, registry)
    warnings += world_size_differences(original, prepared.world.size, verify)
    return PreparedReplay(original, path, prepared, warnings, verify)


def world_size_differences(original: Manifest, size: int, verify: bool) -> list[str]:
    """A warning (or, with ``verify``, an error) when the replay runs on another number of processes than
    the run did: each process draws its own noise for its shard, so the weights depend on that number."""
    recorded = original.distributed.world_size if original.distributed is not None else 1
    if recorded == size:
        return []
    launch = "one process (no launcher)"
    if recorded > 1:
        launch = f"{recorded} processes (torchrun --nproc_per_node {recorded} ...)"
    if verify:
        raise UsageError(
            f"the run was made by {recorded} process(es) and this replay runs {size}: it cannot be bit-identical; "
            f"replay it with {launch}"
        )
    return [
        f"the run was made by {recorded} process(es) and this replay runs {size}: each process draws its own noise, "
        f"so the weights will differ (replay with {launch} for the same weights)"
    ]


def run_replay(prepared: PreparedReplay) -> ReplayResult:
    """Rerun; with ``verify``, compare the output weights' sha256 with the recorded one.

    The new run folder is written either way (its manifest's ``replay_of.verified`` says whether the
    output matched); a mismatch then raises :class:`VerificationError`.
    """
    p = prepared
    p.prepared.verify = p.verify
    result = run_forget(p.prepared)
    record = result.manifest.replay_of
    verified = record.verified if record is not None and p.verify else None
    if verified is False:
        where = (
            ""
            if p.prepared.device.type == "cpu"
            else (f" ({p.prepared.device.type} kernels are not guaranteed to be bit-identical)")
        )
        new_sha = result.manifest.weights.output_sha256 or ""
        raise VerificationError(
            f"output weights differ from the recorded run: sha256 {new_sha[:16]}... "
            f"vs {(p.original.weights.output_sha256 or '')[:16]}...{where}; the new run is in '{result.run_dir}'"
        )
    return ReplayResult(result.run_dir, result.manifest, p.original, p.warnings, verified)


def replay(
    manifest_path: Path,
    *,
    verify: bool = False,
    out: Path | None = None,
    device: str | None = None,
    registry: Any = None,
    data_dir: Path | None = None,
) -> ReplayResult:
    """``unlearnctl replay``: rerun a recorded ``forget`` run (see :func:`prepare_replay`, :func:`run_replay`)."""
    return run_replay(
        prepare_replay(manifest_path, out=out, device=device, verify=verify, registry=registry, data_dir=data_dir)
    )
