"""``forget`` then ``eval`` end to end on every real dataset format, from tiny offline stand-ins.

``test_realdata.py`` checks each loader on its own; here the CLI runs the whole job on each format:
``--data-dir`` and ``--data-option`` reach the loader, the manifest records where the data came from
(and the data warnings), and ``eval RUN`` finds the same data again from the manifest.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from unlearnctl.manifest import read_manifest
from unlearnctl.rundir import METRICS_FILE
from unlearnctl.testing import stand_ins as si
from unlearnctl.testing.tiny import tiny_model

#: a couple of optimizer steps on small batches
FORGET_FAST = ["--steps", "2", "--device", "cpu"]
FORGET_SETS = ["--set", "remain_batch_size=4", "--set", "forget_batch_size=2"]
#: few samples and sampler steps, cheap metric settings
EVAL_FAST = ["-n", "2", "--steps", "2", "--device", "cpu", "--threads", "1", "--set", "fidelity.kid_subsets=3"]
EVAL_ALL = [*EVAL_FAST, "--set", "membership.draws=2"]
#: an 8x8 RGB view of every dataset, so that tiny models fit all of them
SMALL = ["--data-option", "resolution=8"]


def save_model(folder: Path, num_classes: int, conditional: bool = True) -> Path:
    """A tiny 3x8x8 model (class-conditional on ``num_classes`` classes, or unconditional)."""
    tiny_model(conditional=conditional, num_classes=num_classes, image_size=8, channels=3).save(folder)
    return folder


def save_judge(folder: Path, num_classes: int, image_size: int = 8) -> Path:
    """An untrained judge (random weights): eval only needs one of the right shape."""
    from unlearnctl.judge.classifier import Judge

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        Judge(num_classes, None, image_size, 3).eval().save(folder)
    return folder


def forget_and_eval(
    cli, tmp_path: Path, *, dataset: str, data_dir: Path, model: Path, judge: Path, args: list[str], grid: int = 1
) -> tuple[Path, dict, str]:
    """``forget`` (exit 0), then ``eval RUN`` (exit 0); the run folder, metrics.json and all the output.

    ``grid``: images per class in the before/after grids (the run's last sampling).
    """
    run = tmp_path / "run"
    result = cli(
        "forget", "--model", model, "--dataset", dataset, "--data-dir", data_dir, "--out", run,
        *args, *FORGET_FAST, "--grid-per-class", grid, *FORGET_SETS,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    evaluated = cli("eval", run, "--judge", judge, *EVAL_ALL)
    assert evaluated.exit_code == 0, evaluated.output
    metrics = json.loads((run / METRICS_FILE).read_text())
    return run, metrics, result.output + evaluated.output


def check_recorded(run: Path, metrics: dict, dataset: str, data_dir: Path, **options: object) -> None:
    """The manifest names the dataset, its fingerprint, its folder and options; eval read the same data."""
    from unlearnctl.inputs import load_dataset_warned

    m = read_manifest(run)
    assert m.dataset.name == dataset and m.dataset.data_dir == str(data_dir.resolve())
    assert {k: m.dataset.options[k] for k in options} == options
    data, warnings = load_dataset_warned(dataset, "train", data_dir, m.dataset.options)
    assert m.dataset.warnings == warnings
    assert m.dataset.fingerprint == data.fingerprint() and m.dataset.size == len(data)
    recorded = metrics["protocol"]["dataset"]
    assert recorded["name"] == dataset and recorded["data_dir"] == str(data_dir.resolve())
    assert recorded["options"] == m.dataset.options
    if "train" in recorded:
        assert recorded["train"]["fingerprint"] == m.dataset.fingerprint


# --- one test per format -----------------------------------------------------------------------


def test_cifar10_python_batches_with_the_ddpm_cifar10_stand_in(
    cli, realdata_files: Path, official_md5: None, tmp_path: Path
) -> None:
    model = si.save_standin_model(tmp_path / "ddpm-cifar10-32")  # unconditional, like google/ddpm-cifar10-32
    judge = save_judge(tmp_path / "judge", 10, image_size=32)
    run, metrics, _ = forget_and_eval(
        cli, tmp_path, dataset="cifar10", data_dir=realdata_files, model=model, judge=judge,
        args=["--classes", "2", "--data-option", "download=false"], grid=0,  # 50-step grids: too slow at 32x32
    )  # fmt: skip
    check_recorded(run, metrics, "cifar10", realdata_files, download=False, resolution=32)
    m = read_manifest(run)
    assert m.method.options["target"] == "uniform"  # chosen for an unconditional model
    assert m.forget.forget_classes == [2] and m.forget.size == 2 and m.dataset.warnings == []
    assert metrics["results"]["model"]["forgetting"]["mode"] == "unconditional"


def test_celeba_attribute_list_and_partition_file(cli, realdata_files: Path, tmp_path: Path) -> None:
    model = save_model(tmp_path / "model", 2)
    judge = save_judge(tmp_path / "judge", 2)
    run, metrics, _ = forget_and_eval(
        cli, tmp_path, dataset="celeba", data_dir=realdata_files, model=model, judge=judge,
        args=["--forget", "attribute:Eyeglasses", *SMALL, "--data-option", "label_attribute=Eyeglasses"],
    )  # fmt: skip
    check_recorded(run, metrics, "celeba", realdata_files, resolution=8, label_attribute="Eyeglasses")
    m = read_manifest(run)
    assert (m.dataset.size, m.forget.size, m.forget.forget_classes) == (6, 2, [1])  # official partition 0
    assert metrics["protocol"]["forget_classes"] == [1]


def test_celeba_hq_folder_given_as_the_dataset_folder_itself(cli, realdata_files: Path, tmp_path: Path) -> None:
    data_dir = realdata_files / "celeba-hq"  # --data-dir may name the dataset's own folder
    model = save_model(tmp_path / "model", 2)
    judge = save_judge(tmp_path / "judge", 2)
    run, metrics, _ = forget_and_eval(
        cli, tmp_path, dataset="celeba-hq", data_dir=data_dir, model=model, judge=judge,
        args=["--forget", "attribute:Eyeglasses", *SMALL, "--data-option", "label_attribute=Eyeglasses"],
    )  # fmt: skip
    check_recorded(run, metrics, "celeba-hq", data_dir, resolution=8, label_attribute="Eyeglasses")
    m = read_manifest(run)
    assert (m.dataset.size, m.forget.size) == (8, 4)  # mapped onto CelebA's partitions


def test_utkface_malformed_names_are_reported_and_recorded(cli, realdata_files: Path, tmp_path: Path) -> None:
    model = save_model(tmp_path / "model", 5)
    judge = save_judge(tmp_path / "judge", 5)
    run, metrics, output = forget_and_eval(
        cli, tmp_path, dataset="utkface", data_dir=realdata_files, model=model, judge=judge,
        args=["--forget", "where:race=2", *SMALL, "--data-option", "test_fraction=0.3"],
    )  # fmt: skip
    check_recorded(run, metrics, "utkface", realdata_files, resolution=8, test_fraction=0.3)
    m = read_manifest(run)
    assert m.forget.forget_classes == [2]
    (warning,) = m.dataset.warnings
    assert "skipped 3 of 23 files" in warning and si.UTKFACE_REAL_BAD_NAMES[0] in warning
    # printed as one line by forget and by eval, and kept in metrics.json
    lines = [line for line in output.splitlines() if line.startswith("warning: dataset 'utkface'")]
    assert len(lines) == 2 and all("skipped 3 of 23 files" in line for line in lines)
    assert metrics["protocol"]["dataset"]["warnings"] == [warning]


def test_imagefolder_class_sub_folders_with_a_judge_from_train_judge(cli, realdata_files: Path, tmp_path: Path):
    judge = tmp_path / "judge"
    trained = cli(
        "train-judge", "--dataset", "imagefolder", "--data-dir", realdata_files, *SMALL,
        "--epochs", "1", "--out", judge,
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output
    assert json.loads((judge / "judge.json").read_text())["image_size"] == 8
    model = save_model(tmp_path / "model", 3)
    run, metrics, _ = forget_and_eval(
        cli, tmp_path, dataset="imagefolder", data_dir=realdata_files, model=model, judge=judge,
        args=["--classes", "1", *SMALL],
    )  # fmt: skip
    check_recorded(run, metrics, "imagefolder", realdata_files, resolution=8)
    assert read_manifest(run).forget.forget_classes == [1]
    assert metrics["protocol"]["forget_classes"] == [1] and metrics["protocol"]["kept_classes"] == [0, 2]


def test_imagefolder_metadata_csv(cli, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    si.write_imagefolder(data_dir, layout="csv", per_class=4)
    model = save_model(tmp_path / "model", 3)
    judge = save_judge(tmp_path / "judge", 3)
    run, metrics, _ = forget_and_eval(
        cli, tmp_path, dataset="imagefolder", data_dir=data_dir, model=model, judge=judge,
        args=["--classes", "0", *SMALL, "--data-option", "label_column=species"],
    )  # fmt: skip
    check_recorded(run, metrics, "imagefolder", data_dir, resolution=8, label_column="species")
    m = read_manifest(run)
    assert (m.dataset.size, m.forget.size) == (9, 3)  # the CSV's split column: 3 train images per class


# --- where the data is: --data-dir for eval and replay -------------------------------------------


@pytest.fixture
def imagefolder_run(cli, tmp_path: Path) -> tuple[Path, Path]:
    """A forget run on an imagefolder stand-in in ``tmp_path/data``: (run folder, data folder)."""
    data_dir = tmp_path / "data"
    si.write_imagefolder(data_dir, per_class=3)
    model = save_model(tmp_path / "model", 3)
    run = tmp_path / "run"
    result = cli(
        "forget", "--model", model, "--dataset", "imagefolder", "--data-dir", data_dir, "--out", run,
        "--classes", "2", *SMALL, *FORGET_FAST, "--grid-per-class", 0, *FORGET_SETS,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return run, data_dir


def test_moved_data_is_found_with_data_dir_on_eval_and_replay(cli, imagefolder_run, tmp_path: Path) -> None:
    run, data_dir = imagefolder_run
    moved = tmp_path / "moved"
    shutil.move(data_dir, moved)
    judge = save_judge(tmp_path / "judge", 3)
    # the recorded folder is gone: eval says so; --data-dir points it at the new place
    missing = cli("eval", run, "--judge", judge, *EVAL_FAST, "--metrics", "fidelity")
    assert missing.exit_code == 2 and "not found" in missing.stderr
    evaluated = cli("eval", run, "--judge", judge, *EVAL_FAST, "--metrics", "fidelity", "--data-dir", moved)
    assert evaluated.exit_code == 0, evaluated.output
    metrics = json.loads((run / METRICS_FILE).read_text())
    assert metrics["protocol"]["dataset"]["data_dir"] == str(moved.resolve())
    # replay reads the moved data (same fingerprint: same data) and gets the same weights
    again = tmp_path / "again"
    replayed = cli("replay", run, "--verify", "--data-dir", moved, "--out", again)
    assert replayed.exit_code == 0, replayed.output
    m = read_manifest(again)
    assert m.dataset.data_dir == str(moved.resolve()) and m.replay_of.verified is True
    assert m.dataset.options == read_manifest(run).dataset.options  # the recorded options


def test_replay_refuses_other_data_under_data_dir(cli, imagefolder_run, tmp_path: Path) -> None:
    run, _ = imagefolder_run
    other = tmp_path / "other"
    si.write_imagefolder(other, per_class=3, seed=1)
    result = cli("replay", run, "--data-dir", other, "--out", tmp_path / "again")
    assert result.exit_code == 1 and "differs from the recorded one" in result.stderr
    assert not (tmp_path / "again").exists()


# --- bad --data-option / --data-dir --------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data-option", "resolutoin=8"], "unknown option 'resolutoin' (did you mean 'resolution'?); options: "),
        (["--data-option", "resolution=4"], "bad value for option 'resolution'"),
        (["--data-option", "resolution"], "--data-option 'resolution': write key=value"),
    ],
)
def test_bad_data_option_is_one_line_exit_2(cli, imagefolder_run, tmp_path: Path, args, message) -> None:
    run, data_dir = imagefolder_run
    model = tmp_path / "model"
    commands = {
        "forget": ["forget", "--model", model, "--dataset", "imagefolder", "--data-dir", data_dir, "--classes", "1"],
        "eval": ["eval", run, "--metrics", "fidelity"],
        "train": ["train", "--dataset", "imagefolder", "--data-dir", data_dir],
        "train-judge": ["train-judge", "--dataset", "imagefolder", "--data-dir", data_dir],
    }
    for name, command in commands.items():
        out = tmp_path / f"out-{name}"
        result = cli(*command, *args, "--out", out)
        assert result.exit_code == 2, (name, result.output)
        assert result.stderr.count("\n") == 1 and message in result.stderr, (name, result.stderr)
        if "unknown option" in message:
            assert "resolution, channels, metadata_file" in result.stderr
        assert not out.exists()


def test_data_dir_that_is_a_file_is_refused(cli, tmp_path: Path) -> None:
    model = save_model(tmp_path / "model", 3)
    not_a_folder = tmp_path / "file.txt"
    not_a_folder.write_text("x")
    result = cli("forget", "--model", model, "--dataset", "imagefolder", "--data-dir", not_a_folder, "--classes", "1")
    assert result.exit_code == 2 and "is a file, not a folder" in result.stderr


def test_train_reports_and_records_left_out_files(cli, realdata_files: Path, tmp_path: Path) -> None:
    out = tmp_path / "train"
    result = cli(
        "train", "--dataset", "utkface", "--data-dir", realdata_files, *SMALL, "--steps", "1", "--device", "cpu",
        "--set", "arch=tiny", "--set", "batch_size=4", "--set", "grid_per_class=0", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    m = read_manifest(out)
    (warning,) = m.dataset.warnings
    assert "skipped 3 of 23 files" in warning and m.dataset.data_dir == str(realdata_files.resolve())
    assert m.dataset.options["resolution"] == 8
    assert [line for line in result.stderr.splitlines() if line.startswith("warning:")] == [f"warning: {warning}"]


def test_train_judge_reports_and_records_left_out_files(cli, realdata_files: Path, tmp_path: Path) -> None:
    out = tmp_path / "judge"
    result = cli(
        "train-judge", "--dataset", "utkface", "--data-dir", realdata_files, *SMALL, "--data-option",
        "label_field=race", "--epochs", "1", "--device", "cpu", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    info = json.loads((out / "judge.json").read_text())["info"]
    (warning,) = info["data_warnings"]
    assert "skipped 3 of" in warning
    assert info["dataset_options"]["resolution"] == 8 and info["device"] == "cpu"
    assert [line for line in result.stderr.splitlines() if line.startswith("warning:")] == [f"warning: {warning}"]
    bad = cli("train-judge", "--dataset", "digits", "--device", "tpu", "--out", tmp_path / "x")
    assert bad.exit_code == 2 and "tpu" in bad.stderr and not (tmp_path / "x").exists()
