"""The tracker plugins under plugins/: unlearnctl-mlflow and unlearnctl-wandb (docs/trackers.md), and the
core they are built on, ``unlearnctl.tracking`` (the driver of the lifecycle hooks, tried with a tracker of
its own that keeps everything in memory).

Each is loaded the way unlearnctl finds an installed plugin: through the entry point its pyproject.toml
declares (a ``*.dist-info`` next to the package's ``src`` folder on ``sys.path``; one test pip-installs both
for real). A ``forget`` then an ``eval`` of the tiny model must become ONE tracked run, read back with
each tracker's own means: MLflow's client, and W&B's offline run files (``run-<id>.wandb``: W&B's record
log, whose entries are ``wandb_internal_pb2.Record`` messages). Trackers are opt-in: with
``UNLEARNCTL_REPORT_TO`` unset nothing is written and neither tracker is imported, even when MLflow's and
W&B's own variables are set. A tracker that cannot be reached costs one warning line, not the run.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tomllib
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import pluggy
import pytest

import unlearnctl
from unlearnctl import hookspecs
from unlearnctl.lifecycle import Lifecycle, RunInfo
from unlearnctl.tracking import Tracker, TrackerHooks, TrackingFailed

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"mlflow": REPO_ROOT / "plugins" / "unlearnctl-mlflow", "wandb": REPO_ROOT / "plugins" / "unlearnctl-wandb"}
FORGET = [
    "--model", "tiny-cond", "--classes", "1", "--steps", "3", "--grid-per-class", "1",
    "--set", "remain_batch_size=4", "--set", "forget_batch_size=4",
]  # fmt: skip
EVAL = ["-n", 2, "--steps", 1, "--metrics", "forgetting,kept"]
#: the variables of unlearnctl's trackers, MLflow and W&B that a test must not inherit
TRACKER_ENV = (
    "UNLEARNCTL_REPORT_TO", "UNLEARNCTL_LOG_MODEL", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_EXPERIMENT_ID", "MLFLOW_ALLOW_FILE_STORE", "WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT", "WANDB_ENTITY",
    "WANDB_API_KEY", "WANDB_CONSOLE", "WANDB_SILENT", "RANK",
)  # fmt: skip


def _entry_points(package: Path) -> dict[str, str]:
    return tomllib.loads((package / "pyproject.toml").read_text())["project"]["entry-points"]["unlearnctl"]


def _installed(dist: str) -> bool:
    try:
        importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.fixture
def trackers(fake_plugins, tiny, monkeypatch) -> Path:
    """Both tracker plugins found through their entry points (and the tiny model); no tracker variable
    inherited. Returns the folder holding the dist-infos (for child processes' PYTHONPATH)."""
    for name in TRACKER_ENV:
        monkeypatch.delenv(name, raising=False)
    for package in PACKAGES.values():
        monkeypatch.syspath_prepend(str(package / "src"))
        meta = tomllib.loads((package / "pyproject.toml").read_text())["project"]
        if _installed(meta["name"]):  # `pip install -e plugins/...` done: the real entry point is there
            continue
        info = fake_plugins.site / f"{meta['name'].replace('-', '_')}-{meta['version']}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {meta['name']}\nVersion: {meta['version']}\n")
        points = "".join(f"{k} = {v}\n" for k, v in _entry_points(package).items())
        (info / "entry_points.txt").write_text(f"[unlearnctl]\n{points}")
    importlib.invalidate_caches()
    return fake_plugins.site


def train_judge(cli, tmp_path: Path) -> Path:
    """The judge `eval` needs (trained before a tracker is switched on: `train-judge` is a tracked run too)."""
    judge = tmp_path / "judge"
    assert cli("train-judge", "--dataset", "tiny", "--out", judge, "--epochs", 1).exit_code == 0
    return judge


def forget_and_eval(cli, tmp_path: Path, judge: Path) -> Path:
    run = tmp_path / "run"
    done = cli("forget", *FORGET, "--out", run)
    assert done.exit_code == 0, done.output
    evaluated = cli("eval", run, *EVAL, "--judge", judge, "--json")
    assert evaluated.exit_code == 0, evaluated.output
    json.loads(evaluated.stdout)  # the trackers print nothing on stdout: --json stays JSON
    return run


def log_lines(run: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def tracker_warnings(stderr: str, plugin: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(f"warning: plugin '{plugin}'")]


# --- MLflow ---------------------------------------------------------------------------------------------


def test_mlflow_forget_then_eval_is_one_run(trackers, cli, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    judge = train_judge(cli, tmp_path)
    store = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("UNLEARNCTL_REPORT_TO", "mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 wants a database otherwise
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "unlearn-tests")
    monkeypatch.setenv("UNLEARNCTL_LOG_MODEL", "1")
    run = forget_and_eval(cli, tmp_path, judge)

    manifest = json.loads((run / "manifest.json").read_text())
    record = manifest["extra"]["mlflow"]
    assert record["tracking_uri"] == store and record["step"] == 3
    client = MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("unlearn-tests")
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in runs] == [record["run_id"]]  # forget + eval: one MLflow run
    tracked = runs[0]
    assert tracked.info.status == "FINISHED" and tracked.info.run_name == "run"
    assert tracked.data.tags["unlearnctl.kind"] == "forget"
    assert tracked.data.tags["unlearnctl.run_dir"] == str(run.resolve())

    params = tracked.data.params
    assert params["method.name"] == "erasediff" and params["method.options.lr"] == "0.0001"
    assert params["method.options.betas"] == "[0.9, 0.999]" and params["runner.steps"] == "3"
    assert params["seed"] == "0" and params["kind"] == "forget"
    assert params["weights.model"] == "tiny-cond" and params["dataset.name"] == "tiny"
    assert params["forget.selectors"] == "classes:1" and params["forget.forget_classes"] == "[1]"
    assert params["environment.torch"] == manifest["environment"]["packages"]["torch"]
    assert params["eval.protocol.steps"] == "1" and params["eval.protocol.samples_per_class"] == "2"

    # one value per logged step, the values of log.jsonl
    lines = log_lines(run)
    for key in ("loss_r", "loss_f", "lambda", "lr"):
        history = sorted(client.get_metric_history(tracked.info.run_id, key), key=lambda m: m.step)
        assert [(m.step, m.value) for m in history] == [(line["step"], pytest.approx(line[key])) for line in lines]

    # eval's numbers, flattened, at the run's last step
    metrics = json.loads((run / "metrics.json").read_text())
    data = tracked.data.metrics
    forgetting = metrics["results"]["model"]["forgetting"]
    assert data["eval.model.forgetting.recognition_rate"] == pytest.approx(forgetting["recognition_rate"])
    assert data["eval.model.forgetting.per_class.1.mean_p"] == pytest.approx(forgetting["per_class"]["1"]["mean_p"])
    assert data["eval.reference.kept.mean_rate"] == pytest.approx(metrics["results"]["reference"]["kept"]["mean_rate"])
    assert data["eval.delta.forgetting.recognition_rate"] == pytest.approx(
        metrics["delta"]["forgetting.recognition_rate"]
    )
    assert data["wall_time_s"] == pytest.approx(manifest["wall_time_s"])
    assert "step" not in data  # the x-axis, not a metric
    assert [m.step for m in client.get_metric_history(tracked.info.run_id, "eval.model.kept.mean_rate")] == [3]

    def listed(path: str | None = None) -> set[str]:
        out: set[str] = set()
        for item in client.list_artifacts(tracked.info.run_id, path):
            out |= listed(item.path) if item.is_dir else {item.path}
        return out

    assert listed() == {
        "manifest.json", "log.jsonl", "metrics.json",
        *(f"samples/{g}.png" for g in ("forgotten-before", "forgotten-after", "kept-before", "kept-after")),
        "samples/eval-forgotten.png", "samples/eval-kept.png",
        *(f"model/{f}" for f in ("config.json", "scheduler_config.json", "unlearnctl.json",
                                 "diffusion_pytorch_model.safetensors")),
    }  # fmt: skip
    assert cli("verify", run).exit_code == 0  # the tracker added nothing to the run folder


def test_mlflow_audit_written_elsewhere_adds_to_the_run_it_audits(trackers, cli, tmp_path, monkeypatch):
    """`audit RUN --out OTHER`: the tracked run is found through the audited run folder's manifest."""
    from mlflow.tracking import MlflowClient

    judge = train_judge(cli, tmp_path)
    store = (tmp_path / "mlruns").as_uri()
    for name, value in (("UNLEARNCTL_REPORT_TO", "mlflow"), ("MLFLOW_TRACKING_URI", store),
                        ("MLFLOW_ALLOW_FILE_STORE", "true")):  # fmt: skip
        monkeypatch.setenv(name, value)
    run, out = tmp_path / "run", tmp_path / "audit"
    assert cli("forget", *FORGET, "--out", run).exit_code == 0
    attack = ["--attacks", "membership-loss", "--set", "membership-loss.bootstrap=20", "--steps", 2]
    audited = cli("audit", run, *attack, "--judge", judge, "--out", out)
    assert audited.exit_code == 0, audited.output
    assert not tracker_warnings(audited.stderr, "mlflow")

    client = MlflowClient(tracking_uri=store)
    (tracked,) = client.search_runs([client.get_experiment_by_name("unlearnctl").experiment_id])
    assert tracked.info.run_id == json.loads((run / "manifest.json").read_text())["extra"]["mlflow"]["run_id"]
    result = json.loads((out / "audit.json").read_text())["results"]["model"]["membership-loss"]
    assert tracked.data.metrics["audit.model.membership-loss.auc"] == pytest.approx(result["auc"])
    assert tracked.data.params["audit.protocol.steps"] == "2"
    names = {a.path for a in client.list_artifacts(tracked.info.run_id)}
    assert {"manifest.json", "audit.json"} <= names and any(n.startswith("audit-") for n in names)
    assert "model" not in names  # the model only with UNLEARNCTL_LOG_MODEL=1


# --- W&B ---------------------------------------------------------------------------------------------------

#: W&B's offline run file: a 7-byte header, then LevelDB-log records in 32 KiB blocks (7-byte record
#: headers: CRC32, length, type FULL=1 / FIRST=2 / MIDDLE=3 / LAST=4), each message a ``Record``
WANDB_BLOCK = 32768


def wandb_records(path: Path) -> list[Any]:
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, magic, _version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic) == (b":W&B", 0xBEE1)
    records, pos, parts = [], 7, b""
    while pos + 7 <= len(data):
        left = WANDB_BLOCK - pos % WANDB_BLOCK
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:  # zero padding at the end of a block
            pos += left
            continue
        parts += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            records.append(record)
            parts = b""
    return records


def offline_runs(wandb_dir: Path) -> list[Path]:
    """The ``run-<id>.wandb`` files of the offline runs under ``WANDB_DIR``, oldest first (W&B names their
    folders ``offline-run-<time>-<id>``, with ``-1``... added when one second saw two)."""
    return sorted(wandb_dir.glob("wandb/offline-run-*/run-*.wandb"), key=lambda p: p.parent.name)


def _items(items) -> dict[str, Any]:
    return {(item.key or ".".join(item.nested_key)): json.loads(item.value_json) for item in items}


def test_wandb_offline_forget_then_eval_is_one_run(trackers, cli, tmp_path, monkeypatch):
    judge = train_judge(cli, tmp_path)
    wandb_dir = tmp_path / "wb"
    monkeypatch.setenv("UNLEARNCTL_REPORT_TO", "wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(wandb_dir))
    monkeypatch.setenv("WANDB_PROJECT", "unlearn-tests")
    run = forget_and_eval(cli, tmp_path, judge)

    record = json.loads((run / "manifest.json").read_text())["extra"]["wandb"]
    run_id = record["run_id"]
    assert record["project"] == "unlearn-tests" and record["mode"] == "offline" and record["step"] == 3
    # W&B cannot resume an offline run in place: eval wrote a second segment of the same run
    segments = offline_runs(wandb_dir)
    assert [s.stem for s in segments] == [f"run-{run_id}"] * 2
    forget_part, eval_part = (wandb_records(s) for s in segments)

    def of(records: list[Any], kind: str) -> list[Any]:
        return [getattr(r, kind) for r in records if r.WhichOneof("record_type") == kind]

    for part in (forget_part, eval_part):
        (header,) = of(part, "run")
        assert (header.run_id, header.project) == (run_id, "unlearn-tests")
    assert of(eval_part, "run")[0].resume  # the eval part continues the run

    # one history row per logged step, the values of log.jsonl; eval adds no rows
    rows = [(h.step.num, _items(h.item)) for h in of(forget_part, "history")]
    lines = log_lines(run)
    assert [step for step, _ in rows] == [line["step"] for line in lines]
    for (_, row), line in zip(rows, lines, strict=True):
        assert row["loss_r"] == pytest.approx(line["loss_r"]) and row["lambda"] == pytest.approx(line["lambda"])
    assert of(eval_part, "history") == []
    assert "step" not in rows[0][1]

    config: dict[str, Any] = {}
    for part in (forget_part, eval_part):
        for header in of(part, "run"):
            config.update(_items(header.config.update))
        for update in of(part, "config"):
            config.update(_items(update.update))
    assert config["method"]["name"] == "erasediff" and config["method"]["options"]["lr"] == 0.0001
    assert config["runner"]["steps"] == 3 and config["seed"] == 0 and config["kind"] == "forget"
    assert config["weights"]["model"] == "tiny-cond" and config["forget"]["selectors"] == "classes:1"
    assert config["environment"]["python"] == f"{sys.version_info.major}.{sys.version_info.minor}." + str(
        sys.version_info.micro
    )
    assert config["eval"]["protocol"]["samples_per_class"] == 2

    summary: dict[str, Any] = {}
    for update in of(eval_part, "summary"):
        summary.update(_items(update.update))
    metrics = json.loads((run / "metrics.json").read_text())
    assert summary["eval.model.forgetting.recognition_rate"] == pytest.approx(
        metrics["results"]["model"]["forgetting"]["recognition_rate"]
    )
    assert summary["eval.delta.kept.mean_rate"] == pytest.approx(metrics["delta"]["kept.mean_rate"])

    saved = {f.path for part in (forget_part, eval_part) for files in of(part, "files") for f in files.files}
    assert {"manifest.json", "log.jsonl", "metrics.json", "samples/forgotten-after.png", "samples/eval-kept.png"} <= (
        saved
    )
    assert not [p for p in saved if p.startswith("model/")]  # the model only with UNLEARNCTL_LOG_MODEL=1
    assert (segments[0].parent / "files" / "manifest.json").read_bytes() == (run / "manifest.json").read_bytes()


# --- opt-in ------------------------------------------------------------------------------------------------

#: runs ``unlearnctl ARGS`` in-process (as the console script does) for each JSON argument list, then
#: prints which of the trackers (and torch) were imported
PROBE = """
import json, sys
from unlearnctl.cli import main
for args in json.loads(sys.argv[1]):
    sys.argv = ["unlearnctl", *args]
    try:
        code = main()
    except SystemExit as exc:
        code = exc.code
    sys.stdout.flush()
    sys.stderr.write("CODE " + repr(code) + "\\n")
mods = ["mlflow", "wandb", "unlearnctl_mlflow.tracker", "unlearnctl_wandb.tracker", "torch"]
sys.stderr.write("IMPORTED " + json.dumps([m for m in mods if m in sys.modules]) + "\\n")
"""


def probe(commands: list[list[str]], env: dict[str, str], cwd: Path) -> tuple[list[str], str, str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(commands)],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=300, check=False,
    )  # fmt: skip
    lines = done.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("IMPORTED "), done.stderr[-3000:]
    assert all(line == "CODE 0" or line == "CODE None" for line in lines if line.startswith("CODE ")), done.stderr
    return json.loads(lines[-1][len("IMPORTED ") :]), done.stdout, done.stderr


def test_nothing_configured_nothing_tracked_nothing_imported(trackers, child_env, tmp_path):
    """MLflow's and W&B's own variables are set, UNLEARNCTL_REPORT_TO is not: no tracking files, no
    tracker imported (neither by `unlearnctl plugins` nor by a whole `forget`), nothing in the manifest."""
    env = {k: v for k, v in child_env.items() if k not in TRACKER_ENV}
    env["PYTHONPATH"] = os.pathsep.join([child_env["PYTHONPATH"], *(str(p / "src") for p in PACKAGES.values())])
    env.update(MLFLOW_TRACKING_URI=(tmp_path / "mlruns").as_uri(), MLFLOW_ALLOW_FILE_STORE="true",
               WANDB_MODE="offline", WANDB_DIR=str(tmp_path / "wb"), WANDB_PROJECT="p")  # fmt: skip
    work = tmp_path / "cwd"
    work.mkdir()
    run = tmp_path / "run"
    imported, stdout, stderr = probe([["plugins", "--json"], ["forget", *FORGET, "--out", str(run)]], env, work)
    assert imported == ["torch"]  # the forget's own
    listed, _ = json.JSONDecoder().raw_decode(stdout)  # `plugins --json`, then forget's own lines
    plugins = {p["name"]: p for p in listed["plugins"]}
    for name in PACKAGES:  # found, with the three lifecycle hooks and no component
        assert plugins[name]["distribution"] == f"unlearnctl-{name}" and plugins[name]["provides"] == {}
        assert sorted(plugins[name]["hooks"]) == ["run_finished", "run_started", "step_logged"]
    assert "warning" not in stderr
    assert json.loads((run / "manifest.json").read_text())["extra"] == {}
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "wb").exists()
    assert sorted(p.name for p in work.iterdir()) == []  # no ./mlruns, ./mlflow.db, ./wandb
    home = Path(child_env["HOME"])
    assert not (home / ".cache" / "wandb").exists() and not (home / ".config" / "wandb").exists()


@pytest.mark.pip_install
def test_pip_installed_packages_are_found_and_import_no_tracker(trackers, tmp_path):
    """Both packages built and installed by pip (offline, into a folder of their own): unlearnctl lists
    them under their distribution names, and neither `unlearnctl plugins` nor `--help` imports MLflow, W&B
    or torch."""
    target = tmp_path / "site"
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    sources = [tmp_path / "src" / p.name for p in PACKAGES.values()]
    for package, copy in zip(PACKAGES.values(), sources, strict=True):  # a copy: no build files in the tree
        shutil.copytree(package, copy, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--target", str(target),
         *map(str, sources)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    child = {k: v for k, v in os.environ.items() if k not in TRACKER_ENV}
    child["PYTHONPATH"] = str(target)
    imported, stdout, _ = probe([["plugins", "--json"], ["--help"]], child, tmp_path)
    assert imported == []  # neither a tracker nor torch: listing plugins stays light (tests/test_startup.py)
    plugins = {p["name"]: p for p in json.JSONDecoder().raw_decode(stdout)[0]["plugins"]}
    assert (plugins["mlflow"]["distribution"], plugins["mlflow"]["module"]) == (
        "unlearnctl-mlflow", "unlearnctl_mlflow.plugin",
    )  # fmt: skip
    assert (plugins["wandb"]["distribution"], plugins["wandb"]["version"]) == ("unlearnctl-wandb", "0.1.0")


# --- failures ----------------------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_tracker_is_one_warning_and_the_run_succeeds(trackers, cli, tmp_path, monkeypatch):
    """MLflow's server is down, W&B has no API key: each tracker says so once per command, and the run
    and its evaluation are whole."""
    judge = train_judge(cli, tmp_path)
    uri = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("UNLEARNCTL_REPORT_TO", "mlflow, wandb")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    run = tmp_path / "run"
    done = cli("forget", *FORGET, "--out", run)
    assert done.exit_code == 0, done.output
    (mlflow_warning,) = tracker_warnings(done.stderr, "mlflow")
    assert f"cannot reach the MLflow tracking server at '{uri}'" in mlflow_warning
    (wandb_warning,) = tracker_warnings(done.stderr, "wandb")
    assert "failed in run_started" in wandb_warning and "no W&B API key" in wandb_warning
    assert "WANDB_MODE=offline" in wandb_warning
    assert json.loads((run / "manifest.json").read_text())["extra"] == {}
    assert len(log_lines(run)) == 3 and cli("verify", run).exit_code == 0

    evaluated = cli("eval", run, *EVAL, "--judge", judge)
    assert evaluated.exit_code == 0, evaluated.output
    assert len(tracker_warnings(evaluated.stderr, "mlflow")) == 1
    assert len(tracker_warnings(evaluated.stderr, "wandb")) == 1
    assert (run / "metrics.json").is_file()


#: a plugin that stops `forget` after step STOP_AT_STEP, as a SIGTERM during that step would
STOPPER = """
import os, signal
import unlearnctl
from unlearnctl import stopping

@unlearnctl.hookimpl
def step_logged(run, step, values):
    if run.kind == "forget" and step == int(os.environ.get("STOP_AT_STEP", "0")):
        stopping.handle(signal.SIGTERM, None)
"""


def test_a_resumed_forget_continues_its_tracked_run(trackers, fake_plugins, cli, tmp_path, monkeypatch):
    """`forget --resume`: the checkpoint restores the tracked runs' ids, and both trackers continue them."""
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    fake_plugins.add("stopper", STOPPER)
    store, wandb_dir = (tmp_path / "mlruns").as_uri(), tmp_path / "wb"
    for name, value in (("UNLEARNCTL_REPORT_TO", "mlflow,wandb"), ("MLFLOW_TRACKING_URI", store),
                        ("MLFLOW_ALLOW_FILE_STORE", "true"), ("WANDB_MODE", "offline"),
                        ("WANDB_DIR", str(wandb_dir)), ("STOP_AT_STEP", "2")):  # fmt: skip
        monkeypatch.setenv(name, value)
    out = tmp_path / "run"
    stopped = cli("forget", *FORGET, "--out", out)
    assert stopped.exit_code == 143, stopped.output
    for plugin in ("unlearnctl_mlflow.plugin", "unlearnctl_wandb.plugin"):
        importlib.import_module(plugin).close_open_runs()  # what the interpreter's exit does
    monkeypatch.delenv("STOP_AT_STEP")
    resumed = cli("forget", "--resume", out)
    assert resumed.exit_code == 0, resumed.output
    assert not tracker_warnings(resumed.stderr, "mlflow") and not tracker_warnings(resumed.stderr, "wandb")
    extra = json.loads((out / "manifest.json").read_text())["extra"]

    client = MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("unlearnctl")  # the default experiment
    (tracked,) = client.search_runs([experiment.experiment_id])
    assert tracked.info.run_id == extra["mlflow"]["run_id"] and tracked.info.status == "FINISHED"
    history = client.get_metric_history(tracked.info.run_id, "loss_r")
    assert sorted(m.step for m in history) == [1, 2, 3]
    everything = client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL)
    assert len(everything) == 2  # the run the resumed process opened first was dropped for the recorded one

    run_id = extra["wandb"]["run_id"]
    segments = offline_runs(wandb_dir)
    assert [s.stem for s in segments] == [f"run-{run_id}"] * 2
    steps = [[r.history.step.num for r in wandb_records(s) if r.HasField("history")] for s in segments]
    assert steps == [[1, 2], [3]]


# --- the two packages ----------------------------------------------------------------------------------------


def test_each_package_is_a_tracker_and_its_hooks():
    """What is logged is unlearnctl.tracking's: each package holds only its Tracker (tracker.py) and the
    hooks that delegate to the core's driver (plugin.py), found through its entry point."""
    for name, package in PACKAGES.items():
        assert _entry_points(package) == {name: f"unlearnctl_{name}.plugin"}
        files = {p.name for p in (package / "src" / f"unlearnctl_{name}").glob("*.py")}
        assert files == {"__init__.py", "plugin.py", "tracker.py"}


@pytest.mark.parametrize(
    ("value", "mlflow", "wandb"),
    [("", False, False), ("mlflow", True, False), ("wandb,mlflow", True, True), ("all", True, True),
     ("MLflow", True, False), ("none", False, False), ("all none", False, False)],
)  # fmt: skip
def test_the_opt_in_rule(trackers, monkeypatch, value, mlflow, wandb):
    from unlearnctl import tracking as records

    monkeypatch.setenv("UNLEARNCTL_REPORT_TO", value)
    assert (records.requested("mlflow"), records.requested("wandb")) == (mlflow, wandb)
    monkeypatch.setenv("RANK", "1")
    assert not records.is_main_process()


def test_wandb_never_asks_for_a_key_in_a_terminal(trackers, monkeypatch):
    """Online, in a terminal, without credentials: one clear error instead of W&B's login prompt."""
    from unlearnctl_wandb import tracker

    class Terminal:
        def isatty(self) -> bool:
            return True

        def readline(self) -> str:
            raise AssertionError("W&B asked for input")

    monkeypatch.setattr(sys, "stdin", Terminal())
    with pytest.raises(tracker.TrackingFailed, match="no W&B API key"):
        tracker.check_credentials("online")
    tracker.check_credentials("offline")  # nothing to check: nothing leaves the machine
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    tracker.check_credentials("online")


# --- the core's driver, with a tracker that keeps everything in memory -------------------------------------


class MemoryTracker(Tracker):
    """A tracker of no service: its runs are lists of what it was told (``events``, shared by all)."""

    events: ClassVar[list[tuple[Any, ...]]] = []
    fail_in: ClassVar[str | None] = None  # "start", "log_step" or "finish": raise TrackingFailed there

    def __init__(self, run: RunInfo) -> None:
        self.run = run

    @classmethod
    def start(cls, run: RunInfo) -> MemoryTracker:
        cls._event("start", run.kind)
        if run.kind != "eval":
            run.extra["memory"] = {"run_id": "m-1", "step": 0}
        return cls(run)

    def log_step(self, run: RunInfo, step: int, values: Mapping[str, Any]) -> None:
        self._event("log_step", step, dict(values))

    def finish(self, run: RunInfo, result: Any) -> None:
        self._event("finish", result)

    def abort(self) -> None:
        type(self).events.append(("abort",))

    @classmethod
    def _event(cls, name: str, *args: Any) -> None:
        cls.events.append((name, *args))
        if cls.fail_in == name:
            raise TrackingFailed(f"the memory is full in {name}: free some")


@pytest.fixture
def memory(monkeypatch) -> tuple[TrackerHooks, Lifecycle, list[str]]:
    """The hooks of the tracker ``memory`` (a plugin as unlearnctl loads one, pluggy included), the
    lifecycle channel that calls them, and the list of the tracker loads."""
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setattr(MemoryTracker, "events", [])
    monkeypatch.setattr(MemoryTracker, "fail_in", None)
    loads: list[str] = []

    def load() -> type[Tracker]:
        loads.append("memory")
        return MemoryTracker

    hooks = TrackerHooks("Memory", load)

    class Plugin:  # what a tracker's plugin.py holds
        @unlearnctl.hookimpl
        def run_started(self, run):
            hooks.run_started(run)

        @unlearnctl.hookimpl
        def step_logged(self, run, step, values):
            hooks.step_logged(run, step, values)

        @unlearnctl.hookimpl
        def run_finished(self, run, result):
            hooks.run_finished(run, result)

    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(Plugin(), name="memory")
    return hooks, Lifecycle(pm), loads


def fire(lifecycle: Lifecycle, run: RunInfo, steps: int = 3, finish: bool = True) -> list[str]:
    """A run through the lifecycle hooks, as a command fires them; returns the warnings it caused."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lifecycle.run_started(run)
        for step in range(1, steps + 1):
            lifecycle.step_logged(run, step, {"step": step, "loss": 1.0 / step})
        if finish:
            lifecycle.run_finished(run, "result")
    return [str(w.message) for w in caught if issubclass(w.category, unlearnctl.PluginHookWarning)]


def test_the_driver_starts_forwards_finishes_and_aborts(memory, monkeypatch):
    hooks, lifecycle, loads = memory
    monkeypatch.setenv("UNLEARNCTL_REPORT_TO", "wandb, memory")
    run = RunInfo(kind="forget")
    assert fire(lifecycle, run) == []
    assert loads == ["memory"]  # the tracker's module: imported for the first tracked run
    assert MemoryTracker.events == [
        ("start", "forget"),
        *(("log_step", step, {"step": step, "loss": 1.0 / step}) for step in (1, 2, 3)),
        ("finish", "result"),
    ]
    assert run.extra["memory"] == {"run_id": "m-1", "step": 3}  # the driver keeps the step reached
    hooks.close_open_runs()
    assert MemoryTracker.events[-1] == ("finish", "result")  # nothing left to abort

    # a study's steps are only timings: not forwarded; the run still starts and finishes
    MemoryTracker.events.clear()
    assert fire(lifecycle, RunInfo(kind="eval")) == []
    assert MemoryTracker.events == [("start", "eval"), ("finish", "result")]

    # a run that never finishes (an error, an interrupt) is aborted at exit, once
    MemoryTracker.events.clear()
    fire(lifecycle, RunInfo(kind="train"), steps=1, finish=False)
    hooks.close_open_runs()
    hooks.close_open_runs()
    assert [e[0] for e in MemoryTracker.events] == ["start", "log_step", "abort"]


@pytest.mark.parametrize(
    ("report_to", "kind", "rank"),
    [(None, "forget", None), ("mlflow,wandb", "forget", None), ("none memory", "forget", None),
     ("memory", "sample", None), ("all", "forget", "1")],
)  # fmt: skip
def test_the_driver_does_nothing_unless_asked(memory, monkeypatch, report_to, kind, rank):
    """Not named by UNLEARNCTL_REPORT_TO (or `none`), a kind that is not tracked, another process than the
    main one: the tracker is not even loaded."""
    hooks, lifecycle, loads = memory
    for name, value in (("UNLEARNCTL_REPORT_TO", report_to), ("RANK", rank)):
        if value is not None:
            monkeypatch.setenv(name, value)
    run = RunInfo(kind=kind)
    assert fire(lifecycle, run, finish=False) == []
    hooks.close_open_runs()
    assert (loads, MemoryTracker.events, run.extra) == ([], [], {})


@pytest.mark.parametrize("fail_in", ["start", "log_step", "finish"])
def test_a_failing_tracker_is_one_warning_and_the_run_goes_on(memory, monkeypatch, fail_in):
    """The tracker's first failure is one warning (unlearnctl's PluginHookWarning, naming the plugin and
    its message); the run goes on, and the tracker is aborted and never called again for that run."""
    hooks, lifecycle, _ = memory
    monkeypatch.setenv("UNLEARNCTL_REPORT_TO", "all")
    MemoryTracker.fail_in = fail_in
    hook = {"start": "run_started", "log_step": "step_logged", "finish": "run_finished"}[fail_in]
    (warning,) = fire(lifecycle, RunInfo(kind="forget"))
    assert warning.startswith(f"plugin 'memory' failed in {hook}: TrackingFailed: the memory is full in {fail_in}")
    expected = {
        "start": ["start"],
        "log_step": ["start", "log_step", "abort"],  # steps 2 and 3 not forwarded, no finish
        "finish": ["start", "log_step", "log_step", "log_step", "finish", "abort"],
    }
    called = [e[0] for e in MemoryTracker.events]
    assert called == expected[fail_in]
    hooks.close_open_runs()
    assert [e[0] for e in MemoryTracker.events] == called  # aborted once only


#: a tracker plugin of another service, as docs/trackers.md describes it: a Tracker and three hooks
MEMO_PLUGIN = """
import json, os

import unlearnctl
from unlearnctl.tracking import Tracker, TrackerHooks, TrackingFailed

EVENTS = []


class MemoTracker(Tracker):
    @classmethod
    def start(cls, run):
        EVENTS.append(["start", run.kind, run.total_steps])
        run.extra["memo"] = {"run_id": "memo-1"}
        return cls()

    def log_step(self, run, step, values):
        EVENTS.append(["log_step", step, sorted(values)])
        if os.environ.get("MEMO_FAIL") == str(step):
            raise TrackingFailed("memo is down")

    def finish(self, run, result):
        EVENTS.append(["finish", type(result).__name__, run.out_dir.is_dir()])

    def abort(self):
        EVENTS.append(["abort"])


hooks = TrackerHooks("memo", lambda: MemoTracker)


@unlearnctl.hookimpl
def run_started(run):
    hooks.run_started(run)


@unlearnctl.hookimpl
def step_logged(run, step, values):
    hooks.step_logged(run, step, values)


@unlearnctl.hookimpl
def run_finished(run, result):
    hooks.run_finished(run, result)
"""


def test_a_tracker_plugin_of_another_service_follows_a_forget(fake_plugins, tiny, cli, tmp_path, monkeypatch):
    """A Tracker and three delegating hooks are a whole tracker plugin: a real `forget` starts it, logs
    each step, finishes it and records its run in the manifest; a failure is one warning line."""
    module = fake_plugins.add("memo", MEMO_PLUGIN)
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setenv("UNLEARNCTL_REPORT_TO", "memo")
    run = tmp_path / "run"
    done = cli("forget", *FORGET, "--out", run)
    assert done.exit_code == 0, done.output
    events = sys.modules[module].EVENTS
    assert events[0] == ["start", "forget", 3]
    assert [e[1] for e in events[1:4]] == [1, 2, 3] and {"loss_f", "loss_r"} <= set(events[1][2])
    assert events[4:] == [["finish", "Manifest", True]]
    assert json.loads((run / "manifest.json").read_text())["extra"]["memo"] == {"run_id": "memo-1", "step": 3}

    events.clear()
    monkeypatch.setenv("MEMO_FAIL", "2")
    failed = cli("forget", *FORGET, "--out", tmp_path / "run2")
    assert failed.exit_code == 0, failed.output
    (warning,) = tracker_warnings(failed.stderr, "memo")
    assert "failed in step_logged: TrackingFailed: memo is down" in warning
    assert [e[0] for e in events] == ["start", "log_step", "log_step", "abort"]
    assert (tmp_path / "run2" / "manifest.json").is_file() and cli("verify", tmp_path / "run2").exit_code == 0
