"""Built-in plugins. Each module below is registered with the plugin manager like a third-party
plugin and provides its components through the same ``register_*`` hooks."""

BUILTIN_PLUGINS: tuple[str, ...] = (
    "unlearnctl.builtin.datasets",
    "unlearnctl.builtin.realdata",
    "unlearnctl.builtin.selectors",
    "unlearnctl.builtin.models",
    "unlearnctl.builtin.hub_models",
    "unlearnctl.builtin.methods",
    "unlearnctl.builtin.metrics",
)
