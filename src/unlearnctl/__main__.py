"""``python -m unlearnctl``: the ``unlearnctl`` command (for launchers that run modules:
``accelerate launch -m unlearnctl forget ...``, ``torchrun -m unlearnctl ...``)."""

import sys

from _unlearnctl_console import main

if __name__ == "__main__":
    sys.exit(main())
