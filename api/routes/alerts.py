"""Operator alerts: the city or a district below its lighting-rate target for more than ten minutes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.deps import ConnDep, Offset, Viewer, limit_param
from lighting.sampling import list_alerts as read_alerts

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"])
_OPEN: dict[str, Any] = {"true": {"value": True}}


@router.get("")
async def list_alerts(
    user: Viewer,
    conn: ConnDep,
    open_only: Annotated[
        bool, Query(alias="open", description="true: not cleared yet", examples=[True], openapi_examples=_OPEN)
    ] = False,
    limit: Annotated[int, limit_param(1000)] = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Role: viewer. Newest first; `open=true` for those not cleared yet."""
    total, items = await read_alerts(conn, open_only=open_only, limit=limit, offset=offset)
    return {"items": items, "total": total, "limit": limit, "offset": offset}
