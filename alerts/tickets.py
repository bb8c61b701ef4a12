"""Tickets and their lifecycle in PostgreSQL, each change committed together with its notifications (outbox).

States: open → dispatched → acknowledged → resolved → verified; also cancelled, transient, reopened. Every
transition is a `ticket_events` row (who, when, note, parts); every event a crew should hear of puts one
`outbox` row per channel of that crew in the same transaction, so a crash can neither lose a notification nor
send one for a change that did not commit. Dispatchers (`alerts.dispatch`) deliver the outbox.

All functions take an open connection and run in a transaction of their own.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from alerts.errors import AlertsError
from inventory.queries import asset_place

__all__ = [
    "ACTIONS",
    "LIVE",
    "SYSTEM",
    "WAITING",
    "Deadlines",
    "TicketError",
    "act",
    "add_lamps",
    "clear_fault",
    "escalate_overdue",
    "get_ticket",
    "on_duty_crew",
    "open_ticket",
    "record_event",
    "reopen",
]

logger = logging.getLogger(__name__)

LIVE = ("open", "dispatched", "acknowledged", "resolved", "reopened")
UNACKED = ("open", "dispatched", "reopened")
# Still waiting for someone (a resolved ticket waits only for its verification): the control room's open tickets.
WAITING = tuple(s for s in LIVE if s != "resolved")
EVENTS_CHANNEL = "lamplighter_ticket_events"  # NOTIFY'd with each event's id as it commits
ACTIONS = ("acknowledge", "resolve", "cancel", "comment", "reassign")
SYSTEM = "system"


class TicketError(AlertsError):
    """A ticket action that cannot be done: by default the ticket's state does not allow it (`conflict`)."""

    kind = "conflict"


@dataclass(frozen=True)
class Deadlines:
    """Per priority: time to acknowledge (P1 only by default) and time to repair (None: no deadline)."""

    acknowledge: dict[str, dt.timedelta | None] = field(
        default_factory=lambda: {"P1": dt.timedelta(minutes=15), "P2": None, "P3": None, "P4": None}
    )
    repair: dict[str, dt.timedelta | None] = field(
        default_factory=lambda: {
            "P1": dt.timedelta(hours=1),
            "P2": dt.timedelta(hours=24),
            "P3": dt.timedelta(hours=48),
            "P4": None,
        }
    )


@dataclass(frozen=True)
class Change:
    ticket_id: int
    status: str
    created: bool = False


# -- crews --------------------------------------------------------------------------------------------------


def on_duty_crew(conn: psycopg.Connection, district: str, now: dt.datetime) -> str | None:
    """The crew to send a ticket of `district` to: on duty now (a crew without a roster always is)."""
    row = conn.execute(
        """SELECT c.id FROM crews c
           WHERE %s = ANY (c.districts) AND NOT c.supervisor
             AND (NOT EXISTS (SELECT 1 FROM crew_shifts s WHERE s.crew_id = c.id)
                  OR EXISTS (SELECT 1 FROM crew_shifts s WHERE s.crew_id = c.id
                             AND s.starts_at <= %s AND %s < s.ends_at))
           ORDER BY (SELECT count(*) FROM tickets t WHERE t.crew_id = c.id AND t.status IN ('dispatched',
                     'acknowledged', 'reopened')), c.id
           LIMIT 1""",
        (district, now, now),
    ).fetchone()
    return str(row[0]) if row else None


def _channels(conn: psycopg.Connection, crew_id: str) -> list[str]:
    row = conn.execute(
        "SELECT webhook_url IS NOT NULL, cardinality(notify_urls) > 0, mqtt FROM crews WHERE id = %s", (crew_id,)
    ).fetchone()
    if row is None:
        return []
    return [name for name, on in zip(("webhook", "notify", "mqtt"), row, strict=True) if on]


# -- events and the outbox ----------------------------------------------------------------------------------


def ticket_json(conn: psycopg.Connection, ticket_id: int, now: dt.datetime | None = None) -> dict[str, Any]:
    """A ticket as the API and the notifications show it."""
    with conn.cursor(row_factory=dict_row) as cur:
        t = cur.execute(
            "SELECT id, priority, fault, asset_type, asset_id, district, crew_id AS crew, status, source, opened_at, "
            "updated_at, first_seen, last_seen, occurrences, ack_deadline, deadline, escalated_at, detail "
            "FROM tickets t WHERE t.id = %s",
            (ticket_id,),
        ).fetchone()
        if t is None:
            raise TicketError(f"ticket {ticket_id} does not exist", kind="not_found", field="id")
        lamps = [
            r["lamp_id"]
            for r in cur.execute("SELECT lamp_id FROM ticket_lamps WHERE ticket_id = %s ORDER BY lamp_id", (ticket_id,))
        ]
    t["district_zh"], t["district_en"], location = asset_place(conn, t["asset_id"], t["district"])
    t["lamps"] = lamps
    t["location"] = location
    t["overdue"] = _overdue(t, now or dt.datetime.now(dt.UTC))
    return t


def _overdue(t: dict[str, Any], now: dt.datetime) -> bool:
    if t["status"] not in LIVE or t["status"] == "resolved":
        return False
    if t["ack_deadline"] is not None and t["status"] in UNACKED and now > t["ack_deadline"]:
        return True
    return t["deadline"] is not None and now > t["deadline"]


def record_event(
    conn: psycopg.Connection,
    ticket_id: int,
    now: dt.datetime,
    actor: str,
    action: str,
    from_status: str | None,
    to_status: str | None,
    note: str = "",
    parts: Sequence[str] = (),
    *,
    notify: Iterable[str] = (),
) -> int:
    """Record one event; queue it in the outbox for every channel of the crews in `notify`."""
    row = conn.execute(
        "INSERT INTO ticket_events (ticket_id, ts, actor, action, from_status, to_status, note, parts) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (ticket_id, now, actor, action, from_status, to_status, note, list(parts)),
    ).fetchone()
    assert row is not None
    event_id = int(row[0])
    crews = [c for c in dict.fromkeys(notify) if c]
    if crews:
        ticket = ticket_json(conn, ticket_id, now)
        for crew in crews:
            body = {
                "event": {
                    "id": event_id,
                    "ticket_id": ticket_id,
                    "ts": now.isoformat(),
                    "actor": actor,
                    "action": action,
                    "from_status": from_status,
                    "to_status": to_status,
                    "note": note,
                    "parts": list(parts),
                },
                "ticket": _plain(ticket),
                "crew": crew,
            }
            for channel in _channels(conn, crew):
                conn.execute(
                    "INSERT INTO outbox (ticket_id, event_id, channel, crew_id, idempotency_key, payload) "
                    "VALUES (%s, %s, %s, %s, %s, %s)",
                    (
                        ticket_id,
                        event_id,
                        channel,
                        crew,
                        f"ticket-{ticket_id}-event-{event_id}-{crew}-{channel}",
                        Jsonb(body),
                    ),
                )
            conn.execute("SELECT pg_notify('lamplighter_outbox', %s)", (str(event_id),))
    conn.execute("SELECT pg_notify(%s, %s)", (EVENTS_CHANNEL, str(event_id)))
    return event_id


def _plain(value: Any) -> Any:
    """JSON-ready: datetimes as ISO text, recursively."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return value


def _lock(conn: psycopg.Connection, ticket_id: int) -> tuple[str, str | None]:
    row = conn.execute("SELECT status, crew_id FROM tickets WHERE id = %s FOR UPDATE", (ticket_id,)).fetchone()
    if row is None:
        raise TicketError(f"ticket {ticket_id} does not exist", kind="not_found", field="id")
    return str(row[0]), row[1]


def _set_status(conn: psycopg.Connection, ticket_id: int, status: str, now: dt.datetime) -> None:
    conn.execute("UPDATE tickets SET status = %s, updated_at = %s WHERE id = %s", (status, now, ticket_id))


# -- what the fault engine does -----------------------------------------------------------------------------


def open_ticket(
    conn: psycopg.Connection,
    *,
    priority: str,
    fault: str,
    asset_type: str,
    asset_id: str,
    district: str,
    source: str,
    first_seen: dt.datetime,
    now: dt.datetime,
    lamps: Sequence[str] = (),
    detail: dict[str, Any] | None = None,
    deadlines: Deadlines | None = None,
) -> Change:
    """Open a ticket and dispatch it to the district's on-duty crew; a live ticket for the same asset and fault
    is updated instead (occurrences, last seen, lamps)."""
    d = deadlines or Deadlines()
    ack, fix = d.acknowledge.get(priority), d.repair.get(priority)
    with conn.transaction():
        row = conn.execute(
            """INSERT INTO tickets (priority, fault, asset_type, asset_id, district, status, source, opened_at,
                   updated_at, first_seen, last_seen, ack_deadline, deadline, detail)
               VALUES (%s, %s, %s, %s, %s, 'open', %s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (asset_type, asset_id, fault)
                   WHERE status IN ('open', 'dispatched', 'acknowledged', 'resolved', 'reopened')
               DO UPDATE SET occurrences = tickets.occurrences + 1, last_seen = EXCLUDED.last_seen,
                   updated_at = EXCLUDED.updated_at
               RETURNING id, status, xmax = 0""",
            (
                priority,
                fault,
                asset_type,
                asset_id,
                district,
                source,
                now,
                now,
                first_seen,
                now,
                now + ack if ack else None,
                now + fix if fix else None,
                Jsonb(detail or {}),
            ),
        ).fetchone()
        assert row is not None
        ticket_id, status, created = int(row[0]), str(row[1]), bool(row[2])
        if lamps:
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO ticket_lamps (ticket_id, lamp_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                    [(ticket_id, lamp) for lamp in lamps],
                )
        if not created:
            record_event(conn, ticket_id, now, SYSTEM, "repeat", status, status, f"{fault} seen again")
            return Change(ticket_id, status)
        crew = on_duty_crew(conn, district, now)
        note = f"{fault} on {asset_type} {asset_id}" + (f", {len(lamps)} lamps" if lamps else "")
        if crew is None:
            record_event(
                conn, ticket_id, now, SYSTEM, "opened", None, "open", note + "; no crew on duty in " + district
            )
            logger.warning(
                "ticket %d (%s on %s) has no on-duty crew in district %s", ticket_id, fault, asset_id, district
            )
            status = "open"
        else:
            conn.execute("UPDATE tickets SET crew_id = %s, status = 'dispatched' WHERE id = %s", (crew, ticket_id))
            record_event(
                conn,
                ticket_id,
                now,
                SYSTEM,
                "opened",
                None,
                "dispatched",
                f"{note}; sent to crew {crew}",
                notify=[crew],
            )
            status = "dispatched"
        if lamps and asset_type == "cabinet":
            _merge_lamp_tickets(conn, ticket_id, lamps, now)
    return Change(ticket_id, status, created=True)


_OUTAGE_FAULTS = ("night_out", "comm_loss", "supply_loss")


def add_lamps(
    conn: psycopg.Connection, *, asset_id: str, fault: str, lamps: Sequence[str], now: dt.datetime
) -> int | None:
    """More lamps went dark behind an open cabinet ticket: list them too (and close their own tickets)."""
    with conn.transaction():
        live = _live(conn, "cabinet", asset_id, fault)
        if live is None:
            return None
        tid = live[0]
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO ticket_lamps (ticket_id, lamp_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                [(tid, lamp) for lamp in lamps],
            )
        count = conn.execute("SELECT count(*) FROM ticket_lamps WHERE ticket_id = %s", (tid,)).fetchone()
        conn.execute("UPDATE tickets SET last_seen = %s, updated_at = %s WHERE id = %s", (now, now, tid))
        record_event(conn, tid, now, SYSTEM, "lamps", live[1], live[1], f"{count[0] if count else 0} lamps listed")
        _merge_lamp_tickets(conn, tid, lamps, now)
        return tid


def _merge_lamp_tickets(conn: psycopg.Connection, cabinet_ticket: int, lamps: Sequence[str], now: dt.datetime) -> None:
    """Lamps a cabinet ticket lists get no tickets of their own: close those opened before the correlation."""
    rows = conn.execute(
        "SELECT id, status, crew_id FROM tickets WHERE asset_type = 'lamp' AND asset_id = ANY(%s) "
        "AND fault = ANY(%s) AND status IN ('open', 'dispatched', 'reopened') FOR UPDATE",
        (list(lamps), list(_OUTAGE_FAULTS)),
    ).fetchall()
    for tid, status, crew in rows:
        _set_status(conn, tid, "cancelled", now)
        record_event(
            conn,
            tid,
            now,
            SYSTEM,
            "merged",
            status,
            "cancelled",
            f"part of cabinet ticket #{cabinet_ticket}",
            notify=[crew] if crew else [],
        )


def _live(conn: psycopg.Connection, asset_type: str, asset_id: str, fault: str) -> tuple[int, str, str | None] | None:
    row = conn.execute(
        "SELECT id, status, crew_id FROM tickets WHERE asset_type = %s AND asset_id = %s AND fault = %s "
        "AND status = ANY(%s) FOR UPDATE",
        (asset_type, asset_id, fault, list(LIVE)),
    ).fetchone()
    return (int(row[0]), str(row[1]), row[2]) if row else None


def clear_fault(
    conn: psycopg.Connection, *, asset_type: str, asset_id: str, fault: str, now: dt.datetime
) -> Change | None:
    """The asset reports healthy (twice): verify a resolved ticket, close an untouched one as transient."""
    with conn.transaction():
        live = _live(conn, asset_type, asset_id, fault)
        if live is None:
            return None
        tid, status, crew = live
        human = conn.execute(
            "SELECT 1 FROM ticket_events WHERE ticket_id = %s AND actor <> %s LIMIT 1", (tid, SYSTEM)
        ).fetchone()
        if status == "resolved":
            _set_status(conn, tid, "verified", now)
            record_event(
                conn,
                tid,
                now,
                SYSTEM,
                "verified",
                status,
                "verified",
                "the asset reports healthy",
                notify=[crew] if crew else [],
            )
            return Change(tid, "verified")
        if status in UNACKED and human is None:
            _set_status(conn, tid, "transient", now)
            record_event(
                conn,
                tid,
                now,
                SYSTEM,
                "cleared",
                status,
                "transient",
                "the fault cleared before anyone acted",
                notify=[crew] if crew else [],
            )
            return Change(tid, "transient")
        record_event(conn, tid, now, SYSTEM, "fault_cleared", status, status, "the asset reports healthy again")
        return Change(tid, status)


def reopen(conn: psycopg.Connection, *, asset_type: str, asset_id: str, fault: str, now: dt.datetime) -> Change | None:
    """A resolved ticket whose fault is still there goes back to its crew."""
    with conn.transaction():
        live = _live(conn, asset_type, asset_id, fault)
        if live is None or live[1] != "resolved":
            return None
        tid, status, crew = live
        _set_status(conn, tid, "reopened", now)
        record_event(
            conn,
            tid,
            now,
            SYSTEM,
            "reopened",
            status,
            "reopened",
            "resolved, but the fault is still reported",
            notify=[crew] if crew else [],
        )
        return Change(tid, "reopened")


# -- what people do -----------------------------------------------------------------------------------------

_FROM = {
    "acknowledge": ("open", "dispatched", "reopened"),
    "resolve": ("open", "dispatched", "acknowledged", "reopened"),
    "cancel": ("open", "dispatched", "acknowledged", "reopened", "resolved"),
    "reassign": ("open", "dispatched", "acknowledged", "reopened"),
    "comment": (*LIVE, "verified", "cancelled", "transient"),
}
_TO = {"acknowledge": "acknowledged", "resolve": "resolved", "cancel": "cancelled", "reassign": "dispatched"}


def act(
    conn: psycopg.Connection,
    ticket_id: int,
    action: str,
    *,
    actor: str,
    now: dt.datetime,
    note: str = "",
    parts: Sequence[str] = (),
    crew: str | None = None,
) -> Change:
    """A person's action on a ticket; refused (409) when the ticket's state does not allow it."""
    if action not in ACTIONS:
        raise TicketError(f"action must be one of {', '.join(ACTIONS)}, got {action!r}", kind="invalid", field="action")
    if action == "reassign" and not crew:
        raise TicketError("reassign needs the crew to send the ticket to", kind="invalid", field="crew")
    if action == "comment" and not note.strip():
        raise TicketError("a comment needs a note", kind="invalid", field="note")
    with conn.transaction():
        status, current_crew = _lock(conn, ticket_id)
        if status not in _FROM[action]:
            raise TicketError(f"cannot {action} ticket {ticket_id}: it is {status}", field="action")
        if action == "comment":
            record_event(conn, ticket_id, now, actor, "comment", status, status, note, parts)
            return Change(ticket_id, status)
        to = _TO[action]
        notify = [current_crew] if current_crew else []
        if action == "reassign":
            if conn.execute("SELECT 1 FROM crews WHERE id = %s", (crew,)).fetchone() is None:
                raise TicketError(f"crew {crew!r} does not exist", kind="invalid", field="crew")
            conn.execute("UPDATE tickets SET crew_id = %s WHERE id = %s", (crew, ticket_id))
            notify = [c for c in (current_crew, crew) if c]
            note = note or f"reassigned to crew {crew}"
        _set_status(conn, ticket_id, to, now)
        record_event(conn, ticket_id, now, actor, action, status, to, note, parts, notify=notify)
        return Change(ticket_id, to)


def escalate_overdue(conn: psycopg.Connection, now: dt.datetime) -> list[int]:
    """Tickets past their deadline (or a P1 not acknowledged in time) go to the supervisors' channel, once."""
    with conn.transaction():
        rows = conn.execute(
            """SELECT id, status FROM tickets
               WHERE escalated_at IS NULL AND status IN ('open', 'dispatched', 'acknowledged', 'reopened')
                 AND ((deadline IS NOT NULL AND deadline < %s)
                      OR (ack_deadline IS NOT NULL AND ack_deadline < %s AND status <> 'acknowledged'))
               FOR UPDATE SKIP LOCKED""",
            (now, now),
        ).fetchall()
        supervisors = [r[0] for r in conn.execute("SELECT id FROM crews WHERE supervisor ORDER BY id")]
        for tid, status in rows:
            conn.execute("UPDATE tickets SET escalated_at = %s WHERE id = %s", (now, tid))
            record_event(
                conn,
                tid,
                now,
                SYSTEM,
                "escalated",
                status,
                status,
                "overdue: escalated to the supervisors",
                notify=supervisors,
            )
        if rows:
            logger.warning("escalated %d overdue tickets to %d supervisor crews", len(rows), len(supervisors))
        return [int(r[0]) for r in rows]


def get_ticket(conn: psycopg.Connection, ticket_id: int, now: dt.datetime | None = None) -> dict[str, Any]:
    """A ticket with its history and its deliveries."""
    t = ticket_json(conn, ticket_id, now)
    with conn.cursor(row_factory=dict_row) as cur:
        t["history"] = cur.execute(
            "SELECT id, ts, actor, action, from_status, to_status, note, parts FROM ticket_events "
            "WHERE ticket_id = %s ORDER BY id",
            (ticket_id,),
        ).fetchall()
        t["deliveries"] = cur.execute(
            """SELECT o.id AS outbox_id, o.event_id, o.channel, o.crew_id AS crew, o.idempotency_key, o.attempts,
                      o.delivered_at, o.next_attempt_at, o.last_error, o.dead_at
               FROM outbox o WHERE o.ticket_id = %s ORDER BY o.id""",
            (ticket_id,),
        ).fetchall()
        attempts = cur.execute(
            "SELECT outbox_id, attempt, ts, ok, detail, duration_ms FROM deliveries WHERE ticket_id = %s ORDER BY id",
            (ticket_id,),
        ).fetchall()
    for d in t["deliveries"]:
        d["log"] = [a for a in attempts if a["outbox_id"] == d["outbox_id"]]
    return t
