"""Failure forecasts: which lamps will fail soon, of what and when, learned from the fleet's own daily summaries
and failure tickets (docs/forecast.md).

Cheap to import: each module is imported by name, nothing here."""
