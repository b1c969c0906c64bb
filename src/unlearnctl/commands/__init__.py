"""The command layer: one module per ``unlearnctl`` command, called by the typer CLI (``unlearnctl.cli``).

- :mod:`.forget` and :mod:`.replay`: run an unlearning method (``forget``, ``replay``).
- :mod:`.train` and :mod:`.train_judge`: train a diffusion model or a judge.
- :mod:`.eval`, :mod:`.compare` and :mod:`.sample`: evaluate runs, compare them, sample a model.
- :mod:`.audit`: attack an unlearned model; :mod:`.study`: what ``eval`` and ``audit`` share.

Each takes plain arguments (or a request dataclass) and returns results; printing and exit codes stay
in the CLI.
"""
