"""``--print-config``, command-level ``--config`` files and ``unlearnctl config RUN`` (docs/config.md).

The promise: what ``--print-config`` prints (or ``unlearnctl config`` makes of a manifest), given back to
``--config`` with no other flag, reruns the run: the same weights' sha256 on CPU (exact, by the same
argument as tests/test_replay.py: same seed, same operations, same thread count).
"""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from unlearnctl.commands.configs import EVAL_SPEC, FORGET_SPEC, TRAIN_SPEC, ResolvedConfig
from unlearnctl.config import load_config_file, option_keys
from unlearnctl.config_files import dump_config, to_toml
from unlearnctl.errors import UsageError
from unlearnctl.manifest import read_manifest
from unlearnctl.registry import get_registry
from unlearnctl.train_options import TrainOptions

#: a fast forget run of the tiny model (tests/tiny_plugin.py), on CPU
FAST = [
    "--model", "tiny-cond", "--classes", "1", "--steps", "2", "--grid-per-class", "1", "--device", "cpu",
    "--set", "remain_batch_size=4", "--set", "forget_batch_size=4",
]  # fmt: skip
#: a fast train run on the tiny dataset
TRAIN = [
    "--dataset", "tiny", "--classes", "2", "--steps", "3", "--seed", "1", "--device", "cpu",
    "--set", "arch=tiny", "--set", "batch_size=4", "--set", "grid_per_class=1", "--set", "log_every=1",
]  # fmt: skip


def files_under(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*"))


def sha(run: Path) -> str:
    value = read_manifest(run).weights.output_sha256
    assert value
    return value


def only_run(folder: Path) -> Path:
    (run,) = folder.iterdir()
    return run


def print_config(cli, command: str, *args: object, fmt: str = "toml") -> str:
    result = cli(command, *args, "--print-config", "--config-format", fmt)
    assert result.exit_code == 0, result.output
    return result.stdout


# --- what --print-config prints --------------------------------------------------------------------------


def test_print_config_resolves_every_option_and_writes_nothing(cli, tiny, tmp_path: Path) -> None:
    assert cli("list", "models").exit_code == 0  # the plugin imported (its bytecode written) before the count
    before = files_under(tmp_path)
    result = cli("forget", *FAST, "--print-config")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert files_under(tmp_path) == before  # nothing written: no run folder, no partial folder, no cache
    printed = tomllib.loads(result.stdout)
    assert list(printed) == ["forget", "method"]
    own = printed["forget"]
    # every flag of the [forget] table; TOML has no null, so the two that are None are comments
    assert set(own) == set(FORGET_SPEC.keys) - {"data_dir", "out"}
    assert "# not set (their defaults apply): forget.data_dir, forget.out" in result.stdout
    assert own["model"] == "tiny-cond" and own["method"] == "erasediff" and own["classes"] == "1"
    # resolved: the model's dataset with its options, the device auto chose, the precision, the threads
    assert own["dataset"] == "tiny" and own["data_options"] == {"n_per_class": 8}
    assert (own["device"], own["precision"], own["threads"], own["seed"]) == ("cpu", "fp32", 1, 0)
    assert (own["grid_per_class"], own["checkpoint_every"], own["keep_checkpoints"]) == (1, 50, False)
    method = printed["method"]
    erasediff = option_keys(get_registry().get("method", "erasediff").cls)
    assert set(method) == set(erasediff) - {"inner_lr"}  # inner_lr's None is its default
    assert method["target"] == "relabel"  # 'auto', resolved by the method's check against the model
    assert (method["steps"], method["remain_batch_size"], method["lambda"]) == (2, 4, 0.1)
    # YAML and JSON have null: every key is there
    as_yaml = yaml.safe_load(print_config(cli, "forget", *FAST, fmt="yaml"))
    assert set(as_yaml["forget"]) == set(FORGET_SPEC.keys) and set(as_yaml["method"]) == set(erasediff)
    assert as_yaml["forget"]["out"] is None and as_yaml["method"]["inner_lr"] is None
    assert json.loads(print_config(cli, "forget", *FAST, fmt="json")) == as_yaml
    assert files_under(tmp_path) == before


# --- the must-show: the printed config reruns the run ------------------------------------------------------


@pytest.mark.parametrize("fmt", ["toml", "yaml", "json"])
def test_forget_config_round_trip_gives_the_same_weights(cli, tiny, tmp_path: Path, fmt: str) -> None:
    original = cli("forget", *FAST, "--out", tmp_path / "a")
    assert original.exit_code == 0, original.output
    printed = tmp_path / f"printed.{fmt}"
    printed.write_text(print_config(cli, "forget", *FAST, fmt=fmt))
    again = cli("forget", "--config", printed)  # no other flag
    assert again.exit_code == 0, again.output
    run = only_run(Path.cwd() / "runs")
    assert sha(run) == sha(tmp_path / "a")  # exact: same seed, same options, same thread count on one CPU
    first, second = read_manifest(tmp_path / "a"), read_manifest(run)
    assert second.method == first.method and second.forget == first.forget and second.runner == first.runner
    assert second.command == ["forget", "--config", str(printed)]
    # printing the config of the config gives the config
    assert print_config(cli, "forget", "--config", printed, fmt=fmt) == printed.read_text()


def test_train_config_round_trip_gives_the_same_weights(cli, tiny, tmp_path: Path) -> None:
    original = cli("train", *TRAIN, "--out", tmp_path / "a")
    assert original.exit_code == 0, original.output
    text = print_config(cli, "train", *TRAIN)
    printed = tomllib.loads(text)
    assert list(printed) == ["train", "training"]
    assert set(printed["train"]) == set(TRAIN_SPEC.keys) - {"data_dir", "out"}
    assert set(printed["training"]) == set(TrainOptions.model_fields)
    assert printed["training"]["arch"] == "tiny" and printed["training"]["lr"] == 1e-3  # a default, filled in
    (tmp_path / "printed.toml").write_text(text)
    again = cli("train", "--config", tmp_path / "printed.toml")  # no other flag
    assert again.exit_code == 0, again.output
    assert sha(only_run(Path.cwd() / "runs")) == sha(tmp_path / "a")
    # the manifest turned back into a config: the same file, the forget set as its recorded selectors
    from_manifest = cli("config", tmp_path / "a")
    assert from_manifest.exit_code == 0, from_manifest.output
    recorded = tomllib.loads(from_manifest.stdout)
    printed["train"].update(classes=None, forget=["classes:2"])
    del printed["train"]["classes"]
    assert recorded == printed


def test_manifest_to_config_reruns_the_forget_run(cli, tiny, tmp_path: Path) -> None:
    original = cli("forget", *FAST, "--forget", "random:0.25", "--out", tmp_path / "a")
    assert original.exit_code == 0, original.output
    result = cli("config", tmp_path / "a")
    assert result.exit_code == 0, result.output
    config = tomllib.loads(result.stdout)
    assert config["forget"]["forget"] == ["classes:1", "random:0.25"] and "classes" not in config["forget"]
    recorded = read_manifest(tmp_path / "a").method.options
    assert config["method"] == {k: v for k, v in recorded.items() if v is not None}  # TOML leaves None out
    (tmp_path / "run.toml").write_text(result.stdout)
    again = cli("forget", "--config", tmp_path / "run.toml", "--out", tmp_path / "b")
    assert again.exit_code == 0, again.output
    assert sha(tmp_path / "b") == sha(tmp_path / "a")
    assert read_manifest(tmp_path / "b").forget.fingerprint == read_manifest(tmp_path / "a").forget.fingerprint
    # its manifest.json, as YAML or JSON, holds the same
    as_json = cli("config", tmp_path / "a" / "manifest.json", "--format", "json")
    assert as_json.exit_code == 0 and json.loads(as_json.stdout) == yaml.safe_load(
        cli("config", tmp_path / "a", "--format", "yaml").stdout
    )


# --- precedence: flags given > the file > the defaults --------------------------------------------------------


def test_flags_given_win_over_the_file_and_the_file_over_the_defaults(cli, tiny, tmp_path: Path) -> None:
    printed = tmp_path / "base.toml"
    text = print_config(cli, "forget", *FAST, "--seed", "5", "--set", "eta=0.3")
    printed.write_text(text)
    result = cli(
        "forget", "--config", printed, "--seed", "0", "--set", "lambda_rule=fixed", "--steps", "3",
        "--grid-per-class", "0", "--data-option", "n_per_class=6", "--print-config",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    config = tomllib.loads(result.stdout)
    own, method = config["forget"], config["method"]
    assert own["seed"] == 0  # given, though it is the default: it wins over the file's 5
    assert own["grid_per_class"] == 0 and method["steps"] == 3 and method["lambda_rule"] == "fixed"
    assert method["eta"] == 0.3 and method["remain_batch_size"] == 4  # from the file, not the defaults
    assert own["model"] == "tiny-cond" and own["classes"] == "1"
    assert own["data_options"] == {"n_per_class": 6}  # --data-option over the file's table, key by key
    # the forget set goes as a whole: --forget replaces the file's --classes
    other = tomllib.loads(print_config(cli, "forget", "--config", printed, "--forget", "classes:2"))
    assert "classes" not in other["forget"] and other["forget"]["forget"] == ["classes:2"]
    # a shorter file: what it does not hold takes its default
    (tmp_path / "short.yaml").write_text("forget:\n  model: tiny-cond\n  classes: [0, 2]\nmethod:\n  steps: 4\n")
    short = yaml.safe_load(print_config(cli, "forget", "--config", tmp_path / "short.yaml", fmt="yaml"))
    assert short["forget"]["classes"] == "0,2" and short["forget"]["grid_per_class"] == 8
    assert short["method"]["steps"] == 4 and short["method"]["remain_batch_size"] == 128


def test_another_method_on_the_command_line_leaves_the_file_method_options_out(cli, tiny, tmp_path: Path) -> None:
    (tmp_path / "e.toml").write_text(print_config(cli, "forget", *FAST))
    result = cli("forget", "--config", tmp_path / "e.toml", "--method", "finetune", "--print-config")
    assert result.exit_code == 0, result.output
    assert "warning: --method finetune: the [method] options of config file" in result.stderr
    config = tomllib.loads(result.stdout)
    finetune = get_registry().get("method", "finetune").cls
    assert config["forget"]["method"] == "finetune"
    assert config["method"] == finetune.Options().model_dump(mode="json", by_alias=True)


def test_a_file_of_method_options_alone_still_works(cli, tiny, tmp_path: Path) -> None:
    (tmp_path / "old.toml").write_text('lambda_rule = "cosine"\neta = 0.3\nsteps = 2\n')
    (tmp_path / "old.yaml").write_text("lambda_rule: cosine\neta: 0.3\nsteps: 2\n")
    for name in ("old.toml", "old.yaml"):
        config = tomllib.loads(print_config(cli, "forget", *FAST[:4], "--config", tmp_path / name))
        assert (config["method"]["lambda_rule"], config["method"]["eta"], config["method"]["steps"]) == (
            "cosine", 0.3, 2,
        )  # fmt: skip
        assert config["forget"]["model"] == "tiny-cond" and config["forget"]["grid_per_class"] == 8
    run = cli("forget", *FAST[:4], "--config", tmp_path / "old.toml", "--set", "remain_batch_size=4",
              "--set", "forget_batch_size=4", "--grid-per-class", "0", "--out", tmp_path / "r")  # fmt: skip
    assert run.exit_code == 0, run.output
    assert read_manifest(tmp_path / "r").method.options["lambda_rule"] == "cosine"


def test_the_python_api_reads_the_same_files(cli, tiny, tmp_path: Path) -> None:
    from unlearnctl.commands.forget import ForgetRequest, prepare_forget
    from unlearnctl.commands.forget_config import forget_config

    (tmp_path / "c.toml").write_text(print_config(cli, "forget", *FAST, "--seed", "4"))
    prepared = prepare_forget(ForgetRequest(config=tmp_path / "c.toml"))  # given: what differs from the defaults
    assert prepared.request.seed == 4 and prepared.request.model == "tiny-cond"
    assert forget_config(prepared).render("toml") == (tmp_path / "c.toml").read_text()
    explicit = prepare_forget(ForgetRequest(config=tmp_path / "c.toml", seed=0, given=["seed", "config"]))
    assert explicit.request.seed == 0 and explicit.method_config.options["remain_batch_size"] == 4


# --- eval ------------------------------------------------------------------------------------------------


@pytest.fixture
def eval_run(tmp_path: Path) -> Path:
    """A tiny 10-class model of the digits naming a judge, unlearned for one step (as tests/test_eval_cli.py)."""
    from unlearnctl.commands.forget import ForgetRequest, forget
    from unlearnctl.judge.classifier import Judge
    from unlearnctl.testing.tiny import tiny_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        Judge(10).eval().save(tmp_path / "judge")
    model = tiny_model(num_classes=10)
    model.default_dataset = "digits"
    model.extra = {"judge": str(tmp_path / "judge"), "weights": "ema"}
    model.save(tmp_path / "tiny")
    sets = ["remain_batch_size=8", "forget_batch_size=8"]
    request = ForgetRequest(
        model=str(tmp_path / "tiny"), classes="2", steps=1, grid_per_class=0, out=tmp_path / "run", sets=sets
    )
    forget(request)
    return tmp_path / "run"


EVAL_FAST = [
    "-n", "3", "--steps", "2", "--device", "cpu", "--set", "fidelity.kid_subsets=5", "--set", "membership.draws=2",
]  # fmt: skip


def test_eval_config_round_trip_gives_the_same_numbers(cli, eval_run: Path, tmp_path: Path) -> None:
    text = print_config(cli, "eval", eval_run, *EVAL_FAST, "--out", tmp_path / "e2")
    assert not (tmp_path / "e2").exists()
    config = tomllib.loads(text)
    unset = {"against", "retrain", "classes", "dataset", "data_dir", "judge", "sample_cache"}
    assert set(config["eval"]) == set(EVAL_SPEC.keys) - unset
    assert config["eval"]["metrics"] == ["forgetting", "kept", "fidelity", "membership"]
    registry = get_registry()
    for name, options in config["metrics"].items():
        defaults = registry.get("metric", name).cls.Options().model_dump(mode="json", by_alias=True)
        assert set(options) == {k for k, v in defaults.items() if v is not None}
    assert config["metrics"]["fidelity"]["kid_subsets"] == 5 and config["metrics"]["membership"]["draws"] == 2
    first = cli("eval", eval_run, *EVAL_FAST, "--out", tmp_path / "e1", "--json")
    assert first.exit_code == 0, first.output
    (tmp_path / "eval.toml").write_text(text)
    again = cli("eval", "--config", tmp_path / "eval.toml", "--json")  # no other flag, not even the run
    assert again.exit_code == 0, again.output
    a, b = json.loads(first.stdout), json.loads(again.stdout)
    assert a["results"] == b["results"] and a["protocol"] == b["protocol"]  # exact: same samples, same seeds
    assert (tmp_path / "e2" / "metrics.json").is_file()


# --- bad input: one line, exit code 2, nothing written ----------------------------------------------------------


@pytest.mark.parametrize(
    ("file", "text", "args", "message"),
    [
        (None, "", ["--print-config", "--config-format", "xml"], "--config-format 'xml': use toml, yaml or json"),
        (None, "", ["--config-format", "yaml"], "add --print-config"),
        ("c.toml", "[forget]\nsed = 1\n", [], "unknown option 'sed' (did you mean 'seed'?)"),
        ("c.toml", '[forget]\nseed = "x"\n', [], "[forget]: bad value for 'seed': got 'x'"),
        ("c.toml", "[forget]\ncheckpoint_every = -1\n", [], "--checkpoint-every must be >= 0"),
        ("c.toml", "[train]\nseed = 1\n", [], "is for `unlearnctl train` ([train])"),
        ("c.toml", "lr = 1.0\n[forget]\nseed = 1\n", [], "unknown top-level key 'lr'"),
        ("c.yaml", "forget:\n  seed: 1\nmethod: [1]\n", [], "'method' must be a table"),
        ("c.toml", "[method]\nlambda_rul = 1\n", [], "unknown option 'lambda_rul' (did you mean 'lambda_rule'?)"),
        ("c.toml", "[forget]\ndata_options = 3\n", [], "bad value for 'data_options'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli, tiny, tmp_path: Path, file, text, args, message) -> None:
    config = []
    if file is not None:
        (tmp_path / file).write_text(text)
        config = ["--config", tmp_path / file]
    result = cli("forget", *FAST, *config, *args, "--out", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error:") and len(result.stderr.strip().splitlines()) == 1
    assert message in result.stderr
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial-*"))


def test_config_command_bad_input(cli, tiny, tmp_path: Path) -> None:
    assert cli("forget", *FAST, "--out", tmp_path / "a").exit_code == 0
    bad = cli("config", tmp_path / "a", "--format", "ini")
    assert bad.exit_code == 2 and bad.stderr.strip() == "error: --format 'ini': use toml, yaml or json"
    missing = cli("config", tmp_path / "nothing")
    assert missing.exit_code == 2 and "no manifest" in missing.stderr
    train_file = tmp_path / "t.toml"
    train_file.write_text(print_config(cli, "forget", *FAST))
    wrong = cli("train", "--config", train_file, "--print-config")
    assert wrong.exit_code == 2 and "is for `unlearnctl forget` ([forget])" in wrong.stderr
    no_dataset = cli("train", "--print-config")
    assert no_dataset.exit_code == 2 and "missing option '--dataset'" in no_dataset.stderr
    no_target = cli("eval", "--print-config")
    assert no_target.exit_code == 2 and "missing argument 'RUN_OR_MODEL'" in no_target.stderr


def test_toml_cannot_write_a_none_that_is_not_the_default() -> None:
    config = ResolvedConfig("forget", {"seed": 0}, {"inner_lr": None}, ["method.inner_lr"])
    with pytest.raises(UsageError, match=r"method\.inner_lr is None .* print the config as yaml or json"):
        config.render("toml")
    assert yaml.safe_load(config.render("yaml"))["method"] == {"inner_lr": None}


# --- the TOML writer -----------------------------------------------------------------------------------------

_keys = st.text(min_size=1, max_size=8)
_scalars = (
    st.text(max_size=12)
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | st.booleans()
)
_values = st.recursive(
    _scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=3), max_leaves=8
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_keys, _values, max_size=4))
def test_toml_writer_round_trips(data) -> None:
    assert tomllib.loads(to_toml(data)) == data


def test_toml_writer_special_values(tmp_path: Path) -> None:
    data = {"forget": {"inf": math.inf, "ninf": -math.inf, "path": Path("a/b"), "pair": (0.9, 0.999), "tiny": 1e-300}}
    text = dump_config({**data, "method": {"none": None, "quote": 'a"b\\\n\x7f'}}, "toml", ["a header"])
    assert text.startswith("# a header\n") and "# not set (their defaults apply): method.none" in text
    (tmp_path / "c.toml").write_text(text)
    read = load_config_file(tmp_path / "c.toml")
    assert read["forget"] == {"inf": math.inf, "ninf": -math.inf, "path": "a/b", "pair": [0.9, 0.999], "tiny": 1e-300}
    assert read["method"] == {"quote": 'a"b\\\n\x7f'}
    assert math.isnan(tomllib.loads(to_toml({"x": math.nan}))["x"])
    with pytest.raises(ValueError, match="None in a list"):
        to_toml({"x": [1, None]})
