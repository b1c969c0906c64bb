"""``unlearnctl verify RUN`` and the same check wherever a command reads a run folder.

Every file a run wrote is recorded (sha256) in its manifest; files added later (``eval``'s metrics.json)
in ``checksums.sha256``. A changed or missing file is one line naming it, exit code 2; an unlisted one
is a warning. Runs made before the record verify what they can and say what they could not check.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from unlearnctl.manifest import read_manifest
from unlearnctl.rundir import record_files

WEIGHTS = "model/diffusion_pytorch_model.safetensors"
FAST = ["--set", "steps=2", "--set", "remain_batch_size=4", "--set", "forget_batch_size=4"]


@pytest.fixture
def run(cli, tiny, tmp_path: Path) -> Path:
    """A forget run of the tiny model with before/after grids (one image per class)."""
    out = tmp_path / "run"
    result = cli("forget", "--model", "tiny-cond", "--classes", "1", "--out", out, *FAST, "--grid-per-class", "1")
    assert result.exit_code == 0, result.output
    return out


def files_of(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def flip_byte(path: Path, at: int = -1) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def make_old(run: Path) -> None:
    """What a run folder of the previous version looks like: no per-file record in the manifest."""
    data = json.loads((run / "manifest.json").read_text())
    data.pop("files", None)
    (run / "manifest.json").write_text(json.dumps(data, indent=2))
    (run / "checksums.sha256").unlink()


# --- the record and the command -----------------------------------------------------------------------


def test_forget_records_every_file_it_wrote(run: Path) -> None:
    recorded = read_manifest(run).files
    assert set(recorded) == files_of(run) - {"manifest.json", "checksums.sha256"}
    for rel, digest in recorded.items():
        assert hashlib.sha256((run / rel).read_bytes()).hexdigest() == digest


def test_verify_checks_every_file_of_a_fresh_run(cli, run: Path) -> None:
    result = cli("verify", run, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["problems"] == [] and report["warnings"] == []
    # every file, the manifest included (its own sha256 is in checksums.sha256, the record of later files)
    assert {f["path"] for f in report["files"] if f["status"] == "ok"} == files_of(run) - {"checksums.sha256"}
    assert report["model"]["output_files_sha256"] == "ok" and report["model"]["output_sha256"] == "ok"
    human = cli("verify", run)
    assert human.exit_code == 0 and "verified" in human.stdout


@pytest.mark.parametrize("rel", [WEIGHTS, "model/config.json", "samples/forgotten-after.png", "log.jsonl"])
def test_one_changed_byte_anywhere_is_one_line_naming_the_file(cli, run: Path, rel: str) -> None:
    flip_byte(run / rel)
    line = error_line(cli("verify", run))
    assert rel in line and "changed" in line


def test_one_changed_byte_in_the_manifest_is_one_line_naming_it(cli, run: Path) -> None:
    # a digit of a value, so the manifest stays valid JSON and only its recorded sha256 can tell
    text = (run / "manifest.json").read_text()
    at = text.index('"wall_time_s": ') + len('"wall_time_s": ')
    assert text[at].isdigit()
    flip_byte(run / "manifest.json", at)
    line = error_line(cli("verify", run))
    assert "manifest.json" in line and "changed" in line


def test_a_missing_file_fails_and_an_extra_one_warns(cli, run: Path) -> None:
    (run / "notes.txt").write_text("added by hand\n")
    extra = cli("verify", run)
    assert extra.exit_code == 0 and "notes.txt" in extra.stderr and "warning:" in extra.stderr
    (run / "samples" / "kept-before.png").unlink()
    line = error_line(cli("verify", run))
    assert "samples/kept-before.png" in line and "missing" in line


def test_files_added_later_are_recorded_and_checked(cli, run: Path) -> None:
    from unlearnctl.rundir import CHECKSUMS_FILE, record_files

    (run / "metrics.json").write_text('{"results": {}}\n')
    (run / "samples" / "eval-grid.png").write_bytes(b"png")
    record_files(run, [run / "metrics.json", "samples/eval-grid.png"])
    assert "metrics.json" in (run / CHECKSUMS_FILE).read_text()
    report = json.loads(cli("verify", run, "--json").stdout)
    assert {"metrics.json", "samples/eval-grid.png"} <= {f["path"] for f in report["files"] if f["status"] == "ok"}
    (run / "metrics.json").write_text('{"results": {"forged": 1}}\n')
    assert "metrics.json" in error_line(cli("verify", run))


def test_a_later_record_cannot_vouch_for_a_changed_run_file(cli, run: Path) -> None:
    from unlearnctl.rundir import record_files

    flip_byte(run / WEIGHTS)
    record_files(run, [WEIGHTS])  # the manifest's record still wins
    assert WEIGHTS in error_line(cli("verify", run))


def test_an_old_run_verifies_what_it_can_and_says_what_it_could_not(cli, run: Path) -> None:
    make_old(run)
    result = cli("verify", run, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["model"]["output_files_sha256"] == "ok"
    unchecked = {f["path"] for f in report["files"] if f["status"] == "unchecked"}
    assert "log.jsonl" in unchecked and "samples/kept-after.png" in unchecked
    assert any("not checked" in w for w in report["warnings"])
    flip_byte(run / "log.jsonl")
    assert cli("verify", run).exit_code == 0  # nothing recorded it: reported as unchecked, not as verified
    flip_byte(run / WEIGHTS)
    line = error_line(cli("verify", run))
    assert "model" in line and "output_files_sha256" in line


def test_the_weights_state_hash_is_checked_too(cli, run: Path) -> None:
    data = json.loads((run / "manifest.json").read_text())
    data["weights"]["output_sha256"] = "0" * 64
    (run / "manifest.json").write_text(json.dumps(data))
    record_files(run, ["manifest.json"])  # a consistent record: only the weights' state hash can tell
    assert "output_sha256" in error_line(cli("verify", run))


def test_verify_of_something_else_is_one_line(cli, tmp_path: Path) -> None:
    assert "manifest" in error_line(cli("verify", tmp_path))


# --- the same check where commands read a run folder ------------------------------------------------------


def test_sample_refuses_a_changed_run_unless_told_not_to_verify(cli, run: Path, tmp_path: Path) -> None:
    flip_byte(run / "samples" / "forgotten-before.png")
    for spec in (run, run / "model"):
        line = error_line(cli("sample", "--model", spec, "-n", "1", "--steps", "1", "--out", tmp_path / "s"))
        assert "samples/forgotten-before.png" in line
    skipped = cli("sample", "--model", run, "-n", "1", "--steps", "1", "--out", tmp_path / "s", "--no-verify")
    assert skipped.exit_code == 0, skipped.output
    # --no-verify lasts one command: the next one checks again
    again = cli("sample", "--model", run, "-n", "1", "--steps", "1", "--out", tmp_path / "s2")
    assert "samples/forgotten-before.png" in error_line(again)


def test_replay_verify_checks_the_runs_own_files(cli, run: Path, tmp_path: Path) -> None:
    flip_byte(run / WEIGHTS)
    result = cli("replay", run, "--verify", "--out", tmp_path / "again")
    assert WEIGHTS in error_line(result) and "verified" not in result.stdout
    assert not (tmp_path / "again").exists()


def test_replay_of_an_intact_run_writes_a_run_that_verifies(cli, run: Path, tmp_path: Path) -> None:
    result = cli("replay", run, "--verify", "--out", tmp_path / "again")
    assert result.exit_code == 0, result.output
    assert cli("verify", tmp_path / "again").exit_code == 0


def test_eval_and_compare_refuse_a_changed_run(cli, run: Path, tmp_path: Path) -> None:
    flip_byte(run / "log.jsonl")
    assert "log.jsonl" in error_line(cli("eval", run, "-n", "2", "--steps", "1", "--out", tmp_path / "e"))
    (run / "metrics.json").write_text(json.dumps({"results": {"model": {}}, "protocol": {}}))
    assert "log.jsonl" in error_line(cli("compare", run))


def test_a_base_model_that_is_a_changed_run_is_refused(cli, tiny, run: Path, tmp_path: Path) -> None:
    flip_byte(run / WEIGHTS)
    result = cli("forget", "--model", run, "--classes", "1", "--out", tmp_path / "next", *FAST)
    assert WEIGHTS in error_line(result)


def test_copies_keep_verifying(cli, run: Path, tmp_path: Path) -> None:
    """A run folder moved or copied elsewhere verifies: the record holds relative paths only."""
    shutil.copytree(run, tmp_path / "copy")
    assert cli("verify", tmp_path / "copy").exit_code == 0


def test_a_train_run_records_and_verifies_every_file(cli, tiny, tmp_path: Path) -> None:
    out = tmp_path / "train"
    sets = ["--set", "arch=tiny", "--set", "grid_per_class=1", "--set", "batch_size=8"]
    assert cli("train", "--dataset", "tiny", "--out", out, "--steps", 2, *sets).exit_code == 0
    assert set(read_manifest(out).files) == files_of(out) - {"manifest.json", "checksums.sha256"}
    assert cli("verify", out).exit_code == 0
    flip_byte(out / "samples" / "grid.png")
    assert "samples/grid.png" in error_line(cli("verify", out))
