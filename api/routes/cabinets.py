"""Cabinets: inventory, latest report and maintenance archive."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from alerts.archive import archive
from api.deps import ConnDep, SyncPoolDep, Viewer, in_thread
from api.errors import ApiError

router = APIRouter(prefix="/api/v1/cabinets", tags=["cabinets"])


async def _cabinet(conn: ConnDep, cabinet_id: str) -> dict[str, Any]:
    row = await (
        await conn.execute(
            "SELECT c.id, c.no, c.district, c.road_id, c.circuits, c.concentrator, c.lat, c.lon, "
            "(SELECT count(*) FROM lamps l WHERE l.cabinet_id = c.id) AS lamps FROM cabinets c WHERE c.id = %s",
            (cabinet_id,),
        )
    ).fetchone()
    if row is None:
        raise ApiError(404, "not_found", f"cabinet {cabinet_id!r} is not in the inventory", "id")
    return row  # type: ignore[return-value]


@router.get("/{cabinet_id}")
async def get_cabinet(user: Viewer, conn: ConnDep, cabinet_id: str) -> dict[str, Any]:
    """Role: viewer. One cabinet: inventory and its concentrator's latest report."""
    cab = await _cabinet(conn, cabinet_id)
    latest = await (
        await conn.execute(
            "SELECT ts, seq, door_open, contactors, faults, received_at FROM cabinet_latest WHERE cabinet_no = %s",
            (cab["no"],),
        )
    ).fetchone()
    return {**cab, "latest": latest}


@router.get("/{cabinet_id}/archive")
async def cabinet_archive(user: Viewer, pool: SyncPoolDep, conn: ConnDep, cabinet_id: str) -> dict[str, Any]:
    """Role: viewer. The cabinet's maintenance archive: faults, tickets with their history, notes, parts."""
    await _cabinet(conn, cabinet_id)
    return await in_thread(pool, lambda c: archive(c, "cabinet", cabinet_id))
