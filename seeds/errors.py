"""The seeding's errors."""

from __future__ import annotations

from kernel.errors import Problem

__all__ = ["SeedError"]


class SeedError(Problem):
    """The base of the seeding's errors: a size it cannot build, a database holding a different inventory
    (`kind="conflict"`), a load that failed."""
