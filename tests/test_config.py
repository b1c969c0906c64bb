"""Option resolution: defaults < --config FILE < --set key=value, and one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
from pydantic import Field

import unlearnctl
from unlearnctl.config import load_config_file, options_table, parse_set_values, parse_value, resolve_options
from unlearnctl.errors import OptionError, UsageError


class Toy(unlearnctl.Method):
    """A method with one option of each shape."""

    name = "toy"

    class Options(unlearnctl.Options):
        lr: float = Field(1e-4, gt=0, description="learning rate")
        lambda_: float = Field(0.1, ge=0, description="weight of the forget term")
        mode: Literal["fixed", "bome"] = Field("fixed", description="lambda rule")
        steps: int = Field(100, ge=1, description="optimizer steps")
        share: float = Field(0.5, gt=0, le=1, description="a fraction")
        seed: int | None = Field(None, description="optional seed")
        classes: list[int] = Field(default_factory=lambda: [2], description="class ids")
        out: Path = Field(Path("out"), description="a folder")
        flag: bool = Field(False, description="a switch")

    def unlearn(self, run):
        pass


class Needs(unlearnctl.Selector):
    """A selector with a required option."""

    name = "needs"

    class Options(unlearnctl.Options):
        classes: list[int] = Field(description="class ids to forget")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0.1", 0.1),
        ("1e-4", 1e-4),
        ("3", 3),
        ("true", True),
        ("False", False),
        ("[1, 2]", [1, 2]),
        ("[1,2]", [1, 2]),
        ("fixed", "fixed"),
        ("'3'", "3"),
        ("no", "no"),
        ("on", "on"),
        ("2024-01-02", "2024-01-02"),
        ("null", None),
        ("", ""),
        ("a: b", {"a": "b"}),
    ],
)
def test_set_values_are_parsed_as_yaml_scalars(text, value):
    parsed = parse_value(text)
    assert parsed == value and type(parsed) is type(value)


def test_parse_set_values_splits_on_the_first_equals_and_later_pairs_win():
    assert parse_set_values(["lr=1e-3", "mode = bome", "expr=a=b", "lr=0.5"]) == {
        "lr": 0.5,
        "mode": "bome",
        "expr": "a=b",
    }


@pytest.mark.parametrize("pair", ["lr", "=3", " =x"])
def test_set_without_key_or_equals_is_an_option_error(pair):
    with pytest.raises(OptionError, match=r"write key=value"):
        parse_set_values([pair])


def test_precedence_defaults_then_config_then_set():
    options = resolve_options(Toy, config={"lr": 0.01, "steps": 7}, sets=["lr=0.02", "mode=bome"])
    assert (options.lr, options.steps, options.mode, options.lambda_) == (0.02, 7, "bome", 0.1)
    assert resolve_options(Toy, sets={"classes": [1, 3]}).classes == [1, 3]
    assert resolve_options(Toy).share == 0.5


def _one_line_error(config=None, sets=None, cls=Toy) -> str:
    with pytest.raises(OptionError) as info:
        resolve_options(cls, config=config, sets=sets)
    message = str(info.value)
    assert "\n" not in message
    assert info.value.exit_code == 2
    return message


def test_unknown_key_names_it_with_a_suggestion_and_the_options():
    message = _one_line_error(sets=["lamda=0.3"])
    assert message.startswith(
        "method 'toy': unknown option 'lamda' (did you mean 'lambda_'?); "
        "options: lr, lambda_, mode, steps, share, seed, classes, out, flag"
    )
    assert message.endswith("(see `unlearnctl show method toy`)")


def test_unknown_key_from_a_config_file_is_rejected_too():
    assert "unknown option 'zzz';" in _one_line_error(config={"zzz": 1})


def test_bad_value_names_the_key_the_value_and_what_is_allowed():
    message = _one_line_error(sets=["lr=fast"])
    assert "method 'toy': bad value for option 'lr': got 'fast'" in message
    assert "valid number" in message
    assert "allowed: float > 0" in message


def test_bad_literal_lists_the_choices():
    message = _one_line_error(sets=["mode=bmoe"])
    assert "bad value for option 'mode': got 'bmoe'" in message
    assert "allowed: 'fixed' | 'bome'" in message


@pytest.mark.parametrize(
    ("pair", "allowed"),
    [("steps=0", "allowed: int >= 1"), ("share=1.5", "allowed: 0 < float <= 1"), ("lambda_=-1", "float >= 0")],
)
def test_out_of_bounds_values_show_the_bounds(pair, allowed):
    message = _one_line_error(sets=[pair])
    assert f"got {parse_value(pair.split('=')[1])!r}" in message
    assert allowed in message


def test_several_bad_values_are_reported_on_one_line():
    message = _one_line_error(sets=["steps=0", "mode=x"])
    assert "option 'steps'" in message and "option 'mode'" in message


def test_missing_required_option():
    message = _one_line_error(cls=Needs)
    assert message.startswith("selector 'needs': option 'classes' is required; allowed: list[int]")


def test_options_table_renders_types_defaults_and_help():
    rows = {r["name"]: r for r in options_table(Toy)}
    assert list(rows) == ["lr", "lambda_", "mode", "steps", "share", "seed", "classes", "out", "flag"]
    assert {n: r["type"] for n, r in rows.items()} == {
        "lr": "float > 0",
        "lambda_": "float >= 0",
        "mode": "'fixed' | 'bome'",
        "steps": "int >= 1",
        "share": "0 < float <= 1",
        "seed": "int | None",
        "classes": "list[int]",
        "out": "path",
        "flag": "bool",
    }
    assert rows["mode"]["default"] == "fixed" and rows["classes"]["default"] == [2] and rows["out"]["default"] == "out"
    assert rows["seed"] == {
        "name": "seed",
        "type": "int | None",
        "default": None,
        "required": False,
        "help": "optional seed",
    }
    assert options_table(Needs)[0]["required"] is True


# --- config files -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "text"),
    [
        ("c.toml", 'lr = 0.01\nmode = "bome"\nclasses = [1, 3]\n'),
        ("c.yaml", "lr: 0.01\nmode: bome\nclasses: [1, 3]\n"),
        ("c.yml", "lr: 0.01\nmode: bome\nclasses:\n  - 1\n  - 3\n"),
        ("c.json", '{"lr": 0.01, "mode": "bome", "classes": [1, 3]}'),
    ],
)
def test_config_files_in_each_format(tmp_path, filename, text):
    path = tmp_path / filename
    path.write_text(text)
    config = load_config_file(path)
    assert config == {"lr": 0.01, "mode": "bome", "classes": [1, 3]}
    assert resolve_options(Toy, config=config, sets=["mode=fixed"]).mode == "fixed"


def test_empty_yaml_file_is_no_options(tmp_path):
    (tmp_path / "empty.yaml").write_text("")
    assert load_config_file(tmp_path / "empty.yaml") == {}


@pytest.mark.parametrize(
    ("filename", "text", "expected"),
    [
        ("bad.toml", "lr = = 1\n", "invalid TOML: "),
        ("bad.yaml", "lr: [1, 2\n", "invalid YAML: "),
        ("bad.json", '{"lr": }', "invalid JSON: Expecting value: line 1 column 8"),
        ("list.yaml", "- 1\n- 2\n", "expected a table of option = value at the top level, got list"),
        ("c.ini", "lr=1\n", "unsupported format '.ini': use .toml, .yaml/.yml or .json"),
    ],
)
def test_bad_config_file_is_one_usage_error_line(tmp_path, filename, text, expected):
    path = tmp_path / filename
    path.write_text(text)
    with pytest.raises(UsageError) as info:
        load_config_file(path)
    message = str(info.value)
    assert message.startswith(f"config file '{path}': ")
    assert expected in message
    assert "\n" not in message


def test_missing_config_file(tmp_path):
    with pytest.raises(UsageError, match=r"config file '.*nope.toml' not found"):
        load_config_file(tmp_path / "nope.toml")
