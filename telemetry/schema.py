"""The time series' storage: TimescaleDB when the extension is usable, native partitioning otherwise.

The tables themselves are made by the rooms' migrations (`*/migrations/*.sql`, applied by
`lamplighter.schema.migrate`); telemetry's own are in `telemetry/migrations`, in a `plain` and a `timescaledb`
variant where they differ. The telemetry tables are hypertables (compressed after `compact_after_days`, dropped
after the retention) when the `timescaledb` extension is usable in the database; otherwise they are
range-partitioned by day, with `maintain_partitions` creating partitions ahead of time and dropping those older
than the retention window. This module decides which, keeps the policies in line with the settings, and gives
the application's role its rights.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime

import psycopg
from psycopg import sql

from kernel.migrations import SchemaError

__all__ = [
    "TELEMETRY_TABLES",
    "add_readings_check",
    "align_policies",
    "drop_readings_check",
    "enable_timescaledb",
    "grant_application",
    "has_timescaledb",
    "maintain_partitions",
    "role_problems",
    "storage_variant",
    "timescaledb_usable",
]

logger = logging.getLogger(__name__)

TELEMETRY_TABLES = ("lamp_readings", "cabinet_readings")
# The application's rights: rows of every table, but not the migrations' own records; the partitions' keeper.
_READ_ONLY_TABLES = ("schema_migrations", "schema_repeatables", "telemetry_settings")


def timescaledb_usable(conn: psycopg.Connection) -> tuple[bool, str]:
    """Whether migrations can make hypertables in this database, and why (or why not), in words for the log.

    The extension must be in the database already, or be creatable now: installed on the server, loaded at the
    server's start (`shared_preload_libraries`; without it CREATE EXTENSION fails), and the migrating role a
    superuser (TimescaleDB is not a trusted extension)."""
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
    if row is not None:
        return True, f"TimescaleDB {row[0]} is in the database"
    row = conn.execute("SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone()
    if row is None:
        return False, "the server has no TimescaleDB"
    preload = conn.execute("SELECT current_setting('shared_preload_libraries')").fetchone()
    loaded = {lib.strip().strip('"') for lib in str(preload[0] if preload else "").split(",")}
    if "timescaledb" not in loaded:
        return False, (
            f"TimescaleDB {row[0]} is installed on the server but not in shared_preload_libraries: add it there "
            "and restart PostgreSQL to get hypertables"
        )
    superuser = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    if not (superuser and superuser[0]):
        return False, (
            f"TimescaleDB {row[0]} is loaded but not created in this database, and {conn.info.user!r} may not "
            "create it: run CREATE EXTENSION timescaledb in it as a superuser, before the first migration"
        )
    return True, f"TimescaleDB {row[0]} is loaded; creating the extension"


def enable_timescaledb(conn: psycopg.Connection) -> bool:
    """Create the TimescaleDB extension in the connected database when the server has it loaded (as a superuser:
    it is not a trusted extension), before the first migration; whether it is there now."""
    if not timescaledb_usable(conn)[0]:
        return False
    conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    return True


def has_timescaledb(conn: psycopg.Connection) -> bool:
    """Whether the telemetry tables are TimescaleDB hypertables (as migrated), or would be (not migrated yet)."""
    return storage_variant(conn)[0] == "timescaledb"


def storage_variant(conn: psycopg.Connection) -> tuple[str, str]:
    """Which variant of the migrations this database takes (`timescaledb` or `plain`), and why, for the log: what
    the telemetry tables were made as, or (not made yet) what they can be made as now."""
    if conn.execute("SELECT to_regclass('telemetry_settings') IS NOT NULL").fetchone() == (True,):
        row = conn.execute("SELECT timescaledb FROM telemetry_settings").fetchone()
        if row is not None:
            made = "TimescaleDB hypertables" if row[0] else "daily partitions"
            return ("timescaledb" if row[0] else "plain"), f"the telemetry tables are {made}"
    usable, why = timescaledb_usable(conn)
    return ("timescaledb" if usable else "plain"), why


_TIMESCALE_POLICIES = (
    ("policy_retention", "drop_after", "add_retention_policy", "remove_retention_policy"),
    ("policy_compression", "compress_after", "add_compression_policy", "remove_compression_policy"),
)


def align_policies(conn: psycopg.Connection, *, retention_days: int, compact_after_days: int) -> list[str]:
    """Bring the database's retention (and, on TimescaleDB, its retention and compression policies) in line
    with the settings, which may have changed since the migrations wrote them; returns what changed. A role
    that may not change them (the application's) leaves them and logs what differs and who can change it."""
    with conn.transaction():
        row = conn.execute(
            "SELECT timescaledb, retention = make_interval(days => %s) FROM telemetry_settings", (retention_days,)
        ).fetchone()
        if row is None:
            return []
        timescale, same_retention = row
        wanted = {"drop_after": retention_days, "compress_after": compact_after_days}
        stale: list[tuple[str, str, str, str, int]] = []  # (table, proc, add, remove, days)
        if timescale:
            for table in ("lamp_readings", "cabinet_readings"):
                for proc, key, add, remove in _TIMESCALE_POLICIES:
                    days = wanted[key]
                    found = conn.execute(
                        "SELECT (config->>%s)::interval = make_interval(days => %s) FROM timescaledb_information.jobs "
                        "WHERE hypertable_name = %s AND proc_name = %s",
                        (key, days, table, proc),
                    ).fetchone()
                    # A compression age of 0 means no compression policy at all.
                    if (found is None and days > 0) or (found is not None and (days == 0 or not found[0])):
                        stale.append((table, proc, add, remove, days))
    if same_retention and not stale:
        return []
    changes = ([] if same_retention else [f"retention {retention_days} days"]) + [
        f"{table} {proc} {f'{days} days' if days else 'none'}" for table, proc, _, _, days in stale
    ]
    try:
        with conn.transaction():
            if not same_retention:
                conn.execute("UPDATE telemetry_settings SET retention = make_interval(days => %s)", (retention_days,))
            for table, _, add, remove, days in stale:
                conn.execute(sql.SQL("SELECT {}(%s, if_exists => true)").format(sql.Identifier(remove)), (table,))
                if days > 0:
                    conn.execute(
                        sql.SQL("SELECT {}(%s, make_interval(days => %s))").format(sql.Identifier(add)), (table, days)
                    )
    except psycopg.errors.InsufficientPrivilege:
        logger.warning(
            "the settings ask for %s, which role %r may not set: run `lamplighter migrate` with "
            "LAMPLIGHTER_DATABASE_OWNER_URL set to the schema owner's URL",
            ", ".join(changes),
            conn.info.user,
        )
        return []
    logger.info("telemetry policies now follow the settings: %s", ", ".join(changes))
    return changes


def grant_application(conn: psycopg.Connection, role: str) -> None:
    """Give the application's role what it needs and nothing more: it reads and writes rows, keeps partitions
    through `telemetry_partitions`, and creates nothing (tables made later by the owner come with the same)."""
    if role == conn.info.user:
        return
    try:
        _grant(conn, role)
    except psycopg.errors.InsufficientPrivilege as exc:
        raise SchemaError(
            f"role {conn.info.user!r} may not give {role!r} its rights ({exc.diag.message_primary})"
        ) from exc


def _grant(conn: psycopg.Connection, role: str) -> None:
    r = sql.Identifier(role)
    with conn.transaction():
        for stmt in (
            "GRANT USAGE ON SCHEMA public TO {r}",
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {r}",
            "REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON {ro} FROM {r}",
            "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {r}",
            "GRANT EXECUTE ON FUNCTION telemetry_partitions(date, boolean) TO {r}",
            "GRANT EXECUTE ON FUNCTION telemetry_reclaim(date) TO {r}",
            "GRANT EXECUTE ON FUNCTION telemetry_reclaim_cabinets(date) TO {r}",
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {r}",
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {r}",
        ):
            ro = sql.SQL(", ").join(sql.Identifier(t) for t in _READ_ONLY_TABLES)
            conn.execute(sql.SQL(stmt).format(r=r, ro=ro))


def role_problems(conn: psycopg.Connection) -> list[str]:
    """What the connected role may do beyond an application's needs (empty for a least-privileged role)."""
    row = conn.execute(
        "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, rolreplication, "
        "(SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        " WHERE c.relowner = r.oid AND n.nspname = 'public'), "
        "(SELECT datdba = r.oid FROM pg_database WHERE datname = current_database()) "
        "FROM pg_roles r WHERE rolname = current_user"
    ).fetchone()
    if row is None:
        return []
    superuser, createrole, createdb, bypassrls, replication, owned, dba = row
    found = [
        what
        for flag, what in (
            (superuser, "is a superuser"),
            (createrole, "may create roles"),
            (createdb, "may create databases"),
            (bypassrls, "bypasses row security"),
            (replication, "may replicate"),
            (dba, "owns the database"),
        )
        if flag
    ]
    if owned:
        found.append(f"owns {owned} tables, indexes or sequences")
    return found


def maintain_partitions(conn: psycopg.Connection, *, today: date | None = None, drop: bool = True) -> tuple[int, int]:
    """Create daily partitions from the retention horizon to a few days ahead; drop older ones when `drop`.

    `today` defaults to the wall-clock date (UTC). A process on a compressed clock also calls this with the
    clock's date and `drop=False`, so its days have partitions without retention counting from a fictional date.
    Returns (created, dropped). Does nothing under TimescaleDB, whose policies do the same job.

    The work is done by `telemetry_partitions`, a function owned by the schema's owner (migration 13), so the
    application's role, which owns no table, can keep the partitions without any other right to DDL.
    """
    today = today or datetime.now(UTC).date()
    with conn.transaction():
        row = conn.execute("SELECT created, dropped, moved FROM telemetry_partitions(%s, %s)", (today, drop)).fetchone()
    created, dropped, moved = (int(v) for v in row) if row is not None else (0, 0, 0)
    if moved:
        logger.info("telemetry partitions: %d readings moved out of the default partitions", moved)
    if created or dropped:
        logger.info("telemetry partitions: %d created, %d dropped (today %s)", created, dropped, today)
    return created, dropped


def add_readings_check(conn: psycopg.Connection, name: str, condition: str) -> None:
    """A check of a DBA's own on the lamp readings (as the schema's owner), e.g. "power_w < 4000": rows it refuses
    are quarantined one by one while the rest of their batch is stored (the faults benchmark adds one)."""
    conn.execute(
        sql.SQL("ALTER TABLE lamp_readings ADD CONSTRAINT {} CHECK ({})").format(
            sql.Identifier(name), sql.SQL(condition)
        )
    )


def drop_readings_check(conn: psycopg.Connection, name: str) -> None:
    conn.execute(sql.SQL("ALTER TABLE lamp_readings DROP CONSTRAINT {}").format(sql.Identifier(name)))
