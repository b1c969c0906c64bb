"""``eval --save-samples``: torch-fidelity itself, run on the saved folders, gives ``eval``'s FID/KID/PR.

The saved PNGs hold the exact uint8 images ``eval`` passed to torch-fidelity, in the same order (sorted
file names); the recorded call names the same extractor, batch size, KID subsets and seed. So the
features, the statistics and the KID subsets are the same computation on the same numbers, and the
values are compared for exact equality (the judge reads the RGB that torch-fidelity decodes a grey PNG to
by taking one of its three equal channels: bit-identical input, same batches).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from digits_study import tiny_digits_study
from threadpoolctl import threadpool_limits

from unlearnctl.fidelity import (
    INCEPTION_EXTRACTOR,
    UInt8Images,
    register_feature_extractors,
    rescoring_call,
    save_png_folder,
)
from unlearnctl.judge.classifier import load_judge
from unlearnctl.rundir import METRICS_FILE

ARGS = ["-n", 3, "--steps", 2, "--metrics", "fidelity", "--set", "fidelity.kid_subsets=5", "--device", "cpu"]
COMPARED = ("fid", "kid_mean", "kid_std", "precision", "recall", "f_score")


#: a re-scoring process computes as this one does under ``threadpool_limits(1)``: torch and the BLAS under
#: numpy/scipy on one thread (the BLAS sums, FID's matrix square root above all, depend on the thread count)
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict:
    """A tiny 10-class model (naming a judge) unlearned for one step, evaluated with ``--save-samples``."""
    from typer.testing import CliRunner

    from unlearnctl.cli.app import app

    paths = tiny_digits_study(tmp_path_factory.mktemp("rescore"))
    root, run = paths["root"], paths["run"]
    with threadpool_limits(limits=1):  # the BLAS on one thread, as in the re-scoring processes (below)
        result = CliRunner().invoke(
            app, ["eval", str(run), *map(str, ARGS), "--save-samples"], env={"COLUMNS": "200"}, catch_exceptions=False
        )
    assert result.exit_code == 0, result.output
    return {"run": run, "judge": root / "judge", "data": json.loads((run / METRICS_FILE).read_text())}


def test_saved_folders_are_recorded_and_covered_by_the_checksums(saved, cli):
    run, data = saved["run"], saved["data"]
    saved_samples = data["saved_samples"]["fidelity"]
    assert set(saved_samples) == {"model", "reference"}
    sums = (run / "checksums.sha256").read_text()
    for role, entry in saved_samples.items():
        results = data["results"][role]["fidelity"]
        assert entry["input1"] == {"folder": f"samples/eval-fidelity/{role}", "count": results["n_generated"]}
        assert entry["input2"] == {"folder": "samples/eval-fidelity/real", "count": results["n_real"]}
        for side in ("input1", "input2"):
            files = sorted((run / entry[side]["folder"]).glob("*.png"))
            assert len(files) == entry[side]["count"]
            assert all(str(f.relative_to(run)) in sums for f in files)
        kwargs = entry["torch_fidelity"]["kwargs"]
        assert kwargs["input1"] == entry["input1"]["folder"] and kwargs["input2"] == entry["input2"]["folder"]
        assert kwargs["feature_extractor"] == "unlearnctl-judge"
        assert kwargs["feature_extractor_weights_path"] == str(saved["judge"].resolve())
        assert (kwargs["kid_subsets"], kwargs["rng_seed"], kwargs["cuda"]) == (5, 0, False)
        assert kwargs["kid_subset_size"] == results["kid_subset_size"]
        assert entry["torch_fidelity"]["plain_fidelity_command"] is False
    assert cli("verify", run).exit_code == 0


def test_calculate_metrics_with_the_recorded_kwargs_gives_evals_numbers(saved, monkeypatch):
    import torch_fidelity

    register_feature_extractors(judge_loader=load_judge)
    monkeypatch.chdir(saved["run"])  # the recorded folders are relative to the folder of metrics.json
    data = saved["data"]
    for role, entry in data["saved_samples"]["fidelity"].items():
        call = entry["torch_fidelity"]
        with threadpool_limits(limits=1):
            raw = torch_fidelity.calculate_metrics(**call["kwargs"])
        got = {call["result_names"][k]: float(v) for k, v in raw.items()}
        want = data["results"][role]["fidelity"]
        assert {k: got[k] for k in COMPARED} == {k: want[k] for k in COMPARED}, role


def test_torch_fidelitys_command_line_gives_evals_numbers(saved):
    """The recorded command: torch-fidelity's own ``main()`` (its parser, its calculate_metrics) with the judge
    extractor registered; the plain ``fidelity`` script does not know that extractor and refuses it."""
    data = saved["data"]
    env = {**os.environ, **ONE_THREAD, "CUDA_VISIBLE_DEVICES": ""}
    entry = data["saved_samples"]["fidelity"]["model"]
    command = entry["torch_fidelity"]["command"]
    assert command[:3] == ["python", "-m", "unlearnctl.commands.eval_record"]
    done = subprocess.run(
        [sys.executable, *command[1:]], cwd=saved["run"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    raw = json.loads(done.stdout)
    got = {entry["torch_fidelity"]["result_names"][k]: float(v) for k, v in raw.items()}
    want = data["results"]["model"]["fidelity"]
    assert {k: got[k] for k in COMPARED} == {k: want[k] for k in COMPARED}

    plain = Path(sys.executable).parent / "fidelity"
    refused = subprocess.run(
        [str(plain), *command[3:]], cwd=saved["run"], env=env, capture_output=True, text=True, timeout=120
    )
    assert refused.returncode != 0 and "unlearnctl-judge" in refused.stderr


def test_png_folders_decode_to_the_exact_uint8_images_torch_fidelity_reads(tmp_path):
    from torch_fidelity.datasets import ImagesPathDataset
    from torch_fidelity.utils import glob_samples_paths

    grey = UInt8Images(torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    rgb = UInt8Images(grey.images, rgb=True)
    for name, images in (("grey", grey.images), ("rgb", rgb.images)):
        save_png_folder(images, tmp_path / name)
        read = ImagesPathDataset(glob_samples_paths(str(tmp_path / name), False, "png", verbose=False))
        assert torch.equal(torch.stack([read[i] for i in range(len(read))]), rgb.images), name


def test_an_inception_call_is_the_plain_fidelity_command():
    kwargs = {
        "input1": None,
        "input2": None,
        "fid": True,
        "kid": True,
        "prc": False,
        "feature_extractor": INCEPTION_EXTRACTOR,
        "feature_extractor_weights_path": "/w/weights-inception.pth",
        "cuda": True,
        "batch_size": 64,
        "kid_subsets": 100,
        "kid_subset_size": 1000,
        "prc_neighborhood": 3,
        "rng_seed": 0,
    }
    call = rescoring_call(kwargs, "samples/eval-fidelity/model", "samples/eval-fidelity/real", None)
    assert call["plain_fidelity_command"] is True
    assert call["command"][:6] == ["fidelity", "--gpu", "0", "--fid", "--kid", "--input1"]
    assert "--feature-extractor-weights-path" in call["command"] and "--prc" not in call["command"]
    assert call["kwargs"]["feature_extractor_weights_path"] == "/w/weights-inception.pth"


def _random_inception_weights(path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A plain state dict with exactly the keys and shapes torch-fidelity's ``inception-v3-compat`` loads, of seeded
    random weights (the real ones cannot be downloaded here). The module is built by torch-fidelity's own
    constructor with its weight loading switched off; the convolutions get He-normal weights so that the
    2048 pool3 features keep a usable scale through the 90-odd ReLU layers (PyTorch's default init shrinks
    them to ~1e-8, where FID and KID would be rounding noise)."""
    import torch_fidelity.feature_extractor_inceptionv3 as inception_module

    cls = inception_module.FeatureExtractorInceptionV3
    with monkeypatch.context() as patch:
        patch.setattr(inception_module, "load_state_dict_from_url", lambda *a, **k: None)
        patch.setattr(cls, "load_state_dict", lambda self, state_dict: None)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            module = cls(INCEPTION_EXTRACTOR, ["2048"])
            for layer in module.modules():
                if isinstance(layer, torch.nn.Conv2d):
                    torch.nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
    torch.save(module.state_dict(), path)
    return path


def test_plain_fidelity_on_the_saved_inception_folders_gives_evals_numbers(tmp_path, cli, monkeypatch):
    """Inception features: the recorded command is torch-fidelity's plain ``fidelity`` script, and run on the
    saved folders it prints eval's FID/KID/precision/recall exactly.

    Exact, not approximate: the PNGs decode to the uint8 RGB images eval passed (grey repeated to 3 channels,
    sorted names = eval's order), the command names the same extractor and weights file, batch size (64: every
    set is one batch), KID subsets, subset size and seed, and both processes run torch and the BLAS under numpy
    and scipy (the covariances, FID's matrix square root) on one thread -- here through threadpoolctl, since
    this process's BLAS pool is already started -- so the features, statistics and KID subsets are the same
    floating-point computation. (With another thread count the BLAS sums change order, and the square root of
    the rank-deficient covariance magnifies that: FID moved by 2e-9 relative in a run with 2 BLAS threads.)
    Kept small for Inception at 299 x 299 on a CPU: forgetting classes 0-8 leaves class 9 kept, so the sets are
    the 2 samples of class 9 and the ~30 test images of 9."""
    weights = _random_inception_weights(tmp_path / "inception.pth", monkeypatch)
    run = tiny_digits_study(tmp_path / "study")["run"]
    args = [
        *("-n", 2, "--steps", 2, "--metrics", "fidelity", "--classes", "0,1,2,3,4,5,6,7,8", "--device", "cpu"),
        *("--set", "fidelity.feature_extractor=inception", "--set", f"fidelity.inception_weights={weights}"),
        *("--set", "fidelity.real_split=test", "--set", "fidelity.kid_subsets=5"),
    ]
    with threadpool_limits(limits=1):
        assert cli("eval", run, *args, "--save-samples").exit_code == 0
    data = json.loads((run / METRICS_FILE).read_text())
    entry = data["saved_samples"]["fidelity"]["model"]
    call, want = entry["torch_fidelity"], data["results"]["model"]["fidelity"]
    assert call["plain_fidelity_command"] is True
    assert call["kwargs"]["feature_extractor"] == INCEPTION_EXTRACTOR
    assert call["kwargs"]["feature_extractor_weights_path"] == str(weights)
    assert call["command"][0] == "fidelity" and "--json" in call["command"]
    assert (want["n_generated"], want["kid_subset_size"]) == (2, 2) and 2 < want["n_real"] < 60

    plain = Path(sys.executable).parent / "fidelity"  # torch-fidelity's console script, nothing of unlearnctl's
    env = {**os.environ, **ONE_THREAD, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [str(plain), *call["command"][1:]], cwd=run, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    got = {call["result_names"][k]: float(v) for k, v in json.loads(done.stdout).items()}
    assert {k: got[k] for k in COMPARED} == {k: want[k] for k in COMPARED}
    assert want["fid"] > 0 and want["kid_mean"] != 0  # real numbers, not a degenerate all-zero comparison
