"""Submitting a command: resolve its target to lamps, store the campaign, and record the override it implies.

The target is resolved by `commands.targets`. A `switch` or `dim` is also written as the override of the target's
schedule scopes, so the lighting rate's notion of due follows it and the schedule resumes by itself at `until`
(or at the lamps' next scheduled switching when `until` is null); `resume` removes those overrides. A
`schedule` sends its profile for the devices to run on their own and stores it in the same scopes, so the
backend expects what the devices do.
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

import msgspec
import numpy as np
import psycopg
from psycopg.types.json import Jsonb

from commands.model import CHANNEL, OPS, CommandError, CommandRequest, Submitted
from commands.targets import resolve
from inventory.index import FleetIndex
from lighting.engine import get_schedule, put_schedule
from lighting.expected import Expected
from lighting.schedules import Override, Profile, ScheduleDoc, ScheduleError, decode_doc

__all__ = ["submit"]


def _params(req: CommandRequest) -> dict[str, Any]:
    if req.op not in OPS:
        raise CommandError(f"op must be one of {', '.join(OPS)}, got {req.op!r}", "op")
    if req.op == "switch":
        if req.on is None:
            raise CommandError("a switch needs on: true or false", "on")
        return {"on": req.on, "until": None}
    if req.op == "dim":
        if req.level is None or not 0 <= req.level <= 100:
            raise CommandError("a dim needs level 0–100", "level")
        return {"level": req.level, "until": None}
    if req.op == "schedule":
        if not req.profile:
            raise CommandError("a schedule command needs the profile to install", "profile")
        _profile(req.profile)  # refused here, not by 110,000 devices one by one
        return {"profile": req.profile}
    return {}


def submit(
    conn: psycopg.Connection,
    index: FleetIndex,
    expected: Expected,
    req: CommandRequest,
    *,
    actor: str,
    now: dt.datetime,
    pace: float,
    ack_window_s: float = 60.0,
) -> Submitted:
    """Store a campaign (and its override) in one transaction; the gateway's command engine sends it."""
    params = _params(req)
    if req.until is not None and req.until.tzinfo is None:
        raise CommandError("until must carry a time zone offset", "until")
    if req.until is not None and req.until <= now:
        raise CommandError("until must be in the future", "until")
    slots, scopes = resolve(index, req.target)
    if not len(slots):
        raise CommandError("the target has no lamps", "target")
    cabinets = len(np.unique(index.lamp_cabinet[slots]))
    if cabinets > 1 and not (req.reason or "").strip():
        raise CommandError(f"a command to {cabinets} cabinets needs a reason (it is kept in the audit)", "reason")
    now_ms = int(now.timestamp() * 1000)
    until = req.until
    if req.op in ("switch", "dim") and until is None:
        nxt = expected.next_event(now_ms, slots)
        until = dt.datetime.fromtimestamp((nxt or now_ms + 86_400_000) / 1000, dt.UTC)
        params["until"] = None  # the devices fall back to their own next schedule event
    elif req.op in ("switch", "dim"):
        assert until is not None
        params["until"] = int(until.timestamp() * 1000)
    cid = secrets.token_hex(8)
    # Long enough to reach every lamp at the pace, plus time for answers and retries.
    expires = now + dt.timedelta(seconds=len(slots) / pace + ack_window_s * 3)
    with conn.transaction():
        conn.execute(
            "INSERT INTO commands (id, op, params, target, reason, actor, status, pace, total, created_at, expires_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, 'queued', %s, %s, %s, %s)",
            (cid, req.op, Jsonb(params), Jsonb(req.target), req.reason, actor, pace, len(slots), now, expires),
        )
        with conn.cursor().copy("COPY command_lamps (command_id, lamp_id, district, state) FROM STDIN") as cp:
            for i in slots.tolist():
                cp.write_row((cid, index.lamp_id[i], index.districts[int(index.lamp_district[i])], "queued"))
        if req.op in ("switch", "dim", "resume"):
            override = None
            if req.op != "resume":
                assert until is not None
                override = Override(
                    until=until,
                    on=req.on if req.op == "switch" else None,
                    level=req.level if req.op == "dim" and req.level is not None else 100,
                )
            for scope, key in scopes:
                _set_override(conn, scope, key, override)
        if req.op == "schedule":
            assert req.profile is not None
            for scope, key in scopes:
                _set_profile(conn, scope, key, _profile(req.profile))
        conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, cid))  # delivered at commit: the engine wakes
    return Submitted(cid, len(slots))


def _profile(raw: dict[str, Any]) -> Profile:
    """The profile of a `schedule` command, validated as the schedules API validates one."""
    try:
        profile = decode_doc(msgspec.json.encode({"profile": raw})).profile
    except ScheduleError as exc:
        raise CommandError(f"the profile is not usable: {exc}", exc.field or "profile") from None
    assert profile is not None
    return profile


def _set_profile(conn: psycopg.Connection, scope: str, key: str, profile: Profile) -> None:
    """The backend expects what the devices now run: the scope's document gets the installed profile."""
    current = get_schedule(conn, scope, key) or {}
    doc = msgspec.convert({k: v for k, v in current.items() if k in ("windows", "override")}, ScheduleDoc, strict=False)
    doc.profile = profile
    put_schedule(conn, scope, key, doc)


def _set_override(conn: psycopg.Connection, scope: str, key: str, override: Override | None) -> None:
    current = get_schedule(conn, scope, key)
    if current is None and override is None:
        return
    doc = msgspec.convert(
        {k: v for k, v in (current or {}).items() if k in ("profile", "windows")}, ScheduleDoc, strict=False
    )
    doc.override = override
    put_schedule(conn, scope, key, doc)
