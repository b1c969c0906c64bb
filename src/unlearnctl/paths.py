"""Where unlearnctl keeps data on disk: the datasets folder and the cache folder.

Both follow the platform's conventions (``platformdirs``) and can be moved with an environment
variable; nothing is created until something is written there.

| folder | environment variable | default on Linux |
| --- | --- | --- |
| datasets (``--data-dir``) | ``UNLEARNCTL_DATA_DIR`` | ``~/.local/share/unlearnctl/datasets`` |
| cache (file hashes...) | ``UNLEARNCTL_CACHE_DIR`` | ``~/.cache/unlearnctl`` |

Each dataset lives in its own sub-folder of the datasets folder (``cifar10/``, ``celeba/``,
``celeba-hq/``, ``utkface/``, ``imagefolder/``); see ``docs/datasets/``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import platformdirs

APP = "unlearnctl"
DATA_DIR_ENV = "UNLEARNCTL_DATA_DIR"
CACHE_DIR_ENV = "UNLEARNCTL_CACHE_DIR"


def data_dir() -> Path:
    """The datasets folder: ``$UNLEARNCTL_DATA_DIR``, else ``<platform user data dir>/unlearnctl/datasets``."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir(APP, appauthor=False)) / "datasets"


def cache_dir() -> Path:
    """The cache folder: ``$UNLEARNCTL_CACHE_DIR``, else ``<platform user cache dir>/unlearnctl``.

    Everything in it can be deleted at any time; it is rebuilt on demand.
    """
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir(APP, appauthor=False))


def dataset_folder(data_dir_arg: Path | str | None, sub: str, looks_like: Callable[[Path], bool]) -> Path:
    """The folder of one dataset, given ``--data-dir`` (``None``: :func:`data_dir`).

    The dataset is looked for in ``DIR/<sub>`` first, then in ``DIR`` itself (so ``--data-dir`` may
    name either the datasets folder or the dataset's own folder). ``looks_like(folder)`` says whether
    a folder holds the dataset. When neither does, ``DIR/<sub>`` is returned: that is where a
    download goes, and what error messages name.
    """
    base = Path(data_dir_arg).expanduser() if data_dir_arg is not None else data_dir()
    own = base / sub
    if own.is_dir() and looks_like(own):
        return own
    if base.is_dir() and looks_like(base):
        return base
    return own
