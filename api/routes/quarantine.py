"""Rejected messages and why they were rejected."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.deps import ConnDep, Offset, Viewer

router = APIRouter(prefix="/api/v1/quarantine", tags=["quarantine"])


@router.get("")
async def list_quarantine(
    user: Viewer,
    conn: ConnDep,
    reason: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Role: viewer. Newest first; `payload` is the first KiB, decoded as UTF-8 with bad bytes replaced."""
    where, args = ("WHERE reason = %s", [reason]) if reason else ("", [])
    total = await (await conn.execute(f"SELECT count(*) AS n FROM quarantine {where}", args)).fetchone()
    rows = await (
        await conn.execute(
            f"SELECT id, received_at, topic, payload, reason, detail FROM quarantine {where} "
            "ORDER BY id DESC LIMIT %s OFFSET %s",
            [*args, limit, offset],
        )
    ).fetchall()
    items = [{**r, "payload": bytes(r["payload"]).decode("utf-8", "replace")} for r in rows]  # type: ignore[call-overload, dict-item]
    return {"items": items, "total": total["n"] if total else 0, "limit": limit, "offset": offset}  # type: ignore[call-overload]
