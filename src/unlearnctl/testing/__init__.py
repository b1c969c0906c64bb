"""Helpers for testing unlearnctl and its plugins (public: plugin authors' tests use them).

- :mod:`unlearnctl.testing.tiny`: tiny real objects (a ~42k-parameter UNet, an 8x8 image set, a judge).
- :mod:`unlearnctl.testing.harness`: run a method, or build a metric's or an attack's context, as the commands do.
- :mod:`unlearnctl.testing.contracts`: the contract checks every component must pass (``check_component``),
  with the runtime checks of each kind in :mod:`unlearnctl.testing.checks`.
- :mod:`unlearnctl.testing.stand_ins`: small stand-ins of real datasets and hub models in their on-disk formats.
"""
