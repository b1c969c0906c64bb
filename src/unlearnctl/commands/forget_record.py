"""What a ``forget`` run records: its manifest, and the ``unlearnctl.json`` of the unlearned model it saves."""

from __future__ import annotations

import copy
import math
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..manifest import (
    DistributedRecord,
    ForgetSetRecord,
    Manifest,
    ReplayRecord,
    SamplesRecord,
    WeightsRecord,
    collect_environment,
    manifest_extra,
)
from ..models.folder import DiffusionModel, folder_sha256
from ..rundir import MODEL_DIR, hash_run_files
from ..runtime import STREAMS, stream_seed
from .forget_grids import GRID_SAMPLER

if TYPE_CHECKING:
    from ..contexts.unlearn import UnlearnRun
    from .forget import PreparedForget


def forget_manifest(
    p: PreparedForget,
    run: UnlearnRun,
    runner_config: dict[str, Any],
    grid_classes: tuple[list[int], list[int]],
    samples: dict[str, str],
    saved: str,
    output_sha: str,
    replay_of: ReplayRecord | None,
    tmp: Path,
) -> Manifest:
    """The manifest of the finished run ``run`` (written last, into ``tmp``, the folder being written)."""
    req = p.request
    return Manifest(
        kind="forget",
        command=p.command,
        seed=req.seed,
        seeds={s: stream_seed(req.seed, s) for s in STREAMS},
        method=p.method_config,
        runner=runner_config,
        dataset=p.dataset,
        forget=ForgetSetRecord(
            selectors=p.selectors,
            size=len(p.split.forget),
            fingerprint=p.split.forget_fingerprint,
            remain_size=len(p.split.remain),
            forget_classes=list(p.split.forget_classes),
        ),
        weights=WeightsRecord(
            model=req.model,
            model_path=str(p.model_path) if p.model_path else None,
            preset=p.model_preset,
            input_sha256=p.input_sha256,
            output_sha256=output_sha,
            output_files_sha256=folder_sha256(tmp / MODEL_DIR),
            saved_weights=saved,
        ),
        environment=collect_environment(
            req.device, p.device, p.precision, channels_last=req.channels_last, compile=req.compile
        ),
        samples=SamplesRecord(
            files=samples,
            forgotten_classes=grid_classes[0],
            kept_classes=grid_classes[1],
            per_class=req.grid_per_class,
            seed=stream_seed(req.seed, "samples"),
            sampler=GRID_SAMPLER.model_dump(mode="json"),
        )
        if samples
        else None,
        started_at=run.started_at,
        finished_at=datetime.now(UTC),
        wall_time_s=round(time.perf_counter() - run.started, 3),
        optimizer_steps=run.optimizer_steps,
        final_losses={k: float(v) for k, v in run.last_values.items() if _is_number(v)},
        replay_of=replay_of,
        distributed=DistributedRecord.of(p.world, req.seed, p.precision) if p.world.distributed else None,
        resumed_at=list(run.resumed_at),
        files=hash_run_files(tmp),
        extra=manifest_extra(run.extra),
    )


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))


def output_model(model: DiffusionModel, p: PreparedForget, saved: str, ema_decay: float | None) -> DiffusionModel:
    """The unlearned model with its ``unlearnctl.json``: which weights were saved and where they came from."""
    extra = {k: v for k, v in model.extra.items() if k not in ("weights", "ema_decay", "unlearned")}
    extra["weights"] = saved
    if saved == "ema":
        extra["ema_decay"] = ema_decay
    extra["base_model"] = p.request.model
    extra["unlearned"] = {
        "method": p.method.name,
        "forget": [s.name + (f":{s.argument}" if s.argument else "") for s in p.selectors],
        "forget_classes": list(p.split.forget_classes),
        "input_sha256": p.input_sha256,
    }
    if model.judge_path is not None:
        extra["judge"] = str(Path(model.judge_path).resolve())
    out = copy.copy(model)
    out.extra = extra
    out.default_dataset = p.dataset.name
    return out
