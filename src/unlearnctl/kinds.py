"""The seven kinds of component, without pydantic: the CLI's ``--help`` and shell completion name them
without importing the components' base classes (docs/performance.md, "Start-up")."""

from __future__ import annotations

from typing import Literal

Kind = Literal["dataset", "selector", "method", "model", "metric", "attack", "executor"]
KINDS: tuple[Kind, ...] = ("dataset", "selector", "method", "model", "metric", "attack", "executor")
