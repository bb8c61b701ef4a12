"""The quarantine as its readers see it: rejected messages, newest first, filtered by reason, device, topic (an
exact topic or an MQTT filter) and time. Its writer is the ingest's (`telemetry.store`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from protocol.topics import filter_pattern
from telemetry.errors import TelemetryError

__all__ = ["read_quarantine"]


async def read_quarantine(
    conn: psycopg.AsyncConnection[Any],
    *,
    reason: str | None = None,
    device: str | None = None,
    topic: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[int, list[dict[str, Any]]]:
    """(how many match, the page of them): `payload` is the first KiB, decoded as UTF-8 with bad bytes replaced."""
    where: list[str] = []
    args: list[object] = []
    if reason:
        where.append("reason = %s")
        args.append(reason)
    if device:
        where.append("split_part(topic, '/', 4) = %s")
        args.append(device)
    if topic and ("+" in topic or "#" in topic):
        where.append("topic ~ %s")
        try:
            args.append(filter_pattern(topic))
        except ValueError as exc:
            raise TelemetryError(f"topic {topic!r}: {exc}", "topic") from None
    elif topic:
        where.append("topic = %s")
        args.append(topic)
    for bound, op, name in ((since, ">=", "since"), (until, "<", "until")):
        if bound is not None:
            if bound.tzinfo is None:
                raise TelemetryError(f"{name} needs a time zone (or epoch milliseconds)", name)
            where.append(f"received_at {op} %s")
            args.append(bound)
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT count(*) AS n FROM quarantine{clause}", args)
        total = await cur.fetchone()
        await cur.execute(
            f"SELECT id, received_at, topic, payload, reason, detail FROM quarantine{clause} "
            "ORDER BY id DESC LIMIT %s OFFSET %s",
            [*args, limit, offset],
        )
        rows = await cur.fetchall()
    items = [{**r, "payload": bytes(r["payload"]).decode("utf-8", "replace")} for r in rows]
    return (int(total["n"]) if total else 0), items
