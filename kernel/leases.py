"""Leases in PostgreSQL: which process does what, when several run side by side.

A lease is a session-level advisory lock held on one dedicated connection. It is exclusive city-wide, and it
goes with its holder: a process that dies (even SIGKILLed) closes its connection, PostgreSQL releases the lock at
once and another process's next try takes it. `Leases.keep()` checks the connection every `check_s`; when the
connection is lost every lease is lost with it, and the holder is told (`on_lost`) before anything else could
take them, so it stops the work they cover.

Names are free text (`ingest:cd`, `leader`), scoped by a deployment prefix, hashed to the lock's 64-bit key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import Callable

import psycopg

from kernel.database import Database
from kernel.supervise import supervise

__all__ = ["Leases"]

logger = logging.getLogger(__name__)

_KEY = "hashtextextended(%s, 0)"
_MAX_MEMBERS = 1024


class Leases:
    def __init__(
        self, db: Database, scope: str, *, on_lost: Callable[[set[str]], None] | None = None, check_s: float = 1.0
    ) -> None:
        self.db = db
        self.scope = scope
        self.on_lost = on_lost
        self.check_s = check_s
        self.held: set[str] = set()
        self._conn: psycopg.AsyncConnection | None = None
        self._lock = asyncio.Lock()  # one statement at a time on the connection
        # The membership locks' first key: the scope's hash, kept positive (pg_locks shows it as an oid).
        self._class = zlib.crc32(f"lamplighter:{scope}:members".encode()) & 0x7FFFFFFF
        self._slot: int | None = None

    def _key(self, name: str) -> str:
        return f"lamplighter:{self.scope}:{name}"

    async def _connection(self) -> psycopg.AsyncConnection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = await self.db.dedicated("leases")
        return self._conn

    async def try_take(self, name: str) -> bool:
        """Take the lease if nobody holds it; True when this process holds it now."""
        if name in self.held:
            return True
        async with self._lock:
            try:
                conn = await self._connection()
                row = await (await conn.execute(f"SELECT pg_try_advisory_lock({_KEY})", (self._key(name),))).fetchone()
            except psycopg.Error as exc:
                self._lost(exc)
                return False
        if row and row[0]:
            self.held.add(name)
            logger.info("lease %s taken", name)
            return True
        return False

    async def members(self) -> int:
        """How many processes of this scope are alive, this one included: each holds a membership lock (the
        two-key form, keyed by the scope and a slot number) for as long as its connection lives."""
        async with self._lock:
            try:
                conn = await self._connection()
                if self._slot is None:
                    for slot in range(_MAX_MEMBERS):
                        row = await (
                            await conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (self._class, slot))
                        ).fetchone()
                        if row and row[0]:
                            self._slot = slot
                            break
                row = await (
                    await conn.execute(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2 "
                        "AND classid = %s::oid "
                        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                        (self._class,),
                    )
                ).fetchone()
            except psycopg.Error as exc:
                self._lost(exc)
                return 1
        return max(1, int(row[0]) if row else 1)

    async def release(self, name: str) -> None:
        if name not in self.held:
            return
        self.held.discard(name)
        async with self._lock:
            try:
                conn = await self._connection()
                await conn.execute(f"SELECT pg_advisory_unlock({_KEY})", (self._key(name),))
                logger.info("lease %s released", name)
            except psycopg.Error as exc:
                self._lost(exc)

    async def keep(self) -> None:
        """Until cancelled: check the connection that holds the leases; lost, they are all lost."""
        try:
            await supervise(self._check, what="lease check", every_s=self.check_s, first_s=self.check_s)
        finally:
            await self.close()

    async def _check(self) -> None:
        if not self.held:
            return
        async with self._lock:
            try:
                conn = await self._connection()
                async with asyncio.timeout(max(self.check_s * 3, 3.0)):  # not wait_for: see gateway.mqtt
                    await conn.execute("SELECT 1")
            except (psycopg.Error, TimeoutError) as exc:
                self._lost(exc)

    def _lost(self, exc: BaseException) -> None:
        lost, self.held = self.held, set()
        self._slot = None
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.pgconn.finish()
            self._conn = None
        if lost:
            logger.error("leases lost with their database connection (%s): %s", exc, ", ".join(sorted(lost)))
            if self.on_lost is not None:
                self.on_lost(lost)

    async def close(self) -> None:
        """Give every lease back (closing the connection does it), once no statement is running on it: a
        connection closed under a waiting statement would leave that statement waiting for ever."""
        self.held.clear()
        self._slot = None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._lock.acquire(), 5.0)
        try:
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    await self._conn.close()
                self._conn = None
        finally:
            if self._lock.locked():
                self._lock.release()
