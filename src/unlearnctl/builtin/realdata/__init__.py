"""Built-in real-world datasets: ``cifar10``, ``celeba``, ``celeba-hq``, ``utkface``, ``imagefolder``.

One module per format: :mod:`.cifar10`, :mod:`.celeba` (``celeba``, ``celeba-hq``), :mod:`.utkface`,
:mod:`.imagefolder`; :mod:`.common` has what they share. This package is the plugin: it registers
all five through the ``register_datasets`` hook.

Each reads the files exactly as their publishers distribute them (see ``docs/datasets/<name>.md``
for where they come from and the folder layout). ``--data-dir DIR`` (default
``unlearnctl.paths.data_dir()``) is searched for ``DIR/<sub-folder>`` first and then ``DIR`` itself.

Conventions shared by all of them:

- ``"label"`` in the metadata is the class id (``-1`` when the dataset has no class by default);
  every other field is usable by the ``where`` and ``attribute`` selectors.
- Ids are stable: file names (or paths relative to the dataset folder), ``cifar10-train-00042``.
- Splits are official where they exist; otherwise a deterministic hash of the id decides.
- Images stream from disk (CIFAR-10 is small enough to hold as uint8); files that cannot be used are
  never dropped silently: ``on_bad_file=warn`` (default) leaves them out with a ``DataWarning`` that
  names them and keeps the list in ``data.report``; ``on_bad_file=error`` stops with one line.
"""

from __future__ import annotations

from unlearnctl import hookimpl

from .celeba import CELEBA_ATTRIBUTES, CelebA, CelebAHQ, read_attribute_file
from .cifar10 import CIFAR10_BASE, CIFAR10_CLASSES, CIFAR10_URL, Cifar10
from .common import BAD_FILE_HELP
from .imagefolder import FILE_COLUMNS, ImageFolder
from .utkface import UTKFACE_GENDERS, UTKFACE_RACES, UTKFace, parse_utkface_name

__all__ = [
    "BAD_FILE_HELP",
    "CELEBA_ATTRIBUTES",
    "CIFAR10_BASE",
    "CIFAR10_CLASSES",
    "CIFAR10_URL",
    "FILE_COLUMNS",
    "UTKFACE_GENDERS",
    "UTKFACE_RACES",
    "CelebA",
    "CelebAHQ",
    "Cifar10",
    "ImageFolder",
    "UTKFace",
    "parse_utkface_name",
    "read_attribute_file",
]


@hookimpl
def register_datasets(register) -> None:
    register(Cifar10)
    register(CelebA)
    register(CelebAHQ)
    register(UTKFace)
    register(ImageFolder)
