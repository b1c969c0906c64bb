"""The built-in `digits` dataset: deterministic split, stable ids, labels, value range, fingerprint."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from unlearnctl.builtin.datasets import Digits, digits_split_indices


@pytest.fixture(scope="module")
def splits():
    return Digits().load("train"), Digits().load("test")


def test_split_sizes_stratified_and_disjoint(splits):
    train, test = splits
    assert len(train) + len(test) == 1797
    assert not set(train.ids) & set(test.ids)
    # stratified: every class has ~5/6 of its items in train
    counts_train, counts_test = Counter(train.labels), Counter(test.labels)
    assert sorted(counts_train) == list(range(10)) == sorted(counts_test)
    for c in range(10):
        share = counts_test[c] / (counts_train[c] + counts_test[c])
        assert 0.15 < share < 0.18, (c, share)


def test_ids_are_sklearn_indices_and_labels_match_sklearn(splits):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    train, _ = splits
    for item_id, meta, i in zip(train.ids[:50], train.metadata[:50], range(50), strict=True):
        index = int(item_id.removeprefix("digits-"))
        assert item_id == f"digits-{index:04d}"
        assert meta["label"] == int(bunch.target[index])
        expected = torch.from_numpy(bunch.images[index]).float() / 8.0 - 1.0
        # exact: pixels are integers 0..16, so k / 16 * 2 - 1 (the loader) and k / 8 - 1 are both exact in float32
        assert torch.equal(train[i][0][0], expected)


def test_split_is_deterministic_and_documented_rule():
    a, b = Digits().load("test"), Digits().load("test")
    assert a.ids == b.ids and a.fingerprint() == b.fingerprint()
    # every sixth item of each class, in sklearn order, is a test item
    targets = [0, 1, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0]
    assert digits_split_indices(targets, "test") == [6, 11]
    assert digits_split_indices(targets, "train") == [0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 12]


def test_images_format(splits):
    train, _ = splits
    x, y = train[0]
    assert x.shape == (1, 8, 8) and x.dtype == torch.float32
    assert train.images.min() == -1.0 and train.images.max() == 1.0
    assert isinstance(y, int) and train.class_names == [str(c) for c in range(10)]
    assert (train.image_size, train.channels, train.name, train.version) == (8, 1, "digits", "1")


def test_fingerprint_changes_with_content(splits):
    from unlearnctl import TensorImageSet

    train, test = splits
    assert train.fingerprint() != test.fingerprint()
    changed = train.images.clone()
    changed[0, 0, 0, 0] += 0.5
    copy = TensorImageSet(changed, train.ids, train.metadata, train.class_names, name="digits")
    same = TensorImageSet(train.images.clone(), train.ids, train.metadata, train.class_names, name="digits")
    assert copy.fingerprint() != train.fingerprint()
    assert same.fingerprint() == train.fingerprint()


def test_resize_and_rgb_options():
    data = Digits(Digits.Options(image_size=16, channels=3)).load("test")
    assert data[0][0].shape == (3, 16, 16)
    assert float(data.images.min()) >= -1.0 and float(data.images.max()) <= 1.0
    assert data.fingerprint() != Digits().load("test").fingerprint()


def test_registered_through_the_plugin_hooks(cli):
    from unlearnctl.registry import get_registry

    info = get_registry().get("dataset", "digits")
    assert info.cls is Digits and info.provider.startswith("builtin")
    result = cli("list", "datasets")
    assert result.exit_code == 0 and "digits" in result.stdout


def test_unknown_split_is_a_usage_error():
    from unlearnctl import UsageError

    with pytest.raises(UsageError, match="splits"):
        Digits().load("validation")  # type: ignore[arg-type]
