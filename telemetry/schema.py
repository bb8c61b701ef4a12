"""Versioned migrations, applied at start; TimescaleDB when the extension exists, native partitioning otherwise.

Each migration runs once, in its own transaction, and is recorded in `schema_migrations`. The telemetry tables
are hypertables (compressed after `compress_after`, dropped after `retention`) when the `timescaledb` extension
is available to the database; otherwise they are range-partitioned by day, with `maintain_partitions` creating
partitions ahead of time and dropping those older than the retention window.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, date, datetime

import psycopg
from psycopg import sql

from telemetry.errors import TelemetryError

__all__ = [
    "TELEMETRY_TABLES",
    "SchemaError",
    "align_policies",
    "applied_versions",
    "grant_application",
    "has_timescaledb",
    "maintain_partitions",
    "migrate",
    "role_problems",
    "timescaledb_usable",
]

logger = logging.getLogger(__name__)

TELEMETRY_TABLES = ("lamp_readings", "cabinet_readings")
# Days of partitions kept ready past today, so a burst of readings after midnight never waits on DDL.
_PARTITIONS_AHEAD_DAYS = 3
# The application's rights: rows of every table, but not the migrations' own records; the partitions' keeper.
_READ_ONLY_TABLES = ("schema_migrations", "telemetry_settings")

_INVENTORY = """
CREATE TABLE seed_info (
    id          boolean PRIMARY KEY DEFAULT true CHECK (id),
    seed        bigint NOT NULL,
    lamps       integer NOT NULL,
    city        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE districts (
    code     text PRIMARY KEY CHECK (code ~ '^[a-z][a-z0-9]{1,7}$'),
    name_zh  text NOT NULL,
    name_en  text NOT NULL,
    lat      double precision NOT NULL,
    lon      double precision NOT NULL
);
CREATE TABLE roads (
    id          integer PRIMARY KEY,
    district    text NOT NULL REFERENCES districts,
    name_zh     text NOT NULL,
    name_en     text NOT NULL,
    road_class  text NOT NULL CHECK (road_class IN ('expressway', 'arterial', 'secondary', 'branch'))
);
CREATE TABLE cabinets (
    id            text PRIMARY KEY CHECK (id ~ '^[A-Z0-9][A-Z0-9-]{3,31}$'),
    no            integer NOT NULL UNIQUE,
    district      text NOT NULL REFERENCES districts,
    road_id       integer NOT NULL REFERENCES roads,
    circuits      smallint NOT NULL CHECK (circuits BETWEEN 1 AND 6),
    concentrator  boolean NOT NULL,
    lat           double precision NOT NULL,
    lon           double precision NOT NULL
);
CREATE TABLE lamps (
    id                 text PRIMARY KEY CHECK (id ~ '^[A-Z0-9][A-Z0-9-]{3,31}$'),
    no                 integer NOT NULL UNIQUE,
    district           text NOT NULL REFERENCES districts,
    road_id            integer NOT NULL REFERENCES roads,
    cabinet_id         text NOT NULL REFERENCES cabinets,
    circuit            smallint NOT NULL CHECK (circuit BETWEEN 1 AND 6),
    lat                double precision NOT NULL,
    lon                double precision NOT NULL,
    technology         text NOT NULL CHECK (technology IN ('LED', 'HPS')),
    rated_w            real NOT NULL CHECK (rated_w > 0),
    installed_on       date NOT NULL,
    controller         text NOT NULL CHECK (controller IN ('single', 'concentrator')),
    in_service         boolean NOT NULL DEFAULT true,
    report_interval_s  integer NOT NULL DEFAULT 300 CHECK (report_interval_s BETWEEN 10 AND 3600)
);
CREATE INDEX lamps_district_idx ON lamps (district, no);
CREATE INDEX lamps_cabinet_idx ON lamps (cabinet_id, no);

CREATE TABLE lamp_latest (
    lamp_no       integer PRIMARY KEY,
    ts            timestamptz NOT NULL,
    seq           integer NOT NULL,
    is_on         boolean NOT NULL,
    dim           smallint NOT NULL,
    power_w       real,
    voltage_v     real,
    current_a     real,
    energy_wh     bigint,
    temp_c        real,
    faults        text[] NOT NULL,
    received_at   timestamptz NOT NULL
);
CREATE TABLE cabinet_latest (
    cabinet_no    integer PRIMARY KEY,
    ts            timestamptz NOT NULL,
    seq           integer NOT NULL,
    door_open     boolean NOT NULL,
    contactors    boolean[] NOT NULL,
    faults        text[] NOT NULL,
    received_at   timestamptz NOT NULL
);
CREATE TABLE device_status (
    device_type  text NOT NULL CHECK (device_type IN ('lamp', 'cabinet')),
    device_id    text NOT NULL,
    online       boolean NOT NULL,
    ts           timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_type, device_id)
);
CREATE TABLE quarantine (
    id           bigserial PRIMARY KEY,
    received_at  timestamptz NOT NULL,
    topic        text NOT NULL,
    payload      bytea NOT NULL,
    reason       text NOT NULL,
    detail       text NOT NULL
);
CREATE INDEX quarantine_received_idx ON quarantine (received_at DESC);
"""

_LAMP_READINGS = """
CREATE TABLE lamp_readings (
    ts            timestamptz NOT NULL,
    lamp_no       integer NOT NULL,
    seq           integer NOT NULL,
    is_on         boolean NOT NULL,
    dim           smallint NOT NULL,
    power_w       real,
    voltage_v     real,
    current_a     real,
    power_factor  real,
    energy_wh     bigint,
    temp_c        real,
    lux           real,
    rssi_dbm      smallint,
    mode          text,
    faults        text[] NOT NULL,
    received_at   timestamptz NOT NULL
) {partition}
"""

_CABINET_READINGS = """
CREATE TABLE cabinet_readings (
    ts                 timestamptz NOT NULL,
    cabinet_no         integer NOT NULL,
    seq                integer NOT NULL,
    door_open          boolean NOT NULL,
    contactors         boolean[] NOT NULL,
    phase_voltage_v    real[],
    circuit_current_a  real[],
    leakage_ma         real,
    energy_wh          bigint,
    faults             text[] NOT NULL,
    lamp_count         integer NOT NULL,
    received_at        timestamptz NOT NULL
) {partition}
"""

# (device, ts, seq) is the protocol's identity of a reading: the unique index is what makes a broker's
# redelivery after a crash harmless.
_UNIQUE = """
CREATE UNIQUE INDEX lamp_readings_key ON lamp_readings (lamp_no, ts, seq);
CREATE UNIQUE INDEX cabinet_readings_key ON cabinet_readings (cabinet_no, ts, seq);
CREATE TABLE telemetry_settings (
    id           boolean PRIMARY KEY DEFAULT true CHECK (id),
    timescaledb  boolean NOT NULL,
    retention    interval NOT NULL
);
"""


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


def has_timescaledb(conn: psycopg.Connection) -> bool:
    """Whether the telemetry tables are TimescaleDB hypertables (as migrated), or would be (not migrated yet)."""
    if conn.execute("SELECT to_regclass('telemetry_settings') IS NOT NULL").fetchone() == (True,):
        row = conn.execute("SELECT timescaledb FROM telemetry_settings").fetchone()
        if row is not None:
            return bool(row[0])
    return timescaledb_usable(conn)[0]


def _m001_inventory(conn: psycopg.Connection, *, retention_days: int, **_: int) -> None:
    conn.execute(_INVENTORY)


def _m002_telemetry(conn: psycopg.Connection, *, retention_days: int, **_: int) -> None:
    timescale, why = timescaledb_usable(conn)
    logger.info("telemetry storage: %s", why)
    if timescale:
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        conn.execute(_LAMP_READINGS.format(partition=""))
        conn.execute(_CABINET_READINGS.format(partition=""))
        conn.execute(_UNIQUE)
        for table, segment in (("lamp_readings", "lamp_no"), ("cabinet_readings", "cabinet_no")):
            conn.execute("SELECT create_hypertable(%s, 'ts', chunk_time_interval => interval '1 day')", (table,))
            conn.execute(
                sql.SQL("ALTER TABLE {} SET (timescaledb.compress, timescaledb.compress_segmentby = {})").format(
                    sql.Identifier(table), sql.Literal(segment)
                )
            )
            conn.execute("SELECT add_compression_policy(%s, interval '7 days')", (table,))
            conn.execute("SELECT add_retention_policy(%s, make_interval(days => %s))", (table, retention_days))
    else:
        conn.execute(_LAMP_READINGS.format(partition="PARTITION BY RANGE (ts)"))
        conn.execute(_CABINET_READINGS.format(partition="PARTITION BY RANGE (ts)"))
        # Readings outside the prepared days (a device with a wrong clock inside the accepted window) land
        # here rather than failing the whole batch.
        conn.execute("CREATE TABLE lamp_readings_default PARTITION OF lamp_readings DEFAULT")
        conn.execute("CREATE TABLE cabinet_readings_default PARTITION OF cabinet_readings DEFAULT")
        conn.execute(_UNIQUE)
    conn.execute(
        "INSERT INTO telemetry_settings (timescaledb, retention) VALUES (%s, make_interval(days => %s))",
        (timescale, retention_days),
    )
    if not timescale and "server has no" not in why:
        logger.warning("telemetry tables made as daily partitions, not hypertables: %s", why)
    logger.info("telemetry tables created as %s", "TimescaleDB hypertables" if timescale else "daily partitions")


_LIGHTING = """
-- Wall-clock time of the last change, so a process without a gateway can follow the fleet by polling.
ALTER TABLE lamp_latest ADD COLUMN stored_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX lamp_latest_stored_idx ON lamp_latest (stored_at);

CREATE TABLE schedules (
    scope       text NOT NULL CHECK (scope IN ('city', 'district', 'road', 'cabinet', 'lamp')),
    key         text NOT NULL,
    doc         jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key),
    CHECK (scope <> 'city' OR key = 'all')
);
INSERT INTO schedules (scope, key, doc) VALUES ('city', 'all',
    '{"profile": {"mode": "astro", "on_offset_min": 10, "off_offset_min": -10, "level": 100,
                  "steps": [], "exceptions": [], "timezone": "Asia/Shanghai"}, "windows": [], "override": null}');

CREATE TABLE lighting_rate_samples (
    ts           timestamptz NOT NULL,
    grouping     text NOT NULL CHECK (grouping IN ('city', 'district', 'road_class', 'road', 'cabinet')),
    key          text NOT NULL,
    due          integer NOT NULL,
    lit          integer NOT NULL,
    dark         integer NOT NULL,
    unknown      integer NOT NULL,
    day_burning  integer NOT NULL,
    rate         numeric(5, 2),
    target       numeric(5, 2) NOT NULL,
    integrity    numeric(5, 2),
    PRIMARY KEY (grouping, key, ts)
);
CREATE INDEX lighting_rate_samples_ts_idx ON lighting_rate_samples (ts);

CREATE TABLE nightly_reports (
    night        date PRIMARY KEY,
    computed_at  timestamptz NOT NULL DEFAULT now(),
    body         jsonb NOT NULL
);

CREATE TABLE operator_alerts (
    id          bigserial PRIMARY KEY,
    kind        text NOT NULL,
    grouping    text NOT NULL,
    key         text NOT NULL,
    raised_at   timestamptz NOT NULL,
    cleared_at  timestamptz,
    rate        numeric(5, 2),
    target      numeric(5, 2) NOT NULL,
    message     text NOT NULL
);
CREATE UNIQUE INDEX operator_alerts_open_idx ON operator_alerts (kind, grouping, key) WHERE cleared_at IS NULL;
"""


def _m003_lighting(conn: psycopg.Connection, *, retention_days: int, **_: int) -> None:
    conn.execute(_LIGHTING)
    if has_timescaledb(conn):
        # Samples as a hypertable. (Until migration 016, also an hourly continuous aggregate that nothing read.)
        conn.execute("ALTER TABLE lighting_rate_samples DROP CONSTRAINT lighting_rate_samples_pkey")
        conn.execute(
            "SELECT create_hypertable('lighting_rate_samples', 'ts', chunk_time_interval => interval '7 days')"
        )
        conn.execute("CREATE UNIQUE INDEX lighting_rate_samples_key ON lighting_rate_samples (grouping, key, ts)")


_TICKETS = """
CREATE TABLE crews (
    id              text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9-]{1,31}$'),
    name            text NOT NULL,
    districts       text[] NOT NULL DEFAULT '{}',
    supervisor      boolean NOT NULL DEFAULT false,   -- receives escalations of overdue tickets
    webhook_url     text,
    webhook_secret  text,
    notify_urls     text[] NOT NULL DEFAULT '{}',     -- chat robots and email, as Apprise notification URLs
    mqtt            boolean NOT NULL DEFAULT true,    -- ticket events on sl/crews/{crew}/tickets
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (webhook_url IS NULL OR webhook_secret IS NOT NULL)
);
-- A crew with roster entries is on duty inside them; a crew without any is always on duty.
CREATE TABLE crew_shifts (
    crew_id    text NOT NULL REFERENCES crews ON DELETE CASCADE,
    starts_at  timestamptz NOT NULL,
    ends_at    timestamptz NOT NULL CHECK (ends_at > starts_at),
    PRIMARY KEY (crew_id, starts_at)
);

CREATE TABLE tickets (
    id            bigserial PRIMARY KEY,
    priority      text NOT NULL CHECK (priority IN ('P1', 'P2', 'P3', 'P4')),
    fault         text NOT NULL,
    asset_type    text NOT NULL CHECK (asset_type IN ('lamp', 'cabinet')),
    asset_id      text NOT NULL,
    district      text NOT NULL,
    crew_id       text REFERENCES crews,
    status        text NOT NULL CHECK (status IN ('open', 'dispatched', 'acknowledged', 'resolved', 'verified',
                                                  'cancelled', 'transient', 'reopened')),
    source        text NOT NULL CHECK (source IN ('device', 'backend', 'citizen')),
    opened_at     timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    first_seen    timestamptz NOT NULL,
    last_seen     timestamptz NOT NULL,
    occurrences   integer NOT NULL DEFAULT 1,
    ack_deadline  timestamptz,
    deadline      timestamptz,
    escalated_at  timestamptz,
    detail        jsonb NOT NULL DEFAULT '{}'
);
-- Deduplication: at most one live ticket per asset and fault.
CREATE UNIQUE INDEX tickets_live_idx ON tickets (asset_type, asset_id, fault)
    WHERE status IN ('open', 'dispatched', 'acknowledged', 'resolved', 'reopened');
CREATE INDEX tickets_status_idx ON tickets (status, priority, opened_at);
CREATE INDEX tickets_asset_idx ON tickets (asset_type, asset_id, opened_at);
CREATE TABLE ticket_lamps (
    ticket_id  bigint NOT NULL REFERENCES tickets ON DELETE CASCADE,
    lamp_id    text NOT NULL,
    PRIMARY KEY (ticket_id, lamp_id)
);
CREATE INDEX ticket_lamps_lamp_idx ON ticket_lamps (lamp_id);
CREATE TABLE ticket_events (
    id           bigserial PRIMARY KEY,
    ticket_id    bigint NOT NULL REFERENCES tickets ON DELETE CASCADE,
    ts           timestamptz NOT NULL,
    actor        text NOT NULL,
    action       text NOT NULL,
    from_status  text,
    to_status    text,
    note         text NOT NULL DEFAULT '',
    parts        text[] NOT NULL DEFAULT '{}'
);
CREATE INDEX ticket_events_ticket_idx ON ticket_events (ticket_id, id);

-- The transactional outbox: a ticket change and its notifications commit together; dispatchers deliver.
CREATE TABLE outbox (
    id               bigserial PRIMARY KEY,
    ticket_id        bigint NOT NULL REFERENCES tickets ON DELETE CASCADE,
    event_id         bigint NOT NULL REFERENCES ticket_events ON DELETE CASCADE,
    channel          text NOT NULL CHECK (channel IN ('webhook', 'notify', 'mqtt')),
    crew_id          text NOT NULL,
    idempotency_key  text NOT NULL UNIQUE,
    payload          jsonb NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    last_error       text
);
CREATE INDEX outbox_pending_idx ON outbox (next_attempt_at) WHERE delivered_at IS NULL;
CREATE TABLE deliveries (
    id           bigserial PRIMARY KEY,
    outbox_id    bigint NOT NULL REFERENCES outbox ON DELETE CASCADE,
    ticket_id    bigint NOT NULL,
    attempt      integer NOT NULL,
    ts           timestamptz NOT NULL DEFAULT now(),
    ok           boolean NOT NULL,
    detail       text NOT NULL,
    duration_ms  real NOT NULL
);
CREATE INDEX deliveries_ticket_idx ON deliveries (ticket_id, id);

-- Citizens' reports of dark or damaged lamps.
CREATE TABLE citizen_reports (
    id          bigserial PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    lamp_id     text NOT NULL,
    ticket_id   bigint REFERENCES tickets,
    description text NOT NULL,
    contact     text,
    client      text NOT NULL
);
"""


def _m004_tickets(conn: psycopg.Connection, *, retention_days: int, **_: int) -> None:
    conn.execute(_TICKETS)


_COMMANDS = """
-- Remote control: a campaign (one command to one lamp or to thousands) and each lamp's outcome.
CREATE TABLE commands (
    id           text PRIMARY KEY CHECK (id ~ '^[a-z0-9]{8,40}$'),
    op           text NOT NULL CHECK (op IN ('switch', 'dim', 'resume', 'schedule', 'report')),
    params       jsonb NOT NULL,
    target       jsonb NOT NULL,
    reason       text,
    actor        text NOT NULL,
    status       text NOT NULL CHECK (status IN ('queued', 'running', 'done', 'cancelled')),
    pace         real NOT NULL,
    total        integer NOT NULL,
    created_at   timestamptz NOT NULL,
    started_at   timestamptz,
    finished_at  timestamptz,
    expires_at   timestamptz NOT NULL,
    outcome      jsonb
);
CREATE INDEX commands_created_idx ON commands (created_at DESC);
CREATE INDEX commands_live_idx ON commands (status) WHERE status IN ('queued', 'running');
CREATE TABLE command_lamps (
    command_id  text NOT NULL REFERENCES commands ON DELETE CASCADE,
    lamp_id     text NOT NULL,
    district    text NOT NULL,
    state       text NOT NULL CHECK (state IN ('queued', 'sent', 'acked', 'failed', 'expired', 'cancelled')),
    attempts    smallint NOT NULL DEFAULT 0,
    sent_at     timestamptz,
    done_at     timestamptz,
    error       text,
    PRIMARY KEY (command_id, lamp_id)
);
CREATE INDEX command_lamps_state_idx ON command_lamps (command_id, state);
CREATE INDEX command_lamps_lamp_idx ON command_lamps (lamp_id);
"""


def _m005_commands(conn: psycopg.Connection, *, retention_days: int, **_: int) -> None:
    conn.execute(_COMMANDS)


_USERS = """
CREATE TABLE users (
    id             bigserial PRIMARY KEY,
    name           text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{1,63}$'),
    role           text NOT NULL CHECK (role IN ('viewer', 'operator', 'crew', 'admin')),
    crew_id        text REFERENCES crews,
    password_hash  text,                               -- scrypt; NULL: API tokens only, no login form
    lang           text NOT NULL DEFAULT 'zh' CHECK (lang IN ('zh', 'en')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    disabled_at    timestamptz,
    CHECK ((role = 'crew') = (crew_id IS NOT NULL))
);
CREATE TABLE user_tokens (
    token_hash    bytea PRIMARY KEY,                   -- sha256 of the token; the token itself is never stored
    user_id       bigint NOT NULL REFERENCES users ON DELETE CASCADE,
    kind          text NOT NULL CHECK (kind IN ('api', 'session')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,                         -- NULL: until revoked
    last_used_at  timestamptz
);
CREATE INDEX user_tokens_user_idx ON user_tokens (user_id);
"""


def _m006_users(conn: psycopg.Connection, *, retention_days: int, **_: int) -> None:
    conn.execute(_USERS)


def _m007_command_lamps_lean(conn: psycopg.Connection, *, retention_days: int, **_: int) -> None:
    # A campaign's rows are counted by state through the primary key (command_id first) just as fast, and
    # without an index on `state` the engine's state updates are HOT and a city-wide campaign's 110,000 rows
    # are stored in less time.
    conn.execute("DROP INDEX IF EXISTS command_lamps_state_idx")


def _m008_ingest_heartbeat(conn: psycopg.Connection, *, retention_days: int, **_: int) -> None:
    # One row per gateway (its MQTT client id), rewritten every few seconds: how the API's health, on any
    # machine, knows whether ingest is running and keeping up.
    conn.execute("""
CREATE TABLE ingest_heartbeat (
    gateway               text PRIMARY KEY,
    host                  text NOT NULL,
    pid                   integer NOT NULL,
    started_at            timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL,
    stopped_at            timestamptz,
    oldest_uncommitted_s  real NOT NULL,
    failing_batches       integer NOT NULL,
    received              bigint NOT NULL,
    written               bigint NOT NULL,
    quarantined           bigint NOT NULL
)""")


def _m009_outbox_dead_letters(conn: psycopg.Connection, *, retention_days: int, **_: int) -> None:
    # A delivery that kept failing past its limits is set aside (dead-lettered) instead of retried forever.
    conn.execute("ALTER TABLE outbox ADD COLUMN dead_at timestamptz")
    conn.execute("DROP INDEX IF EXISTS outbox_pending_idx")
    conn.execute(
        "CREATE INDEX outbox_pending_idx ON outbox (next_attempt_at) WHERE delivered_at IS NULL AND dead_at IS NULL"
    )


def _m010_heartbeat_districts(conn: psycopg.Connection, *, retention_days: int, **_: int) -> None:
    # Several gateways share ingest, each holding some districts: the health says which are held by nobody.
    conn.execute("ALTER TABLE ingest_heartbeat ADD COLUMN districts text[] NOT NULL DEFAULT '{}'")


def _m011_heartbeat_watermark(conn: psycopg.Connection, *, retention_days: int, **_: int) -> None:
    # Clock time (ms) up to which a gateway has committed what it received: the leader samples a minute once
    # every gateway's ingest has passed it.
    conn.execute("ALTER TABLE ingest_heartbeat ADD COLUMN ingested_through_ms bigint")


def _m012_device_credentials(conn: psycopg.Connection, *, retention_days: int, **_: int) -> None:
    # Broker accounts whose secret was rotated: the secret is derived from the deployment's key and this
    # generation (fieldnet.accounts); an account not listed is at generation 0.
    conn.execute(
        """CREATE TABLE device_credentials (
               username    text PRIMARY KEY,
               generation  integer NOT NULL CHECK (generation >= 0),
               rotated_at  timestamptz NOT NULL DEFAULT now()
           )"""
    )


# Partition upkeep as the schema's owner: the application's role calls it, and can do nothing else of DDL. Readings
# of a day that landed in the default partition (a device clock ahead, a compressed clock past midnight) move into
# the day's new partition, since PostgreSQL refuses a partition whose range the default one holds rows of.
_PARTITIONS_FUNCTION = """
CREATE OR REPLACE FUNCTION telemetry_partitions(today date, drop_old boolean)
RETURNS TABLE (created integer, dropped integer, moved bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $fn$
DECLARE
    hypertables boolean;
    keep integer;
    first_day date;
    d date;
    t text;
    part text;
    lo text;
    hi text;
    stray boolean;
    n bigint;
    old record;
BEGIN
    created := 0; dropped := 0; moved := 0;
    SELECT s.timescaledb, extract(day FROM s.retention)::int INTO hypertables, keep FROM telemetry_settings s;
    IF NOT FOUND OR hypertables THEN
        RETURN NEXT;
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(7426002);
    first_day := today - keep;
    FOREACH t IN ARRAY ARRAY['lamp_readings', 'cabinet_readings'] LOOP
        d := first_day;
        WHILE d <= today + {ahead} LOOP
            part := t || '_' || to_char(d, 'YYYYMMDD');
            IF NOT EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                           WHERE i.inhparent = t::regclass AND c.relname = part) THEN
                lo := to_char(d, 'YYYY-MM-DD') || ' 00:00+00';
                hi := to_char(d + 1, 'YYYY-MM-DD') || ' 00:00+00';
                EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE ts >= %L AND ts < %L)', t || '_default', lo, hi)
                    INTO stray;
                IF stray THEN
                    EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS)', part, t);
                    EXECUTE format('WITH m AS (DELETE FROM %I WHERE ts >= %L AND ts < %L RETURNING *) '
                                   'INSERT INTO %I SELECT * FROM m', t || '_default', lo, hi, part);
                    GET DIAGNOSTICS n = ROW_COUNT;
                    moved := moved + n;
                    EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', t, part, lo, hi);
                ELSE
                    EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)', part, t, lo, hi);
                END IF;
                created := created + 1;
            END IF;
            d := d + 1;
        END LOOP;
        IF drop_old THEN
            FOR old IN SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                       WHERE i.inhparent = t::regclass AND c.relname ~ ('^' || t || '_[0-9]{{8}}$') LOOP
                IF to_date(right(old.relname, 8), 'YYYYMMDD') < first_day THEN
                    EXECUTE format('DROP TABLE %I', old.relname);
                    dropped := dropped + 1;
                END IF;
            END LOOP;
        END IF;
    END LOOP;
    RETURN NEXT;
END
$fn$;
REVOKE ALL ON FUNCTION telemetry_partitions(date, boolean) FROM PUBLIC;
""".replace("{ahead}", str(_PARTITIONS_AHEAD_DAYS)).replace("{{8}}", "{8}")


def _m013_partitions_function(conn: psycopg.Connection, *, retention_days: int, **_: int) -> None:
    conn.execute(_PARTITIONS_FUNCTION)


def _m014_latest_hot(conn: psycopg.Connection, *, retention_days: int, **_: int) -> None:
    # Every reading updates its lamp's row. With an index on stored_at (which each update changes) none of those
    # updates could be HOT: each wrote new entries into both indexes. Without it, and with room left in each page,
    # PostgreSQL updates in place; the followers' `stored_at >` scans read the table instead (110,000 rows every
    # 2 s for the API).
    conn.execute("DROP INDEX IF EXISTS lamp_latest_stored_idx")
    conn.execute("ALTER TABLE lamp_latest SET (fillfactor = 50)")
    conn.execute("ALTER TABLE cabinet_latest SET (fillfactor = 50)")


# The compact history (telemetry.history): one row per device and UTC day, its readings packed (telemetry.daypack);
# `lamp_history` (migration 015) and `cabinet_history` (018), each with the function that empties a packed day's
# raw partition (`telemetry_reclaim`, `telemetry_reclaim_cabinets`).
def _history_sql(device: str, reclaim: str) -> str:
    return f"""
CREATE TABLE IF NOT EXISTS {device}_history (
    {device}_no{" " * (14 - len(device))}integer NOT NULL,
    day              date NOT NULL,
    readings         integer NOT NULL,
    first_ts         timestamptz NOT NULL,
    last_ts          timestamptz NOT NULL,
    energy_first_wh  bigint,
    energy_last_wh   bigint,
    codec            smallint NOT NULL,
    data             bytea NOT NULL,
    PRIMARY KEY ({device}_no, day)
);
-- Already compressed: kept in the row as they are (MAIN, and a row may fill a page before TOAST is tried), which
-- wastes less than TOAST's 2 kB chunks: about 9.6 instead of 10.2 bytes a lamp reading.
ALTER TABLE {device}_history ALTER COLUMN data SET STORAGE MAIN;
ALTER TABLE {device}_history SET (toast_tuple_target = 8160);
CREATE INDEX IF NOT EXISTS {device}_history_day_idx ON {device}_history USING brin (day);

-- The compaction's last step for a day (telemetry.history): its raw partition emptied at once, which gives the disk
-- back, where deleting rows scattered over every page would rewrite all of them. The caller has packed every row
-- into {device}_history in the same transaction, holding a lock that keeps writers out; TRUNCATE takes the rest.
CREATE OR REPLACE FUNCTION {reclaim}(day date) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $fn$
DECLARE
    part text := '{device}_readings_' || to_char(day, 'YYYYMMDD');
BEGIN
    IF to_regclass(part) IS NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('TRUNCATE %I', part);
    RETURN true;
END
$fn$;
REVOKE ALL ON FUNCTION {reclaim}(date) FROM PUBLIC;
"""


def _m015_history(conn: psycopg.Connection, *, retention_days: int, **_: int) -> None:
    conn.execute(_history_sql("lamp", "telemetry_reclaim"))
    conn.execute(_partitions_keeping("lamp_history"))  # retention drops compact days with their partitions' days


def _partitions_keeping(*history: str) -> str:
    """The partition keeper, which also drops the compact history's days past retention from `history`."""
    end = "    RETURN NEXT;\nEND\n$fn$;"
    assert _PARTITIONS_FUNCTION.count(end) == 1
    keep = "".join(f"        DELETE FROM {t} WHERE {t}.day < first_day;\n" for t in history)
    return _PARTITIONS_FUNCTION.replace(end, f"    IF drop_old THEN\n{keep}    END IF;\n" + end)


def _m018_cabinet_history(conn: psycopg.Connection, *, retention_days: int, **_: int) -> None:
    conn.execute(_history_sql("cabinet", "telemetry_reclaim_cabinets"))
    conn.execute(_partitions_keeping("lamp_history", "cabinet_history"))


def _m016_no_hourly_rollup(conn: psycopg.Connection, *, retention_days: int, **_: int) -> None:
    # The hourly continuous aggregate (TimescaleDB only) kept the minimum and mean rate, but the history endpoint
    # sums due, lit, dark and unknown over its buckets, which it cannot answer: it was refreshed and never read.
    # Dropping a continuous aggregate also removes its refresh policy. Nothing to do on plain PostgreSQL.
    conn.execute("DROP MATERIALIZED VIEW IF EXISTS lighting_rate_hourly")


def _m017_timescale_compression(
    conn: psycopg.Connection, *, retention_days: int, compact_after_days: int = 2, **_: int
) -> None:
    # TimescaleDB's compression is the compact history there: one compressed row per lamp (segment) and day
    # (the chunk), its readings in time order, compressed once the day is `compact_after_days` old (it was a week).
    if not has_timescaledb(conn):
        return
    for table, segment in (("lamp_readings", "lamp_no"), ("cabinet_readings", "cabinet_no")):
        try:
            with conn.transaction():
                conn.execute(
                    sql.SQL(
                        "ALTER TABLE {} SET (timescaledb.compress, timescaledb.compress_segmentby = {}, "
                        "timescaledb.compress_orderby = 'ts ASC, seq ASC')"
                    ).format(sql.Identifier(table), sql.Literal(segment))
                )
        except psycopg.Error as exc:  # chunks compressed with the old order: they keep it, new ones too
            logger.warning("%s: compression order left as it was: %s", table, exc.diag.message_primary)
        conn.execute("SELECT remove_compression_policy(%s, if_exists => true)", (table,))
        if compact_after_days > 0:
            conn.execute("SELECT add_compression_policy(%s, make_interval(days => %s))", (table, compact_after_days))


def _m019_energy_nights(conn: psycopg.Connection, *, retention_days: int, **_: int) -> None:
    # A night's energy for every lamp and cabinet (energy.nights): one row a night, its arrays packed.
    conn.execute("""
CREATE TABLE IF NOT EXISTS energy_nights (
    night        date PRIMARY KEY,
    start_at     timestamptz NOT NULL,
    end_at       timestamptz NOT NULL,
    complete     boolean NOT NULL,
    lamps        integer NOT NULL,
    cabinets     integer NOT NULL,
    data         bytea NOT NULL,
    computed_at  timestamptz NOT NULL
)""")


def _m020_city_geometry(conn: psycopg.Connection, **_: int) -> None:
    # The map's geometry (seeds.generator): a district's border, a road's lit stretch, the rivers. Each is a JSON
    # array of [lon, lat] pairs; an inventory loaded before this migration has none, and the map falls back on
    # outlines drawn around the lamps.
    conn.execute("""
ALTER TABLE districts ADD COLUMN IF NOT EXISTS boundary jsonb;
ALTER TABLE roads ADD COLUMN IF NOT EXISTS path jsonb;
CREATE TABLE IF NOT EXISTS waterways (
    code     text PRIMARY KEY,
    name_zh  text NOT NULL,
    name_en  text NOT NULL,
    path     jsonb NOT NULL
)""")


MIGRATIONS: list[tuple[int, str, Callable[..., None]]] = [
    (1, "inventory, latest state, device status, quarantine", _m001_inventory),
    (2, "telemetry time series", _m002_telemetry),
    (3, "schedules, lighting-rate samples, nightly reports, operator alerts", _m003_lighting),
    (4, "crews, tickets, ticket events, outbox, deliveries, citizens' reports", _m004_tickets),
    (5, "remote control: commands and their per-lamp outcomes", _m005_commands),
    (6, "users, roles and their hashed tokens", _m006_users),
    (7, "command_lamps without the state index", _m007_command_lamps_lean),
    (8, "ingest heartbeat per gateway", _m008_ingest_heartbeat),
    (9, "outbox rows dead-lettered after their delivery limits", _m009_outbox_dead_letters),
    (10, "the districts each gateway holds", _m010_heartbeat_districts),
    (11, "each gateway's ingest watermark", _m011_heartbeat_watermark),
    (12, "generations of rotated broker accounts", _m012_device_credentials),
    (13, "partition upkeep as the schema owner's function", _m013_partitions_function),
    (14, "latest state updated in place (HOT)", _m014_latest_hot),
    (15, "compact history: a lamp's day in one packed row", _m015_history),
    (16, "no hourly rate rollup (it was never read)", _m016_no_hourly_rollup),
    (
        17,
        "TimescaleDB: a lamp's day per compressed segment, compressed after compact_after_days",
        _m017_timescale_compression,
    ),
    (18, "compact history of cabinet readings: a cabinet's day in one packed row", _m018_cabinet_history),
    (19, "a night's energy for every lamp and cabinet", _m019_energy_nights),
    (20, "the map's geometry: district borders, roads' paths, rivers", _m020_city_geometry),
]


class SchemaError(TelemetryError):
    """The database's schema is not what this version needs, and the connected role may not change it."""

    kind = "unavailable"


def applied_versions(conn: psycopg.Connection) -> set[int]:
    """The migrations the database has had (none when it is new)."""
    with conn.transaction():
        row = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
        if row is None or not row[0]:
            return set()
        return {int(r[0]) for r in conn.execute("SELECT version FROM schema_migrations")}


def migrate(
    conn: psycopg.Connection, *, retention_days: int = 90, compact_after_days: int = 2, grant_to: str | None = None
) -> list[int]:
    """Apply every migration not yet applied; returns the versions applied now. Safe to run concurrently.

    Run it as the schema's owner. `grant_to` names the application's role, which is given the rows of every
    table (the migrations' own records only to read) and the partition keeper, and owns nothing. A role that may
    not change the schema can call this too: it does nothing when the schema is current, and otherwise says
    which migrations are missing and who can apply them.
    """
    pending = [m for m in MIGRATIONS if m[0] not in applied_versions(conn)]
    applied_now: list[int] = []
    try:
        if pending:
            applied_now = _apply(conn, retention_days, compact_after_days)
        if grant_to is not None:
            grant_application(conn, grant_to)
    except psycopg.errors.InsufficientPrivilege as exc:
        who = conn.info.user
        missing = ", ".join(f"{v:03d}" for v, _, _ in pending) or "none"
        raise SchemaError(
            f"role {who!r} may not change the database's schema (migrations missing: {missing}): run "
            f"`lamplighter migrate` with LAMPLIGHTER_DATABASE_OWNER_URL set to the schema owner's URL "
            f"({exc.diag.message_primary})"
        ) from exc
    align_policies(conn, retention_days=retention_days, compact_after_days=compact_after_days)
    maintain_partitions(conn)
    return applied_now


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


def _apply(conn: psycopg.Connection, retention_days: int, compact_after_days: int) -> list[int]:
    applied_now: list[int] = []
    with conn.transaction():
        conn.execute("""CREATE TABLE IF NOT EXISTS schema_migrations (
            version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())""")
    for version, name, step in MIGRATIONS:
        with conn.transaction():
            # One migrator at a time: a second process waits here, then sees the version applied.
            conn.execute("SELECT pg_advisory_xact_lock(7426001)")
            done = conn.execute("SELECT 1 FROM schema_migrations WHERE version = %s", (version,)).fetchone()
            if done:
                continue
            step(conn, retention_days=retention_days, compact_after_days=compact_after_days)
            conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name))
            applied_now.append(version)
            logger.info("database migration %03d applied: %s", version, name)
    return applied_now


def grant_application(conn: psycopg.Connection, role: str) -> None:
    """Give the application's role what it needs and nothing more: it reads and writes rows, keeps partitions
    through `telemetry_partitions`, and creates nothing (tables made later by the owner come with the same)."""
    if role == conn.info.user:
        return
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
