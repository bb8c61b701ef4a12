"""Telemetry's own errors (below the kernel's `Problem`)."""

from __future__ import annotations

from kernel.errors import Problem

__all__ = ["TelemetryError"]


class TelemetryError(Problem):
    """The base of telemetry's errors (schedules, the inventory's scopes)."""
