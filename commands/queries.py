"""Reading and cancelling campaigns: progress, the audit trail, each lamp's outcome, cancel."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from commands.model import CHANNEL, STATES, CommandError
from kernel.database import empty_tables

__all__ = [
    "campaign_lamps",
    "campaigns",
    "cancel",
    "commands_for_asset",
    "forget_inventory",
    "lamp_states",
    "progress",
]

Conn = psycopg.AsyncConnection[Any]


async def _all(conn: Conn, sql: str, args: Any = ()) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, args)
        return await cur.fetchall()


async def _one(conn: Conn, sql: str, args: Any = ()) -> dict[str, Any] | None:
    rows = await _all(conn, sql, args)
    return rows[0] if rows else None


async def progress(conn: Conn, command_id: str) -> dict[str, Any]:
    """The campaign with how many of its lamps are in each state; `CommandError(kind="not_found")` if none."""
    head = await _one(
        conn,
        "SELECT id, op, params, target, reason, actor, status, pace, total, created_at, started_at, finished_at, "
        "expires_at FROM commands WHERE id = %s",
        (command_id,),
    )
    if head is None:
        raise CommandError(f"command {command_id!r} does not exist", "id", kind="not_found")
    rows = await _all(
        conn, "SELECT state, count(*) AS n FROM command_lamps WHERE command_id = %s GROUP BY state", (command_id,)
    )
    counts = {s: 0 for s in STATES}
    counts.update({r["state"]: r["n"] for r in rows})
    return {**head, **counts}


def _page(items: list[dict[str, Any]], total: dict[str, Any] | None, limit: int, offset: int) -> dict[str, Any]:
    return {"items": items, "total": total["n"] if total else 0, "limit": limit, "offset": offset}


async def campaigns(conn: Conn, *, limit: int, offset: int) -> dict[str, Any]:
    """The audit trail, newest first: who, when, why, target, op, status and outcome."""
    total = await _one(conn, "SELECT count(*) AS n FROM commands")
    rows = await _all(
        conn,
        "SELECT id, op, params, target, reason, actor, status, total, created_at, finished_at, outcome "
        "FROM commands ORDER BY created_at DESC, id LIMIT %s OFFSET %s",
        (limit, offset),
    )
    return _page(rows, total, limit, offset)


async def campaign_lamps(conn: Conn, command_id: str, *, state: str | None, limit: int, offset: int) -> dict[str, Any]:
    """Each lamp's outcome: state, attempts, when sent and answered, the device's error."""
    await progress(conn, command_id)  # not_found first
    where, args = "WHERE command_id = %s", [command_id]
    if state:
        where += " AND state = %s"
        args.append(state)
    total = await _one(conn, f"SELECT count(*) AS n FROM command_lamps {where}", args)
    rows = await _all(
        conn,
        f"SELECT lamp_id, state, attempts, sent_at, done_at, error FROM command_lamps {where} "
        "ORDER BY lamp_id LIMIT %s OFFSET %s",
        [*args, limit, offset],
    )
    return _page(rows, total, limit, offset)


async def cancel(conn: Conn, command_id: str) -> dict[str, Any]:
    """Nothing more is sent once this returns (the engine sends under a share lock on the campaign's row); lamps
    not yet sent end `cancelled`. `kind="conflict"` when the campaign has already finished."""
    async with conn.transaction():
        row = await _one(conn, "SELECT status FROM commands WHERE id = %s FOR UPDATE", (command_id,))
        if row is None:
            raise CommandError(f"command {command_id!r} does not exist", "id", kind="not_found")
        if row["status"] not in ("queued", "running"):
            raise CommandError(f"command {command_id} is {row['status']}: nothing to cancel", "id", kind="conflict")
        await conn.execute("UPDATE commands SET status = 'cancelled', finished_at = now() WHERE id = %s", (command_id,))
        await conn.execute(
            "UPDATE command_lamps SET state = 'cancelled', done_at = now() WHERE command_id = %s AND state = 'queued'",
            (command_id,),
        )
        await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, command_id))
    return await progress(conn, command_id)


def commands_for_asset(
    conn: psycopg.Connection, asset_type: str, asset_id: str, limit: int = 50
) -> list[dict[str, Any]]:
    """Remote-control commands that reached the asset, newest first: who, why, what, and the lamp's outcome."""
    with conn.cursor(row_factory=dict_row) as cur:
        if asset_type == "lamp":
            return cur.execute(
                """SELECT c.id, c.op, c.params, c.actor, c.reason, c.created_at, l.state, l.attempts, l.done_at,
                          l.error
                   FROM command_lamps l JOIN commands c ON c.id = l.command_id
                   WHERE l.lamp_id = %s ORDER BY c.created_at DESC LIMIT %s""",
                (asset_id, limit),
            ).fetchall()
        return cur.execute(
            """SELECT id, op, params, actor, reason, created_at, status AS state, outcome
               FROM commands WHERE target->>'cabinet' = %s ORDER BY created_at DESC LIMIT %s""",
            (asset_id, limit),
        ).fetchall()


def lamp_states(conn: psycopg.Connection, command_id: str) -> dict[str, int]:
    """How many of a campaign's lamps are in each state (queued, sent, acked, …), from a worker thread or a tool."""
    rows = conn.execute(
        "SELECT state, count(*) FROM command_lamps WHERE command_id = %s GROUP BY state", (command_id,)
    ).fetchall()
    return {str(s): int(n) for s, n in rows}


def forget_inventory(conn: psycopg.Connection) -> dict[str, int]:
    """Empty the campaigns and their lamps' outcomes: they target the inventory being replaced."""
    return empty_tables(conn, ("commands", "command_lamps"), counted=("commands",))
