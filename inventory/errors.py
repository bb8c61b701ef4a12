"""The inventory's own errors (below the kernel's `Problem`)."""

from __future__ import annotations

from kernel.errors import Problem

__all__ = ["InventoryError"]


class InventoryError(Problem):
    """The base of the inventory's errors: an inventory the backend cannot hold or load."""
