"""Built-in components of this kind, registered through the public hooks like any plugin's (stub)."""

from __future__ import annotations
