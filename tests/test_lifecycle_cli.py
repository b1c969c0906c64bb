"""The lifecycle hooks through the CLI: every command fires them, with stable paths; a failing listener
cannot break a run; the recorded command line is rebuilt the same way for every command."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from unlearnctl.rundir import LOG_FILE, MANIFEST_FILE, METRICS_FILE

FORGET_FAST = ["--set", "steps=2", "--set", "remain_batch_size=8", "--set", "forget_batch_size=8"]

#: records what each hook saw: the run's identity, kind, paths (and whether they exist), steps
TRACKER = """
import unlearnctl
CALLS = []

def _seen(hook, run, **more):
    CALLS.append(dict(
        hook=hook, run=id(run), is_runinfo=isinstance(run, unlearnctl.RunInfo), kind=run.kind,
        out_dir=None if run.out_dir is None else str(run.out_dir),
        out_exists=run.out_dir is not None and run.out_dir.exists(),
        work_dir=None if run.work_dir is None else str(run.work_dir),
        work_exists=run.work_dir is not None and run.work_dir.exists(),
        total_steps=run.total_steps, **more,
    ))

@unlearnctl.hookimpl
def run_started(run):
    _seen("run_started", run)

@unlearnctl.hookimpl
def step_logged(run, step, values):
    _seen("step_logged", run, step=step)

@unlearnctl.hookimpl
def run_finished(run, result):
    _seen("run_finished", run, result=type(result).__name__)
"""

#: a tracker that breaks in two hooks
BROKEN_TRACKER = """
import unlearnctl

@unlearnctl.hookimpl
def step_logged(run, step, values):
    values["no such key"]

@unlearnctl.hookimpl
def run_finished(run, result):
    raise RuntimeError("upload failed")
"""


@pytest.fixture
def tracker(fake_plugins, tiny) -> list[dict]:
    """The tiny plugin and a tracker plugin; returns the tracker's record of hook calls."""
    return importlib.import_module(fake_plugins.add("tracker", TRACKER)).CALLS


def forget_run(cli, out: Path, *extra: object) -> None:
    result = cli("forget", "--model", "tiny-cond", "--classes", "1", "--out", out, "--grid-per-class", 0, *FORGET_FAST)
    assert result.exit_code == 0, result.output


def train_judge(cli, out: Path) -> None:
    assert cli("train-judge", "--dataset", "tiny", "--out", out, "--epochs", 1).exit_code == 0


def check_one_run(calls: list[dict], kind: str, out: Path, total_steps: int | None, result: str) -> None:
    """One run: run_started, then steps 1..total_steps, then run_finished; the same object and the same
    out_dir throughout; out_dir complete at run_finished, where work_dir is out_dir."""
    assert [c["hook"] for c in calls] == [
        "run_started",
        *["step_logged"] * (total_steps or 0),
        "run_finished",
    ]
    assert {c["run"] for c in calls} == {calls[0]["run"]} and all(c["is_runinfo"] for c in calls)
    assert {c["kind"] for c in calls} == {kind}
    assert {c["out_dir"] for c in calls} == {str(out)}  # stable in all three hooks
    assert [c["step"] for c in calls[1:-1]] == list(range(1, (total_steps or 0) + 1))
    assert calls[-1]["total_steps"] == total_steps
    finished = calls[-1]
    assert finished["out_exists"] and finished["work_dir"] == str(out) and finished["result"] == result


@pytest.mark.parametrize("kind", ["forget", "replay"])
def test_forget_and_replay_write_in_work_dir_and_finish_in_out_dir(cli, tracker, tmp_path, kind):
    run = tmp_path / "run"
    forget_run(cli, run)
    out = run
    if kind == "replay":
        tracker.clear()
        out = tmp_path / "again"
        assert cli("replay", run, "--out", out).exit_code == 0
    check_one_run(tracker, kind, out, 2, "Manifest")
    started = tracker[0]
    # the run folder appears only when whole; meanwhile the files grow in a hidden sibling
    assert not started["out_exists"] and started["work_exists"]
    assert Path(started["work_dir"]).parent == out.parent and Path(started["work_dir"]).name.startswith(".")
    assert all(c["work_dir"] == started["work_dir"] for c in tracker[:-1])
    assert not Path(started["work_dir"]).exists()  # renamed into place


def test_train_fires_the_hooks(cli, tracker, tmp_path):
    out = tmp_path / "train"
    sets = ["--set", "arch=tiny", "--set", "grid_per_class=0", "--set", "batch_size=8", "--set", "log_every=1"]
    assert cli("train", "--dataset", "tiny", "--out", out, "--steps", 2, *sets).exit_code == 0
    check_one_run(tracker, "train", out, 2, "Manifest")
    assert not tracker[0]["out_exists"] and tracker[0]["work_exists"]


def test_train_judge_fires_the_hooks(cli, tracker, tmp_path):
    out = tmp_path / "judge"
    train_judge(cli, out)
    # 24 tiny images, batch 64: one step per epoch; total_steps is known from the first step on
    check_one_run(tracker, "train-judge", out, 1, "Judge")
    assert tracker[0]["total_steps"] is None and tracker[1]["total_steps"] == 1
    assert not tracker[0]["out_exists"] and tracker[0]["work_dir"] is None  # nothing written while training


def test_eval_fires_the_hooks(cli, tracker, tmp_path):
    run, judge = tmp_path / "run", tmp_path / "judge"
    forget_run(cli, run)
    train_judge(cli, judge)
    tracker.clear()
    result = cli("eval", run, "-n", 2, "--steps", 1, "--metrics", "forgetting,kept", "--judge", judge)
    assert result.exit_code == 0, result.output
    # 2 metrics x (unlearned model, reference): 4 steps; eval writes into the run folder itself
    check_one_run(tracker, "eval", run, 4, "EvalResult")
    assert tracker[0]["out_exists"] and tracker[0]["work_dir"] == str(run)


def test_sample_fires_started_and_finished(cli, tracker, tmp_path):
    out = tmp_path / "samples"
    assert cli("sample", "--model", "tiny-cond", "-n", 2, "--steps", 1, "--out", out).exit_code == 0
    check_one_run(tracker, "sample", out, None, "SampleResult")


@pytest.mark.parametrize("debug", [False, True])
def test_a_failing_listener_does_not_break_the_run(cli, fake_plugins, tiny, tmp_path, debug):
    module = fake_plugins.add("broken-tracker", BROKEN_TRACKER)
    out = tmp_path / "run"
    result = cli(
        "forget", "--model", "tiny-cond", "--classes", "1", "--out", out, "--grid-per-class", 0, *FORGET_FAST,
        env={"UNLEARNCTL_DEBUG": "1"} if debug else None,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    # the run folder is whole: manifest last, both logged steps
    assert (out / MANIFEST_FILE).is_file() and (out / "model" / "config.json").is_file()
    assert len((out / LOG_FILE).read_text().splitlines()) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".run.partial")]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: plugin 'broken-tracker'")]
    assert len(warnings) == 2  # one per hook, although step_logged failed at both steps
    step, finished = warnings
    assert step.startswith("warning: plugin 'broken-tracker' failed in step_logged: KeyError: 'no such key' (at ")
    assert f"{fake_plugins.site / module}.py:" in step
    assert finished.startswith("warning: plugin 'broken-tracker' failed in run_finished: RuntimeError: upload failed")
    assert "UNLEARNCTL_DISABLE_PLUGINS=broken-tracker" in step
    assert ("Traceback" in result.stderr) is debug  # the traceback only under UNLEARNCTL_DEBUG=1
    assert "forget: done" in result.stdout


def test_the_command_line_is_recorded_the_same_way_for_every_command(cli, tiny, tmp_path):
    run, judge = tmp_path / "run", tmp_path / "judge"
    # short flags are recorded by their long name; only what was given, in the command's order
    result = cli("forget", "-m", "tiny-cond", "-c", "1", "-o", run, "--grid-per-class", 0, *FORGET_FAST)
    assert result.exit_code == 0, result.output
    manifest = json.loads((run / MANIFEST_FILE).read_text())
    assert manifest["command"] == [
        "forget", "--model", "tiny-cond", "--classes", "1",
        "--set", "steps=2", "--set", "remain_batch_size=8", "--set", "forget_batch_size=8",
        "--out", str(run), "--grid-per-class", "0",
    ]  # fmt: skip
    train_judge(cli, judge)
    assert cli("eval", run, "-n", 2, "--steps", 1, "--metrics", "kept", "--judge", judge, "--json").exit_code == 0
    metrics = json.loads((run / METRICS_FILE).read_text())
    assert metrics["command"] == [
        "eval",
        str(run),
        "--num-samples",
        "2",
        "--metrics",
        "kept",
        "--judge",
        str(judge),
        "--steps",
        "1",
        "--json",
    ]
    again = tmp_path / "again"
    assert cli("replay", run / MANIFEST_FILE, "--verify", "-o", again).exit_code == 0
    replayed = json.loads((again / MANIFEST_FILE).read_text())
    assert replayed["command"] == ["replay", str(run / MANIFEST_FILE), "--verify", "--out", str(again)]
