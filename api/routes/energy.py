"""Energy and savings by night or month, per lamp, road, cabinet, district or the city: what the meters measured,
what the same burning hours would have used at full rated power, cost at the tariff and CO2 at the grid factor."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import time
from typing import Annotated, Any, Literal

import numpy as np
import psycopg
from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response

from api.deps import JSON_OR_CSV, ClockDep, EngineDep, Offset, SyncPoolDep, Viewer, filter_param, in_thread, limit_param
from api.errors import ApiError
from api.jsonsafe import FiniteJSONResponse
from energy.errors import EnergyError
from energy.nights import NightEnergy, Pricing, compute_night, group_rows, load_nights, store_night
from inventory.index import FleetIndex
from lighting.sampling import night_of

router = APIRouter(prefix="/api/v1/energy", tags=["energy"])

_TONIGHT_EVERY_S = 300.0  # the night still going on is computed again at most this often
_ON_DEMAND_DAYS = 2  # a finished night not stored yet (the leader computes each at noon) is computed if this recent
_MAX_NIGHTS = 400

Grouping = Literal["city", "district", "road", "cabinet", "lamp"]
_CSV_FIELDS = (
    "period", "key", "lamps", "energy_kwh", "full_power_kwh", "saving_kwh", "saving_pct", "burning_h", "cost",
    "currency", "co2_kg", "cabinet_meters_kwh", "nights", "flagged_reset", "flagged_gap", "flagged_partial",
    "flagged_allocated", "flagged_estimated",
)  # fmt: skip


async def nights_between(
    request: Request, pool: Any, index: FleetIndex, first: dt.date, last: dt.date, now: dt.datetime
) -> tuple[dict[dt.date, NightEnergy], list[dt.date]]:
    """The nights first..last that have figures (stored, or computed now when recent), and those that have none."""
    pricing: Pricing = request.app.state.pricing
    tonight = night_of(now, pricing.tz)
    now_ms = int(now.timestamp() * 1000)
    stored = await in_thread(pool, lambda conn: load_nights(conn, first, min(last, tonight)))
    out: dict[dt.date, NightEnergy] = {}
    missing: list[dt.date] = []
    night = first
    while night <= min(last, tonight):
        have = stored.get(night)
        if have is not None and (have.complete or (night == tonight and _fresh(request, night))):
            out[night] = have
        elif (tonight - night).days <= _ON_DEMAND_DAYS:
            try:
                out[night] = await _compute(request, pool, index, night, now_ms)
            except EnergyError:
                missing.append(night)
        else:
            missing.append(night)
        night += dt.timedelta(days=1)
    return out, missing


def _fresh(request: Request, night: dt.date) -> bool:
    stamp = getattr(request.app.state, "energy_computed", {}).get(night)
    return stamp is not None and time.monotonic() - stamp < _TONIGHT_EVERY_S


_locks: dict[int, asyncio.Lock] = {}


async def _compute(request: Request, pool: Any, index: FleetIndex, night: dt.date, now_ms: int) -> NightEnergy:
    """Compute (and store) one night, one computation at a time per app."""
    lock = _locks.setdefault(id(request.app), asyncio.Lock())
    async with lock:
        pricing: Pricing = request.app.state.pricing

        def run(conn: psycopg.Connection) -> NightEnergy:
            ne = compute_night(conn, index, night, pricing.tz, now_ms)
            store_night(conn, ne)
            conn.commit()
            return ne

        ne: NightEnergy = await in_thread(pool, run)
        if not hasattr(request.app.state, "energy_computed"):
            request.app.state.energy_computed = {}
        request.app.state.energy_computed[night] = time.monotonic()
        return ne


def _periods(nights: dict[dt.date, NightEnergy], period: str) -> dict[str, list[NightEnergy]]:
    out: dict[str, list[NightEnergy]] = {}
    for night, ne in sorted(nights.items()):
        out.setdefault(night.isoformat() if period == "night" else night.strftime("%Y-%m"), []).append(ne)
    return out


def _csv(items: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(_CSV_FIELDS)
    for r in items:
        flat = {**r, **{f"flagged_{k}": v for k, v in r["flagged"].items()}}
        w.writerow(["" if flat.get(f) is None else flat.get(f) for f in _CSV_FIELDS])
    return buf.getvalue()


@router.get("", response_model=None, responses=JSON_OR_CSV)
async def energy(
    user: Viewer,
    request: Request,
    pool: SyncPoolDep,
    engine: EngineDep,
    clock: ClockDep,
    group_by: Annotated[Grouping, filter_param("the groups: one row each per period", "district", "city")] = "city",
    period: Annotated[
        Literal["night", "month"], filter_param("a row per night (noon to noon, local) or per month", "month")
    ] = "night",
    from_: Annotated[
        dt.date | None,
        filter_param("the first night (its local date); default: a week before `to`", "2026-11-01", alias="from"),
    ] = None,
    to: Annotated[dt.date | None, filter_param("the last night; default: tonight", "2026-11-30")] = None,
    district: Annotated[str | None, filter_param("only this district's lamps, roads or cabinets", "cd")] = None,
    format: Annotated[Literal["json", "csv"], filter_param("json, or csv for a spreadsheet", "csv")] = "json",
    limit: Annotated[int, limit_param(10_000)] = 1000,
    offset: Offset = 0,
) -> Response | dict[str, Any]:
    """Role: viewer. Per period and group: `energy_kwh` (the lamps' own meters; a lamp without one gets its share
    of its cabinet meter, or without that an estimate from rated power × level × time), `full_power_kwh` (the same
    burning hours at full rated power), `saving_kwh` and `saving_pct` (what dimming saved), `cost` at the tariff
    (time-of-use prices by when each cabinet's energy went), `co2_kg` at the grid factor, and for cabinets and
    wider the cabinet meters' own `cabinet_meters_kwh` (what is billed). `flagged` counts the lamps whose figure
    has a counter reset, a gap in their reports, does not cover the whole period, or is allocated or estimated.
    Nights without figures are listed in `missing`; the night still going on counts up to now."""
    pricing: Pricing = request.app.state.pricing
    now = clock.now()
    tonight = night_of(now, pricing.tz)
    last = to or tonight
    start = from_ or last - dt.timedelta(days=6)
    if period == "month":
        start, last = (
            start.replace(day=1),
            (last.replace(day=28) + dt.timedelta(days=4)).replace(day=1) - dt.timedelta(days=1),
        )
    if start > last:
        raise ApiError(422, "invalid", f"from ({start}) is after to ({last})", "from")
    if (last - start).days >= _MAX_NIGHTS:
        raise ApiError(422, "invalid", f"at most {_MAX_NIGHTS} nights at once, asked {(last - start).days + 1}", "to")
    index = engine.index
    if district is not None and district not in index.districts:
        raise ApiError(404, "not_found", f"district {district!r} is not in the inventory", "district")
    nights, missing = await nights_between(request, pool, index, start, last, now)
    items: list[dict[str, Any]] = []
    keep: set[str] | None = None
    if district is not None and group_by != "city":
        d = index.districts.index(district)
        keep = {
            "district": lambda: {district},
            "road": lambda: {str(x) for x in index.road_ids[index.road_district == d].tolist()},
            "cabinet": lambda: {
                index.cabinet_ids[i] for i in np.flatnonzero(index.road_district[index.cabinet_road] == d).tolist()
            },
            "lamp": lambda: {index.lamp_id[i] for i in np.flatnonzero(index.lamp_district == d).tolist()},
        }[group_by]()
    for label, group in _periods(nights, period).items():
        try:
            rows = group_rows(group, index, group_by, pricing)
        except EnergyError as exc:
            raise ApiError(409, "conflict", exc.message) from None
        for r in rows:
            if keep is None or r["key"] in keep:
                items.append({"period": label, **r, "nights": len(group)})
    page = items[offset : offset + limit]
    if format == "csv":
        return PlainTextResponse(
            _csv(page),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="energy-{group_by}-{start}-{last}.csv"'},
        )
    return FiniteJSONResponse(
        {
            "group_by": group_by,
            "period": period,
            "from": start.isoformat(),
            "to": last.isoformat(),
            "tariff": pricing.tariff.text,
            "currency": pricing.currency,
            "co2_kg_per_kwh": pricing.co2_kg_per_kwh,
            "missing": [m.isoformat() for m in missing],
            "items": page,
            "total": len(items),
            "limit": limit,
            "offset": offset,
        }
    )
