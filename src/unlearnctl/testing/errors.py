"""What contract checks raise (see :mod:`unlearnctl.testing.contracts`)."""

from __future__ import annotations


class ContractError(AssertionError):
    """A component breaks the component contract; the message says what to fix."""


class ContractSkipped(Exception):
    """A runtime check that cannot run here (no network, no data files, options it needs): the reason."""
