"""Checkpoints, ``--resume`` and clean stops, seen from outside: the real console script in a process of its
own, killed with ``kill -9`` at a random step or stopped by SIGTERM / SIGINT, then resumed.

Each resumed run must end with the same weights (sha256) as the run that was never stopped: on CPU every
state the remaining steps depend on (weights, optimizer, EMA, learning-rate schedule, random generators,
data-stream positions) is restored exactly, so equality holds by construction, not within a tolerance.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_bad_input import error_lines

from unlearnctl import stopping
from unlearnctl.checkpoints import StepLoop, latest_checkpoint
from unlearnctl.errors import Interrupted
from unlearnctl.inprogress import find_stale, lock

UNLEARNCTL = Path(sys.executable).parent / "unlearnctl"
STEPS = 60
FORGET = ["forget", "--model", "tiny-cond", "--classes", "1", "--grid-per-class", "1", "--set", f"steps={STEPS}"]
TRAIN = ["train", "--dataset", "tiny", "--steps", str(STEPS), "--set", "arch=tiny", "--set", "grid_per_class=1",
         "--set", "batch_size=8", "--set", "log_every=1"]  # fmt: skip
COMMANDS = {"forget": FORGET, "train": TRAIN}

pytestmark = pytest.mark.skipif(not UNLEARNCTL.exists(), reason=f"no console script at {UNLEARNCTL}")


@pytest.fixture
def env(child_env: dict[str, str]) -> dict[str, str]:
    return child_env


def run(args: list[object], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(UNLEARNCTL), *map(str, args)], env=env, capture_output=True, text=True, timeout=300)


def output_sha(run_dir: Path) -> str:
    return json.loads((run_dir / "manifest.json").read_text())["weights"]["output_sha256"]


def partials(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.partial-*"))


def start_and_wait(args: list[object], env: dict[str, str], out: Path, logged: int) -> subprocess.Popen[str]:
    """Start a run and return once its partial folder's log.jsonl has ``logged`` lines."""
    proc = subprocess.Popen([str(UNLEARNCTL), *map(str, args)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        logs = [p / "log.jsonl" for p in partials(out) if (p / "log.jsonl").exists()]
        if logs and len(logs[0].read_text().splitlines()) >= logged:
            return proc
        time.sleep(0.005)
    proc.kill()
    raise AssertionError(f"the run ended or stalled before logging {logged} steps: {proc.communicate()[1]}")


def uninterrupted(cli, command: str, tmp_path: Path) -> str:
    """The run never stopped (in-process: only the runs that are killed need a process of their own)."""
    out = tmp_path / f"{command}-whole"
    result = cli(*COMMANDS[command], "--out", out)
    assert result.exit_code == 0, result.output
    return output_sha(out)


@pytest.mark.parametrize("command", ["forget", "train"])
def test_kill_9_at_a_random_step_then_resume_gives_the_same_weights(cli, env, tmp_path, command):
    whole = uninterrupted(cli, command, tmp_path)
    at = random.randrange(8, STEPS - 15)
    out = tmp_path / f"{command}-killed"
    proc = start_and_wait([*COMMANDS[command], "--checkpoint-every", 7, "--out", out], env, out, at)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert not out.exists(), "the run completed before it was killed"
    (partial,) = partials(out)
    checkpoint = latest_checkpoint(partial / "checkpoints")
    assert checkpoint is not None and checkpoint.step % 7 == 0, f"killed after step {at}"
    # the dead run's folder is stale: listed by `clean`, and named in the note the next run prints
    listed = json.loads(cli("clean", tmp_path, "--json").stdout)["stale"]
    assert [s["run_folder"] for s in listed] == [str(out)]
    resumed = cli(command, "--resume", out)
    assert resumed.exit_code == 0, (at, resumed.output)
    assert output_sha(out) == whole, f"killed after step {at}, resumed from step {checkpoint.step}"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["resumed_at"] == [checkpoint.step]
    logged = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert logged == list(range(1, STEPS + 1)), "the log holds each step once"
    assert not (out / "checkpoints").exists() and not (out / "resume.json").exists()
    assert not partials(out)
    assert cli("verify", out).exit_code == 0


@pytest.mark.parametrize(("signum", "code", "name"), [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "")])
def test_a_stop_signal_finishes_the_step_and_keeps_a_checkpoint(cli, env, tmp_path, signum, code, name):
    """No periodic checkpoint (``--checkpoint-every 0``): the one kept is written because of the signal."""
    whole = uninterrupted(cli, "forget", tmp_path)
    out = tmp_path / "stopped"
    proc = start_and_wait([*FORGET, "--checkpoint-every", 0, "--out", out], env, out, random.randrange(3, STEPS - 15))
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    (line,) = error_lines(stderr)
    assert line.startswith(f"error: stopped by {name or 'SIGINT'} after step ")
    assert f"resume with `unlearnctl forget --resume {out}`" in line
    assert not out.exists()  # nothing that looks like a complete run
    (partial,) = partials(out)
    assert not (partial / "manifest.json").exists()
    checkpoint = latest_checkpoint(partial / "checkpoints")
    assert checkpoint is not None and f"after step {checkpoint.step} of {STEPS}" in line
    resumed = cli("forget", "--resume", out)
    assert resumed.exit_code == 0, resumed.output
    assert output_sha(out) == whole


def test_resume_takes_no_other_option_and_needs_an_interrupted_run(cli, tiny, tmp_path):
    result = cli("forget", "--resume", tmp_path / "nothing")
    assert result.exit_code == 2
    assert "no interrupted run of" in error_lines(result.stderr)[0]
    result = cli("forget", "--resume", tmp_path / "nothing", "--seed", 3)
    assert result.exit_code == 2
    assert "drop --seed" in error_lines(result.stderr)[0]
    result = cli("train", "--resume", tmp_path / "nothing")
    assert result.exit_code == 2


def test_a_diverging_run_stops_with_one_line_and_keeps_the_last_good_checkpoint(cli, tiny, tmp_path):
    """lr 1e30: the first Adam step throws the weights to ~1e30, the next forward pass overflows."""
    out = tmp_path / "nan"
    result = cli(*FORGET[:-1], "steps=6", "--set", "lr=1e30", "--checkpoint-every", 1, "--out", out)
    assert result.exit_code == 1, result.output
    (line,) = error_lines(result.stderr)
    assert "became nan" in line or "became inf" in line, line
    assert "at step" in line or "at optimizer step" in line
    assert "lower the learning rate" in line and "checkpoint of step 1 kept" in line
    assert not out.exists()


# --- in-process: the loop's own contract -------------------------------------------------------------


def _toy(seed: int) -> tuple[torch.nn.Linear, torch.optim.Adam, torch.Generator]:
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 3)
    return model, torch.optim.Adam(model.parameters(), lr=0.1), torch.Generator().manual_seed(seed)


def _train(loop: StepLoop, model, opt, gen, stop_after: int | None = None) -> None:
    for step in loop.steps():
        x = torch.randn(5, 4, generator=gen)
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == stop_after:
            stopping.handle(signal.SIGTERM, None)  # as if the signal came during this step


def test_the_loop_restores_every_tracked_state_exactly(tmp_path):
    model, opt, gen = _toy(0)
    _train(StepLoop(9), model, opt, gen)
    m2, o2, g2 = _toy(0)
    loop = StepLoop(9, folder=tmp_path / "c", every=0)
    for name, obj in (("model", m2), ("opt", o2), ("gen", g2)):
        loop.track(name, obj)
    with pytest.raises(Interrupted) as stopped:
        _train(loop, m2, o2, g2, stop_after=4)
    assert stopped.value.exit_code == 143 and "after step 4 of 9" in stopped.value.detail
    m3, o3, g3 = _toy(0)  # fresh objects, as a resumed process makes them
    resumed = StepLoop(9, resume=latest_checkpoint(tmp_path / "c"))
    for name, obj in (("model", m3), ("opt", o3), ("gen", g3)):
        resumed.track(name, obj)
    _train(resumed, m3, o3, g3)
    assert resumed.resumed_from == 4
    for a, b in zip(model.state_dict().values(), m3.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_a_second_signal_stops_at_once():
    stopping.defer(True)
    try:
        stopping.handle(signal.SIGINT, None)  # noted: the step finishes first
        assert stopping.pending() == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            stopping.handle(signal.SIGINT, None)
    finally:
        stopping.defer(False)
    assert stopping.pending() is None
    with pytest.raises(Interrupted):  # outside a step loop: at once
        stopping.handle(signal.SIGTERM, None)


def test_a_live_run_is_not_stale_and_a_dead_one_is(tmp_path):
    folder = tmp_path / ".run.partial-abc"
    folder.mkdir()
    held = lock(folder)
    assert held is not None
    assert find_stale(tmp_path) == []
    held.close()  # the process ends: the kernel releases the lock
    (stale,) = find_stale(tmp_path)
    assert stale.final == tmp_path / "run" and not stale.resumable


def test_clean_removes_stale_partial_folders_only(cli, tmp_path):
    stale = tmp_path / ".dead.partial-1"
    stale.mkdir()
    (stale / "log.jsonl").write_text("")
    live = tmp_path / ".live.partial-2"
    live.mkdir()
    held = lock(live)
    try:
        listed = cli("clean", tmp_path, "--json")
        assert [s["path"] for s in json.loads(listed.stdout)["stale"]] == [str(stale)]
        assert stale.exists()  # --json alone lists
        assert cli("clean", tmp_path, input="n\n").exit_code == 0 and stale.exists()
        removed = cli("clean", tmp_path, "--yes")
        assert removed.exit_code == 0, removed.output
        assert not stale.exists() and live.exists()
    finally:
        if held is not None:
            held.close()
    assert cli("clean", tmp_path / "nope").exit_code == 2
