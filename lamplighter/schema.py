"""The whole database's schema: every room's migrations, in order, as an explicit start-up step.

The rooms own their tables and the migrations that make them (`<room>/migrations/*.sql`, see `kernel.migrations`);
this module only lists the rooms in the order a version's parts run (a room's tables before those that refer to
them), picks the storage variant (`telemetry.schema`), and after the versions brings the storage's policies and
partitions in line with the settings.
"""

from __future__ import annotations

import logging
from importlib.resources import files

from kernel import migrations
from kernel.database import Connection
from kernel.migrations import SchemaError
from telemetry.schema import align_policies, grant_application, maintain_partitions, storage_variant

__all__ = ["ROOMS", "SchemaError", "migrate", "plan"]

logger = logging.getLogger(__name__)

# The rooms with tables, each before the rooms whose tables refer to its own.
ROOMS = ("inventory", "telemetry", "lighting", "energy", "alerts", "commands", "api", "gateway", "fieldnet", "forecast")


def plan(variant: str) -> migrations.Plan:
    """Every migration this version of the project has, for storage of `variant` (`plain` or `timescaledb`)."""
    return migrations.plan(((room, files(room) / "migrations") for room in ROOMS), variant)


def migrate(
    conn: Connection, *, retention_days: int = 90, compact_after_days: int = 2, grant_to: str | None = None
) -> list[int]:
    """Apply every migration not yet applied; returns the versions applied now. Safe to run concurrently.

    Run it as the schema's owner. `grant_to` names the application's role, which is given the rows of every
    table (the migrations' own records only to read) and the partition keeper, and owns nothing. A role that may
    not change the schema can call this too: it does nothing when the schema is current, and otherwise says
    which migrations are missing and who can apply them.
    """
    variant, why = storage_variant(conn)
    wanted = plan(variant)
    todo, _ = migrations.pending(conn, wanted)
    if any(m.version == 2 for m in todo):  # the version that makes the telemetry tables
        logger.info("telemetry storage: %s", why)
    try:
        applied_now = migrations.apply(
            conn, wanted, parameters={"retention_days": retention_days, "compact_after_days": compact_after_days}
        )
        if grant_to is not None:
            grant_application(conn, grant_to)
    except SchemaError as exc:
        raise SchemaError(
            f"{exc.message}: run `lamplighter migrate` with LAMPLIGHTER_DATABASE_OWNER_URL set to the schema "
            "owner's URL"
        ) from exc
    if 2 in applied_now:
        made = "TimescaleDB hypertables" if variant == "timescaledb" else "daily partitions"
        if variant == "plain" and "server has no" not in why:
            logger.warning("telemetry tables made as daily partitions, not hypertables: %s", why)
        logger.info("telemetry tables created as %s", made)
    align_policies(conn, retention_days=retention_days, compact_after_days=compact_after_days)
    maintain_partitions(conn)
    return applied_now
