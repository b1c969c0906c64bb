"""An example unlearnctl plugin: the ``label-range`` selector and the ``null-target`` method.

unlearnctl finds it through the ``unlearnctl`` entry point declared in ``pyproject.toml``; nothing
here is imported by unlearnctl directly.
"""

__version__ = "0.1.0"
