"""The bad-input suite: every class of input a user can get wrong (names, numbers, paths, files, configs,
manifests, data folders) and every environmental failure a run can meet (a full disk, a read-only file
system, no permission, no memory) ends in exactly one ``error:`` line on stderr, the documented exit code
(2 bad input, 1 environmental, 130/143 interrupted; docs/errors.md), no traceback, and nothing left behind:
no ``--out`` folder, no ``.partial`` or probe folder.

Table-driven through the CLI in-process (typer's runner); the property-based parts (random configs,
``--set`` values and mutated manifests) call the core functions directly. Signals, file-size limits,
real read-only mounts and dropped capabilities need a process of their own: test_bad_input_process.py.
"""

from __future__ import annotations

import errno
import json
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from unlearnctl.errors import Interrupted, UnlearnError

Args = Callable[[Path], list[object]]

TINY_FORGET = ["forget", "--model", "tiny-cond", "--classes", "1", "--steps", "1", "--grid-per-class", "0"]


def error_lines(stderr: str) -> list[str]:
    """The lines of stderr that are not ``warning:`` lines."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("warning:")]


def assert_left_nothing(out: Path) -> None:
    """No ``out``, and nothing of it (``.NAME.partial-*``, ``.NAME.probe-*``) next to it or above it."""
    assert not out.exists(), f"{out} was left behind"
    for folder in (out.parent, *out.parents[:2]):
        if folder.is_dir():
            left = [p.name for p in folder.iterdir() if p.name.startswith(f".{out.name}.")]
            assert not left, f"left behind in {folder}: {left}"


def assert_one_line(result, code: int, needle: str = "", out: Path | None = None) -> str:
    assert "Traceback" not in result.output, result.output
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert needle.lower() in lines[0].lower(), (needle, lines[0])
    if out is not None:
        assert_left_nothing(out)
    return lines[0]


# --- files the cases use ----------------------------------------------------------------------------


def _write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def png_bomb(path: Path, side: int) -> Path:
    """A valid 1-bit grey PNG of ``side`` x ``side`` pixels: a few kB that decode to ``side**2`` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (side + 7) // 8)
    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def noise_png(path: Path) -> bytes:
    """The bytes of a 32x32 grey PNG of noise (it does not compress: cutting it loses pixels)."""
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8), "L").save(path)
    return path.read_bytes()


def image_classes(root: Path, fish: Callable[[Path], object] | None = None) -> Path:
    """``root/cat``, ``root/dog`` with two 8x8 grey images each; ``root/fish`` made by ``fish`` (one good
    image by default). The tiny-cond model reads 1x8x8 images of 3 classes: cat 0, dog 1, fish 2."""
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for k in range(2):
            Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8), "L").save(root / name / f"{k}.png")
    (root / "fish").mkdir()
    if fish is None:
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8), "L").save(root / "fish" / "0.png")
    else:
        fish(root / "fish")
    return root


def forget_imagefolder(t: Path, fish: Callable[[Path], object]) -> list[object]:
    """``forget`` class fish of an imagefolder dataset whose fish folder is made by ``fish``."""
    data = image_classes(t / "data", fish)
    options = ["resolution=8", "channels=1", "test_fraction=0", "on_bad_file=error"]
    return [*TINY_FORGET[:4], "2", *TINY_FORGET[5:], "--dataset", "imagefolder", "--data-dir", data,
            *[x for o in options for x in ("--data-option", o)], "--out", t / "out"]  # fmt: skip


def model_folder(t: Path, files: dict[str, str | bytes]) -> Path:
    for name, data in files.items():
        _write(t / "m" / name, data)
    return t / "m"


def manifest_folder(t: Path, text: str | bytes) -> Path:
    _write(t / "run" / "manifest.json", text)
    return t / "run"


# --- the table --------------------------------------------------------------------------------------

#: (id, exit code, words of the error line, the command line for a tmp folder ``t``; its ``--out`` is t/out)
CASES: list[tuple[str, int, str, Args]] = [
    # names
    ("unknown-command", 2, "no such command", lambda t: ["sampel"]),
    ("unknown-option", 2, "no such option", lambda t: ["sample", "--nmu", "3", "--out", t / "out"]),
    (
        "unknown-method",
        2,
        "did you mean 'erasediff'",
        lambda t: [*TINY_FORGET, "--method", "erasedif", "--out", t / "out"],
    ),
    (
        "unknown-model",
        2,
        "nope-model",
        lambda t: ["forget", "--model", "nope-model", "--classes", "1", "--out", t / "out"],
    ),
    ("unknown-dataset", 2, "nope-data", lambda t: [*TINY_FORGET, "--dataset", "nope-data", "--out", t / "out"]),
    (
        "unknown-selector",
        2,
        "nope",
        lambda t: ["forget", "--model", "tiny-cond", "--forget", "nope:1", "--out", t / "out"],
    ),
    (
        "selector-without-argument",
        2,
        "classes",
        lambda t: ["forget", "--model", "tiny-cond", "--forget", "classes", "--out", t / "out"],
    ),
    ("nothing-to-forget", 2, "nothing to forget", lambda t: ["forget", "--model", "tiny-cond", "--out", t / "out"]),
    ("unknown-kind", 2, "nope", lambda t: ["list", "nope"]),
    ("unknown-component", 2, "nope", lambda t: ["show", "method", "nope"]),
    ("unknown-device", 2, "tpu", lambda t: [*TINY_FORGET, "--device", "tpu", "--out", t / "out"]),
    ("unknown-precision", 2, "fp8", lambda t: [*TINY_FORGET, "--precision", "fp8", "--out", t / "out"]),
    ("unknown-sampler", 2, "euler", lambda t: ["sample", "--sampler", "euler", "--out", t / "out"]),
    ("unknown-class", 2, "cow", lambda t: ["sample", "--model", "tiny-cond", "--class", "cow", "--out", t / "out"]),
    (
        "class-of-unconditional",
        2,
        "unconditional",
        lambda t: ["sample", "--model", "tiny-uncond", "--class", "1", "--out", t / "out"],
    ),
    ("unknown-data-option", 2, "nope", lambda t: [*TINY_FORGET, "--data-option", "nope=1", "--out", t / "out"]),
    (
        "data-option-without-value",
        2,
        "key=value",
        lambda t: [*TINY_FORGET, "--data-option", "noequals", "--out", t / "out"],
    ),
    ("train-unknown-dataset", 2, "nope-data", lambda t: ["train", "--dataset", "nope-data", "--out", t / "out"]),
    (
        "judge-unknown-arch",
        2,
        "nope",
        lambda t: ["train-judge", "--dataset", "tiny", "--arch", "nope", "--out", t / "out"],
    ),
    ("eval-unknown-model", 2, "nope-model", lambda t: ["eval", "nope-model", "--classes", "1", "--out", t / "out"]),
    # numbers
    ("num-zero", 2, "--num", lambda t: ["sample", "--model", "tiny-cond", "--num", "0", "--out", t / "out"]),
    ("num-negative", 2, "--num", lambda t: ["sample", "--model", "tiny-cond", "--num", "-5", "--out", t / "out"]),
    ("num-not-a-number", 2, "--num", lambda t: ["sample", "--num", "abc", "--out", t / "out"]),
    ("num-fraction", 2, "--num", lambda t: ["sample", "--num", "1.5", "--out", t / "out"]),
    (
        "num-beyond-the-disk",
        2,
        "the images need up to",
        lambda t: ["sample", "--model", "tiny-cond", "--num", str(10**12), "--out", t / "out"],
    ),
    (
        "num-astronomical",
        2,
        "the images need up to",
        lambda t: ["sample", "--model", "tiny-cond", "--num", str(10**40), "--out", t / "out"],
    ),
    ("steps-zero", 2, "--steps", lambda t: ["sample", "--model", "tiny-cond", "--steps", "0", "--out", t / "out"]),
    (
        "steps-beyond-the-model",
        2,
        "--steps 5000",
        lambda t: ["sample", "--model", "tiny-cond", "--steps", "5000", "--out", t / "out"],
    ),
    (
        "guidance-negative",
        2,
        "--guidance",
        lambda t: ["sample", "--model", "tiny-cond", "--guidance", "-1", "--out", t / "out"],
    ),
    (
        "guidance-nan",
        2,
        "--guidance",
        lambda t: ["sample", "--model", "tiny-cond", "--guidance", "nan", "--out", t / "out"],
    ),
    ("eta-above-one", 2, "--eta", lambda t: ["sample", "--model", "tiny-cond", "--eta", "2", "--out", t / "out"]),
    ("forget-steps-zero", 2, "--steps", lambda t: [*TINY_FORGET[:5], "--steps", "0", "--out", t / "out"]),
    ("forget-seed-negative", 2, "--seed", lambda t: [*TINY_FORGET, "--seed", "-1", "--out", t / "out"]),
    ("forget-threads-zero", 2, "--threads", lambda t: [*TINY_FORGET, "--threads", "0", "--out", t / "out"]),
    ("grid-per-class-negative", 2, "--grid-per-class", lambda t: [*TINY_FORGET[:8], "-1", "--out", t / "out"]),
    ("grid-per-class-huge", 2, "--grid-per-class", lambda t: [*TINY_FORGET[:8], "100000000", "--out", t / "out"]),
    ("grid-per-class-above-64", 2, "0..64", lambda t: [*TINY_FORGET[:8], "65", "--out", t / "out"]),
    ("set-not-a-number", 2, "lr", lambda t: [*TINY_FORGET, "--set", "lr=abc", "--out", t / "out"]),
    ("set-negative-steps", 2, "steps", lambda t: [*TINY_FORGET[:5], "--set", "steps=-1", "--out", t / "out"]),
    ("set-unknown-key", 2, "nope", lambda t: [*TINY_FORGET, "--set", "nope=1", "--out", t / "out"]),
    ("set-empty-key", 2, "key=value", lambda t: [*TINY_FORGET, "--set", "=1", "--out", t / "out"]),
    ("set-without-value", 2, "key=value", lambda t: [*TINY_FORGET, "--set", "lr", "--out", t / "out"]),
    ("set-huge-steps", 2, "steps", lambda t: [*TINY_FORGET[:5], "--set", "steps=1e99", "--out", t / "out"]),
    (
        "classes-out-of-range",
        2,
        "99",
        lambda t: ["forget", "--model", "tiny-cond", "--classes", "99", "--out", t / "out"],
    ),
    (
        "classes-not-numbers",
        2,
        "does not exist",
        lambda t: ["forget", "--model", "tiny-cond", "--classes", "a,b", "--out", t / "out"],
    ),
    ("classes-negative", 2, "-1", lambda t: ["forget", "--model", "tiny-cond", "--classes", "-1", "--out", t / "out"]),
    ("classes-all", 2, "class", lambda t: ["forget", "--model", "tiny-cond", "--classes", "0,1,2", "--out", t / "out"]),
    (
        "judge-epochs-zero",
        2,
        "--epochs",
        lambda t: ["train-judge", "--dataset", "tiny", "--epochs", "0", "--out", t / "out"],
    ),
    (
        "judge-batch-zero",
        2,
        "--batch-size",
        lambda t: ["train-judge", "--dataset", "tiny", "--batch-size", "0", "--out", t / "out"],
    ),
    # paths
    ("out-exists", 2, "already exists", lambda t: [*TINY_FORGET, "--out", _write(t / "out" / "x", "").parent]),
    ("out-is-a-file", 2, "already exists", lambda t: [*TINY_FORGET, "--out", _write(t / "out", "")]),
    ("out-under-a-file", 2, "is not a folder", lambda t: [*TINY_FORGET, "--out", _write(t / "f", "") / "out"]),
    (
        "sample-out-not-empty",
        2,
        "not an empty folder",
        lambda t: ["sample", "--out", _write(t / "out" / "x", "").parent],
    ),
    (
        "judge-out-exists",
        2,
        "already exists",
        lambda t: ["train-judge", "--dataset", "tiny", "--out", _write(t / "out" / "x", "").parent],
    ),
    ("config-missing", 2, "not found", lambda t: [*TINY_FORGET, "--config", t / "nope.toml", "--out", t / "out"]),
    (
        "config-a-folder",
        2,
        "config",
        lambda t: [*TINY_FORGET, "--config", _write(t / "c.toml" / "x", "").parent, "--out", t / "out"],
    ),
    (
        "config-unknown-format",
        2,
        "unsupported format",
        lambda t: [*TINY_FORGET, "--config", _write(t / "c.txt", "lr = 1"), "--out", t / "out"],
    ),
    ("model-missing-folder", 2, "nope", lambda t: ["sample", "--model", t / "nope", "--out", t / "out"]),
    (
        "model-empty-folder",
        2,
        "config.json",
        lambda t: ["sample", "--model", model_folder(t, {"x": ""}), "--out", t / "out"],
    ),
    (
        "data-dir-missing",
        2,
        "nope",
        lambda t: [*TINY_FORGET, "--dataset", "imagefolder", "--data-dir", t / "nope", "--out", t / "out"],
    ),
    (
        "data-dir-a-file",
        2,
        "not a folder",
        lambda t: [*TINY_FORGET, "--data-dir", _write(t / "d", ""), "--out", t / "out"],
    ),
    ("replay-missing", 2, "no manifest", lambda t: ["replay", t / "nope", "--out", t / "out"]),
    ("replay-empty-folder", 2, "no manifest", lambda t: ["replay", model_folder(t, {"x": ""}), "--out", t / "out"]),
    ("verify-missing", 2, "nope", lambda t: ["verify", t / "nope"]),
    ("eval-missing", 2, "nope", lambda t: ["eval", t / "nope", "--out", t / "out"]),
    # files
    (
        "config-bad-toml",
        2,
        "invalid TOML",
        lambda t: [*TINY_FORGET, "--config", _write(t / "c.toml", "lr = = 1"), "--out", t / "out"],
    ),
    (
        "config-bad-json",
        2,
        "invalid JSON",
        lambda t: [*TINY_FORGET, "--config", _write(t / "c.json", "{lr: 1"), "--out", t / "out"],
    ),
    (
        "config-bad-yaml",
        2,
        "invalid YAML",
        lambda t: [*TINY_FORGET, "--config", _write(t / "c.yaml", "a: [1"), "--out", t / "out"],
    ),
    (
        "config-not-utf8",
        2,
        "cannot read",
        lambda t: [*TINY_FORGET, "--config", _write(t / "c.toml", b"\xff\xfe\x00lr"), "--out", t / "out"],
    ),
    (
        "config-a-list",
        2,
        "top level",
        lambda t: [*TINY_FORGET, "--config", _write(t / "c.json", "[1, 2]"), "--out", t / "out"],
    ),
    (
        "config-unknown-key",
        2,
        "nope",
        lambda t: [*TINY_FORGET, "--config", _write(t / "c.toml", "nope = 1"), "--out", t / "out"],
    ),
    (
        "config-bad-value",
        2,
        "lr",
        lambda t: [*TINY_FORGET, "--config", _write(t / "c.yaml", "lr: [1, 2]"), "--out", t / "out"],
    ),
    (
        "config-deeply-nested",
        2,
        "config",
        lambda t: [*TINY_FORGET, "--config", _write(t / "c.json", "[" * 100_000), "--out", t / "out"],
    ),
    (
        "config-yaml-tag",
        2,
        "config",
        lambda t: [
            *TINY_FORGET,
            "--config",
            _write(t / "c.yaml", "lr: !!python/object:os.system x"),
            "--out",
            t / "out",
        ],
    ),
    (
        "model-config-not-json",
        2,
        "config.json",
        lambda t: ["sample", "--model", model_folder(t, {"config.json": "{"}), "--out", t / "out"],
    ),
    (
        "model-config-a-list",
        2,
        "config.json",
        lambda t: ["sample", "--model", model_folder(t, {"config.json": "[]"}), "--out", t / "out"],
    ),
    (
        "model-weights-garbage",
        2,
        "m",
        lambda t: [
            "sample",
            "--model",
            model_folder(
                t,
                {
                    "config.json": json.dumps({"_class_name": "UNet2DModel"}),
                    "diffusion_pytorch_model.safetensors": b"garbage",
                },
            ),
            "--out",
            t / "out",
        ],
    ),
    # manifests
    ("manifest-not-json", 2, "manifest", lambda t: ["replay", manifest_folder(t, "{"), "--out", t / "out"]),
    ("manifest-a-list", 2, "manifest", lambda t: ["replay", manifest_folder(t, "[]"), "--out", t / "out"]),
    ("manifest-empty-object", 2, "manifest", lambda t: ["replay", manifest_folder(t, "{}"), "--out", t / "out"]),
    ("manifest-not-utf8", 2, "manifest", lambda t: ["replay", manifest_folder(t, b"\xff\xfe{}"), "--out", t / "out"]),
    (
        "manifest-only-version",
        2,
        "manifest",
        lambda t: ["replay", manifest_folder(t, '{"schema_version": 1}'), "--out", t / "out"],
    ),
    ("verify-manifest-a-list", 2, "manifest", lambda t: ["verify", manifest_folder(t, "[]")]),
    ("eval-manifest-garbage", 2, "manifest", lambda t: ["eval", manifest_folder(t, "{"), "--classes", "1"]),
    # data folders
    (
        "data-folder-empty",
        2,
        "imagefolder",
        lambda t: [
            *TINY_FORGET,
            "--dataset",
            "imagefolder",
            "--data-dir",
            model_folder(t, {"a/readme.txt": "x"}),
            "--out",
            t / "out",
        ],
    ),
    (
        "data-csv-without-file-column",
        2,
        "file column",
        lambda t: [
            *TINY_FORGET,
            "--dataset",
            "imagefolder",
            "--data-dir",
            model_folder(t, {"metadata.csv": "a,b\n1,2\n"}),
            "--out",
            t / "out",
        ],
    ),
    (
        "data-image-garbage",
        2,
        "bad.png",
        lambda t: forget_imagefolder(t, lambda d: _write(d / "bad.png", b"not a png")),
    ),
    (
        "data-image-truncated",
        2,
        "cut.png",
        lambda t: forget_imagefolder(t, lambda d: _write(d / "cut.png", noise_png(t / "x.png")[:300])),
    ),
    (
        "data-decompression-bomb",
        2,
        "bomb.png' declares more than",
        lambda t: forget_imagefolder(t, lambda d: png_bomb(d / "bomb.png", 20_000)),
    ),
    (
        "data-over-our-pixel-limit",
        2,
        "big.png' declares more than 67,108,864 pixels",
        lambda t: forget_imagefolder(t, lambda d: png_bomb(d / "big.png", 9000)),
    ),
]


@pytest.mark.parametrize(("code", "needle", "args"), [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_bad_input_is_one_line(cli, tiny, tmp_path, code, needle, args):
    t = tmp_path / "t"
    t.mkdir()
    argv = args(t)
    out = t / "out"
    before = sorted(out.rglob("*")) if out.is_dir() else out.exists()  # a case whose --out exists already
    result = cli(*argv)
    assert_one_line(result, code, needle)
    if before is False:
        assert_left_nothing(out)
    else:  # untouched, and nothing next to it
        assert (sorted(out.rglob("*")) if out.is_dir() else out.exists()) == before
        assert not [p.name for p in t.iterdir() if p.name.startswith(".out.")]


# --- the machine refuses: exit code 1 -----------------------------------------------------------------


def _raise(exc: BaseException) -> Callable[..., None]:
    def fail(*args: object, **kwargs: object) -> None:
        raise exc

    return fail


def test_disk_full_while_saving_the_weights(cli, tiny, tmp_path, monkeypatch):
    from unlearnctl.models.folder import DiffusionModel

    monkeypatch.setattr(DiffusionModel, "save", _raise(OSError(errno.ENOSPC, "No space left on device")))
    result = cli(*TINY_FORGET, "--out", tmp_path / "out")
    line = assert_one_line(result, 1, "no space left on device", tmp_path / "out")
    assert f"cannot write the run folder '{tmp_path / 'out'}'" in line


def test_file_size_limit_in_a_library_message(cli, tiny, tmp_path, monkeypatch):
    """safetensors reports a write failure as its own exception with the OS error in the text."""
    from unlearnctl.models.folder import DiffusionModel

    class SafetensorError(Exception):
        pass

    error = SafetensorError("Error while serializing: I/O error: File too large (os error 27)")
    monkeypatch.setattr(DiffusionModel, "save", _raise(error))
    result = cli(*TINY_FORGET, "--out", tmp_path / "out")
    assert_one_line(result, 1, "file too large", tmp_path / "out")


def test_disk_full_while_writing_images(cli, tiny, tmp_path, monkeypatch):
    """The PNGs of `sample`; then its grid (written atomically by the grid module)."""
    monkeypatch.setattr(Image.Image, "save", _raise(OSError(errno.ENOSPC, "No space left on device")))
    result = cli("sample", "--model", "tiny-cond", "--num", "3", "--steps", "1", "--out", tmp_path / "out")
    assert_one_line(result, 1, "no space left on device", tmp_path / "out")


@pytest.mark.parametrize(
    ("number", "needle"), [(errno.EROFS, "read-only file system"), (errno.EACCES, "permission denied")]
)
def test_unwritable_out_is_found_before_the_model_is_loaded(cli, tiny, tmp_path, monkeypatch, number, needle):
    import tempfile

    from unlearnctl import inputs

    loaded = []
    monkeypatch.setattr(inputs, "resolve_model", lambda *a, **k: loaded.append(1))
    monkeypatch.setattr(tempfile, "mkdtemp", _raise(OSError(number, "refused", str(tmp_path / ".out.probe-x"))))
    for args in (TINY_FORGET, ["sample", "--model", "tiny-cond"], ["train", "--dataset", "tiny"],
                 ["train-judge", "--dataset", "tiny"]):  # fmt: skip
        result = cli(*args, "--out", tmp_path / "out")
        line = assert_one_line(result, 1, needle, tmp_path / "out")
        assert f"cannot write --out '{tmp_path / 'out'}'" in line
    assert not loaded


def test_read_only_file_system_while_writing(cli, tiny, tmp_path, monkeypatch):
    from unlearnctl.models.folder import DiffusionModel

    monkeypatch.setattr(DiffusionModel, "save", _raise(OSError(errno.EROFS, "Read-only file system", "x")))
    assert_one_line(cli(*TINY_FORGET, "--out", tmp_path / "out"), 1, "read-only file system", tmp_path / "out")


@pytest.mark.parametrize(
    "error",
    [
        MemoryError(),
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried "
            "to allocate 8589934592 bytes"
        ),
    ],
    ids=["MemoryError", "torch-cpu-allocator"],
)
def test_out_of_memory_is_one_line_with_a_hint(cli, tiny, tmp_path, monkeypatch, error):
    from unlearnctl.commands import sample

    monkeypatch.setattr(sample, "sample", _raise(error))
    result = cli("sample", "--model", "tiny-cond", "--num", "3", "--out", tmp_path / "out")
    line = assert_one_line(result, 1, "out of memory", tmp_path / "out")
    assert "--num" in line and "batch" in line


def test_internal_error_is_one_line_asking_for_a_report(cli, tiny, tmp_path, monkeypatch):
    from unlearnctl.commands import sample

    monkeypatch.setattr(sample, "sample", _raise(ZeroDivisionError("division by zero")))
    result = cli("sample", "--model", "tiny-cond", "--num", "3", "--out", tmp_path / "out")
    line = assert_one_line(result, 1, "internal error: ZeroDivisionError: division by zero", tmp_path / "out")
    assert "UNLEARNCTL_DEBUG=1" in line


@pytest.mark.parametrize(("stop", "code", "needle"), [(KeyboardInterrupt(), 130, "interrupted"),
                                                      (Interrupted(15), 143, "stopped by SIGTERM"),
                                                      (Interrupted(1), 129, "stopped by SIGHUP")])  # fmt: skip
def test_interrupted_mid_run_leaves_nothing(cli, tiny, tmp_path, monkeypatch, stop, code, needle):
    from unlearnctl.models.folder import DiffusionModel

    monkeypatch.setattr(DiffusionModel, "save", _raise(stop))
    assert_one_line(cli(*TINY_FORGET, "--out", tmp_path / "out"), code, needle, tmp_path / "out")


def test_debug_shows_the_traceback(cli, tiny, tmp_path, monkeypatch):
    from unlearnctl.commands import sample

    monkeypatch.setattr(sample, "sample", _raise(ZeroDivisionError("boom")))
    with pytest.raises(ZeroDivisionError):
        cli("sample", "--model", "tiny-cond", "--num", "3", "--out", tmp_path / "out", env={"UNLEARNCTL_DEBUG": "1"})
    assert_left_nothing(tmp_path / "out")


def _errors() -> list[tuple[BaseException, int, str]]:
    """An exception of each kind the boundary maps, its exit code and words of its line."""
    import tomllib

    from pydantic import BaseModel

    from unlearnctl.errors import EnvironmentFailure, UsageError

    class Options(BaseModel):
        steps: int

    def caught(call: Callable[[], object]) -> BaseException:
        try:
            call()
        except Exception as exc:
            return exc
        raise AssertionError("no exception")

    return [
        (UsageError("bad\nvalue"), 2, "error: bad; value"),
        (EnvironmentFailure("disk"), 1, "disk"),
        (caught(lambda: Options(steps="x")), 2, "invalid Options: steps: Input should be a valid integer"),
        (caught(lambda: json.loads("{")), 2, "invalid JSON"),
        (caught(lambda: tomllib.loads("a = = 1")), 2, "invalid TOML"),
        (caught(lambda: yaml.safe_load("a: [1")), 2, "invalid YAML"),
        (caught(lambda: b"\xff".decode()), 2, "not UTF-8 text"),
        (caught(lambda: Image.open(__file__)), 2, "bad image: cannot identify image file"),
        (OSError(errno.ENOSPC, "No space left on device", "/x/y"), 1, "cannot use '/x/y': no space left on device"),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), 1, "disk quota exceeded"),
        (OSError(errno.EFBIG, "File too large"), 1, "file too large for a file-size limit (ulimit -f)"),
        (OSError(errno.EROFS, "Read-only file system", "/ro"), 1, "'/ro': read-only file system"),
        (PermissionError(errno.EACCES, "Permission denied", "/p"), 1, "'/p': permission denied"),
        (OSError(errno.EPERM, "Operation not permitted", "/p"), 1, "operation not permitted"),
        (FileNotFoundError(errno.ENOENT, "No such file or directory", "/gone"), 1, "'/gone': No such file"),
        (RuntimeError("I/O error: No space left on device (os error 28)"), 1, "no space left on device"),
        (MemoryError(), 1, "out of memory: lower the batch size"),
        (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), 1, "out of memory"),
        (type("OutOfMemoryError", (RuntimeError,), {})("MPS backend"), 1, "out of memory"),
        (KeyError("x"), 1, "internal error: KeyError: 'x'; please report it"),
    ]


@pytest.mark.parametrize(
    ("exc", "code", "needle"), _errors(), ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else None
)
def test_the_boundary_maps_every_kind_of_exception(exc, code, needle, capsys):
    """Through the boundary itself (the context manager every command runs in): one line, the exit code."""
    import typer

    from unlearnctl.cli.common import errors_handled

    with pytest.raises(typer.Exit) as exit_info, errors_handled():
        raise exc
    assert exit_info.value.exit_code == code
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and stderr.startswith("error: ") and needle in stderr, stderr


# --- random configs, --set values and manifests (the core functions, directly) ------------------------

_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=8), inner, max_size=3), max_leaves=6)  # fmt: skip
#: keys of erasediff's options, plus any text
_keys = st.sampled_from(["lr", "steps", "batch_size", "lambda_rule", "inner_steps", "ema", "seed"]) | st.text(
    max_size=10
)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if value == value and abs(value) != float("inf") else ("nan" if value != value else "inf")
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value if v is not None and not isinstance(v, dict)) + "]"
    return json.dumps(str(value))


def _one_line_unlearn_error(call: Callable[[], object], codes: tuple[int, ...] = (2,)) -> None:
    """``call`` succeeds, or fails with an :class:`UnlearnError` whose message is one line and whose exit
    code is one of ``codes``; any other exception fails the test."""
    from unlearnctl.cli.common import describe_failure

    try:
        call()
    except UnlearnError as exc:
        code, message = describe_failure(exc)
        assert code in codes, message
        assert message and "\n" not in message  # what the boundary prints (it joins a message's lines)


@pytest.fixture
def registry(tiny):
    from unlearnctl.registry import get_registry

    return get_registry()


def test_random_configs_are_accepted_or_one_line(registry, tmp_path):
    from unlearnctl.config import load_config_file
    from unlearnctl.inputs import resolve_method

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(data=st.dictionaries(_keys, _values, max_size=4), fmt=st.sampled_from(["toml", "json", "yaml"]),
           junk=st.binary(max_size=6))  # fmt: skip
    def check(data, fmt, junk):
        if fmt == "json":
            text = json.dumps(data).encode()
        elif fmt == "yaml":
            text = yaml.safe_dump(data).encode()
        else:
            text = "".join(f"{json.dumps(k)} = {_toml_value(v)}\n" for k, v in data.items() if v is not None).encode()
        for body in (text, text + junk, junk + text):
            path = tmp_path / f"c.{fmt}"
            path.write_bytes(body)
            _one_line_unlearn_error(lambda p=path: resolve_method(registry, "erasediff", load_config_file(p), [], None))

    check()


def test_random_set_values_are_accepted_or_one_line(registry):
    from unlearnctl.inputs import resolve_method

    @settings(max_examples=25, deadline=None)
    @given(pairs=st.lists(st.tuples(_keys, st.text(max_size=16)), max_size=3), sep=st.sampled_from(["=", ":", ""]))
    def check(pairs, sep):
        sets = [f"{k}{sep}{v}" for k, v in pairs]
        _one_line_unlearn_error(lambda: resolve_method(registry, "erasediff", None, sets, None))

    check()


def _mutate(value: object, path: list[object], new: object) -> object:
    """``value`` with the item at ``path`` replaced by ``new`` (or deleted when ``new`` is ``...``)."""
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict) and head in value:
        out = dict(value)
        if new is ... and not rest:
            del out[head]
        else:
            out[head] = _mutate(value[head], rest, new)
        return out
    if isinstance(value, list) and isinstance(head, int) and head < len(value):
        return [_mutate(v, rest, new) if i == head else v for i, v in enumerate(value)]
    return value


def _paths(value: object, prefix: list[object] | None = None) -> list[list[object]]:
    prefix = prefix or []
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, [*prefix, k])
    elif isinstance(value, list):
        for i, v in enumerate(value[:3]):
            out += _paths(v, [*prefix, i])
    return out


def test_mutated_manifests_are_replayed_or_refused_in_one_line(cli, tiny, tmp_path):
    """A real tiny forget run, its manifest mutated at random (one value replaced or deleted, or the bytes
    cut): `replay` prepares it or refuses it with one UnlearnError, never anything else."""
    from unlearnctl.commands.replay import prepare_replay
    from unlearnctl.registry import get_registry

    run = tmp_path / "run"
    assert cli(*TINY_FORGET, "--out", run).exit_code == 0
    original = json.loads((run / "manifest.json").read_text())
    paths = _paths(original)
    registry = get_registry()

    @settings(max_examples=25, deadline=None)
    @given(index=st.integers(0, len(paths) - 1), new=_values | st.just(...), cut=st.none() | st.integers(0, 4000))
    def check(index, new, cut):
        text = json.dumps(_mutate(original, paths[index], new), default=str).encode()
        (run / "manifest.json").write_bytes(text if cut is None else text[:cut])
        out = tmp_path / "replayed"
        # a mismatch with the records is a VerificationError (exit code 1), one line all the same
        _one_line_unlearn_error(lambda: prepare_replay(run / "manifest.json", out=out, registry=registry), (1, 2))
        assert_left_nothing(out)

    check()
