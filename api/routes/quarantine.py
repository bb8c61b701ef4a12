"""Rejected messages and why they were rejected."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter

from api.deps import ConnDep, Offset, Viewer, filter_param, limit_param, time_param
from api.errors import ApiError

router = APIRouter(prefix="/api/v1/quarantine", tags=["quarantine"])


def _topic_pattern(topic: str) -> str:
    """An MQTT topic filter (`+` one level, `#` the rest) as an anchored regular expression."""
    levels = topic.split("/")
    if any(("+" in lv and lv != "+") or ("#" in lv and lv != "#") for lv in levels) or "#" in levels[:-1]:
        raise ApiError(422, "invalid", f"topic {topic!r}: '+' must fill a whole level and '#' be the last one", "topic")
    parts = ["[^/]*" if lv == "+" else ".*" if lv == "#" else re.escape(lv) for lv in levels]
    pattern = "/".join(parts)
    if levels[-1] == "#":  # `a/#` also matches `a` itself, as in MQTT
        pattern = "/".join(parts[:-1]) + "(/.*)?"
    return f"^{pattern}$"


@router.get("")
async def list_quarantine(
    user: Viewer,
    conn: ConnDep,
    reason: Annotated[str | None, filter_param("why it was rejected", "not_json", "schema")] = None,
    device: Annotated[str | None, filter_param("a lamp or cabinet id, as in the topic", "XN-CD-000001")] = None,
    topic: Annotated[str | None, filter_param("a topic, or an MQTT filter with + and #", "sl/cd/lamp/+/state")] = None,
    since: Annotated[datetime | None, time_param("received at or after")] = None,
    until: Annotated[datetime | None, time_param("received before")] = None,
    limit: Annotated[int, limit_param(1000)] = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Role: viewer. Newest first; `payload` is the first KiB, decoded as UTF-8 with bad bytes replaced. Filters
    combine: `reason`, `device` (the id in the topic), `topic` (exact, or an MQTT filter), `since`, `until`."""
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
        args.append(_topic_pattern(topic))
    elif topic:
        where.append("topic = %s")
        args.append(topic)
    for bound, op, name in ((since, ">=", "since"), (until, "<", "until")):
        if bound is not None:
            if bound.tzinfo is None:
                raise ApiError(422, "invalid", f"{name} needs a time zone (or epoch milliseconds)", name)
            where.append(f"received_at {op} %s")
            args.append(bound)
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    total = await (await conn.execute(f"SELECT count(*) AS n FROM quarantine{clause}", args)).fetchone()
    rows = await (
        await conn.execute(
            f"SELECT id, received_at, topic, payload, reason, detail FROM quarantine{clause} "
            "ORDER BY id DESC LIMIT %s OFFSET %s",
            [*args, limit, offset],
        )
    ).fetchall()
    items = [{**r, "payload": bytes(r["payload"]).decode("utf-8", "replace")} for r in rows]  # type: ignore[call-overload, dict-item]
    return {"items": items, "total": total["n"] if total else 0, "limit": limit, "offset": offset}  # type: ignore[call-overload]
