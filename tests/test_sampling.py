"""Sampling: determinism under a seed, class selection, PNG files and grids, the `sample` command."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from unlearnctl import UsageError
from unlearnctl.commands.sample import sample_to_folder
from unlearnctl.grids import save_grid
from unlearnctl.sampling import SampleOptions, class_labels_for, generate, resolve_model_class, save_images
from unlearnctl.testing.tiny import tiny_model

FAST = SampleOptions(steps=4)


def test_same_seed_same_images_other_seed_other_images():
    model = tiny_model(num_classes=3)
    labels = torch.tensor([0, 1, 2, 0])
    a = generate(model, labels, 4, FAST, seed=5)
    b = generate(model, labels, 4, FAST, seed=5)
    c = generate(model, labels, 4, FAST, seed=6)
    assert torch.equal(a, b) and not torch.equal(a, c)  # exact: same seed, same ops, same threads
    assert a.shape == (4, 1, 8, 8) and a.min() >= -1 and a.max() <= 1
    # The batch size does not change the draws (the initial noise is drawn for all images at once, DDIM with
    # eta 0 draws nothing more), so the images agree up to float32 rounding; the kernels' blocking, and thus
    # their reduction order, depends on the batch size. Derived bound: one UNet pass is off by rho = 2^-20
    # relative to its largest output (about 16 roundings of 2^-24; measured: 5e-7 = 8 roundings); guidance
    # w = 2 (eps = 3 eps_c - 2 eps_u) makes that 5 rho |eps|, |eps| <= 1.8; each DDIM step multiplies it by
    # its eps coefficient (3.9, 1.8, 0.95, 0.01 at t = 750, 500, 250, 0) and later steps by their x
    # coefficient (2.6, 1.4, 1.0): 5 * (3.9*2.6*1.4 + 1.8*1.4 + 0.95 + 0.01) * 1.8 * rho = 160 rho = 1.5e-4.
    # Random errors of rho per UNet pass, fed through this sampler in float64, moved pixels by <= 71 rho; the clamp
    # to [-1, 1] only shrinks differences. Measured: 1.2e-5 (one thread) and 1.4e-5 (two) on an AMD EPYC, beyond
    # the former atol=1e-5 (it held there only through rtol). A batching bug (per-batch noise) moves pixels by O(1).
    small = generate(model, labels, 4, SampleOptions(steps=4, batch_size=1), seed=5)
    assert torch.allclose(a, small, rtol=0, atol=2e-4)


def test_guidance_and_class_change_the_images():
    model = tiny_model(num_classes=3)
    base = generate(model, torch.tensor([0, 0]), 2, FAST, seed=0)
    assert not torch.equal(base, generate(model, torch.tensor([1, 1]), 2, FAST, seed=0))
    assert not torch.equal(base, generate(model, torch.tensor([0, 0]), 2, SampleOptions(steps=4, guidance=0), seed=0))


def test_class_labels_for_even_split_and_one_class():
    model = tiny_model(num_classes=3)
    assert class_labels_for(model, 7).tolist() == [0, 0, 0, 1, 1, 2, 2]
    assert class_labels_for(model, 3, class_id=2).tolist() == [2, 2, 2]
    assert class_labels_for(tiny_model(conditional=False), 3) is None


def test_resolve_class_by_id_or_name():
    model = tiny_model(num_classes=3)
    model.class_names = ["cat", "dog", "owl"]
    assert resolve_model_class(model, "dog") == 1 and resolve_model_class(model, "2") == 2
    with pytest.raises(UsageError, match=r"class '3' does not exist .* 0\.\.2 .*cat, dog, owl"):
        resolve_model_class(model, "3")
    with pytest.raises(UsageError, match="unconditional"):
        resolve_model_class(tiny_model(conditional=False), "1")


def test_save_images_real_size_and_grid_upscaled(tmp_path):
    images = torch.linspace(-1, 1, 6 * 64).reshape(6, 1, 8, 8)
    paths = save_images(images, tmp_path / "png", labels=torch.tensor([0, 0, 1, 1, 2, 2]), class_names=["a", "b", "c"])
    assert [p.name for p in paths] == [
        "0000_a.png",
        "0001_a.png",
        "0002_b.png",
        "0003_b.png",
        "0004_c.png",
        "0005_c.png",
    ]
    first = Image.open(paths[0])
    assert first.size == (8, 8) and first.mode == "L"
    assert first.getpixel((0, 0)) == 0  # -1 -> black
    assert Image.open(paths[-1]).getpixel((7, 7)) == 255  # +1 -> white
    grid = Image.open(save_grid(images, tmp_path / "grid.png", nrow=3))
    assert grid.width >= 3 * 48 and grid.height >= 2 * 48  # nearest-neighbour upscaled tiles


def test_sample_to_folder_writes_pngs_grid_and_info(tmp_path):
    model = tiny_model(num_classes=3)
    out = tmp_path / "s"
    result = sample_to_folder(model, out, 5, None, FAST, seed=1)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["0000_0.png", "0001_0.png", "0002_1.png", "0003_1.png", "0004_2.png", "grid.png", "samples.json"]
    info = json.loads((out / "samples.json").read_text())
    assert info["labels"] == [0, 0, 1, 1, 2] and info["seed"] == 1 and info["steps"] == 4
    assert result.files[0] == out / "0000_0.png"
    # the same seed gives byte-identical PNGs
    sample_to_folder(model, tmp_path / "t", 5, None, FAST, seed=1)
    assert (out / "0003_1.png").read_bytes() == (tmp_path / "t" / "0003_1.png").read_bytes()
    # an existing non-empty folder is refused; an empty one is fine
    with pytest.raises(UsageError, match="not an empty folder"):
        sample_to_folder(model, out, 1, 0, FAST)
    (tmp_path / "empty").mkdir()
    sample_to_folder(model, tmp_path / "empty", 2, 2, FAST)
    assert sorted(p.name for p in (tmp_path / "empty").iterdir())[:2] == ["0000_2.png", "0001_2.png"]


def test_sample_command(cli, tmp_path):
    model = tiny_model(num_classes=3)
    model.class_names = ["cat", "dog", "owl"]
    model.save(tmp_path / "m")
    out = tmp_path / "out"
    args = ("sample", "--model", tmp_path / "m", "--num", "4", "--steps", "3", "--seed", "2")
    result = cli(*args, "--class", "dog", "--out", out)
    assert result.exit_code == 0, result.output
    expected = ["0000_dog.png", "0001_dog.png", "0002_dog.png", "0003_dog.png", "grid.png"]
    assert sorted(p.name for p in out.glob("*.png")) == expected
    again = cli(*args, "--class", "1", "--out", tmp_path / "again")
    assert again.exit_code == 0
    assert (out / "0002_dog.png").read_bytes() == (tmp_path / "again" / "0002_dog.png").read_bytes()
    for bad in (["--class", "cow"], ["--sampler", "euler"], ["--num", "0"], ["--steps", "5000"]):
        r = cli(*args, *bad, "--out", tmp_path / "bad")
        assert r.exit_code == 2, (bad, r.output)
        assert r.stderr.startswith("error:") and not (tmp_path / "bad").exists()
    refused = cli(*args, "--out", out)
    assert refused.exit_code == 2 and "not an empty folder" in refused.stderr
