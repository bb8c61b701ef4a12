"""A gateway's heartbeat: every few seconds its row in `ingest_heartbeat` says it is alive and whether ingest
keeps up (the age of the oldest message not yet committed, batch writes failing in a row). The API's health
reads these rows, so it knows how ingest goes whichever process or machine the gateway runs on."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from kernel.database import Database
from kernel.supervise import supervise

__all__ = [
    "HEARTBEAT_S",
    "Heartbeat",
    "PeerWatermarks",
    "beat_forever",
    "districts_held",
    "ingest_health",
    "recent_beats",
]

logger = logging.getLogger(__name__)

HEARTBEAT_S = 2.0

_UPSERT = """
INSERT INTO ingest_heartbeat AS h (gateway, host, pid, started_at, updated_at, stopped_at, oldest_uncommitted_s,
                                   failing_batches, received, written, quarantined, districts, ingested_through_ms)
VALUES (%s, %s, %s, %s, now(), CASE WHEN %s THEN now() END, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (gateway) DO UPDATE SET host = EXCLUDED.host, pid = EXCLUDED.pid, started_at = EXCLUDED.started_at,
    updated_at = now(), stopped_at = EXCLUDED.stopped_at, oldest_uncommitted_s = EXCLUDED.oldest_uncommitted_s,
    failing_batches = EXCLUDED.failing_batches, received = EXCLUDED.received, written = EXCLUDED.written,
    quarantined = EXCLUDED.quarantined, districts = EXCLUDED.districts,
    ingested_through_ms = EXCLUDED.ingested_through_ms
"""


@dataclass(frozen=True)
class Heartbeat:
    gateway: str  # the process's instance name
    oldest_uncommitted_s: float
    failing_batches: int
    received: int
    written: int
    quarantined: int
    districts: list[str]  # whose ingest it holds now
    ingested_through_ms: int | None = None  # clock time up to which what it received is committed


async def beat_forever(
    db: Database, now: Callable[[], Heartbeat], period_s: float = HEARTBEAT_S, wake: asyncio.Event | None = None
) -> None:
    """Write `now()` every `period_s` (and at once when `wake` is set) until cancelled, then mark the gateway
    stopped. A database that is away only skips beats (its absence is what the health then reports)."""
    started = dt.datetime.now(dt.UTC)
    host, pid = socket.gethostname(), os.getpid()

    def row(beat: Heartbeat, stopped: bool) -> tuple[object, ...]:
        return (beat.gateway, host, pid, started, stopped, beat.oldest_uncommitted_s, beat.failing_batches,
                beat.received, beat.written, beat.quarantined, [] if stopped else beat.districts,
                beat.ingested_through_ms)  # fmt: skip

    async def write(stopped: bool) -> None:
        async with db.connection() as conn:
            await conn.execute(_UPSERT, row(now(), stopped))

    try:
        while True:
            try:
                await write(False)
            except psycopg.Error as exc:
                logger.debug("ingest heartbeat not written: %s", exc)
            if wake is None:
                await asyncio.sleep(period_s)
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(period_s):  # not wait_for, which can lose a cancel (3.11)
                        await wake.wait()
                wake.clear()
    finally:
        with contextlib.suppress(psycopg.Error, TimeoutError):
            await asyncio.wait_for(write(True), 2)


_PEERS = """
SELECT gateway, updated_at, ingested_through_ms FROM ingest_heartbeat
WHERE gateway <> %s AND stopped_at IS NULL AND updated_at > now() - make_interval(secs => %s)
  AND cardinality(districts) > 0 AND ingested_through_ms IS NOT NULL
"""


class PeerWatermarks:
    """How far the other gateways' ingest has reached this process's lighting engine, for the sampler.

    A peer says in each heartbeat (written at `updated_at`, database time) up to which clock time it has
    committed what it received. The leader's engine has those readings once its follower began a fetch after
    that heartbeat was written (`fetched`): so a peer counts with the newest watermark whose heartbeat came
    before the follower's last fetch. A peer whose heartbeats stopped is no peer (its districts go to another)."""

    def __init__(self, me: str, *, stale_s: float = 3 * HEARTBEAT_S, keep: int = 16) -> None:
        self.me, self.stale_s, self.keep = me, stale_s, keep
        self._beats: dict[str, list[tuple[dt.datetime, int]]] = {}
        self._fetched_at: dt.datetime | None = None

    def fetched(self, at: dt.datetime) -> None:
        self._fetched_at = at

    def update(self, rows: list[tuple[str, dt.datetime, int]]) -> None:
        seen = set()
        for gateway, at, through in rows:
            seen.add(gateway)
            beats = self._beats.setdefault(gateway, [])
            if not beats or beats[-1][0] < at:
                beats.append((at, through))
                del beats[: -self.keep]
        for gone in set(self._beats) - seen:
            del self._beats[gone]

    def through_ms(self) -> int | None:
        """The lowest peer watermark the engine has caught up with; None with no peers; -1 when a peer's
        newest readings have not been fetched yet at all."""
        if not self._beats:
            return None
        at = self._fetched_at
        lowest: int | None = None
        for beats in self._beats.values():
            seen = [through for written, through in beats if at is not None and written <= at]
            peer = max(seen) if seen else -1
            lowest = peer if lowest is None else min(lowest, peer)
        return lowest

    async def watch(self, db: Database, period_s: float = 0.5) -> None:
        """Read the peers' heartbeats until cancelled."""

        async def read() -> None:
            async with db.connection() as conn:
                rows = await (await conn.execute(_PEERS, (self.me, self.stale_s))).fetchall()
            self.update([(r[0], r[1], int(r[2])) for r in rows])

        # Quiet when the database is away: the gateway's own loops say so already.
        await supervise(read, what="reading the peers' heartbeats", every_s=period_s, level=logging.DEBUG)


_BEATS = """SELECT gateway, host, pid, extract(epoch FROM now() - updated_at)::float8, stopped_at IS NOT NULL,
                  oldest_uncommitted_s, failing_batches, received, written, quarantined, districts
           FROM ingest_heartbeat WHERE updated_at > now() - interval '1 day' ORDER BY updated_at DESC LIMIT 50"""
# A gateway writes its heartbeat every HEARTBEAT_S; three missed in a row and it counts as gone.
_SILENT_S = 3 * HEARTBEAT_S + 1
_FORGET_S = 3600.0  # a gateway silent this long is history (listed for a day), no longer a problem


def districts_held(conn: psycopg.Connection, prefix: str = "", fresh_s: float = 10.0) -> list[list[str]]:
    """The districts each running gateway (whose id starts with `prefix`) holds, by gateway id: those that beat
    within `fresh_s` and have not stopped."""
    rows = conn.execute(
        "SELECT districts FROM ingest_heartbeat WHERE gateway LIKE %s AND stopped_at IS NULL "
        "AND updated_at > now() - make_interval(secs => %s) ORDER BY gateway",
        (prefix.replace("%", r"\%").replace("_", r"\_") + "%", fresh_s),
    ).fetchall()
    return [list(r[0]) for r in rows]


async def recent_beats(conn: psycopg.AsyncConnection[Any]) -> list[tuple[Any, ...]]:
    """The heartbeats of the last day, newest first (at most 50 gateways), as `ingest_health` takes them."""
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(_BEATS)
        return await cur.fetchall()


def ingest_health(beats: list[tuple[Any, ...]], districts: set[str], stall_s: float) -> dict[str, Any]:
    """`ok` is None when no gateway has ever run on this database (an API on its own), False when none is
    running, a district is held by no running gateway (its holder stopped or went silent and nobody took it
    over yet), or a running one holds a message uncommitted for longer than `stall_s`."""
    gateways: list[dict[str, Any]] = []
    problems: list[str] = []
    covered: set[str] = set()
    silent: list[tuple[str, str, float, set[str]]] = []
    for name, host, pid, age_s, stopped, oldest_s, failing, received, written, quarantined, held in beats:
        running = not stopped and age_s <= _SILENT_S
        g = {
            "gateway": name,
            "host": host,
            "pid": pid,
            "heartbeat_age_s": round(age_s, 1),
            "running": running,
            "districts": sorted(held or ()),
            "oldest_uncommitted_s": round(oldest_s, 1),
            "failing_batches": failing,
            "received": received,
            "written": written,
            "quarantined": quarantined,
        }
        gateways.append(g)
        if running:
            covered.update(held or ())
            if oldest_s > stall_s:
                problems.append(
                    f"gateway {name} is stalled: a message has waited {oldest_s:.0f} s uncommitted"
                    + (f", {failing} batch writes failed in a row" if failing else "")
                )
        elif not stopped and age_s < _FORGET_S:
            silent.append((name, host, age_s, set(held or ())))
    if not gateways:
        return {"ok": None, "gateways": [], "detail": "no gateway has run on this database"}
    for name, host, age_s, held in silent:
        if held - covered:  # taken over by nobody yet
            problems.append(f"gateway {name} on {host} has not reported for {age_s:.0f} s")
    if not any(g["running"] for g in gateways):
        if not problems:
            problems.append("no gateway is running")
    elif uncovered := sorted(districts - covered):
        problems.append(f"no running gateway reads district{'s' if len(uncovered) > 1 else ''} {', '.join(uncovered)}")
    out: dict[str, Any] = {"ok": not problems, "gateways": gateways}
    if problems:
        out["error"] = "; ".join(problems)
    return out
