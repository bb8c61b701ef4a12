"""Telemetry: the readings' time series — the schema and its migrations, the COPY writer, the compact history
and its upkeep — and, until they move to rooms of their own, the fleet in memory and the lighting domain
(schedules, solar times, expected state, the rate) and energy.

Cheap to import: each module is imported by name, nothing here."""
