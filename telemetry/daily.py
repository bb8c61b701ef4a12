"""Each lamp's day in a few numbers: how long it burned, how often it switched on, and how its power, power factor,
temperatures and leakage sat, computed once a day from the day's readings (raw or compact alike) into `lamp_days`.

Two users: a lamp's counters for devices that do not report them (burning hours and starts summed over its days,
`lamp_counters`), and the failure forecaster, whose features are trends over these days. `summarise` is a pure
function of a run of lamp-days (numpy over all of them at once), so a benchmark that generates months of history
summarises it exactly as the nightly job does, without storing the readings first.

What a day's figures mean (UTC days, as the compact history keeps them):
- `burn_s`: seconds on, from each reading that says on (and dim > 0) to the next one, each gap counted up to
  `GAP_S` (a longer silence says nothing of what the lamp did); a gap across midnight is split at midnight;
- `starts`: switch-ons seen (a reading on after one off; the day's first reading counts as one when it is on and
  the lamp's previous day ended off), or the rise of the device's own switch-on counter that day where larger;
- `power_norm_med`: the median of power × 100 / dim over readings on with a power: what the lamp draws at full
  output, so a night with dimming steps compares with one without; `power_norm_spread`: the interquartile range of
  the same, relative to its median (ripple and unstable drivers show here);
- medians of power factor and of the driver's and controller's temperatures while on; leakage's median and most;
- the counters the device itself reported last that day (NULL when it reports none), and the faults it raised.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg

from telemetry.daypack import LampDay
from telemetry.history import read_lamp_range

__all__ = [
    "GAP_S",
    "SUMMARY_COLUMNS",
    "TABLE_COLUMNS",
    "DailyReport",
    "DayTable",
    "first_summary_day",
    "lamp_counters",
    "pending_summary_days",
    "read_day_table",
    "summarise",
    "summarise_day",
    "summarise_days",
]

logger = logging.getLogger(__name__)

GAP_S = 1800  # a reading's "on" counts for at most this long: twice the longest reporting interval
_LOCK = 7426004  # one summary run at a time per database

# `lamp_days`' columns after (lamp_no, day), in order; `summarise` returns them as arrays.
SUMMARY_COLUMNS = (
    "readings",
    "on_readings",
    "burn_s",
    "starts",
    "last_on",
    "power_norm_med",
    "power_norm_spread",
    "pf_med",
    "temp_med",
    "driver_temp_med",
    "leakage_med",
    "leakage_max",
    "burn_h",
    "starts_reported",
    "faults",
)


def _segment_ids(lengths: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    starts = np.zeros(len(lengths), dtype=np.int64)
    if len(lengths) > 1:
        np.cumsum(lengths[:-1], out=starts[1:])
    return starts, np.repeat(np.arange(len(lengths)), lengths)


def _quantiles(
    values: npt.NDArray[np.float64], seg: npt.NDArray[np.int64], segments: int, qs: tuple[float, ...]
) -> list[npt.NDArray[np.float64]]:
    """Each segment's quantiles `qs` of `values` (whose segment is `seg`), NaN for a segment with none; linear
    interpolation between the order statistics, as numpy's default."""
    order = np.lexsort((values, seg))
    v, s = values[order], seg[order]
    counts = np.bincount(s, minlength=segments)
    starts = np.zeros(segments, dtype=np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    has = counts > 0
    out = []
    for q in qs:
        pos = (counts - 1).clip(0) * q
        lo = np.floor(pos).astype(np.int64)
        hi = np.ceil(pos).astype(np.int64)
        frac = pos - lo
        r = np.full(segments, np.nan)
        if len(v):
            a = v[np.minimum(starts + lo, len(v) - 1)]
            b = v[np.minimum(starts + hi, len(v) - 1)]
            r[has] = (a + (b - a) * frac)[has]
        out.append(r)
    return out


def _median(
    pair: tuple[npt.NDArray[Any], npt.NDArray[np.bool_]], use: npt.NDArray[np.bool_], seg: npt.NDArray[np.int64], k: int
) -> npt.NDArray[np.float64]:
    values, present = pair
    sel = use & present
    return _quantiles(values[sel].astype(np.float64), seg[sel], k, (0.5,))[0]


def _last(
    pair: tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]], seg: npt.NDArray[np.int64], k: int
) -> npt.NDArray[np.float64]:
    """Each segment's last present value (NaN: none)."""
    values, present = pair
    out = np.full(k, np.nan)
    idx = np.flatnonzero(present)
    out[seg[idx]] = values[idx]  # later indices overwrite earlier ones
    return out


def _first(
    pair: tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]], seg: npt.NDArray[np.int64], k: int
) -> npt.NDArray[np.float64]:
    """Each segment's first present value (NaN: none)."""
    values, present = pair
    out = np.full(k, np.nan)
    idx = np.flatnonzero(present)[::-1]
    out[seg[idx]] = values[idx]  # earlier indices, written last, win
    return out


def summarise(
    days: LampDay, lengths: npt.ArrayLike, previous_last_on: Sequence[bool | None] | None = None
) -> dict[str, Any]:
    """The summary of each lamp-day laid end to end in `days` (`lengths` readings each, each in (ts, seq) order):
    `SUMMARY_COLUMNS` as arrays (NaN where a figure has nothing to go on; `faults` a list of sorted tuples).
    `previous_last_on`: per lamp-day, whether the lamp's previous day ended on (True, False, or None unknown)."""
    n_of = np.asarray(lengths, dtype=np.int64)
    k = len(n_of)
    starts_at, seg = _segment_ids(n_of)
    n = len(days)
    if int(n_of.sum()) != n:
        raise ValueError(f"lengths add up to {int(n_of.sum())}, the days hold {n} readings")
    lit = days.is_on & (days.dim > 0)
    same = np.zeros(n, dtype=bool)  # reading i follows reading i-1 of the same lamp-day
    same[1:] = seg[1:] == seg[:-1]
    gap_s = np.zeros(n)
    gap_s[1:] = np.minimum((days.ts_us[1:] - days.ts_us[:-1]) / 1e6, GAP_S)
    burned = np.zeros(n)
    burned[1:] = np.where(same[1:] & lit[:-1], gap_s[1:], 0.0)
    switched_on = np.zeros(n, dtype=bool)
    switched_on[1:] = same[1:] & lit[1:] & ~lit[:-1]
    starts = np.bincount(seg, weights=switched_on, minlength=k).astype(np.int64)
    has = n_of > 0
    first_lit = np.zeros(k, dtype=bool)
    first_lit[has] = lit[starts_at[has]]
    last_lit = np.zeros(k, dtype=bool)
    last_lit[has] = lit[starts_at[has] + n_of[has] - 1]
    burn = np.bincount(seg, weights=burned, minlength=k)
    # Across midnight: a lamp lit at the day's last reading burned on to midnight (up to GAP_S), and one whose
    # previous day ended lit burned from midnight to its first reading. (In a city east of Greenwich the morning
    # switch-off falls near midnight UTC in winter: a drifting photocell's minutes are there.)
    first_us = np.zeros(k, dtype=np.int64)
    last_us = np.zeros(k, dtype=np.int64)
    first_us[has] = days.ts_us[starts_at[has]]
    last_us[has] = days.ts_us[starts_at[has] + n_of[has] - 1]
    day_us = 86_400_000_000
    burn += np.where(last_lit, np.minimum((first_us // day_us + 1) * day_us - last_us, GAP_S * 1e6) / 1e6, 0.0)
    if previous_last_on is not None:
        prev_off = np.array([p is False for p in previous_last_on], dtype=bool)
        prev_on = np.array([p is True for p in previous_last_on], dtype=bool)
        starts += (first_lit & prev_off).astype(np.int64)
        head = np.minimum(first_us - (first_us // day_us) * day_us, GAP_S * 1e6) / 1e6
        burn += np.where(prev_on & has, head, 0.0)
    # A driver that counts its own switch-ons sees what no report does: a relay's contact bounce, a driver
    # dropping out and restarting between two reports. The day's rise of its counter, where larger, is the count.
    with np.errstate(invalid="ignore"):
        counted = _last(days.starts, seg, k) - _first(days.starts, seg, k)
    starts = np.where(counted > starts, counted, starts).astype(np.int64)
    power, p_ok = days.power_w
    with np.errstate(divide="ignore", invalid="ignore"):
        norm = power.astype(np.float64) * 100.0 / days.dim
    use = lit & p_ok
    q1, med, q3 = _quantiles(norm[use], seg[use], k, (0.25, 0.5, 0.75))
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = np.where(med > 0, (q3 - q1) / med, np.nan)
    leak, leak_ok = days.leakage_ma
    leak_max = np.full(k, np.nan)
    if leak_ok.any():
        np.fmax.at(leak_max, seg[leak_ok], leak[leak_ok].astype(np.float64))
    faults: list[set[str]] = [set() for _ in range(k)]
    for i in np.flatnonzero(np.fromiter((bool(f) for f in days.faults), dtype=bool, count=n)).tolist():
        faults[seg[i]].update(days.faults[i])
    return {
        "readings": n_of,
        "on_readings": np.bincount(seg, weights=lit, minlength=k).astype(np.int64),
        "burn_s": np.round(burn).astype(np.int64),
        "starts": starts,
        "last_on": last_lit,
        "power_norm_med": med,
        "power_norm_spread": spread,
        "pf_med": _median(days.power_factor, lit, seg, k),
        "temp_med": _median(days.temp_c, lit, seg, k),
        "driver_temp_med": _median(days.driver_temp_c, lit, seg, k),
        "leakage_med": _median(days.leakage_ma, np.ones(n, dtype=bool), seg, k),
        "leakage_max": leak_max,
        "burn_h": _last(days.burn_h, seg, k),
        "starts_reported": _last(days.starts, seg, k),
        "faults": [tuple(sorted(f)) for f in faults],
    }


@dataclass
class DailyReport:
    days: list[dt.date] = field(default_factory=list)
    lamp_days: int = 0
    readings: int = 0
    seconds: float = 0.0


def pending_summary_days(conn: psycopg.Connection, before: dt.date, *, back_days: int = 7) -> list[dt.date]:
    """UTC days before `before` (at most `back_days` back) that hold readings and have no summary yet."""
    first = before - dt.timedelta(days=back_days)
    done = {d for (d,) in conn.execute("SELECT day FROM lamp_days_done WHERE day >= %s", (first,))}
    out = []
    for i in range(back_days):
        day = first + dt.timedelta(days=i)
        if day in done:
            continue
        lo = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
        hit = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM lamp_readings WHERE ts >= %s AND ts < %s) "
            "OR EXISTS (SELECT 1 FROM lamp_history WHERE day = %s)",
            (lo, lo + dt.timedelta(days=1), day),
        ).fetchone()
        if hit == (True,):
            out.append(day)
    return out


_NULLABLE_INTS = frozenset({"burn_h", "starts_reported"})


def _column(name: str, values: Any) -> list[Any]:
    """A summary column as COPY takes it: NaN as NULL, counters as integers, faults as lists."""
    if name == "faults":
        return [list(f) for f in values]
    if values.dtype.kind != "f":
        return list(values.tolist())
    whole = name in _NULLABLE_INTS
    return [None if v != v else (int(v) if whole else v) for v in values.tolist()]


def summarise_day(
    conn: psycopg.Connection,
    day: dt.date,
    *,
    chunk_lamps: int = 5000,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[int, int]:
    """Summarise one UTC day of every lamp into `lamp_days` (replacing what it held for the day), `chunk_lamps`
    lamp numbers a transaction, and mark the day done. Returns (lamp-days written, readings read)."""
    bounds = conn.execute("SELECT min(lamp_no), max(lamp_no) FROM lamp_latest").fetchone()  # every lamp heard from
    conn.commit()
    if bounds is None or bounds[0] is None:
        return 0, 0
    first, last = int(bounds[0]), int(bounds[1])
    written = read = 0
    columns = ", ".join(("lamp_no", "day", *SUMMARY_COLUMNS))
    for start in range(first, last + 1, chunk_lamps):
        end = min(start + chunk_lamps, last + 1)
        with conn.transaction(), conn.cursor() as cur:
            days, lamps, lengths = read_lamp_range(cur, day, start, end)
            before: dict[int, bool] = dict(
                cur.execute(
                    "SELECT lamp_no, last_on FROM lamp_days WHERE day = %s AND lamp_no >= %s AND lamp_no < %s",
                    (day - dt.timedelta(days=1), start, end),
                ).fetchall()
            )
            s = summarise(days, lengths, [before.get(no) for no in lamps])
            cur.execute("DELETE FROM lamp_days WHERE day = %s AND lamp_no >= %s AND lamp_no < %s", (day, start, end))
            with cur.copy(f"COPY lamp_days ({columns}) FROM STDIN") as cp:
                for row in zip(lamps, [day] * len(lamps), *(_column(c, s[c]) for c in SUMMARY_COLUMNS), strict=True):
                    cp.write_row(row)
            written += len(lamps)
            read += len(days)
        if progress is not None:
            progress(end - first, last + 1 - first)
    conn.execute(
        "INSERT INTO lamp_days_done (day, lamp_days, readings) VALUES (%s, %s, %s) "
        "ON CONFLICT (day) DO UPDATE SET lamp_days = EXCLUDED.lamp_days, readings = EXCLUDED.readings, done_at = now()",
        (day, written, read),
    )
    conn.commit()
    return written, read


def summarise_days(conn: psycopg.Connection, *, before: dt.date, back_days: int = 7) -> DailyReport:
    """Summarise every day before `before` (up to `back_days` back) that has readings and no summary yet, oldest
    first; one run at a time per database (another's run makes this one return at once, having done nothing)."""
    report = DailyReport()
    got = conn.execute("SELECT pg_try_advisory_lock(%s)", (_LOCK,)).fetchone()
    conn.commit()
    if got != (True,):
        return report
    started = time.monotonic()
    try:
        report.days = pending_summary_days(conn, before, back_days=back_days)
        conn.commit()
        for day in report.days:
            lamp_days, readings = summarise_day(conn, day)
            report.lamp_days += lamp_days
            report.readings += readings
            logger.info("daily summaries: %s, %d readings of %d lamps", day, readings, lamp_days)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK,))
        conn.commit()
    report.seconds = time.monotonic() - started
    return report


def first_summary_day(conn: psycopg.Connection, since: dt.date) -> dt.date | None:
    """The first day on or after `since` with lamps summed up (None: none)."""
    row = conn.execute("SELECT min(day) FROM lamp_days WHERE day >= %s", (since,)).fetchone()
    return row[0] if row else None


def lamp_counters(conn: psycopg.Connection, lamp_no: int) -> dict[str, Any]:
    """A lamp's burning hours and switch-ons: as its device reports them (`reported`, from its latest state), and
    as counted from its readings' daily summaries (`derived`: since its first summarised day, through the last),
    with which of the two `burn_h` and `starts` show (the device's when it reports them)."""
    latest = conn.execute("SELECT burn_h, starts, ts FROM lamp_latest WHERE lamp_no = %s", (lamp_no,)).fetchone()
    derived = conn.execute(
        "SELECT sum(burn_s), sum(starts), min(day), max(day), count(*) FROM lamp_days WHERE lamp_no = %s", (lamp_no,)
    ).fetchone() or (None, None, None, None, 0)
    reported = {"burn_h": None, "starts": None, "ts": None}
    if latest is not None:
        reported = {"burn_h": latest[0], "starts": latest[1], "ts": latest[2]}
    got = bool(derived[4])
    counted = {
        "burn_h": round(int(derived[0]) / 3600, 1) if got else None,
        "starts": int(derived[1]) if got else None,
        "from_day": derived[2] if got else None,
        "through_day": derived[3] if got else None,
        "days": int(derived[4]) if got else 0,
    }
    device = reported["burn_h"] is not None
    return {
        "burn_h": reported["burn_h"] if device else counted["burn_h"],
        "starts": reported["starts"] if reported["starts"] is not None else counted["starts"],
        "source": "device" if device else ("readings" if got else None),
        "reported": reported,
        "derived": counted,
    }


# The columns of a `DayTable`: `lamp_days`' figures that a forecast reads, as float32 (NaN: no figure).
TABLE_COLUMNS = (
    "burn_s",
    "starts",
    "power_norm_med",
    "power_norm_spread",
    "pf_med",
    "driver_temp_med",
    "leakage_med",
    "leakage_max",
)


@dataclass
class DayTable:
    """Many lamps' days side by side: `columns[name][i, j]` is lamp `lamp_no[i]`'s figure on `first_day + j`
    (NaN where it has none: no readings that day, or a figure its device does not report)."""

    lamp_no: npt.NDArray[np.int64]
    first_day: dt.date
    columns: dict[str, npt.NDArray[np.float32]]

    @property
    def days(self) -> int:
        return int(next(iter(self.columns.values())).shape[1])

    @staticmethod
    def empty(lamp_no: npt.NDArray[np.int64], first_day: dt.date, days: int) -> DayTable:
        k = len(lamp_no)
        return DayTable(lamp_no, first_day, {c: np.full((k, days), np.nan, dtype=np.float32) for c in TABLE_COLUMNS})


def read_day_table(conn: psycopg.Connection, first_day: dt.date, last_day: dt.date, lamps: Sequence[int]) -> DayTable:
    """The daily summaries of the lamps numbered `lamps` from `first_day` through `last_day`, as a DayTable of
    those lamps in the order given (NaN where a lamp has no summary of a day)."""
    days = (last_day - first_day).days + 1
    wanted = np.asarray(lamps, dtype=np.int64)
    table = DayTable.empty(wanted, first_day, days)
    cols = ", ".join(f"array_agg({c}::real ORDER BY lamp_no, day)" for c in TABLE_COLUMNS)
    row = conn.execute(
        f"SELECT array_agg(lamp_no ORDER BY lamp_no, day), array_agg(day - %s::date ORDER BY lamp_no, day), {cols} "
        "FROM lamp_days WHERE day >= %s AND day <= %s AND lamp_no = ANY(%s)",
        (first_day, first_day, last_day, wanted.tolist()),
    ).fetchone()
    if row is None or row[0] is None:
        return table
    lamp = np.asarray(row[0], dtype=np.int64)
    offset = np.asarray(row[1], dtype=np.int64)
    position = {int(no): i for i, no in enumerate(wanted.tolist())}
    at = np.fromiter((position[int(no)] for no in lamp.tolist()), dtype=np.int64, count=len(lamp))
    for name, values in zip(TABLE_COLUMNS, row[2:], strict=True):
        table.columns[name][at, offset] = np.array([np.nan if v is None else v for v in values], dtype=np.float32)
    return table
