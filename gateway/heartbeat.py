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

import psycopg

from telemetry.database import Database

__all__ = ["HEARTBEAT_S", "Heartbeat", "beat_forever"]

logger = logging.getLogger(__name__)

HEARTBEAT_S = 2.0

_UPSERT = """
INSERT INTO ingest_heartbeat AS h (gateway, host, pid, started_at, updated_at, stopped_at, oldest_uncommitted_s,
                                   failing_batches, received, written, quarantined, districts)
VALUES (%s, %s, %s, %s, now(), CASE WHEN %s THEN now() END, %s, %s, %s, %s, %s, %s)
ON CONFLICT (gateway) DO UPDATE SET host = EXCLUDED.host, pid = EXCLUDED.pid, started_at = EXCLUDED.started_at,
    updated_at = now(), stopped_at = EXCLUDED.stopped_at, oldest_uncommitted_s = EXCLUDED.oldest_uncommitted_s,
    failing_batches = EXCLUDED.failing_batches, received = EXCLUDED.received, written = EXCLUDED.written,
    quarantined = EXCLUDED.quarantined, districts = EXCLUDED.districts
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


async def beat_forever(
    db: Database, now: Callable[[], Heartbeat], period_s: float = HEARTBEAT_S, wake: asyncio.Event | None = None
) -> None:
    """Write `now()` every `period_s` (and at once when `wake` is set) until cancelled, then mark the gateway
    stopped. A database that is away only skips beats (its absence is what the health then reports)."""
    started = dt.datetime.now(dt.UTC)
    host, pid = socket.gethostname(), os.getpid()

    def row(beat: Heartbeat, stopped: bool) -> tuple[object, ...]:
        return (beat.gateway, host, pid, started, stopped, beat.oldest_uncommitted_s, beat.failing_batches,
                beat.received, beat.written, beat.quarantined, [] if stopped else beat.districts)  # fmt: skip

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
