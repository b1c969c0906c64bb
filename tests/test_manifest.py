"""The manifest model, its published JSON schema, and reading manifests back."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from unlearnctl import UsageError
from unlearnctl.manifest import (
    DatasetRecord,
    Manifest,
    WeightsRecord,
    collect_environment,
    read_manifest,
    render_manifest_doc,
    render_schema_json,
)


def test_published_schema_is_up_to_date(repo_root: Path) -> None:
    published = repo_root / "docs" / "manifest.schema.json"
    assert published.read_text() == render_schema_json(), "run .venv/bin/python bench/gen_schema.py"


def test_published_field_reference_is_up_to_date(repo_root: Path) -> None:
    doc = (repo_root / "docs" / "manifest.md").read_text()
    assert doc == render_manifest_doc(doc), "run .venv/bin/python bench/gen_schema.py"


def test_schema_has_every_contract_field() -> None:
    schema = json.loads(render_schema_json())
    top = set(schema["properties"])
    assert {
        "schema_version",
        "command",
        "seed",
        "seeds",
        "method",
        "runner",
        "dataset",
        "forget",
        "weights",
        "environment",
        "started_at",
        "finished_at",
        "wall_time_s",
        "optimizer_steps",
        "final_losses",
    } <= top
    defs = schema["$defs"]
    assert {"input_sha256", "output_sha256", "saved_weights"} <= set(defs["WeightsRecord"]["properties"])
    assert {"selectors", "size", "fingerprint", "remain_size"} <= set(defs["ForgetSetRecord"]["properties"])
    assert {"name", "version", "fingerprint"} <= set(defs["DatasetRecord"]["properties"])
    env = set(defs["Environment"]["properties"])
    assert {"packages", "git_commit", "git_dirty", "device", "precision", "cuda_version", "cudnn_version",
            "deterministic_algorithms", "cudnn_deterministic"} <= env  # fmt: skip


def minimal_manifest() -> Manifest:
    import torch

    now = datetime.now(UTC)
    return Manifest(
        kind="forget",
        command=["forget", "--classes", "2"],
        seed=0,
        dataset=DatasetRecord(name="digits", version="1", split="train", size=10, fingerprint="f" * 64),
        weights=WeightsRecord(model="ddpm-digits", input_sha256="a" * 64, output_sha256="b" * 64),
        environment=collect_environment("auto", torch.device("cpu")),
        started_at=now,
        finished_at=now,
        wall_time_s=1.0,
        optimizer_steps=3,
    )


def test_round_trip(tmp_path: Path) -> None:
    m = minimal_manifest()
    m.write(tmp_path)
    assert read_manifest(tmp_path) == m
    assert read_manifest(tmp_path / "manifest.json") == m


def test_unknown_fields_are_rejected() -> None:
    data = minimal_manifest().model_dump(mode="json")
    data["weights"]["sha"] = "x"
    with pytest.raises(ValidationError):
        Manifest.model_validate(data)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no manifest"),
        ("{not json", "cannot read"),
        ('{"schema_version": 99}', "schema version 99"),
        ('{"schema_version": 1, "kind": "forget"}', "not valid"),
    ],
)
def test_bad_manifests_are_one_line_usage_errors(tmp_path: Path, content: str | None, message: str) -> None:
    if content is not None:
        (tmp_path / "manifest.json").write_text(content)
    with pytest.raises(UsageError, match=message) as err:
        read_manifest(tmp_path)
    assert "\n" not in str(err.value)
