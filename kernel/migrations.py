"""Ordered SQL migrations gathered from the rooms that own the tables, applied once each, in order.

Each room keeps its migrations in its own `migrations/` folder:

- `NNN_what.sql` is version NNN's part that makes or changes that room's tables. A version may have parts in several
  rooms (version 1 makes the inventory and the latest state); they run in the rooms' order, in one transaction, and
  the version is recorded in `schema_migrations` once they all have.
- `NNN_what.<variant>.sql` runs instead only when the storage is of that variant (`plain` PostgreSQL or
  `timescaledb`), beside any `NNN_what.sql` of the same version.
- `R_what.sql` is repeatable: a function or a view, re-created after the versions whenever its text changed (its
  digest is kept in `schema_repeatables`), so a function has one definition however often it changed.

Parameters reach the SQL as settings local to the migration's transaction: `current_setting('lamplighter.<name>')`.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources.abc import Traversable

import psycopg

from kernel.errors import Problem

__all__ = [
    "Migration",
    "MigrationError",
    "Plan",
    "Repeatable",
    "SchemaError",
    "applied_versions",
    "apply",
    "names",
    "pending",
    "plan",
]

logger = logging.getLogger(__name__)

VARIANTS = ("plain", "timescaledb")
_VERSIONED = re.compile(r"^(?P<version>\d{3})_(?P<what>[a-z0-9_]+?)(?:\.(?P<variant>[a-z]+))?\.sql$")
_REPEATABLE = re.compile(r"^R_(?P<what>[a-z0-9_]+)\.sql$")
# One migrator at a time, whichever process: a second waits, then finds the versions applied.
_LOCK = 7426001


class MigrationError(Problem):
    """A migration could not be placed or applied (its file is named in the message)."""

    kind = "invalid"


class SchemaError(Problem):
    """The database's schema is not what this version needs, and the connected role may not change it."""

    kind = "unavailable"


@dataclass(frozen=True)
class Part:
    room: str
    name: str  # the file's name
    sql: str


@dataclass(frozen=True)
class Migration:
    version: int
    parts: tuple[Part, ...]

    @property
    def name(self) -> str:
        """What the version does, in the words of its files' names ("inventory; latest state")."""
        words = [p.name.split(".")[0].split("_", 1)[1].replace("_", " ") for p in self.parts]
        return "; ".join(dict.fromkeys(words))


@dataclass(frozen=True)
class Repeatable:
    room: str
    name: str
    sql: str

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True)
class Plan:
    migrations: tuple[Migration, ...]
    repeatables: tuple[Repeatable, ...]

    @property
    def versions(self) -> list[int]:
        return [m.version for m in self.migrations]


def plan(rooms: Iterable[tuple[str, Traversable]], variant: str) -> Plan:
    """Every room's migrations for storage of `variant`, versions in order (a version's parts in the rooms' order),
    then the repeatables. A file whose name fits no pattern, or names an unknown variant, is an error."""
    if variant not in VARIANTS:
        raise MigrationError(f"unknown storage variant {variant!r} (one of {', '.join(VARIANTS)})", "variant")
    parts: dict[int, list[Part]] = {}
    repeatables: list[Repeatable] = []
    for room, folder in rooms:
        if not folder.is_dir():
            continue
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):
            if not entry.name.endswith(".sql"):
                continue
            if m := _REPEATABLE.match(entry.name):
                repeatables.append(Repeatable(room, entry.name, entry.read_text(encoding="utf-8")))
                continue
            m = _VERSIONED.match(entry.name)
            if m is None:
                raise MigrationError(
                    f"{room}/migrations/{entry.name}: a migration is named NNN_what.sql, NNN_what.<variant>.sql "
                    "or R_what.sql",
                    "file",
                )
            if m.group("variant") not in (None, *VARIANTS):
                raise MigrationError(
                    f"{room}/migrations/{entry.name}: unknown variant {m.group('variant')!r} "
                    f"(one of {', '.join(VARIANTS)})",
                    "file",
                )
            if m.group("variant") in (None, variant):
                parts.setdefault(int(m.group("version")), []).append(
                    Part(room, entry.name, entry.read_text(encoding="utf-8"))
                )
    return Plan(tuple(Migration(v, tuple(parts[v])) for v in sorted(parts)), tuple(repeatables))


def applied_versions(conn: psycopg.Connection) -> set[int]:
    """The versions the database has had (none when it is new)."""
    with conn.transaction():
        row = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
        if row is None or not row[0]:
            return set()
        return {int(r[0]) for r in conn.execute("SELECT version FROM schema_migrations")}


def _applied_digests(conn: psycopg.Connection) -> dict[str, str]:
    with conn.transaction():
        row = conn.execute("SELECT to_regclass('schema_repeatables') IS NOT NULL").fetchone()
        if row is None or not row[0]:
            return {}
        return {str(n): str(d) for n, d in conn.execute("SELECT name, digest FROM schema_repeatables")}


def pending(conn: psycopg.Connection, p: Plan) -> tuple[list[Migration], list[Repeatable]]:
    """What `apply` would do now: the versions not applied, the repeatables whose text changed."""
    done = applied_versions(conn)
    digests = _applied_digests(conn)
    return (
        [m for m in p.migrations if m.version not in done],
        [r for r in p.repeatables if digests.get(r.name) != r.digest],
    )


def _set_parameters(conn: psycopg.Connection, parameters: Mapping[str, object]) -> None:
    for key, value in parameters.items():
        conn.execute("SELECT set_config(%s, %s, true)", (f"lamplighter.{key}", str(value)))


def _log_notice(diag: psycopg.errors.Diagnostic) -> None:
    if diag.severity_nonlocalized in ("WARNING", "NOTICE") and diag.message_primary:
        logger.log(
            logging.WARNING if diag.severity_nonlocalized == "WARNING" else logging.DEBUG,
            "migration: %s",
            diag.message_primary,
        )


def apply(conn: psycopg.Connection, p: Plan, *, parameters: Mapping[str, object] | None = None) -> list[int]:
    """Apply every version of `p` not yet applied, each in its own transaction, then the changed repeatables;
    returns the versions applied now. Safe to run from several processes at once. `conn` is in autocommit."""
    params = dict(parameters or {})
    todo, changed = pending(conn, p)
    if not todo and not changed:
        return []
    try:
        return _apply(conn, todo, changed, params)
    except psycopg.errors.InsufficientPrivilege as exc:
        missing = ", ".join([f"{m.version:03d}" for m in todo] + [r.name for r in changed])
        raise SchemaError(
            f"role {conn.info.user!r} may not change the database's schema (migrations missing: {missing}; "
            f"{exc.diag.message_primary})"
        ) from exc


def _apply(
    conn: psycopg.Connection, todo: list[Migration], changed: list[Repeatable], params: dict[str, object]
) -> list[int]:
    with conn.transaction():
        conn.execute("""CREATE TABLE IF NOT EXISTS schema_migrations (
            version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())""")
        conn.execute("""CREATE TABLE IF NOT EXISTS schema_repeatables (
            name text PRIMARY KEY, digest text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())""")
    applied_now: list[int] = []
    conn.add_notice_handler(_log_notice)
    try:
        for migration in todo:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
                if conn.execute("SELECT 1 FROM schema_migrations WHERE version = %s", (migration.version,)).fetchone():
                    continue
                _set_parameters(conn, params)
                for part in migration.parts:
                    _run(conn, part.room, part.name, part.sql)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (migration.version, migration.name)
                )
                applied_now.append(migration.version)
                logger.info("database migration %03d applied: %s", migration.version, migration.name)
        for rep in changed:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
                done = conn.execute("SELECT digest FROM schema_repeatables WHERE name = %s", (rep.name,)).fetchone()
                if done is not None and done[0] == rep.digest:  # another migrator got here first
                    continue
                _set_parameters(conn, params)
                _run(conn, rep.room, rep.name, rep.sql)
                conn.execute(
                    "INSERT INTO schema_repeatables (name, digest) VALUES (%s, %s) ON CONFLICT (name) DO UPDATE "
                    "SET digest = excluded.digest, applied_at = now()",
                    (rep.name, rep.digest),
                )
                logger.info("database function %s (re)created", rep.name)
    finally:
        conn.remove_notice_handler(_log_notice)
    return applied_now


def _run(conn: psycopg.Connection, room: str, name: str, text: str) -> None:
    """One file's statements; a failure names the file (the database's own message is kept). A privilege the role
    lacks is not the file's fault: `apply` says which migrations wait for the schema's owner."""
    try:
        conn.execute(text.encode())
    except psycopg.errors.InsufficientPrivilege:
        raise
    except psycopg.Error as exc:
        raise MigrationError(f"{room}/migrations/{name}: {exc.diag.message_primary or exc}", "file") from exc


def names(p: Plan) -> Sequence[str]:
    """Every file of the plan, room/name, in the order they would run."""
    return [f"{x.room}/{x.name}" for m in p.migrations for x in m.parts] + [f"{r.room}/{r.name}" for r in p.repeatables]
