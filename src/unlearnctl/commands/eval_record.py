"""What ``unlearnctl eval`` records: the models it evaluates, the ``metrics.json`` payload and the grids.

The file format is described in ``docs/eval.md``; :mod:`unlearnctl.results` reads it back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import torch

from ..contexts.evaluation import EvalContext
from ..contexts.study import EvalShared
from ..errors import UsageError
from ..fidelity import rescoring_call, save_png_folder, torch_fidelity_cli
from ..grids import side_by_side_png
from ..inputs import ResolvedModel, open_model
from ..judge.classifier import load_judge
from ..manifest import Manifest
from ..models.folder import DiffusionModel, state_sha256
from ..results import METRICS_SCHEMA_VERSION

#: where a metric's torch-fidelity call is kept (``ctx.cache``; ``{metric}``, ``{role}``): the keyword
#: arguments of ``torch_fidelity.calculate_metrics`` plus ``judge_folder`` (builtin ``fidelity`` sets it)
TORCH_FIDELITY_CALL = "torch-fidelity:call:{metric}:{role}"

#: images per class shown in the before/after grids
GRID_PER_CLASS = 8


@dataclass
class EvalModel:
    """A model under evaluation (the evaluated one or its reference): what its spec resolved to, and the
    identity of its weights."""

    resolved: ResolvedModel
    #: "ema", "raw" or "unknown": the run's ``saved_weights``, else what the model folder says
    weights: str
    #: ``state_sha256`` of the UNet weights
    sha256: str

    @property
    def spec(self) -> str:
        return self.resolved.spec

    @property
    def model(self) -> DiffusionModel:
        return self.resolved.model

    @property
    def manifest(self) -> Manifest | None:
        """The run's manifest when the spec is a run folder, else None."""
        return self.resolved.manifest


def open_eval_model(spec: str, registry: Any) -> EvalModel:
    """Load what ``spec`` names (:func:`unlearnctl.inputs.open_model`) and identify its weights."""
    resolved = open_model(spec, registry)
    weights: str  # the manifest's "ema"/"raw", or "unknown" for a folder that does not say
    if resolved.manifest is not None:
        weights = resolved.manifest.weights.saved_weights
    else:
        value = resolved.model.extra.get("weights")
        weights = value if value in ("ema", "raw") else "unknown"
    return EvalModel(resolved, weights, state_sha256(resolved.model.unet))


class PreparedRecord(Protocol):
    """What :func:`metrics_payload` reads of a prepared evaluation (``commands.eval.PreparedEval``)."""

    request: Any
    subject: EvalModel
    reference: EvalModel | None
    reference_source: str | None
    metrics: list[Any]
    shared: EvalShared
    notes: list[str]
    #: ``eval --retrain``: the model retrained without the forget set, or None
    retrain: EvalModel | None


def describe_model(x: EvalModel) -> dict[str, Any]:
    """``metrics.json``'s ``model`` (and ``reference``) entry: spec, kind, folder, weights, sha256."""
    folder = x.resolved.folder
    out: dict[str, Any] = {
        "spec": x.spec,
        "kind": "run" if x.resolved.kind == "run" else "model",
        "path": str(folder) if folder else (str(x.model.path) if x.model.path else None),
        "weights": x.weights,
        "sha256": x.sha256,
        "conditional": x.model.conditional,
        "num_classes": x.model.num_classes,
    }
    if x.manifest is not None:
        out["method"] = x.manifest.method.name if x.manifest.method else None
    return out


def metrics_payload(
    p: PreparedRecord,
    contexts: dict[str, EvalContext],
    results: dict[str, Any],
    delta: dict[str, float],
    wall: float,
) -> dict[str, Any]:
    """The ``metrics.json`` payload (without ``metric_seconds`` and ``files``, which ``run_eval`` adds).

    ``sampling`` has an entry per role of ``contexts`` and, with ``--retrain``, ``retrain`` (its samples,
    drawn once for both roles) when a metric sampled it."""
    from .. import __version__

    reference = None
    if p.reference is not None:
        reference = {**describe_model(p.reference), "source": p.reference_source}
        if p.subject.manifest is not None:
            reference["matches_manifest_input"] = p.subject.manifest.weights.input_sha256 in (None, p.reference.sha256)
    return {
        "schema_version": METRICS_SCHEMA_VERSION,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "unlearnctl_version": __version__,
        "command": list(p.request.command),
        "model": describe_model(p.subject),
        "reference": reference,
        "retrain": retrain_record(p),
        "protocol": protocol_record(p.shared, p.metrics),
        "sampling": sampling_record(contexts),
        "results": results,
        "delta": delta,
        "notes": list(p.notes),
        "wall_time_s": round(wall, 3),
    }


def retrain_record(p: PreparedRecord) -> dict[str, Any] | None:
    """``metrics.json``'s ``retrain`` entry (``eval --retrain``; None without): the gold-standard model as
    :func:`describe_model` describes it, where it came from, and the classes its run forgot (its manifest's
    forget set; None for a model that is not a run folder)."""
    if p.retrain is None:
        return None
    manifest = p.retrain.manifest
    forgot = manifest.forget if manifest is not None else None
    return {
        **describe_model(p.retrain),
        "source": "--retrain",
        "forget_classes": list(forgot.forget_classes) if forgot is not None else None,
    }


def sampling_record(contexts: dict[str, EvalContext]) -> dict[str, Any]:
    """What sampling cost, by role; the retrain model's samples (shared by the roles) under ``retrain``."""
    out = {role: ctx.cost.as_dict() for role, ctx in contexts.items()}
    retrain = next((ctx.retrain for ctx in contexts.values() if ctx.retrain is not None), None)
    if retrain is not None and retrain.cost.images:
        out["retrain"] = retrain.cost.as_dict()
    return out


def protocol_record(shared: EvalShared, metrics: list[Any]) -> dict[str, Any]:
    """``metrics.json``'s ``protocol``: the sampling protocol, device, classes, judge, data set, metric
    options, seeds, and what the metrics recorded (``EvalContext.record``)."""
    protocol = shared.protocol.describe()
    protocol.update(
        {
            **setting_record(shared),
            "metrics": {m.name: m.options.model_dump(mode="json") for m in metrics},
            "seeds": {"seed": shared.protocol.seed, "streams": "runner.stream_seed(seed, 'eval-<stream>')"},
            **shared.records,
        }
    )
    return protocol


def setting_record(shared: EvalShared) -> dict[str, Any]:
    """What every model of an ``eval`` or ``audit`` shared besides the sampling protocol: the device, the CPU
    threads, the forgotten and kept classes, the judge and the data set."""
    return {
        "device": shared.device.type,
        "cpu_threads": torch.get_num_threads(),
        "forget_classes": list(shared.forget_classes),
        "kept_classes": list(shared.kept_classes),
        "judge": judge_record(shared),
        "dataset": dataset_record(shared),
    }


def dataset_record(shared: EvalShared) -> dict[str, Any] | None:
    """The evaluation data set: name, options, folder, data warnings, and each loaded split's identity."""
    if shared.dataset_name is None:
        return None
    out: dict[str, Any] = {
        "name": shared.dataset_name,
        "options": shared.dataset_options,
        "data_dir": str(shared.data_dir) if shared.data_dir else None,
        "warnings": list(shared.data_warnings),
    }
    for split, data in sorted(shared.data.items()):
        out[split] = {"size": len(data), "fingerprint": data.fingerprint(), "version": data.version}
    return out


def judge_record(shared: EvalShared) -> dict[str, Any] | None:
    """The judge: where it came from, the sha256 of its weights, its test accuracy and training data."""
    if shared.judge is None:
        return None
    info = getattr(shared.judge, "info", {}) or {}
    return {
        "path": shared.judge_source,
        "sha256": state_sha256(shared.judge),
        "test_accuracy": info.get("test_accuracy"),
        "dataset": info.get("dataset"),
    }


def write_eval_grids(contexts: dict[str, EvalContext], shared: EvalShared, folder: Path) -> dict[str, Path]:
    """``samples/eval-forgotten.png`` and ``eval-kept.png`` (reference left, model right; same noise).

    Rows are classes, columns the first :data:`GRID_PER_CLASS` evaluation samples of each class.
    Unconditional models get ``eval-unconditional.png``. Only samples already generated are shown.
    """
    order = [r for r in ("reference", "model") if r in contexts]
    titles = ["base (reference)", "unlearned"] if len(order) == 2 else ["model"]
    files: dict[str, Path] = {}
    model = contexts["model"]
    if not model.conditional:
        if None in model.sampled():
            panels = [contexts[r].sampled()[None][: GRID_PER_CLASS * GRID_PER_CLASS] for r in order]
            path = folder / "eval-unconditional.png"
            side_by_side_png(panels, GRID_PER_CLASS, path, titles)
            files["eval-unconditional"] = path
        return files
    for group, classes in (("forgotten", shared.forget_classes), ("kept", shared.kept_classes)):
        present = [c for c in classes if all(c in contexts[r].sampled() for r in order)]
        if not present:
            continue
        panels = [torch.cat([contexts[r].sampled()[c][:GRID_PER_CLASS] for c in present]) for r in order]
        n = min(GRID_PER_CLASS, len(contexts["model"].sampled()[present[0]]))
        path = folder / f"eval-{group}.png"
        side_by_side_png(
            panels, n, path, [f"{t}: {group} classes {list(present)}" if k == 0 else t for k, t in enumerate(titles)]
        )
        files[f"eval-{group}"] = path
    return files


def write_fidelity_inputs(
    contexts: dict[str, EvalContext], metrics: list[Any], base: Path, folder: Path
) -> tuple[dict[str, Any], list[Path]]:
    """``eval --save-samples``: for each metric that computed through torch-fidelity (its call kept under
    :data:`TORCH_FIDELITY_CALL`), the exact uint8 images of both sides as PNG files --
    ``folder/eval-<metric>/<role>/`` (generated) and ``.../real/`` (the real set, the same for both
    models) -- and how torch-fidelity re-scores them (:func:`unlearnctl.fidelity.rescoring_call`, paths
    relative to ``base``, the folder of metrics.json). Returns metrics.json's ``saved_samples`` and the
    files written."""
    record: dict[str, Any] = {}
    files: list[Path] = []
    for metric in metrics:
        for role, ctx in contexts.items():
            call = ctx.cache.get(TORCH_FIDELITY_CALL.format(metric=metric.name, role=role))
            if call is None:  # not computed through torch-fidelity, or skipped
                continue
            root = folder / f"eval-{metric.name}"
            gen_dir, real_dir = root / role, root / "real"
            files += save_png_folder(call["input1"].images, gen_dir)
            real = call["input2"].images
            if real_dir.is_dir():  # written for the other model: the same images, or an error
                saved = sorted(real_dir.glob("*.png"))
                if len(saved) != len(real):
                    raise UsageError(f"metric '{metric.name}': the two models were compared with different real sets")
            else:
                files += save_png_folder(real, real_dir)
            judge = call.get("judge_folder")
            judge = str(Path(judge).expanduser().resolve()) if judge else None
            rel1, rel2 = str(gen_dir.relative_to(base)), str(real_dir.relative_to(base))
            record.setdefault(metric.name, {})[role] = {
                "input1": {"folder": rel1, "count": len(call["input1"])},
                "input2": {"folder": rel2, "count": len(real)},
                "torch_fidelity": rescoring_call(call, rel1, rel2, judge),
            }
    return record, files


def rescore_main() -> None:
    """``python -m unlearnctl.commands.eval_record ARGS``: torch-fidelity's own command line with the
    ``unlearnctl-judge`` extractor registered, loading the judge from ``--feature-extractor-weights-path``
    (a judge folder) -- what metrics.json's ``saved_samples.*.torch_fidelity.command`` runs (docs/eval.md)."""
    torch_fidelity_cli(judge_loader=load_judge)


if __name__ == "__main__":
    rescore_main()
