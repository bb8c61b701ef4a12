"""The lighting room's errors: schedules, scopes, the rate and its reports."""

from __future__ import annotations

from kernel.errors import Problem

__all__ = ["LightingError"]


class LightingError(Problem):
    """The base of the lighting room's errors (a schedule or scope that is wrong, a report not yet made)."""
