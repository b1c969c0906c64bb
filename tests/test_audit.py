"""``unlearnctl audit``: a tiny model unlearned for a step on the real digits, attacked next to its base model
and a stand-in "retrained" model; bad input; a third-party attack; the audit columns of ``compare``."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from digits_study import tiny_digits_study

from unlearnctl.judge.classifier import Judge
from unlearnctl.models.folder import load_model_folder, state_sha256
from unlearnctl.rundir import AUDIT_FILE, CHECKSUMS_FILE

PNG = b"\x89PNG\r\n\x1a\n"
BUILTIN_ATTACKS = [
    "membership-loss",
    "membership-pia",
    "membership-secmi",
    "relearn",
    "embedding",
    "seed-search",
    "null-leakage",
]
#: the smallest settings of every built-in attack (the defaults are sized for ddpm-digits: minutes)
FAST_CONFIG = """
[membership-loss]
bootstrap = 20
timesteps = [10, 100]

[membership-pia]
bootstrap = 20

[membership-secmi]
bootstrap = 20

[relearn]
k = [2, 3]
steps = 2
evaluations = 1
samples = 2

[embedding]
steps = 2
samples = 2

[seed-search]
budget = 4

[null-leakage]
samples = 4
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    """A tiny 10-class model of the digits (naming a judge), one erasediff run forgetting class 2, a stand-in
    for a model retrained without class 2, and the fast attack settings."""
    paths = tiny_digits_study(tmp_path_factory.mktemp("audit"), {"retrain": 5})
    root, run = paths["root"], paths["run"]
    (root / "fast.toml").write_text(FAST_CONFIG)
    return {"root": root, "model": root / "tiny", "retrain": root / "retrain", "run": run, "fast": root / "fast.toml"}


def _copy_run(setup: dict[str, Path], tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(setup["run"], run)
    return run


def _digits_train_labels() -> list[int]:
    from unlearnctl.builtin.datasets import Digits

    return Digits().load("train").labels


def test_audit_writes_audit_json_and_plots_with_every_role(cli, setup, tmp_path):
    run = _copy_run(setup, tmp_path)
    result = cli("audit", run, "--against", setup["retrain"], "--config", setup["fast"], "--steps", 2)
    assert result.exit_code == 0, result.output
    for text in ("unlearned", "base", "retrain", *BUILTIN_ATTACKS, f"wrote {run / AUDIT_FILE}"):
        assert text in result.stdout
    data = json.loads((run / AUDIT_FILE).read_text())

    # the three models, identified by their weights
    models = data["models"]
    manifest = json.loads((run / "manifest.json").read_text())
    assert models["model"]["sha256"] == state_sha256(load_model_folder(run / "model").unet)
    base = models["base"]
    assert (base["spec"], base["source"]) == (manifest["weights"]["model"], "manifest weights.model")
    assert models["base"]["sha256"] == manifest["weights"]["input_sha256"]
    assert (models["retrain"]["spec"], models["retrain"]["source"]) == (str(setup["retrain"]), "--against")
    # every protocol knob, the attacks' options from --config over their defaults
    proto = data["protocol"]
    assert (proto["sampler"], proto["steps"], proto["guidance"], proto["seed"]) == ("ddim", 2, 2.0, 0)
    assert proto["forget_classes"] == [2] and proto["judge"]["path"] == str(setup["root"] / "judge")
    assert proto["attacks"]["relearn"] == {
        "k": [2, 3],
        "benign": True,
        "benign_images": 2000,
        "steps": 2,
        "evaluations": 1,
        "lr": 1e-4,
        "batch_size": 16,
        "samples": 2,
    }
    # members: the forget set (class 2 of the digits' training split); non-members: the test split's 2s
    n_members = sum(1 for lbl in _digits_train_labels() if lbl == 2)
    assert proto["sets"]["members"]["available"] == n_members
    assert proto["sets"]["nonmembers"]["what"] == "test split, classes [2]"
    # results and seconds for every attack on every role
    assert data["attacks"] == BUILTIN_ATTACKS and data["left_out"] == {}
    for role in ("model", "base", "retrain"):
        assert set(data["results"][role]) == set(data["seconds"][role]) == set(BUILTIN_ATTACKS)
        mia = data["results"][role]["membership-loss"]
        assert mia["members"] == n_members and mia["nonmembers"] == proto["sets"]["nonmembers"]["available"]
        assert 0 <= mia["auc"] <= 1 and len(mia["auc_ci"]) == 2
        relearn = data["results"][role]["relearn"]
        assert set(relearn["curves"]) == {"k=2", "k=3", "benign"}
        assert relearn["curves"]["k=2"]["x"] == [0, 2]
    # the plots, next to audit.json, recorded for `unlearnctl verify`
    assert data["files"] == {"roc": "audit-roc.png", "relearn": "audit-relearn.png"}
    for name in data["files"].values():
        assert (run / name).read_bytes()[:8] == PNG
    recorded = (run / CHECKSUMS_FILE).read_text()
    assert AUDIT_FILE in recorded and "audit-roc.png" in recorded
    assert cli("verify", run).exit_code == 0


def test_the_same_seed_gives_the_same_audit(cli, setup, tmp_path):
    common = ["--config", setup["fast"], "--steps", 2, "--json", "--no-plots"]
    first, again, other = (
        cli("audit", setup["run"], "--out", tmp_path / name, *common, *extra)
        for name, extra in (("first", []), ("again", []), ("other", ["--seed", 1]))
    )
    assert first.exit_code == again.exit_code == other.exit_code == 0, first.output + other.output
    a, b, c = (json.loads((tmp_path / name / AUDIT_FILE).read_text()) for name in ("first", "again", "other"))
    assert a["results"] == b["results"]
    assert json.loads(first.stdout)["results"] == a["results"]
    # another seed draws other noise: the loss attack's scores and the sampling attacks' images change
    assert a["results"]["model"]["membership-loss"] != c["results"]["model"]["membership-loss"]
    # the deterministic attacks (PIA, SecMI) draw nothing but the bootstrap
    assert a["results"]["model"]["membership-pia"]["auc"] == c["results"]["model"]["membership-pia"]["auc"]


def test_every_role_faces_the_same_attack(cli, setup, tmp_path):
    # a model audited against itself: the same seeds for every role give exactly the same results
    result = cli(
        "audit", setup["model"], "--base", setup["model"], "--classes", 2, "--config", setup["fast"], "--steps", 2,
        "--out", tmp_path, "--no-plots",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / AUDIT_FILE).read_text())
    assert data["models"]["base"]["source"] == "--base"
    assert data["results"]["model"] == data["results"]["base"]
    assert data["sampling"]["model"] == {**data["sampling"]["base"], "seconds": data["sampling"]["model"]["seconds"]}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--attacks", "membership-los"], "did you mean 'membership-loss'"),
        (["--set", "relearn.stepz=3"], "did you mean 'steps'"),
        (["--set", "relearn.lr=-1"], "bad value for option 'lr'"),
        (["--attacks", "seed-search", "--set", "relearn.steps=3"], "attack 'relearn' is not being run"),
        (["--set", "membership-pia.t=5000"], "outside the model's 0..999"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(cli, setup, tmp_path, args, message):
    out = tmp_path / "out"
    result = cli("audit", setup["run"], "--out", out, "--config", setup["fast"], *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and result.stderr.count("\n") == 1 and result.stderr.startswith("error:")
    assert not out.exists()


def test_an_existing_audit_is_never_overwritten(cli, setup, tmp_path):
    run = _copy_run(setup, tmp_path)
    (run / AUDIT_FILE).write_text("keep me")
    result = cli("audit", run, "--config", setup["fast"])
    assert result.exit_code == 2 and "never overwrites" in result.stderr and result.stderr.count("\n") == 1
    assert (run / AUDIT_FILE).read_text() == "keep me"
    assert not list(run.glob("audit-*.png"))


def test_conditional_only_attacks_refuse_an_unconditional_model_or_are_left_out(cli, tiny, setup, tmp_path):
    named = cli("audit", "tiny-uncond", "--classes", 1, "--attacks", "embedding", "--out", tmp_path / "named")
    assert named.exit_code == 2 and named.stderr.count("\n") == 1
    assert "needs a class-conditional model" in named.stderr and "unconditional" in named.stderr
    assert not (tmp_path / "named").exists()

    judge = setup["root"] / "judge3"
    Judge(3).eval().save(judge)
    left = cli(
        "audit", "tiny-uncond", "--classes", 1, "--judge", judge, "--config", setup["fast"], "--steps", 2,
        "--out", tmp_path / "left", "--no-plots",
    )  # fmt: skip
    assert left.exit_code == 0, left.output
    data = json.loads((tmp_path / "left" / AUDIT_FILE).read_text())
    assert set(data["left_out"]) == {"embedding", "null-leakage"}
    assert "left out: attack 'embedding' needs a class-conditional model" in left.stderr
    assert set(data["results"]["model"]) == set(BUILTIN_ATTACKS) - {"embedding", "null-leakage"}
    assert set(data["results"]["model"]["seed-search"]["modes"]) == {"unconditional"}
    assert list(data["models"]) == ["model"]  # a bare model without --base: no base role



def test_a_scattered_forget_set_leaves_out_the_attacks_on_a_forgotten_class(cli, setup, tmp_path):
    """A forget set of random images (no whole class forgotten): membership inference applies, the attacks
    that draw a forgotten class do not -- left out by default, refused when named."""
    from unlearnctl.commands.forget import ForgetRequest, forget

    run = tmp_path / "scattered"
    forget(
        ForgetRequest(
            model=str(setup["model"]), forget=["random:0.05"], steps=1, grid_per_class=0, out=run, device="cpu",
            sets=["remain_batch_size=8", "forget_batch_size=8"],
        )
    )  # fmt: skip
    named = cli("audit", run, "--attacks", "relearn", "--config", setup["fast"], "--out", tmp_path / "named")
    assert named.exit_code == 2 and named.stderr.count("\n") == 1, named.output
    assert "forgets no whole class" in named.stderr and not (tmp_path / "named").exists()
    left = cli("audit", run, "--config", setup["fast"], "--steps", 2, "--out", tmp_path / "left", "--no-plots")
    assert left.exit_code == 0, left.output
    data = json.loads((tmp_path / "left" / AUDIT_FILE).read_text())
    assert set(data["left_out"]) == {"relearn", "embedding", "seed-search", "null-leakage"}
    assert set(data["results"]["model"]) == {"membership-loss", "membership-pia", "membership-secmi"}
    # the members are the whole forget set the run recorded, drawn from several classes
    forgotten = json.loads((run / "manifest.json").read_text())["forget"]
    assert data["results"]["model"]["membership-loss"]["members"] == forgotten["size"]
    assert forgotten["forget_classes"] == []

PROBE_PLUGIN = '''
import unlearnctl
from pydantic import Field


class Probe(unlearnctl.Attack):
    """Mean pixel of a few samples of the forgotten class (a test attack)."""

    name = "acme-probe"
    needs_judge = False
    headline = ("mean", "probe")

    class Options(unlearnctl.Options):
        num: int = Field(3, ge=1, description="samples to draw")

    def prepare(self, ctx):
        ctx.members()

    def run(self, ctx: unlearnctl.AuditContext) -> dict:
        images = ctx.sample(self.options.num, ctx.forget_classes[0], stream="acme-probe")
        ctx.progress(1.0)
        x, _ = ctx.members()
        return {
            "mean": float(images.double().mean()),
            "role": ctx.role,
            "members": len(x),
            "curves": {"pixels": {"x": [0, 1], "y": [float(images.min()), float(images.max())]}},
            "curve_axes": {"x": "end", "y": "pixel"},
        }


@unlearnctl.hookimpl
def register_attacks(register):
    register(Probe)


STEPS = []


@unlearnctl.hookimpl
def step_logged(run, step, values):
    if run.kind == "audit":
        STEPS.append((step, run.total_steps, dict(values)))
'''


def test_a_third_party_attack_is_listed_and_runs_in_audit(cli, setup, fake_plugins, tmp_path):
    module = fake_plugins.add("acme", PROBE_PLUGIN, version="2.0.0")
    listed = cli("list", "attacks", "--json")
    assert listed.exit_code == 0
    probe = next(a for a in json.loads(listed.stdout) if a["name"] == "acme-probe")
    assert (probe["provider"], probe["provider_version"]) == ("acme", "2.0.0")
    assert {a["name"] for a in json.loads(listed.stdout)} == {"acme-probe", *BUILTIN_ATTACKS}
    shown = json.loads(cli("show", "attack", "acme-probe", "--json").stdout)
    assert shown["default"] is False and shown["options"][0]["name"] == "num"

    run = _copy_run(setup, tmp_path)
    result = cli("audit", run, "--attacks", "acme-probe", "--set", "acme-probe.num=2", "--steps", 2)
    assert result.exit_code == 0, result.output
    data = json.loads((run / AUDIT_FILE).read_text())
    assert data["attacks"] == ["acme-probe"] and data["protocol"]["attacks"] == {"acme-probe": {"num": 2}}
    model, base = data["results"]["model"]["acme-probe"], data["results"]["base"]["acme-probe"]
    assert (model["role"], base["role"]) == ("model", "base")
    assert model["mean"] != base["mean"]  # same noise, different models
    # its curves are drawn like the built-ins'
    assert data["files"] == {"acme-probe": "audit-acme-probe.png"}
    assert (run / "audit-acme-probe.png").read_bytes()[:8] == PNG
    # the lifecycle hooks: one step per attack and role, its progress while it runs, then its seconds
    steps = sys.modules[module].STEPS
    assert [(step, total, sorted(values)) for step, total, values in steps] == [
        (1, 2, ["progress"]),
        (1, 2, ["seconds"]),
        (2, 2, ["progress"]),
        (2, 2, ["seconds"]),
    ]
    assert steps[1][2]["seconds"] == data["seconds"]["model"]["acme-probe"]


def test_compare_shows_the_audit_columns_next_to_the_eval_ones(cli, setup, tmp_path):
    from unlearnctl.commands.eval import EvalRequest, evaluate

    run = _copy_run(setup, tmp_path)
    evaluate(EvalRequest(target=str(run), num_samples=2, steps=1, device="cpu", grids=False, metrics=["forgetting"]))
    plain = cli("compare", run, "--json", "--no-plot")
    assert plain.exit_code == 0, plain.output
    assert json.loads(plain.stdout)["audit_columns"] == [] and json.loads(plain.stdout)["runs"][0]["audit"] == {}

    audited = cli(
        "audit", run, "--against", setup["retrain"], "--config", setup["fast"], "--steps", 2, "--no-plots",
        "--attacks", "membership-loss,relearn",
    )  # fmt: skip
    assert audited.exit_code == 0, audited.output
    audit = json.loads((run / AUDIT_FILE).read_text())["results"]
    result = cli("compare", run, "--json", "--no-plot")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["audit_columns"] == [
        {"attack": "membership-loss", "title": "MIA loss"},
        {"attack": "relearn", "title": "relearn"},
    ]
    assert data["runs"][0]["audit"] == {
        "membership-loss": audit["model"]["membership-loss"]["auc"],
        "relearn": audit["model"]["relearn"]["rate_after"],
    }
    base, retrain = data["references"]
    assert base["name"] == "base: tiny" and base["fid"] is None and base["recognition_rate"] is not None
    assert base["audit"]["membership-loss"] == audit["base"]["membership-loss"]["auc"]
    assert retrain["name"] == "retrain: retrain" and retrain["recognition_rate"] is None
    assert retrain["audit"]["relearn"] == audit["retrain"]["relearn"]["rate_after"]

    table = cli("compare", run, "--no-plot")
    assert table.exit_code == 0
    for text in ("MIA loss", "relearn", "retrain: retrain", "MIA loss = membership-loss"):
        assert text in table.stdout
