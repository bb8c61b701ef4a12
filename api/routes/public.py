"""Public endpoints, no login: citizens report a dark or damaged lamp; planned outages are announced."""

from __future__ import annotations

import datetime as dt
import math
from typing import Annotated, Any

import msgspec
import numpy as np
import psycopg
from fastapi import APIRouter, Request

from alerts.citizens import file_report
from api.deps import ClockDep, EngineDep, Offset, SyncPoolDep, decode_body, in_thread, json_body, limit_param, page
from api.errors import ApiError
from api.ratelimit import RateLimit
from lighting.engine import long_outages

router = APIRouter(prefix="/api/v1/public", tags=["public"])

_REPORTS = RateLimit("reports", per_minute=2.0, burst=5)  # a citizen reports a lamp or two, not hundreds
# And per lamp, whoever reports it: a lamp is reported a few times, not by a crowd of addresses.
_REPORTS_PER_LAMP = RateLimit("reports-per-lamp", per_minute=0.1, burst=3)
_NOTICES = RateLimit("notices", per_minute=60.0, burst=30)
_NEAR_M = 50.0  # a position names the nearest lamp within this distance


class ReportBody(msgspec.Struct, forbid_unknown_fields=True):
    description: Annotated[str, msgspec.Meta(max_length=500)]
    lamp_id: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    lat: float | None = None
    lon: float | None = None
    contact: Annotated[str, msgspec.Meta(max_length=100)] | None = None


def _nearest(engine: Any, lat: float, lon: float) -> tuple[str, float] | None:
    ix = engine.index
    k = math.cos(math.radians(lat)) * 111_320.0
    d2 = ((ix.lat - lat) * 110_540.0) ** 2 + ((ix.lon - lon) * k) ** 2
    i = int(np.argmin(d2))
    dist = float(math.sqrt(d2[i]))
    return (ix.lamp_id[i], dist) if dist <= _NEAR_M else None


@router.post("/reports", status_code=201, openapi_extra=json_body(ReportBody))
async def report_lamp(request: Request, pool: SyncPoolDep, engine: EngineDep, clock: ClockDep) -> dict[str, Any]:
    """Role: none (rate-limited per client). `{"lamp_id"}` from the pole's label, or `{"lat", "lon"}` of the
    lamp, and a `description` (and an optional `contact`): attached to the lamp's open ticket, or a P3 ticket
    opens for a crew to verify."""
    client = _REPORTS.check(request)
    body = await decode_body(request, ReportBody)
    description = body.description.strip()
    if not 3 <= len(description) <= 500:
        raise ApiError(422, "invalid", "description must be 3–500 characters", "description")
    if body.contact is not None and len(body.contact) > 100:
        raise ApiError(422, "invalid", "contact must be at most 100 characters", "contact")
    lamp_id = body.lamp_id.strip().upper() if body.lamp_id else None
    if lamp_id is None:
        if body.lat is None or body.lon is None:
            raise ApiError(422, "invalid", "give the lamp_id on the pole's label, or the lamp's lat and lon", "lamp_id")
        if not (-90 <= body.lat <= 90 and -180 <= body.lon <= 180):
            raise ApiError(422, "invalid", f"not a position: {body.lat}, {body.lon}", "lat")
        found = _nearest(engine, body.lat, body.lon)
        if found is None:
            raise ApiError(404, "not_found", f"no lamp within {_NEAR_M:.0f} m of {body.lat}, {body.lon}", "lat")
        lamp_id = found[0]
    elif lamp_id not in engine.index.slot_of_id:
        raise ApiError(404, "not_found", f"no lamp {lamp_id!r}: check the label on the pole", "lamp_id")
    _REPORTS_PER_LAMP.check(request, key=f"lamp {lamp_id}")
    now = clock.now()

    def store(conn: psycopg.Connection) -> dict[str, Any]:
        r = file_report(conn, lamp_id=lamp_id, description=description, contact=body.contact, client=client, now=now)
        return {"id": r.id, "lamp_id": r.lamp_id, "ticket_id": r.ticket_id, "outcome": r.outcome}

    return await in_thread(pool, store)


@router.get("/notices")
async def notices(
    request: Request,
    pool: SyncPoolDep,
    clock: ClockDep,
    limit: Annotated[int, limit_param(500)] = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Role: none (rate-limited). Planned outages longer than 24 hours that have not ended."""
    _NOTICES.check(request)
    now = clock.now()

    def load(conn: psycopg.Connection) -> list[dict[str, Any]]:
        return long_outages(conn, now, longer_than=dt.timedelta(hours=24))

    items = await in_thread(pool, load)
    return page(items, limit, offset)
