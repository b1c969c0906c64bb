"""unlearnctl-mlflow: track unlearnctl runs in MLflow, opt-in (``UNLEARNCTL_REPORT_TO=mlflow``).

unlearnctl finds the plugin through the ``unlearnctl`` entry point of ``pyproject.toml``
(``mlflow = "unlearnctl_mlflow.plugin"``). Importing this package imports neither MLflow nor torch.
"""

__version__ = "0.1.0"
