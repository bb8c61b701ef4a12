"""A night's energy for every lamp and cabinet, computed from the stored readings and kept as one row a night.

A night runs from local noon to the next noon, as the nightly lighting report's. For each lamp: the energy its own
counter measured, the seconds it burned and its level-weighted seconds, and flags (energy.meters). For each
cabinet: its meter's energy, flags, and the energy by quarter-hour (what time-of-use prices need). Lamps without a
counter of their own get their share of their cabinet meter's remainder (the meter less its metered lamps),
weighted by rated power × level × time (`ALLOCATED`); where the cabinet has no meter either, that product itself
(`ESTIMATED`), and the cabinet's quarter-hours follow the metered cabinets' (the city's lamps keep much the same
hours). The leading gateway stores each night after it ends (`energy_nights`); the night still going on is
computed when asked.

PostgreSQL packs each device's readings of the window into one bytea (fixed-width binary fields), which numpy reads
in one step: the rows never cross to Python one by one, and the work is PostgreSQL's (its index scan) more than
this process's.
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass
from typing import Final
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import psycopg
import zstandard

from energy.errors import EnergyError
from energy.meters import ALLOCATED, ESTIMATED, NO_METER, MeterTotals, integrate
from energy.tariff import Tariff
from inventory.index import FleetIndex
from kernel.clock import night_bounds
from kernel.database import empty_tables
from telemetry.series import any_heard, cabinet_series, days_packed, lamp_series, pg_ms

__all__ = [
    "BUCKET_MS",
    "GROUPINGS",
    "NightEnergy",
    "NoReadings",
    "Pricing",
    "compute_night",
    "figures",
    "forget_inventory",
    "group_rows",
    "load_nights",
    "night_complete",
    "store_night",
]

BUCKET_MS: Final = 15 * 60_000  # time-of-use prices change on the quarter-hour at the finest
_CABINET_MAX_GAP_MS: Final = 45 * 60_000
_LAMP_CHUNK: Final = 5_000  # lamps read per COPY: about 50 MB of readings at a time, at any city size


@dataclass(frozen=True)
class NightEnergy:
    """One night, arrays in inventory order (FleetIndex slots for lamps, cabinet slots for cabinets)."""

    night: dt.date
    start_ms: int
    end_ms: int
    complete: bool  # the night had ended when it was computed
    lamp_wh: npt.NDArray[np.float64]  # the lamp's energy: its own counter, or allocated, or estimated (flags)
    lamp_on_s: npt.NDArray[np.float64]
    lamp_flags: npt.NDArray[np.uint8]
    cabinet_wh: npt.NDArray[np.float64]  # the cabinet meter's, or its lamps' sum where it has no meter
    cabinet_flags: npt.NDArray[np.uint8]
    cabinet_profile: npt.NDArray[np.float64]  # (cabinets, quarter-hours): where the cabinet's energy went

    _FIELDS = ("lamp_wh", "lamp_on_s", "lamp_flags", "cabinet_wh", "cabinet_flags", "cabinet_profile")

    def pack(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, **{f: getattr(self, f) for f in self._FIELDS})
        return zstandard.ZstdCompressor(level=3).compress(buf.getvalue())

    @classmethod
    def unpack(cls, night: dt.date, start_ms: int, end_ms: int, complete: bool, data: bytes) -> NightEnergy:
        with np.load(io.BytesIO(zstandard.ZstdDecompressor().decompress(data))) as z:
            arrays = {f: z[f] for f in cls._FIELDS}
        return cls(night, start_ms, end_ms, complete, **arrays)


def _window(start: dt.datetime, end: dt.datetime, pad_ms: int) -> tuple[dt.datetime, dt.datetime]:
    pad = dt.timedelta(milliseconds=pad_ms)
    return start - pad, end + pad


class NoReadings(EnergyError):
    """No device reported during the night (it came before the city's devices did, or ingest was away all
    night): the night has no figures, which is not the same as 0 kWh."""

    kind = "not_found"


def _check_heard(conn: psycopg.Connection, night: dt.date, lo: dt.datetime, hi: dt.datetime) -> None:
    if not any_heard(conn, lo, hi):
        raise NoReadings(f"no lamp or cabinet reported during the night of {night}: it has no energy figures")


def _check_raw(conn: psycopg.Connection, start: dt.datetime, end: dt.datetime) -> None:
    day0, day1 = start.astimezone(dt.UTC).date(), end.astimezone(dt.UTC).date()
    if days_packed(conn, day0, day1):
        raise EnergyError(
            f"the readings of {day0}–{day1} are already packed into the compact history; a night's energy is "
            "computed from raw readings, by the leading gateway when the night ends"
        )


def _lamp_totals(
    conn: psycopg.Connection, index: FleetIndex, start_ms: int, end_ms: int, lo: dt.datetime, hi: dt.datetime
) -> MeterTotals:
    n = index.n
    out = [np.zeros(n) for _ in range(4)]
    flags = np.zeros(n, dtype=np.uint8)
    gap = index.interval_s.astype(np.int64) * 3000  # comm_loss: silent for 3 reporting intervals
    nos = index.lamp_no.astype(np.int64)
    order = np.argsort(nos)
    for first in range(0, n, _LAMP_CHUNK):
        slots = order[first : first + _LAMP_CHUNK]
        a, b = int(nos[slots[0]]), int(nos[slots[-1]])
        lamp_nos, rows = lamp_series(conn, a, b, lo, hi)
        local = np.searchsorted(nos[slots], lamp_nos)
        counter = rows["wh"].astype(np.float64)
        counter[rows["wh"] < 0] = np.nan
        for slot_gap in np.unique(gap[slots]):  # usually one interval for every lamp
            pick = gap[slots][local] == slot_gap
            dim = rows["dim"][pick].astype(np.float64)
            t = integrate(
                local[pick], pg_ms(rows["ts"][pick]), counter[pick], rows["on"][pick], dim,
                len(slots), start_ms, end_ms, max_gap_ms=int(slot_gap),
            )  # fmt: skip
            mine = slots[gap[slots] == slot_gap]
            idx = np.flatnonzero(gap[slots] == slot_gap)
            for arr, part in zip(out, (t.energy_wh, t.on_s, t.dim_s, t.covered_s), strict=True):
                arr[mine] = part[idx]
            flags[mine] = t.flags[idx]
    return MeterTotals(out[0], out[1], out[2], out[3], flags, None)


def _cabinet_totals(
    conn: psycopg.Connection, index: FleetIndex, start_ms: int, end_ms: int, lo: dt.datetime, hi: dt.datetime
) -> MeterTotals:
    assert index.cabinet_no is not None, "the fleet index lacks cabinet numbers"
    nos = index.cabinet_no.astype(np.int64)
    cab_nos, rows = cabinet_series(conn, lo, hi)
    order = np.argsort(nos)
    pos = np.searchsorted(nos[order], cab_nos)
    known = (pos < len(nos)) & (nos[order][np.minimum(pos, len(nos) - 1)] == cab_nos)
    slot = order[np.minimum(pos, len(nos) - 1)][known]
    counter = rows["wh"][known].astype(np.float64)
    counter[rows["wh"][known] < 0] = np.nan
    ones = np.ones(len(slot), dtype=np.bool_)
    resort = np.lexsort((pg_ms(rows["ts"][known]), slot))
    return integrate(
        slot[resort], pg_ms(rows["ts"][known])[resort], counter[resort], ones, np.full(len(slot), 100.0),
        len(nos), start_ms, end_ms, max_gap_ms=_CABINET_MAX_GAP_MS, bucket_ms=BUCKET_MS,
    )  # fmt: skip


def compute_night(
    conn: psycopg.Connection, index: FleetIndex, night: dt.date, tz: ZoneInfo, now_ms: int
) -> NightEnergy:
    """The night's energy from the raw readings (up to `now_ms` when it is still going on)."""
    start, end = night_bounds(night, tz)
    start_ms, end_ms = int(start.timestamp() * 1000), int(end.timestamp() * 1000)
    complete = now_ms >= end_ms
    end_ms_used = min(end_ms, max(now_ms, start_ms))
    pad = int(index.interval_s.max(initial=900)) * 3000
    lo, hi = _window(start, dt.datetime.fromtimestamp(end_ms_used / 1000, dt.UTC), max(pad, _CABINET_MAX_GAP_MS))
    _check_raw(conn, lo, hi)
    _check_heard(conn, night, lo, hi)
    lamps = _lamp_totals(conn, index, start_ms, end_ms_used, lo, hi)
    cabinets = _cabinet_totals(conn, index, start_ms, end_ms_used, lo, hi)
    assert cabinets.profile_wh is not None
    lamp_wh = lamps.energy_wh.copy()
    lamp_flags = lamps.flags.copy()
    cab_wh = cabinets.energy_wh.copy()
    cab_flags = cabinets.flags.copy()
    profile = cabinets.profile_wh
    n_cab = len(index.cabinet_ids)
    cab_of = index.lamp_cabinet.astype(np.int64)
    expected = index.rated_w.astype(np.float64) * lamps.dim_s / 3600  # Wh at rated power × level
    unmetered = (lamps.flags & NO_METER) != 0
    cab_metered = (cabinets.flags & NO_METER) == 0
    metered_sum = np.bincount(cab_of[~unmetered], weights=lamp_wh[~unmetered], minlength=n_cab)
    weight = np.bincount(cab_of[unmetered], weights=expected[unmetered], minlength=n_cab)
    remainder = np.clip(cab_wh - metered_sum, 0, None)
    # Lamps without a counter: their share of the cabinet meter's remainder, or, without a meter, the estimate.
    share = np.where(weight[cab_of] > 0, expected / np.where(weight[cab_of] > 0, weight[cab_of], 1), 0.0)
    allocate = unmetered & cab_metered[cab_of]
    lamp_wh[allocate] = remainder[cab_of[allocate]] * share[allocate]
    lamp_flags[allocate] |= np.uint8(ALLOCATED)
    estimate = unmetered & ~cab_metered[cab_of]
    lamp_wh[estimate] = expected[estimate]
    lamp_flags[estimate] |= np.uint8(ESTIMATED)
    # A cabinet without a meter: its lamps' sum, spread over the night as the metered cabinets' energy went (the
    # city's lamps keep much the same hours), or evenly when no cabinet has a meter.
    no_meter = ~cab_metered
    lamps_sum = np.bincount(cab_of, weights=lamp_wh, minlength=n_cab)
    cab_wh[no_meter] = lamps_sum[no_meter]
    city = profile[cab_metered].sum(axis=0)
    shape = city / city.sum() if city.sum() > 0 else np.full(profile.shape[1], 1 / profile.shape[1])
    profile[no_meter] = lamps_sum[no_meter, None] * shape[None, :]
    cab_flags[no_meter] |= np.uint8(ESTIMATED)
    return NightEnergy(night, start_ms, end_ms, complete, lamp_wh, lamps.on_s, lamp_flags, cab_wh, cab_flags, profile)


def night_complete(conn: psycopg.Connection, night: dt.date) -> bool:
    """Whether the energy of `night` is stored, and was computed after the night ended."""
    row = conn.execute("SELECT complete FROM energy_nights WHERE night = %s", (night,)).fetchone()
    return row is not None and bool(row[0])


def store_night(conn: psycopg.Connection, ne: NightEnergy) -> None:
    conn.execute(
        """INSERT INTO energy_nights (night, start_at, end_at, complete, lamps, cabinets, data, computed_at)
           VALUES (%s, %s, %s, %s, %s, %s, %s, now())
           ON CONFLICT (night) DO UPDATE SET start_at = excluded.start_at, end_at = excluded.end_at,
               complete = excluded.complete, lamps = excluded.lamps, cabinets = excluded.cabinets,
               data = excluded.data, computed_at = excluded.computed_at""",
        (
            ne.night,
            dt.datetime.fromtimestamp(ne.start_ms / 1000, dt.UTC),
            dt.datetime.fromtimestamp(ne.end_ms / 1000, dt.UTC),
            ne.complete,
            len(ne.lamp_wh),
            len(ne.cabinet_wh),
            ne.pack(),
        ),
    )


def load_nights(conn: psycopg.Connection, first: dt.date, last: dt.date) -> dict[dt.date, NightEnergy]:
    """The stored nights from `first` to `last` (both included)."""
    rows = conn.execute(
        "SELECT night, start_at, end_at, complete, data FROM energy_nights "
        "WHERE night BETWEEN %s AND %s ORDER BY night",
        (first, last),
    ).fetchall()
    return {
        r[0]: NightEnergy.unpack(r[0], int(r[1].timestamp() * 1000), int(r[2].timestamp() * 1000), r[3], bytes(r[4]))
        for r in rows
    }


# -- figures by group and period ---------------------------------------------------------------------------------

GROUPINGS: Final = ("city", "district", "road", "cabinet", "lamp")
_FLAG_COUNTS: Final = (("reset", 1), ("gap", 2), ("partial", 4), ("allocated", 32), ("estimated", 16))


@dataclass(frozen=True)
class Pricing:
    tariff: Tariff
    co2_kg_per_kwh: float
    currency: str
    tz: ZoneInfo


def _groups(index: FleetIndex, group_by: str) -> tuple[npt.NDArray[np.int64], list[str]]:
    """Each lamp's group and the groups' keys."""
    if group_by == "city":
        return np.zeros(index.n, dtype=np.int64), ["all"]
    if group_by == "district":
        return index.lamp_district.astype(np.int64), list(index.districts)
    if group_by == "road":
        return index.lamp_road.astype(np.int64), [str(r) for r in index.road_ids.tolist()]
    if group_by == "cabinet":
        return index.lamp_cabinet.astype(np.int64), list(index.cabinet_ids)
    if group_by == "lamp":
        return np.arange(index.n, dtype=np.int64), list(index.lamp_id)
    raise EnergyError(f"group_by must be one of {', '.join(GROUPINGS)}, got {group_by!r}", "group_by")


def figures(
    nights: list[NightEnergy], index: FleetIndex, group_by: str, pricing: Pricing
) -> dict[str, npt.NDArray[np.float64]]:
    """Summed over `nights`, per group: energy (kWh), the same hours at full rated power (kWh), cost, CO2 (kg),
    the cabinet meters' own figure (cabinet and wider groups), lamps and the lamps flagged by kind."""
    group, keys = _groups(index, group_by)
    g = len(keys)
    out = {k: np.zeros(g) for k in ("energy_kwh", "baseline_kwh", "cost", "co2_kg", "meter_kwh", "burning_h")}
    flagged = {name: np.zeros(g) for name, _ in _FLAG_COUNTS}
    cab_of = index.lamp_cabinet.astype(np.int64)
    rated = index.rated_w.astype(np.float64)
    for ne in nights:
        if len(ne.lamp_wh) != index.n or len(ne.cabinet_wh) != len(index.cabinet_ids):
            raise EnergyError(f"the energy of {ne.night} was computed for another inventory; recompute it")
        buckets = ne.cabinet_profile.shape[1]
        prices = pricing.tariff.bucket_prices(ne.start_ms, buckets, BUCKET_MS, pricing.tz)
        wh = ne.cabinet_profile.sum(axis=1)
        # Each cabinet's mean price over the night, weighted by when its energy went; its lamps pay that.
        mean_price = np.where(wh > 0, ne.cabinet_profile @ prices / np.where(wh > 0, wh, 1), prices.mean())
        kwh = ne.lamp_wh / 1000
        out["energy_kwh"] += np.bincount(group, weights=kwh, minlength=g)
        out["baseline_kwh"] += np.bincount(group, weights=rated * ne.lamp_on_s / 3.6e6, minlength=g)
        out["burning_h"] += np.bincount(group, weights=ne.lamp_on_s / 3600, minlength=g)
        out["cost"] += np.bincount(group, weights=kwh * mean_price[cab_of], minlength=g)
        out["co2_kg"] += np.bincount(group, weights=kwh * pricing.co2_kg_per_kwh, minlength=g)
        for name, bit in _FLAG_COUNTS:
            flagged[name] += np.bincount(group, weights=(ne.lamp_flags & bit) != 0, minlength=g)
        if group_by in ("cabinet", "district", "city"):
            metered = (ne.cabinet_flags & NO_METER) == 0
            cab_group = {
                "cabinet": np.arange(len(index.cabinet_ids)),
                "district": index.road_district[index.cabinet_road].astype(np.int64),
                "city": np.zeros(len(index.cabinet_ids), dtype=np.int64),
            }[group_by]
            out["meter_kwh"] += np.bincount(cab_group, weights=np.where(metered, ne.cabinet_wh, 0) / 1000, minlength=g)
    out["lamps"] = np.bincount(group, minlength=g).astype(np.float64)
    return {**out, **{f"flag_{k}": v for k, v in flagged.items()}}


def group_rows(
    nights: list[NightEnergy], index: FleetIndex, group_by: str, pricing: Pricing
) -> list[dict[str, object]]:
    """JSON-ready rows, one per group, for `nights` together."""
    f = figures(nights, index, group_by, pricing)
    _, keys = _groups(index, group_by)
    out = []
    for i, key in enumerate(keys):
        energy, base = float(f["energy_kwh"][i]), float(f["baseline_kwh"][i])
        row: dict[str, object] = {
            "key": key,
            "lamps": int(f["lamps"][i]),
            "energy_kwh": round(energy, 3),
            "full_power_kwh": round(base, 3),
            "saving_kwh": round(base - energy, 3),
            "saving_pct": round((base - energy) / base * 100, 2) if base > 0 else None,
            "burning_h": round(float(f["burning_h"][i]), 2),
            "cost": round(float(f["cost"][i]), 2),
            "currency": pricing.currency,
            "co2_kg": round(float(f["co2_kg"][i]), 3),
            "flagged": {name: int(f[f"flag_{name}"][i]) for name, _ in _FLAG_COUNTS},
        }
        if group_by in ("cabinet", "district", "city"):
            row["cabinet_meters_kwh"] = round(float(f["meter_kwh"][i]), 3)
        out.append(row)
    return out


def forget_inventory(conn: psycopg.Connection) -> dict[str, int]:
    """Empty the nights' energy: each night's arrays are indexed by the inventory's lamps and cabinets."""
    return empty_tables(conn, ("energy_nights",))
