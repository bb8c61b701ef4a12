"""The maintenance archive (养护档案) of a lamp or a cabinet: its tickets, their history, crews' notes and parts.
The remote-control commands that reached the asset come from `commands.queries.commands_for_asset`."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

__all__ = ["archive"]


def archive(conn: psycopg.Connection, asset_type: str, asset_id: str) -> dict[str, Any]:
    """Every ticket that concerns the asset (its own, or a cabinet ticket listing the lamp), newest first, with
    its events; crews' notes and parts replaced pulled out for reading."""
    with conn.cursor(row_factory=dict_row) as cur:
        tickets = cur.execute(
            """SELECT t.id, t.priority, t.fault, t.asset_type, t.asset_id, t.status, t.crew_id AS crew, t.opened_at,
                      t.updated_at, t.occurrences, t.detail
               FROM tickets t
               WHERE (t.asset_type = %s AND t.asset_id = %s)
                  OR (%s = 'lamp' AND t.id IN (SELECT ticket_id FROM ticket_lamps WHERE lamp_id = %s))
               ORDER BY t.opened_at DESC, t.id DESC""",
            (asset_type, asset_id, asset_type, asset_id),
        ).fetchall()
        ids = [t["id"] for t in tickets]
        events = cur.execute(
            "SELECT id, ticket_id, ts, actor, action, from_status, to_status, note, parts FROM ticket_events "
            "WHERE ticket_id = ANY(%s) ORDER BY id",
            (ids,),
        ).fetchall()
    by_ticket: dict[int, list[dict[str, Any]]] = {}
    for e in events:
        by_ticket.setdefault(e["ticket_id"], []).append(e)
    for t in tickets:
        t["history"] = by_ticket.get(t["id"], [])
    people = [e for e in events if e["actor"] != "system"]
    return {
        "asset_type": asset_type,
        "asset_id": asset_id,
        "faults": [
            {
                "ticket_id": t["id"],
                "fault": t["fault"],
                "priority": t["priority"],
                "first_opened": t["opened_at"],
                "occurrences": t["occurrences"],
                "status": t["status"],
            }
            for t in tickets
        ],
        "tickets": tickets,
        "notes": [
            {"ticket_id": e["ticket_id"], "ts": e["ts"], "actor": e["actor"], "action": e["action"], "note": e["note"]}
            for e in people
            if e["note"]
        ],
        "parts": [
            {"ticket_id": e["ticket_id"], "ts": e["ts"], "actor": e["actor"], "parts": e["parts"]}
            for e in people
            if e["parts"]
        ],
    }
