"""``eval --retrain``: the distance to the gold standard (a model retrained without the forget set), the
built-in ``retrain-distance`` metric and ``EvalContext.retrain``. Tiny models, 2 sampler steps."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from digits_study import tiny_digits_study

from unlearnctl.rundir import METRICS_FILE
from unlearnctl.testing.tiny import tiny_judge, tiny_model

STEPS = 2
N = 3
SAMPLING = ["-n", N, "--steps", STEPS, "--device", "cpu"]
FAST = [*SAMPLING, "--set", "fidelity.kid_subsets=5", "--set", "membership.draws=2"]
#: the keys of retrain-distance's result, exactly
KEYS = {"fid", "recognition_gap", "kept_gap", "forgotten_gap", "per_class"}
#: float64 machine epsilon
EPS = float(np.finfo(np.float64).eps)


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> dict[str, Path]:
    """The shared tiny digits study (10 classes, an untrained judge, ``run`` forgot class 2) plus ``other``,
    a second tiny model (seed 1)."""
    return tiny_digits_study(tmp_path_factory.mktemp("gold"), {"other": 1})


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory) -> dict[str, Path]:
    """Two tiny 3-class models of the ``tiny`` data set (seeds 0 and 1) naming a judge trained on it, which
    tells the classes apart (the digits study's untrained judge answers one class for every image)."""
    root = tmp_path_factory.mktemp("pair")
    with torch.random.fork_rng(devices=[]):
        tiny_judge().save(root / "judge")
    for name, seed in (("a", 0), ("b", 1)):
        model = tiny_model(seed=seed)
        model.default_dataset = "tiny"
        model.extra = {"judge": str(root / "judge"), "weights": "ema"}
        model.save(root / name)
    return {"root": root, "judge": root / "judge", "a": root / "a", "b": root / "b"}


def _fid_bound_of_identical_sets(features: torch.Tensor) -> float:
    """How far from 0 torch-fidelity's FID of a set against itself may come out, from rounding alone.

    Identical images give bit-identical features, so ``mu1 == mu2`` and ``S1 == S2 = S`` exactly, and FID is
    ``2 tr(S) - 2 sum_i sqrt(mu_i)`` with ``mu_i`` the computed eigenvalues of ``S @ S`` (numpy's general
    eigen-solver). A backward-stable product and solver move each eigenvalue ``lambda_i^2`` by at most
    ``eta = c d eps ||S||^2`` (``d`` features; ``c = 10`` is generous for the product plus LAPACK's geev), and
    ``|sqrt(a) - sqrt(b)| <= sqrt(|a - b|)``: so ``|FID| <= 2 d sqrt(eta) + 2 d eps tr(S)`` (the last term:
    summing the traces), with ``||S|| <= tr(S)``."""
    f = features.double().numpy()
    d = f.shape[1]
    trace = float(np.trace(np.cov(f, rowvar=False)))
    return 2 * d * math.sqrt(10 * d * EPS) * trace + 2 * d * EPS * trace


def _saved_features(folder: Path, judge_folder: Path) -> torch.Tensor:
    """The judge's features of the PNG files ``eval --save-samples`` saved (the exact uint8 FID inputs)."""
    from PIL import Image

    from unlearnctl.judge.classifier import load_judge

    images = torch.stack(
        [torch.from_numpy(np.array(Image.open(p), dtype=np.uint8))[None] for p in sorted(folder.glob("*.png"))]
    )
    judge = load_judge(judge_folder).float().eval()
    with torch.no_grad():
        return judge.features(images.float() / 127.5 - 1.0)


# --- (a) a model against itself, (d) the record ----------------------------------------------------------


def test_a_run_against_itself_as_retrain_is_at_distance_zero_and_recorded(cli, digits, tmp_path):
    run, out = digits["run"], tmp_path / "eval"
    result = cli("eval", run, "--retrain", run, "--out", out, "--save-samples", *FAST)
    assert result.exit_code == 0, result.output
    assert "FID to the retrained model" in result.stdout and "retrained (gold standard)" in result.stdout
    data = json.loads((out / METRICS_FILE).read_text())

    # --retrain adds retrain-distance to the default metrics, for both roles
    results = data["results"]
    expected = {"forgetting", "kept", "fidelity", "membership", "retrain-distance"}
    assert set(results["model"]) == set(results["reference"]) == expected
    mine, base = results["model"]["retrain-distance"], results["reference"]["retrain-distance"]
    assert set(mine) == set(base) == KEYS
    assert set(mine["per_class"]) == {str(c) for c in range(10)}

    # the same model under the same noise: the same samples, so the judge's rates are the same floats
    for c, entry in mine["per_class"].items():
        assert entry["model"] == entry["retrain"] and entry["gap"] == 0.0, c
    assert mine["recognition_gap"] == mine["kept_gap"] == mine["forgotten_gap"] == 0.0
    # FID of a set against itself is 0 up to the eigen-solver's rounding (bound from the saved inputs'
    # features: the model's kept-class samples, exactly what retrain-distance compared)
    features = _saved_features(out / "samples" / "eval-fidelity" / "model", digits["judge"])
    assert len(features) == 9 * N
    bound = _fid_bound_of_identical_sets(features)
    assert abs(mine["fid"]) <= bound
    # the base model (one EraseDiff step away) is not identical to the run: a positive FID to it
    assert base["fid"] > bound

    # the reference's rates are its own `kept` / `forgetting` rates, and the retrain column the run's
    for c, entry in base["per_class"].items():
        own = results["reference"]["forgetting"]["per_class"][c]["recognition_rate"] if c == "2" else None
        assert entry["model"] == (own if own is not None else results["reference"]["kept"]["per_class"][c])
        assert entry["retrain"] == mine["per_class"][c]["model"]

    # metrics.json records the retrain model like the reference, and its samples were drawn once
    manifest = json.loads((run / "manifest.json").read_text())
    retrain = data["retrain"]
    assert retrain["spec"] == str(run) and retrain["source"] == "--retrain" and retrain["kind"] == "run"
    assert retrain["sha256"] == data["model"]["sha256"]  # the same weights as the evaluated model
    assert retrain["forget_classes"] == manifest["forget"]["forget_classes"] == [2]
    assert data["sampling"]["retrain"]["images"] == 10 * N
    assert data["sampling"]["retrain"]["unet_forward_calls"] == STEPS  # one draw of every class, for both roles
    assert data["protocol"]["retrain_distance"]["feature_extractor"] == data["protocol"]["feature_extractor"]
    assert data["notes"] == []


def test_retrain_record_of_a_bare_model_and_its_sha256(cli, digits, tmp_path):
    from unlearnctl.models.folder import load_model_folder, state_sha256

    result = cli(
        "eval", digits["run"], "--retrain", digits["other"], "--out", tmp_path / "e", "--json", *SAMPLING,
        "--metrics", "retrain-distance",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    retrain = data["retrain"]
    assert retrain["spec"] == str(digits["other"]) and retrain["kind"] == "model"
    assert retrain["sha256"] == state_sha256(load_model_folder(digits["other"]).unet)
    assert retrain["forget_classes"] is None
    assert set(data["results"]["model"]) == {"retrain-distance"}
    # another model: different samples, a positive FID for both roles
    assert data["results"]["model"]["retrain-distance"]["fid"] > 0
    assert data["results"]["reference"]["retrain-distance"]["fid"] > 0
    written = json.loads((tmp_path / "e" / METRICS_FILE).read_text())
    assert written["retrain"] == retrain


# --- (b) against another model: gaps from the two models' own rates --------------------------------------


def test_gaps_are_the_differences_of_each_models_own_recognition_rates(cli, tiny, tiny_pair):
    a, b = tiny_pair["a"], tiny_pair["b"]
    n = ["-n", 8, "--steps", STEPS, "--device", "cpu", "--classes", "1", "--json"]
    with_retrain = cli("eval", a, "--retrain", b, *n, "--metrics", "forgetting,kept,retrain-distance")
    assert with_retrain.exit_code == 0, with_retrain.output
    alone = cli("eval", b, *n, "--metrics", "forgetting,kept")  # the retrain model's own rates, evaluated alone
    assert alone.exit_code == 0, alone.output
    mine = json.loads(with_retrain.stdout)["results"]["model"]
    theirs = json.loads(alone.stdout)["results"]["model"]

    def rate(results: dict, c: int) -> float:
        if c == 1:
            return results["forgetting"]["per_class"]["1"]["recognition_rate"]
        return results["kept"]["per_class"][str(c)]

    dist = mine["retrain-distance"]
    assert set(dist) == KEYS
    for c in range(3):
        # exact: the same judge on the same samples (the same noise streams in both evals), the same float ops
        m, r = rate(mine, c), rate(theirs, c)
        assert dist["per_class"][str(c)] == {"model": m, "retrain": r, "gap": abs(m - r)}
    gaps = [dist["per_class"][str(c)]["gap"] for c in range(3)]
    # means of 2 or 3 float64 numbers: within a few roundings (2^-53 relative each) of the same sum in any order
    assert dist["recognition_gap"] == pytest.approx(sum(gaps) / 3, rel=0, abs=1e-15)
    assert dist["kept_gap"] == pytest.approx((gaps[0] + gaps[2]) / 2, rel=0, abs=1e-15)
    assert dist["forgotten_gap"] == gaps[1]
    # two different models, 8 samples per class: these seeds give positive distances (deterministic)
    assert dist["fid"] > 0 and dist["recognition_gap"] > 0


# --- (c) bad input ----------------------------------------------------------------------------------------


def test_retrain_distance_without_retrain_is_refused_before_loading(cli, digits):
    result = cli("eval", digits["run"], "--metrics", "kept,retrain-distance", *SAMPLING)
    assert result.exit_code == 2
    assert "--retrain" in result.stderr and "retrain-distance" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("kind", ["unconditional", "other classes"])
def test_an_incompatible_retrain_model_is_refused_in_one_line(cli, digits, tmp_path, kind):
    model = tiny_model(conditional=False) if kind == "unconditional" else tiny_model(num_classes=3)
    model.save(tmp_path / "bad")
    result = cli("eval", digits["run"], "--retrain", tmp_path / "bad", *SAMPLING)
    assert result.exit_code == 2
    assert "the retrain model" in result.stderr and "same kind of images" in result.stderr
    assert "--retrain" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_retrain_run_that_forgot_other_classes_gets_a_note(cli, digits):
    result = cli(
        "eval", digits["model"], "--classes", "3", "--retrain", digits["run"], "--json", *SAMPLING,
        "--metrics", "retrain-distance",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    (note,) = data["notes"]
    assert "forgot classes [2], not the evaluated [3]" in note
    assert "warning:" in result.stderr and "forgot classes [2]" in result.stderr


def test_an_explicit_metrics_list_is_taken_as_given(cli, digits, tmp_path):
    result = cli(
        "eval", digits["run"], "--retrain", digits["other"], "--out", tmp_path, "--json", *SAMPLING, "--metrics", "kept"
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data["results"]["model"]) == {"kept"}
    assert "retrain" not in data["sampling"]  # nothing asked for the retrain model's samples


# --- the config file and --print-config -------------------------------------------------------------------


def test_retrain_in_the_config_file_and_print_config(cli, digits, tmp_path):
    import tomllib

    config = tmp_path / "eval.toml"
    out = tmp_path / "out"
    config.write_text(f'[eval]\ntarget = "{digits["run"]}"\nretrain = "{digits["other"]}"\nout = "{out}"\n')
    printed = cli("eval", "--config", config, *SAMPLING, "--print-config")
    assert printed.exit_code == 0, printed.output
    resolved = tomllib.loads(printed.stdout)
    assert resolved["eval"]["retrain"] == str(digits["other"])
    assert resolved["eval"]["metrics"] == ["forgetting", "kept", "fidelity", "membership", "retrain-distance"]
    assert "retrain-distance" in resolved["metrics"]
    # the flag wins over the file
    flagged = cli("eval", "--config", config, "--retrain", digits["run"], *SAMPLING, "--print-config")
    assert flagged.exit_code == 0, flagged.output
    assert tomllib.loads(flagged.stdout)["eval"]["retrain"] == str(digits["run"])


# --- the metric and EvalContext.retrain, outside a command -------------------------------------------------


def test_the_retrain_context_is_shared_and_sampled_once():
    from unlearnctl.builtin.gold_metric import RetrainDistance
    from unlearnctl.testing.harness import make_eval_context

    ctx = make_eval_context(tiny_model(seed=0), samples_per_class=2, steps=STEPS)
    metric = RetrainDistance(RetrainDistance.Options())
    assert ctx.retrain is None
    assert set(metric.compute(ctx)) == {"skipped"}  # not under eval --retrain
    ctx.retrain = ctx.sibling(tiny_model(seed=1), role="retrain", spec="retrain")
    reference = ctx.sibling(tiny_model(seed=2))
    assert reference.retrain is ctx.retrain and ctx.retrain.retrain is None
    with pytest.raises(ValueError, match="role 'retrain'"):
        ctx.retrain = reference
    metric.prepare(ctx)
    for c in (ctx, reference):
        assert set(metric.compute(c)) == KEYS
    # one draw of every class for the retrain model, shared by both roles
    assert ctx.retrain.cost.images == 2 * len(ctx.sample_classes)


def test_unconditional_models_compare_class_shares_and_filtered_samples():
    from unlearnctl.builtin.gold_metric import RetrainDistance
    from unlearnctl.builtin.metrics import Kept
    from unlearnctl.testing.harness import make_eval_context

    ctx = make_eval_context(tiny_model(conditional=False, seed=0), samples_per_class=4, steps=STEPS)
    ctx.retrain = ctx.sibling(tiny_model(conditional=False, seed=0), role="retrain", spec="same weights")
    metric = RetrainDistance(RetrainDistance.Options())
    metric.prepare(ctx)
    out = metric.compute(ctx)
    assert set(out) == KEYS
    assert out["recognition_gap"] == 0.0 and all(v["gap"] == 0.0 for v in out["per_class"].values())
    # a class's rate is the share of the unconditional samples the judge assigns to it, as `kept` reports
    shares = Kept(Kept.Options()).compute(ctx)["per_class_share"]
    for c, share in shares.items():
        assert out["per_class"][c]["model"] == share
    # FID on the samples not judged as a forgotten class (like fidelity's default): the same set on both sides
    from unlearnctl.fidelity import UInt8Images

    compared = UInt8Images(metric._kept_samples(ctx)).images  # the exact uint8 images torch-fidelity reads
    assert 2 <= len(compared) < len(ctx.samples(None))  # some left out (judged as class 1), enough for an FID
    with torch.no_grad():
        features = ctx.judge.features(compared.float() / 127.5 - 1.0)
    assert abs(out["fid"]) <= _fid_bound_of_identical_sets(features)
