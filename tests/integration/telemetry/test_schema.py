"""Schema: every room's migrations apply once, in order; a bad one names its file and leaves nothing half done;
without TimescaleDB, daily partitions roll forward and old days are dropped."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from kernel.migrations import MigrationError, SchemaError, apply, names
from kernel.migrations import plan as plan_of
from lamplighter.schema import ROOMS, migrate, plan
from telemetry.schema import align_policies, has_timescaledb, maintain_partitions

pytestmark = pytest.mark.services


def _partitions(conn: psycopg.Connection, table: str) -> set[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = %s",
        (table,),
    )
    return {r[0] for r in rows}


def _insert_reading(conn: psycopg.Connection, ts: datetime, lamp_no: int = 1) -> None:
    conn.execute(
        "INSERT INTO lamp_readings (ts, lamp_no, seq, is_on, dim, faults, received_at) "
        "VALUES (%s, %s, 1, true, 100, '{}', now())",
        (ts, lamp_no),
    )


def test_migrations_apply_once(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert migrate(conn) == []  # the test database is cloned from an already-migrated template
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
        assert versions == plan("plain").versions == plan("timescaledb").versions == list(range(1, 24))


def test_each_migration_is_a_rooms_sql_file_and_the_rooms_order_holds() -> None:
    files = names(plan("plain"))
    assert files[:2] == ["inventory/001_inventory.sql", "telemetry/001_latest_state.sql"]
    assert {f.split("/")[0] for f in files} == set(ROOMS)
    assert "telemetry/002_telemetry.plain.sql" in files and "telemetry/002_telemetry.timescaledb.sql" not in files
    assert "telemetry/002_telemetry.timescaledb.sql" in names(plan("timescaledb"))
    assert files[-2:] == ["telemetry/R_telemetry_partitions.sql", "telemetry/R_telemetry_reclaim.sql"]


def test_a_migration_file_the_runner_cannot_place_is_named(tmp_path: Path) -> None:
    for bad in ("1_short.sql", "001-dash.sql", "001_x.oracle.sql"):
        folder = tmp_path / bad.replace(".", "_")
        folder.mkdir()
        (folder / bad).write_text("SELECT 1;")
        with pytest.raises(MigrationError) as refused:
            plan_of([("room", folder)], "plain")
        assert f"room/migrations/{bad}" in refused.value.message
    with pytest.raises(MigrationError, match="unknown storage variant 'oracle'"):
        plan_of([("room", tmp_path)], "oracle")


def test_a_failing_migration_names_its_file_and_leaves_nothing_of_its_version(owner_url: str, tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    (first / "900_made.sql").write_text("CREATE TABLE made_by_900 (id integer);")
    (second / "900_broken.sql").write_text("CREATE TABLE broken_by_900 (id integer REFERENCES nowhere);")
    with psycopg.connect(owner_url, autocommit=True) as owner:
        with pytest.raises(MigrationError) as failed:
            apply(owner, plan_of([("first", first), ("second", second)], "plain"))
        assert "second/migrations/900_broken.sql" in failed.value.message and "nowhere" in failed.value.message
        assert owner.execute("SELECT to_regclass('made_by_900')").fetchone() == (None,)
        assert owner.execute("SELECT 1 FROM schema_migrations WHERE version = 900").fetchone() is None
        (second / "900_broken.sql").write_text("CREATE TABLE fixed_by_900 (id integer REFERENCES made_by_900);")
        (first / "900_made.sql").write_text("CREATE TABLE made_by_900 (id integer PRIMARY KEY);")
        assert apply(owner, plan_of([("first", first), ("second", second)], "plain")) == [900]
        name = owner.execute("SELECT name FROM schema_migrations WHERE version = 900").fetchone()
        assert name == ("made; broken",)


def test_a_changed_function_is_created_again_by_the_owner_only(database_url: str, owner_url: str) -> None:
    """A repeatable file (a function) runs again when its text changed: the application's role is told which and
    who can; the owner re-creates it and records its digest."""
    with psycopg.connect(owner_url, autocommit=True) as owner:
        owner.execute("UPDATE schema_repeatables SET digest = 'old' WHERE name = 'R_telemetry_partitions.sql'")
    with psycopg.connect(database_url, autocommit=True) as app, pytest.raises(SchemaError) as refused:
        migrate(app)
    assert "R_telemetry_partitions.sql" in refused.value.message
    with psycopg.connect(owner_url, autocommit=True) as owner:
        assert migrate(owner) == []
        digests = dict(owner.execute("SELECT name, digest FROM schema_repeatables").fetchall())
    assert digests == {r.name: r.digest for r in plan("plain").repeatables}


def test_partitions_roll_forward_and_retention_drops_old_days(database_url: str, owner_url: str) -> None:
    with psycopg.connect(owner_url, autocommit=True) as owner:
        owner.execute("UPDATE telemetry_settings SET retention = interval '5 days'")
    # The application's role keeps the partitions (through the owner's function), and can do no other DDL.
    with psycopg.connect(database_url, autocommit=True) as conn:
        if has_timescaledb(conn):
            pytest.skip("TimescaleDB's own retention policy replaces partition upkeep")
        today = datetime.now(UTC).date()
        maintain_partitions(conn, today=today)
        names = _partitions(conn, "lamp_readings")
        oldest = today - timedelta(days=5)
        assert f"lamp_readings_{oldest:%Y%m%d}" in names
        assert f"lamp_readings_{today + timedelta(days=3):%Y%m%d}" in names
        assert f"lamp_readings_{oldest - timedelta(days=1):%Y%m%d}" not in names
        assert "lamp_readings_default" in names

        # One reading on the oldest kept day, one today, one far in the future (lands in the default partition).
        _insert_reading(conn, datetime.combine(oldest, datetime.min.time(), UTC) + timedelta(hours=12))
        _insert_reading(conn, datetime.now(UTC))
        far = datetime.now(UTC) + timedelta(days=30)
        _insert_reading(conn, far)
        assert conn.execute("SELECT count(*) FROM lamp_readings_default").fetchone() == (1,)

        # Two days later: two new days appear ahead, the two oldest go, and with them the old reading.
        later: date = today + timedelta(days=2)
        created, dropped = maintain_partitions(conn, today=later)
        assert (created, dropped) == (2 * 2, 2 * 2)  # two days, for both lamp and cabinet readings
        names = _partitions(conn, "lamp_readings")
        assert f"lamp_readings_{oldest:%Y%m%d}" not in names
        assert f"lamp_readings_{later + timedelta(days=3):%Y%m%d}" in names
        assert conn.execute("SELECT count(*) FROM lamp_readings").fetchone() == (2,)
        assert _partitions(conn, "cabinet_readings") >= {f"cabinet_readings_{later + timedelta(days=3):%Y%m%d}"}

        # Running it again the same day changes nothing.
        assert maintain_partitions(conn, today=later) == (0, 0)

        # A compressed clock set in the past gets its days without retention counting from that date.
        past = today - timedelta(days=40)
        created, dropped = maintain_partitions(conn, today=past, drop=False)
        assert dropped == 0 and f"lamp_readings_{past:%Y%m%d}" in _partitions(conn, "lamp_readings")
        assert conn.execute("SELECT count(*) FROM lamp_readings").fetchone() == (2,)

        # When the far day comes within reach, its stray reading moves out of the default partition.
        maintain_partitions(conn, today=far.date() - timedelta(days=1))
        assert conn.execute("SELECT count(*) FROM lamp_readings_default").fetchone() == (0,)
        assert conn.execute(f"SELECT count(*) FROM lamp_readings_{far:%Y%m%d}").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM lamp_readings WHERE ts = %s", (far,)).fetchone() == (1,)
        # And the unique key still holds on the moved day: a redelivered reading is refused.
        with pytest.raises(psycopg.errors.UniqueViolation):
            _insert_reading(conn, far)


def test_a_changed_retention_setting_reaches_the_database_through_its_owner(
    database_url: str, owner_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The migrations wrote the retention (and on TimescaleDB the policies) once; a later start with other
    settings brings them in line when it may (the owner), and says who can when it may not (the application)."""

    def kept() -> object:
        with psycopg.connect(database_url) as conn:
            row = conn.execute("SELECT extract(day FROM retention)::int FROM telemetry_settings").fetchone()
            return row[0] if row else None

    assert kept() == 90
    with psycopg.connect(database_url, autocommit=True) as app:
        assert migrate(app, retention_days=30) == []
    assert kept() == 90
    assert "retention 30 days, which role" in caplog.text and "LAMPLIGHTER_DATABASE_OWNER_URL" in caplog.text

    with psycopg.connect(owner_url, autocommit=True) as owner:
        assert migrate(owner, retention_days=30, compact_after_days=3) == []
        timescale = has_timescaledb(owner)
    assert kept() == 30
    with psycopg.connect(database_url) as conn:
        if timescale:
            jobs = {
                (t, p): c
                for t, p, c in conn.execute(
                    "SELECT hypertable_name, proc_name, config FROM timescaledb_information.jobs "
                    "WHERE hypertable_name IN ('lamp_readings', 'cabinet_readings')"
                )
            }
            assert jobs[("lamp_readings", "policy_retention")]["drop_after"] == "30 days"
            assert jobs[("cabinet_readings", "policy_compression")]["compress_after"] == "3 days"
        else:  # the partitions kept now reach back 30 days, not 90
            oldest = min(n for n in _partitions(conn, "lamp_readings") if n[-8:].isdigit())
            assert oldest == f"lamp_readings_{datetime.now(UTC).date() - timedelta(days=30):%Y%m%d}"
    with psycopg.connect(owner_url, autocommit=True) as owner:  # the same settings again: nothing to change
        assert align_policies(owner, retention_days=30, compact_after_days=3) == []


def test_the_quarantine_keeps_its_last_days_and_newest_rows(database_url: str) -> None:
    from telemetry.store import prune_quarantine

    with psycopg.connect(database_url, autocommit=True) as conn:
        with conn.cursor().copy("COPY quarantine (received_at, topic, payload, reason, detail) FROM STDIN") as cp:
            for age_days in [40, 35, *range(19, -1, -1)]:  # oldest first: two too old, twenty within the month
                when = datetime.now(UTC) - timedelta(days=age_days)
                cp.write_row((when, "sl/cd/lamp/X/state", b"{}", "not_json", f"{age_days} days old"))
        assert prune_quarantine(conn, days=30, rows=15) == 7
        kept = [r[0] for r in conn.execute("SELECT detail FROM quarantine ORDER BY received_at DESC")]
    assert kept == [f"{d} days old" for d in range(15)]
