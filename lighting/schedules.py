"""Schedule documents: profiles, planned outages and maintenance windows, overrides — their shape and checks.

A document is attached to a scope (`city`/`all`, a district code, a road id, a cabinet id or a lamp id):

    {"profile": {"mode": "astro", "on_offset_min": 10, "off_offset_min": -10, "level": 100,
                 "steps": [{"at": "00:00", "level": 50}, {"at": "05:00", "level": 100}],
                 "exceptions": [{"date": "2027-02-06", "level": 100}], "timezone": "Asia/Shanghai"},
     "windows": [{"kind": "maintenance", "start": "2026-12-01T01:00:00+08:00", "end": "...", "note": "..."}],
     "override": {"on": true, "level": 60, "until": "2026-12-01T06:00:00+08:00"}}

Times (`start`, `end`, `until`) are ISO 8601 with an offset or, as in the field protocol, epoch milliseconds.

The most specific profile and the most specific unexpired override win; windows add up over every scope that
contains a lamp. Pure: parsing and validation only; `lighting.expected` evaluates them.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from kernel.instants import decode_json
from lighting.errors import LightingError

__all__ = [
    "DEFAULT_CITY_PROFILE",
    "SCOPES",
    "DateException",
    "Override",
    "Profile",
    "ScheduleDoc",
    "ScheduleError",
    "Step",
    "Window",
    "decode_doc",
    "minutes_of",
]

# From least to most specific.
SCOPES = ("city", "district", "road", "cabinet", "lamp")
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class ScheduleError(LightingError):
    """A schedule document that cannot be used, or a scope that does not exist (`kind="not_found"`); `field`
    names the offending part."""


def minutes_of(hhmm: str, field: str) -> int:
    """'HH:MM' → minutes after midnight; a clear error otherwise."""
    m = _HHMM.fullmatch(hhmm)
    if not m:
        raise ScheduleError(f"{field} must be a local time HH:MM (00:00–23:59), got {hhmm!r}", field)
    return int(m.group(1)) * 60 + int(m.group(2))


class Step(msgspec.Struct, forbid_unknown_fields=True):
    at: str
    level: int


class DateException(msgspec.Struct, forbid_unknown_fields=True):
    """The night that begins on `date` (local): a fixed level all night (festivals), or not lit at all (`off`)."""

    date: dt.date
    level: int | None = None
    off: bool = False


class Profile(msgspec.Struct, forbid_unknown_fields=True):
    mode: Literal["astro", "fixed", "always"]
    on_offset_min: int = 10  # astro: minutes after sunset
    off_offset_min: int = -10  # astro: minutes after sunrise (negative: before it)
    on_at: str | None = None  # fixed: local on time
    off_at: str | None = None  # fixed: local off time (the next morning when earlier than on_at)
    level: int = 100
    steps: list[Step] = msgspec.field(default_factory=list)
    exceptions: list[DateException] = msgspec.field(default_factory=list)
    timezone: str = "Asia/Shanghai"


class Window(msgspec.Struct, forbid_unknown_fields=True):
    """A planned outage or a maintenance window: its lamps count neither as due nor as day-burning."""

    kind: Literal["outage", "maintenance"]
    start: dt.datetime
    end: dt.datetime
    note: str = ""


class Override(msgspec.Struct, forbid_unknown_fields=True):
    """An operator's switch or dim: holds until `until`, then the profile resumes. `on` None (a dim): the lamps
    keep the profile's on and off, at `level` while on."""

    until: dt.datetime
    on: bool | None = None
    level: int = 100


class ScheduleDoc(msgspec.Struct, forbid_unknown_fields=True):
    profile: Profile | None = None
    windows: list[Window] = msgspec.field(default_factory=list)
    override: Override | None = None


DEFAULT_CITY_PROFILE = Profile(mode="astro", on_offset_min=10, off_offset_min=-10, timezone="Asia/Shanghai")


def _level(value: int, field: str) -> None:
    if not 0 <= value <= 100:
        raise ScheduleError(f"{field} must be 0–100 %, got {value}", field)


def _aware(value: dt.datetime, field: str) -> None:
    if value.tzinfo is None:
        raise ScheduleError(f"{field} must carry a time zone offset, got {value.isoformat()}", field)


def validate(doc: ScheduleDoc) -> ScheduleDoc:
    """Check what the types alone cannot; raises ScheduleError naming the field."""
    p = doc.profile
    if p is not None:
        try:
            ZoneInfo(p.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ScheduleError(f"unknown time zone {p.timezone!r}", "profile.timezone") from None
        _level(p.level, "profile.level")
        for name in ("on_offset_min", "off_offset_min"):
            if abs(getattr(p, name)) > 180:
                raise ScheduleError(f"profile.{name} must be within ±180 minutes", f"profile.{name}")
        if p.mode == "fixed":
            if p.on_at is None or p.off_at is None:
                raise ScheduleError("a fixed profile needs on_at and off_at (local HH:MM)", "profile.on_at")
            if minutes_of(p.on_at, "profile.on_at") == minutes_of(p.off_at, "profile.off_at"):
                raise ScheduleError("profile.on_at and profile.off_at must differ", "profile.off_at")
        seen: set[int] = set()
        for i, s in enumerate(p.steps):
            m = minutes_of(s.at, f"profile.steps[{i}].at")
            _level(s.level, f"profile.steps[{i}].level")
            if m in seen:
                raise ScheduleError(f"two dimming steps at {s.at}", f"profile.steps[{i}].at")
            seen.add(m)
        dates: set[dt.date] = set()
        for i, e in enumerate(p.exceptions):
            if e.level is not None:
                _level(e.level, f"profile.exceptions[{i}].level")
            if e.level is None and not e.off:
                raise ScheduleError("an exception sets a level or off", f"profile.exceptions[{i}]")
            if e.date in dates:
                raise ScheduleError(f"two exceptions for {e.date}", f"profile.exceptions[{i}].date")
            dates.add(e.date)
    for i, w in enumerate(doc.windows):
        _aware(w.start, f"windows[{i}].start")
        _aware(w.end, f"windows[{i}].end")
        if w.end <= w.start:
            raise ScheduleError("a window must end after it starts", f"windows[{i}].end")
    if doc.override is not None:
        _aware(doc.override.until, "override.until")
        _level(doc.override.level, "override.level")
    return doc


def _field_of(message: str) -> str | None:
    at = re.search(r"at `\$\.?([^`]*)`", message)
    path = at.group(1) if at else ""
    unknown = re.search(r"unknown field `([^`]*)`", message)
    if unknown:
        return f"{path}.{unknown.group(1)}" if path else unknown.group(1)
    return path or None


def decode_doc(raw: bytes | str) -> ScheduleDoc:
    """JSON → a validated ScheduleDoc; ScheduleError with the field at fault otherwise."""
    try:
        doc = decode_json(raw, ScheduleDoc)
    except msgspec.ValidationError as exc:
        raise ScheduleError(str(exc), _field_of(str(exc))) from None
    except msgspec.DecodeError as exc:
        raise ScheduleError(f"not a JSON schedule document: {exc}") from None
    return validate(doc)


def encode_doc(doc: ScheduleDoc) -> bytes:
    return msgspec.json.encode(doc)
