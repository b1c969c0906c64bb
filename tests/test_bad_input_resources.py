"""Bounded resources: `sample` streams to disk batch by batch (the same files as generating everything at
once), refuses a --num that cannot fit on the disk, and `forget --grid-per-class` has a ceiling."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unlearnctl import UsageError
from unlearnctl.commands import sample as sample_cmd
from unlearnctl.commands.sample import (
    GRID_MAX_IMAGES,
    GridImages,
    SamplePlan,
    Streamed,
    sample_to_folder,
    write_json_object,
)
from unlearnctl.grids import save_grid, save_labelled_grid
from unlearnctl.sampling import SampleOptions, class_labels_for, generate, save_images
from unlearnctl.testing.tiny import tiny_model


def _all_at_once(model, out: Path, num: int, class_id, options: SampleOptions, seed: int) -> None:
    """What `sample` wrote before it streamed (the reference): every image generated in one call, then the
    PNGs, the grid of all images and samples.json from the whole lists."""
    labels = class_labels_for(model, num, class_id)
    images = generate(model, labels, num, options, seed)
    out.mkdir()
    files = save_images(images, out, labels, model.class_names)
    names = model.class_names or [str(c) for c in range(model.num_classes)]
    if labels is not None and class_id is None:
        per_row = math.ceil(num / model.num_classes)
        rows, row_labels = [], []
        blank = -torch.ones_like(images[0])
        for c in range(model.num_classes):
            row = images[labels == c]
            if len(row):
                rows.append(torch.cat([row, blank.expand(per_row - len(row), *blank.shape)]))
                row_labels.append(names[c])
        save_labelled_grid(torch.cat(rows), row_labels, out / "grid.png", nrow=per_row)
    else:
        save_grid(images, out / "grid.png", nrow=math.ceil(math.sqrt(num)))
    info = {
        "model": model.source,
        "num": num,
        "class": None if class_id is None else {"id": class_id, "name": names[class_id] if names else None},
        "seed": seed,
        **options.model_dump(mode="json"),
        "device": "cpu",
        "seconds": 0.0,
        "files": [p.name for p in files],
        "labels": None if labels is None else labels.tolist(),
    }
    (out / "samples.json").write_text(json.dumps(info, indent=2) + "\n")


def _without_seconds(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.strip().startswith('"seconds"'))


@pytest.mark.parametrize(
    ("conditional", "class_id", "sampler", "eta"),
    [
        (True, None, "ddim", 0.0),  # the default: no step noise
        (True, None, "ddim", 0.5),  # step noise per image, from the draw's step seed
        (True, 2, "ddpm", 0.0),
        (False, None, "ddpm", 0.0),
    ],
)
def test_streamed_sample_writes_the_same_files_as_all_at_once(tmp_path, conditional, class_id, sampler, eta):
    # batch_size 3 makes blocks of lcm(3, 16) = 48 images: 100 images are three blocks, so the noise is drawn
    # in pieces and (ddpm, eta > 0) the step-noise generator is advanced. Same ops on the same batches of 3,
    # so the images are bit-identical, and so are the PNG bytes.
    model = tiny_model(conditional=conditional, num_classes=3)
    options = SampleOptions(sampler=sampler, steps=3, eta=eta, batch_size=3)
    sample_to_folder(model, tmp_path / "streamed", 100, class_id, options, seed=4)
    _all_at_once(model, tmp_path / "whole", 100, class_id, options, seed=4)
    streamed = sorted(p.name for p in (tmp_path / "streamed").iterdir())
    assert streamed == sorted(p.name for p in (tmp_path / "whole").iterdir())
    assert len(streamed) == 102
    for name in streamed:
        a, b = (tmp_path / "streamed" / name).read_bytes(), (tmp_path / "whole" / name).read_bytes()
        if name == "samples.json":  # the same text but for the measured time
            assert _without_seconds(a.decode()) == _without_seconds(b.decode())
        else:
            assert a == b, name


def test_sample_memory_does_not_grow_with_num(tmp_path, monkeypatch):
    """No call generates more than one block, and the grid keeps at most GRID_MAX_IMAGES images."""
    model = tiny_model(num_classes=3)
    calls: list[int] = []
    real = sample_cmd.sample

    def counting(model, num, *args, **kwargs):
        calls.append(num)
        return real(model, num, *args, **kwargs)

    monkeypatch.setattr(sample_cmd, "sample", counting)
    monkeypatch.setattr(sample_cmd, "GRID_MAX_IMAGES", 30)
    result = sample_to_folder(model, tmp_path / "s", 200, None, SampleOptions(steps=1, batch_size=16), seed=0)
    assert calls == [16] * 12 + [8]
    assert len(result.files) == 200 and result.files[199] == tmp_path / "s" / "0199_2.png"
    assert result.labels == class_labels_for(model, 200).tolist()
    assert len(list((tmp_path / "s").glob("0*.png"))) == 200


@pytest.mark.parametrize("class_id", [None, 1])
def test_grid_keeps_a_bounded_number_of_images(class_id):
    model = tiny_model(num_classes=3)
    plan = SamplePlan(model, 100_000, class_id)
    grid = GridImages(plan)
    for start in range(0, 100_000, 4096):
        stop = min(100_000, start + 4096)
        labels = plan.labels(start, stop)
        grid.add(torch.zeros(stop - start, 1, 2, 2), labels)
    kept = sum(len(t) for chunks in grid.kept.values() for t in chunks)
    assert kept == (3 * math.ceil(GRID_MAX_IMAGES / 3) if class_id is None else GRID_MAX_IMAGES)


@settings(max_examples=60, deadline=None)
@given(num=st.integers(1, 400), classes=st.integers(1, 12), data=st.data())
def test_plan_labels_match_class_labels_for(num, classes, data):
    model = tiny_model(num_classes=classes)
    plan = SamplePlan(model, num)
    start = data.draw(st.integers(0, num - 1))
    stop = data.draw(st.integers(start + 1, num))
    assert plan.labels(start, stop).tolist() == class_labels_for(model, num)[start:stop].tolist()


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=40, deadline=None)
@given(head=st.dictionaries(st.text(max_size=6), _json_values, max_size=4), items=st.lists(_json_values, max_size=4))
def test_streamed_json_is_json_dumps(head, items):
    for data in ({**head, "files": items}, {"files": items, **head}, head):
        pieces: list[str] = []
        streamed = {k: Streamed(iter(v)) if k == "files" else v for k, v in data.items()}
        write_json_object(pieces.append, streamed)
        assert "".join(pieces) == json.dumps(data, indent=2)


def test_num_larger_than_the_disk_is_refused_before_any_work(tmp_path, monkeypatch):
    model = tiny_model(num_classes=3)
    monkeypatch.setattr(sample_cmd, "free_space", lambda folder: (10_000_000, None, 4096))
    called = []
    monkeypatch.setattr(sample_cmd, "sample", lambda *a, **k: called.append(1))
    out = tmp_path / "o" / "s"
    with pytest.raises(UsageError, match=r"--num 5,000: the images need up to .* which has 10\.0 MB free"):
        sample_to_folder(model, out, 5000, None, SampleOptions(steps=1))
    monkeypatch.setattr(sample_cmd, "free_space", lambda folder: (10**12, 100, 4096))
    with pytest.raises(UsageError, match="needs 5,003 files"):
        sample_to_folder(model, out, 5000, None, SampleOptions(steps=1))
    assert not called and not (tmp_path / "o").exists()


def test_sample_cli_huge_num_is_one_line(cli, tmp_path):
    """10^12 images need petabytes: refused in one line (it used to allocate until memory ran out)."""
    r = cli("sample", "--num", str(10**12), "--steps", "1", "--out", tmp_path / "o" / "s")
    assert r.exit_code == 2, r.output
    assert r.stderr.count("\n") == 1 and "--num 1,000,000,000,000: the images need up to" in r.stderr
    assert not (tmp_path / "o").exists()


def test_sample_cli_json_lists_every_file(cli, tmp_path):
    model = tiny_model(num_classes=3)
    model.save(tmp_path / "m")
    r = cli("sample", "--model", tmp_path / "m", "--num", "5", "--steps", "1", "--out", tmp_path / "s", "--json")
    assert r.exit_code == 0, r.output
    payload = json.loads(r.stdout)
    assert payload["files"] == [str(tmp_path / "s" / n) for n in ("0000_0.png", "0001_0.png", "0002_1.png",
                                                                  "0003_1.png", "0004_2.png")]  # fmt: skip
    assert r.stdout == json.dumps(payload, indent=2, ensure_ascii=False) + "\n"


@pytest.mark.parametrize("value", ["65", "100000000"])
def test_grid_per_class_has_a_ceiling(cli, tiny, tmp_path, value):
    r = cli("forget", "--model", "tiny-cond", "--classes", "1", "--grid-per-class", value, "--out", tmp_path / "r")
    assert r.exit_code == 2, r.output
    assert r.stderr.count("\n") == 1 and "--grid-per-class" in r.stderr and "64" in r.stderr
    assert not (tmp_path / "r").exists() and not list(tmp_path.glob(".r.*"))
