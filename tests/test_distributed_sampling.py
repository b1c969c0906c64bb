"""`sample` and `eval` under a launcher (torchrun): the work is shared among processes in whole batches,
and the files are the ones a single process writes (docs/scaling.md)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from unlearnctl.diffusion import draw_step_seed, sample
from unlearnctl.distributed import SINGLE, World
from unlearnctl.testing.tiny import tiny_model

TORCHRUN = Path(sys.executable).parent / "torchrun"


# --- sharding, in one process -----------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 3, 5])
@pytest.mark.parametrize("n", [0, 1, 6, 7, 23])
def test_shards_are_contiguous_and_cover_everything_in_rank_order(size, n):
    shards = [World(rank=r, size=size).shard(n) for r in range(size)]
    assert [i for s in shards for i in s] == list(range(n))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert [len(s) for s in shards] == sorted((len(s) for s in shards), reverse=True)  # the first ranks get more
    assert World(rank=1, size=2).shard(7) == range(4, 7) and SINGLE.shard(7) == range(7)


@pytest.mark.parametrize("batch_size", [1, 2, 4, 256])
@pytest.mark.parametrize("size", [1, 2, 3])
@pytest.mark.parametrize("n", [0, 1, 6, 7, 23])
def test_batch_shards_are_whole_batches_of_one_process(size, n, batch_size):
    parts = [World(rank=r, size=size).batch_shard(n, batch_size) for r in range(size)]
    assert [i for p in parts for i in p] == list(range(n))
    for part in filter(None, parts):  # starts on a batch boundary; only the last part may end inside a batch
        assert part.start % batch_size == 0 and (part.stop % batch_size == 0 or part.stop == n)
    assert World(rank=1, size=2).batch_shard(7, 2) == range(4, 7)  # batches [0,2) [2,4) | [4,6) [6,7)
    assert World(rank=1, size=2).batch_shard(6, 256) == range(6, 6)  # one batch: all on rank 0


@pytest.mark.parametrize(("sampler", "eta"), [("ddim", 0.0), ("ddim", 1.0), ("ddpm", 0.0)])
def test_a_slice_of_a_draw_is_the_slice_of_the_whole_draw(sampler, eta):
    """Images 4..7 of a draw of 10 (batches of 2): the same step-noise seed, that slice of the initial noise
    and its index give the very same bits as drawing all 10."""
    model = tiny_model(num_classes=3)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 0])
    settings: dict[str, Any] = {"sampler": sampler, "eta": eta, "steps": 3, "batch_size": 2}
    whole = sample(model, 10, labels, generator=torch.Generator().manual_seed(3), **settings)
    g = torch.Generator().manual_seed(3)
    step_seed = draw_step_seed(g) if (sampler, eta) != ("ddim", 0.0) else None
    noise = torch.randn((10, 1, 8, 8), generator=g)
    part = sample(model, 4, labels[4:8], noise=noise[4:8], step_seed=step_seed, first_index=4, **settings)
    assert torch.equal(part, whole[4:8])


def test_step_noise_is_per_image_not_per_batch():
    """DDPM draws step noise image by image: another batch size moves the pixels by float rounding only
    (see test_sampling's bound); with one generator across the batch it moved them by O(1)."""
    model = tiny_model(num_classes=3)
    labels = torch.tensor([0, 1, 2, 0, 1])
    a, b = (
        sample(model, 5, labels, generator=torch.Generator().manual_seed(1), sampler="ddpm", steps=4, batch_size=bs)
        for bs in (5, 2)
    )
    assert torch.allclose(a, b, rtol=0, atol=2e-4)
    other = sample(model, 5, labels, generator=torch.Generator().manual_seed(2), sampler="ddpm", steps=4)
    assert (a - other).abs().max() > 0.1


# --- two processes under torchrun ---------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _torchrun(*args: object, processes: int = 2) -> subprocess.CompletedProcess[str]:
    """``torchrun --nproc_per_node N -m _unlearnctl_console ARGS`` (the console script's module), one
    thread per process."""
    if not TORCHRUN.is_file() and shutil.which("torchrun") is None:
        pytest.skip("torchrun is not installed")
    torchrun = str(TORCHRUN) if TORCHRUN.is_file() else "torchrun"
    command = [torchrun, "--nproc_per_node", str(processes), "--master_addr", "127.0.0.1"]
    command += ["--master_port", str(_free_port()), "-m", "_unlearnctl_console", *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _without_seconds(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.strip().startswith('"seconds"'))


@pytest.mark.parametrize(
    ("sampler", "eta"),
    [("ddim", 0.0), ("ddpm", 0.0)],  # the default (no step noise) and step noise at every step
)
def test_sample_with_two_processes_writes_the_files_of_one(cli, tmp_path, sampler, eta):
    # 7 images in batches of 2: rounds of two batches ([0,2) [2,4) | [4,6) [6,7)), the last one uneven
    model = tiny_model(num_classes=3)
    model.save(tmp_path / "m")
    args = ["sample", "--model", tmp_path / "m", "-n", 7, "--steps", 3, "--batch-size", 2]
    args += ["--sampler", sampler, "--eta", eta, "--seed", 5]
    one = cli(*args, "--out", tmp_path / "one")
    assert one.exit_code == 0, one.output
    two = _torchrun(*args, "--out", tmp_path / "two")
    assert two.stdout.count("wrote 7 images") == 1, two.stdout  # only the main process reports

    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "two").iterdir())
    assert len(names) == 9 and not list(tmp_path.glob(".two*"))  # 7 images, grid.png, samples.json
    for name in names:
        a, b = (tmp_path / "one" / name).read_bytes(), (tmp_path / "two" / name).read_bytes()
        if name == "samples.json":  # the same text but for the measured time
            assert _without_seconds(a.decode()) == _without_seconds(b.decode())
        else:
            assert a == b, name


@pytest.fixture
def eval_run(tmp_path: Path) -> Path:
    """A tiny 10-class model of the digits (naming a judge) and a one-step erasediff run forgetting class 2."""
    from unlearnctl.commands.forget import ForgetRequest, forget
    from unlearnctl.judge.classifier import Judge

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        Judge(10).eval().save(tmp_path / "judge")
    model = tiny_model(num_classes=10)
    model.default_dataset = "digits"
    model.extra = {"judge": str(tmp_path / "judge"), "weights": "ema"}
    model.save(tmp_path / "tiny")
    run = tmp_path / "run"
    sets = ["remain_batch_size=8", "forget_batch_size=8"]
    forget(ForgetRequest(model=str(tmp_path / "tiny"), classes="2", steps=1, grid_per_class=0, out=run, sets=sets))
    return run


#: what may differ between two evaluations of the same request: the clock, the --out, the process count
TIMING = ("created_at", "wall_time_s", "metric_seconds", "command")


def _comparable(payload: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in payload.items() if k not in TIMING}
    out["sampling"] = {role: {k: v for k, v in c.items() if k != "seconds"} for role, c in out["sampling"].items()}
    out["protocol"] = {k: v for k, v in out["protocol"].items() if k != "processes"}
    return out


def test_eval_with_two_processes_gives_the_metrics_of_one(cli, tmp_path, eval_run):
    # 10 classes x 3 samples = 30 images per model in batches of 7: rank 0 takes three, rank 1 two; DDIM
    # with eta > 0 draws step noise
    args = ["eval", eval_run, "-n", 3, "--steps", 2, "--eta", 0.5, "--batch-size", 7]
    args += ["--set", "fidelity.kid_subsets=5", "--set", "membership.draws=2"]
    one = cli(*args, "--out", tmp_path / "one")
    assert one.exit_code == 0, one.output
    two = _torchrun(*args, "--out", tmp_path / "two")
    assert two.stdout.count("wrote ") == 3, two.stdout  # metrics.json and two grids, reported once

    a = json.loads((tmp_path / "one" / "metrics.json").read_text())
    b = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert (a["protocol"]["processes"], b["protocol"]["processes"]) == (1, 2)
    assert b["protocol"]["batch_size"] == 7
    # every UNet call of both processes counted: 5 batches x 2 steps, as with one process
    assert b["sampling"]["model"]["unet_forward_calls"] == 10
    assert _comparable(a) == _comparable(b)
    for grid in ("eval-forgotten.png", "eval-kept.png"):
        assert (tmp_path / "one" / "samples" / grid).read_bytes() == (tmp_path / "two" / "samples" / grid).read_bytes()
