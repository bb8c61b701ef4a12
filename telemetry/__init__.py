"""Telemetry: the schema and its migrations, the COPY writer, the clock, and the fleet in memory — schedules,
solar times, expected state and the lighting rate."""

from telemetry.clock import Clock
from telemetry.lighting import LightingEngine
from telemetry.schema import migrate
from telemetry.store import TelemetryStore

__all__ = ["Clock", "LightingEngine", "TelemetryStore", "migrate"]
