"""The raw readings of a window as numpy records, packed per device by PostgreSQL: what a computation over a night
(energy.nights) reads, without rows crossing the wire one by one. Also whether anything was heard in a window and
whether its days are packed into the compact history already (they then have no raw rows)."""

from __future__ import annotations

import datetime as dt
from typing import Final

import numpy as np
import numpy.typing as npt
import psycopg

__all__ = ["CABINET_METER", "LAMP_METER", "any_heard", "cabinet_series", "days_packed", "lamp_series", "pg_ms"]

_PG_EPOCH_US: Final = 946_684_800_000_000  # 2000-01-01 in Unix microseconds

# A lamp reading as a meter needs it: time (PostgreSQL's µs since 2000, `pg_ms` converts), on, dim and the energy
# counter (−1: not reported).
LAMP_METER: Final = [
    ("ts", "timestamptz_send(ts)", ">i8"),
    ("on", "boolsend(is_on)", "?"),
    ("dim", "int2send(dim)", ">i2"),
    ("wh", "int8send(coalesce(energy_wh, -1))", ">i8"),
]
# A cabinet reading as its meter needs it: time and the energy counter (−1: not reported).
CABINET_METER: Final = [("ts", "timestamptz_send(ts)", ">i8"), ("wh", "int8send(coalesce(energy_wh, -1))", ">i8")]


def pg_ms(pg_ts: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """PostgreSQL's binary timestamps (µs since 2000) as Unix milliseconds."""
    return (pg_ts.astype(np.int64) + _PG_EPOCH_US) // 1000


def _series(
    conn: psycopg.Connection,
    table: str,
    device: str,
    where: str,
    args: list[object],
    fields: list[tuple[str, str, str]],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.void]]:
    packed = " || ".join(f"{send}" for _, send, _ in fields)
    rows = conn.execute(
        f"SELECT {device}, string_agg({packed}, ''::bytea ORDER BY ts, seq) FROM {table} "
        f"WHERE {where} GROUP BY {device} ORDER BY {device}",
        args,
    ).fetchall()
    dtype = np.dtype([(name, kind) for name, _, kind in fields])
    counts = np.array([len(r[1]) // dtype.itemsize for r in rows], dtype=np.int64)
    devices = np.repeat(np.array([r[0] for r in rows], dtype=np.int64), counts)
    return devices, np.frombuffer(b"".join(bytes(r[1]) for r in rows), dtype=dtype)


def lamp_series(
    conn: psycopg.Connection, first_no: int, last_no: int, lo: dt.datetime, hi: dt.datetime
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.void]]:
    """The readings of lamps `first_no`..`last_no` in [lo, hi), each lamp's in time order: (lamp number of each
    reading, one `LAMP_METER` record per reading)."""
    return _series(
        conn, "lamp_readings", "lamp_no", "lamp_no BETWEEN %s AND %s AND ts >= %s AND ts < %s",
        [first_no, last_no, lo, hi], LAMP_METER,
    )  # fmt: skip


def cabinet_series(
    conn: psycopg.Connection, lo: dt.datetime, hi: dt.datetime
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.void]]:
    """Every cabinet's readings in [lo, hi), each cabinet's in time order: (cabinet number of each reading, one
    `CABINET_METER` record per reading)."""
    return _series(conn, "cabinet_readings", "cabinet_no", "ts >= %s AND ts < %s", [lo, hi], CABINET_METER)


def any_heard(conn: psycopg.Connection, lo: dt.datetime, hi: dt.datetime) -> bool:
    """Whether any lamp or cabinet reported in [lo, hi) (as the raw readings hold it)."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM lamp_readings WHERE ts >= %s AND ts < %s) "
        "OR EXISTS (SELECT 1 FROM cabinet_readings WHERE ts >= %s AND ts < %s)",
        (lo, hi, lo, hi),
    ).fetchone()
    return bool(row and row[0])


def days_packed(conn: psycopg.Connection, first: dt.date, last: dt.date) -> bool:
    """Whether any day of `first`..`last` (UTC) is packed into the compact history (its raw rows are gone)."""
    return (
        conn.execute("SELECT 1 FROM lamp_history WHERE day BETWEEN %s AND %s LIMIT 1", (first, last)).fetchone()
        is not None
    )
