"""``unlearnctl sweep``: a study spec expands to cells; the cells run through the local executor into one
study folder with an index; a sweep killed (``kill -9``) or stopped (SIGTERM) mid-study is resumed by the
same command -- finished cells untouched, the cut-short ``forget`` continued from its checkpoint -- and a
cell that fails is reported (after its retries; at once when refused as bad input) while the others finish.

The cells are real ``unlearnctl forget`` and ``eval`` processes on the tiny model of the test plugin.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_bad_input import error_lines

from unlearnctl.commands.sweep_spec import expand, read_spec
from unlearnctl.inprogress import lock

UNLEARNCTL = Path(sys.executable).parent / "unlearnctl"
pytestmark = pytest.mark.skipif(not UNLEARNCTL.exists(), reason=f"no console script at {UNLEARNCTL}")

SPEC = """
name = "tiny-study"
model = "tiny-cond"
seeds = [0, 1]
forget_sets = ["classes:1"]

[forget]
grid_per_class = 0
device = "cpu"
checkpoint_every = {checkpoint_every}

[eval]
num_samples = 2
steps = 2
device = "cpu"
metrics = ["membership"]  # the tiny model has no judge

[[methods]]
name = "finetune"
options = {{ steps = {steps}, remain_batch_size = 8 }}
"""


def write_spec(folder: Path, text: str, name: str = "study.toml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def sweep(args: list[object], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(UNLEARNCTL), "sweep", *map(str, args)], env=env, capture_output=True, text=True, timeout=timeout
    )


def index(study: Path) -> dict:
    return json.loads((study / "study.json").read_text())


# --- the spec ---------------------------------------------------------------------------------------------


GRID_SPEC = """
model = "tiny-cond"
seeds = [0, 1, 2]
forget_sets = ["classes:1", ["classes:2", "random:0.1"]]
[eval]
num_samples = 4
[retrain]
[[methods]]
name = "erasediff"
grid = { lr = [1e-4, 2e-4], lambda_rule = ["fixed", "bome", "cosine"] }
[[methods]]
name = "finetune"
"""


def test_a_spec_expands_to_every_setting_forget_set_and_seed(tmp_path):
    spec = read_spec(write_spec(tmp_path, GRID_SPEC))
    cells = expand(spec)
    methods = [c for c in cells if c.role == "method"]
    retrains = [c for c in cells if c.role == "retrain"]
    assert len(methods) == (2 * 3 + 1) * 2 * 3  # settings x forget sets x seeds
    assert len(retrains) == 2  # one per forget set, first
    assert cells[: len(retrains)] == retrains
    assert len({c.id for c in cells}) == len(cells)
    erasediff = {json.dumps(c.options, sort_keys=True) for c in methods if c.method == "erasediff"}
    assert len(erasediff) == 6
    union = [c for c in methods if c.forget_label == "classes:2 + random:0.1"]
    assert union and all(c.forget == ["classes:2", "random:0.1"] for c in union)
    # every method cell is evaluated against the retrain cell of its own forget set
    by_set = {c.forget_label: c.id for c in retrains}
    assert all(c.retrain == by_set[c.forget_label] for c in methods)
    assert all(c.eval_config["eval"]["retrain"] == f"cells/{c.retrain}" for c in methods)
    # every eval shares the study's sample cache (the base model sampled once, each retrain model once)
    assert {c.eval_config["eval"]["sample_cache"] for c in methods + retrains} == {"cache/samples"}
    # seed by seed: a study cut short has whole seeds
    assert [c.seed for c in methods] == sorted(c.seed for c in methods)
    # the ids are content-addressed: the same spec gives the same ids; another eval protocol, new ids
    assert [c.id for c in expand(read_spec(write_spec(tmp_path, GRID_SPEC, "again.toml")))] == [c.id for c in cells]
    changed = GRID_SPEC.replace("num_samples = 4", "num_samples = 5")
    assert not {c.id for c in expand(read_spec(write_spec(tmp_path, changed, "changed.toml")))} & {c.id for c in cells}


def test_an_entry_without_the_gold_standard_adds_no_retrain_cell(tmp_path):
    extra = GRID_SPEC + '[[methods]]\nname = "finetune"\nlabel = "wide"\nforget_sets = ["classes:0"]\nretrain = false\n'
    cells = expand(read_spec(write_spec(tmp_path, extra)))
    assert {c.forget_label for c in cells if c.role == "retrain"} == {"classes:1", "classes:2 + random:0.1"}
    wide = [c for c in cells if c.label == "wide"]
    assert len(wide) == 3 and all(c.retrain is None and "retrain" not in c.eval_config["eval"] for c in wide)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (GRID_SPEC.replace('name = "finetune"', 'name = "fintune"'), "unknown method 'fintune'"),
        (GRID_SPEC.replace('name = "finetune"', 'name = "finetune"\noptions = { lrr = 1 }'), "lrr"),
        (GRID_SPEC.replace("[eval]", "[eval]\nout = 'x'"), "[eval] sets out, which the sweep sets per cell"),
        (GRID_SPEC.replace("[eval]", "[eval]\nnum_sample = 3"), "did you mean 'num_samples'"),
        (GRID_SPEC.replace("seeds = [0, 1, 2]", "seeds = []"), "seeds"),
        (GRID_SPEC.replace("lr = [1e-4, 2e-4]", "lr = []"), "grid 'lr' lists no value"),
        (GRID_SPEC + "\n[[methods]]\nname = 'finetune'\n", "twice"),
    ],
)
def test_a_bad_spec_is_one_line_and_writes_nothing(cli, tiny, tmp_path, spec, message):
    out = tmp_path / "study"
    result = cli("sweep", write_spec(tmp_path, spec), "--out", out)
    assert result.exit_code == 2, result.output
    (line,) = error_lines(result.stderr)
    assert message.lower() in line.lower()
    assert not out.exists()


def test_address_is_the_executors_address_option(cli, tiny, tmp_path):
    # `--address` is `--executor-option address=...`: the local executor takes no address, and says so in one line
    spec = write_spec(tmp_path, SPEC.format(steps=2, checkpoint_every=0))
    for flags in (["--address", "auto"], ["--executor-option", "address=auto"]):
        result = cli("sweep", spec, "--out", tmp_path / "study", *flags)
        assert result.exit_code == 2, result.output
        (line,) = error_lines(result.stderr)
        assert "executor 'local': unknown option 'address'" in line
    assert not (tmp_path / "study").exists()


def test_a_folder_that_is_not_a_study_is_refused(cli, tiny, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("a user's file")
    result = cli("sweep", write_spec(tmp_path, SPEC.format(steps=2, checkpoint_every=0)), "--out", out)
    assert result.exit_code == 2
    (line,) = error_lines(result.stderr)
    assert "not a study folder" in line
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_a_second_sweep_on_a_running_study_is_refused(cli, tiny, tmp_path):
    out = tmp_path / "study"
    out.mkdir()
    handle = lock(out)  # what a running sweep holds
    try:
        result = cli("sweep", write_spec(tmp_path, SPEC.format(steps=2, checkpoint_every=0)), "--out", out)
    finally:
        if handle is not None:
            handle.close()
    assert result.exit_code == 2
    assert "another sweep is running" in error_lines(result.stderr)[0]


# --- running, resuming, failing ----------------------------------------------------------------------------


def wait_for(predicate, proc: subprocess.Popen[str], what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"the sweep ended before {what}: {proc.communicate()[1]}")
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM])
def test_a_sweep_stopped_mid_study_is_resumed_by_the_same_command(child_env, tmp_path, stop):
    """Cell 1 finishes; the sweep is stopped while cell 2's forget has checkpoints; the rerun leaves cell 1
    alone and resumes cell 2's forget from its checkpoint (``forget --resume``)."""
    spec = write_spec(tmp_path, SPEC.format(steps=150, checkpoint_every=3))
    study = tmp_path / "study"
    cells = expand(read_spec(spec))
    first, second = (study / c.run for c in cells)
    proc = subprocess.Popen(
        [str(UNLEARNCTL), "sweep", str(spec), "--out", str(study), "--jobs", "1"],
        env=child_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip

    def second_has_a_checkpoint() -> bool:
        return any(p.is_dir() for p in second.parent.glob(f".{second.name}.partial-*/checkpoints/step-*"))

    wait_for(lambda: (first / "metrics.json").exists(), proc, "the first cell finished")
    done_at = (first / "metrics.json").stat().st_mtime_ns
    wait_for(second_has_a_checkpoint, proc, "the second cell checkpointed")
    proc.send_signal(stop)
    _, stderr = proc.communicate(timeout=180)
    if stop == signal.SIGTERM:
        assert proc.returncode == 143, stderr
        (line,) = error_lines(stderr)
        assert "stopped by SIGTERM" in line and "run the same command again" in line
        record = {c["id"]: c for c in index(study)["cells"]}[cells[1].id]
        assert record["status"] == "interrupted"
    else:
        assert proc.returncode == -signal.SIGKILL
    # the cell's forget was stopped with the sweep (SIGTERM: by the sweep; kill -9: by the kernel, as the
    # sweep died) and kept its checkpoint; wait until it has let go of its folder
    deadline = time.monotonic() + 120
    while any(not _stale(p) for p in second.parent.glob(f".{second.name}.partial-*")):
        assert time.monotonic() < deadline, "the cut-short forget did not stop"
        time.sleep(0.05)
    assert not second.exists()

    result = sweep([spec, "--out", study, "--jobs", "1"], child_env)
    assert result.returncode == 0, result.stderr
    records = {c["id"]: c for c in index(study)["cells"]}
    assert [records[c.id]["status"] for c in cells] == ["done", "done"]
    assert (first / "metrics.json").stat().st_mtime_ns == done_at, "a finished cell was run again"
    log = (study / cells[1].log).read_text()
    assert f"forget --resume {cells[1].run}" in log
    manifest = json.loads((second / "manifest.json").read_text())
    assert manifest["resumed_at"], "the forget started over instead of resuming"
    assert (second / "metrics.json").exists()
    # and once more: nothing left to do
    again = sweep([spec, "--out", study], child_env)
    assert again.returncode == 0
    assert "2 done already, 0 to run" in again.stdout


def _stale(partial: Path) -> bool:
    from unlearnctl.inprogress import describe

    return not describe(partial).live


def test_a_cell_refused_as_bad_input_is_reported_at_once_and_the_others_finish(child_env, tmp_path):
    """A forget set the model cannot have (class 99) makes ``forget`` exit 2: the same input would be refused
    again, so the sweep reports the cell after one attempt (its retry is spent on failures that may pass)."""
    spec_text = SPEC.format(steps=2, checkpoint_every=0).replace(
        'forget_sets = ["classes:1"]', 'forget_sets = ["classes:1", "classes:99"]'
    )
    spec = write_spec(tmp_path, spec_text)
    study = tmp_path / "study"
    result = sweep([spec, "--out", study, "--jobs", "2", "--retries", "1"], child_env)
    assert result.returncode == 1, result.stderr
    records = index(study)["cells"]
    bad = [r for r in records if r["forget_label"] == "classes:99"]
    good = [r for r in records if r["forget_label"] == "classes:1"]
    assert len(bad) == 2 and len(good) == 2
    assert all(r["status"] == "done" for r in good)
    for record in bad:
        assert record["status"] == "failed"
        assert record["attempts"] == 1  # not retried
        assert record["failed_command"] == "forget"
        assert record["returncode"] == 2
        assert "99" in record["error"]  # the cell's own one-line error, from its log
        assert f"failed {record['id']}" in result.stdout
    assert "retry" not in result.stdout
    for record in bad:
        assert f"cell {record['id']} did not finish" in result.stderr
    # a later sweep tries the failed cells again (and only them): the user may have fixed what they refused
    again = sweep([spec, "--out", study, "--json"], child_env)
    assert again.returncode == 1
    summary = json.loads(again.stdout)
    assert sorted(summary["failed"]) == sorted(r["id"] for r in bad)
    assert all(r["attempts"] == 2 for r in index(study)["cells"] if r["forget_label"] == "classes:99")


def test_dry_run_and_print_config(cli, tiny, tmp_path):
    spec = write_spec(tmp_path, SPEC.format(steps=2, checkpoint_every=0))
    study = tmp_path / "study"
    dry = cli("sweep", spec, "--out", study, "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    assert [c["needs"] for c in json.loads(dry.stdout)["cells"]] == ["fresh", "fresh"]
    assert not study.exists()
    printed = cli("sweep", spec, "--out", study, "--print-config", "--jobs", "3")
    assert printed.exit_code == 0, printed.output
    again = write_spec(tmp_path, printed.stdout, "printed.toml")
    assert [c.id for c in expand(read_spec(again))] == [c.id for c in expand(read_spec(spec))]
    assert "jobs = 3" in printed.stdout
    assert not study.exists()


# --- the progress bar --------------------------------------------------------------------------------------


def test_the_progress_bar_counts_finished_cells_not_interrupted_or_retried_ones(tmp_path):
    """The sweep's own bookkeeping (``_Scheduler.settle`` / ``block``) reports five cells to the CLI's reporter:
    one done, one failed twice (a retry, then failed for good), one refused as bad input (exit 2: not retried),
    one blocked, one interrupted by a stop. The bar advances for the four this sweep is through with; the
    interrupted one is left for the next sweep."""
    import io
    from types import SimpleNamespace

    from rich.console import Console

    from unlearnctl.cells import CellOutcome
    from unlearnctl.cli.sweep_cmd import RichSweepReporter
    from unlearnctl.commands.sweep import _Scheduler

    out = io.StringIO()
    reporter = RichSweepReporter(Console(file=out, width=120))
    ids = ["ok", "bad", "refused", "needs-bad", "cut"]
    p = SimpleNamespace(study=tmp_path, request=SimpleNamespace(retries=1))
    sched = _Scheduler(p, {"cells": [{"id": i} for i in ids]}, reporter)  # type: ignore[arg-type]
    cell = {i: SimpleNamespace(id=i) for i in ids}
    reporter.started(len(ids), 0, len(ids), 2, "local")
    try:
        bar = reporter.progress.tasks[0]
        sched.settle(cell["ok"], CellOutcome("ok", 0, 1.0))
        assert bar.completed == 1
        sched.settle(cell["bad"], CellOutcome("bad", 1, 1.0, "forget", "out of memory"))  # retried
        assert bar.completed == 1 and sched.queue == [cell["bad"]]
        sched.queue.clear()
        sched.settle(cell["bad"], CellOutcome("bad", 1, 1.0, "forget", "out of memory"))  # failed for good
        assert bar.completed == 2 and sched.queue == []
        sched.settle(cell["refused"], CellOutcome("refused", 2, 1.0, "forget", "no such class"))  # bad input
        assert bar.completed == 3 and sched.queue == [], "a cell refused as bad input was retried"
        sched.block(cell["needs-bad"], "its retrain cell bad failed")
        assert bar.completed == 4
        sched.settle(cell["cut"], CellOutcome("cut", 143, 1.0, "forget", cancelled=True))
        assert bar.completed == 4, "an interrupted cell was counted as finished"
    finally:
        reporter.stop()
    records = {r["id"]: r for r in index(tmp_path)["cells"]}
    assert {i: r["status"] for i, r in records.items()} == {
        "ok": "done", "bad": "failed", "refused": "failed", "needs-bad": "blocked", "cut": "interrupted"
    }
    assert (records["bad"]["attempts"], records["refused"]["attempts"]) == (2, 1)
    text = out.getvalue()
    assert "retry bad" in text and "retry refused" not in text and "interrupted cut" in text


def test_a_cells_seconds_sum_every_attempt(tmp_path):
    """A cell stopped, resumed by a later sweep, failed once and retried spent every attempt's time:
    study.json's ``seconds`` is their sum (what the study's compute adds up), and ``attempts`` counts them."""
    from types import SimpleNamespace

    from unlearnctl.cells import CellOutcome
    from unlearnctl.commands.sweep import Reporter, _Scheduler

    p = SimpleNamespace(study=tmp_path, request=SimpleNamespace(retries=1))
    cell = SimpleNamespace(id="c")
    first = _Scheduler(p, {"cells": [{"id": "c"}]}, Reporter())  # type: ignore[arg-type]
    first.settle(cell, CellOutcome("c", 143, 30.31, "forget", cancelled=True))  # stopped mid-forget
    assert index(tmp_path)["cells"][0]["seconds"] == 30.3  # rounded to 0.1 s as recorded
    # the next sweep reads the index back and goes on with the same record
    second = _Scheduler(p, index(tmp_path), Reporter())  # type: ignore[arg-type]
    second.settle(cell, CellOutcome("c", 1, 12.0, "eval", "out of memory"))  # failed, retried
    second.settle(cell, CellOutcome("c", 0, 8.5))  # done
    record = index(tmp_path)["cells"][0]
    assert record["status"] == "done" and record["attempts"] == 3
    assert record["seconds"] == round(round(30.3 + 12.0, 1) + 8.5, 1)  # each record rounded, as written
