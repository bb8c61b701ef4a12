"""Crews: the districts they cover, when they are on duty, and how they are reached."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any

import apprise
import msgspec
import psycopg
from psycopg.rows import dict_row

from alerts.errors import AlertsError
from inventory.queries import known_districts

__all__ = ["Crew", "CrewError", "Shift", "crew_exists", "crew_ids", "list_crews", "save_crew"]

_ID = re.compile(r"^[a-z0-9][a-z0-9-]{1,31}$")


class CrewError(AlertsError):
    """A crew that cannot be saved as given; `field` names what is wrong."""


class Shift(msgspec.Struct, forbid_unknown_fields=True):
    starts_at: dt.datetime
    ends_at: dt.datetime


_Url = Annotated[str, msgspec.Meta(max_length=2048)]


class Crew(msgspec.Struct, forbid_unknown_fields=True):
    id: Annotated[str, msgspec.Meta(max_length=32)]
    name: Annotated[str, msgspec.Meta(max_length=100)]
    districts: Annotated[list[Annotated[str, msgspec.Meta(max_length=32)]], msgspec.Meta(max_length=100)] = (
        msgspec.field(default_factory=list)
    )
    supervisor: bool = False
    webhook_url: _Url | None = None
    webhook_secret: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    notify_urls: Annotated[list[_Url], msgspec.Meta(max_length=10)] = msgspec.field(default_factory=list)
    mqtt: bool = True
    shifts: Annotated[list[Shift], msgspec.Meta(max_length=1000)] = msgspec.field(default_factory=list)

    def check(self) -> Crew:
        if not _ID.fullmatch(self.id):
            raise CrewError(f"crew id must be 2–32 lower-case letters, digits or '-', got {self.id!r}", "id")
        if not self.name.strip():
            raise CrewError("a crew needs a name", "name")
        if self.webhook_url is not None:
            if not self.webhook_url.startswith(("http://", "https://")):
                raise CrewError(f"webhook_url must be an http(s) URL, got {self.webhook_url!r}", "webhook_url")
            if not self.webhook_secret or len(self.webhook_secret) < 16:
                raise CrewError("a webhook needs a secret of at least 16 characters to sign with", "webhook_secret")
        for i, s in enumerate(self.shifts):
            if s.starts_at.tzinfo is None or s.ends_at.tzinfo is None:
                raise CrewError("shift times must carry a time zone offset", f"shifts[{i}]")
            if s.ends_at <= s.starts_at:
                raise CrewError("a shift must end after it starts", f"shifts[{i}].ends_at")
        for i, url in enumerate(self.notify_urls):
            if not apprise.Apprise().add(url):
                scheme = url.split("://", 1)[0] if "://" in url else url[:20]
                raise CrewError(f"not a notification URL Apprise knows (scheme {scheme!r})", f"notify_urls[{i}]")
        if not self.districts and not self.supervisor:
            raise CrewError("a crew covers at least one district (or is a supervisors' crew)", "districts")
        return self


def save_crew(conn: psycopg.Connection, crew: Crew) -> None:
    """Create or replace a crew and its roster (districts must exist)."""
    crew.check()
    with conn.transaction():
        known = known_districts(conn, crew.districts)
        unknown = sorted(set(crew.districts) - known)
        if unknown:
            raise CrewError(f"no such district(s): {', '.join(unknown)}", "districts")
        conn.execute(
            """INSERT INTO crews (id, name, districts, supervisor, webhook_url, webhook_secret, notify_urls, mqtt)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, districts = EXCLUDED.districts,
                   supervisor = EXCLUDED.supervisor, webhook_url = EXCLUDED.webhook_url,
                   webhook_secret = EXCLUDED.webhook_secret, notify_urls = EXCLUDED.notify_urls,
                   mqtt = EXCLUDED.mqtt""",
            (
                crew.id,
                crew.name,
                crew.districts,
                crew.supervisor,
                crew.webhook_url,
                crew.webhook_secret,
                crew.notify_urls,
                crew.mqtt,
            ),
        )
        conn.execute("DELETE FROM crew_shifts WHERE crew_id = %s", (crew.id,))
        for s in crew.shifts:
            conn.execute(
                "INSERT INTO crew_shifts (crew_id, starts_at, ends_at) VALUES (%s, %s, %s)",
                (crew.id, s.starts_at, s.ends_at),
            )


def crew_exists(conn: psycopg.Connection, crew_id: str) -> bool:
    return conn.execute("SELECT 1 FROM crews WHERE id = %s", (crew_id,)).fetchone() is not None


def crew_ids(conn: psycopg.Connection) -> list[str]:
    """Every crew's id, in order."""
    return [str(r[0]) for r in conn.execute("SELECT id FROM crews ORDER BY id")]


def list_crews(conn: psycopg.Connection, now: dt.datetime) -> list[dict[str, Any]]:
    """Every crew, its roster and whether it is on duty now (secrets are never shown)."""
    with conn.cursor(row_factory=dict_row) as cur:
        crews = cur.execute(
            "SELECT id, name, districts, supervisor, webhook_url, notify_urls <> '{}' AS notify, mqtt FROM crews "
            "ORDER BY id"
        ).fetchall()
        shifts = cur.execute(
            "SELECT crew_id, starts_at, ends_at FROM crew_shifts ORDER BY crew_id, starts_at"
        ).fetchall()
    for c in crews:
        mine = [s for s in shifts if s["crew_id"] == c["id"]]
        c["shifts"] = [{"starts_at": s["starts_at"], "ends_at": s["ends_at"]} for s in mine]
        c["on_duty"] = not mine or any(s["starts_at"] <= now < s["ends_at"] for s in mine)
    return crews
