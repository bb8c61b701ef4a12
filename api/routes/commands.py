"""Remote control (遥控): commands and paced campaigns, with each lamp's outcome and an audit trail."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Request

from api.deps import (
    ClockDep,
    ConnDep,
    EngineDep,
    Offset,
    Operator,
    SyncPoolDep,
    Viewer,
    decode_body,
    filter_param,
    in_thread,
    json_body,
    limit_param,
)
from api.jsonsafe import FiniteJSONResponse
from commands.model import CommandRequest
from commands.queries import campaign_lamps, campaigns, cancel, progress
from commands.submit import submit
from lighting.engine import Changes

router = APIRouter(prefix="/api/v1/commands", tags=["commands"])


@router.post("", status_code=202, openapi_extra=json_body(CommandRequest))
async def send_command(
    user: Operator, request: Request, pool: SyncPoolDep, engine: EngineDep, clock: ClockDep
) -> FiniteJSONResponse:
    """Role: operator. `{"target": {"lamps": [...]} | {"cabinet": id, "circuit"?: n} | {"road": id} |
    {"district": code} | {"road_class": name} | {"all": true}, "op": "switch" | "dim" | "resume" | "schedule" |
    "report", "on"?, "level"?, "until"?, "reason"?}` → 202 `{"id", "lamps"}`. A reason is required beyond one
    cabinet. Sent at no more than the city-wide pace; follow it at `GET /api/v1/commands/{id}`."""
    req = await decode_body(request, CommandRequest)
    pace = float(getattr(request.app.state, "command_pace", 2000.0))

    def store(conn: psycopg.Connection) -> tuple[dict[str, Any], Changes | None]:
        s = submit(conn, engine.index, engine.expected, req, actor=user.name, now=clock.now(), pace=pace)
        changes = engine.fetch(conn, states=False) if req.op in ("switch", "dim", "resume", "schedule") else None
        return {"id": s.id, "lamps": s.lamps}, changes

    body, changes = await in_thread(pool, store)
    if changes is not None:
        engine.apply(changes)  # on this loop, which owns the engine: the override or profile counts from now
    return FiniteJSONResponse(body, status_code=202)


@router.get("")
async def list_commands(
    user: Viewer,
    conn: ConnDep,
    limit: Annotated[int, limit_param(500)] = 50,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Role: viewer. The audit trail, newest first: who, when, why, target, op, status and outcome."""
    return await campaigns(conn, limit=limit, offset=offset)


@router.get("/{command_id}")
async def command_status(user: Viewer, conn: ConnDep, command_id: str) -> dict[str, Any]:
    """Role: viewer. Progress: status and how many lamps are queued, sent, acked, failed, expired (cancelled)."""
    return await progress(conn, command_id)


@router.get("/{command_id}/lamps")
async def command_lamps(
    user: Viewer,
    conn: ConnDep,
    command_id: str,
    state: Annotated[
        Literal["queued", "sent", "acked", "failed", "expired", "cancelled"] | None,
        filter_param("only the lamps in this state", "failed"),
    ] = None,
    limit: Annotated[int, limit_param(10000)] = 1000,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Role: viewer. Each lamp's outcome: state, attempts, when sent and answered, the device's error."""
    return await campaign_lamps(conn, command_id, state=state, limit=limit, offset=offset)


@router.post("/{command_id}/cancel")
async def cancel_command(user: Operator, conn: ConnDep, command_id: str) -> dict[str, Any]:
    """Role: operator. Nothing more is sent once this returns; lamps not yet sent to end `cancelled`."""
    return await cancel(conn, command_id)
