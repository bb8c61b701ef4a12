"""Maintenance crews: districts, on-duty rosters and the channels they are reached by."""

from __future__ import annotations

from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Request

from alerts.crews import Crew, list_crews, save_crew
from alerts.dispatch import redact
from api.deps import Admin, ClockDep, Offset, SyncPoolDep, Viewer, decode_body, in_thread, json_body, limit_param, page

router = APIRouter(prefix="/api/v1/crews", tags=["crews"])


@router.get("")
async def crews(
    user: Viewer,
    pool: SyncPoolDep,
    clock: ClockDep,
    limit: Annotated[int, limit_param(1000)] = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Role: viewer. Every crew, its roster and whether it is on duty now. Secrets are never shown, and a
    webhook URL (a chat robot's token lives in it) only to admins: others see its scheme and host."""
    items = await in_thread(pool, lambda conn: list_crews(conn, clock.now()))
    if not user.can("admin"):
        for c in items:
            if c.get("webhook_url"):
                c["webhook_url"] = redact(c["webhook_url"])
    return page(items, limit, offset)


@router.post("", status_code=201, openapi_extra=json_body(Crew))
async def create_crew(user: Admin, request: Request, pool: SyncPoolDep, clock: ClockDep) -> dict[str, Any]:
    """Role: admin. Create or replace a crew: `{"id", "name", "districts", "supervisor", "webhook_url",
    "webhook_secret", "notify_urls" (Apprise URLs), "mqtt", "shifts": [{"starts_at", "ends_at"}]}`."""
    crew = await decode_body(request, Crew)

    def store(conn: psycopg.Connection) -> dict[str, Any]:
        save_crew(conn, crew)
        return next(c for c in list_crews(conn, clock.now()) if c["id"] == crew.id)

    return await in_thread(pool, store)
