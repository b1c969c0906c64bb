"""The plugin module named by the entry point: one hook implementation per kind it provides."""

from __future__ import annotations

import unlearnctl

from .label_range import LabelRange
from .null_target import NullTarget


@unlearnctl.hookimpl
def register_selectors(register):
    register(LabelRange)


@unlearnctl.hookimpl
def register_methods(register):
    register(NullTarget)
