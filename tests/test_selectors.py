"""Built-in selectors: classes, indices, random, where, attribute -- and their errors."""

from __future__ import annotations

import pytest
import torch

from unlearnctl import OptionError, TensorImageSet, UnknownComponentError, UsageError
from unlearnctl.inputs import build_forget_ids, select_forget
from unlearnctl.testing.tiny import tiny_image_set


@pytest.fixture
def data():
    return tiny_image_set(n_per_class=4, num_classes=3)  # 12 items, labels 0,1,2,0,1,2,...


def ids_with(data, label):
    return {i for i, lbl in zip(data.ids, data.labels, strict=True) if lbl == label}


def test_classes_by_id_and_name_and_union(data):
    assert build_forget_ids(data, ["classes:1"]) == ids_with(data, 1)
    assert build_forget_ids(data, classes="0,2") == ids_with(data, 0) | ids_with(data, 2)
    named = TensorImageSet(data.images, data.ids, data.metadata, ["cat", "dog", "owl"], name="pets")
    assert build_forget_ids(named, ["classes:dog"]) == ids_with(data, 1)
    # repeated --forget is a union
    assert build_forget_ids(data, ["classes:0", "classes:1"]) == ids_with(data, 0) | ids_with(data, 1)


def test_class_that_does_not_exist(data):
    with pytest.raises(UsageError, match=r"class '7' does not exist .*0\.\.2"):
        build_forget_ids(data, ["classes:7"])
    with pytest.raises(UsageError, match="class 'cow' does not exist"):
        build_forget_ids(data, ["classes:cow"])


def test_all_classes_leave_nothing_to_remain(data):
    with pytest.raises(UsageError, match="nothing to remain"):
        build_forget_ids(data, ["classes:0,1,2"])
    # a union of selectors that covers everything is refused too
    with pytest.raises(UsageError, match="nothing would remain"):
        build_forget_ids(data, ["classes:0,1", "where:label=2"])


def test_class_with_no_items_is_an_empty_forget_set(data):
    subset = data.subset(ids_with(data, 0) | ids_with(data, 1))
    with pytest.raises(UsageError, match="empty"):
        build_forget_ids(subset, ["classes:2"])


def test_nothing_asked_and_unknown_selector(data):
    with pytest.raises(UsageError, match="nothing to forget"):
        build_forget_ids(data, [])
    with pytest.raises(UnknownComponentError, match="did you mean 'classes'"):
        build_forget_ids(data, ["clases:1"])


def test_indices_file_ids_positions_and_comments(data, tmp_path):
    f = tmp_path / "forget.txt"
    f.write_text(f"# forget these\n{data.ids[3]}\n\n{data.ids[5]}  # trailing comment\n0\n")
    assert build_forget_ids(data, [f"indices:{f}"]) == {data.ids[3], data.ids[5], data.ids[0]}
    assert build_forget_ids(data, [f"indices:file={f}"]) == {data.ids[3], data.ids[5], data.ids[0]}


def test_bad_indices_files(data, tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        build_forget_ids(data, [f"indices:{tmp_path / 'missing.txt'}"])
    bad = tmp_path / "bad.txt"
    bad.write_text(f"{data.ids[0]}\ntiny-9999\n99\n")
    with pytest.raises(UsageError, match=r"2 line\(s\) .* \(e\.g\. tiny-9999, 99\)"):
        build_forget_ids(data, [f"indices:{bad}"])
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    with pytest.raises(UsageError, match="empty"):
        build_forget_ids(data, [f"indices:{empty}"])
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(UsageError, match="cannot read"):
        build_forget_ids(data, [f"indices:{binary}"])


def test_random_is_seeded_and_sized(data):
    a = build_forget_ids(data, ["random:0.25"])
    assert len(a) == 3 and a <= set(data.ids)
    assert build_forget_ids(data, ["random:0.25"]) == a
    assert build_forget_ids(data, ["random:fraction=0.25;seed=0"]) == a
    others = [build_forget_ids(data, [f"random:0.25;seed={s}"]) for s in range(1, 6)]
    assert any(o != a for o in others)
    # independent of the dataset's item order
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(1)).tolist()
    shuffled = TensorImageSet(
        data.images[perm], [data.ids[i] for i in perm], [data.metadata[i] for i in perm], data.class_names
    )
    assert build_forget_ids(shuffled, ["random:0.25"]) == a


@pytest.mark.parametrize("fraction", ["0", "1", "1.5", "-0.1", "abc"])
def test_random_fraction_out_of_range(data, fraction):
    with pytest.raises(OptionError, match="fraction"):
        build_forget_ids(data, [f"random:{fraction}"])


def test_random_fraction_too_small_for_the_set(data):
    with pytest.raises(UsageError, match="rounds to 0"):
        build_forget_ids(data, ["random:0.01"])
    with pytest.raises(UsageError, match="nothing would remain"):
        build_forget_ids(data, ["random:0.99"])


def test_where_values_types_and_errors(data):
    assert build_forget_ids(data, ["where:label=1"]) == ids_with(data, 1)
    assert build_forget_ids(data, ["where:label=0,2"]) == ids_with(data, 0) | ids_with(data, 2)
    assert build_forget_ids(data, ["where:odd=true"]) == ids_with(data, 1)
    assert build_forget_ids(data, ["where:field=parity;values=1"]) == ids_with(data, 1)
    with pytest.raises(UsageError, match=r"no item .* has metadata field 'race': fields are label, odd, parity"):
        build_forget_ids(data, ["where:race=2"])
    with pytest.raises(UsageError, match="values seen are 0, 1, 2"):
        build_forget_ids(data, ["where:label=5"])
    with pytest.raises(OptionError, match="FIELD=VALUE"):
        build_forget_ids(data, ["where:label"])


def test_attribute_in_celeba_encodings():
    meta = [
        {"label": -1, "attributes": {"Eyeglasses": 1, "Smiling": -1}},
        {"label": -1, "attributes": {"Eyeglasses": -1, "Smiling": 1}},
        {"label": -1, "Eyeglasses": True, "Smiling": 0},
        {"label": -1, "Eyeglasses": "0", "Smiling": "1"},
    ]
    faces = TensorImageSet(torch.zeros(4, 3, 8, 8), [f"f{i}" for i in range(4)], meta, [], name="faces")
    assert build_forget_ids(faces, ["attribute:Eyeglasses"]) == {"f0", "f2"}
    assert build_forget_ids(faces, ["attribute:Eyeglasses=false"]) == {"f1", "f3"}
    assert build_forget_ids(faces, ["attribute:attribute=Smiling;value=true"]) == {"f1", "f3"}
    with pytest.raises(UsageError, match="no boolean attribute 'Hat': attributes are Eyeglasses, Smiling"):
        build_forget_ids(faces, ["attribute:Hat"])


def test_selections_record_resolved_options(data):
    ids, selections = select_forget(data, ["random:0.25;seed=4"], classes="1")
    assert [(s.name, s.argument) for s in selections] == [("classes", "1"), ("random", "0.25;seed=4")]
    assert selections[0].options == {"classes": ["1"]}
    assert selections[1].options == {"fraction": 0.25, "seed": 4}
    assert ids == ids_with(data, 1) | build_forget_ids(data, ["random:0.25;seed=4"])


def test_every_selector_is_listed(cli):
    result = cli("list", "selectors")
    assert result.exit_code == 0
    for name in ("classes", "indices", "random", "where", "attribute"):
        assert name in result.stdout
