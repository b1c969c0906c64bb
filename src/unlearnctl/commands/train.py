"""``unlearnctl train``: train a DDPM from scratch into a run folder (and the ``retrain`` gold standard)."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import torch

from .. import inprogress
from ..checkpoints import StepLoop, latest_checkpoint
from ..data.sets import ImageSet, split_forget
from ..distributed import barrier, broadcast_from_main, init_world, launcher_precision, main_process_env
from ..errors import UsageError, VerificationError
from ..grids import save_grid, save_labelled_grid
from ..inputs import dataset_options, load_dataset_warned, parse_data_options, resolve_data_dir, select_forget
from ..lifecycle import Lifecycle, RunInfo
from ..manifest import (
    DatasetRecord,
    DistributedRecord,
    ForgetSetRecord,
    Manifest,
    SamplesRecord,
    SelectorConfig,
    WeightsRecord,
    collect_environment,
    manifest_extra,
)
from ..models.folder import DiffusionModel, folder_sha256, state_sha256
from ..provenance import provenance
from ..registry import get_registry
from ..rundir import (
    CHECKPOINTS_DIR,
    GRID_FILE,
    LOG_FILE,
    MANIFEST_FILE,
    MODEL_DIR,
    SAMPLES_DIR,
    check_new_folder,
    default_train_dir,
    hash_run_files,
    record_files,
    write_log_line,
)
from ..runtime import check_precision, resolve_device
from ..sampling import SampleOptions, class_labels_for, generate
from ..training import TrainOptions, build_unet, resolve_train_options, train_model
from .configs import TRAIN_SPEC, ResolvedConfig, apply_config, explicit_nulls, recorded_options


@dataclass
class TrainRequest:
    """``unlearnctl train`` as asked on the command line."""

    #: the dataset to train on (required: here, or in the config file's [train] table)
    dataset: str = ""
    out: Path | None = None
    forget: list[str] = field(default_factory=list)
    classes: str | None = None
    #: ``--set KEY=VALUE``: training options (over the config file's, under ``steps``)
    sets: list[str] | dict[str, Any] = field(default_factory=list)
    #: ``--config FILE``: a command-level config file ([train] and [training] tables; docs/config.md), or a
    #: flat table of training options (the original format)
    config: Path | None = None
    steps: int | None = None
    seed: int = 0
    device: str = "auto"
    data_dir: Path | None = None
    #: ``--data-option KEY=VALUE``, repeatable (or already-parsed values): the dataset's options
    data_options: list[str] | dict[str, Any] = field(default_factory=list)
    #: called with the data warnings of the dataset load (files left out...) as soon as it is loaded
    on_data_warning: Callable[[list[str]], None] | None = None
    #: the command line recorded in the manifest (default: ``sys.argv[1:]``)
    command: list[str] | None = None
    #: a checkpoint every this many steps (0: only when a stop signal comes; docs/resume.md)
    checkpoint_every: int = 500
    #: keep the checkpoints in the finished run folder (``checkpoints/``)
    keep_checkpoints: bool = False
    #: a resumed run's dataset fingerprint, checked against the data loaded now
    dataset_fingerprint: str | None = None
    #: fp32, bf16 or fp16 autocast; None: what ``accelerate launch --mixed_precision`` asked for, else fp32
    precision: str | None = None
    #: the UNet's opt-in speed-ups (docs/performance.md, "GPU paths")
    channels_last: bool = False
    compile: bool = False
    #: the fields set explicitly (the flags given on the command line), which the config file does not
    #: change; None: the fields whose value differs from the default
    given: list[str] | None = None


@dataclass
class PreparedTrain:
    """Everything ``train`` checked and loaded before training; nothing written yet."""

    #: the request with its config file applied
    request: TrainRequest
    world: Any
    device: torch.device
    precision: str
    options: TrainOptions
    out: Path
    data: ImageSet
    dataset_record: DatasetRecord
    train_set: ImageSet
    forget_record: ForgetSetRecord | None
    #: one-line notes for the user (a part of the config file that does not apply)
    notes: list[str] = field(default_factory=list)


@dataclass
class TrainRunResult:
    run_dir: Path
    manifest: Any
    model: DiffusionModel


def resume_train(path: Path, registry: Any = None) -> TrainRunResult:
    """Continue the interrupted ``train`` whose run folder (or ``.NAME.partial-*`` folder) is ``path`` from
    its newest checkpoint; the dataset must be unchanged."""
    from pydantic import TypeAdapter

    found = inprogress.resolve_resume(Path(path), "train", check_live=main_process_env())
    request = TypeAdapter(TrainRequest).validate_python(inprogress.read_resume(found.path)["request"])
    request.out = found.final
    return run_train(request, registry, partial=found.path)


def _resume_request(
    req: TrainRequest, options: TrainOptions, fingerprint: str, command: list[str], precision: str
) -> dict[str, Any]:
    """The request ``--resume`` re-creates the run from: the options resolved, the data fingerprinted."""
    from pydantic import TypeAdapter

    pinned = replace(
        req,
        sets=options.model_dump(mode="json"),
        config=None,
        steps=None,
        on_data_warning=None,
        command=command,
        precision=precision,
        data_dir=Path(req.data_dir).resolve() if req.data_dir is not None else None,
        dataset_fingerprint=fingerprint,
    )
    return TypeAdapter(TrainRequest).dump_python(pinned, mode="json")


def prepare_train(request: TrainRequest, registry: Any = None) -> PreparedTrain:
    """Everything ``train`` checks before training (cheap checks first: the config file, seed, device,
    options, output folder; then the data and the forget set). Writes nothing; bad input is one
    ``UsageError``."""

    registry = registry if registry is not None else get_registry()
    applied = apply_config(request, TRAIN_SPEC)
    req = applied.request
    if not req.dataset:
        raise UsageError("missing option '--dataset': name the dataset to train on (`unlearnctl list datasets`)")
    # 1. cheap checks first: seed, device, options, output folder
    if req.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {req.seed}")
    if req.checkpoint_every < 0:
        raise UsageError(f"--checkpoint-every must be >= 0 (0: only when stopped), got {req.checkpoint_every}")
    world, device = init_world(resolve_device(req.device))
    precision = check_precision(req.precision or launcher_precision(), device)
    data_dir = resolve_data_dir(req.data_dir)
    parse_data_options(req.data_options)
    options = resolve_train_options(applied.options, req.sets, req.steps)
    out = Path(req.out) if req.out is not None else default_train_dir(req.dataset)
    check_new_folder(out)
    # 2. the data, and the forget set when asked for
    data_options = dataset_options(req.dataset, req.data_options, registry=registry)
    data, data_warnings = load_dataset_warned(req.dataset, "train", data_dir, data_options, registry)
    if data_warnings and req.on_data_warning is not None:
        req.on_data_warning(data_warnings)
    if req.dataset_fingerprint is not None and data.fingerprint() != req.dataset_fingerprint:
        raise VerificationError(
            f"dataset '{req.dataset}' differs from the one the interrupted run trained on (fingerprint "
            f"{data.fingerprint()[:12]}... vs {req.dataset_fingerprint[:12]}...)"
        )
    dataset_info = registry.get("dataset", req.dataset)
    dataset_record = DatasetRecord(
        name=req.dataset,
        version=data.version or "",
        split="train",
        size=len(data),
        fingerprint=data.fingerprint(),
        options=data_options,
        **provenance(dataset_info),
        data_dir=str(data_dir) if data_dir is not None else None,
        warnings=data_warnings,
    )
    train_set: ImageSet = data
    forget_record = None
    if req.forget or req.classes is not None:
        ids, selections = select_forget(data, req.forget, req.classes, registry)
        split = split_forget(data, ids)
        train_set = split.remain
        forget_record = ForgetSetRecord(
            selectors=[
                SelectorConfig(
                    name=s.name, options=s.options, argument=s.argument, **provenance(registry.get("selector", s.name))
                )
                for s in selections
            ],
            size=len(split.forget),
            fingerprint=split.forget_fingerprint,
            remain_size=len(split.remain),
            forget_classes=list(split.forget_classes),
        )
    if options.conditional and not data.class_names:
        raise UsageError(
            f"dataset '{req.dataset}' has no classes: train an unconditional model with --set conditional=false"
        )
    return PreparedTrain(
        req, world, device, precision, options, out, data, dataset_record, train_set, forget_record, applied.notes
    )


def train_config(p: PreparedTrain) -> ResolvedConfig:
    """What ``train --print-config`` prints: the request as :func:`prepare_train` resolved it (the dataset
    with every option, the device, ``auto`` as the device chosen, the precision) and every training option;
    the forget set as given (``classes``, ``forget``), ``out`` only when given."""
    req = p.request
    options = {
        "dataset": req.dataset,
        "data_dir": p.dataset_record.data_dir,
        "classes": req.classes,
        "forget": list(req.forget),
        "out": str(req.out) if req.out is not None else None,
        "seed": req.seed,
        "device": req.device if req.device != "auto" else p.device.type,
        "precision": p.precision,
        "channels_last": req.channels_last,
        "compile": req.compile,
        "checkpoint_every": req.checkpoint_every,
        "keep_checkpoints": req.keep_checkpoints,
        "data_options": dict(p.dataset_record.options),
    }
    training = p.options.model_dump(mode="json")
    return ResolvedConfig("train", options, training, explicit_nulls("training", training, TrainOptions))


def train_config_of(manifest: Manifest, registry: Any = None) -> ResolvedConfig:
    """The config file that reruns the ``train`` run ``manifest`` records (``unlearnctl config RUN``): its
    dataset, what it left out, seed, device, precision and every training option; what a manifest does not
    record (``--checkpoint-every``, ``--keep-checkpoints``) takes its default. (``registry``: unused, for the
    same signature as ``forget_config_of``.)"""
    recorded = recorded_options(manifest)
    options = {
        **{k: recorded[k] for k in ("dataset", "data_dir", "classes", "forget", "out", "seed", "device")},
        **{k: recorded[k] for k in ("precision", "channels_last", "compile")},
        "checkpoint_every": TrainRequest.checkpoint_every,
        "keep_checkpoints": TrainRequest.keep_checkpoints,
        "data_options": recorded["data_options"],
    }
    training = dict(manifest.runner.get("train") or {})
    return ResolvedConfig("train", options, training, explicit_nulls("training", training, TrainOptions))


def run_train(request: TrainRequest, registry: Any = None, *, partial: Path | None = None) -> TrainRunResult:
    """``unlearnctl train``: check everything (:func:`prepare_train`), train, and write the run folder
    (``manifest.json`` last).

    With ``--forget`` / ``--classes`` the model is trained on the remaining set only (the ``retrain``
    gold standard), keeping every class id of the dataset so it is comparable with unlearned models.
    ``partial``: resume the interrupted run writing this ``.NAME.partial-*`` folder (:func:`resume_train`).
    """
    registry = registry if registry is not None else get_registry()
    return train_prepared(prepare_train(request, registry), registry, partial=partial)


def train_prepared(p: PreparedTrain, registry: Any, *, partial: Path | None = None) -> TrainRunResult:
    """Train what :func:`prepare_train` prepared and write the run folder (``manifest.json`` last)."""
    req, world, device, precision, options, out = p.request, p.world, p.device, p.precision, p.options, p.out
    data, dataset_record, train_set, forget_record = p.data, p.dataset_record, p.train_set, p.forget_record
    resuming = partial is not None or req.dataset_fingerprint is not None
    num_classes = len(data.class_names) if options.conditional else 0
    input_sha = state_sha256(build_unet(options.arch, data.image_size, data.channels, num_classes, seed=req.seed))

    # 3. train inside a folder that is renamed into place only when whole
    hook = Lifecycle.of(registry) if world.is_main else None
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    command = list(req.command) if req.command is not None else list(sys.argv[1:])
    resume_command = f"unlearnctl train --resume {out}"
    manifest = None
    folder = inprogress.resumable_run_dir(out, partial, resume_command, world.is_main)
    with folder as tmp, contextlib.ExitStack() as held:
        checkpoint = None
        if tmp is not None:
            if partial is None:
                pinned = _resume_request(req, options, dataset_record.fingerprint, command, precision)
                inprogress.write_resume(tmp, "train", pinned, options.steps)
            else:
                checkpoint = latest_checkpoint(tmp / CHECKPOINTS_DIR)
        run = RunInfo(
            kind="train",
            out_dir=out,
            work_dir=tmp,
            config={"train": options.model_dump(mode="json"), "dataset": req.dataset, "device": device.type},
            total_steps=options.steps,
            description=f"train {req.dataset}" + (" (remaining set)" if forget_record else ""),
            seed=req.seed,
        )
        log_path = tmp / LOG_FILE if tmp is not None else None
        log = open(log_path, "a", encoding="utf-8") if log_path is not None else None  # noqa: SIM115
        if log is not None:
            held.callback(log.close)

        def on_step(step: int, values: dict[str, float]) -> None:
            if log is not None:
                write_log_line(log, step, values)
            if hook is not None:
                hook.step_logged(run=run, step=step, values=values)

        loop = StepLoop(
            options.steps,
            folder=(tmp if tmp is not None else out) / CHECKPOINTS_DIR,
            every=req.checkpoint_every,
            resume=checkpoint,
            resuming=resuming,
            world=world,
            resume_hint=resume_command,
        )
        record = _RunRecord(log)
        record.loop = loop
        loop.track("log", record)
        held.callback(loop.close)
        if hook is not None:
            hook.run_started(run=run)
        result = train_model(
            train_set, options, seed=req.seed, on_step=on_step, device=device,
            class_names=data.class_names, source=str(out), loop=loop, world=world, precision=precision,
            channels_last=req.channels_last, compile=req.compile,
        )  # fmt: skip
        model = result.model
        if tmp is not None:  # the main process writes the run folder
            model.default_dataset = req.dataset
            model.extra = {
                **model.extra,
                "trained": {
                    "dataset": req.dataset,
                    "dataset_fingerprint": dataset_record.fingerprint,
                    "images": len(train_set),
                    "steps": options.steps,
                    "forget": [f"{s.name}:{s.argument}" for s in forget_record.selectors] if forget_record else [],
                },
            }
            model.save(tmp / MODEL_DIR)
            # 4. a labelled grid: grid_per_class samples of every class (the tool's default sampler)
            samples = None
            if options.grid_per_class > 0:
                sample_options = SampleOptions()
                n = options.grid_per_class
                if model.conditional:
                    count = n * model.num_classes
                    labels = class_labels_for(model, count)
                    images = generate(model, labels, count, sample_options, req.seed, device)
                    save_labelled_grid(images, model.class_names, tmp / SAMPLES_DIR / GRID_FILE, nrow=n)
                else:
                    images = generate(model, None, 4 * n, sample_options, req.seed, device)
                    save_grid(images, tmp / SAMPLES_DIR / GRID_FILE, nrow=n)
                samples = SamplesRecord(
                    files={"grid": f"{SAMPLES_DIR}/{GRID_FILE}"},
                    kept_classes=list(range(model.num_classes)),
                    per_class=n,
                    seed=req.seed,
                    sampler=sample_options.model_dump(mode="json"),
                )
            # 5. the manifest, last
            if log is not None:
                log.flush()
            inprogress.discard_resume_state(tmp, keep_checkpoints=req.keep_checkpoints)
            manifest = Manifest(
                kind="train",
                command=command,
                seed=req.seed,
                seeds={"train": req.seed, "samples": req.seed},
                runner={
                    "train": options.model_dump(mode="json"),
                    "device": device.type,
                    "num_threads": torch.get_num_threads(),
                },
                dataset=dataset_record,
                forget=forget_record,
                weights=WeightsRecord(
                    model=f"scratch:{options.arch}",
                    input_sha256=input_sha,
                    output_sha256=state_sha256(model.unet),
                    output_files_sha256=folder_sha256(tmp / MODEL_DIR),
                    saved_weights="ema",
                ),
                environment=collect_environment(
                    req.device, device, precision, channels_last=req.channels_last, compile=req.compile
                ),
                started_at=started,
                finished_at=datetime.now(UTC),
                wall_time_s=round(time.perf_counter() - t0, 3),
                optimizer_steps=result.steps,
                final_losses={k: float(v) for k, v in result.last.items() if k != "elapsed"},
                samples=samples,
                distributed=DistributedRecord.of(world, req.seed, precision, "train") if world.distributed else None,
                resumed_at=record.resumed_at(),
                files=hash_run_files(tmp),
                extra={
                    **manifest_extra(run.extra),
                    "train_images": len(train_set),
                    "train_seconds": round(result.wall_s, 3),
                },
            )
            manifest.write(tmp)
            # the manifest's own sha256, so `unlearnctl verify` notices a change to the manifest itself
            record_files(tmp, [MANIFEST_FILE])
    manifest = broadcast_from_main(manifest, world)
    barrier(world)
    run.work_dir = out  # renamed into place: the folder is whole
    model.path = out / MODEL_DIR
    if hook is not None:
        hook.run_finished(run=run, result=manifest)
    return TrainRunResult(run_dir=out, manifest=manifest, model=model)


class _RunRecord:
    """In a checkpoint: the length of ``log.jsonl`` (a resumed run cuts the file back to it) and the steps
    after which the run was resumed before."""

    def __init__(self, log: IO[str] | None) -> None:
        self.log = log
        self.before: list[int] = []
        self.loop: StepLoop | None = None

    def resumed_at(self) -> list[int]:
        now = self.loop.resumed_from if self.loop is not None else 0
        return self.before + ([now] if now else [])

    def state_dict(self) -> dict[str, Any]:
        if self.log is not None:
            self.log.flush()
        return {"bytes": self.log.tell() if self.log is not None else 0, "resumed_at": self.resumed_at()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.before = [int(x) for x in state.get("resumed_at") or []]
        if self.log is not None:
            self.log.flush()
            self.log.truncate(int(state["bytes"]))
            self.log.seek(int(state["bytes"]))
