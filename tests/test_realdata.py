"""Real-world datasets read from tiny stand-in files in their publishers' exact formats.

Every loader runs its real code path (torchvision's md5-checked CIFAR-10 reader included); only the
files are small. See ``unlearnctl.testing.stand_ins`` for how each format is written.
"""

from __future__ import annotations

import os
import pickle
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from unlearnctl import UsageError
from unlearnctl.builtin import realdata as rd
from unlearnctl.data import files as dio
from unlearnctl.paths import cache_dir, data_dir, dataset_folder
from unlearnctl.testing import stand_ins as si

# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(realdata_files: Path) -> Path:
    """One datasets folder with every stand-in (conftest's ``realdata_files``; read-only for the tests)."""
    return realdata_files


def copy_dataset(files: Path, sub: str, dest: Path) -> Path:
    shutil.copytree(files / sub, dest / sub)
    return dest


def load_quiet(dataset, split, folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dio.DataWarning)
        return dataset.load(split, folder)


# --- paths -------------------------------------------------------------------------------------


def test_data_and_cache_dirs_follow_env_then_platformdirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNLEARNCTL_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("UNLEARNCTL_CACHE_DIR", str(tmp_path / "c"))
    assert data_dir() == tmp_path / "d" and cache_dir() == tmp_path / "c"
    monkeypatch.delenv("UNLEARNCTL_DATA_DIR")
    monkeypatch.delenv("UNLEARNCTL_CACHE_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    if sys.platform.startswith("linux"):
        assert data_dir() == tmp_path / "xdg-data" / "unlearnctl" / "datasets"
        assert cache_dir() == tmp_path / "xdg-cache" / "unlearnctl"


def test_dataset_folder_is_sub_folder_then_the_folder_itself(tmp_path: Path) -> None:
    (tmp_path / "a" / "cifar10" / "x").mkdir(parents=True)
    (tmp_path / "b" / "x").mkdir(parents=True)
    looks = lambda p: (p / "x").is_dir()  # noqa: E731
    assert dataset_folder(tmp_path / "a", "cifar10", looks) == tmp_path / "a" / "cifar10"
    assert dataset_folder(tmp_path / "b", "cifar10", looks) == tmp_path / "b"
    assert dataset_folder(tmp_path / "none", "cifar10", looks) == tmp_path / "none" / "cifar10"


def test_default_data_dir_is_used_without_data_dir(files: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNLEARNCTL_DATA_DIR", str(files))
    assert len(rd.ImageFolder().load("train")) + len(rd.ImageFolder().load("test")) == 12


# --- registration ------------------------------------------------------------------------------


def test_datasets_are_registered_through_the_plugin_hooks() -> None:
    from unlearnctl.registry import get_registry

    registry = get_registry()
    for name in ("cifar10", "celeba", "celeba-hq", "utkface", "imagefolder"):
        info = registry.get("dataset", name)
        assert "realdata" in info.provider and info.description
        assert all(f.description for f in info.cls.Options.model_fields.values())
    dataset = registry.create("dataset", "utkface", {"label_field": "gender"})
    assert dataset.options.label_field == "gender"


# --- CIFAR-10 ----------------------------------------------------------------------------------


def test_cifar10_reads_the_official_batches_through_torchvision(files: Path, official_md5: None) -> None:
    train = rd.Cifar10().load("train", files)
    test = rd.Cifar10().load("test", files)
    assert (len(train), len(test)) == (20, 6)
    assert train.ids[:2] == ["cifar10-train-00000", "cifar10-train-00001"] and test.ids[0] == "cifar10-test-00000"
    assert train.class_names == si.CIFAR10_NAMES
    with open(files / "cifar10" / rd.CIFAR10_BASE / "data_batch_2", "rb") as fh:
        batch = pickle.load(fh, encoding="latin1")
    image, label = train[4]  # first image of data_batch_2 (4 per batch)
    expected = torch.from_numpy(batch["data"][0].reshape(3, 32, 32)).float() / 127.5 - 1
    assert torch.equal(image, expected) and label == batch["labels"][0]
    assert train.metadata[4] == {"label": label, "class_name": si.CIFAR10_NAMES[label]}
    assert train.labels == [m["label"] for m in train.metadata]
    assert train.fingerprint() == rd.Cifar10().load("train", files).fingerprint() != test.fingerprint()


def test_cifar10_accepts_a_torchvision_root_and_resizes(files: Path, official_md5: None) -> None:
    data = rd.Cifar10(rd.Cifar10.Options(resolution=16)).load("test", files / "cifar10")
    image, _ = data[0]
    assert image.shape == (3, 16, 16) and data.image_size == 16 and -1 <= image.min() <= image.max() <= 1
    assert data.fingerprint() != rd.Cifar10().load("test", files).fingerprint()


def test_cifar10_rejects_files_that_fail_the_md5_check(files: Path, tmp_path: Path, official_md5: None) -> None:
    copy_dataset(files, "cifar10", tmp_path)
    batch = tmp_path / "cifar10" / rd.CIFAR10_BASE / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:-1] + b"\0")
    with pytest.raises(UsageError, match="md5"):
        rd.Cifar10(rd.Cifar10.Options(download=False)).load("train", tmp_path)


def test_cifar10_missing_files_explain_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UsageError, match=r"CIFAR-10 not found in .*cifar-10-python.tar.gz"):
        rd.Cifar10(rd.Cifar10.Options(download=False)).load("train", tmp_path)

    import urllib.error

    import torchvision.datasets.cifar as tv_cifar

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", offline)
    with pytest.raises(UsageError, match=r"cannot download CIFAR-10 into .*no network.*extract it into") as info:
        rd.Cifar10().load("train", tmp_path)
    assert "\n" not in str(info.value)


# --- CelebA ------------------------------------------------------------------------------------


def test_celeba_has_the_40_attributes_and_official_partitions(files: Path) -> None:
    names, _, values = rd.read_attribute_file(files / "celeba" / "list_attr_celeba.txt")
    assert tuple(names) == rd.CELEBA_ATTRIBUTES and len(names) == 40 and set(np.unique(values)) <= {0, 1}
    train = rd.CelebA().load("train", files)
    test = rd.CelebA().load("test", files)
    assert train.ids == [f"{i:06d}.jpg" for i in range(1, 7)] and test.ids == [f"{i:06d}.jpg" for i in range(9, 13)]
    with_valid = rd.CelebA(rd.CelebA.Options(train_includes_valid=True)).load("train", files)
    assert len(with_valid) == 8
    row = train.metadata[0]
    assert set(rd.CELEBA_ATTRIBUTES) < set(row) and row["label"] == -1 and train.class_names == []
    assert [m["Eyeglasses"] for m in train.metadata] == [1, 0, 0, 1, 0, 0]
    assert row == dict(zip(names, values[0].tolist(), strict=True)) | {"label": -1}
    image, label = train[0]
    assert image.shape == (3, 64, 64) and label == -1 and -1 <= image.min() <= image.max() <= 1


def test_celeba_label_attribute(files: Path) -> None:
    data = rd.CelebA(rd.CelebA.Options(label_attribute="Eyeglasses", resolution=32)).load("test", files)
    assert data.labels == [m["Eyeglasses"] for m in data.metadata]
    assert data.class_names == ["not Eyeglasses", "Eyeglasses"]
    assert data[0][0].shape == (3, 32, 32)
    with pytest.raises(ValidationError, match="did you mean 'Eyeglasses'"):
        rd.CelebA.Options(label_attribute="Eyeglases")


def test_celeba_reports_annotated_images_missing_on_disk(files: Path, tmp_path: Path) -> None:
    copy_dataset(files, "celeba", tmp_path)
    (tmp_path / "celeba" / "img_align_celeba" / "000002.jpg").unlink()
    with pytest.warns(dio.DataWarning, match=r"skipped 1 of 12 files: 000002.jpg \(listed in list_attr_celeba.txt"):
        data = rd.CelebA().load("train", tmp_path)
    assert "000002.jpg" not in data.ids and data.report.skipped[0][0] == "000002.jpg"
    with pytest.raises(UsageError, match=r"000002\.jpg"):
        rd.CelebA(rd.CelebA.Options(on_bad_file="error")).load("train", tmp_path)


def test_celeba_damaged_annotation_files_are_refused(files: Path, tmp_path: Path) -> None:
    copy_dataset(files, "celeba", tmp_path)
    attr = tmp_path / "celeba" / "list_attr_celeba.txt"
    attr.write_text("\n".join(attr.read_text().splitlines()[:-2]) + "\n")
    with pytest.raises(UsageError, match="announces 12 images but lists 10"):
        rd.CelebA().load("train", tmp_path)
    (tmp_path / "celeba" / "list_eval_partition.txt").unlink()
    shutil.copy(files / "celeba" / "list_attr_celeba.txt", attr)
    with pytest.raises(UsageError, match=r"no list_eval_partition\.txt"):
        rd.CelebA().load("train", tmp_path)


def test_celeba_hq_uses_official_partitions_through_the_mapping(files: Path) -> None:
    options = rd.CelebAHQ.Options(resolution=32)
    assert rd.CelebAHQ().options.resolution == 256
    test = rd.CelebAHQ(options).load("test", files)
    train = rd.CelebAHQ(options).load("train", files)
    assert test.ids == ["8.jpg", "9.jpg"] and len(train) == 8
    assert [m["Eyeglasses"] for m in test.metadata] == [1, 0] and test[0][0].shape == (3, 32, 32)


def test_celeba_hq_without_mapping_uses_a_fixed_hash_split(tmp_path: Path) -> None:
    si.write_celeba_hq(tmp_path, n=30, with_mapping=False)
    options = rd.CelebAHQ.Options(resolution=16, test_fraction=0.3)
    test = rd.CelebAHQ(options).load("test", tmp_path).ids
    train = rd.CelebAHQ(options).load("train", tmp_path).ids
    assert sorted(test + train, key=lambda f: int(f.split(".")[0])) == [f"{i}.jpg" for i in range(30)]
    assert test == [f for f in (f"{i}.jpg" for i in range(30)) if dio.hash_split(f, 0.3) == "test"] != []


# --- UTKFace -----------------------------------------------------------------------------------


def test_utkface_names_are_parsed_or_rejected_with_a_reason() -> None:
    assert rd.parse_utkface_name("26_1_2_20170116174525125.jpg.chip.jpg") == {"age": 26, "gender": 1, "race": 2}
    assert rd.parse_utkface_name("1_0_0_20161219140623097.jpg") == {"age": 1, "gender": 0, "race": 0}
    assert "3 fields" in rd.parse_utkface_name("39_1_20170116174525125.jpg.chip.jpg")
    assert "gender 3" in rd.parse_utkface_name("20_3_0_20170116174525125.jpg.chip.jpg")
    assert "race 5" in rd.parse_utkface_name("20_0_5_20170116174525125.jpg.chip.jpg")


def test_utkface_reports_malformed_names_by_name_with_a_count(files: Path) -> None:
    with pytest.warns(dio.DataWarning) as caught:
        train = rd.UTKFace().load("train", files)
    message = str(caught[0].message)
    assert "skipped 3 of 23 files" in message
    assert all(name in message for name in si.UTKFACE_REAL_BAD_NAMES)
    assert [item.split("/")[-1] for item, _ in train.report.skipped] == list(si.UTKFACE_REAL_BAD_NAMES)
    test = load_quiet(rd.UTKFace(), "test", files)
    assert sorted(train.ids + test.ids) == sorted(si.utkface_names()) and not set(train.ids) & set(test.ids)
    with pytest.raises(UsageError, match=r"skipped 3 of 23 files: UTKFace/39_1_20170116174525125.jpg.chip.jpg"):
        rd.UTKFace(rd.UTKFace.Options(on_bad_file="error")).load("train", files)


def test_utkface_metadata_and_label_fields(files: Path) -> None:
    data = load_quiet(rd.UTKFace(), "train", files)
    for item_id, meta in zip(data.ids, data.metadata, strict=True):
        age, gender, race = (int(x) for x in item_id.split("_")[:3])
        assert (meta["age"], meta["gender"], meta["race"], meta["label"]) == (age, gender, race, race)
        assert meta["age_bin"] == min(age // 20, 4)
    assert data.class_names == ["White", "Black", "Asian", "Indian", "Others"]
    by_gender = load_quiet(rd.UTKFace(rd.UTKFace.Options(label_field="gender")), "train", files)
    assert by_gender.labels == [m["gender"] for m in data.metadata] and by_gender.class_names == ["male", "female"]
    by_age = load_quiet(rd.UTKFace(rd.UTKFace.Options(label_field="age_bin", age_bins=[0, 30])), "train", files)
    assert by_age.class_names == ["0-29", "30+"] and by_age.labels == [int(m["age"] >= 30) for m in data.metadata]
    image, label = data[0]
    assert image.shape == (3, 64, 64) and label == data.metadata[0]["race"]
    with pytest.raises(ValidationError, match="age_bins"):
        rd.UTKFace.Options(age_bins=[10, 5])


def test_utkface_ids_and_split_do_not_depend_on_where_the_folder_is(files: Path) -> None:
    whole = load_quiet(rd.UTKFace(), "test", files)
    inner = load_quiet(rd.UTKFace(), "test", files / "utkface" / "UTKFace")
    assert whole.ids == inner.ids and whole.fingerprint() != ""


def test_utkface_duplicate_names_across_releases_are_reported(tmp_path: Path) -> None:
    names = si.utkface_names(4)
    si.write_utkface(tmp_path, names, sub="UTKFace")
    si.write_utkface(tmp_path, names[:1], sub="crop_part1")
    data = load_quiet(rd.UTKFace(rd.UTKFace.Options(test_fraction=0.0)), "train", tmp_path)
    assert len(data) == 4 and "keep one UTKFace release" in data.report.skipped[0][1]


# --- imagefolder -------------------------------------------------------------------------------


def test_imagefolder_class_sub_folders(files: Path) -> None:
    train = rd.ImageFolder().load("train", files)
    test = rd.ImageFolder().load("test", files)
    assert train.class_names == ["cat", "dog", "fish"] and len(train) + len(test) == 12
    assert not set(train.ids) & set(test.ids) and all(dio.hash_split(i, 0.1) == "test" for i in test.ids)
    for item_id, meta in zip(train.ids, train.metadata, strict=True):
        assert meta["class_name"] == item_id.split("/")[0]
        assert meta["label"] == train.class_names.index(meta["class_name"])


def test_imagefolder_train_and_test_folders(tmp_path: Path) -> None:
    si.write_imagefolder(tmp_path, layout="split")
    (tmp_path / "imagefolder" / "train" / "stray.png").write_bytes(
        (tmp_path / "imagefolder" / "train" / "cat" / "img_000.png").read_bytes()
    )
    with pytest.warns(dio.DataWarning, match=r"train/stray.png \(image outside the class sub-folders\)"):
        test = rd.ImageFolder().load("test", tmp_path)
    assert test.ids == ["test/cat/img_003.png", "test/dog/img_003.png", "test/fish/img_003.png"]
    assert test.labels == [0, 1, 2]


def test_imagefolder_metadata_csv(tmp_path: Path) -> None:
    si.write_imagefolder(tmp_path, layout="csv")
    plain = rd.ImageFolder().load("test", tmp_path)
    assert plain.ids == ["cat-3", "dog-3", "fish-3"] and plain.labels == [-1, -1, -1]
    assert plain.metadata[0] == {"species": "cat", "weight": 4.5, "group": 1, "label": -1}
    options = rd.ImageFolder.Options(label_column="species", channels=1, resolution=16)
    train = rd.ImageFolder(options).load("train", tmp_path)
    assert train.class_names == ["cat", "dog", "fish"] and train.labels == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert train.metadata[3]["class_name"] == "dog" and train[0][0].shape == (1, 16, 16)
    with open(tmp_path / "imagefolder" / "metadata.csv", "a") as fh:
        fh.write("images/gone.png,gone,cat,1.0,0,train\n")
    with pytest.warns(dio.DataWarning, match=r"images/gone.png \(listed in metadata.csv but missing\)"):
        rd.ImageFolder().load("train", tmp_path)
    with pytest.raises(UsageError, match="no column 'kind'"):
        rd.ImageFolder(rd.ImageFolder.Options(label_column="kind")).load("train", tmp_path)


def test_imagefolder_without_classes_is_unlabelled(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    for i in range(12):
        si._image(np.random.default_rng(i), 20, 30, (i * 20, 0, 0)).save(folder / f"{i:02d}.jpg")
    (folder / "notes.txt").write_text("not an image")
    data = rd.ImageFolder(rd.ImageFolder.Options(test_fraction=0.0)).load("train", folder)
    assert len(data) == 12 and data.class_names == [] and set(data.labels) == {-1} and data[0][0].shape == (3, 64, 64)
    with pytest.raises(UsageError, match="no images in split 'test'"):
        rd.ImageFolder(rd.ImageFolder.Options(test_fraction=0.0)).load("test", folder)


# --- streaming ---------------------------------------------------------------------------------


def test_file_sets_decode_nothing_until_indexed(files: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    real_open = dio.Image.open
    monkeypatch.setattr(dio.Image, "open", lambda path, *a, **k: opened.append(str(path)) or real_open(path, *a, **k))
    data = rd.CelebA().load("train", files)
    assert opened == []
    data[2]
    assert opened == [str(files / "celeba" / "img_align_celeba" / "000003.jpg")]


def test_file_sets_pickle_and_stream_through_dataloader_workers(files: Path) -> None:
    data = load_quiet(rd.UTKFace(), "train", files)
    clone = pickle.loads(pickle.dumps(data))
    assert clone.ids == data.ids and torch.equal(clone[3][0], data[3][0])
    loader = torch.utils.data.DataLoader(data, batch_size=5, num_workers=1)
    images, labels = next(iter(loader))
    assert torch.equal(images, torch.stack([data[i][0] for i in range(5)])) and labels.tolist() == data.labels[:5]


def test_unreadable_images_fail_with_the_file_name(tmp_path: Path) -> None:
    si.write_imagefolder(tmp_path, per_class=2)
    (tmp_path / "imagefolder" / "dog" / "img_000.png").write_bytes(b"not a png")
    data = rd.ImageFolder(rd.ImageFolder.Options(test_fraction=0.0)).load("train", tmp_path)
    with pytest.raises(UsageError, match=r"cannot read image .*dog/img_000.png"):
        data[data.ids.index("dog/img_000.png")]


# --- fingerprints ------------------------------------------------------------------------------


def test_fingerprint_covers_bytes_not_mtimes_and_reuses_cached_hashes(
    files: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy_dataset(files, "imagefolder", tmp_path)
    first = rd.ImageFolder().load("train", tmp_path)
    fingerprint = first.fingerprint()
    assert list((cache_dir() / "file-sha256").glob("*.json"))
    # 1. same bytes, new modification time: same fingerprint
    image = tmp_path / "imagefolder" / first.ids[0]
    os.utime(image, ns=(1_000_000_000, 1_000_000_000))
    assert rd.ImageFolder().load("train", tmp_path).fingerprint() == fingerprint
    # 2. unchanged files are not hashed again
    monkeypatch.setattr(dio, "_sha256_file", lambda path: pytest.fail(f"re-hashed {path}"))
    assert rd.ImageFolder().load("train", tmp_path).fingerprint() == fingerprint
    monkeypatch.undo()
    # 3. other bytes, other fingerprint; other preprocessing, other fingerprint
    si._image(np.random.default_rng(99), 24, 24, (0, 0, 0)).save(image)
    changed = rd.ImageFolder().load("train", tmp_path).fingerprint()
    assert changed != fingerprint
    assert rd.ImageFolder(rd.ImageFolder.Options(resolution=32)).load("train", tmp_path).fingerprint() != changed


def test_fingerprint_of_a_subset_depends_on_its_ids(files: Path) -> None:
    data = rd.ImageFolder().load("train", files)
    a, b = data.subset(data.ids[:3]), data.subset(data.ids[3:6])
    assert a.fingerprint() != b.fingerprint() and a.fingerprint() == data.subset(data.ids[:3]).fingerprint()


# --- selectors on real metadata ----------------------------------------------------------------


def test_where_and_attribute_selectors_read_the_real_metadata(files: Path) -> None:
    from unlearnctl import split_forget
    from unlearnctl.registry import get_registry

    registry = get_registry()

    def select(name: str, argument: str, data) -> set[str]:
        cls = registry.get("selector", name).cls
        return registry.create("selector", name, cls.parse_argument(argument)).select(data)

    faces = load_quiet(rd.UTKFace(), "train", files)
    asian = select("where", "race=2", faces)
    assert asian == {i for i in faces.ids if i.split("_")[2] == "2"} != set()
    women = select("where", "gender=1", faces)
    split = split_forget(faces, asian | women)
    assert set(split.forget.ids) == asian | women and len(split.remain) == len(faces) - len(asian | women)

    celeba = rd.CelebA().load("train", files)
    glasses = select("attribute", "Eyeglasses", celeba)
    assert glasses == {"000001.jpg", "000004.jpg"} == select("where", "Eyeglasses=1", celeba)
    assert select("attribute", "Eyeglasses=false", celeba) == set(celeba.ids) - glasses
