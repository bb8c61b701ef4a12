"""Remote control (遥控): commands and paced campaigns, with each lamp's outcome and an audit trail."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Query, Request

from api.deps import (
    ClockDep,
    ConnDep,
    EngineDep,
    Offset,
    Operator,
    SyncPoolDep,
    Viewer,
    decode_body,
    in_thread,
    json_body,
)
from api.errors import ApiError
from api.jsonsafe import FiniteJSONResponse
from gateway.submit import CommandError, CommandRequest, submit

router = APIRouter(prefix="/api/v1/commands", tags=["commands"])

_STATES = ("queued", "sent", "acked", "failed", "expired", "cancelled")


async def _counts(conn: ConnDep, command_id: str) -> dict[str, Any]:
    head = await (
        await conn.execute(
            "SELECT id, op, params, target, reason, actor, status, pace, total, created_at, started_at, finished_at, "
            "expires_at FROM commands WHERE id = %s",
            (command_id,),
        )
    ).fetchone()
    if head is None:
        raise ApiError(404, "not_found", f"command {command_id!r} does not exist", "id")
    rows = await (
        await conn.execute(
            "SELECT state, count(*) AS n FROM command_lamps WHERE command_id = %s GROUP BY state", (command_id,)
        )
    ).fetchall()
    counts = {s: 0 for s in _STATES}
    counts.update({r["state"]: r["n"] for r in rows})  # type: ignore[call-overload]
    return {**head, **counts}  # type: ignore[dict-item]


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

    def store(conn: psycopg.Connection) -> dict[str, Any]:
        s = submit(conn, engine.index, engine.expected, req, actor=user.name, now=clock.now(), pace=pace)
        if req.op in ("switch", "dim", "resume", "schedule"):
            engine.apply(engine.fetch(conn, states=False))  # the override or profile counts in the rate from now
        return {"id": s.id, "lamps": s.lamps}

    try:
        body = await in_thread(pool, store)
    except CommandError as exc:
        raise ApiError(exc.status, "invalid", str(exc), exc.field) from None
    return FiniteJSONResponse(body, status_code=202)


@router.get("")
async def list_commands(
    user: Viewer,
    conn: ConnDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Role: viewer. The audit trail, newest first: who, when, why, target, op, status and outcome."""
    total = await (await conn.execute("SELECT count(*) AS n FROM commands")).fetchone()
    rows = await (
        await conn.execute(
            "SELECT id, op, params, target, reason, actor, status, total, created_at, finished_at, outcome "
            "FROM commands ORDER BY created_at DESC, id LIMIT %s OFFSET %s",
            (limit, offset),
        )
    ).fetchall()
    return {"items": rows, "total": total["n"] if total else 0, "limit": limit, "offset": offset}  # type: ignore[call-overload]


@router.get("/{command_id}")
async def command_status(user: Viewer, conn: ConnDep, command_id: str) -> dict[str, Any]:
    """Role: viewer. Progress: status and how many lamps are queued, sent, acked, failed, expired (cancelled)."""
    return await _counts(conn, command_id)


@router.get("/{command_id}/lamps")
async def command_lamps(
    user: Viewer,
    conn: ConnDep,
    command_id: str,
    state: Literal["queued", "sent", "acked", "failed", "expired", "cancelled"] | None = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Role: viewer. Each lamp's outcome: state, attempts, when sent and answered, the device's error."""
    await _counts(conn, command_id)
    where, args = "WHERE command_id = %s", [command_id]
    if state:
        where += " AND state = %s"
        args.append(state)
    total = await (await conn.execute(f"SELECT count(*) AS n FROM command_lamps {where}", args)).fetchone()
    rows = await (
        await conn.execute(
            f"SELECT lamp_id, state, attempts, sent_at, done_at, error FROM command_lamps {where} "
            "ORDER BY lamp_id LIMIT %s OFFSET %s",
            [*args, limit, offset],
        )
    ).fetchall()
    return {"items": rows, "total": total["n"] if total else 0, "limit": limit, "offset": offset}  # type: ignore[call-overload]


@router.post("/{command_id}/cancel")
async def cancel_command(user: Operator, conn: ConnDep, command_id: str) -> dict[str, Any]:
    """Role: operator. Nothing more is sent once this returns; lamps not yet sent to end `cancelled`."""
    async with conn.transaction():
        row = await (
            await conn.execute("SELECT status FROM commands WHERE id = %s FOR UPDATE", (command_id,))
        ).fetchone()
        if row is None:
            raise ApiError(404, "not_found", f"command {command_id!r} does not exist", "id")
        if row["status"] not in ("queued", "running"):  # type: ignore[call-overload]
            raise ApiError(409, "conflict", f"command {command_id} is {row['status']}: nothing to cancel", "id")  # type: ignore[call-overload]
        await conn.execute("UPDATE commands SET status = 'cancelled', finished_at = now() WHERE id = %s", (command_id,))
        await conn.execute(
            "UPDATE command_lamps SET state = 'cancelled', done_at = now() WHERE command_id = %s AND state = 'queued'",
            (command_id,),
        )
    return await _counts(conn, command_id)
