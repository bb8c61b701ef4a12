"""The rate as history: minute samples, below-target alerts, the nightly report, the retained ops message.

Pure parts (`sample_rows`, `BelowTarget`, `ops_message`, `summarise_night`) take plain values; the functions
that take a connection do the I/O. Coarse groupings (city, district, road class) are sampled every minute while
anything is due; roads and cabinets every `fine_every` minutes (and always at the inspection time), which keeps a
city of 110,000 lamps under about 250,000 sample rows a night.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from inventory.index import ROAD_CLASSES, FleetIndex
from kernel.clock import night_bounds
from lighting.rate import DARK, DAY_BURNING, LIT, UNKNOWN, Breakdown, Counts, class_target, rate_of, road_verdicts

__all__ = [
    "GROUPINGS",
    "BelowTarget",
    "SampleRow",
    "history",
    "list_alerts",
    "list_nights",
    "newest_night",
    "night_of",
    "nightly_csv",
    "nightly_report",
    "ops_message",
    "sample_rows",
    "stored_report",
    "stored_reports_between",
    "write_alert_events",
    "write_samples",
]

GROUPINGS = ("city", "district", "road_class", "road", "cabinet")
COARSE = ("city", "district", "road_class")
ALERT_AFTER_MS = 10 * 60_000  # below target for more than 10 minutes raises an operator alert

SampleRow = tuple[dt.datetime, str, str, int, int, int, int, int, float | None, float, float | None]


def _counts_rows(ts: dt.datetime, grouping: str, c: Counts, integrity: float | None = None) -> list[SampleRow]:
    due, rate = c.due, c.rate
    rows: list[SampleRow] = []
    for i, key in enumerate(c.keys):
        r = None if np.isnan(rate[i]) else float(rate[i])
        rows.append(
            (
                ts,
                grouping,
                key,
                int(due[i]),
                int(c.lit[i]),
                int(c.dark[i]),
                int(c.unknown[i]),
                int(c.day_burning[i]),
                r,
                float(c.target[i]),
                integrity,
            )
        )
    return rows


def sample_rows(b: Breakdown, *, fine: bool) -> list[SampleRow]:
    """Rows for `lighting_rate_samples`: coarse groupings always, roads and cabinets when `fine`."""
    ts = dt.datetime.fromtimestamp(b.ts_ms / 1000, dt.UTC)
    rows = _counts_rows(ts, "city", b.city, b.integrity)
    rows += _counts_rows(ts, "district", b.district)
    rows += _counts_rows(ts, "road_class", b.road_class)
    if fine:
        rows += _counts_rows(ts, "road", b.road)
        rows += _counts_rows(ts, "cabinet", b.cabinet)
    return rows


def write_samples(conn: psycopg.Connection, rows: Sequence[SampleRow]) -> None:
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            "CREATE TEMP TABLE IF NOT EXISTS stage_samples (LIKE lighting_rate_samples INCLUDING DEFAULTS) "
            "ON COMMIT DELETE ROWS"
        )
        with cur.copy(
            "COPY stage_samples (ts, grouping, key, due, lit, dark, unknown, day_burning, rate, target, integrity) "
            "FROM STDIN"
        ) as cp:
            for row in rows:
                cp.write_row(row)
        cur.execute("INSERT INTO lighting_rate_samples SELECT * FROM stage_samples ON CONFLICT DO NOTHING")


# -- below-target alerts ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertEvent:
    kind: str  # "raised" or "cleared"
    grouping: str
    key: str
    ts: dt.datetime
    rate: float | None
    target: float
    since: dt.datetime


@dataclass
class BelowTarget:
    """Tracks how long the city and each district have been below target; raises after 10 minutes."""

    after_ms: int = ALERT_AFTER_MS
    below_since: dict[tuple[str, str], int] = field(default_factory=dict)
    raised: set[tuple[str, str]] = field(default_factory=set)

    def update(self, b: Breakdown, *, evidence_ms: int | None = None) -> list[AlertEvent]:
        """`evidence_ms`: when the state behind `b` is newer than its minute (a minute sampled late, from reports
        that came after it), the time those reports speak for. A spell below target starts no earlier than the
        evidence, so a late minute cannot date back a fall that happened later (the schedule at the minute against
        the devices as they are now)."""
        events: list[AlertEvent] = []
        start_at = b.ts_ms if evidence_ms is None else max(b.ts_ms, evidence_ms)
        ts = dt.datetime.fromtimestamp(b.ts_ms / 1000, dt.UTC)
        for grouping, counts in (("city", b.city), ("district", b.district)):
            rate = counts.rate
            for i, key in enumerate(counts.keys):
                k = (grouping, key)
                r = None if np.isnan(rate[i]) else float(rate[i])
                target = float(counts.target[i])
                if r is not None and r < target:
                    start = self.below_since.setdefault(k, start_at)
                    if k not in self.raised and b.ts_ms - start > self.after_ms:
                        self.raised.add(k)
                        since = dt.datetime.fromtimestamp(start / 1000, dt.UTC)
                        events.append(AlertEvent("raised", grouping, key, ts, r, target, since))
                else:
                    start_ms = self.below_since.pop(k, None)
                    if k in self.raised:
                        self.raised.discard(k)
                        since = dt.datetime.fromtimestamp((start_ms or b.ts_ms) / 1000, dt.UTC)
                        events.append(AlertEvent("cleared", grouping, key, ts, r, target, since))
        return events


def write_alert_events(conn: psycopg.Connection, events: Iterable[AlertEvent]) -> None:
    with conn.transaction():
        for e in events:
            name = "the city" if e.grouping == "city" else f"district {e.key}"
            if e.kind == "raised":
                conn.execute(
                    "INSERT INTO operator_alerts (kind, grouping, key, raised_at, rate, target, message) "
                    "VALUES ('below_target', %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    (
                        e.grouping,
                        e.key,
                        e.ts,
                        e.rate,
                        e.target,
                        f"lighting rate of {name} at {e.rate:.2f} %, below its {e.target:.0f} % target "
                        f"since {e.since:%Y-%m-%d %H:%M} UTC",
                    ),
                )
            else:
                conn.execute(
                    "UPDATE operator_alerts SET cleared_at = %s WHERE kind = 'below_target' AND grouping = %s "
                    "AND key = %s AND cleared_at IS NULL",
                    (e.ts, e.grouping, e.key),
                )


# -- the retained ops message ----------------------------------------------------------------------------


def ops_message(b: Breakdown) -> bytes:
    """`sl/ops/lighting-rate`: the latest city and district rates (retained, for displays)."""
    city = b.city.rows()[0]
    body = {
        "ts": b.ts_ms,
        "city": {k: city[k] for k in ("due", "lit", "dark", "unknown", "day_burning", "rate", "target")},
        "integrity": b.integrity,
        "districts": [
            {k: r[k] for k in ("key", "due", "lit", "dark", "unknown", "rate", "target", "meets_target")}
            for r in b.district.rows()
        ],
    }
    return json.dumps(body, separators=(",", ":")).encode()


# -- history ---------------------------------------------------------------------------------------------


def history(
    conn: psycopg.Connection, grouping: str, key: str, start: dt.datetime, end: dt.datetime, bucket_s: int
) -> list[dict[str, Any]]:
    """Samples of one group in [start, end), summed into buckets of `bucket_s` seconds (rate from the sums)."""
    rows = conn.execute(
        "SELECT date_bin(make_interval(secs => %s), ts, timestamptz '2000-01-01') AS bucket, "
        "sum(due), sum(lit), sum(dark), sum(unknown), sum(day_burning), min(rate), count(*), "
        "avg(integrity) "
        "FROM lighting_rate_samples WHERE grouping = %s AND key = %s AND ts >= %s AND ts < %s "
        "GROUP BY bucket ORDER BY bucket",
        (bucket_s, grouping, key, start, end),
    ).fetchall()
    out = []
    for bucket, due, lit, dark, unknown, burning, min_rate, n, integrity in rows:
        rate = rate_of([due], [lit])[0]
        out.append(
            {
                "ts": bucket,
                "samples": int(n),
                # Lamps: the mean over the bucket's samples, to the nearest lamp; the rate is lit over due summed
                # across them (exact, not from the rounded means).
                "due": round(due / n),
                "lit": round(lit / n),
                "dark": round(dark / n),
                "unknown": round(unknown / n),
                "day_burning": round(burning / n),
                "rate": None if np.isnan(rate) else float(rate),
                "min_rate": None if min_rate is None else float(min_rate),
                "integrity": None if integrity is None else round(float(integrity), 2),
            }
        )
    return out


# -- the nightly report ----------------------------------------------------------------------------------


def night_of(instant: dt.datetime, tz: ZoneInfo) -> dt.date:
    """The night an instant belongs to: nights run from local noon to the next local noon."""
    return (instant.astimezone(tz) - dt.timedelta(hours=12)).date()


def _inspection_instant(night: dt.date, tz: ZoneInfo, inspection: dt.time) -> dt.datetime:
    day = night if inspection.hour >= 12 else night + dt.timedelta(days=1)
    return dt.datetime.combine(day, inspection, tz)


def summarise_night(
    samples: Sequence[tuple[dt.datetime, int, float | None]], inspection_at: dt.datetime, *, step_s: float = 60.0
) -> dict[str, Any]:
    """min, time-weighted mean over the lighting hours, and the rate at the inspection time, of one group.

    `samples` are (ts, due, rate) in time order. Each sample with something due weighs the time until the next
    sample, at most two sampling steps (a gap in sampling does not weigh more than it saw).
    """
    lit_samples = [(t, r) for t, due, r in samples if due > 0 and r is not None]
    if not lit_samples:
        return {"min": None, "mean": None, "at_inspection": None, "lighting_hours": 0.0}
    total = weighted = 0.0
    for i, (t, r) in enumerate(lit_samples):
        nxt = lit_samples[i + 1][0] if i + 1 < len(lit_samples) else t + dt.timedelta(seconds=step_s)
        w = min((nxt - t).total_seconds(), 2 * step_s)
        total += w
        weighted += w * r
    at = [r for t, due, r in samples if t <= inspection_at and (inspection_at - t).total_seconds() <= 10 * step_s]
    return {
        "min": min(r for _, r in lit_samples),
        "mean": round(weighted / total, 2),
        "at_inspection": at[-1] if at else None,
        "lighting_hours": round(total / 3600, 2),
    }


def newest_night(conn: psycopg.Connection, timezone: str = "Asia/Shanghai") -> dt.date | None:
    """The local date on which the newest sampled night began (nights run from noon to noon); None before any."""
    row = conn.execute("SELECT max(ts) FROM lighting_rate_samples WHERE grouping = 'city'").fetchone()
    if row is None or row[0] is None:
        return None
    return night_of(row[0], ZoneInfo(timezone))


def nightly_report(
    conn: psycopg.Connection,
    night: dt.date,
    *,
    index: FleetIndex,
    timezone: str = "Asia/Shanghai",
    inspection: dt.time = dt.time(22, 0),
    step_s: float = 60.0,
) -> dict[str, Any] | None:
    """The report of the night beginning on local date `night`, from the stored samples; None without any."""
    tz = ZoneInfo(timezone)
    start, end = night_bounds(night, tz)
    inspection_at = _inspection_instant(night, tz, inspection)
    rows = conn.execute(
        "SELECT grouping, key, ts, due, rate, integrity FROM lighting_rate_samples "
        "WHERE ts >= %s AND ts < %s ORDER BY grouping, key, ts",
        (start, end),
    ).fetchall()
    if not rows:
        return None
    series: dict[tuple[str, str], list[tuple[dt.datetime, int, float | None]]] = {}
    at_inspection: dict[tuple[str, str], float | None] = {}
    for grouping, key, ts, due, rate, integrity in rows:
        r = None if rate is None else float(rate)
        series.setdefault((grouping, key), []).append((ts, due, r))
        if ts <= inspection_at and (inspection_at - ts).total_seconds() <= 10 * step_s:
            at_inspection[(grouping, key)] = None if integrity is None else float(integrity)

    def groups(grouping: str) -> list[dict[str, Any]]:
        return [
            {"key": key, **summarise_night(s, inspection_at, step_s=step_s)}
            for (g, key), s in sorted(series.items())
            if g == grouping
        ]

    # Per-road verdicts from the road samples at the inspection time, by the same rule as the live figures.
    road_rows = conn.execute(
        "SELECT DISTINCT ON (key) key, lit, dark, unknown, day_burning FROM lighting_rate_samples "
        "WHERE grouping = 'road' AND ts <= %s AND ts > %s ORDER BY key, ts DESC",
        (inspection_at, inspection_at - dt.timedelta(seconds=10 * step_s)),
    ).fetchall()
    by_road = np.zeros((len(index.road_keys), 6), dtype=np.int64)
    sampled = np.zeros(len(index.road_keys), dtype=np.bool_)
    slot = {k: i for i, k in enumerate(index.road_keys)}
    for key, lit, dark, unknown, burning in road_rows:
        if key in slot:
            i = slot[key]
            sampled[i] = True
            by_road[i, [LIT, DARK, UNKNOWN, DAY_BURNING]] = (lit, dark, unknown, burning)
    target = np.array([class_target(ROAD_CLASSES[c]) for c in index.road_class])
    all_verdicts = road_verdicts(index, Counts(index.road_keys, by_road, target)).rows()
    verdicts = [v for i, v in enumerate(all_verdicts) if sampled[i] and v["passes"] is not None]
    city_at = at_inspection.get(("city", "all"))
    return {
        "night": night.isoformat(),
        "timezone": timezone,
        "inspection_time": inspection.strftime("%H:%M"),
        "city": groups("city")[0] if ("city", "all") in series else None,
        "districts": groups("district"),
        "road_classes": groups("road_class"),
        "roads_assessed": len(verdicts),
        "roads_passing": sum(1 for v in verdicts if v["passes"]),
        "road_verdicts": verdicts,
        "integrity_at_inspection": city_at,
    }


def store_nightly(conn: psycopg.Connection, night: dt.date, body: dict[str, Any]) -> None:
    conn.execute(
        "INSERT INTO nightly_reports (night, body) VALUES (%s, %s) "
        "ON CONFLICT (night) DO UPDATE SET body = EXCLUDED.body, computed_at = now()",
        (night, Jsonb(body)),
    )


def nightly_csv(report: dict[str, Any]) -> str:
    """The report as CSV: one row per district, road class and road verdict."""
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(
        [
            "section",
            "key",
            "min",
            "mean",
            "at_inspection",
            "lighting_hours",
            "road_class",
            "lamps",
            "due",
            "dark",
            "rule",
            "limit",
            "passes",
        ]
    )
    if report.get("city"):
        c = report["city"]
        w.writerow(["city", "all", c["min"], c["mean"], c["at_inspection"], c["lighting_hours"]] + [""] * 7)
    for section, items in (("district", report["districts"]), ("road_class", report["road_classes"])):
        for g in items:
            w.writerow([section, g["key"], g["min"], g["mean"], g["at_inspection"], g["lighting_hours"]] + [""] * 7)
    for v in report["road_verdicts"]:
        w.writerow(
            [
                "road",
                v["road"],
                "",
                "",
                v["rate"],
                "",
                v["road_class"],
                v["lamps"],
                v["due"],
                v["dark"],
                v["rule"],
                v["limit"],
                v["passes"],
            ]
        )
    w.writerow(["integrity", "all", "", "", report["integrity_at_inspection"]] + [""] * 8)
    return out.getvalue()


def stored_report(conn: psycopg.Connection, night: dt.date) -> dict[str, Any] | None:
    """The nightly report stored for `night` (made after its dawn at the usual inspection time), or None."""
    row = conn.execute("SELECT body FROM nightly_reports WHERE night = %s", (night,)).fetchone()
    return None if row is None else dict(row[0])


def stored_reports_between(conn: psycopg.Connection, first: dt.date, last: dt.date) -> list[tuple[dt.date, Any]]:
    """(night, report) of every stored night from `first` to `last`, in order."""
    rows = conn.execute(
        "SELECT night, body FROM nightly_reports WHERE night BETWEEN %s AND %s ORDER BY night", (first, last)
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


async def list_nights(conn: psycopg.AsyncConnection[Any], limit: int, offset: int) -> tuple[int, list[dict[str, Any]]]:
    """(how many nights are stored, a page of them newest first, in brief: the city's figures, roads assessed
    and passing, the facility integrity at inspection)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT count(*) AS n FROM nightly_reports")
        total = await cur.fetchone()
        await cur.execute(
            """SELECT night, body->'city' AS city, (body->>'roads_assessed')::int AS roads_assessed,
                      (body->>'roads_passing')::int AS roads_passing,
                      (body->>'integrity_at_inspection')::float AS integrity_at_inspection
               FROM nightly_reports ORDER BY night DESC LIMIT %s OFFSET %s""",
            (limit, offset),
        )
        rows = await cur.fetchall()
    return (int(total["n"]) if total else 0), rows


async def list_alerts(
    conn: psycopg.AsyncConnection[Any], *, open_only: bool, limit: int, offset: int
) -> tuple[int, list[dict[str, Any]]]:
    """(how many operator alerts, a page of them newest first); `open_only`: those not cleared yet."""
    where = " WHERE cleared_at IS NULL" if open_only else ""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT count(*) AS n FROM operator_alerts{where}")
        total = await cur.fetchone()
        await cur.execute(
            "SELECT id, kind, grouping, key, raised_at, cleared_at, rate, target, message "
            f"FROM operator_alerts{where} ORDER BY raised_at DESC, id DESC LIMIT %s OFFSET %s",
            (limit, offset),
        )
        rows = await cur.fetchall()
    items = [{**r, "rate": None if r["rate"] is None else float(r["rate"]), "target": float(r["target"])} for r in rows]
    return (int(total["n"]) if total else 0), items
