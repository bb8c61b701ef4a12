"""Lighting: which lamps should be on and whether they are. Schedules and solar times, each lamp's expected
state, the lighting engine that keeps the fleet's state from every batch, the rate and its verdicts against the
targets, and the rate as history (minute samples, below-target alerts, nightly reports) with the sampler that
writes it.

Cheap to import: each module is imported by name, nothing here."""
