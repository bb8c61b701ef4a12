"""Reading the tickets as the control room and the crews list them: filtered, paged, newest first, each with its
lamps and whether it is overdue; and the counts the overview shows. The ticket lifecycle that writes them is
`alerts.tickets`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row, tuple_row
from psycopg.types.json import Jsonb

from alerts.tickets import EVENTS_CHANNEL, WAITING
from kernel.database import empty_tables

__all__ = [
    "EVENTS_CHANNEL",
    "EVENT_FIELDS",
    "assets_ticketed_since",
    "dead_lettered",
    "events_after",
    "forget_inventory",
    "lamp_failures",
    "lamps_waiting",
    "list_tickets_page",
    "newest_event_id",
    "newest_ticket_id",
    "queue_notification",
    "ticket_counts",
    "waiting_by_priority",
    "waiting_faults",
]


async def list_tickets_page(
    conn: psycopg.AsyncConnection[Any],
    now: dt.datetime,
    *,
    statuses: Sequence[str] | None = None,
    priorities: Sequence[str] | None = None,
    district: str | None = None,
    fault: str | None = None,
    crew: str | None = None,
    asset: str | None = None,
    asset_type: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[int, list[dict[str, Any]]]:
    """(how many match, the page). `asset` is a lamp or cabinet id; a lamp also matches the cabinet tickets that
    list it, unless `asset_type` is `lamp`."""
    where: list[str] = []
    args: list[object] = []
    if statuses:
        where.append("t.status = ANY(%s)")
        args.append(list(statuses))
    if asset_type:
        where.append("t.asset_type = %s")
        args.append(asset_type)
    if priorities:
        where.append("t.priority = ANY(%s)")
        args.append(list(priorities))
    for column, value in (("t.district", district), ("t.fault", fault), ("t.crew_id", crew)):
        if value:
            where.append(f"{column} = %s")
            args.append(value)
    if asset and asset_type == "lamp":
        where.append("t.asset_id = %s")
        args.append(asset)
    elif asset:
        where.append("(t.asset_id = %s OR t.id IN (SELECT ticket_id FROM ticket_lamps WHERE lamp_id = %s))")
        args += [asset, asset]
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    async with conn.cursor(row_factory=dict_row) as cur:
        # The total comes with the page (one round trip, not two: under full ingest each one waits for a core).
        await cur.execute(
            f"""SELECT count(*) OVER () AS total_count,
                       t.id, t.priority, t.fault, t.asset_type, t.asset_id, t.district, t.crew_id AS crew, t.status,
                       t.opened_at, t.updated_at, t.deadline, t.occurrences,
                       (t.status IN ('open', 'dispatched', 'acknowledged', 'reopened')
                        AND ((t.deadline IS NOT NULL AND t.deadline < %s)
                             OR (t.ack_deadline IS NOT NULL AND t.ack_deadline < %s
                                 AND t.status <> 'acknowledged'))) AS overdue,
                       coalesce((SELECT array_agg(lamp_id ORDER BY lamp_id) FROM ticket_lamps l
                                 WHERE l.ticket_id = t.id), '{{}}') AS lamps
                FROM tickets t{clause} ORDER BY t.opened_at DESC, t.id DESC LIMIT %s OFFSET %s""",
            [now, now, *args, limit, offset],
        )
        rows = await cur.fetchall()
        if rows:
            total = int(rows[0]["total_count"])
        elif offset:  # a page past the end still says how many there are
            await cur.execute(f"SELECT count(*) AS n FROM tickets t{clause}", args)
            row = await cur.fetchone()
            total = int(row["n"]) if row else 0
        else:
            total = 0
    for r in rows:
        del r["total_count"]
    return total, rows


def waiting_by_priority(conn: psycopg.Connection, now: dt.datetime) -> dict[str, Any]:
    """The tickets still waiting for someone: how many, per priority, and how many of them are overdue."""
    rows = conn.execute(
        """SELECT priority, count(*),
                  count(*) FILTER (WHERE (deadline IS NOT NULL AND deadline < %s)
                                   OR (ack_deadline IS NOT NULL AND ack_deadline < %s AND status <> 'acknowledged'))
           FROM tickets WHERE status = ANY(%s) GROUP BY priority""",
        (now, now, list(WAITING)),
    ).fetchall()
    by_priority = {p: 0 for p in ("P1", "P2", "P3", "P4")}
    overdue = 0
    for priority, n, late in rows:
        by_priority[priority] = int(n)
        overdue += int(late)
    return {"open": sum(by_priority.values()), "by_priority": by_priority, "overdue": overdue}


# What a ticket event carries to the live feeds: the event, and its ticket as it is now.
EVENT_FIELDS = (
    "id", "ticket_id", "ts", "actor", "action", "from_status", "to_status", "note", "priority", "fault",
    "asset_type", "asset_id", "district", "crew", "status",
)  # fmt: skip
_EVENTS = """SELECT e.id, e.ticket_id, e.ts, e.actor, e.action, e.from_status, e.to_status, e.note,
                    t.priority, t.fault, t.asset_type, t.asset_id, t.district, t.crew_id, t.status
             FROM ticket_events e JOIN tickets t ON t.id = e.ticket_id
             WHERE e.id > %s AND (%s::text IS NULL OR t.crew_id = %s) ORDER BY e.id LIMIT %s"""


async def events_after(
    conn: psycopg.AsyncConnection[Any], after_id: int, *, crew: str | None = None, limit: int = 1000
) -> list[dict[str, Any]]:
    """The ticket events after `after_id` in order (`crew`: of that crew's tickets only), each as EVENT_FIELDS."""
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(_EVENTS, (after_id, crew, crew, limit))
        rows = await cur.fetchall()
    return [dict(zip(EVENT_FIELDS, r, strict=True)) for r in rows]


async def newest_event_id(conn: psycopg.AsyncConnection[Any]) -> int:
    """The id of the newest ticket event (0 before the first)."""
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute("SELECT coalesce(max(id), 0) FROM ticket_events")
        row = await cur.fetchone()
    return int(row[0]) if row else 0


def waiting_faults(conn: psycopg.Connection, asset_type: str, asset_ids: Sequence[str]) -> dict[str, list[str]]:
    """The faults of the tickets waiting for a crew on each of `asset_ids` (lamps or cabinets) that has one."""
    out: dict[str, list[str]] = {}
    for asset, fault in conn.execute(
        "SELECT asset_id, fault FROM tickets WHERE asset_type = %s AND asset_id = ANY(%s) AND status = ANY(%s)",
        (asset_type, list(asset_ids), list(WAITING)),
    ):
        out.setdefault(str(asset), []).append(str(fault))
    return out


def ticket_counts(conn: psycopg.Connection) -> dict[str, int]:
    """How many tickets there are of cabinets and of lamps, and how many lamps the tickets list."""
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE asset_type = 'cabinet'), count(*) FILTER (WHERE asset_type = 'lamp'), "
        "(SELECT count(*) FROM ticket_lamps) FROM tickets"
    ).fetchone()
    cabinet, lamp, listed = (int(v) for v in row) if row else (0, 0, 0)
    return {"cabinet": cabinet, "lamp": lamp, "listed_lamps": listed}


def newest_ticket_id(conn: psycopg.Connection) -> int:
    """The highest ticket id so far (0: none yet)."""
    row = conn.execute("SELECT coalesce(max(id), 0) FROM tickets").fetchone()
    return int(row[0]) if row else 0


def assets_ticketed_since(conn: psycopg.Connection, after_id: int, fault: str, asset_ids: Sequence[str]) -> int:
    """How many of `asset_ids` got a ticket for `fault` with an id after `after_id`."""
    row = conn.execute(
        "SELECT count(DISTINCT asset_id) FROM tickets WHERE id > %s AND fault = %s AND asset_id = ANY(%s)",
        (after_id, fault, list(asset_ids)),
    ).fetchone()
    return int(row[0]) if row else 0


def queue_notification(conn: psycopg.Connection, ticket_id: int, crew: str, channel: str, payload: Any) -> str:
    """A notification of a ticket's first event queued in the outbox for `crew` on `channel`, as the ticket service
    queues one (a benchmark's way to send one of a size the service never would); returns its idempotency key."""
    key = f"queued-{ticket_id}-{crew}-{channel}"
    conn.execute(
        "INSERT INTO outbox (ticket_id, event_id, channel, crew_id, idempotency_key, payload) "
        "SELECT %s, min(id), %s, %s, %s, %s FROM ticket_events WHERE ticket_id = %s",
        (ticket_id, channel, crew, key, Jsonb(payload), ticket_id),
    )
    return key


def dead_lettered(conn: psycopg.Connection, idempotency_key: str) -> bool:
    """Whether the outbox gave up on that delivery (dead-lettered it)."""
    row = conn.execute(
        "SELECT dead_at IS NOT NULL FROM outbox WHERE idempotency_key = %s", (idempotency_key,)
    ).fetchone()
    return bool(row and row[0])


def lamps_waiting(conn: psycopg.Connection) -> list[str]:
    """Every lamp with a ticket waiting for a crew: its own, or a cabinet's or a circuit's that lists it."""
    rows = conn.execute(
        """SELECT asset_id FROM tickets WHERE status = ANY(%s) AND asset_type = 'lamp'
           UNION SELECT l.lamp_id FROM ticket_lamps l JOIN tickets t ON t.id = l.ticket_id
           WHERE t.status = ANY(%s)""",
        (list(WAITING), list(WAITING)),
    ).fetchall()
    return [str(r[0]) for r in rows]


def lamp_failures(
    conn: psycopg.Connection, faults: Sequence[str], since: dt.datetime
) -> list[tuple[str, str, dt.datetime]]:
    """(lamp id, fault, opened at) of every lamp ticket with one of `faults` opened since `since`, oldest first,
    but those that cleared themselves (transient) or were cancelled: the failures a forecast learns from."""
    rows = conn.execute(
        "SELECT asset_id, fault, opened_at FROM tickets WHERE asset_type = 'lamp' AND fault = ANY(%s) "
        "AND opened_at >= %s AND status NOT IN ('transient', 'cancelled') ORDER BY opened_at",
        (list(faults), since),
    ).fetchall()
    return [(str(a), str(f), o) for a, f, o in rows]


def forget_inventory(conn: psycopg.Connection) -> dict[str, int]:
    """Empty the tickets with their lamps, events, outbox and deliveries, and the citizens' reports: each names a
    lamp or cabinet of the inventory being replaced. Crews and their shifts stay."""
    return empty_tables(
        conn,
        ("citizen_reports", "tickets", "ticket_lamps", "ticket_events", "outbox", "deliveries"),
        counted=("tickets", "citizen_reports"),
    )
