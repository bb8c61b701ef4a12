"""The telemetry writer: one decoded batch → one PostgreSQL transaction, through COPY.

Readings are COPYed (binary) into per-connection staging tables, then moved into the time series with
`ON CONFLICT DO NOTHING` on the (device, ts, seq) key, so a batch the broker redelivers after a crash lands
once. The latest state per device, device status and the quarantine are written in the same transaction: when
it commits, everything from the batch is durable together, and only then may the caller acknowledge the
messages to the broker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from kernel.database import Database, empty_tables
from telemetry.models import Batch

__all__ = [
    "TelemetryStore",
    "WriteResult",
    "cabinet_contactors",
    "cabinet_states",
    "cabinets_latest",
    "copy_lamp_readings",
    "count_readings",
    "device_status",
    "device_statuses",
    "empty_readings",
    "lamp_latest_state",
    "lamps_latest",
    "last_received_ms",
    "newest_report",
    "prune_quarantine",
    "quarantine_reasons",
]

logger = logging.getLogger(__name__)

_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS stage_lamp (
    ts_ms bigint, lamp_no integer, seq integer, is_on boolean, dim smallint, power_w real, voltage_v real,
    current_a real, power_factor real, energy_wh bigint, temp_c real, lux real, rssi_dbm smallint, burn_h integer,
    starts integer, driver_temp_c real, leakage_ma real, mode text, faults text[], received_ms bigint
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_cabinet (
    ts_ms bigint, cabinet_no integer, seq integer, door_open boolean, contactors boolean[],
    phase_voltage_v real[], circuit_current_a real[], leakage_ma real, energy_wh bigint, faults text[],
    lamp_count integer, received_ms bigint
) ON COMMIT DELETE ROWS;
"""
_LAMP_TYPES = [
    "bigint",
    "integer",
    "integer",
    "boolean",
    "smallint",
    "real",
    "real",
    "real",
    "real",
    "bigint",
    "real",
    "real",
    "smallint",
    "integer",
    "integer",
    "real",
    "real",
    "text",
    "text[]",
    "bigint",
]
_CABINET_TYPES = [
    "bigint",
    "integer",
    "integer",
    "boolean",
    "boolean[]",
    "real[]",
    "real[]",
    "real",
    "bigint",
    "text[]",
    "integer",
    "bigint",
]

# Exact millisecond arithmetic (to_timestamp() goes through a double).
_TS = "timestamptz 'epoch' + {} * interval '1 millisecond'"
# A latest state held from later than the gateway's clock (a device clock that ran ahead and was corrected, a
# demo restarted on an earlier clock) gives way to the new report, or the device would look frozen.
_NOW = "coalesce(timestamptz 'epoch' + %(now)s::bigint * interval '1 millisecond', 'infinity')"

_MOVE_LAMPS = f"""
INSERT INTO lamp_readings (ts, lamp_no, seq, is_on, dim, power_w, voltage_v, current_a, power_factor, energy_wh,
                           temp_c, lux, rssi_dbm, burn_h, starts, driver_temp_c, leakage_ma, mode, faults, received_at)
SELECT {_TS.format("ts_ms")}, lamp_no, seq, is_on, dim, power_w, voltage_v, current_a, power_factor, energy_wh,
       temp_c, lux, rssi_dbm, burn_h, starts, driver_temp_c, leakage_ma, mode, faults, {_TS.format("received_ms")}
FROM stage_lamp ON CONFLICT DO NOTHING
"""
_LATEST_LAMPS = f"""
INSERT INTO lamp_latest AS l (lamp_no, ts, seq, is_on, dim, power_w, voltage_v, current_a, energy_wh, temp_c,
                              burn_h, starts, faults, received_at)
SELECT DISTINCT ON (lamp_no) lamp_no, {_TS.format("ts_ms")}, seq, is_on, dim, power_w, voltage_v, current_a,
       energy_wh, temp_c, burn_h, starts, faults, {_TS.format("received_ms")}
FROM stage_lamp ORDER BY lamp_no, ts_ms DESC, seq DESC
ON CONFLICT (lamp_no) DO UPDATE SET
    ts = EXCLUDED.ts, seq = EXCLUDED.seq, is_on = EXCLUDED.is_on, dim = EXCLUDED.dim, power_w = EXCLUDED.power_w,
    voltage_v = EXCLUDED.voltage_v, current_a = EXCLUDED.current_a, energy_wh = EXCLUDED.energy_wh,
    temp_c = EXCLUDED.temp_c, burn_h = EXCLUDED.burn_h, starts = EXCLUDED.starts, faults = EXCLUDED.faults,
    received_at = EXCLUDED.received_at, stored_at = now()
WHERE (l.ts, l.seq) < (EXCLUDED.ts, EXCLUDED.seq) OR l.ts > {_NOW}
"""
_MOVE_CABINETS = f"""
INSERT INTO cabinet_readings (ts, cabinet_no, seq, door_open, contactors, phase_voltage_v, circuit_current_a,
                              leakage_ma, energy_wh, faults, lamp_count, received_at)
SELECT {_TS.format("ts_ms")}, cabinet_no, seq, door_open, contactors, phase_voltage_v, circuit_current_a,
       leakage_ma, energy_wh, faults, lamp_count, {_TS.format("received_ms")}
FROM stage_cabinet ON CONFLICT DO NOTHING
"""
_LATEST_CABINETS = f"""
INSERT INTO cabinet_latest AS c (cabinet_no, ts, seq, door_open, contactors, faults, received_at)
SELECT DISTINCT ON (cabinet_no) cabinet_no, {_TS.format("ts_ms")}, seq, door_open, contactors, faults,
       {_TS.format("received_ms")}
FROM stage_cabinet ORDER BY cabinet_no, ts_ms DESC, seq DESC
ON CONFLICT (cabinet_no) DO UPDATE SET
    ts = EXCLUDED.ts, seq = EXCLUDED.seq, door_open = EXCLUDED.door_open, contactors = EXCLUDED.contactors,
    faults = EXCLUDED.faults, received_at = EXCLUDED.received_at
WHERE (c.ts, c.seq) < (EXCLUDED.ts, EXCLUDED.seq) OR c.ts > {_NOW}
"""
# Statuses are applied in the order they arrive (the broker keeps a topic's order), not by `ts`: a last will
# carries the time its connection began, earlier than the `online: true` that connection published.
_STATUS = f"""
INSERT INTO device_status AS s (device_type, device_id, online, ts, updated_at)
VALUES (%(kind)s, %(device)s, %(online)s, {_TS.format("%(ts)s")}, now())
ON CONFLICT (device_type, device_id) DO UPDATE SET online = EXCLUDED.online, ts = EXCLUDED.ts,
    updated_at = EXCLUDED.updated_at
"""


@dataclass(frozen=True)
class WriteResult:
    lamps_written: int
    lamp_duplicates: int
    cabinets_written: int
    cabinet_duplicates: int
    quarantined: int
    statuses: int


def _ms_to_dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


class TelemetryStore:
    """Writes decoded batches, each on a dedicated async connection of its own while it is written (a connection
    owns its staging tables); as many connections as batches written at once, kept for the next ones.

    Batches written at once overlap only up to their staging: each one's statements on the shared tables run
    after the statements of the batch whose write began before it. Its updates of the latest state then wait
    for the earlier transaction's row locks, so the later report wins even where the comparison of `ts` cannot
    decide it (a latest state ahead of the clock gives way to any report, and statuses follow arrival). Nor can
    two batches wait on each other: the earlier one never waits for the later one's rows."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._idle: list[psycopg.AsyncConnection] = []
        self._busy: set[psycopg.AsyncConnection] = set()
        self._turn: asyncio.Future[None] | None = None  # set once the latest write's statements have run

    async def _connection(self) -> psycopg.AsyncConnection:
        while self._idle:
            conn = self._idle.pop()
            if not (conn.closed or conn.broken):
                return conn
            logger.warning("telemetry store: database connection lost; reconnecting")
        conn = await self.db.dedicated("ingest")
        try:
            async with conn.transaction():
                await conn.execute(_STAGING)
        except BaseException:
            await conn.close()
            raise
        return conn

    async def close(self) -> None:
        for conn in [*self._idle, *self._busy]:
            await conn.close()
        self._idle.clear()
        self._busy.clear()

    async def write(self, batch: Batch) -> WriteResult:
        """Commit one batch; raises psycopg.Error if the database refuses it (nothing of it is then stored).
        Batches take their turn on the shared tables in the order their `write` was called."""
        before, mine = self._turn, asyncio.get_running_loop().create_future()
        self._turn = mine
        try:
            conn = await self._connection()
            self._busy.add(conn)
            try:
                result = await self._write(conn, batch, before, mine)
            finally:
                self._busy.discard(conn)
                if not (conn.closed or conn.broken):
                    self._idle.append(conn)
        finally:
            if not mine.done():
                mine.set_result(None)
            if self._turn is mine:
                self._turn = None
        return result

    async def _write(
        self,
        conn: psycopg.AsyncConnection,
        batch: Batch,
        before: asyncio.Future[None] | None,
        mine: asyncio.Future[None],
    ) -> WriteResult:
        lamps = batch.lamps
        lamps_written = cabinets_written = 0
        async with conn.transaction(), conn.cursor() as cur:
            if len(lamps):
                async with cur.copy("COPY stage_lamp FROM STDIN (FORMAT BINARY)") as cp:
                    cp.set_types(_LAMP_TYPES)
                    for row in zip(
                        lamps.ts,
                        lamps.lamp_no,
                        lamps.seq,
                        lamps.on,
                        lamps.dim,
                        lamps.power_w,
                        lamps.voltage_v,
                        lamps.current_a,
                        lamps.power_factor,
                        lamps.energy_wh,
                        lamps.temp_c,
                        lamps.lux,
                        lamps.rssi_dbm,
                        lamps.burn_h,
                        lamps.starts,
                        lamps.driver_temp_c,
                        lamps.leakage_ma,
                        lamps.mode,
                        lamps.faults,
                        lamps.received_ms,
                        strict=True,
                    ):
                        await cp.write_row(row)
            if batch.cabinets:
                async with cur.copy("COPY stage_cabinet FROM STDIN (FORMAT BINARY)") as cp:
                    cp.set_types(_CABINET_TYPES)
                    for c in batch.cabinets:
                        await cp.write_row(
                            (
                                c.ts,
                                c.cabinet_no,
                                c.seq,
                                c.door_open,
                                c.contactors,
                                c.phase_voltage_v,
                                c.circuit_current_a,
                                c.leakage_ma,
                                c.energy_wh,
                                c.faults,
                                c.lamp_count,
                                c.received_ms,
                            )
                        )
            if before is not None:
                await asyncio.shield(before)
            if len(lamps):
                await cur.execute(_MOVE_LAMPS)
                lamps_written = cur.rowcount
                await cur.execute(_LATEST_LAMPS, {"now": batch.now_ms})
            if batch.cabinets:
                await cur.execute(_MOVE_CABINETS)
                cabinets_written = cur.rowcount
                await cur.execute(_LATEST_CABINETS, {"now": batch.now_ms})
            if batch.rejects:
                async with cur.copy("COPY quarantine (received_at, topic, payload, reason, detail) FROM STDIN") as cp:
                    for r in batch.rejects:
                        await cp.write_row((_ms_to_dt(r.received_ms), r.topic, r.payload, r.reason, r.detail))
            if batch.statuses:
                await cur.executemany(
                    _STATUS,
                    [{"kind": s.kind, "device": s.device, "online": s.online, "ts": s.ts} for s in batch.statuses],
                )
            mine.set_result(None)  # the next batch's statements may run: they come after ours on every row
        return WriteResult(
            lamps_written,
            len(lamps) - lamps_written,
            cabinets_written,
            len(batch.cabinets) - cabinets_written,
            len(batch.rejects),
            len(batch.statuses),
        )


async def lamp_latest_state(conn: psycopg.AsyncConnection[Any], lamp_no: int) -> dict[str, Any] | None:
    """A lamp's latest reported state as the API shows it, or None before its first report."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT ts, seq, is_on AS on, dim, power_w, voltage_v, current_a, energy_wh, temp_c, burn_h, starts, "
            "faults, received_at FROM lamp_latest WHERE lamp_no = %s",
            (lamp_no,),
        )
        return await cur.fetchone()


async def cabinets_latest(conn: psycopg.AsyncConnection[Any], cabinet_nos: Sequence[int]) -> dict[int, dict[str, Any]]:
    """The latest report of each of `cabinet_nos` that has reported: number → its state as the API shows it
    (`ts`, `seq`, `door_open`, `contactors`, `faults`, `received_at`)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT cabinet_no, ts, seq, door_open, contactors, faults, received_at FROM cabinet_latest "
            "WHERE cabinet_no = ANY(%s)",
            (list(cabinet_nos),),
        )
        return {int(r.pop("cabinet_no")): r for r in await cur.fetchall()}


async def device_status(conn: psycopg.AsyncConnection[Any], device_type: str, device_id: str) -> dict[str, Any] | None:
    """A device's last online/offline status (`online`, `ts`, `updated_at`), or None before its first."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT online, ts, updated_at FROM device_status WHERE device_type = %s AND device_id = %s",
            (device_type, device_id),
        )
        return await cur.fetchone()


def newest_report(conn: psycopg.Connection) -> datetime | None:
    """The newest report time (the devices' clocks) of any lamp's latest state (None: none yet)."""
    row = conn.execute("SELECT max(ts) FROM lamp_latest").fetchone()
    return row[0] if row else None


def last_received_ms(conn: psycopg.Connection) -> int | None:
    """When a gateway last received a report from any lamp or cabinet (epoch ms), or None before the first."""
    row = conn.execute(
        "SELECT greatest((SELECT max(received_at) FROM lamp_latest), (SELECT max(received_at) FROM cabinet_latest))"
    ).fetchone()
    return int(row[0].timestamp() * 1000) if row and row[0] is not None else None


def prune_quarantine(conn: psycopg.Connection, *, days: int, rows: int) -> int:
    """Keep the quarantine to its last `days` and its newest `rows`; returns how many records went."""
    gone = conn.execute("DELETE FROM quarantine WHERE received_at < now() - make_interval(days => %s)", (days,))
    removed = gone.rowcount
    cut = conn.execute("SELECT id FROM quarantine ORDER BY id DESC OFFSET %s LIMIT 1", (rows,)).fetchone()
    if cut is not None:
        removed += conn.execute("DELETE FROM quarantine WHERE id <= %s", (cut[0],)).rowcount
    return removed


def lamps_latest(conn: psycopg.Connection, lamp_nos: Sequence[int]) -> dict[int, dict[str, Any]]:
    """The latest state of each of `lamp_nos` that has reported: number → (ts, on, dim, power_w, voltage_v,
    current_a, energy_wh, faults)."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT lamp_no, ts, is_on AS on, dim, power_w, voltage_v, current_a, energy_wh, faults FROM lamp_latest "
            "WHERE lamp_no = ANY(%s)",
            (list(lamp_nos),),
        ).fetchall()
    return {int(r.pop("lamp_no")): r for r in rows}


def cabinet_contactors(conn: psycopg.Connection, cabinet_nos: Sequence[int]) -> dict[int, list[bool]]:
    """Each reporting cabinet's contactors (one per circuit) as its latest report has them."""
    rows = conn.execute(
        "SELECT cabinet_no, contactors FROM cabinet_latest WHERE cabinet_no = ANY(%s)", (list(cabinet_nos),)
    ).fetchall()
    return {int(no): list(c) for no, c in rows}


def cabinet_states(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    """Every cabinet's latest report: (number, ts ms, seq, door open, contactors, faults)."""
    return conn.execute(
        "SELECT cabinet_no, (extract(epoch FROM ts) * 1000)::bigint, seq, door_open, contactors, faults "
        "FROM cabinet_latest"
    ).fetchall()


def device_statuses(conn: psycopg.Connection) -> list[tuple[str, str, bool]]:
    """Every device's last online status: (device type, device id, online)."""
    return [
        (str(k), str(d), bool(o))
        for k, d, o in conn.execute("SELECT device_type, device_id, online FROM device_status")
    ]


def count_readings(
    conn: psycopg.Connection,
    *,
    lo: datetime | None = None,
    hi: datetime | None = None,
    min_seq: int | None = None,
    below_seq: int | None = None,
) -> tuple[int, int]:
    """(stored lamp readings, distinct (lamp, ts, seq) among them) in [lo, hi) and with min_seq <= seq < below_seq,
    each bound only when given: how a benchmark checks that nothing was lost or stored twice."""
    where, args = [], []
    for cond, value in (("ts >= %s", lo), ("ts < %s", hi), ("seq >= %s", min_seq), ("seq < %s", below_seq)):
        if value is not None:
            where.append(cond)
            args.append(value)
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    row = conn.execute(
        f"SELECT count(*), count(DISTINCT (lamp_no, ts, seq)) FROM lamp_readings{clause}", args
    ).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def quarantine_reasons(conn: psycopg.Connection) -> dict[str, int]:
    """How many quarantined messages there are, by reason."""
    return {str(r): int(n) for r, n in conn.execute("SELECT reason, count(*) FROM quarantine GROUP BY reason")}


def copy_lamp_readings(conn: psycopg.Connection, binary: bytes) -> None:
    """Readings already in PostgreSQL's binary COPY form, every column of `lamp_readings` in its order, straight
    into the time series (no latest state, no rules): how a benchmark lays down months of history in minutes."""
    with conn.cursor() as cur, cur.copy("COPY lamp_readings FROM STDIN (FORMAT binary)") as cp:
        cp.write(binary)


def empty_readings(conn: psycopg.Connection) -> None:
    """Every raw reading and quarantined message gone (between a benchmark's phases; the latest state stays)."""
    empty_tables(conn, ("lamp_readings", "cabinet_readings", "quarantine"))
