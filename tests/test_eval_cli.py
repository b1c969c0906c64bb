"""``unlearnctl eval``: a tiny model unlearned for a step on the real digits, evaluated end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from digits_study import tiny_digits_study

from unlearnctl.contexts.study import DEFAULT_SAMPLES_PER_CLASS
from unlearnctl.rundir import METRICS_FILE
from unlearnctl.testing.tiny import tiny_model

STEPS = 2
N = 3
SAMPLING = ["-n", N, "--steps", STEPS]
FAST = [*SAMPLING, "--set", "fidelity.kid_subsets=5", "--set", "membership.draws=2"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    """A tiny 10-class model of the digits (naming a judge) and one erasediff run forgetting class 2."""
    return tiny_digits_study(tmp_path_factory.mktemp("eval"))


def test_eval_of_a_run_named_by_a_relative_path_records_what_it_added(cli, setup, tmp_path, monkeypatch):
    # `make demo` names its run relative to the working directory: eval must write and record there
    run = tmp_path / "runs" / "rel"
    shutil.copytree(setup["run"], run)
    monkeypatch.chdir(tmp_path)
    result = cli("eval", "runs/rel", *FAST)
    assert result.exit_code == 0, result.output
    assert (run / METRICS_FILE).is_file()
    assert METRICS_FILE in (run / "checksums.sha256").read_text()
    assert cli("verify", "runs/rel").exit_code == 0


def test_eval_run_writes_metrics_and_grids_side_by_side(cli, setup):
    run = setup["run"]
    result = cli("eval", run, *FAST)
    assert result.exit_code == 0, result.output
    for text in ("base (reference)", "unlearned", "delta", "forgetting", "kept", "fidelity", "membership"):
        assert text in result.stdout
    data = json.loads((run / METRICS_FILE).read_text())

    # the reference is the run's base model, identified by the weights the run started from
    manifest = json.loads((run / "manifest.json").read_text())
    assert data["reference"]["spec"] == manifest["weights"]["model"]
    assert data["reference"]["matches_manifest_input"] is True
    assert data["model"]["weights"] == manifest["weights"]["saved_weights"]
    # every protocol knob
    proto = data["protocol"]
    assert (proto["sampler"], proto["steps"], proto["eta"], proto["guidance"]) == ("ddim", STEPS, 0.0, 2.0)
    assert proto["samples_per_class"] == N and proto["seed"] == 0
    assert proto["forget_classes"] == [2] and proto["kept_classes"] == [c for c in range(10) if c != 2]
    assert proto["feature_extractor"]["kind"] == "judge" and proto["judge"]["path"] == str(setup["judge"])
    ref_set = proto["reference_set"]
    assert (
        ref_set["dataset"] == "digits" and ref_set["split"] == "train" and ref_set["classes"] == proto["kept_classes"]
    )
    assert ref_set["size"] == sum(1 for lbl in _digits_train_labels() if lbl != 2)
    assert proto["metrics"]["fidelity"]["kid_subsets"] == 5
    # sampling: once per model, all 10 classes in one batch -> one guided UNet call per step
    for role in ("model", "reference"):
        cost = data["sampling"][role]
        assert cost["images"] == 10 * N
        assert cost["unet_forward_calls"] == STEPS
        assert cost["unet_image_evaluations"] == 2 * 10 * N * STEPS
    results = data["results"]
    assert set(results["model"]) == set(results["reference"]) == {"forgetting", "kept", "fidelity", "membership"}
    assert results["model"]["membership"]["n_members"] == sum(1 for lbl in _digits_train_labels() if lbl == 2)
    # exact: delta is this float64 subtraction of these two numbers, and JSON round-trips a float64 exactly
    fids = (results["model"]["fidelity"]["fid"], results["reference"]["fidelity"]["fid"])
    assert data["delta"]["fidelity.fid"] == fids[0] - fids[1]
    for name in ("eval-forgotten", "eval-kept"):
        png = run / data["files"][name]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # never clobbered without --overwrite; with it, the same seeds give the same numbers
    before = (run / METRICS_FILE).read_bytes()
    refused = cli("eval", run, *FAST)
    assert refused.exit_code == 2 and "--overwrite" in refused.stderr
    assert (run / METRICS_FILE).read_bytes() == before
    again = cli("eval", run, *FAST, "--overwrite")
    assert again.exit_code == 0, again.output
    assert json.loads((run / METRICS_FILE).read_text())["results"] == results


def _digits_train_labels() -> list[int]:
    from unlearnctl.builtin.datasets import Digits

    return Digits().load("train").labels


def test_a_model_against_itself_differs_by_exactly_nothing(cli, setup, tmp_path):
    result = cli(
        "eval",
        setup["model"],
        "--against",
        setup["model"],
        "--classes",
        "2",
        "--json",
        *SAMPLING,
        "--metrics",
        "forgetting,kept,fidelity",
        "--set",
        "fidelity.kid_subsets=5",
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["delta"] and all(v == 0 for v in data["delta"].values())
    assert data["reference"]["source"] == "--against"
    assert not any(tmp_path.rglob(METRICS_FILE)) and not (setup["model"] / METRICS_FILE).exists()


def test_bare_model_writes_to_out_and_evaluates_alone(cli, setup, tmp_path):
    out = tmp_path / "eval"
    threads = torch.get_num_threads()
    result = cli(
        "eval", setup["model"], "--classes", "2,5", "--out", out, *SAMPLING, "--metrics", "forgetting", "--threads", 2
    )
    assert result.exit_code == 0, result.output
    assert torch.get_num_threads() == threads  # restored
    data = json.loads((out / METRICS_FILE).read_text())
    assert data["protocol"]["cpu_threads"] == 2
    assert data["reference"] is None and data["delta"] == {}
    assert data["protocol"]["forget_classes"] == [2, 5]
    # every class is sampled, in one draw, whichever metrics run (forgetting reads only classes 2 and 5)
    assert data["sampling"]["model"]["images"] == 10 * N
    assert data["sampling"]["model"]["unet_forward_calls"] == STEPS
    assert (out / "samples" / "eval-forgotten.png").is_file()


MEAN_OF_FORGOTTEN = """
import torch
import unlearnctl


class MeanOfForgotten(unlearnctl.Metric):
    \"\"\"Mean pixel value of the forgotten classes' samples.\"\"\"

    name = "mean-forgotten"
    needs_samples = ("forget",)

    def compute(self, ctx):
        return {"mean": float(torch.cat([ctx.samples(c) for c in ctx.forget_classes]).double().mean())}


@unlearnctl.hookimpl
def register_metrics(register):
    register(MeanOfForgotten)
"""


def test_a_metric_gives_the_same_value_alone_and_next_to_the_others(cli, setup, fake_plugins, tmp_path):
    fake_plugins.add("mean-forgotten", MEAN_OF_FORGOTTEN)
    alone = cli("eval", setup["run"], "--json", "--out", tmp_path / "alone", *SAMPLING, "--metrics", "mean-forgotten")
    assert alone.exit_code == 0, alone.output
    everything = "forgetting,kept,fidelity,membership,mean-forgotten"
    together = cli("eval", setup["run"], "--json", "--out", tmp_path / "together", *FAST, "--metrics", everything)
    assert together.exit_code == 0, together.output
    alone_data, together_data = json.loads(alone.stdout), json.loads(together.stdout)
    # exact: both evaluations read the same samples (one draw of every class, whatever the metrics), so the
    # metric computes the same float64 mean of the same tensors in the same order
    for role in ("model", "reference"):
        assert alone_data["results"][role]["mean-forgotten"] == together_data["results"][role]["mean-forgotten"]
        assert alone_data["sampling"][role]["images"] == together_data["sampling"][role]["images"] == 10 * N


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--metrics", "forgeting"], "did you mean 'forgetting'"),
        (["--set", "fidelity.kid_subset=3"], "did you mean 'kid_subsets'"),
        (["--set", "fidelity"], "METRIC.OPTION=VALUE"),
        (["--set", "kept.x=1", "--metrics", "forgetting"], "not being computed"),
        (["--classes", "2,x"], "class ids"),
        (["--classes", "12"], "between 0 and 9"),
        (["--sampler", "euler"], "ddim or ddpm"),
        (["-n", "1"], "at least 2"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli, setup, args, message):
    result = (
        cli("eval", setup["model"], "--classes", "2", *args)
        if "--classes" not in args
        else cli("eval", setup["model"], *args)
    )
    assert result.exit_code == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_bare_model_needs_classes(cli, setup):
    result = cli("eval", setup["model"])
    assert result.exit_code == 2 and "--classes" in result.stderr


def test_help_default_matches_the_core():
    from unlearnctl.cli import eval_cmd

    assert eval_cmd.DEFAULT_SAMPLES_PER_CLASS == DEFAULT_SAMPLES_PER_CLASS


def test_unconditional_model_is_judged_by_class_shares(cli, setup, tmp_path):
    model = tiny_model(conditional=False)
    model.save(tmp_path / "uncond")
    out = tmp_path / "eval"
    result = cli(
        "eval", tmp_path / "uncond", "--against", tmp_path / "uncond", "--classes", "2", "--dataset", "digits",
        "--judge", setup["judge"], "--out", out, *SAMPLING, "--metrics", "forgetting,kept,fidelity",
        "--set", "fidelity.kid_subsets=3",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads((out / METRICS_FILE).read_text())
    model_results = data["results"]["model"]
    assert model_results["forgetting"]["mode"] == "unconditional" and "ua" not in model_results["forgetting"]
    # one unconditional set of n x the judge's classes; FID compares those not judged as class 2
    judged_2 = round(model_results["forgetting"]["recognition_rate"] * 10 * N)
    assert model_results["fidelity"]["n_generated"] == 10 * N - judged_2
    assert data["protocol"]["generated_set"].startswith("unconditional samples the judge does not assign")
    shares = model_results["kept"]["per_class_share"]
    # exact: share is this same float64 sum, in this order (JSON keeps the order of per_class_share)
    assert model_results["kept"]["share"] == sum(shares.values())
    assert data["sampling"]["model"]["unet_image_evaluations"] == 10 * N * STEPS  # no guidance pass
    assert data["protocol"]["guidance"] == 0.0
    assert (out / "samples" / "eval-unconditional.png").is_file()


def test_reference_of_another_kind_is_refused(cli, setup, tmp_path):
    model = tiny_model(conditional=False)
    model.save(tmp_path / "uncond")
    result = cli("eval", setup["model"], "--against", tmp_path / "uncond", "--classes", "2")
    assert result.exit_code == 2 and "same kind of images" in result.stderr


def test_missing_judge_or_inception_weights_fail_before_sampling(cli, setup, tmp_path):
    no_judge = tiny_model(num_classes=10)
    no_judge.default_dataset = "digits"
    no_judge.save(tmp_path / "no-judge")
    out = tmp_path / "eval"
    result = cli("eval", tmp_path / "no-judge", "--classes", "2", "--out", out, "--metrics", "kept")
    assert result.exit_code == 2 and "--judge" in result.stderr
    result = cli(
        "eval", setup["model"], "--classes", "2", "--out", out, "--metrics", "fidelity",
        "--set", "fidelity.feature_extractor=inception",
    )  # fmt: skip
    assert result.exit_code == 2 and "fidelity.inception_weights=FILE" in result.stderr
    assert not out.exists() or not any(out.iterdir())


def test_open_model_tells_a_run_a_model_folder_and_a_preset_apart(setup):
    from unlearnctl.inputs import open_model, resolve_model
    from unlearnctl.registry import get_registry

    run = open_model(str(setup["run"]))
    assert (run.kind, run.folder, run.path) == ("run", setup["run"], (setup["run"] / "model").resolve())
    assert run.manifest is not None and run.manifest.kind == "forget" and run.preset is None
    folder = open_model(str(setup["model"]))
    assert (folder.kind, folder.manifest, folder.preset) == ("folder", None, None)
    preset = open_model("ddpm-digits")
    assert preset.kind == "preset" and preset.folder is None and preset.manifest is None
    assert preset.preset is not None and preset.preset.name == "ddpm-digits"
    # forget, replay and train resolve --model through the same function
    _, record, path = resolve_model(get_registry(), "ddpm-digits")
    assert (record, path) == (preset.preset, preset.path)


def test_a_run_from_a_relative_model_folder_finds_its_base_model_elsewhere(cli, setup, tmp_path, monkeypatch):
    from unlearnctl.commands.forget import ForgetRequest, forget

    monkeypatch.chdir(setup["root"])
    run = tmp_path / "run"
    sets = ["remain_batch_size=8", "forget_batch_size=8"]
    forget(ForgetRequest(model="tiny", classes="2", steps=1, grid_per_class=0, out=run, device="cpu", sets=sets))
    monkeypatch.chdir(tmp_path)  # "tiny" names nothing here: the manifest's absolute model_path does
    result = cli("eval", run, "--json", *SAMPLING, "--metrics", "forgetting")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["reference"]["spec"] == str(setup["model"].resolve())
    assert data["reference"]["source"] == "manifest weights.model"
    assert data["reference"]["matches_manifest_input"] is True
