"""``eval --sample-cache DIR``: draws of samples kept between commands and read back only when every input
matches. The results must be those of sampling afresh, exactly: a hit returns the very tensors a fresh draw
stored, so equality holds by construction (the same bytes, read back from safetensors)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from digits_study import tiny_digits_study

from unlearnctl.contexts.sample_cache import SampleCache, draw_key
from unlearnctl.rundir import METRICS_FILE
from unlearnctl.testing.tiny import tiny_model

FAST = ["-n", 3, "--steps", 2, "--set", "fidelity.kid_subsets=5", "--set", "membership.draws=2"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    return tiny_digits_study(tmp_path_factory.mktemp("cache"))


def _eval(cli, run: Path, out: Path, *extra: object) -> dict:
    result = cli("eval", run, *FAST, "--out", out, *extra)
    assert result.exit_code == 0, result.output
    return json.loads((out / METRICS_FILE).read_text())


def test_a_cached_draw_gives_the_results_of_a_fresh_one(cli, setup, tmp_path):
    run, cache = setup["run"], tmp_path / "cache"
    fresh = _eval(cli, run, tmp_path / "fresh")
    first = _eval(cli, run, tmp_path / "first", "--sample-cache", cache)
    stored = sorted(cache.glob("*.safetensors"))
    assert len(stored) == 2  # one draw per model: the run's and its base's
    second = _eval(cli, run, tmp_path / "second", "--sample-cache", cache)
    for role in ("model", "reference"):
        assert first["sampling"][role]["cached_images"] == 0
        assert second["sampling"][role]["cached_images"] == second["sampling"][role]["images"] > 0
        assert second["sampling"][role]["unet_forward_calls"] == 0  # nothing sampled
    # every metric of both models, exactly: the same images in, the same computation after
    assert second["results"] == first["results"] == fresh["results"]
    assert sorted(cache.glob("*.safetensors")) == stored  # nothing new written
    assert not list(cache.glob(".tmp-*"))


def test_draws_are_shared_by_weights_not_by_folder_and_a_seed_is_another_draw(cli, setup, tmp_path):
    run, cache = setup["run"], tmp_path / "cache"
    _eval(cli, run, tmp_path / "first", "--sample-cache", cache)
    # a copy of the run elsewhere: the same weights under the same protocol, so both draws are read back
    other = tmp_path / "copy"
    shutil.copytree(run, other)
    again = _eval(cli, other, tmp_path / "other", "--sample-cache", cache)
    for role in ("model", "reference"):
        assert again["sampling"][role]["cached_images"] == again["sampling"][role]["images"]
    # another seed is another draw of both models
    seeded = _eval(cli, run, tmp_path / "seeded", "--sample-cache", cache, "--seed", "1")
    assert seeded["sampling"]["reference"]["cached_images"] == 0
    assert seeded["sampling"]["model"]["cached_images"] == 0
    assert len(list(cache.glob("*.safetensors"))) == 4


def test_every_input_of_a_draw_is_in_its_key():
    model = tiny_model(conditional=True)
    base = {"command": "eval", "stream": "samples-0,1", "labels": [0, 0, 1, 1], "n": 4, "device": torch.device("cpu")}
    describe = {"sampler": "ddim", "steps": 2, "seed": 0}
    key = draw_key(model, describe, **base)
    assert key == draw_key(model, dict(describe), **base)  # the same inputs: the same key
    assert key != draw_key(model, {**describe, "seed": 1}, **base)
    for change in ({"stream": "samples-0"}, {"labels": [1, 1, 0, 0]}, {"n": 6}, {"command": "audit"}):
        assert key != draw_key(model, describe, **{**base, **change}), change
    with torch.no_grad():
        next(model.unet.parameters()).view(-1)[0] += 1e-3  # one weight
    assert key != draw_key(model, describe, **base)
    changed = draw_key(model, describe, **base)
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)
    try:
        moved = draw_key(model, describe, **base)
    finally:
        torch.set_num_threads(threads)
    assert moved != changed  # the CPU threads: float sums may differ in the last bits


def test_a_damaged_or_foreign_file_is_a_miss(tmp_path):
    cache = SampleCache(tmp_path / "c")
    images = torch.rand(4, 1, 8, 8) * 2 - 1
    path = cache.store("a" * 64, images)
    assert path is not None and torch.equal(cache.load("a" * 64, (4, 1, 8, 8)), images)
    assert cache.load("a" * 64, (5, 1, 8, 8)) is None  # another shape
    shutil.copy(path, cache.path("b" * 64))  # a file under another key's name: its header says "a..."
    assert cache.load("b" * 64, (4, 1, 8, 8)) is None
    path.write_bytes(path.read_bytes()[:40])  # cut short
    assert cache.load("a" * 64, (4, 1, 8, 8)) is None
    assert cache.store("a" * 64, images) == path and cache.load("a" * 64, (4, 1, 8, 8)) is not None


def test_a_file_as_the_cache_is_refused_in_one_line(cli, setup, tmp_path):
    blocker = tmp_path / "cache"
    blocker.write_text("not a folder")
    result = cli("eval", setup["run"], *FAST, "--out", tmp_path / "out", "--sample-cache", blocker)
    assert result.exit_code == 2
    assert "--sample-cache" in result.output and "is a file" in result.output
    assert not (tmp_path / "out" / METRICS_FILE).exists()


def test_a_cache_that_cannot_be_written_costs_sampling_not_the_result(tmp_path):
    (tmp_path / "taken").write_text("")  # a file where the folder would go: creating it fails (OSError)
    cache = SampleCache(tmp_path / "taken" / "samples")
    assert cache.store("c" * 64, torch.zeros(1, 1, 8, 8)) is None
    assert cache.load("c" * 64, (1, 1, 8, 8)) is None
    with cache.claim("c" * 64) as held:  # no lock either: the draw goes on unlocked
        assert held is False


_CLAIM_IN_ANOTHER_PROCESS = """
import sys
from pathlib import Path
from unlearnctl.contexts.sample_cache import SampleCache
with SampleCache(Path(sys.argv[1])).claim(sys.argv[2], timeout=float(sys.argv[3])) as held:
    print(held)
"""


def _claim_elsewhere(folder: Path, key: str, timeout: float = 0.0) -> bool:
    done = subprocess.run(
        [sys.executable, "-c", _CLAIM_IN_ANOTHER_PROCESS, str(folder), key, str(timeout)],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return done.stdout.strip() == "True"


@pytest.mark.skipif(sys.platform == "win32", reason="the claim is an flock: POSIX only")
def test_a_claimed_draw_waits_in_another_command_and_other_draws_do_not(tmp_path):
    cache = SampleCache(tmp_path / "c")
    with cache.claim("a" * 64) as held:
        assert held is True
        # another command asking for the same draw does not get it while this one draws it (timeout 0: no wait) ...
        assert _claim_elsewhere(cache.folder, "a" * 64) is False
        # ... while a draw of another key goes on at once
        assert _claim_elsewhere(cache.folder, "b" * 64) is True
        # the same in one process: the lock is on the open file, not the process
        with SampleCache(cache.folder).claim("a" * 64, timeout=0) as again:
            assert again is False
    assert _claim_elsewhere(cache.folder, "a" * 64) is True  # released at the end of the block
    # a command that dies holding the claim releases it (the kernel closes its descriptor)
    holder = subprocess.Popen(
        [sys.executable, "-c", _CLAIM_IN_ANOTHER_PROCESS.replace("print(held)", "print(held, flush=True); input()"),
         str(cache.folder), "a" * 64, "0"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "True"
        with cache.claim("a" * 64, timeout=0) as held:
            assert held is False
        holder.kill()
        holder.wait(timeout=60)
        with cache.claim("a" * 64, timeout=0) as held:
            assert held is True
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
