"""Submitting a command: resolve its target to lamps, store the campaign, and record the override it implies.

Targets: `{"lamps": [...]}`, `{"cabinet": id, "circuit"?: n}`, `{"road": id}`, `{"district": code}`,
`{"road_class": name}`, `{"all": true}`. A `switch` or `dim` is also written as the override of the target's
schedule scopes, so the lighting rate's notion of due follows it and the schedule resumes by itself at `until`
(or at the lamps' next scheduled switching when `until` is null); `resume` removes those overrides. A
`schedule` sends its profile for the devices to run on their own and stores it in the same scopes, so the
backend expects what the devices do.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import psycopg
from psycopg.types.json import Jsonb

from telemetry.expected import Expected
from telemetry.fleet import ROAD_CLASSES, FleetIndex
from telemetry.lighting import get_schedule, put_schedule
from telemetry.schedules import Override, Profile, ScheduleDoc, ScheduleError, decode_doc

__all__ = ["CommandError", "CommandRequest", "Submitted", "submit"]

OPS = ("switch", "dim", "resume", "schedule", "report")


class CommandError(ValueError):
    def __init__(self, message: str, field: str | None = None, *, status: int = 422) -> None:
        super().__init__(message)
        self.field = field
        self.status = status


class CommandRequest(msgspec.Struct, forbid_unknown_fields=True):
    target: dict[str, Any]
    op: str
    on: bool | None = None
    level: int | None = None
    until: dt.datetime | None = None
    reason: str | None = None
    profile: dict[str, Any] | None = None


@dataclass(frozen=True)
class Submitted:
    id: str
    lamps: int


def _resolve(index: FleetIndex, target: dict[str, Any]) -> tuple[npt.NDArray[np.intp], list[tuple[str, str]]]:
    """Lamp slots of a target, and the schedule scopes its override is written to."""
    keys = set(target)
    if len(keys - {"circuit"}) != 1:
        raise CommandError(
            "target names exactly one of lamps, cabinet (and circuit), road, district, road_class, all", "target"
        )
    ix = index
    if "lamps" in target:
        ids = target["lamps"]
        if not isinstance(ids, list) or not ids or not all(isinstance(x, str) for x in ids):
            raise CommandError("target.lamps must be a non-empty list of lamp ids", "target.lamps")
        unknown = [x for x in ids if x not in ix.slot_of_id]
        if unknown:
            raise CommandError(
                f"unknown lamps: {', '.join(unknown[:5])}" + (" …" if len(unknown) > 5 else ""), "target.lamps"
            )
        slots = np.array(sorted({ix.slot_of_id[x] for x in ids}), dtype=np.intp)
        return slots, [("lamp", ix.lamp_id[i]) for i in slots.tolist()]
    if "cabinet" in target:
        cab = ix.cabinet_of.get(str(target["cabinet"]))
        if cab is None:
            raise CommandError(f"unknown cabinet {target['cabinet']!r}", "target.cabinet")
        slots = ix.lamps_of_cabinet(cab)
        if "circuit" in target:
            assert ix.lamp_circuit is not None
            circuit = target["circuit"]
            if not isinstance(circuit, int) or not 1 <= circuit <= 6:
                raise CommandError("target.circuit must be 1–6", "target.circuit")
            slots = slots[ix.lamp_circuit[slots] == circuit]
            if not len(slots):
                raise CommandError(f"cabinet {target['cabinet']} has no lamps on circuit {circuit}", "target.circuit")
            return np.sort(slots), [("lamp", ix.lamp_id[i]) for i in np.sort(slots).tolist()]
        return np.sort(slots), [("cabinet", ix.cabinet_ids[cab])]
    if "road" in target:
        raw = target["road"]
        number = str(raw) if isinstance(raw, int | str) and not isinstance(raw, bool) else ""
        road = ix.road_of.get(int(number)) if number.isascii() and number.isdigit() else None
        if road is None:
            raise CommandError(f"unknown road {target['road']!r}", "target.road")
        return np.flatnonzero(ix.lamp_road == road), [("road", str(int(ix.road_ids[road])))]
    if "district" in target:
        d = ix.district_of.get(str(target["district"]))
        if d is None:
            raise CommandError(f"unknown district {target['district']!r}", "target.district")
        return np.flatnonzero(ix.lamp_district == d), [("district", ix.districts[d])]
    if "road_class" in target:
        name = str(target["road_class"])
        if name not in ROAD_CLASSES:
            raise CommandError(f"road_class must be one of {', '.join(ROAD_CLASSES)}", "target.road_class")
        cls = ROAD_CLASSES.index(name)
        roads = np.flatnonzero(ix.road_class == cls)
        return np.flatnonzero(ix.lamp_class == cls), [("road", str(int(ix.road_ids[r]))) for r in roads.tolist()]
    if target.get("all") is True:
        return np.arange(ix.n, dtype=np.intp), [("city", "all")]
    raise CommandError(f"unknown target {sorted(keys)}", "target")


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
    slots, scopes = _resolve(index, req.target)
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
