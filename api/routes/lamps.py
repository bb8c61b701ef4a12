"""Lamps: inventory, latest state and stored readings."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter

from alerts.archive import archive
from api.deps import (
    ClockDep,
    ConnDep,
    EngineDep,
    Offset,
    SyncPoolDep,
    Viewer,
    filter_param,
    in_thread,
    limit_param,
    time_param,
)
from api.errors import ApiError
from commands.queries import commands_for_asset
from inventory.queries import alamp, alamp_count, alamp_no, alamps
from telemetry.daily import lamp_counters
from telemetry.history import read_lamp
from telemetry.store import device_status, lamp_latest_state

router = APIRouter(prefix="/api/v1/lamps", tags=["lamps"])


async def _lamp_no(conn: ConnDep, lamp_id: str) -> int:
    no = await alamp_no(conn, lamp_id)
    if no is None:
        raise ApiError(404, "not_found", f"lamp {lamp_id!r} is not in the inventory", "id")
    return no


@router.get("")
async def list_lamps(
    user: Viewer,
    conn: ConnDep,
    district: Annotated[str | None, filter_param("district code", "cd")] = None,
    cabinet: Annotated[str | None, filter_param("cabinet id", "XN-CD-C0001")] = None,
    limit: Annotated[int, limit_param(1000)] = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Role: viewer. Lamps of the inventory, filtered by district and cabinet, in lamp order."""
    total = await alamp_count(conn, district=district, cabinet=cabinet)
    rows = await alamps(conn, district=district, cabinet=cabinet, limit=limit, offset=offset)
    return {"items": rows, "total": total, "limit": limit, "offset": offset}


@router.get("/{lamp_id}")
async def get_lamp(
    user: Viewer, conn: ConnDep, pool: SyncPoolDep, engine: EngineDep, clock: ClockDep, lamp_id: str
) -> dict[str, Any]:
    """Role: viewer. One lamp: inventory, latest reported state, online status (when it has its own), its
    `counters` (burning hours and switch-ons: the device's own when it reports them, else counted from its
    readings; both shown), and now: `due` (its schedule wants it on), `level` (percent) and `condition` (lit,
    dark, unknown, off, day_burning; `excluded` when out of service or inside a planned outage or maintenance
    window)."""
    lamp = await alamp(conn, lamp_id)
    if lamp is None:
        raise ApiError(404, "not_found", f"lamp {lamp_id!r} is not in the inventory", "id")
    latest = await lamp_latest_state(conn, lamp["no"])
    status = await device_status(conn, "lamp", lamp_id)
    no = lamp["no"]
    counters = await in_thread(pool, lambda c: lamp_counters(c, no))
    view = engine.lamp(lamp_id, clock.now_ms())
    now = {"due": view.due, "level": view.level, "condition": view.condition} if view else {}
    return {**lamp, "latest": latest, "status": status, "counters": counters, **now}


@router.get("/{lamp_id}/telemetry")
async def lamp_telemetry(
    user: Viewer,
    conn: ConnDep,
    pool: SyncPoolDep,
    clock: ClockDep,
    lamp_id: str,
    from_: Annotated[datetime | None, time_param("from this time (default: 24 hours before `to`)", "from")] = None,
    to: Annotated[datetime | None, time_param("up to this time, not included (default: now)")] = None,
    limit: Annotated[int, limit_param(10_000)] = 1000,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Role: viewer. Stored readings of one lamp in [from, to), oldest first; default the last 24 hours (of the
    city's clock, which a demo or test may run ahead). Older days come from the compact history, alike."""
    no = await _lamp_no(conn, lamp_id)
    to = to or clock.now() + timedelta(minutes=5)
    from_ = from_ or to - timedelta(days=1)
    if from_.tzinfo is None or to.tzinfo is None:
        raise ApiError(422, "invalid", "from and to need a time zone (for example 2026-11-28T18:00:00+08:00)", "from")
    if from_ >= to:
        raise ApiError(422, "invalid", f"from ({from_.isoformat()}) must be before to ({to.isoformat()})", "from")
    start, end = from_, to
    rows = await in_thread(pool, lambda c: read_lamp(c, no, start, end, limit=limit, offset=offset))
    return {"lamp": lamp_id, "from": from_, "to": to, "items": rows, "limit": limit, "offset": offset}


@router.get("/{lamp_id}/archive")
async def lamp_archive(user: Viewer, pool: SyncPoolDep, conn: ConnDep, lamp_id: str) -> dict[str, Any]:
    """Role: viewer. The lamp's maintenance archive: faults, tickets with their history, crews' notes, parts
    replaced, its burning hours and switch-ons (`counters`, as on the lamp); commands join it with remote
    control."""
    no = await _lamp_no(conn, lamp_id)
    return await in_thread(
        pool,
        lambda c: {
            **archive(c, "lamp", lamp_id),
            "counters": lamp_counters(c, no),
            "commands": commands_for_asset(c, "lamp", lamp_id),
        },
    )
