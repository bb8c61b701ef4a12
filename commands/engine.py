"""Remote control on the wire: campaigns paced out to devices, acknowledgements tracked per lamp.

A campaign is stored by the API (`commands` and `command_lamps`, every lamp `queued`). The gateway's
`CommandEngine` picks it up, sends one device command per lamp at no more than `pace` commands per second city-wide
(a token bucket shared equally by the running campaigns, and never more than `pace` sent in any one second), waits
`ack_timeout_s` for each acknowledgement, retries with the same id up to `retries` times, and marks each lamp
`acked`, `failed` (the device refused) or `expired` (no answer, or the campaign's expiry passed). After the broker
comes back from an outage its devices need time to reconnect too (each with its own backoff): for
`reconnect_grace_s` after the command link is back, an unanswered command is sent again without using up one of the
lamp's retries. States reach PostgreSQL in batches a few times a second. Sending holds a share lock on the campaign
row, so a cancel committed by the API stops it at once.

New campaigns and cancels wake the engine through LISTEN/NOTIFY on `commands.model.CHANNEL` (a dedicated
connection); it also looks every few seconds in case a notification was missed while it reconnected. The MQTT side
is `gateway.command_link.CommandLink`."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import json
import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import psycopg

from commands.model import (
    ACKED,
    CANCELLED,
    CHANNEL,
    EXPIRED,
    FAILED,
    QUEUED,
    SENT,
    STATES,
    Campaign,
)
from kernel.backoff import Backoff
from kernel.database import Database
from kernel.supervise import supervise
from protocol.messages import clean_text, decode_ack
from protocol.topics import ack_topic, cmd_topic

__all__ = ["CommandEngine", "Link"]

logger = logging.getLogger(__name__)

_TICK_S = 0.05
_FLUSH_S = 0.25
_POLL_S = 5.0  # besides being woken by NOTIFY, new campaigns and cancels are looked for this often


class Link(Protocol):
    def publish(self, messages: Sequence[tuple[str, bytes]], campaign: str = "") -> int: ...

    def ready(self) -> bool: ...

    def room(self) -> int:
        """How many more commands `publish` takes now (the broker's in-flight window and a short backlog)."""
        ...

    def drop(self, campaign: str) -> int:
        """Commands of a cancelled campaign still waiting to go: they never leave."""
        ...

    def connections(self) -> int:
        """How many times the link has connected to the broker."""
        ...


class CommandEngine:
    def __init__(
        self,
        db: Database,
        link: Link,
        now_ms: Any,
        *,
        pace: float = 2000.0,
        ack_timeout_s: float = 10.0,
        retries: int = 2,
        reconnect_grace_s: float = 30.0,
        retention_days: int = 90,
    ) -> None:
        self.db = db
        self.link = link
        self.now_ms = now_ms  # the clock: device commands carry its time and expiry
        self.bad_acks = 0  # acknowledgements refused as unreadable
        self.spoofed_acks = 0  # acknowledgements refused because they came on another topic than the lamp's
        self.pace = pace
        self.ack_timeout_s = ack_timeout_s
        self.retries = retries
        self.reconnect_grace_s = reconnect_grace_s
        self.retention_ms = retention_days * 86_400_000
        self._connections = 0  # the link's connections when last looked at
        self._wake = asyncio.Event()  # set by NOTIFY: look for new campaigns and cancels now
        self._grace_until = 0.0  # monotonic: sends before this do not count as attempts
        self.campaigns: dict[str, Campaign] = {}
        self._by_device: dict[str, tuple[Campaign, int]] = {}
        self.sent = 0
        self._window: collections.deque[tuple[float, int]] = collections.deque()  # (time, sends) of the last 1 s
        self._window_sum = 0
        self.send_times: list[float] = []  # monotonic times of sends (kept for the benchmark's pace check)
        self.keep_send_times = False

    # -- the loop ---------------------------------------------------------------------------------------------

    async def run(self, *, fresh: bool = False) -> None:
        """Until cancelled. A lost database stops the sending (a cancel could not be honoured without it) but not
        the engine: it reconnects with backoff and goes on where it was, answers that came meanwhile included.
        `fresh`: forget the campaigns in memory first (this process takes the engine over: another one may have
        sent since it last ran here)."""
        if fresh:
            self.campaigns.clear()
            self._by_device.clear()
            # The previous holder may have sent at the full pace within the last second: wait it out, so the
            # pace holds city-wide across the handover too.
            await asyncio.sleep(1.0)
        backoff = Backoff(max_s=10.0)
        await supervise(functools.partial(self._connected, backoff), what="command engine", backoff=backoff)

    async def _connected(self, backoff: Backoff) -> None:
        """One database connection's lifetime: send, take answers and expire until it fails."""
        listener: asyncio.Task[None] | None = None
        async with self.db.connection() as conn:
            backoff.ok()
            try:
                listener = asyncio.create_task(self._listen(), name="command-engine-listen")
                await self._run(conn, listener)
            finally:
                if listener is not None:
                    listener.cancel()
                    with contextlib.suppress(asyncio.CancelledError, psycopg.Error):
                        await listener
                with contextlib.suppress(Exception):
                    await self._flush(conn)

    async def _listen(self) -> None:
        """Wake the loop when a campaign is submitted or cancelled (a dedicated connection: LISTEN holds it)."""
        async with await self.db.dedicated("commands-listen") as conn:
            await conn.execute(f"LISTEN {CHANNEL}")
            self._wake.set()  # what was submitted before the LISTEN began is looked for once now
            async for _ in conn.notifies():
                self._wake.set()

    async def _run(self, conn: psycopg.AsyncConnection, listener: asyncio.Task[None]) -> None:
        tokens, last = 0.0, time.monotonic()
        last_flush = last_poll = 0.0
        await self._load(conn)
        while True:
            if listener.done():
                listener.result()  # its connection went: raise that, so both reconnect
                raise psycopg.OperationalError("the command engine's LISTEN connection closed")
            now = time.monotonic()
            if self._wake.is_set() or now - last_poll >= _POLL_S:
                self._wake.clear()
                await self._load(conn)
                last_poll = now
            # What a tick held back by the one-second ceiling in `_send` could not send is made up by the
            # next ones, so a long campaign runs at the pace itself; with nothing to send the bucket keeps
            # one tick's worth, so a new campaign starts smoothly rather than with a burst.
            tokens = min(tokens + (now - last) * self.pace, self.pace)
            last = now
            self._take_acks()
            self._expire(now)
            tokens = await self._send(conn, tokens, now)
            if now - last_flush >= _FLUSH_S:
                await self._flush(conn)
                last_flush = now
            # A tick every 50 ms whatever the work took.
            await asyncio.sleep(max(0.0, now + _TICK_S - time.monotonic()))

    async def _load(self, conn: psycopg.AsyncConnection) -> None:
        """New campaigns from the database; cancelled ones stop."""
        rows = await (
            await conn.execute(
                "SELECT id, op, params, (extract(epoch FROM expires_at) * 1000)::bigint, status FROM commands "
                "WHERE status IN ('queued', 'running') OR (status = 'cancelled' AND id = ANY(%s))",
                (list(self.campaigns),),
            )
        ).fetchall()
        for cid, op, params, expires_ms, status in rows:
            if status == "cancelled":
                self._cancel(cid)
                continue
            if cid in self.campaigns:
                continue
            lamps = await (
                await conn.execute(
                    "SELECT lamp_id, district, state, attempts FROM command_lamps WHERE command_id = %s "
                    "ORDER BY lamp_id",
                    (cid,),
                )
            ).fetchall()
            state = np.array([STATES.index(r[2]) for r in lamps], dtype=np.int8)
            # After a restart, what was sent and not answered is sent again (same id: the device acts once).
            state[state == SENT] = QUEUED
            c = Campaign(
                id=cid,
                op=op,
                params=params,
                expires_ms=int(expires_ms),
                lamp_ids=[r[0] for r in lamps],
                districts=[r[1] for r in lamps],
                state=state,
                attempts=np.array([r[3] for r in lamps], dtype=np.int16),
                sent_at=np.zeros(len(lamps)),
            )
            self.campaigns[cid] = c
            for i in range(len(lamps)):
                self._by_device[c.device_id(i)] = (c, i)
            await conn.execute(
                "UPDATE commands SET status = 'running', started_at = coalesce(started_at, now()) WHERE id = %s",
                (cid,),
            )
            logger.info("campaign %s: %s to %d lamps, at most %.0f commands/s", cid, op, len(lamps), self.pace)

    def _cancel(self, cid: str) -> None:
        c = self.campaigns.get(cid)
        if c is None or c.cancelled:
            return
        c.cancelled = True
        self.link.drop(cid)
        c.state[c.state == QUEUED] = CANCELLED  # the API has marked them in the database
        logger.info("campaign %s cancelled: %s", cid, c.counts())

    def _take_acks(self) -> None:
        queue: collections.deque[tuple[str, bytes]] | None = getattr(self.link, "acks", None)
        while queue:
            topic, payload = queue.popleft()
            try:
                ack = decode_ack(payload, self.now_ms(), self.retention_ms)
            except ValueError as exc:
                self.bad_acks += 1
                logger.warning("acknowledgement refused on %s: %s", clean_text(topic, 256), exc)
                continue
            found = self._by_device.get(ack.id)
            if found is None:
                continue  # a late or repeated answer to something finished
            c, i = found
            own = ack_topic(c.districts[i], c.lamp_ids[i])
            if topic != own:  # only the lamp the command went to answers it, on its own topic
                self.spoofed_acks += 1
                logger.warning(
                    "acknowledgement of command %s refused: it came on %s, not on the lamp's own topic %s",
                    ack.id,
                    clean_text(topic, 256),
                    own,
                )
                continue
            if c.state[i] in (SENT, QUEUED):
                c.state[i] = ACKED if ack.ok else FAILED
                if not ack.ok:
                    c.errors[i] = ack.error or "refused"
                c.dirty.add(i)

    def _expire(self, now: float) -> None:
        now_ms = self.now_ms()
        for c in self.campaigns.values():
            late = (c.state == SENT) & (now - c.sent_at >= self.ack_timeout_s) & (c.attempts > self.retries)
            if c.cancelled:
                late |= (c.state == SENT) & (now - c.sent_at >= self.ack_timeout_s)  # no retries once cancelled
            if now_ms >= c.expires_ms:
                late |= (c.state == SENT) | (c.state == QUEUED)
            for i in np.flatnonzero(late).tolist():
                c.state[i] = EXPIRED
                c.dirty.add(i)

    def _due(self, c: Campaign, now: float, limit: int) -> list[int]:
        """Lamps to send to now: retries whose answer is overdue first, then the queue."""
        retry = np.flatnonzero((c.state == SENT) & (now - c.sent_at >= self.ack_timeout_s))[:limit].tolist()
        picked = list(retry)
        while len(picked) < limit and c.next_queued < len(c.state):
            if c.state[c.next_queued] == QUEUED:
                picked.append(c.next_queued)
            c.next_queued += 1
        if len(picked) < limit:  # queued again after a restart, behind the cursor
            rest = np.flatnonzero(c.state == QUEUED)
            picked += [i for i in rest.tolist() if i not in picked][: limit - len(picked)]
        return picked

    async def _send(self, conn: psycopg.AsyncConnection, tokens: float, now: float) -> float:
        running = [c for c in self.campaigns.values() if not c.cancelled]
        tick = max(self.pace * _TICK_S, 1.0)
        if (n := self.link.connections()) != self._connections:
            if self._connections:  # connected again: the broker (or the way to it) was away
                self._grace_until = now + self.reconnect_grace_s
                logger.info(
                    "command engine: the broker is back; %.0f s for devices to reconnect", self.reconnect_grace_s
                )
            self._connections = n
        if not running or tokens < 1 or not self.link.ready():
            # Without the broker nothing is sent (nor counted as an attempt): campaigns wait for it to return.
            return min(tokens, tick)
        async with conn.transaction():
            # A share lock on the campaigns being sent: an API cancel waits for this batch, then nothing more.
            rows = await (
                await conn.execute(
                    "SELECT id FROM commands WHERE id = ANY(%s) AND status = 'running' FOR SHARE",
                    ([c.id for c in running],),
                )
            ).fetchall()
            live = {r[0] for r in rows}
            for c in running:
                if c.id not in live:
                    self._cancel(c.id)
            running = [c for c in running if c.id in live]
            budget = min(int(tokens), self._room(time.monotonic()), self.link.room())
            if budget < 1:
                return tokens
            # An equal share for every running campaign, then what is left to those with more to send.
            sends: list[tuple[Campaign, int]] = []
            for share in (max(1, budget // max(len(running), 1)), budget):
                for c in running:
                    picked = self._due(c, now, min(share, budget - len(sends)))
                    c.state[picked] = SENT
                    if now >= self._grace_until:  # in the grace, a device may still be reconnecting
                        c.attempts[picked] += 1
                    c.sent_at[picked] = now
                    c.dirty.update(picked)
                    sends += [(c, i) for i in picked]
            now_ms = self.now_ms()
            # Written to the socket before the campaigns' lock goes: once a cancel returns, nothing more leaves.
            # Not connected: nothing goes, and these lamps are sent again after the acknowledgement timeout.
            for c in {c.id: c for c, _ in sends}.values():
                self.link.publish(
                    [(cmd_topic(c.districts[i], c.lamp_ids[i]), c.command(i, now_ms)) for cc, i in sends if cc is c],
                    campaign=c.id,
                )
            sent_at = time.monotonic()  # when they went, as a receiver would count them
            self._window.append((sent_at, len(sends)))
            self._window_sum += len(sends)
            self.sent += len(sends)
            if self.keep_send_times:
                self.send_times.extend([sent_at] * len(sends))
        return tokens - len(sends) if len(sends) == budget else min(tokens - len(sends), tick)

    def _room(self, t: float) -> int:
        """How many more may go at `t` with never more than `pace` sent in any one second."""
        while self._window and self._window[0][0] <= t - 1.0:
            self._window_sum -= self._window.popleft()[1]
        return int(self.pace) - self._window_sum

    async def _flush(self, conn: psycopg.AsyncConnection) -> None:
        """Lamp states that changed since the last flush; finished campaigns get their outcome."""
        for c in list(self.campaigns.values()):
            if c.dirty:
                idx = sorted(c.dirty)  # left marked until the update went through
                async with conn.cursor() as cur:
                    await cur.execute(
                        """UPDATE command_lamps l SET state = u.state, attempts = u.attempts, error = u.error,
                               sent_at = CASE WHEN u.state = 'sent' THEN now() ELSE l.sent_at END,
                               done_at = CASE WHEN u.state IN ('acked', 'failed', 'expired') THEN now() END
                           FROM unnest(%s::text[], %s::text[], %s::smallint[], %s::text[]) AS u(lamp_id, state,
                                attempts, error)
                           WHERE l.command_id = %s AND l.lamp_id = u.lamp_id""",
                        (
                            [c.lamp_ids[i] for i in idx],
                            [STATES[int(c.state[i])] for i in idx],
                            [int(c.attempts[i]) for i in idx],
                            [c.errors.get(i) for i in idx],
                            c.id,
                        ),
                    )
                c.dirty.difference_update(idx)
            counts = c.counts()
            if c.cancelled and counts["sent"] == 0:
                self._drop_done(c)
            elif counts["queued"] == 0 and counts["sent"] == 0:
                await conn.execute(
                    "UPDATE commands SET status = 'done', finished_at = now(), outcome = %s WHERE id = %s "
                    "AND status = 'running'",
                    (json.dumps(counts), c.id),
                )
                logger.info("campaign %s done: %s", c.id, counts)
                self._drop_done(c)

    def _drop_done(self, c: Campaign) -> None:
        self.campaigns.pop(c.id, None)
        # Answers may still come for a while; they change nothing, so the device ids can go.
        for i in range(len(c.lamp_ids)):
            self._by_device.pop(c.device_id(i), None)
