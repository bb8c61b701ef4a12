"""`lamplighter bench storage`: what a day of a city's lamp readings costs on disk, raw and compact.

1. Generates `--days` whole UTC days (ending yesterday) of readings for every lamp of a seeded city, each lamp at
   its report interval with the simulator's drift (±2 %) and values (power near 97 % of rated at night with 2 %
   noise, grid voltage ±2 V, current, power factor, energy counter, temperature, RSSI, and a D4i driver's burning
   hours, switch-on count and temperature, no leakage sensor; 2 % of lamps report a fault held in manual mode).
   They go into `lamp_readings` by binary COPY in time order, as ingest writes them, so the unique index and the
   pages are as a gateway leaves them.
2. Raw size: the days' partitions with their indexes and TOAST after VACUUM, per reading; the time to read one
   lamp's day (`telemetry.history.read_lamp`, what the API calls) for random lamps.
3. Compacts every generated day (`telemetry.history.compact`, as the leading gateway's hourly run does) and
   measures the same: `lamp_history` with its indexes and TOAST per reading, and a lamp's day read back.

Under TimescaleDB the same figures would measure its compression instead; this bench reports which it measured.
Prints figures as it goes and, as its last line, one JSON object. Asserts nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import statistics
import sys
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from inventory.queries import lamp_ratings
from kernel.database import Connection, connect
from lamplighter.config import Settings
from lamplighter.runtime import bench_city
from telemetry.history import CompactionReport, compact, read_lamp
from telemetry.schema import has_timescaledb
from telemetry.store import copy_lamp_readings

__all__ = ["run_storage_bench"]

_PG_EPOCH_US = 946_684_800_000_000
_QUERIES = 200


# The fixed-width columns of `lamp_readings` in table order: name, numpy type, bytes.
_FIXED = [
    ("ts", ">i8", 8),
    ("lamp_no", ">i4", 4),
    ("seq", ">i4", 4),
    ("is_on", "?", 1),
    ("dim", ">i2", 2),
    ("power_w", ">f4", 4),
    ("voltage_v", ">f4", 4),
    ("current_a", ">f4", 4),
    ("power_factor", ">f4", 4),
    ("energy_wh", ">i8", 8),
    ("temp_c", ">f4", 4),
]
# The forecasting fields a D4i driver reports, after `received_at` (they came later): leakage is left NULL.
_COUNTERS = [("burn_h", ">i4", 4), ("starts", ">i4", 4), ("driver_temp_c", ">f4", 4)]


def _layout(faulty: bool) -> np.dtype[Any]:
    """One row of `lamp_readings` in PostgreSQL's binary COPY format, every field fixed-width (lux NULL)."""
    fields: list[Any] = [("count", ">i2")]
    for name, kind, _ in _FIXED:
        fields += [(f"{name}_len", ">i4"), (name, kind)]
    fields += [("lux_len", ">i4")]  # NULL: length -1, no bytes
    fields += [("rssi_dbm_len", ">i4"), ("rssi_dbm", ">i2")]
    fields += [("mode_len", ">i4"), ("mode", "S6" if faulty else "S4")]
    # text[]: dimensions, flags, element type; with one element its length and lower bound, then the element.
    fields += [("faults_len", ">i4"), ("faults_head", ">i4", (3,))]
    if faulty:
        fields += [("faults_dim", ">i4", (2,)), ("fault_len", ">i4"), ("fault", "S12")]
    fields += [("received_at_len", ">i4"), ("received_at", ">i8")]
    for name, kind, _ in _COUNTERS:
        fields += [(f"{name}_len", ">i4"), (name, kind)]
    fields += [("leakage_ma_len", ">i4")]  # NULL: no leakage sensor
    return np.dtype(fields)


def _encode(cols: dict[str, npt.NDArray[Any]], faulty: bool) -> bytes:
    rows = np.zeros(len(cols["ts"]), dtype=_layout(faulty))
    rows["count"] = 20
    for name, _, size in [*_FIXED, ("rssi_dbm", "", 2), ("received_at", "", 8), *_COUNTERS]:
        rows[name] = cols[name]
        rows[f"{name}_len"] = size
    rows["lux_len"] = -1
    rows["leakage_ma_len"] = -1
    rows["mode_len"] = 6 if faulty else 4
    rows["mode"] = b"manual" if faulty else b"auto"
    if faulty:
        rows["faults_len"] = 36
        rows["faults_head"] = (1, 0, 25)
        rows["faults_dim"] = (1, 1)
        rows["fault_len"] = 12
        rows["fault"] = b"lamp_failure"
    else:
        rows["faults_len"] = 12
        rows["faults_head"] = (0, 0, 25)
    return b"PGCOPY\n\xff\r\n\x00" + bytes(8) + rows.tobytes() + b"\xff\xff"


class _Fleet:
    """The city's lamps and the simulator-like values they report."""

    def __init__(self, conn: Connection, seed: int = 5) -> None:
        rows = lamp_ratings(conn)
        self.no = np.array([r[0] for r in rows], dtype=np.int64)
        self.rated = np.array([r[1] for r in rows], dtype=np.float64)
        self.interval_ms = np.array([r[2] for r in rows], dtype=np.int64) * 1000
        self.rng = np.random.default_rng(seed)
        n = len(self.no)
        self.pf = np.round(self.rng.uniform(0.9, 0.98, n), 2)
        self.rssi = self.rng.integers(-100, -55, n)
        self.odd = self.rng.random(n) < 0.02  # a fault reported all day and held in manual mode
        self.energy = self.rng.integers(10_000, 5_000_000, n).astype(np.float64)
        self.seq = np.zeros(n, dtype=np.int64)
        self.burn_s = self.rng.integers(0, 40_000, n) * 3600.0  # up to about 9 years of nights
        self.starts = (self.burn_s / 3600 / 11).astype(np.int64)
        self.next_ms = np.zeros(n, dtype=np.int64)

    def day(self, day: dt.date) -> list[tuple[dict[str, npt.NDArray[Any]], dict[str, npt.NDArray[Any]]]]:
        """The day's readings, an hour at a time in time order: (normal lamps' columns, faulty lamps' columns)."""
        start = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1000)
        if not self.next_ms.any():
            self.next_ms = start + (self.rng.random(len(self.no)) * self.interval_ms).astype(np.int64)
        # Each lamp's report times through the day: one interval on, ±2 %, as the simulator drifts.
        most = int((86_400_000 / self.interval_ms.min()) * 1.03) + 2
        steps = (self.interval_ms[:, None] * self.rng.uniform(0.98, 1.02, (len(self.no), most))).astype(np.int64)
        times = self.next_ms[:, None] + np.cumsum(steps, axis=1) - steps[:, :1]
        end = start + 86_400_000
        inside = times < end
        self.next_ms = np.where(inside, np.iinfo(np.int64).max, times).min(axis=1)  # each lamp's first after
        hours = []
        for h in range(24):
            lo, hi = start + h * 3_600_000, start + (h + 1) * 3_600_000
            lamp, k = np.nonzero((times >= lo) & (times < hi))
            order = np.argsort(times[lamp, k], kind="stable")
            lamp, ts = lamp[order], times[lamp[order], k[order]]
            hours.append(tuple(self._values(lamp[sel], ts[sel]) for sel in (~self.odd[lamp], self.odd[lamp])))
        return hours  # type: ignore[return-value]

    def _values(self, lamp: npt.NDArray[np.int64], ts: npt.NDArray[np.int64]) -> dict[str, npt.NDArray[Any]]:
        n = len(lamp)
        rng = self.rng
        local_h = ((ts // 1000 + 8 * 3600) % 86_400) / 3600.0  # Xining: on from 18:30 to 07:30 local
        on = (local_h >= 18.5) | (local_h < 7.5)
        power = np.where(on, np.maximum(self.rated[lamp] * 0.97 * (1 + rng.normal(0, 0.02, n)), 0), 0.0)
        grid = 220.0 + 4.0 * np.sin(ts / 3_600_000 * 2 * np.pi / 24)
        voltage = grid + rng.normal(0, 2.0, n)
        current = np.where(power > 0, power / (voltage * self.pf[lamp]), 0.0)
        np.add.at(self.energy, lamp, power * self.interval_ms[lamp] / 3_600_000)
        np.add.at(self.burn_s, lamp, np.where(on, self.interval_ms[lamp] / 1000, 0))
        self.starts[lamp] += on & (local_h < 18.5 + self.interval_ms[lamp] / 3_600_000) & (local_h >= 18.5)
        temp = -5 + np.where(on, 12.0, 2.0) + rng.normal(0, 1.0, n)
        seq = self.seq[lamp] + _rank(lamp)
        np.add.at(self.seq, lamp, 1)
        return {
            "ts": ts * 1000 - _PG_EPOCH_US,
            "lamp_no": self.no[lamp],
            "seq": seq,
            "is_on": on,
            "dim": np.where(on, 100, 0),
            "power_w": np.round(power, 1),
            "voltage_v": np.round(voltage, 1),
            "current_a": np.round(current, 3),
            "power_factor": self.pf[lamp],
            "energy_wh": self.energy[lamp].astype(np.int64),
            "temp_c": np.round(temp, 1),
            "burn_h": (self.burn_s[lamp] // 3600).astype(np.int64),
            "starts": self.starts[lamp],
            # DALI D4i reports a driver's temperature in whole degrees.
            "driver_temp_c": np.round(temp + np.where(on, 18.0, 0.5) + rng.normal(0, 0.5, n)),
            "rssi_dbm": self.rssi[lamp] + rng.integers(-3, 4, n),
            "received_at": (ts + rng.integers(3, 250, n)) * 1000 - _PG_EPOCH_US,
        }


def write_day(conn: Connection, fleet: _Fleet, day: dt.date) -> int:
    """A day of the fleet's readings into the time series by binary COPY, an hour at a time; how many."""
    written = 0
    for normal, faulty in fleet.day(day):
        for cols, odd in ((normal, False), (faulty, True)):
            if len(cols["ts"]):
                copy_lamp_readings(conn, _encode(cols, odd))
                written += len(cols["ts"])
    return written


def _rank(lamp: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """For each entry, how many earlier entries name the same lamp (its readings' order within the hour)."""
    order = np.argsort(lamp, kind="stable")
    sorted_lamps = lamp[order]
    first = np.r_[0, np.flatnonzero(sorted_lamps[1:] != sorted_lamps[:-1]) + 1]
    counts = np.diff(np.r_[first, len(lamp)])
    ranks = np.arange(len(lamp)) - np.repeat(first, counts)
    out = np.empty(len(lamp), dtype=np.int64)
    out[order] = ranks
    return out


def _size(conn: Connection, tables: list[str]) -> int:
    """Bytes on disk of the tables with their indexes and TOAST."""
    row = conn.execute("SELECT sum(pg_total_relation_size(t::regclass))::bigint FROM unnest(%s::text[]) t", (tables,))
    return int((row.fetchone() or (0,))[0] or 0)


def _hypertable_size(conn: Connection) -> int:
    """Bytes on disk of `lamp_readings` under TimescaleDB: every chunk, compressed or not, with indexes and TOAST."""
    row = conn.execute("SELECT hypertable_size('lamp_readings')").fetchone()
    return int(row[0] or 0) if row else 0


def _lamp_day_ms(conn: Connection, lamps: list[int], days: list[dt.date]) -> tuple[float, float]:
    """Median and p99 of reading one lamp's whole day, as the API does, in ms."""
    took = []
    rng = random.Random(9)
    for _ in range(_QUERIES):
        day = rng.choice(days)
        lo = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
        t = time.perf_counter()
        read_lamp(conn, rng.choice(lamps), lo, lo + dt.timedelta(days=1), limit=10_000)
        took.append((time.perf_counter() - t) * 1000)
    took.sort()
    return statistics.median(took), took[int(len(took) * 0.99) - 1]


def run_storage_bench(settings: Settings, *, lamps: int, days: int) -> int:
    today = dt.datetime.now(dt.UTC).date()
    span = [today - dt.timedelta(days=days - i) for i in range(days)]
    with bench_city(settings, lamps) as ep, connect(ep.database_url, autocommit=True) as conn:
        timescale = has_timescaledb(conn)
        if timescale:
            print("storage: TimescaleDB hypertables (its compression measured as the compact form)", flush=True)
        fleet = _Fleet(conn)
        readings = 0
        started = time.monotonic()
        for day in span:
            t = time.monotonic()
            n_day = write_day(conn, fleet, day)
            readings += n_day
            print(f"{day}: {n_day:,} readings written in {time.monotonic() - t:.1f} s", flush=True)
        write_s = time.monotonic() - started
        conn.execute("VACUUM ANALYZE lamp_readings")
        parts = [f"lamp_readings_{d:%Y%m%d}" for d in span]
        raw_bytes = _hypertable_size(conn) if timescale else _size(conn, parts)
        sample = [int(x) for x in random.Random(3).sample(list(fleet.no), min(1000, len(fleet.no)))]
        raw_median, raw_p99 = _lamp_day_ms(conn, sample, span)
        print(
            f"raw: {readings:,} readings, {raw_bytes / 1e9:.2f} GB, {raw_bytes / readings:.1f} B/reading; "
            f"a lamp's day read in {raw_median:.2f} ms (median), {raw_p99:.2f} ms (p99)",
            flush=True,
        )

        def progress(day: dt.date, done: int, total: int) -> None:
            if sys.stderr.isatty():
                print(f"\rcompacting {day}: {done:,}/{total:,} lamps", end="", file=sys.stderr, flush=True)

        if timescale:
            # What the compression policy does to the days once they are old enough, here at once (as the owner).
            t = time.monotonic()
            with connect(ep.schema_url, autocommit=True) as owner:
                chunks = owner.execute(
                    "SELECT compress_chunk(c) FROM show_chunks('lamp_readings', older_than => %s::timestamptz) c",
                    (str(today),),
                ).fetchall()
            report = CompactionReport(days=span, readings=readings, lamp_days=len(chunks), seconds=time.monotonic() - t)
            compact_bytes, left, unit = _hypertable_size(conn), 0, "compressed chunks"
        else:
            with connect(ep.database_url) as worker:
                report = compact(worker, before=today, progress=progress)
            if sys.stderr.isatty():
                print(file=sys.stderr)
            conn.execute("VACUUM ANALYZE lamp_history")
            compact_bytes, left, unit = _size(conn, ["lamp_history"]), _size(conn, parts), "lamp-days"
        compact_median, compact_p99 = _lamp_day_ms(conn, sample, span)
        print(
            f"compact: {report.readings:,} readings into {report.lamp_days:,} {unit} in {report.seconds:.1f} s "
            f"({report.seconds / days:.1f} s a day); {compact_bytes / 1e6:.1f} MB, "
            f"{compact_bytes / readings:.2f} B/reading (the emptied partitions keep {left / 1e6:.1f} MB); "
            f"a lamp's day read in {compact_median:.2f} ms (median), {compact_p99:.2f} ms (p99)",
            flush=True,
        )
        per_day = readings / days
        result: dict[str, Any] = {
            "lamps": lamps,
            "days": days,
            "readings": readings,
            "readings_moved": report.readings,
            "write_readings_per_s": round(readings / write_s),
            "bytes_per_reading_raw": round(raw_bytes / readings, 1),
            "bytes_per_reading_compact": round(compact_bytes / readings, 2),
            "compact_seconds_per_day": round(report.seconds / days, 1),
            "query_ms_lamp_day_raw": round(raw_median, 2),
            "query_ms_lamp_day_raw_p99": round(raw_p99, 2),
            "query_ms_lamp_day_compact": round(compact_median, 2),
            "query_ms_lamp_day_compact_p99": round(compact_p99, 2),
            "gb_90_days_raw": round(per_day * 90 * raw_bytes / readings / 1e9, 1),
            "gb_90_days_compact": round(per_day * 90 * compact_bytes / readings / 1e9, 2),
        }
        if timescale:
            result["storage"] = "timescaledb"
        print(json.dumps(result), flush=True)
    return 0
