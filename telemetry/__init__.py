"""Telemetry: the readings' time series — their storage (TimescaleDB or daily partitions) and migrations, the COPY
writer, the compact history and its upkeep, the fleet's latest state in memory.

Cheap to import: each module is imported by name, nothing here."""
