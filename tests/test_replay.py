"""`unlearnctl replay`: rerun a manifest; `--verify` requires the same output sha256 (bit-identical on CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unlearnctl.commands.forget import ForgetRequest, forget
from unlearnctl.manifest import read_manifest
from unlearnctl.rundir import record_files

FAST_SETS = ["remain_batch_size=4", "forget_batch_size=4"]


def run(out: Path, seed: int = 0, sets: list[str] | None = None, model: str = "tiny-cond") -> Path:
    request = ForgetRequest(
        model=model, classes="1", out=out, seed=seed, steps=2, grid_per_class=1,
        sets=FAST_SETS + (sets or []), command=["forget"],
    )  # fmt: skip
    return forget(request).run_dir


def edit_manifest(path: Path, change) -> None:
    """Change a recorded value, and record the manifest's new sha256 as well: these tests are about what
    replay does with the recorded inputs, not about a manifest changed behind the run's back (that is
    ``tests/test_trust_verify.py``)."""
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    record_files(path.parent, [path])


def test_replay_verify_reproduces_the_weights_bit_for_bit(cli, tiny, tmp_path: Path) -> None:
    original = run(tmp_path / "a")
    result = cli("replay", original / "manifest.json", "--verify", "--out", tmp_path / "b")
    assert result.exit_code == 0, result.output
    assert "verified" in result.stdout
    first, again = read_manifest(original), read_manifest(tmp_path / "b")
    # exact: the product's promise on one CPU type and thread count (replay reuses the recorded one);
    # docs/forget.md, "When are runs bit-identical?"
    assert again.weights.output_sha256 == first.weights.output_sha256
    assert again.replay_of.verified is True and again.replay_of.manifest == str(original / "manifest.json")
    assert again.method == first.method and again.seed == first.seed
    assert again.forget.fingerprint == first.forget.fingerprint
    assert again.command[:3] == ["replay", str(original / "manifest.json"), "--verify"]


def test_replay_of_an_unconditional_run(cli, tiny, tmp_path: Path) -> None:
    original = run(tmp_path / "a", model="tiny-uncond")
    result = cli("replay", original, "--verify", "--out", tmp_path / "b", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["verified"] is True


def test_a_run_recorded_before_an_option_existed_replays(cli, tiny, tmp_path: Path) -> None:
    """A manifest written before `lr_schedule` and `lr_warmup_steps` were added lacks them; they take their
    defaults (which keep the recorded behaviour) and the weights verify. A recorded option that resolves
    differently is still refused."""
    original = run(tmp_path / "a")

    def drop_new_options(data):
        for key in ("lr_schedule", "lr_warmup_steps"):
            del data["method"]["options"][key]

    edit_manifest(original / "manifest.json", drop_new_options)
    result = cli("replay", original, "--verify", "--out", tmp_path / "b", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["verified"] is True

    edit_manifest(original / "manifest.json", lambda d: d["method"]["options"].update(target="auto"))
    result = cli("replay", original, "--verify", "--out", tmp_path / "c")
    assert result.exit_code != 0 and "resolves the recorded options differently" in result.stderr


def test_seed_and_options_change_the_output_hash(tiny, tmp_path: Path) -> None:
    base = read_manifest(run(tmp_path / "a")).weights.output_sha256
    assert read_manifest(run(tmp_path / "b")).weights.output_sha256 == base  # exact: same seed, ops, threads
    assert read_manifest(run(tmp_path / "c", seed=1)).weights.output_sha256 != base
    assert read_manifest(run(tmp_path / "d", sets=["lambda=0.5"])).weights.output_sha256 != base


def test_a_different_output_fails_verification(cli, tiny, tmp_path: Path) -> None:
    original = run(tmp_path / "a")
    edit_manifest(original / "manifest.json", lambda d: d["weights"].update(output_sha256="0" * 64))
    result = cli("replay", original, "--verify", "--out", tmp_path / "b")
    assert result.exit_code == 1
    assert "output weights differ" in result.stderr
    assert read_manifest(tmp_path / "b").replay_of.verified is False  # kept for inspection


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["dataset"].update(fingerprint="0" * 64), "dataset 'tiny' differs"),
        (lambda d: d["forget"].update(fingerprint="0" * 64), "different forget set"),
        (lambda d: d["weights"].update(input_sha256="0" * 64), "input weights"),
    ],
)
def test_changed_inputs_are_refused_before_any_work(cli, tiny, tmp_path: Path, change, message: str) -> None:
    original = run(tmp_path / "a")
    edit_manifest(original / "manifest.json", change)
    result = cli("replay", original, "--verify", "--out", tmp_path / "b")
    assert result.exit_code == 1
    assert message in result.stderr
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".b.partial-*"))


def test_verify_on_another_device_type_is_refused(cli, tiny, tmp_path: Path) -> None:
    original = run(tmp_path / "a")
    edit_manifest(original / "manifest.json", lambda d: d["environment"].update(device="cuda"))
    result = cli("replay", original, "--verify", "--device", "cpu", "--out", tmp_path / "b")
    assert result.exit_code == 2
    assert "cannot be bit-identical" in result.stderr
    assert not (tmp_path / "b").exists()


def test_environment_differences_are_warned_about(cli, tiny, tmp_path: Path) -> None:
    original = run(tmp_path / "a")
    edit_manifest(original / "manifest.json", lambda d: d["environment"]["packages"].update(diffusers="0.1.0"))
    result = cli("replay", original, "--out", tmp_path / "b")
    assert result.exit_code == 0, result.output
    assert "warning: environment differs from the recorded run: package diffusers: recorded 0.1.0" in result.stderr


def test_replay_needs_a_forget_manifest(cli, tiny, tmp_path: Path) -> None:
    original = run(tmp_path / "a")
    edit_manifest(original / "manifest.json", lambda d: d.update(kind="train"))
    result = cli("replay", original / "manifest.json")
    assert result.exit_code == 2 and "replay reruns `forget` runs only" in result.stderr
    missing = cli("replay", tmp_path / "nothing" / "manifest.json")
    assert missing.exit_code == 2 and "no manifest" in missing.stderr
