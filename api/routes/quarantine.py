"""Rejected messages and why they were rejected."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter

from api.deps import ConnDep, Offset, Viewer, filter_param, limit_param, time_param
from telemetry.quarantine import read_quarantine

router = APIRouter(prefix="/api/v1/quarantine", tags=["quarantine"])


@router.get("")
async def list_quarantine(
    user: Viewer,
    conn: ConnDep,
    reason: Annotated[str | None, filter_param("why it was rejected", "not_json", "schema")] = None,
    device: Annotated[str | None, filter_param("a lamp or cabinet id, as in the topic", "XN-CD-000001")] = None,
    topic: Annotated[str | None, filter_param("a topic, or an MQTT filter with + and #", "sl/cd/lamp/+/state")] = None,
    since: Annotated[datetime | None, time_param("received at or after")] = None,
    until: Annotated[datetime | None, time_param("received before")] = None,
    limit: Annotated[int, limit_param(1000)] = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Role: viewer. Newest first; `payload` is the first KiB, decoded as UTF-8 with bad bytes replaced. Filters
    combine: `reason`, `device` (the id in the topic), `topic` (exact, or an MQTT filter), `since`, `until`."""
    total, items = await read_quarantine(
        conn, reason=reason, device=device, topic=topic, since=since, until=until, limit=limit, offset=offset
    )
    return {"items": items, "total": total, "limit": limit, "offset": offset}
