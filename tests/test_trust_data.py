"""A dataset's fingerprint is of its content: paths, labels and bytes, not what a cache remembers.

The attack: swap two same-size images between class folders of an ``imagefolder`` dataset and put their
modification times back. The fast hash cache must not hide it, ``replay --verify`` and ``verify --data``
re-hash every file, and the mismatch is blamed on the dataset, not on the weights. See docs/verify.md.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unlearnctl.data.files import rehashing
from unlearnctl.inputs import load_dataset
from unlearnctl.paths import cache_dir
from unlearnctl.testing.tiny import tiny_model

OPTIONS = {"resolution": 8}


def write_classes(root: Path, per_class: int = 4) -> Path:
    """``root/imagefolder/{cat,dog}/img_k.png``: distinct 8x8 images, uncompressed, so all the same size."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(("cat", "dog")):
        (root / "imagefolder" / name).mkdir(parents=True)
        for k in range(per_class):
            pixels = rng.integers(0, 64, size=(8, 8, 3), dtype=np.uint8) + np.uint8(160 * c)
            Image.fromarray(pixels, "RGB").save(root / "imagefolder" / name / f"img_{k}.png", compress_level=0)
    sizes = {p.stat().st_size for p in (root / "imagefolder").rglob("*.png")}
    assert len(sizes) == 1, sizes  # the attack needs same-size files
    return root


def swap_keeping_times(a: Path, b: Path) -> None:
    """Exchange the bytes of ``a`` and ``b`` and give each its old access and modification times back."""
    sa, sb = a.stat(), b.stat()
    da, db = a.read_bytes(), b.read_bytes()
    a.write_bytes(db)
    b.write_bytes(da)
    os.utime(a, ns=(sa.st_atime_ns, sa.st_mtime_ns))
    os.utime(b, ns=(sb.st_atime_ns, sb.st_mtime_ns))


def fingerprint(data_dir: Path) -> str:
    return load_dataset("imagefolder", "train", data_dir / "imagefolder", OPTIONS).fingerprint()


def pair(data_dir: Path) -> tuple[Path, Path]:
    """A cat and a dog image that are both in the train split."""
    data = load_dataset("imagefolder", "train", data_dir / "imagefolder", OPTIONS)
    cat = next(f for f in data.files if f.startswith("cat/"))
    dog = next(f for f in data.files if f.startswith("dog/"))
    return data_dir / "imagefolder" / cat, data_dir / "imagefolder" / dog


def forge_cache(before: dict) -> None:
    """Rewrite the hash cache so that it vouches for the old digests under the files' current metadata."""
    for path in (cache_dir() / "file-sha256").glob("*.json"):
        stored = json.loads(path.read_text())
        for rel, entry in stored["files"].items():
            st = (Path(stored["root"]) / rel).stat()
            entry[:-1] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino][: len(entry) - 1]
            entry[-1] = before[stored["root"]]["files"][rel][-1]
        path.write_text(json.dumps(stored))


def cache_snapshot() -> dict:
    return {(s := json.loads(p.read_text()))["root"]: s for p in (cache_dir() / "file-sha256").glob("*.json")}


def test_swapping_two_files_between_classes_changes_the_fingerprint(tmp_path: Path) -> None:
    data_dir = write_classes(tmp_path / "data")
    before = fingerprint(data_dir)
    cat, dog = pair(data_dir)
    swap_keeping_times(cat, dog)
    assert fingerprint(data_dir) != before  # the cache (size + mtime) must not hide the swap
    swap_keeping_times(cat, dog)
    assert fingerprint(data_dir) == before  # content-defined: the same bytes at the same paths again


def test_the_fingerprint_covers_paths_and_contents_without_any_cache(tmp_path: Path) -> None:
    data_dir = write_classes(tmp_path / "data")
    with rehashing():
        before = fingerprint(data_dir)
        cat, dog = pair(data_dir)
        swap_keeping_times(cat, dog)
        assert fingerprint(data_dir) != before


def test_rehashing_ignores_a_forged_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir = write_classes(tmp_path / "data")
    before = fingerprint(data_dir)
    snapshot = cache_snapshot()
    cat, dog = pair(data_dir)
    swap_keeping_times(cat, dog)
    forge_cache(snapshot)
    assert fingerprint(data_dir) == before  # an ordinary load trusts the (forged) cache...
    with rehashing():
        assert fingerprint(data_dir) != before  # ...a verifying one does not
    monkeypatch.setenv("UNLEARNCTL_REHASH", "1")
    assert fingerprint(data_dir) != before


@pytest.fixture
def run(cli, tmp_path: Path) -> tuple[Path, Path]:
    """A forget run on the two-class imagefolder: (run folder, data folder)."""
    data_dir = write_classes(tmp_path / "data")
    model = tmp_path / "model"
    tiny_model(conditional=True, num_classes=2, image_size=8, channels=3).save(model)
    out = tmp_path / "run"
    result = cli(
        "forget", "--model", model, "--dataset", "imagefolder", "--data-dir", data_dir / "imagefolder",
        "--data-option", "resolution=8", "--classes", "1", "--out", out, "--steps", "2", "--device", "cpu",
        "--set", "remain_batch_size=2", "--set", "forget_batch_size=2", "--grid-per-class", "0",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out, data_dir


def test_replay_blames_the_dataset_for_a_swap_not_the_weights(cli, run, tmp_path: Path) -> None:
    out, data_dir = run
    swap_keeping_times(*pair(data_dir))
    result = cli("replay", out, "--verify", "--out", tmp_path / "again")
    assert result.exit_code == 1, result.output
    assert "dataset 'imagefolder' differs" in result.stderr and "output weights" not in result.stderr
    assert not (tmp_path / "again").exists()


def test_replay_verify_and_verify_data_rehash_past_a_forged_cache(cli, run, tmp_path: Path) -> None:
    out, data_dir = run
    snapshot = cache_snapshot()
    swap_keeping_times(*pair(data_dir))
    forge_cache(snapshot)
    result = cli("replay", out, "--verify", "--out", tmp_path / "again")
    assert result.exit_code == 1 and "dataset 'imagefolder' differs" in result.stderr, result.output
    checked = cli("verify", out, "--data")
    assert checked.exit_code == 2 and "dataset 'imagefolder'" in checked.stderr, checked.output
