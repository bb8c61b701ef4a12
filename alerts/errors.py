"""The fault-and-ticket room's errors: one base, structured (message, field, kind) as `telemetry.errors` says."""

from __future__ import annotations

from kernel.errors import Problem

__all__ = ["AlertsError"]


class AlertsError(Problem):
    """The base of every error `alerts` raises on purpose (tickets, crews, deliveries, citizens' reports)."""
