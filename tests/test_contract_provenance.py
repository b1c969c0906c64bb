"""Plugin versions in the manifest, and what replay does when a plugin changed or is missing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import unlearnctl
from unlearnctl.commands.forget import ForgetRequest, forget
from unlearnctl.manifest import read_manifest
from unlearnctl.provenance import check_providers
from unlearnctl.registry import MissingProviderError, get_registry
from unlearnctl.rundir import record_files

NEW_FIELDS = ("provider_version", "provider_distribution")


def run(out: Path) -> Path:
    request = ForgetRequest(
        model="tiny-cond", classes="1", out=out, steps=2, grid_per_class=0,
        sets=["remain_batch_size=4", "forget_batch_size=4"], command=["forget"],
    )  # fmt: skip
    return forget(request).run_dir


def edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    record_files(path.parent, [path])  # a consistent record: replay's own checks are under test here


def records(data: dict) -> list[dict]:
    """The component records of a manifest's JSON: method, dataset, selectors, model preset."""
    return [data["method"], data["dataset"], *data["forget"]["selectors"], data["weights"]["preset"]]


def test_each_component_records_its_plugin_version_and_distribution(tiny, tmp_path: Path) -> None:
    manifest = read_manifest(run(tmp_path / "a"))
    own = unlearnctl.__version__
    assert (manifest.method.provider, manifest.method.provider_version) == ("builtin.methods", own)
    assert manifest.method.provider_distribution == "unlearnctl"
    (selector,) = manifest.forget.selectors
    assert (selector.provider, selector.provider_version, selector.provider_distribution) == (
        "builtin.selectors", own, "unlearnctl",
    )  # fmt: skip
    # the tiny dataset and model come from a plugin installed as distribution fake-tiny 1.0.0
    for record in (manifest.dataset, manifest.weights.preset):
        where = (record.provider, record.provider_version, record.provider_distribution)
        assert where == ("tiny", "1.0.0", "fake-tiny")


def test_a_manifest_from_before_plugin_versions_loads_and_replays_bit_for_bit(cli, tiny, tmp_path: Path) -> None:
    original = run(tmp_path / "a")

    def strip(data: dict) -> None:  # the manifest as unlearnctl wrote it before it recorded plugin versions
        for record in records(data):
            for key in NEW_FIELDS:
                del record[key]

    edit(original / "manifest.json", strip)
    old = read_manifest(original)
    assert old.method.provider_version is None and old.dataset.provider_distribution is None
    result = cli("replay", original, "--verify", "--out", tmp_path / "b")
    assert result.exit_code == 0, result.output
    assert "plugin" not in result.stderr  # no version to compare: no plugin warning
    again = read_manifest(tmp_path / "b")
    assert again.replay_of.verified is True and again.dataset.provider_version == "1.0.0"


def test_replay_warns_once_per_plugin_whose_version_changed(cli, tiny, tmp_path: Path) -> None:
    original = run(tmp_path / "a")

    def older(data: dict) -> None:
        data["dataset"]["provider_version"] = "0.9.0"
        data["weights"]["preset"]["provider_version"] = "0.9.0"

    edit(original / "manifest.json", older)
    result = cli("replay", original, "--out", tmp_path / "b")
    assert result.exit_code == 0, result.output
    line = "plugin tiny: recorded 0.9.0, now 1.0.0 (dataset 'tiny', model 'tiny-cond')"
    assert result.stderr.count(line) == 1


def test_replay_names_the_missing_plugin_and_how_to_install_it(cli, tiny, tmp_path: Path) -> None:
    original = run(tmp_path / "a")

    def from_plugin(data: dict) -> None:
        data["method"].update(
            name="acme-erase", provider="acme", provider_version="2.0", provider_distribution="acme-unlearn"
        )

    edit(original / "manifest.json", from_plugin)
    result = cli("replay", original, "--out", tmp_path / "b")
    assert result.exit_code == 2
    assert (
        "method 'acme-erase' was provided by plugin 'acme' (version 2.0) which is not installed: "
        "pip install 'acme-unlearn==2.0'" in result.stderr
    )
    assert "unknown method" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()


def test_a_component_now_served_by_another_plugin_is_a_warning(tiny, tmp_path: Path) -> None:
    manifest = read_manifest(run(tmp_path / "a"))
    manifest.dataset.provider, manifest.dataset.provider_version = "old-tiny", "0.1"
    assert check_providers(get_registry(), manifest) == [
        "dataset 'tiny': recorded from plugin 'old-tiny' (0.1), now from plugin 'tiny' (1.0.0)"
    ]
    # built-in components: their version is unlearnctl's, which the environment check compares
    manifest.method.provider_version = "0.0.1"
    assert len(check_providers(get_registry(), manifest)) == 1
    manifest.forget.selectors[0].name = "gone"
    with pytest.raises(MissingProviderError, match="selector 'gone' was provided by built-in plugin"):
        check_providers(get_registry(), manifest)
