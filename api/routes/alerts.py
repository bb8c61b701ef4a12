"""Operator alerts: the city or a district below its lighting-rate target for more than ten minutes."""

from __future__ import annotations

from typing import Annotated, Any, cast

from fastapi import APIRouter, Query

from api.deps import ConnDep, Offset, Viewer, limit_param

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
    where = " WHERE cleared_at IS NULL" if open_only else ""
    total = await (await conn.execute(f"SELECT count(*) AS n FROM operator_alerts{where}")).fetchone()
    rows = await (
        await conn.execute(
            "SELECT id, kind, grouping, key, raised_at, cleared_at, rate, target, message "
            f"FROM operator_alerts{where} ORDER BY raised_at DESC, id DESC LIMIT %s OFFSET %s",
            (limit, offset),
        )
    ).fetchall()
    items = []
    for row in rows:
        r = cast(dict[str, Any], row)
        items.append({**r, "rate": None if r["rate"] is None else float(r["rate"]), "target": float(r["target"])})
    return {"items": items, "total": total["n"] if total else 0, "limit": limit, "offset": offset}  # type: ignore[call-overload]
