"""Cabinets: inventory, latest report and maintenance archive."""

from __future__ import annotations

import functools
from typing import Annotated, Any

from fastapi import APIRouter

from alerts.archive import archive
from api.deps import ClockDep, ConnDep, EngineDep, Offset, SyncPoolDep, Viewer, filter_param, in_thread, limit_param
from api.errors import ApiError
from commands.queries import commands_for_asset
from inventory.queries import acabinet, acabinet_nos, acabinets
from telemetry.store import cabinets_latest

router = APIRouter(prefix="/api/v1/cabinets", tags=["cabinets"])


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
    nos = functools.partial(acabinet_nos, conn, district=district, road=road, concentrator=concentrator)
    if faulted is None and door_open is None:  # the inventory pages
        page, total = await nos(limit=limit, offset=offset)
        latest = await cabinets_latest(conn, [no for _, no in page])
    else:  # filters on the latest report: every chosen cabinet's, then the page
        chosen, _ = await nos()
        latest = await cabinets_latest(conn, [no for _, no in chosen])
        chosen = [
            (cid, no)
            for cid, no in chosen
            if (state := latest.get(no)) is not None
            and (faulted is None or bool(state["faults"]) == faulted)
            and (door_open is None or state["door_open"] == door_open)
        ]
        page, total = chosen[offset : offset + limit], len(chosen)
    rows = await acabinets(conn, [cid for cid, _ in page])
    figures = {r["key"]: r for r in engine.breakdown(clock.now_ms()).cabinet.rows()}
    fields = ("due", "lit", "dark", "unknown", "day_burning", "rate")
    items: list[dict[str, Any]] = []
    for row in rows:
        cab: dict[str, Any] = dict(row)
        state = latest.get(cab["no"])
        cab["latest"] = None if state is None else {k: state[k] for k in ("ts", "door_open", "contactors", "faults")}
        now = figures.get(cab["id"])
        fig = {k: now[k] for k in fields} if now else None
        items.append({**cab, "lamps": sum(cab["circuit_lamps"] or ()), "now": fig})
    return {"items": items, "total": total, "limit": limit, "offset": offset}


async def _cabinet(conn: ConnDep, cabinet_id: str) -> dict[str, Any]:
    row = await acabinet(conn, cabinet_id)
    if row is None:
        raise ApiError(404, "not_found", f"cabinet {cabinet_id!r} is not in the inventory", "id")
    return row


@router.get("/{cabinet_id}")
async def get_cabinet(user: Viewer, conn: ConnDep, cabinet_id: str) -> dict[str, Any]:
    """Role: viewer. One cabinet: inventory and its concentrator's latest report."""
    cab = await _cabinet(conn, cabinet_id)
    latest = await cabinets_latest(conn, [cab["no"]])
    return {**cab, "latest": latest.get(cab["no"])}


@router.get("/{cabinet_id}/archive")
async def cabinet_archive(user: Viewer, pool: SyncPoolDep, conn: ConnDep, cabinet_id: str) -> dict[str, Any]:
    """Role: viewer. The cabinet's maintenance archive: faults, tickets with their history, notes, parts."""
    await _cabinet(conn, cabinet_id)
    return await in_thread(
        pool, lambda c: {**archive(c, "cabinet", cabinet_id), "commands": commands_for_asset(c, "cabinet", cabinet_id)}
    )
