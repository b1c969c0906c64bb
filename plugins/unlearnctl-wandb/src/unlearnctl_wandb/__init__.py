"""unlearnctl-wandb: track unlearnctl runs in Weights & Biases, opt-in (``UNLEARNCTL_REPORT_TO=wandb``).

unlearnctl finds the plugin through the ``unlearnctl`` entry point of ``pyproject.toml``
(``wandb = "unlearnctl_wandb.plugin"``). Importing this package imports neither wandb nor torch.
"""

__version__ = "0.1.0"
