"""Built-in unlearning methods, one per file (stub)."""

from __future__ import annotations
