"""Live ticket events for every stream client from one LISTEN connection.

The alerts service notifies `lamplighter_ticket_events` with each event it commits. One task per API process
listens, reads the new events once (and every second anyway, should a notification be missed) and keeps the
most recent ones in memory, encoded once and bounded in count and in bytes; each `/api/v1/tickets/events` client
is served from there and holds no database connection. A client resuming from further back than memory reaches
reads the gap from the pool, briefly.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from alerts.queries import EVENTS_CHANNEL, events_after, newest_event_id
from api.auth import User
from api.errors import ApiError
from api.jsonsafe import dumps
from kernel.backoff import Backoff
from kernel.database import Database
from kernel.supervise import supervise

__all__ = ["STREAM_RECHECK_S", "StreamSlots", "TicketFeed"]

logger = logging.getLogger(__name__)

_POLL_S = 1.0
# A stream checks its user is still allowed this often: a revoked token's or a disabled user's streams end within
# this and the token cache's few seconds (api.auth._CACHE_S; at once when revoked in this process).
STREAM_RECHECK_S = _RECHECK_S = 4.0


class StreamSlots:
    """The live streams (ticket events, overview) this process serves at once, in all and per user: one user's
    tabs or script cannot take the streams everybody shares."""

    def __init__(self, *, total: int = 1000, per_user: int = 16) -> None:
        self.total, self.per_user = total, per_user
        self.open = 0
        self.by_user: dict[int, int] = {}

    def take(self, user: User) -> StreamSlot:
        """A slot for one more stream of `user`; ApiError 503 when the process is full, 429 when the user is."""
        if self.open >= self.total:
            raise ApiError(503, "busy", f"{self.open} live streams are open, the most this API serves; try again later")
        mine = self.by_user.get(user.id, 0)
        if mine >= self.per_user:
            raise ApiError(
                429, "rate_limited", f"user {user.name} has {mine} live streams open, the most one user may; close one"
            )
        self.open += 1
        self.by_user[user.id] = mine + 1
        return StreamSlot(self, user.id)


class StreamSlot:
    def __init__(self, slots: StreamSlots, user_id: int) -> None:
        self._slots, self._user, self._open = slots, user_id, True

    def bind(self, body: object) -> None:
        """Released also when the stream's body is dropped without ever being iterated (a client gone before
        the response began)."""
        weakref.finalize(body, self.release)

    def release(self) -> None:
        if self._open:
            self._open = False
            self._slots.open -= 1
            left = self._slots.by_user.get(self._user, 1) - 1
            if left:
                self._slots.by_user[self._user] = left
            else:
                self._slots.by_user.pop(self._user, None)


class TicketFeed:
    def __init__(
        self, db: Database, *, keep: int = 10_000, keep_bytes: int = 8 * 1024 * 1024, max_clients: int = 1000
    ) -> None:
        self.db = db
        # (event id, its crew, the event as a server-sent event): encoded once for every stream.
        self.events: collections.deque[tuple[int, str | None, bytes]] = collections.deque()
        self.keep, self.keep_bytes = keep, keep_bytes
        self.bytes = 0
        self.max_clients = max_clients
        self.clients = 0
        self.last_id: int | None = None  # newest event read; None until the listener first connected
        self._floor: int | None = None  # memory holds every event after this id
        self._new = asyncio.Event()

    async def run(self) -> None:
        backoff = Backoff(max_s=10.0)
        await supervise(functools.partial(self._follow, backoff), what="ticket event feed", backoff=backoff)

    async def _follow(self, backoff: Backoff) -> None:
        """One connection's lifetime: listen, and read what is new on each notification or poll."""
        async with await self.db.dedicated("events") as conn:
            await conn.execute(f"LISTEN {EVENTS_CHANNEL}")
            if self.last_id is None:
                self.last_id = self._floor = await newest_event_id(conn)
            backoff.ok()
            while True:
                await self._read(conn)
                async for _ in conn.notifies(timeout=_POLL_S, stop_after=1):
                    pass

    async def _read(self, conn: psycopg.AsyncConnection) -> None:
        assert self.last_id is not None
        while True:
            rows = await events_after(conn, self.last_id, limit=1000)
            for body in rows:
                encoded = _sse(int(body["id"]), body)
                self.events.append((int(body["id"]), body["crew"], encoded))
                self.bytes += len(encoded)
                while len(self.events) > self.keep or self.bytes > self.keep_bytes:
                    gone = self.events.popleft()
                    self.bytes -= len(gone[2])
                    self._floor = gone[0]  # memory now starts after this one
                self.last_id = int(body["id"])
            if rows:
                woken, self._new = self._new, asyncio.Event()
                woken.set()
            if len(rows) < 1000:
                return

    def _since(self, last: int) -> list[tuple[int, str | None, bytes]] | None:
        """Events after `last` from memory, oldest first; None when memory does not reach back that far."""
        if self._floor is None or last < self._floor:
            return None
        out = []
        for event in reversed(self.events):
            if event[0] <= last:
                break
            out.append(event)
        out.reverse()
        return out

    async def stream(
        self,
        pool: AsyncConnectionPool,
        start: int | None,
        crew: str | None,
        *,
        disconnected: Callable[[], Awaitable[bool]],
        allowed: Callable[[], Awaitable[bool]],
    ) -> AsyncIterator[bytes]:
        """One client's events as server-sent events: what it missed since `start`, then live."""
        self.clients += 1
        try:
            if start is None:
                start = self.last_id if self.last_id is not None else await _newest(pool)
            last = start
            yield b": lamplighter ticket events\n\n"
            loop = asyncio.get_running_loop()
            recheck = loop.time() + _RECHECK_S
            while not await disconnected():
                waiting = self._new
                batch = self._since(last)
                from_db = batch is None
                if batch is None:  # further back than memory (or the listener not up yet): briefly, the pool
                    read_up_to = self.last_id  # the query sees at least what the listener had read
                    async with pool.connection() as conn:
                        rows = await events_after(conn, last, crew=crew, limit=500)
                    batch = [(int(r["id"]), r["crew"], _sse(int(r["id"]), r)) for r in rows]
                    if len(rows) < 500 and read_up_to is not None:
                        last = max(last, read_up_to)  # caught up: memory serves from here
                for event_id, event_crew, encoded in batch:
                    last = max(last, event_id)
                    if crew is None or event_crew == crew:
                        yield encoded
                if loop.time() > recheck:
                    if not await allowed():
                        return
                    recheck = loop.time() + _RECHECK_S
                if not batch:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.5 if from_db else _RECHECK_S / 2):  # not wait_for (3.11)
                            await waiting.wait()
        finally:
            self.clients -= 1


def _sse(event_id: int, body: dict[str, Any]) -> bytes:
    return f"id: {event_id}\nevent: ticket\ndata: {dumps(body, default=str)}\n\n".encode()


async def _newest(pool: AsyncConnectionPool) -> int:
    async with pool.connection() as conn:
        return await newest_event_id(conn)
