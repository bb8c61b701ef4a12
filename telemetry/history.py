"""Compact history on plain PostgreSQL: each lamp's day of readings as one packed row, read back as readings.

Readings older than a few days (`compact_after_days`) move out of the daily partitions of `lamp_readings` into
`lamp_history`, one row per lamp and UTC day holding the day packed by `telemetry.daypack` (under 10 bytes a
reading instead of about 175). A day moves in two steps. First its lamps are packed a range at a time, each range
in its own transaction, merged with what that lamp-day already has in compact form; the raw rows stay (a range's
rows are scattered over every page of the day's partition, so deleting them would rewrite the whole partition
for each range). Then, in one transaction holding off writers to the day, whatever was written since the day's
first snapshot is packed too and the partition is truncated (`telemetry_reclaim`), which gives its disk back at
once. Until that commits the day is in both forms and readers take each reading once (same lamp, ts and seq); a
run stopped anywhere leaves every reading in at least one form, and the next run packs the day again over what
is there, so nothing is lost and nothing is stored twice once it is done. A reading redelivered or sent late
after its day was packed lands raw again, is read once, and is merged in by the next run.

`read_lamp` is how everything reads a lamp's readings: both forms, merged, in (ts, seq) order. Cabinet readings
are packed the same way into `cabinet_history` (`compact_cabinet_day`, a whole day in one transaction: there are
few of them) and read by `read_cabinet`. With TimescaleDB nothing here runs: its own compression does the same
job on the hypertable, and the readings stay where they are.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg.rows import dict_row

from kernel.binary import array_column
from telemetry.cabinetday import CABINET_CODEC, CabinetRow, pack_cabinet_day, unpack_cabinet_day
from telemetry.daypack import CODEC, NULLABLE, LampDay, pack_many, unpack
from telemetry.errors import TelemetryError

__all__ = [
    "CompactionBusy",
    "CompactionReport",
    "cabinet_meter_sql",
    "cabinet_meters",
    "cabinet_meters_rise",
    "compact",
    "compact_cabinet_day",
    "compact_day",
    "pending_days",
    "read_cabinet",
    "read_lamp",
    "read_lamp_range",
]

logger = logging.getLogger(__name__)

_LOCK = 7426003  # one compaction at a time per database
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in µs since 1970: binary timestamptz counts from there
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NULLABLE = NULLABLE  # the nullable columns, in the bitmap's order
_REAL_COLUMNS = ("power_w", "voltage_v", "current_a", "power_factor", "temp_c", "lux", "driver_temp_c", "leakage_ma")
_INT_COLUMNS = ("energy_wh", "rssi_dbm", "burn_h", "starts")
# A range's readings as one row of arrays in binary (`array_send`): every column fixed-width and never NULL (NULLs
# as zeros plus a bitmap), so numpy takes each as it comes, without a Python object per reading. `odd` marks the
# readings whose mode or faults are not the usual ones; theirs come in the last column, as JSON, in the same order
# (one aggregate node feeds every aggregate the same rows in the same order).
_ODD = "(mode IS DISTINCT FROM 'auto' OR cardinality(faults) > 0)"
_RAW_FIELDS = [
    ("lamp_no", "lamp_no", ">i4"),
    ("ts", "ts", ">i8"),
    ("seq", "seq", ">i4"),
    ("is_on", "is_on", "?"),
    ("dim", "dim", ">i2"),
    ("power_w", "coalesce(power_w, 0)::real", ">f4"),
    ("voltage_v", "coalesce(voltage_v, 0)::real", ">f4"),
    ("current_a", "coalesce(current_a, 0)::real", ">f4"),
    ("power_factor", "coalesce(power_factor, 0)::real", ">f4"),
    ("energy_wh", "coalesce(energy_wh, 0)::bigint", ">i8"),
    ("temp_c", "coalesce(temp_c, 0)::real", ">f4"),
    ("lux", "coalesce(lux, 0)::real", ">f4"),
    ("rssi_dbm", "coalesce(rssi_dbm, 0)::smallint", ">i2"),
    ("burn_h", "coalesce(burn_h, 0)", ">i4"),
    ("starts", "coalesce(starts, 0)", ">i4"),
    ("driver_temp_c", "coalesce(driver_temp_c, 0)::real", ">f4"),
    ("leakage_ma", "coalesce(leakage_ma, 0)::real", ">f4"),
    ("nulls", " | ".join(f"(({c} IS NULL)::int << {i})" for i, c in enumerate(_NULLABLE)), ">i4"),
    ("received_at", "received_at", ">i8"),
    ("odd", _ODD, "?"),
]
_ARRAYS = "SELECT {}, json_agg(json_build_array(mode, faults)) FILTER (WHERE {}) FROM {{}} WHERE {{}}".format(
    ", ".join(f"array_send(array_agg({expr}))" for _, expr, _ in _RAW_FIELDS), _ODD
)
_RANGE = "ts >= %(lo)s AND ts < %(hi)s AND lamp_no >= %(first)s AND lamp_no < %(end)s"
# Readings written by transactions the day's first snapshot did not see: perhaps after their range was read.
_SINCE = "ts >= %(lo)s AND ts < %(hi)s AND age(xmin) <= age(%(xmin)s::text::xid)"
_COLUMNS = (
    "ts, seq, is_on AS on, dim, power_w, voltage_v, current_a, power_factor, energy_wh, temp_c, lux, rssi_dbm, "
    "burn_h, starts, driver_temp_c, leakage_ma, mode, faults, received_at"
)
_KEYS = _COLUMNS.replace("is_on AS on", "on").split(", ")


class CompactionBusy(TelemetryError):
    """Another process is compacting this database's history right now."""

    kind = "conflict"


@dataclass
class CompactionReport:
    days: list[date]
    readings: int = 0  # raw readings moved into the compact form
    lamp_days: int = 0  # compact rows written (new or merged)
    cabinet_readings: int = 0
    cabinet_days: int = 0
    seconds: float = 0.0


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    lo = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return lo, lo + timedelta(days=1)


def _on_timescaledb(conn: psycopg.Connection) -> bool:
    """The schema was built on TimescaleDB: its compression keeps the history, and there is nothing to pack."""
    return conn.execute("SELECT timescaledb FROM telemetry_settings").fetchone() != (False,)


def pending_days(conn: psycopg.Connection, before: date) -> list[date]:
    """UTC days before `before` that still hold raw lamp or cabinet readings, oldest first (none on TimescaleDB)."""
    if _on_timescaledb(conn):
        return []
    days: set[date] = set()
    for table in ("lamp_readings", "cabinet_readings"):
        parts = conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = %s::regclass AND c.relname ~ %s",
            (table, f"^{table}_[0-9]{{8}}$"),
        ).fetchall()
        for (name,) in parts:
            day = datetime.strptime(name[-8:], "%Y%m%d").date()
            if day < before and conn.execute(f'SELECT EXISTS (SELECT 1 FROM "{name}")').fetchone() == (True,):
                days.add(day)
        strays = conn.execute(
            f"SELECT DISTINCT (ts AT TIME ZONE 'UTC')::date FROM {table}_default WHERE ts < %s",
            (_day_bounds(before)[0],),
        ).fetchall()
        days.update(d for (d,) in strays)
    return sorted(days)


def _range_days(cols: dict[str, npt.NDArray[Any]], odd: list[Any]) -> tuple[LampDay, list[int], list[int]]:
    """The raw readings of a range of lamps as one LampDay laid lamp after lamp, each lamp's in (ts, seq) order,
    with the lamps' numbers and their readings' counts; `odd` holds the [mode, faults] of the readings marked odd,
    in the order the columns came."""
    if len(odd) != int(cols["odd"].sum()):
        raise TelemetryError(f"read {int(cols['odd'].sum())} readings with a mode or faults, and {len(odd)} of them")
    order = np.lexsort((cols["seq"], cols["ts"], cols["lamp_no"]))
    n = len(order)
    mode: list[str | None] = ["auto"] * n
    faults: list[tuple[str, ...]] = [()] * n
    position = np.empty(n, dtype=np.int64)
    position[order] = np.arange(n)
    for at, (m, f) in zip(position[np.flatnonzero(cols["odd"])].tolist(), odd, strict=True):
        mode[at], faults[at] = m, tuple(f)
    cols = {name: column[order] for name, column in cols.items()}
    lamp_no = cols["lamp_no"].astype(np.int64)
    nulls = cols["nulls"].astype(np.int64)
    present = {c: (nulls & (1 << i)) == 0 for i, c in enumerate(_NULLABLE)}
    starts = np.flatnonzero(np.r_[True, lamp_no[1:] != lamp_no[:-1]]) if n else np.zeros(0, dtype=np.intp)
    values: dict[str, Any] = {c: (cols[c].astype(np.float32), present[c]) for c in _REAL_COLUMNS}
    values.update({c: (cols[c].astype(np.int64), present[c]) for c in _INT_COLUMNS})
    days = LampDay(
        ts_us=cols["ts"].astype(np.int64) + _PG_EPOCH_US,
        seq=cols["seq"].astype(np.int64),
        is_on=cols["is_on"].astype(bool),
        dim=cols["dim"].astype(np.int64),
        mode=mode,
        faults=faults,
        received_us=cols["received_at"].astype(np.int64) + _PG_EPOCH_US,
        **values,
    )
    return days, lamp_no[starts].tolist(), np.diff(np.r_[starts, n]).tolist()


def _summaries(day: date, lamps: list[int], days: LampDay, lengths: list[int]) -> list[tuple[Any, ...]]:
    """The `lamp_history` rows of days laid end to end in `days`."""
    ends = np.cumsum(lengths)
    starts = ends - lengths
    energy, has = days.energy_wh
    known = np.flatnonzero(has)
    first_known = np.searchsorted(known, starts)  # each day's first reading with an energy count, if any …
    last_known = np.searchsorted(known, ends) - 1  # … and its last
    rows = []
    for no, a, b, fk, lk, data in zip(
        lamps, starts.tolist(), ends.tolist(), first_known.tolist(), last_known.tolist(), pack_many(days, lengths),
        strict=True,
    ):  # fmt: skip
        with_energy = fk <= lk
        rows.append((
            no,
            day,
            b - a,
            _EPOCH + timedelta(microseconds=int(days.ts_us[a])),
            _EPOCH + timedelta(microseconds=int(days.ts_us[b - 1])),
            int(energy[known[fk]]) if with_energy else None,
            int(energy[known[lk]]) if with_energy else None,
            CODEC,
            data,
        ))  # fmt: skip
    return rows


_Range = tuple[LampDay, list[int], list[int]]


def _arrays(cur: psycopg.Cursor[Any], relation: str, where: str, args: dict[str, Any]) -> _Range:
    """The readings of `relation` matching `where`, as `_range_days` lays them out."""
    query = _ARRAYS.format(relation, where)
    row: tuple[Any, ...] = cur.execute(query, args, binary=True).fetchone() or ()
    *arrays, odd = row
    cols = {name: array_column(a, kind) for (name, _, kind), a in zip(_RAW_FIELDS, arrays, strict=True)}
    return _range_days(cols, odd or [])


def read_lamp_range(cur: psycopg.Cursor[Any], day: date, first: int, end: int) -> _Range:
    """Every reading of lamps [first, end) on a UTC day, raw and compact alike, each once: one LampDay laid lamp
    after lamp (each lamp's in (ts, seq) order), the lamps' numbers and their readings' counts."""
    lo, hi = _day_bounds(day)
    days, lamps, lengths = _arrays(cur, "lamp_readings", _RANGE, {"lo": lo, "hi": hi, "first": first, "end": end})
    packed = cur.execute(
        "SELECT lamp_no, data FROM lamp_history WHERE day = %s AND lamp_no >= %s AND lamp_no < %s",
        (day, first, end),
    ).fetchall()
    if not packed:
        return days, lamps, lengths
    parts: dict[int, list[LampDay]] = {int(no): [unpack(data)] for no, data in packed}
    at = 0
    for no, n in zip(lamps, lengths, strict=True):
        parts.setdefault(no, []).append(days.take(np.arange(at, at + n)))
        at += n
    order = sorted(parts)
    each = [LampDay.concat(parts[no]) if len(parts[no]) > 1 else parts[no][0] for no in order]
    return LampDay.joined(each), order, [len(d) for d in each]


def _copy_history(cur: psycopg.Cursor[Any], device: str, rows: list[tuple[Any, ...]]) -> None:
    """Packed device-days into `lamp_history` or `cabinet_history`."""
    columns = f"{device}_no, day, readings, first_ts, last_ts, energy_first_wh, energy_last_wh, codec, data"
    with cur.copy(f"COPY {device}_history ({columns}) FROM STDIN (FORMAT binary)") as cp:
        cp.set_types(["integer", "date", "integer", "timestamptz", "timestamptz", "bigint", "bigint",
                      "smallint", "bytea"])  # fmt: skip
        for row in rows:
            cp.write_row(row)


def _pack_into_history(cur: psycopg.Cursor[Any], day: date, days: LampDay, lamps: list[int], lengths: list[int]) -> int:
    """Write the lamp-days of `days` into `lamp_history`, merged with what it holds for those lamps already (an
    earlier run stopped halfway, late readings): each reading once. Returns the lamp-days written."""
    if not lamps:
        return 0
    rows = _summaries(day, lamps, days, lengths)
    known: dict[int, bytes] = dict(
        cur.execute(
            "DELETE FROM lamp_history WHERE day = %s AND lamp_no = ANY(%s) RETURNING lamp_no, data", (day, lamps)
        ).fetchall()
    )
    if known:
        starts = dict(zip(lamps, np.cumsum([0, *lengths[:-1]]).tolist(), strict=True))
        counts = dict(zip(lamps, lengths, strict=True))
        rows = [r for r in rows if r[0] not in known]
        for no, data in known.items():
            merged = LampDay.concat([unpack(data), days.take(np.arange(starts[no], starts[no] + counts[no]))])
            rows += _summaries(day, [no], merged, [len(merged)])
    _copy_history(cur, "lamp", sorted(rows, key=lambda r: int(r[0])))
    return len(rows)


def _compact_range(conn: psycopg.Connection, day: date, first: int, end: int) -> tuple[int, int]:
    """Pack the raw readings of lamps [first, end) on `day` into `lamp_history` (the raw rows stay until the day
    is done): (readings packed, lamp-days written)."""
    lo, hi = _day_bounds(day)
    with conn.transaction(), conn.cursor() as cur:
        days, lamps, lengths = _arrays(cur, "lamp_readings", _RANGE, {"lo": lo, "hi": hi, "first": first, "end": end})
        return len(days), _pack_into_history(cur, day, days, lamps, lengths)


def _lock_day(cur: psycopg.Cursor[Any], table: str, day: date) -> tuple[str, bool]:
    """Hold writers off the relation holding `day`'s raw rows of `table` until the transaction ends: the day's own
    partition (its rows go with it: True), or the default one, where a day before the partitions began keeps its
    few strays (those rows are deleted: False)."""
    part = f"{table}_{day:%Y%m%d}"
    own = cur.execute("SELECT to_regclass(%s) IS NOT NULL", (part,)).fetchone() == (True,)
    relation = f'"{part}"' if own else f"{table}_default"
    cur.execute(f"LOCK TABLE {relation} IN SHARE ROW EXCLUSIVE MODE")
    return relation, own


def _finish_day(conn: psycopg.Connection, day: date, xmin: str) -> int:
    """With the day's raw rows locked against writers: pack what arrived since the day's first snapshot (rows
    written after their lamps' range was read, or not), then empty the day's raw rows, all in one transaction.
    Returns the lamp-days written again."""
    lo, hi = _day_bounds(day)
    with conn.transaction(), conn.cursor() as cur:
        relation, own = _lock_day(cur, "lamp_readings", day)
        days, lamps, lengths = _arrays(cur, relation, _SINCE, {"lo": lo, "hi": hi, "xmin": xmin})
        written = _pack_into_history(cur, day, days, lamps, lengths)
        if own:
            cur.execute("SELECT telemetry_reclaim(%s)", (day,))
        else:
            cur.execute("DELETE FROM lamp_readings_default WHERE ts >= %s AND ts < %s", (lo, hi))
    return written


def compact_day(
    conn: psycopg.Connection,
    day: date,
    *,
    chunk_lamps: int = 5000,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[int, int]:
    """Move one UTC day's raw lamp readings into the compact form: `chunk_lamps` lamp numbers per transaction
    packed (the raw rows left as they are: deleting rows scattered over every page of the day would rewrite all
    of them), then, in one transaction, whatever arrived meanwhile packed too and the day's raw rows emptied at
    once. Until that commits both forms hold the day, and readers take each reading once; a run stopped before
    it leaves the raw day whole, and the next run packs it again over what is there. `progress(done, total)` in
    lamp numbers. Returns (readings packed, lamp-days written)."""
    lo, hi = _day_bounds(day)
    row = conn.execute(
        "SELECT min(lamp_no), max(lamp_no), mod(pg_snapshot_xmin(pg_current_snapshot())::text::bigint, 4294967296) "
        "FROM lamp_readings WHERE ts >= %s AND ts < %s",
        (lo, hi),
    ).fetchone()
    conn.commit()
    if row is None or row[0] is None:
        return 0, 0
    first, last, xmin = int(row[0]), int(row[1]), str(max(int(row[2]), 3))  # xids below 3 are special
    moved = lamp_days = 0
    for start in range(first, last + 1, chunk_lamps):
        m, d = _compact_range(conn, day, start, min(start + chunk_lamps, last + 1))
        moved += m
        lamp_days += d
        if progress is not None:
            progress(min(start + chunk_lamps, last + 1) - first, last + 1 - first)
    _finish_day(conn, day, xmin)
    return moved, lamp_days


def compact(
    conn: psycopg.Connection,
    *,
    before: date,
    chunk_lamps: int = 5000,
    progress: Callable[[date, int, int], None] | None = None,
) -> CompactionReport:
    """Compact every day before `before` that still has raw readings. One compaction at a time per database:
    raises CompactionBusy when another holds the lock. Does nothing under TimescaleDB (its compression does)."""
    if _on_timescaledb(conn):
        conn.commit()
        return CompactionReport(days=[])
    got = conn.execute("SELECT pg_try_advisory_lock(%s)", (_LOCK,)).fetchone()
    conn.commit()
    if got != (True,):
        raise CompactionBusy("another process is compacting the history now; try again when it has finished")
    started = time.monotonic()
    try:
        report = CompactionReport(days=pending_days(conn, before))
        conn.commit()
        for day in report.days:
            step = (lambda done, total, d=day: progress(d, done, total)) if progress else None
            moved, lamp_days = compact_day(conn, day, chunk_lamps=chunk_lamps, progress=step)
            report.readings += moved
            report.lamp_days += lamp_days
            cabinet_moved, cabinet_days = compact_cabinet_day(conn, day)
            report.cabinet_readings += cabinet_moved
            report.cabinet_days += cabinet_days
            logger.info(
                "history: %s compacted, %d lamp readings into %d lamp-days, %d cabinet readings into %d cabinet-days",
                day,
                moved,
                lamp_days,
                cabinet_moved,
                cabinet_days,
            )
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK,))
        conn.commit()
    report.seconds = time.monotonic() - started
    return report


_US = "(extract(epoch FROM {}) * 1000000)::bigint"  # exact: extract gives a numeric
_CABINET_COLUMNS = (
    f"{_US.format('ts')}, seq, door_open, contactors, phase_voltage_v, circuit_current_a, leakage_ma, energy_wh, "
    f"faults, lamp_count, {_US.format('received_at')}"
)
_CABINET_KEYS = [
    "ts",
    "seq",
    "door_open",
    "contactors",
    "phase_voltage_v",
    "circuit_current_a",
    "leakage_ma",
    "energy_wh",
    "faults",
    "lamp_count",
    "received_at",
]


def _cabinet_summary(cabinet: int, day: date, rows: list[CabinetRow]) -> tuple[Any, ...]:
    energy = [r[7] for r in rows if r[7] is not None]
    return (
        cabinet,
        day,
        len(rows),
        _EPOCH + timedelta(microseconds=rows[0][0]),
        _EPOCH + timedelta(microseconds=rows[-1][0]),
        energy[0] if energy else None,
        energy[-1] if energy else None,
        CABINET_CODEC,
        pack_cabinet_day(rows),
    )


def compact_cabinet_day(conn: psycopg.Connection, day: date) -> tuple[int, int]:
    """Move one UTC day's raw cabinet readings into `cabinet_history`, one packed row per cabinet (merged with
    what it holds for that cabinet-day already), and empty the day's raw rows, all in one transaction holding off
    writers to the day: a run stopped anywhere leaves the day as it was. Cabinets report every few minutes, a
    city's day is a few hundred thousand rows, so one transaction does. Returns (readings packed, cabinet-days
    written)."""
    lo, hi = _day_bounds(day)
    with conn.transaction(), conn.cursor() as cur:
        relation, own = _lock_day(cur, "cabinet_readings", day)
        rows = cur.execute(
            f"SELECT cabinet_no, {_CABINET_COLUMNS} FROM {relation} WHERE ts >= %s AND ts < %s "
            "ORDER BY cabinet_no, ts, seq",
            (lo, hi),
        ).fetchall()
        if not rows:
            return 0, 0
        fresh: dict[int, list[CabinetRow]] = {}
        for r in rows:
            fresh.setdefault(int(r[0]), []).append(tuple(r[1:]))
        known = cur.execute(
            "DELETE FROM cabinet_history WHERE day = %s AND cabinet_no = ANY(%s) RETURNING cabinet_no, data",
            (day, list(fresh)),
        ).fetchall()
        for cabinet, data in known:  # an earlier run's cabinet-day, and readings of it that came late
            merged = {(r[0], r[1]): r for r in unpack_cabinet_day(data)}
            for r in fresh[cabinet]:
                merged.setdefault((r[0], r[1]), r)
            fresh[cabinet] = [merged[k] for k in sorted(merged)]
        _copy_history(cur, "cabinet", [_cabinet_summary(c, day, fresh[c]) for c in sorted(fresh)])
        if own:
            cur.execute("SELECT telemetry_reclaim_cabinets(%s)", (day,))
        else:
            cur.execute("DELETE FROM cabinet_readings_default WHERE ts >= %s AND ts < %s", (lo, hi))
    return len(rows), len(fresh)


def cabinet_meter_sql(cabinet_no: str) -> str:
    """A SQL expression: the newest energy meter reading of the cabinet numbered `cabinet_no` (an expression of
    the outer query), from the raw readings or the compact history, whichever holds the newer one (a day packed
    leaves no raw rows behind)."""
    return f"""(SELECT e FROM (
        (SELECT cr.ts, cr.energy_wh AS e FROM cabinet_readings cr
         WHERE cr.cabinet_no = {cabinet_no} AND cr.energy_wh IS NOT NULL ORDER BY cr.ts DESC LIMIT 1)
        UNION ALL
        (SELECT h.last_ts, h.energy_last_wh FROM cabinet_history h
         WHERE h.cabinet_no = {cabinet_no} AND h.energy_last_wh IS NOT NULL ORDER BY h.day DESC LIMIT 1)
    ) meter ORDER BY ts DESC LIMIT 1)"""


def cabinet_meters(conn: psycopg.Connection, cabinet_nos: Sequence[int]) -> dict[int, int | None]:
    """The newest energy meter reading (Wh) of each of `cabinet_nos` (None: its meter never read)."""
    rows = conn.execute(
        f"SELECT no, {cabinet_meter_sql('no')} FROM unnest(%s::int[]) AS c(no)", (list(cabinet_nos),)
    ).fetchall()
    return {int(no): (int(e) if e is not None else None) for no, e in rows}


def cabinet_meters_rise(conn: psycopg.Connection, since: datetime) -> tuple[int, int, datetime | None]:
    """(Wh the cabinets' meters rose since `since`, how many meters were read, the first reading's time) from the
    raw readings (the day so far is never packed yet)."""
    row = conn.execute(
        """SELECT coalesce(sum(d), 0), count(*), min(first) FROM (
               SELECT max(energy_wh) - min(energy_wh) AS d, min(ts) AS first FROM cabinet_readings
               WHERE ts >= %s AND energy_wh IS NOT NULL GROUP BY cabinet_no) x""",
        (since,),
    ).fetchone()
    return (int(row[0]), int(row[1]), row[2]) if row else (0, 0, None)


def read_cabinet(
    conn: psycopg.Connection, cabinet_no: int, start: datetime, end: datetime, *, limit: int, offset: int = 0
) -> list[dict[str, Any]]:
    """A cabinet's readings in [start, end), raw and compact alike, oldest first (by ts, then seq), each once;
    the page [offset, offset + limit)."""
    want = offset + limit
    lo_us, hi_us = _us(start), _us(end)
    found: dict[tuple[int, int], CabinetRow] = {}
    raw = conn.execute(
        f"SELECT {_CABINET_COLUMNS} FROM cabinet_readings WHERE cabinet_no = %s AND ts >= %s AND ts < %s "
        "ORDER BY ts, seq LIMIT %s",
        (cabinet_no, start, end, want),
    ).fetchall()
    for r in raw:
        found[(r[0], r[1])] = tuple(r)
    packed = conn.execute(
        "SELECT data FROM cabinet_history WHERE cabinet_no = %s AND day >= %s AND day <= %s ORDER BY day",
        (cabinet_no, start.astimezone(UTC).date(), (end - timedelta(microseconds=1)).astimezone(UTC).date()),
    ).fetchall()
    for (data,) in packed:
        for r in unpack_cabinet_day(data):
            if lo_us <= r[0] < hi_us:
                found.setdefault((r[0], r[1]), r)
    tz = conn.info.timezone
    out = []
    for key in sorted(found)[offset:want]:
        item = dict(zip(_CABINET_KEYS, found[key], strict=True))
        item["ts"] = (_EPOCH + timedelta(microseconds=item["ts"])).astimezone(tz)
        item["received_at"] = (_EPOCH + timedelta(microseconds=item["received_at"])).astimezone(tz)
        out.append(item)
    return out


def read_lamp(
    conn: psycopg.Connection, lamp_no: int, start: datetime, end: datetime, *, limit: int, offset: int = 0
) -> list[dict[str, Any]]:
    """A lamp's readings in [start, end), raw and compact alike, oldest first (by ts, then seq), each once; the
    page [offset, offset + limit)."""
    want = offset + limit
    with conn.cursor(row_factory=dict_row) as cur:
        raw: list[dict[str, Any]] = cur.execute(
            f"SELECT {_COLUMNS} FROM lamp_readings WHERE lamp_no = %s AND ts >= %s AND ts < %s "
            "ORDER BY ts, seq LIMIT %s",
            (lamp_no, start, end, want),
        ).fetchall()
    with conn.cursor() as cur:
        packed = cur.execute(
            "SELECT data FROM lamp_history WHERE lamp_no = %s AND day >= %s AND day <= %s ORDER BY day",
            (lamp_no, start.astimezone(UTC).date(), (end - timedelta(microseconds=1)).astimezone(UTC).date()),
        ).fetchall()
    if not packed:
        return raw[offset:want]
    tz = conn.info.timezone
    lo_us = _us(start)
    hi_us = _us(end)
    found: list[dict[str, Any]] = []
    for (data,) in packed:
        day = unpack(data)
        inside = np.flatnonzero((day.ts_us >= lo_us) & (day.ts_us < hi_us))
        for values in day.take(inside).rows():
            item = dict(zip(_KEYS, values, strict=True))
            item["ts"] = (_EPOCH + timedelta(microseconds=values[0])).astimezone(tz)
            item["received_at"] = (_EPOCH + timedelta(microseconds=values[-1])).astimezone(tz)
            found.append(item)
        if len(found) >= want:  # later days hold only later readings
            break
    merged: dict[tuple[datetime, int], dict[str, Any]] = {(r["ts"], r["seq"]): r for r in found}
    for r in raw:
        merged.setdefault((r["ts"], r["seq"]), r)
    return [merged[k] for k in sorted(merged)][offset:want]


def _us(t: datetime) -> int:
    delta = t - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
