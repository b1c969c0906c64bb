"""The typed plugin contract: hooks declared on the base classes, called directly by the commands;
Metric.default; run.extra into the manifest; the public test harness (unlearnctl.testing.harness)."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import torch

import unlearnctl
from unlearnctl.commands.eval import EvalRequest, default_metrics, prepare_eval
from unlearnctl.commands.forget import ForgetRequest, forget
from unlearnctl.components import Attack, Dataset, Method, Metric
from unlearnctl.manifest import read_manifest
from unlearnctl.registry import get_registry
from unlearnctl.testing.harness import RecordingHook, make_eval_context, make_unlearn_run, run_method, tiny_split
from unlearnctl.testing.tiny import tiny_model

# --- the hooks a component may implement are declared, documented, and no-ops by default -----------------

OPTIONAL_HOOKS = [
    (Method, "check"),
    (Method, "total_steps"),
    (Method, "conditional_only"),
    (Metric, "prepare"),
    (Metric, "needs_samples"),
    (Metric, "default"),
    (Dataset, "version"),
    (Attack, "prepare"),
    (Attack, "default"),
    (Attack, "conditional_only"),
    (Attack, "needs_judge"),
    (Attack, "headline"),
]


@pytest.mark.parametrize(("base", "name"), OPTIONAL_HOOKS, ids=lambda x: getattr(x, "__name__", x))
def test_optional_hooks_are_declared_on_the_base_class(base: type, name: str) -> None:
    assert name in vars(base)
    member = vars(base)[name]
    if callable(member):
        assert (inspect.getdoc(member) or "").strip(), f"{base.__name__}.{name} needs a docstring"
    else:  # a class attribute: documented by the `#:` comment above it in components.py
        source = inspect.getsource(base)
        line = next(i for i, text in enumerate(source.splitlines()) if text.strip().startswith(f"{name}:"))
        assert source.splitlines()[line - 1].strip().startswith("#:")


def test_the_contexts_are_typed_in_the_signatures() -> None:
    assert inspect.signature(Method.unlearn).parameters["run"].annotation == "UnlearnRun"
    assert inspect.signature(Metric.compute).parameters["ctx"].annotation == "EvalContext"
    assert inspect.signature(Metric.prepare).parameters["ctx"].annotation == "EvalContext"
    assert inspect.signature(Method.check).parameters["split"].annotation == "ForgetSplit"
    assert inspect.signature(Attack.run).parameters["ctx"].annotation == "AuditContext"
    assert inspect.signature(Attack.prepare).parameters["ctx"].annotation == "AuditContext"


class Plain(Method):
    """No steps option."""

    name = "plain"

    def unlearn(self, run: unlearnctl.UnlearnRun) -> None:
        pass


def test_defaults_do_nothing_or_read_the_steps_option() -> None:
    model, split = tiny_model(), tiny_split()
    assert Plain().check(model, split) is None and Plain().total_steps() is None
    erasediff = get_registry().create("method", "erasediff", {"steps": 7})
    assert erasediff.total_steps() == 7
    assert Metric.needs_samples == ("forget", "kept") and Metric.default is False
    assert Metric().prepare(make_eval_context(model, judge=None)) is None
    defaults = {i.name: i.cls.default for i in get_registry().all("metric")}
    assert defaults == {
        "forgetting": True, "kept": True, "fidelity": True, "membership": True, "retrain-distance": False
    }  # fmt: skip


ROUNDS_PLUGIN = '''
import unlearnctl
from pydantic import Field


class Rounds(unlearnctl.Method):
    """Counts its rounds; refuses to forget class 2; records a value in the manifest."""

    name = "rounds"

    class Options(unlearnctl.Options):
        rounds: int = Field(3, ge=1, description="rounds (there is no steps option)")
        note: object = Field("ok", description="what to record in run.extra")

    def check(self, model, split):
        if 2 in split.forget_classes:
            raise unlearnctl.UsageError("method 'rounds' cannot forget class 2")

    def total_steps(self):
        return self.options.rounds

    def unlearn(self, run):
        for step in run.steps():
            run.log(step, {"loss": 1.0 / step})
        run.extra["rounds"] = {"note": self.options.note, "steps": run.total_steps}


class Mean(unlearnctl.Metric):
    """Mean pixel of the kept classes' samples."""

    name = "mean-pixel"
    default = True
    needs_samples = ("kept",)

    def compute(self, ctx):
        return {"mean": float(sum(ctx.samples(c).mean() for c in ctx.kept_classes))}


class Quiet(Mean):
    """Not a default metric."""

    name = "quiet"
    default = False


@unlearnctl.hookimpl
def register_methods(register):
    register(Rounds)


@unlearnctl.hookimpl
def register_metrics(register):
    register(Mean)
    register(Quiet)


@unlearnctl.hookimpl
def run_started(run):
    run.extra["tracker"] = {"id": "abc", "kind": run.kind}


@unlearnctl.hookimpl
def step_logged(run, step, values):
    run.extra["steps_seen"] = run.extra.get("steps_seen", 0) + 1
'''


@pytest.fixture
def rounds(fake_plugins, tiny) -> None:
    fake_plugins.add("acme", ROUNDS_PLUGIN, version="2.1.0")


def _forget(out: Path, method: str = "rounds", classes: str = "1", sets: list[str] | None = None) -> Path:
    request = ForgetRequest(
        model="tiny-cond", classes=classes, method=method, out=out, grid_per_class=0, sets=sets or [], command=["x"]
    )
    return forget(request).run_dir


def test_the_runner_takes_its_steps_from_total_steps_and_extra_reaches_the_manifest(rounds, tmp_path: Path) -> None:
    run_dir = _forget(tmp_path / "run", sets=["rounds=4"])
    manifest = read_manifest(run_dir)
    assert manifest.runner["steps"] == 4
    assert len((run_dir / "log.jsonl").read_text().splitlines()) == 4
    assert manifest.extra == {
        "tracker": {"id": "abc", "kind": "forget"},
        "steps_seen": 4,
        "rounds": {"note": "ok", "steps": 4},
    }
    assert json.loads((run_dir / "manifest.json").read_text())["extra"]["rounds"]["steps"] == 4


def test_method_check_refuses_before_anything_is_written(rounds, tmp_path: Path) -> None:
    with pytest.raises(unlearnctl.UsageError, match="cannot forget class 2"):
        _forget(tmp_path / "run", classes="2")
    assert not (tmp_path / "run").exists()


def test_an_extra_value_json_cannot_hold_is_one_line_naming_the_key(rounds, tmp_path: Path, monkeypatch) -> None:
    from unlearnctl.errors import UnlearnError

    cls = get_registry().get("method", "rounds").cls
    original = cls.unlearn

    def unlearn(self, run):
        original(self, run)
        run.extra["rounds"] = {1, 2}  # a set: not JSON

    monkeypatch.setattr(cls, "unlearn", unlearn)
    with pytest.raises(UnlearnError, match=r"^run.extra\['rounds'\] cannot be written into the manifest") as err:
        _forget(tmp_path / "run")
    assert "\n" not in str(err.value) and not (tmp_path / "run").exists()


def test_ema_decay_of_the_saved_weights_is_the_runs(tiny, tmp_path: Path) -> None:
    run_dir = _forget(
        tmp_path / "run", method="erasediff", sets=["steps=1", "save_ema=true", "ema_decay=0.9", "remain_batch_size=4"]
    )
    saved = json.loads((run_dir / "model" / "unlearnctl.json").read_text())
    assert read_manifest(run_dir).weights.saved_weights == "ema"
    assert saved["weights"] == "ema" and saved["ema_decay"] == 0.9


def test_a_plugin_metric_marked_default_is_computed_without_metrics(rounds) -> None:
    registry = get_registry()
    assert default_metrics(registry) == ["forgetting", "kept", "fidelity", "membership", "mean-pixel"]
    prepared = prepare_eval(EvalRequest(target="tiny-cond", classes="1"), registry)
    assert [m.name for m in prepared.metrics] == default_metrics(registry)
    chosen = prepare_eval(EvalRequest(target="tiny-cond", classes="1", metrics=["quiet"]), registry)
    assert [m.name for m in chosen.metrics] == ["quiet"]


def test_train_listeners_fill_the_manifest_extra(rounds, tmp_path: Path) -> None:
    from unlearnctl.commands.train import TrainRequest, run_train

    request = TrainRequest(
        dataset="tiny", out=tmp_path / "t", steps=2, sets=["arch=tiny", "grid_per_class=0"], device="cpu", command=[]
    )
    extra = run_train(request).manifest.extra
    assert extra["tracker"] == {"id": "abc", "kind": "train"} and extra["steps_seen"] >= 1
    assert extra["train_images"] == 24  # the command's own keys stay


# --- the harness ------------------------------------------------------------------------------------------------


def test_run_method_runs_a_method_as_forget_does() -> None:
    from unlearnctl.models.folder import state_sha256

    erasediff = get_registry().create("method", "erasediff", {"steps": 2, "remain_batch_size": 4})
    hook = RecordingHook()
    model = tiny_model()
    before = state_sha256(model.unet)
    out = run_method(erasediff, model, seed=3, hook=hook)
    assert out is model and not out.unet.training and next(out.unet.parameters()).device.type == "cpu"
    assert [step for step, _ in hook.steps] == [1, 2] and len(hook.started) == 1
    again = run_method(
        get_registry().create("method", "erasediff", {"steps": 2, "remain_batch_size": 4}), tiny_model(), seed=3
    )
    # exact: same seed, same ops on one thread
    assert state_sha256(again.unet) == state_sha256(out.unet) != before


def test_make_unlearn_run_is_the_run_forget_gives() -> None:
    method = Plain()
    run = make_unlearn_run(method=get_registry().create("method", "finetune", {"steps": 5}))
    assert isinstance(run, unlearnctl.UnlearnRun) and run.total_steps == 5 and run.extra == {}
    assert run.split.forget_classes == (1,) and len(run.split.forget) == 8
    assert run_method(method, run=run) is run.model


def test_make_eval_context_serves_a_metric_for_both_models() -> None:
    ctx = make_eval_context(tiny_model(seed=0), samples_per_class=3, judge=None)
    reference = ctx.sibling(tiny_model(seed=1))
    assert isinstance(ctx, unlearnctl.EvalContext) and ctx.forget_classes == (1,) and ctx.kept_classes == (0, 2)
    assert ctx.samples(0).shape == (3, 1, 8, 8) and reference.samples(0).shape == (3, 1, 8, 8)
    assert not torch.equal(ctx.samples(0), reference.samples(0))
    assert len(ctx.forget_ids) == 8 and ctx.real("test", [1]).shape == (4, 1, 8, 8)
    uncond = make_eval_context(tiny_model(conditional=False), samples_per_class=2)
    assert uncond.kept_classes == (0, 2) and uncond.samples(None).shape == (6, 1, 8, 8)


def test_show_tells_whether_a_metric_is_a_default(cli, rounds) -> None:
    shown = {name: json.loads(cli("show", "metric", name, "--json").stdout)["default"] for name in ("kept", "quiet")}
    assert shown == {"kept": True, "quiet": False}
