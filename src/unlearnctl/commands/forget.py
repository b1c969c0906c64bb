"""``unlearnctl forget``: validate everything, then run the method inside an atomic run folder.

:func:`forget` is two phases: :func:`prepare_forget` validates everything and loads the inputs without
writing anything (bad input = one :class:`~unlearnctl.errors.UsageError`), then :func:`run_forget`
does the work inside an atomic run folder (``manifest.json`` written last).
"""

from __future__ import annotations

import contextlib
import copy
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import inprogress
from ..checkpoints import StepLoop, latest_checkpoint
from ..components import Method
from ..contexts.unlearn import UnlearnRun
from ..data.sets import ForgetSplit, ImageSet, split_forget
from ..distributed import World, barrier, broadcast_from_main, init_world, launcher_precision, main_process_env
from ..errors import UsageError, VerificationError
from ..inputs import (
    check_model_data,
    component_config,
    dataset_options,
    load_dataset_record,
    parse_data_options,
    resolve_data_dir,
    resolve_method,
    resolve_model,
    resolve_selectors,
    select_recorded,
)
from ..lifecycle import Lifecycle
from ..manifest import (
    ComponentConfig,
    DatasetRecord,
    Manifest,
    ReplayRecord,
    SelectorConfig,
)
from ..models.folder import DiffusionModel, state_sha256
from ..provenance import with_current_provider
from ..registry import get_registry
from ..rundir import (
    CHECKPOINTS_DIR,
    LOG_FILE,
    MANIFEST_FILE,
    MODEL_DIR,
    SAMPLES_DIR,
    check_new_folder,
    default_run_dir,
    record_files,
)
from ..runtime import (
    Precision,
    check_precision,
    resolve_device,
    set_determinism,
    torch_threads,
)
from .configs import FORGET_SPEC, apply_config
from .forget_grids import MAX_GRID_PER_CLASS, grid_classes, write_grids
from .forget_record import forget_manifest, output_model

DEFAULT_MODEL = "ddpm-digits"
DEFAULT_METHOD = "erasediff"

# --- forget: requests, preparation, execution ----------------------------------------------------


@dataclass
class ForgetRequest:
    """What ``unlearnctl forget`` was asked to do (CLI values, unvalidated)."""

    model: str = DEFAULT_MODEL
    dataset: str | None = None
    #: ``--data-dir``: the folder of the dataset's files (None: ``unlearnctl.paths.data_dir()``)
    data_dir: Path | None = None
    #: ``--data-option KEY=VALUE``, repeatable (or already-parsed values): the dataset's options
    data_options: list[str] | dict[str, Any] = field(default_factory=list)
    #: ``--classes 2,5`` (shorthand for the ``classes`` selector)
    classes: str | None = None
    #: ``--forget NAME:ARGS``, repeatable (union)
    forget: list[str] = field(default_factory=list)
    method: str = DEFAULT_METHOD
    #: ``--set KEY=VALUE``: method options (over the config file's, under ``steps``)
    sets: list[str] = field(default_factory=list)
    #: ``--config FILE``: a command-level config file ([forget] and [method] tables; docs/config.md), or a
    #: flat table of method options (the original format)
    config: Path | None = None
    out: Path | None = None
    seed: int = 0
    steps: int | None = None
    device: str = "auto"
    #: fp32, bf16 or fp16; None: what ``accelerate launch --mixed_precision`` asked for, else fp32
    precision: str | None = None
    #: the UNet's weights in channels-last memory format during the steps (docs/performance.md)
    channels_last: bool = False
    #: torch.compile of the UNet's forward (docs/performance.md)
    compile: bool = False
    #: images per class in each before/after sample grid (0: no grids)
    grid_per_class: int = 8
    #: a checkpoint every this many steps (0: only when a stop signal comes; docs/resume.md)
    checkpoint_every: int = 50
    #: keep the checkpoints in the finished run folder (``checkpoints/``) instead of removing them
    keep_checkpoints: bool = False
    #: torch CPU threads; None: 1 on a CPU device (see docs/forget.md), torch's default on an accelerator
    threads: int | None = None
    #: the command line (argv without the program name) recorded in the manifest
    command: list[str] | None = None
    #: the fields set explicitly (the flags given on the command line), which the config file does not
    #: change; None: the fields whose value differs from the default
    given: list[str] | None = None
    #: ``replay``: what a manifest recorded; the inputs are taken from it and must match it
    recorded: Recorded | None = None


@dataclass
class Recorded:
    """What a run's manifest recorded, for ``replay``: inputs are re-created from these records and each
    must hash to the recorded value (a mismatch is a :class:`~unlearnctl.errors.VerificationError`)."""

    #: the method's fully resolved options (used instead of ``--config``/``--set``)
    method_options: dict[str, Any]
    #: the selectors, re-run from their resolved options (instead of ``--classes``/``--forget``)
    selectors: list[SelectorConfig]
    input_sha256: str | None
    #: where to load the model from when the recorded ``--model`` no longer resolves (a relative folder)
    model_location: str | None
    dataset_fingerprint: str
    forget_fingerprint: str
    forget_size: int
    #: the replayed run, recorded in the new manifest (``replay_of``; None: a resumed ``forget``)
    replay_of: ReplayRecord | None


@dataclass
class PreparedForget:
    """Everything validated and loaded; nothing written yet."""

    request: ForgetRequest
    registry: Any
    model: DiffusionModel
    model_preset: ComponentConfig | None
    model_path: Path | None
    data: ImageSet
    dataset: DatasetRecord
    split: ForgetSplit
    selectors: list[SelectorConfig]
    method: Method
    method_config: ComponentConfig
    device: torch.device
    precision: Precision
    out: Path
    input_sha256: str
    command: list[str]
    #: set by replay: the run replayed, and whether to compare the output sha256 with it
    replay_of: ReplayRecord | None = None
    verify: bool = False
    #: this process's place in a multi-process run
    world: World = field(default_factory=World)
    #: a resumed run: the ``.NAME.partial-*`` folder it continues (main process; True elsewhere)
    partial: Path | None = None
    resuming: bool = False
    #: one-line notes for the user (a part of the config file that does not apply)
    notes: list[str] = field(default_factory=list)


@dataclass
class ForgetResult:
    """What :func:`run_forget` returns."""

    run_dir: Path
    manifest: Manifest


#: a recorded option the method no longer has
_MISSING = object()


def prepare_forget(request: ForgetRequest, registry: Any = None) -> PreparedForget:
    """Validate the whole request and load its inputs. Writes nothing; bad input raises ``UsageError``.

    Order: the config file first (``request.config``, applied under the flags given: docs/config.md), then
    cheap checks (device, precision, method and its options, output folder), then the model, the dataset
    and the forget set, then the method's own check against them.
    """

    registry = registry if registry is not None else get_registry()
    applied = apply_config(request, FORGET_SPEC) if request.recorded is None else None
    req = applied.request if applied is not None else request
    rec = req.recorded
    # 1. device and precision; the shape of --data-dir and --data-option
    data_dir = resolve_data_dir(req.data_dir)
    parse_data_options(req.data_options)
    world, device = init_world(resolve_device(req.device))
    precision = check_precision(req.precision or launcher_precision(), device)
    if req.checkpoint_every < 0:
        raise UsageError(f"--checkpoint-every must be >= 0 (0: only when stopped), got {req.checkpoint_every}")
    if req.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {req.seed}")
    if req.steps is not None and req.steps < 1:
        raise UsageError(f"--steps must be >= 1, got {req.steps}")
    if req.threads is not None and req.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {req.threads}")
    if not 0 <= req.grid_per_class <= MAX_GRID_PER_CLASS:
        raise UsageError(
            f"--grid-per-class must be 0..{MAX_GRID_PER_CLASS} (images per class in each sample grid), "
            f"got {req.grid_per_class}"
        )
    # 2. the method and its options: defaults < --config FILE < --set < --steps (replay: as recorded)
    if rec is not None:
        method = resolve_method(registry, req.method, rec.method_options, None, None)
    else:
        config = applied.options if applied is not None else None
        method = resolve_method(registry, req.method, config, req.sets, req.steps)
    method_config = component_config(registry, "method", method)
    # 3. the output folder must not exist
    out = Path(req.out) if req.out is not None else default_run_dir(method.name, req.model)
    check_new_folder(out)
    # 4. the model, its dataset, the forget set
    model, preset, model_path = resolve_model(registry, rec.model_location if rec and rec.model_location else req.model)
    input_sha256 = state_sha256(model.unet)
    if rec is not None and rec.input_sha256 and input_sha256 != rec.input_sha256:
        raise VerificationError(
            f"input weights of '{req.model}' differ from the recorded ones (sha256 {input_sha256[:12]}... vs "
            f"{rec.input_sha256[:12]}...): the model changed since the run"
        )
    if type(method).conditional_only and not model.conditional:
        raise UsageError(f"method '{method.name}' needs a class-conditional model; '{req.model}' is unconditional")
    dataset_name = req.dataset or model.default_dataset
    if not dataset_name:
        raise UsageError(f"model '{req.model}' does not name its training data: pass --dataset NAME")
    data_options = dataset_options(dataset_name, req.data_options, registry=registry)
    data, dataset_record = load_dataset_record(registry, dataset_name, data_options, data_dir)
    if rec is not None and dataset_record.fingerprint != rec.dataset_fingerprint:
        raise VerificationError(
            f"dataset '{dataset_name}' differs from the recorded one (fingerprint "
            f"{dataset_record.fingerprint[:12]}... vs {rec.dataset_fingerprint[:12]}...)"
        )
    check_model_data(model, data, req.model)
    if rec is not None:
        forget_ids = select_recorded(registry, data, rec.selectors)
        selectors = with_current_provider(registry, "selector", rec.selectors)
    else:
        forget_ids, selectors = resolve_selectors(registry, data, req.classes, req.forget)
    split = split_forget(data, forget_ids)
    if rec is not None and split.forget_fingerprint != rec.forget_fingerprint:
        raise VerificationError(
            f"the selectors now choose a different forget set ({len(split.forget)} items, fingerprint "
            f"{split.forget_fingerprint[:12]}...) than recorded ({rec.forget_size} items, "
            f"{rec.forget_fingerprint[:12]}...)"
        )
    # 5. the method's own check against the model and the split (it may resolve 'auto' options)
    method.check(model, split)
    method_config = component_config(registry, "method", method)
    # an option added since the run was recorded is not in the record: it takes its default, which keeps the
    # recorded behaviour (the rule for new options); every recorded option must resolve as recorded
    if rec is not None and any(method_config.options.get(k, _MISSING) != v for k, v in rec.method_options.items()):
        raise VerificationError(f"method '{method.name}' resolves the recorded options differently now")
    command = list(req.command) if req.command is not None else list(sys.argv[1:])
    return PreparedForget(
        request=req,
        registry=registry,
        model=model,
        model_preset=preset,
        model_path=model_path,
        data=data,
        dataset=dataset_record,
        split=split,
        selectors=selectors,
        method=method,
        method_config=method_config,
        device=device,
        precision=precision,
        out=out,
        input_sha256=input_sha256,
        command=command,
        replay_of=rec.replay_of if rec is not None else None,
        world=world,
        notes=list(applied.notes) if applied is not None else [],
    )


def run_forget(prepared: PreparedForget) -> ForgetResult:
    """Run the prepared method and write the run folder atomically (``manifest.json`` last)."""
    threads = prepared.request.threads
    if threads is None and prepared.device.type == "cpu":
        threads = 1
    with torch_threads(threads):
        return _run_forget(prepared)


def _run_forget(prepared: PreparedForget) -> ForgetResult:
    p = prepared
    req = p.request
    world = p.world
    hook = Lifecycle.of(p.registry) if world.is_main else None
    set_determinism(p.device)
    model = p.model
    classes = grid_classes(model, p.split)
    resume_command = f"unlearnctl forget --resume {p.out}"
    manifest: Manifest | None = None
    folder = inprogress.resumable_run_dir(p.out, p.partial, resume_command, world.is_main)
    with folder as tmp, contextlib.ExitStack() as held:
        checkpoint = None
        if tmp is not None:
            if p.partial is None:
                inprogress.write_resume(tmp, "forget", resume_request(p), p.method.total_steps())
            else:
                checkpoint = latest_checkpoint(tmp / CHECKPOINTS_DIR)
        runner_config = {
            "steps": p.method.total_steps(),
            "device": p.device.type,
            "precision": p.precision,
            "channels_last": req.channels_last,
            "compile": req.compile,
            "grid_per_class": req.grid_per_class,
            "threads": torch.get_num_threads(),
        }
        loop = StepLoop(
            p.method.total_steps(),
            folder=(tmp if tmp is not None else p.out) / CHECKPOINTS_DIR,
            every=req.checkpoint_every,
            resume=checkpoint,
            resuming=p.resuming,
            world=world,
            resume_hint=resume_command,
        )
        run = UnlearnRun(
            model,
            p.split,
            seed=req.seed,
            total_steps=p.method.total_steps(),
            device=p.device,
            precision=p.precision,
            out_dir=p.out,
            work_dir=tmp,
            kind="forget" if p.replay_of is None else "replay",
            description=f"{p.method.name} {req.model}",
            config={"method": p.method_config.model_dump(), "runner": runner_config},
            hook=hook,
            loop=loop,
            world=world,
            channels_last=req.channels_last,
            compile=req.compile,
        )
        held.callback(run.close)
        samples: dict[str, str] = {}
        if tmp is not None:
            (tmp / LOG_FILE).touch()
            # 1. samples of the input model (the same seed is used after, image for image); a resumed run
            #    wrote them before it was stopped
            samples = write_grids(model, classes, req.grid_per_class, req.seed, p.device, tmp / SAMPLES_DIR, "before")
        # 2. the method
        if hook is not None:
            hook.run_started(run=run)
        model.unet.train()
        p.method.unlearn(run)
        saved = run.finish()
        model.unet.eval()
        model.unet.to("cpu")
        output_sha = state_sha256(model.unet)
        if tmp is not None:
            # 3. samples of the unlearned model, then the model folder
            samples.update(
                write_grids(model, classes, req.grid_per_class, req.seed, p.device, tmp / SAMPLES_DIR, "after")
            )
            replay_of = p.replay_of
            if replay_of is not None and p.verify:
                replay_of = replay_of.model_copy(update={"verified": output_sha == replay_of.output_sha256})
            out_model = output_model(model, p, saved, run.ema_decay)
            out_model.save(tmp / MODEL_DIR)
            inprogress.discard_resume_state(tmp, keep_checkpoints=req.keep_checkpoints)
            # 4. the manifest, last
            manifest = forget_manifest(p, run, runner_config, classes, samples, saved, output_sha, replay_of, tmp)
            manifest.write(tmp)
            # the manifest's own sha256, so `unlearnctl verify` notices a change to the manifest itself
            record_files(tmp, [MANIFEST_FILE])
    # every process returns the main process's manifest (the others wait for it: nothing is complete before)
    manifest = broadcast_from_main(manifest, world)
    barrier(world)
    run.work_dir = p.out  # renamed into place: the folder is whole
    if hook is not None:
        hook.run_finished(run=run, result=manifest)
    assert manifest is not None
    return ForgetResult(run_dir=p.out, manifest=manifest)


def resume_request(p: PreparedForget) -> dict[str, Any]:
    """The request that ``--resume`` re-creates the run from, as JSON: the original one with everything it
    resolved pinned and checked on resume as ``replay`` checks a manifest (the method's options, the
    selectors, the input weights, the dataset and the forget set)."""
    from pydantic import TypeAdapter

    req = p.request
    rec = Recorded(
        method_options=dict(p.method_config.options),
        selectors=list(p.selectors),
        input_sha256=p.input_sha256,
        model_location=str(Path(p.model_path).resolve()) if p.model_path else None,
        dataset_fingerprint=p.dataset.fingerprint,
        forget_fingerprint=p.split.forget_fingerprint,
        forget_size=len(p.split.forget),
        replay_of=p.replay_of,
    )
    pinned = copy.copy(req)
    pinned.recorded, pinned.config, pinned.sets, pinned.steps = rec, None, [], None
    pinned.command = list(p.command)
    pinned.precision = p.precision
    pinned.data_dir = Path(req.data_dir).resolve() if req.data_dir is not None else None
    return TypeAdapter(ForgetRequest).dump_python(pinned, mode="json")


def resume_forget(path: Path, registry: Any = None) -> PreparedForget:
    """Prepare the interrupted ``forget`` whose run folder (or ``.NAME.partial-*`` folder) is ``path`` to
    go on from its newest checkpoint; :func:`run_forget` then runs it. Its inputs must be unchanged."""
    from pydantic import TypeAdapter

    found = inprogress.resolve_resume(Path(path), "forget", check_live=main_process_env())
    request = TypeAdapter(ForgetRequest).validate_python(inprogress.read_resume(found.path)["request"])
    request.out = found.final
    prepared = prepare_forget(request, registry)
    prepared.partial, prepared.resuming = found.path, True
    return prepared


def forget(request: ForgetRequest, registry: Any = None) -> ForgetResult:
    """``unlearnctl forget``: validate everything, then run and write the run folder."""
    return run_forget(prepare_forget(request, registry))
