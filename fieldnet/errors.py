"""The base of the field network package's errors."""

from __future__ import annotations

from kernel.errors import Problem

__all__ = ["FieldnetError"]


class FieldnetError(Problem):
    """Broker settings, accounts or provisioning lamplighter cannot use; the message says what and which."""
