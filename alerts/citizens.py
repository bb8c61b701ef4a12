"""Citizens' reports of dark or damaged lamps: attached to the lamp's live ticket, or a P3 ticket to verify."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import psycopg

from alerts.errors import AlertsError
from alerts.tickets import SYSTEM, open_ticket, record_event
from inventory.queries import district_of_lamp

__all__ = ["CITIZEN_FAULT", "CitizenReport", "file_report"]

CITIZEN_FAULT = "citizen_report"  # the fault of a ticket a citizen's report opened


@dataclass(frozen=True)
class CitizenReport:
    id: int
    lamp_id: str
    ticket_id: int
    outcome: str  # "attached" to a live ticket, or "opened" a ticket to verify


def file_report(
    conn: psycopg.Connection, *, lamp_id: str, description: str, contact: str | None, client: str, now: dt.datetime
) -> CitizenReport:
    """Store the report and attach it to the lamp's live ticket (its own, or a cabinet ticket listing it);
    without one, open a P3 `citizen_report` ticket for the district's crew to verify."""
    district = district_of_lamp(conn, lamp_id)
    if district is None:
        raise AlertsError(f"no lamp {lamp_id!r}", "lamp_id", kind="not_found")
    note = f"citizen report: {description}"
    with conn.transaction():
        live = conn.execute(
            """SELECT t.id, t.status, t.crew_id FROM tickets t
               WHERE t.status IN ('open', 'dispatched', 'acknowledged', 'reopened')
                 AND ((t.asset_type = 'lamp' AND t.asset_id = %s)
                      OR t.id IN (SELECT ticket_id FROM ticket_lamps WHERE lamp_id = %s))
               ORDER BY t.priority, t.id LIMIT 1 FOR UPDATE""",
            (lamp_id, lamp_id),
        ).fetchone()
        if live is not None:
            ticket_id, outcome = int(live[0]), "attached"
            record_event(conn, ticket_id, now, SYSTEM, "citizen_report", live[1], live[1], note)
        else:
            change = open_ticket(
                conn,
                priority="P3",
                fault=CITIZEN_FAULT,
                asset_type="lamp",
                asset_id=lamp_id,
                district=district,
                source="citizen",
                first_seen=now,
                now=now,
                detail={"rule": "citizen_report", "description": description},
            )
            ticket_id, outcome = change.ticket_id, "opened" if change.created else "attached"
        rid = conn.execute(
            "INSERT INTO citizen_reports (received_at, lamp_id, ticket_id, description, contact, client) "
            "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
            (now, lamp_id, ticket_id, description, contact, client),
        ).fetchone()
    assert rid is not None
    return CitizenReport(int(rid[0]), lamp_id, ticket_id, outcome)
