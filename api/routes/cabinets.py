"""Cabinets: inventory, latest report and maintenance archive."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter

from alerts.archive import archive
from api.deps import ClockDep, ConnDep, EngineDep, Offset, SyncPoolDep, Viewer, filter_param, in_thread, limit_param
from api.errors import ApiError
from commands.queries import commands_for_asset

router = APIRouter(prefix="/api/v1/cabinets", tags=["cabinets"])


_LIST = """
SELECT c.id, c.no, c.district, c.road_id, r.name_zh AS road_name_zh, r.name_en AS road_name_en, c.circuits,
       c.concentrator, c.lat, c.lon,
       (SELECT array_agg(n ORDER BY circuit) FROM (
            SELECT l.circuit, count(*)::int AS n FROM lamps l WHERE l.cabinet_id = c.id GROUP BY l.circuit
        ) per) AS circuit_lamps,
       CASE WHEN cl.cabinet_no IS NULL THEN NULL ELSE json_build_object(
           'ts', cl.ts, 'door_open', cl.door_open, 'contactors', cl.contactors, 'faults', cl.faults) END AS latest
FROM cabinets c JOIN roads r ON r.id = c.road_id LEFT JOIN cabinet_latest cl ON cl.cabinet_no = c.no
"""


@router.get("")
async def list_cabinets(
    user: Viewer,
    conn: ConnDep,
    engine: EngineDep,
    clock: ClockDep,
    district: Annotated[str | None, filter_param("district code", "cd")] = None,
    road: Annotated[int | None, filter_param("road id (as in `road_id` of a lamp)", 12)] = None,
    concentrator: Annotated[
        bool | None, filter_param("true: lamps reached through the cabinet's concentrator; false: single-lamp", True)
    ] = None,
    faulted: Annotated[
        bool | None, filter_param("true: its latest report lists a fault; false: it lists none", True)
    ] = None,
    door_open: Annotated[bool | None, filter_param("its latest report's door state", True)] = None,
    limit: Annotated[int, limit_param(1000)] = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Role: viewer. Cabinets of the inventory in cabinet order, with their circuits and how many lamps hang on
    each (`circuit_lamps[i]` is circuit i+1), the concentrator's latest report (`latest`: null before its first),
    and the lighting figures of their lamps now (`now`: due, lit, dark, unknown, day_burning, rate). Filters
    combine: `district`, `road`, `concentrator`, `faulted`, `door_open` (a filter on the latest report leaves out
    cabinets that have not reported)."""
    where: list[str] = []
    args: list[object] = []
    for column, value in (("c.district", district), ("c.road_id", road), ("c.concentrator", concentrator)):
        if value is not None:
            where.append(f"{column} = %s")
            args.append(value)
    if faulted is not None:
        where.append("cardinality(cl.faults) > 0" if faulted else "cardinality(cl.faults) = 0")
    if door_open is not None:
        where.append("cl.door_open = %s")
        args.append(door_open)
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    total = await (
        await conn.execute(
            "SELECT count(*) AS n FROM cabinets c LEFT JOIN cabinet_latest cl ON cl.cabinet_no = c.no" + clause, args
        )
    ).fetchone()
    rows = await (
        await conn.execute(f"{_LIST}{clause} ORDER BY c.no LIMIT %s OFFSET %s", [*args, limit, offset])
    ).fetchall()
    figures = {r["key"]: r for r in engine.breakdown(clock.now_ms()).cabinet.rows()}
    fields = ("due", "lit", "dark", "unknown", "day_burning", "rate")
    items: list[dict[str, Any]] = []
    for row in rows:
        cab: dict[str, Any] = dict(row)  # rows are dicts (ConnDep's row factory)
        now = figures.get(cab["id"])
        fig = {k: now[k] for k in fields} if now else None
        items.append({**cab, "lamps": sum(cab["circuit_lamps"] or ()), "now": fig})
    return {"items": items, "total": total["n"] if total else 0, "limit": limit, "offset": offset}  # type: ignore[call-overload]


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
    return await in_thread(
        pool, lambda c: {**archive(c, "cabinet", cabinet_id), "commands": commands_for_asset(c, "cabinet", cabinet_id)}
    )
