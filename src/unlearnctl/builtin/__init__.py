"""Built-in plugins. Each module here is registered with the plugin manager like a third-party
plugin and provides its components through the same ``register_*`` hooks.

The list of built-in plugin modules is :data:`unlearnctl.plugins.BUILTIN_PLUGINS` (module names as
strings, imported by the plugin loader with ``importlib.import_module``): add a new built-in module
there. The core never imports this package statically.
"""
