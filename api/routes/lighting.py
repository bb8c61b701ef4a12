"""The lighting rate (亮灯率): live figures per grouping, per-road verdicts, and the sampled history."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter

from api.deps import (
    ClockDep,
    EngineDep,
    Offset,
    SyncPoolDep,
    Viewer,
    filter_param,
    in_thread,
    limit_param,
    page,
    time_param,
)
from api.errors import ApiError
from lighting.rate import road_verdicts
from lighting.sampling import history

router = APIRouter(prefix="/api/v1/lighting-rate", tags=["lighting rate"])

Grouping = Literal["district", "road_class", "road", "cabinet"]
_CITY_FIELDS = ("due", "lit", "dark", "unknown", "day_burning", "rate", "target", "meets_target")


def _iso(ts_ms: int) -> str:
    return dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC).isoformat()


@router.get("")
async def lighting_rate(
    user: Viewer,
    engine: EngineDep,
    clock: ClockDep,
    group_by: Annotated[Grouping, filter_param("the groups listed beside the city's figures", "district", "road")] = (
        "district"
    ),
    district: Annotated[str | None, filter_param("one district's figures", "cd")] = None,
    limit: Annotated[int, limit_param(10000)] = 1000,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Role: viewer. The rate now for the city and each group: due, lit, dark, unknown (stale), day-burning,
    rate (null when nothing is due), target and whether it is met; plus the facility integrity rate. The
    groups are paged (`limit`, `offset`; `total` says how many) — roads and cabinets run to thousands. With
    `district`, the same for that district alone: `city` holds the district's figures, the groups are its road
    classes, roads or cabinets, and the integrity rate (city-wide) is left out."""
    b = engine.breakdown(clock.now_ms())
    if district is not None:
        districts = engine.index.districts
        if district not in districts:
            raise ApiError(404, "not_found", f"district {district!r} is not in the inventory", "district")
        b = b.within(engine.index, districts.index(district))
    city = b.city.rows()[0]
    groups = b.grouping(group_by).rows()
    return {
        "ts": _iso(b.ts_ms),
        "district": district,
        "city": {k: city[k] for k in _CITY_FIELDS},
        "integrity": {"rate": b.integrity, "target": 95.0},
        "group_by": group_by,
        "groups": groups[offset : offset + limit],
        "total": len(groups),
        "limit": limit,
        "offset": offset,
    }


@router.get("/roads")
async def road_assessment(
    user: Viewer,
    engine: EngineDep,
    clock: ClockDep,
    failing: Annotated[bool, filter_param("true: only the roads that fail", True)] = False,
    limit: Annotated[int, limit_param(10000)] = 1000,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Role: viewer. The inspectors' per-road verdicts now (200+ lamps by rate; shorter roads by a cap on dark
    lamps). `failing=true` lists only roads that fail."""
    b = engine.breakdown(clock.now_ms())
    rows = road_verdicts(engine.index, b.road).rows()
    if failing:
        rows = [r for r in rows if r["passes"] is False]
    return {"ts": _iso(b.ts_ms), **page(rows, limit, offset)}


_BUCKETS = {"1m": 60, "5m": 300, "10m": 600, "15m": 900, "30m": 1800, "1h": 3600, "1d": 86400}


@router.get("/history")
async def rate_history(
    user: Viewer,
    pool: SyncPoolDep,
    clock: ClockDep,
    from_: Annotated[dt.datetime | None, time_param("from this time (default: 24 hours before `to`)", "from")] = None,
    to: Annotated[dt.datetime | None, time_param("up to this time (default: now)")] = None,
    group_by: Annotated[
        Literal["city", "district", "road_class", "road", "cabinet"],
        filter_param("which kind of group `key` names", "city", "district"),
    ] = "city",
    key: Annotated[
        str | None,
        filter_param(
            "the group: a district code, a road class (expressway, arterial, secondary, branch), a road id or a "
            "cabinet id; required unless group_by=city",
            "cd",
            "arterial",
        ),
    ] = None,
    bucket: Annotated[str, filter_param("bucket width: 1m, 5m, 10m, 15m, 30m, 1h or 1d", "1m", "1h")] = "1m",
) -> dict[str, Any]:
    """Role: viewer. The sampled series of one group between `from` and `to` (default: the last 24 hours),
    in buckets of 1m, 5m, 10m, 15m, 30m, 1h or 1d (roads and cabinets are sampled every 10 minutes)."""
    if bucket not in _BUCKETS:
        raise ApiError(422, "invalid", f"bucket must be one of {', '.join(_BUCKETS)}, got {bucket!r}", "bucket")
    if key is None:
        if group_by != "city":
            raise ApiError(422, "invalid", f"key is required with group_by={group_by}", "key")
        key = "all"
    end = to or clock.now()
    start = from_ or end - dt.timedelta(hours=24)
    for name, value in (("from", start), ("to", end)):
        if value.tzinfo is None:
            raise ApiError(422, "invalid", f"{name} must carry a time zone offset", name)
    if end <= start:
        raise ApiError(422, "invalid", "to must be after from", "to")
    k = key
    points = await in_thread(pool, lambda conn: history(conn, group_by, k, start, end, _BUCKETS[bucket]))
    return {"group_by": group_by, "key": key, "from": start, "to": end, "bucket": bucket, "points": points}
