"""Image sets read from disk: streaming, picklable, fingerprinted without decoding.

What the real-world datasets (``unlearnctl.builtin.realdata``) are built from:

- :class:`FileImageSet` keeps ids, labels and metadata in memory and reads each image file only when
  it is indexed (``data[i]``), so a dataset that does not fit in RAM streams from disk. It holds
  nothing but paths, strings and numbers, so it pickles cheaply into ``DataLoader`` workers.
- :class:`ArrayImageSet` holds uint8 pixels in one array (CIFAR-10: 150 MB as uint8, four times that
  as float) and converts one item at a time.
- Both return float32 ``C x H x W`` tensors in ``[-1, 1]``: the image is cut to a centred square
  (optionally a fixed ``crop`` of pixels first), then resized to the dataset's ``resolution`` with
  Pillow's antialiased bicubic filter.
- :class:`ColumnMetadata` stores metadata column by column (CelebA's 40 attributes of 202,599 images
  take 8 MB instead of hundreds of MB of dicts) and builds a plain ``dict`` per item on access.
- :class:`LoadReport` lists the files a loader skipped and why; it is never silent: the loader either
  raises :class:`~unlearnctl.errors.UsageError` or emits a :class:`DataWarning` naming them.

Fingerprints (:meth:`FileImageSet.fingerprint`) cover what the model would see: the dataset name,
version and preprocessing, the ordered item ids, every item's metadata, and the sha256 of the bytes
of every image file at its path. They do not decode images and do not depend on file times: a file's
size, modification and change times and inode only decide whether its cached sha256 (under
:func:`unlearnctl.paths.cache_dir`) can be reused, and inside :func:`rehashing` (``replay --verify``,
``verify --data``) or with ``UNLEARNCTL_REHASH=1`` no cached hash is trusted at all.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np
import torch
from PIL import Image

from ..errors import UsageError
from ..paths import cache_dir
from .formats import IMAGE_EXTENSIONS as IMAGE_EXTENSIONS
from .formats import OnProblem as OnProblem
from .sets import ImageSet


class DataWarning(UserWarning):
    """A dataset was loaded without some of its files; the message names them and says how many."""


# --- load reports ------------------------------------------------------------------------------


@dataclass
class LoadReport:
    """Files a dataset loader left out, with the reason for each."""

    dataset: str
    #: (file or id, reason) pairs, in the order found
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def add(self, item: str, reason: str) -> None:
        self.skipped.append((item, reason))

    @property
    def count(self) -> int:
        return len(self.skipped)

    def summary(self, total: int | None = None, limit: int = 3) -> str:
        """One line: how many were skipped and the first few by name."""
        of = f" of {total:,}" if total is not None else ""
        shown = "; ".join(f"{item} ({reason})" for item, reason in self.skipped[:limit])
        more = f"; and {self.count - limit} more" if self.count > limit else ""
        return f"dataset '{self.dataset}': skipped {self.count:,}{of} files: {shown}{more}"

    def apply(self, policy: OnProblem, total: int | None = None, hint: str = "") -> None:
        """Do nothing when nothing was skipped; else raise (``error``) or warn (``warn``)."""
        if not self.skipped:
            return
        if policy == "error":
            raise UsageError(f"{self.summary(total)}: {hint}" if hint else self.summary(total))
        warnings.warn(self.summary(total) + (f" ({hint})" if hint else ""), DataWarning, stacklevel=3)


# --- metadata ----------------------------------------------------------------------------------


class IndexedSequence(Sequence[Any]):
    """A read-only sequence of ``len(self)`` items, each computed by ``_item(index)`` when asked for:
    negative indices, bounds and slices (a list) handled here once."""

    _length: int

    def _item(self, index: int) -> Any:
        raise NotImplementedError

    def __len__(self) -> int:
        return self._length

    @overload
    def __getitem__(self, index: int) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...
    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._length))]
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError(index)
        return self._item(index)

    def __iter__(self) -> Iterator[Any]:
        return (self._item(i) for i in range(self._length))


class ColumnMetadata(IndexedSequence):
    """Per-item metadata stored by column; ``meta[i]`` is a fresh ``dict`` of plain Python values."""

    def __init__(self, columns: dict[str, Sequence[Any] | np.ndarray], length: int) -> None:
        for name, values in columns.items():
            if len(values) != length:
                raise ValueError(f"metadata column '{name}' has {len(values)} values, expected {length}")
        self._columns = dict(columns)
        self._length = length

    @property
    def names(self) -> list[str]:
        return list(self._columns)

    def column(self, name: str) -> list[Any]:
        """All values of one column as plain Python values."""
        values = self._columns[name]
        return values.tolist() if isinstance(values, np.ndarray) else list(values)

    def _item(self, index: int) -> dict[str, Any]:
        row = {}
        for name, values in self._columns.items():
            value = values[index]
            row[name] = value.item() if isinstance(value, np.generic) else value
        return row


# --- pixels ------------------------------------------------------------------------------------


def square_resize(image: Image.Image, size: int, crop: int | None = None) -> Image.Image:
    """Cut a centred square (``crop`` pixels wide, or the largest that fits) and resize it to ``size``."""
    w, h = image.size
    side = min(w, h) if crop is None else min(crop, w, h)
    left, top = (w - side) // 2, (h - side) // 2
    if side != w or side != h:
        image = image.crop((left, top, left + side, top + side))
    if side != size:
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    return image


def to_tensor(image: Image.Image) -> torch.Tensor:
    """A Pillow image (``RGB`` or ``L``) as float32 ``C x H x W`` in ``[-1, 1]``."""
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 127.5 - 1.0


#: the most pixels (width x height) an image file may declare: 8192 x 8192 (192 MiB decoded as RGB). A file
#: that declares more is refused from its header, before decoding: a small file can declare gigapixels (a
#: "decompression bomb"). Also Pillow's own limit (``Image.MAX_IMAGE_PIXELS``: a warning above it, an error
#: at twice it) once unlearnctl is imported. See docs/errors.md.
MAX_IMAGE_PIXELS = 8192 * 8192
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS


def load_image(path: Path, size: int, channels: int = 3, crop: int | None = None) -> torch.Tensor:
    """Decode one image file into the dataset's format (see :func:`square_resize`, :func:`to_tensor`).

    :raises UsageError: the file is missing, truncated, not an image, or declares more than
        :data:`MAX_IMAGE_PIXELS` pixels (checked from its header, before decoding); one line naming it.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # Pillow's own check at open
            with Image.open(path) as opened:
                width, height = opened.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise UsageError(_too_large(path, f"{width} x {height} pixels"))
                image = opened.convert("RGB" if channels == 3 else "L")
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise UsageError(_too_large(path, f"more than {MAX_IMAGE_PIXELS:,} pixels")) from None
    except (UsageError, MemoryError):
        raise
    except Exception as exc:  # missing, truncated or not an image: OSError, SyntaxError, ValueError, EOFError...
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise UsageError(f"cannot read image '{path}': {message}; replace or remove the file") from None
    return to_tensor(square_resize(image, size, crop))


def _too_large(path: Path, declared: str) -> str:
    return (
        f"image '{path}' declares {declared}; unlearnctl decodes at most {MAX_IMAGE_PIXELS:,} (a decompression "
        "bomb?): replace or remove the file"
    )


# --- file hashes and fingerprints --------------------------------------------------------------


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


#: set to 1 to re-hash every data file instead of trusting the hash cache (see :func:`rehashing`)
REHASH_ENV = "UNLEARNCTL_REHASH"
_rehash: ContextVar[bool] = ContextVar("unlearnctl_rehash", default=False)


@contextlib.contextmanager
def rehashing(enabled: bool = True) -> Iterator[None]:
    """Inside the block, :func:`file_hashes` reads every file again instead of reusing cached hashes.

    For checks that must not trust anything on disk but the data itself (``replay --verify``, ``verify
    --data``): the cache lives in the user's cache folder and is keyed on file metadata, which whoever
    can write the data can also set back.
    """
    token = _rehash.set(enabled)
    try:
        yield
    finally:
        _rehash.reset(token)


def rehash_enabled() -> bool:
    """Whether cached data-file hashes are ignored now (:func:`rehashing` or ``UNLEARNCTL_REHASH=1``)."""
    env = os.environ.get(REHASH_ENV, "").strip().lower() not in ("", "0", "false", "no")
    return _rehash.get() or env


def file_hashes(root: Path, files: Sequence[str]) -> dict[str, tuple[int, str]]:
    """``{relative path: (size, sha256 of the bytes)}`` for ``files`` under ``root``.

    Hashes are cached in ``<cache dir>/file-sha256/<hash of root>.json``, keyed by relative path and
    reused only while a file's size, modification time, change time (ns) and inode are all unchanged:
    putting a modification time back after editing a file still changes its change time. Under
    :func:`rehashing` every file is read again. A cache that cannot be written (read-only home...) only
    makes the next call slower.
    """
    root = Path(root).resolve()
    cache_file = cache_dir() / "file-sha256" / f"{hashlib.sha256(str(root).encode()).hexdigest()[:32]}.json"
    cache: dict[str, list[Any]] = {}
    try:
        stored = json.loads(cache_file.read_text())
        if stored.get("root") == str(root):
            cache = stored.get("files", {})
    except (OSError, ValueError, AttributeError):
        cache = {}
    out: dict[str, tuple[int, str]] = {}
    changed = False
    trust_cache = not rehash_enabled()
    for rel in files:
        st = (root / rel).stat()
        key = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        hit = cache.get(rel)
        if trust_cache and isinstance(hit, list) and hit[:-1] == key:
            digest = hit[-1]
        else:
            digest = _sha256_file(root / rel)
            cache[rel] = [*key, digest]
            changed = True
        out[rel] = (st.st_size, digest)
    if changed:
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=cache_file.parent, suffix=".tmp")
            with os.fdopen(fd, "w") as fh:
                json.dump({"root": str(root), "files": cache}, fh)
            os.replace(tmp, cache_file)
        except OSError:
            pass
    return out


def files_fingerprint(root: Path, files: Iterable[str]) -> str:
    """sha256 over the sorted ``(relative path, size, sha256 of the bytes)`` of ``files`` under ``root``."""
    files = sorted(set(files))
    hashes = file_hashes(root, files)
    h = hashlib.sha256()
    for rel in files:
        size, digest = hashes[rel]
        h.update(f"{rel}\0{size}\0{digest}\n".encode())
    return h.hexdigest()


def _metadata_digest(h: Any, ids: Sequence[str], metadata: Sequence[dict[str, Any]]) -> None:
    for item_id, meta in zip(ids, metadata, strict=True):
        h.update(item_id.encode() + b"\0" + json.dumps(meta, sort_keys=True, default=str).encode() + b"\n")


# --- splits ------------------------------------------------------------------------------------


def hash_split(item_id: str, test_fraction: float) -> Literal["train", "test"]:
    """A deterministic split for datasets without an official one.

    An item is a test item when the first 8 hex digits of sha256(id), read as a fraction of 2**32,
    fall below ``test_fraction``. It depends on nothing but the id, so adding or removing files never
    moves another file between splits.
    """
    value = int(hashlib.sha256(item_id.encode()).hexdigest()[:8], 16) / 2**32
    return "test" if value < test_fraction else "train"


def list_images(folder: Path, recursive: bool = True) -> list[str]:
    """Image files under ``folder`` (by :data:`IMAGE_EXTENSIONS`), as sorted POSIX paths relative to it.

    Hidden files and folders (names starting with ``.``) are left out.
    """
    folder = Path(folder)
    found = []
    walker = os.walk(folder) if recursive else [(str(folder), [], os.listdir(folder))]
    for dirpath, dirnames, filenames in walker:
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            full = Path(dirpath) / name
            if full.is_file():
                found.append(full.relative_to(folder).as_posix())
    return sorted(found)


# --- image sets --------------------------------------------------------------------------------


class FileImageSet(ImageSet):
    """Images decoded from files on demand; ids, labels and metadata in memory.

    :param root: folder the ``files`` are relative to.
    :param files: relative POSIX path of each item's image file.
    :param metadata: per-item metadata; ``"label"`` is the class id (``-1`` or absent: unlabelled).
    :param ids: stable id of each item (default: ``files``).
    :param image_size: side in pixels of the returned images (the dataset's ``resolution``).
    :param crop: width of the centred square cut before resizing (``None``: the largest square).
    :param params: other preprocessing settings that change the pixels, recorded in the fingerprint.
    :param report: what the loader skipped (kept for the caller to show or record).
    """

    def __init__(
        self,
        root: Path,
        files: Sequence[str],
        metadata: ColumnMetadata,
        class_names: Sequence[str],
        *,
        ids: Sequence[str] | None = None,
        image_size: int,
        channels: int = 3,
        crop: int | None = None,
        name: str = "",
        version: str = "",
        params: dict[str, Any] | None = None,
        report: LoadReport | None = None,
    ) -> None:
        self.root = Path(root)
        self.files = list(files)
        self._ids = list(ids) if ids is not None else list(self.files)
        if not (len(self._ids) == len(self.files) == len(metadata)):
            raise ValueError("files, ids and metadata must have the same length")
        if len(set(self._ids)) != len(self._ids):
            raise ValueError("item ids must be unique")
        self._metadata = metadata
        labels = metadata.column("label") if "label" in metadata.names else [-1] * len(self.files)
        self._labels = np.asarray(labels, dtype=np.int64)
        self.class_names = list(class_names)
        self.image_size, self.channels, self.crop = int(image_size), int(channels), crop
        self.name, self.version = name, version
        self.params = dict(params or {})
        self.report = report or LoadReport(name)
        self._fingerprint: str | None = None

    @property
    def ids(self) -> list[str]:
        return self._ids

    @property
    def metadata(self) -> ColumnMetadata:  # type: ignore[override]
        return self._metadata

    @property
    def labels(self) -> list[int]:
        return self._labels.tolist()

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = load_image(self.root / self.files[index], self.image_size, self.channels, self.crop)
        return image, int(self._labels[index])

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            h = hashlib.sha256()
            header = {
                "dataset": self.name,
                "version": self.version,
                "image_size": self.image_size,
                "channels": self.channels,
                "crop": self.crop,
                "class_names": self.class_names,
                **self.params,
            }
            h.update(json.dumps(header, sort_keys=True).encode() + b"\n")
            h.update(files_fingerprint(self.root, self.files).encode() + b"\n")
            for item_id, rel in zip(self._ids, self.files, strict=True):
                h.update(f"{item_id}\0{rel}\n".encode())
            _metadata_digest(h, self._ids, self._metadata)
            self._fingerprint = h.hexdigest()
        return self._fingerprint


class ArrayImageSet(ImageSet):
    """Images held as one uint8 ``N x H x W x C`` array, converted (and resized) one item at a time."""

    def __init__(
        self,
        pixels: np.ndarray,
        ids: Sequence[str],
        metadata: ColumnMetadata,
        class_names: Sequence[str],
        *,
        image_size: int | None = None,
        name: str = "",
        version: str = "",
    ) -> None:
        if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[1] != pixels.shape[2]:
            raise ValueError(f"pixels must be uint8 N x S x S x C, got {pixels.dtype} {pixels.shape}")
        if not (len(pixels) == len(ids) == len(metadata)):
            raise ValueError("pixels, ids and metadata must have the same length")
        self.pixels = np.ascontiguousarray(pixels)
        self._ids = list(ids)
        self._metadata = metadata
        labels = metadata.column("label") if "label" in metadata.names else [-1] * len(self._ids)
        self._labels = np.asarray(labels, dtype=np.int64)
        self.class_names = list(class_names)
        self.native_size = int(pixels.shape[1])
        self.image_size = int(image_size or self.native_size)
        self.channels = int(pixels.shape[3])
        self.name, self.version = name, version
        self._fingerprint: str | None = None

    @property
    def ids(self) -> list[str]:
        return self._ids

    @property
    def metadata(self) -> ColumnMetadata:  # type: ignore[override]
        return self._metadata

    @property
    def labels(self) -> list[int]:
        return self._labels.tolist()

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        array = self.pixels[index]
        if self.image_size == self.native_size:
            image = torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 127.5 - 1.0
        else:
            pil = Image.fromarray(array[:, :, 0] if self.channels == 1 else array)
            image = to_tensor(square_resize(pil, self.image_size))
        return image, int(self._labels[index])

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            h = hashlib.sha256()
            header = {
                "dataset": self.name,
                "version": self.version,
                "image_size": self.image_size,
                "class_names": self.class_names,
            }
            h.update(json.dumps(header, sort_keys=True).encode() + b"\n")
            _metadata_digest(h, self._ids, self._metadata)
            h.update(self.pixels.tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint
