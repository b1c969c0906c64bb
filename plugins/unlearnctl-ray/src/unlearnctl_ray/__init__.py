"""unlearnctl-ray: run the cells of ``unlearnctl sweep`` as Ray tasks (``--executor ray``).

unlearnctl finds the plugin through the ``unlearnctl`` entry point of ``pyproject.toml``
(``ray = "unlearnctl_ray.plugin"``). Importing this package imports neither Ray nor torch: Ray is imported
when a sweep starts the executor.
"""

__version__ = "0.1.0"
