"""The energy room's errors: tariffs, a night's energy that cannot be computed."""

from __future__ import annotations

from kernel.errors import Problem

__all__ = ["EnergyError"]


class EnergyError(Problem):
    """The base of the energy room's errors (a tariff that is wrong, a night with no readings)."""
