"""The control room's headline figures in one answer, and the same as a live stream (server-sent events)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import numpy as np
import psycopg
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from alerts.queries import waiting_by_priority
from api.deps import (
    ClockDep,
    EngineDep,
    SyncPoolDep,
    Viewer,
    authenticate,
    filter_param,
    in_thread,
    request_token,
)
from api.jsonsafe import dumps
from api.live import STREAM_RECHECK_S
from lighting.engine import LightingEngine
from telemetry.history import cabinet_meters_rise

router = APIRouter(prefix="/api/v1/overview", tags=["overview"])

_METERS_LATE = dt.timedelta(minutes=30)  # first read later than noon by more than this: counted from then
_TICKETS_EVERY_S = 2.0  # tickets and energy come from PostgreSQL (cached for this long); the rate from memory
_ENERGY_EVERY_S = 30.0


def _tonight_start(now: dt.datetime, timezone: str) -> dt.datetime:
    """The local noon before `now`: a night's figures count from there."""
    local = now.astimezone(ZoneInfo(timezone))
    noon = local.replace(hour=12, minute=0, second=0, microsecond=0)
    return noon if local >= noon else noon - dt.timedelta(days=1)


def _energy(conn: psycopg.Connection, since: dt.datetime) -> dict[str, Any]:
    """The cabinet meters' energy since the local noon; when the meters were first read later than that (the
    system started during the night), since their first reading, and `since` says so."""
    wh, meters, first = cabinet_meters_rise(conn, since)
    start = first if first is not None and first > since + _METERS_LATE else since
    return {
        "since": start.isoformat(),
        "kwh": round(float(wh) / 1000.0, 1),
        "cabinet_meters": int(meters),
        "from_noon": start == since,
    }


async def _cached(request: Request, name: str, every_s: float, pool: SyncPoolDep, fn: Any) -> dict[str, Any]:
    """`fn(conn)` at most once every `every_s` seconds per app."""
    key = f"overview_{name}"
    hit = getattr(request.app.state, key, None)
    if hit is None or hit[0] < time.monotonic():
        # One query for all the streams that find it stale at once, not one each.
        lock = _locks.setdefault((id(request.app), name), asyncio.Lock())
        async with lock:
            hit = getattr(request.app.state, key, None)
            if hit is None or hit[0] < time.monotonic():
                hit = (time.monotonic() + every_s, await in_thread(pool, fn))
                setattr(request.app.state, key, hit)
    value: dict[str, Any] = hit[1]
    return value


_locks: dict[tuple[int, str], asyncio.Lock] = {}


def _power_kw(engine: LightingEngine, now_ms: int) -> float:
    s = engine.state
    live = s.on & (s.fresh_until > now_ms) & ~np.isnan(s.power_w)
    return round(float(s.power_w[live].sum()) / 1000.0, 1)


async def overview_now(request: Request, pool: SyncPoolDep, engine: LightingEngine, now_ms: int) -> dict[str, Any]:
    now = dt.datetime.fromtimestamp(now_ms / 1000, dt.UTC)
    timezone = str(getattr(request.app.state, "timezone", "Asia/Shanghai"))
    since = _tonight_start(now, timezone)
    tickets = await _cached(request, "tickets", _TICKETS_EVERY_S, pool, lambda conn: waiting_by_priority(conn, now))
    energy = await _cached(request, "energy", _ENERGY_EVERY_S, pool, lambda conn: _energy(conn, since))
    b = engine.breakdown(now_ms)
    city = b.city.rows()[0]
    return {
        "ts": now.isoformat(),
        "timezone": timezone,
        "lamps": engine.index.n,
        "city": {
            k: city[k] for k in ("due", "lit", "dark", "unknown", "day_burning", "rate", "target", "meets_target")
        },
        "integrity": {"rate": b.integrity, "target": 95.0},
        "power_kw": _power_kw(engine, now_ms),
        "tickets": tickets,
        "energy": energy,
    }


@router.get("")
async def overview(
    user: Viewer, request: Request, pool: SyncPoolDep, engine: EngineDep, clock: ClockDep
) -> dict[str, Any]:
    """Role: viewer. The city's lighting rate against its target with due, lit, dark, unknown and day-burning
    lamps; the integrity rate; open tickets by priority and how many are overdue; the power the lamps draw now
    (kW, from their reports) and the energy since the local noon (kWh, from the cabinets' meters)."""
    return await overview_now(request, pool, engine, clock.now_ms())


@router.get("/stream")
async def overview_stream(
    user: Viewer,
    request: Request,
    pool: SyncPoolDep,
    engine: EngineDep,
    clock: ClockDep,
    every_s: Annotated[float, filter_param("seconds between events, 1 to 60", 2.0, ge=1.0, le=60.0)] = 2.0,
) -> StreamingResponse:
    """Role: viewer. The overview as server-sent events (`event: overview`), every `every_s` seconds (1 to 60).
    Streams are limited per process and per user (503 and 429 beyond); one ends within seconds of its user's
    token being revoked or the user disabled."""
    slot = request.app.state.streams.take(user)
    token = request_token(request) or ""

    async def stream() -> AsyncIterator[bytes]:
        try:
            yield b": lamplighter overview\n\n"
            recheck = time.monotonic() + STREAM_RECHECK_S
            next_event = 0.0
            while not await request.is_disconnected():
                now = time.monotonic()
                if now >= recheck:  # a revoked token or a disabled user: the stream ends
                    if await authenticate(request, token) is None:
                        return
                    recheck = now + STREAM_RECHECK_S
                if now >= next_event:
                    body = await overview_now(request, pool, engine, clock.now_ms())
                    yield f"event: overview\ndata: {dumps(body)}\n\n".encode()
                    next_event = now + every_s
                await asyncio.sleep(max(0.05, min(next_event, recheck) - time.monotonic()))
        finally:
            slot.release()

    body = stream()
    slot.bind(body)
    return StreamingResponse(body, media_type="text/event-stream", headers={"Cache-Control": "no-store"})
