"""Training-like commands across processes (docs/scaling.md): two gloo processes on this CPU, started by
``torchrun`` and by ``accelerate launch`` as two "machines" on one host.

(a) one optimizer step with the global batch split across 2 processes equals the 1-process step within a
    tolerance derived below; (c) a 2-process ``forget`` replays bit-identically with 2 processes, and
    replaying it with another number of processes is refused under ``--verify``.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

BIN = Path(sys.executable).parent
TESTS = Path(__file__).resolve().parent
TORCHRUN = BIN / "torchrun"
ACCELERATE = BIN / "accelerate"
TINY_FORGET = ["forget", "--model", "tiny-cond", "--classes", "1", "--steps", "4", "--grid-per-class", "1",
               "--device", "cpu", "--set", "remain_batch_size=8", "--set", "forget_batch_size=4"]  # fmt: skip

pytestmark = pytest.mark.skipif(not TORCHRUN.exists(), reason=f"no torchrun at {TORCHRUN}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def env(child_env: dict[str, str]) -> dict[str, str]:
    return child_env


def torchrun(n: int, args: list[object], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    cmd = [str(TORCHRUN), "--nproc_per_node", str(n), "--master_addr", "127.0.0.1", "--master_port", str(free_port())]
    return subprocess.run([*cmd, *map(str, args)], env=env, capture_output=True, text=True, timeout=600)


def test_one_step_split_across_two_processes_equals_the_one_process_step(env, tmp_path):
    """Tolerance. The two runs use the same global batch, timesteps and noise (tests/distributed_step.py),
    so they differ only in the order of the float64 additions that reduce each gradient over the batch:
    one sum over 8 images, or two sums over 4 averaged by the all-reduce. For a sum of n terms computed
    in two orders the difference is at most 2 gamma_n sum|terms|, gamma_n = n u / (1 - n u), u = 2^-53;
    the tiny UNet's largest reduction has n < 8 * 8 * 8 * 64 = 32768 terms, so gamma_n < 3.7e-12. The
    bound allowed is 2^-24 (float32's unit roundoff, the precision runs train in) times the largest
    gradient entry of each tensor: it holds unless the terms cancel by more than 2^-24 / 7.4e-12 = 8000
    times, and any real fault (a shard missed or counted twice, a wrong averaging factor, no all-reduce)
    moves the gradient by a sizeable fraction of itself. SGD with lr 1 carries the bound to the weights.
    """
    one, two = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    single = subprocess.run([sys.executable, str(TESTS / "distributed_step.py"), str(one)], env=env,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert single.returncode == 0, single.stderr
    pair = torchrun(2, [str(TESTS / "distributed_step.py"), str(two)], env)
    assert pair.returncode == 0, pair.stderr
    a, b = load_file(str(one)), load_file(str(two))
    assert a.keys() == b.keys()
    for name in (k for k in a if k.startswith("grad.")):
        weight = "weight." + name[len("grad.") :]
        bound = 2.0**-24 * float(a[name].abs().max())
        assert float((a[name] - b[name]).abs().max()) <= bound, name
        assert float((a[weight] - b[weight]).abs().max()) <= bound, weight
    assert any(float(a[k].abs().max()) > 0 for k in a if k.startswith("grad."))


def manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


@pytest.fixture
def two_process_run(env, tmp_path) -> Path:
    out = tmp_path / "pair"
    result = torchrun(2, ["--no-python", BIN / "unlearnctl", *TINY_FORGET, "--out", out], env)
    assert result.returncode == 0, result.stderr
    return out


def test_a_two_process_forget_replays_bit_identically_with_two_processes(env, tmp_path, two_process_run):
    m = manifest(two_process_run)
    assert m["distributed"]["world_size"] == 2 and set(m["distributed"]["rank_seeds"]) == {"0", "1"}
    assert m["optimizer_steps"] == 4
    lines = (two_process_run / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4]  # the main process alone writes
    replayed = tmp_path / "replayed"
    args = ["--no-python", BIN / "unlearnctl", "replay", two_process_run / "manifest.json", "--verify",
            "--out", replayed]  # fmt: skip
    result = torchrun(2, args, env)
    assert result.returncode == 0, result.stderr
    assert manifest(replayed)["weights"]["output_sha256"] == m["weights"]["output_sha256"]
    assert manifest(replayed)["replay_of"]["verified"] is True
    # one process draws other noise: --verify refuses at once, a plain replay warns
    args = ["replay", two_process_run / "manifest.json", "--verify", "--out", tmp_path / "single"]
    single = subprocess.run(
        [str(BIN / "unlearnctl"), *map(str, args)], env=env, capture_output=True, text=True, timeout=300
    )
    assert single.returncode == 2, single.stderr
    assert "made by 2 process(es) and this replay runs 1" in single.stderr
    assert not (tmp_path / "single").exists()


@pytest.mark.skipif(not ACCELERATE.exists(), reason=f"no accelerate launcher at {ACCELERATE}")
def test_two_machines_on_one_host_give_the_two_process_weights(env, tmp_path, two_process_run):
    """``accelerate launch --num_machines 2 --machine_rank 0/1`` with the main process on 127.0.0.1: two
    launchers of one process each form the same 2-process run, so the weights are the same bit for bit."""
    port = str(free_port())
    out = tmp_path / "machines"
    procs = []
    for rank in (0, 1):
        cmd = [str(ACCELERATE), "launch", "--multi_gpu", "--num_machines", "2", "--num_processes", "2",
               "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1", "--main_process_port", port,
               "--mixed_precision", "no", "--dynamo_backend", "no", "--no_python",
               str(BIN / "unlearnctl"), *TINY_FORGET, "--out", str(out)]  # fmt: skip
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [r[1][-3000:] for r in results]
    m = manifest(out)
    assert m["distributed"]["world_size"] == 2
    assert m["weights"]["output_sha256"] == manifest(two_process_run)["weights"]["output_sha256"]


def test_an_uneven_global_batch_is_one_line(env, tmp_path):
    """A global batch of 7 cannot be split into 2 equal shards: a process stops with one line that says so.

    Each process checks the batch on its own; torchrun stops the others (SIGTERM) as soon as one has exited,
    so a process that had not reached the check yet (a loaded machine) says instead that it was stopped."""
    args = ["--no-python", BIN / "unlearnctl", *TINY_FORGET[:-4], "--set", "remain_batch_size=7",
            "--out", tmp_path / "uneven"]  # fmt: skip
    result = torchrun(2, args, env)
    assert result.returncode != 0
    # one line per process (torchrun then adds its own report of the failed workers)
    ours = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    split = [line for line in ours if "does not split evenly across 2 processes" in line]
    assert len(ours) == 2 and split, result.stderr
    assert all(line in split or line == "error: stopped by SIGTERM" for line in ours), result.stderr
    assert not (tmp_path / "uneven").exists() and not list(tmp_path.glob(".uneven.partial-*"))
