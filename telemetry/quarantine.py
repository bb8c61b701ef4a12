"""The quarantine as its readers see it: rejected messages, newest first, filtered by reason, device, topic (an
exact topic or an MQTT filter) and time. Its writer is the ingest's (`telemetry.store`)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from telemetry.errors import TelemetryError

__all__ = ["read_quarantine", "topic_filter_pattern"]


def topic_filter_pattern(topic: str) -> str:
    """An MQTT topic filter (`+` one level, `#` the rest) as an anchored regular expression."""
    levels = topic.split("/")
    if any(("+" in lv and lv != "+") or ("#" in lv and lv != "#") for lv in levels) or "#" in levels[:-1]:
        raise TelemetryError(f"topic {topic!r}: '+' must fill a whole level and '#' be the last one", "topic")
    parts = ["[^/]*" if lv == "+" else ".*" if lv == "#" else re.escape(lv) for lv in levels]
    pattern = "/".join(parts)
    if levels[-1] == "#":  # `a/#` also matches `a` itself, as in MQTT
        pattern = "/".join(parts[:-1]) + "(/.*)?"
    return f"^{pattern}$"


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
        args.append(topic_filter_pattern(topic))
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
