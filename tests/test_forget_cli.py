"""`unlearnctl forget`: the run folder, the manifest, and every bad input rejected before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from unlearnctl.manifest import read_manifest

FAST = ["--set", "steps=2", "--set", "remain_batch_size=8", "--set", "forget_batch_size=8", "--grid-per-class", "2"]


def nothing_written(where: Path) -> bool:
    return not any(where.iterdir())


def test_forget_writes_a_whole_run_folder(cli, tiny, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = cli("forget", "--model", "tiny-cond", "--classes", "1", "--seed", "5", "--out", out, *FAST)
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {"model", "samples", "log.jsonl", "manifest.json", "checksums.sha256"}
    assert {p.name for p in (out / "samples").iterdir()} == {
        "forgotten-before.png", "forgotten-after.png", "kept-before.png", "kept-after.png"
    }  # fmt: skip
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [line["step"] for line in log] == [1, 2]
    assert not list(tmp_path.glob(".run.partial-*"))
    assert "run folder" in result.stdout and str(out) in result.stdout.replace("\n", "")


def test_output_loads_with_plain_diffusers(cli, tiny, tmp_path: Path) -> None:
    from diffusers import DDPMScheduler, UNet2DModel

    from unlearnctl.models.folder import state_sha256

    out = tmp_path / "run"
    assert cli("forget", "--model", "tiny-cond", "--classes", "1", "--out", out, *FAST).exit_code == 0
    unet = UNet2DModel.from_pretrained(out / "model")
    DDPMScheduler.from_pretrained(out / "model")
    manifest = read_manifest(out / "manifest.json")
    assert state_sha256(unet) == manifest.weights.output_sha256
    meta = json.loads((out / "model" / "unlearnctl.json").read_text())
    assert meta["weights"] == manifest.weights.saved_weights == "raw"
    assert meta["unlearned"]["method"] == "erasediff" and meta["base_model"] == "tiny-cond"


def test_manifest_holds_every_contract_field(cli, tiny, tmp_path: Path) -> None:
    from unlearnctl import ids_fingerprint
    from unlearnctl.testing.tiny import tiny_image_set

    out = tmp_path / "run"
    result = cli("forget", "--model", "tiny-cond", "--classes", "1", "--seed", "7", "--out", out, "--json", *FAST)
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    m = read_manifest(out)
    assert printed["manifest"] == json.loads((out / "manifest.json").read_text())
    assert m.schema_version == 1 and m.kind == "forget"
    assert m.command[:5] == ["forget", "--model", "tiny-cond", "--classes", "1"]
    assert m.seed == 7 and set(m.seeds) == {"method", "remain", "forget", "samples"}
    # fully resolved method options, defaults included
    assert m.method.name == "erasediff" and m.method.provider == "builtin.methods"
    assert m.method.options["steps"] == 2 and m.method.options["target"] == "relabel"
    assert m.method.options["lambda"] == 0.1 and m.method.options["inner_steps"] == 2
    # environment
    env = m.environment
    assert env.packages["torch"] == torch.__version__ and env.packages["diffusers"]
    assert env.device == "cpu" and env.precision == "fp32" and env.device_requested == "auto"
    assert env.num_threads == 1 and isinstance(env.deterministic_algorithms, bool)
    # data and forget set
    data = tiny_image_set()
    assert (m.dataset.name, m.dataset.version, m.dataset.size) == ("tiny", "1", len(data))
    assert m.dataset.fingerprint == data.fingerprint()
    forgotten = [i for i, lbl in zip(data.ids, data.labels, strict=True) if lbl == 1]
    assert m.forget.fingerprint == ids_fingerprint(forgotten)
    assert (m.forget.size, m.forget.remain_size, m.forget.forget_classes) == (8, 16, [1])
    assert m.forget.selectors[0].name == "classes" and m.forget.selectors[0].argument == "1"
    # weights, time, steps, losses
    assert len(m.weights.input_sha256) == len(m.weights.output_sha256) == 64
    assert m.weights.input_sha256 != m.weights.output_sha256
    assert m.weights.preset.name == "tiny-cond"
    assert m.finished_at >= m.started_at and m.wall_time_s > 0
    assert m.optimizer_steps == 2
    assert set(m.final_losses) >= {"loss_r", "loss_f", "lambda", "grad_norm"}
    assert m.samples.forgotten_classes == [1] and m.samples.kept_classes == [0, 2]


def test_unconditional_model_gets_the_uniform_target(cli, tiny, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = cli("forget", "--model", "tiny-uncond", "--classes", "2", "--out", out, *FAST)
    assert result.exit_code == 0, result.output
    manifest = read_manifest(out)
    assert manifest.method.options["target"] == "uniform"
    assert manifest.method.options["save_ema"] is True and manifest.weights.saved_weights == "ema"
    assert {p.name for p in (out / "samples").iterdir()} == {"samples-before.png", "samples-after.png"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "erasedif"], "did you mean 'erasediff'"),
        (["--set", "lambda_rule=adaptive"], "lambda_rule"),
        (["--set", "lamda=0.2"], "did you mean 'lambda'"),
        (["--set", "novalue"], "key=value"),
        (["--classes", "7"], "class '7' does not exist"),
        (["--forget", "nosuch:1"], "unknown selector 'nosuch'"),
        (["--model", "tiny-uncond", "--set", "target=relabel"], "target=uniform"),
        (["--model", "tiny-cnd"], "did you mean 'tiny-cond'"),
        (["--model", "./no/such/folder"], "does not exist"),
        (["--dataset", "nosuch"], "unknown dataset"),
        (["--device", "tpu"], "unknown device"),
        (["--precision", "fp16"], "cpu"),
        (["--steps", "0"], "--steps"),
        (["--config", "missing.toml"], "not found"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(cli, tiny, tmp_path: Path, args: list[str], message: str) -> None:
    work = Path.cwd()
    base = ["--model", "tiny-cond", "--classes", "1", "--device", "cpu"]
    result = cli("forget", *base, *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert nothing_written(work)


def test_existing_out_is_never_overwritten(cli, tiny, tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = cli("forget", "--model", "tiny-cond", "--classes", "1", "--out", out, *FAST)
    assert result.exit_code == 2 and "already exists" in result.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["run"] or not list(tmp_path.glob(".run.partial-*"))


def test_config_file_and_set_precedence(cli, tiny, tmp_path: Path) -> None:
    config = tmp_path / "erasediff.toml"
    config.write_text('lambda_rule = "cosine"\neta = 0.3\nsteps = 2\nremain_batch_size = 8\nforget_batch_size = 8\n')
    out = tmp_path / "run"
    result = cli(
        "forget", "--model", "tiny-cond", "--classes", "1", "--config", config, "--set", "eta=0.4",
        "--steps", "1", "--grid-per-class", "0", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    options = read_manifest(out).method.options
    assert (options["lambda_rule"], options["eta"], options["steps"]) == ("cosine", 0.4, 1)
    assert not (out / "samples").exists()


def test_default_run_folder_name(cli, tiny) -> None:
    result = cli("forget", "--model", "tiny-cond", "--classes", "1", "--grid-per-class", "0", *FAST[:6])
    assert result.exit_code == 0, result.output
    (run,) = (Path.cwd() / "runs").iterdir()
    assert run.name.endswith("-erasediff-tiny-cond") and (run / "manifest.json").is_file()


def test_failure_or_interrupt_leaves_nothing_behind(cli, tiny, tmp_path: Path, monkeypatch) -> None:
    from unlearnctl.builtin.methods.erasediff import EraseDiff

    def interrupted(self, run):
        run.log(1, {"loss": 1.0})
        raise KeyboardInterrupt

    monkeypatch.setattr(EraseDiff, "unlearn", interrupted)
    result = cli("forget", "--model", "tiny-cond", "--classes", "1", "--out", tmp_path / "run", *FAST)
    assert result.exit_code == 130
    assert not any(tmp_path.glob("*run*"))


def test_a_run_folder_is_a_model(cli, tiny, tmp_path: Path) -> None:
    """Unlearning can continue from a run: --model RUN uses RUN/model and its default dataset."""
    first, second = tmp_path / "first", tmp_path / "second"
    assert cli("forget", "--model", "tiny-cond", "--classes", "1", "--out", first, *FAST).exit_code == 0
    result = cli("forget", "--model", first, "--classes", "0", "--out", second, *FAST)
    assert result.exit_code == 0, result.output
    m1, m2 = read_manifest(first), read_manifest(second)
    assert m2.weights.input_sha256 == m1.weights.output_sha256
    assert m2.weights.preset is None and m2.weights.model_path == str((first / "model").resolve())
    assert m2.dataset.name == "tiny"
