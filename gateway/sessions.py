"""Ingest shared between gateway processes: each district is leased to one of them.

A district's devices publish on `sl/{district}/…`; the process holding the district's lease (`ingest:{district}`,
kernel.leases) subscribes to those topics on an MQTT session that belongs to the district, not to the
process: client id `{prefix}-ingest-{district}`. A process that takes a district over, after its holder died or
handed it on, resumes that session, so the broker sends it what the previous holder had received and not yet
acknowledged: nothing is lost, and what was committed twice is dropped as a duplicate by (lamp, ts, seq). One
district has one reader, so each lamp's reports are read in order, and the fault rules of a district see all
of its reports.

Every `balance_s` a process counts the gateways alive (their heartbeats) and holds its fair share, ceil(districts
/ gateways): it takes free districts while it has fewer, and hands one on while it has more (its session is
closed first, then the lease released). Alone, a gateway holds every district.

Why leases rather than MQTT 5 shared subscriptions: a shared subscription spreads one lamp's reports over
several processes (no order, no per-lamp state in one place), and what a dead member had not acknowledged waits in
its session for it to come back; brokers differ in how they treat offline members. A leased district keeps
order, keeps its fault rules whole, and its session moves with it. The cost: topics of districts the inventory
does not know are not subscribed to (the broker's ACL refuses them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence

from fieldnet.broker import Broker
from gateway.mqtt import AckToken, MqttSubscriber, OnMessage, OnPackets
from kernel.leases import Leases
from protocol.topics import district_report_filters

__all__ = ["IngestSessions"]

logger = logging.getLogger(__name__)


class IngestSessions:
    def __init__(
        self,
        *,
        broker: Broker,
        prefix: str,
        districts: Sequence[str],
        leases: Leases,
        on_message: OnMessage,
        gateways: Callable[[], Awaitable[int]],
        on_change: Callable[[set[str], set[str]], None] | None = None,
        receive_maximum: int = 65535,
        balance_s: float = 2.0,
        on_packets: OnPackets | None = None,
    ) -> None:
        self.broker, self.prefix = broker, prefix
        self.districts = sorted(districts)
        self.leases = leases
        self._on_message = on_message
        self._on_packets = on_packets  # each socket read's messages in one call (see MqttSubscriber)
        self._gateways = gateways  # how many gateways are alive, this one included
        self._on_change = on_change  # (gained, lost) districts, on this loop
        self.receive_maximum = receive_maximum
        self.balance_s = balance_s
        self.subs: dict[str, MqttSubscriber] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.connected = asyncio.Event()  # every district held is subscribed (and at least one is held)
        self._ready_logged = False

    # -- what the gateway uses ------------------------------------------------------------------------------

    def ack(self, tokens: Sequence[AckToken]) -> int:
        """Acknowledge each message on the connection it came on (one per district)."""
        by_source: dict[MqttSubscriber, list[AckToken]] = defaultdict(list)
        for t in tokens:
            if t.source is not None:
                by_source[t.source].append(t)
        return sum(sub.ack(group) for sub, group in by_source.items())

    @property
    def received(self) -> int:
        return sum(s.received for s in self.subs.values())

    def held(self) -> list[str]:
        return sorted(self.subs)

    # -- the loop -------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Until cancelled: keep this process's share of the districts, and their sessions connected."""
        try:
            while True:
                try:
                    await self._balance()
                except Exception:  # one bad pass must not end ingest: the next one tries again
                    logger.exception("ingest: balancing districts failed; trying again")
                self._update_connected()
                await asyncio.sleep(self.balance_s if self._settled() else 0.2)
        finally:
            # The leases go with their connection when the process stops; releasing them here would race the
            # closing of that connection.
            for district in list(self.subs):
                await self._stop(district, release=False)

    def set_districts(self, districts: Sequence[str]) -> None:
        """The inventory changed: districts that went are handed on at the next pass."""
        self.districts = sorted(districts)

    def lost(self, names: set[str]) -> None:
        """The leases went with their database connection: stop reading those districts at once."""
        for name in names:
            if name.startswith("ingest:") and (district := name.removeprefix("ingest:")) in self._tasks:
                self._tasks[district].cancel()

    def _settled(self) -> bool:
        return all(s.connected.is_set() for s in self.subs.values())

    async def _balance(self) -> None:
        for district, task in list(self._tasks.items()):
            if f"ingest:{district}" not in self.leases.held:  # lost with the leases' connection
                await self._stop(district, release=False)
                if self._on_change:
                    self._on_change(set(), {district})
            elif task.done():  # its session ended unexpectedly: start it again
                logger.error("ingest: the session of district %s ended (%r); starting it again", district,
                             task.exception() if not task.cancelled() else "cancelled")  # fmt: skip
                self.subs.pop(district, None)
                self._tasks.pop(district, None)
                self._start(district)
        gateways = max(1, await self._gateways())
        share = math.ceil(len(self.districts) / gateways) if self.districts else 0
        gained: set[str] = set()
        for district in [d for d in self.subs if d not in self.districts]:
            await self._stop(district)
        if len(self.subs) > share:
            district = max(self.subs)
            logger.info("ingest: %d gateways, handing district %s on (holding %d of %d)", gateways, district,
                        len(self.subs), len(self.districts))  # fmt: skip
            await self._stop(district)
            if self._on_change:
                self._on_change(set(), {district})
            return
        for district in self.districts:
            if len(self.subs) >= share:
                break
            if district in self.subs:
                continue
            if await self.leases.try_take(f"ingest:{district}"):
                self._start(district)
                gained.add(district)
        if gained:
            self._ready_logged = False
            if self._on_change:
                self._on_change(gained, set())

    def _start(self, district: str) -> None:
        sub = MqttSubscriber(
            broker=self.broker,
            client_id=f"{self.prefix}-ingest-{district}",
            on_message=self._on_message,
            on_packets=self._on_packets,
            topics=district_report_filters(district),
            receive_maximum=self.receive_maximum,
        )
        self.subs[district] = sub
        self._tasks[district] = asyncio.create_task(sub.run(), name=f"ingest-{district}")

    async def _stop(self, district: str, *, release: bool = True) -> None:
        sub, task = self.subs.pop(district, None), self._tasks.pop(district, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if sub is not None:
            await sub.close()
        if release:
            await self.leases.release(f"ingest:{district}")
        self._update_connected()

    def _update_connected(self) -> None:
        if self.subs and self._settled():
            self.connected.set()
            if not self._ready_logged:
                self._ready_logged = True
                logger.info(
                    "ingest sessions ready: subscribed to %d of %d districts (%s)",
                    len(self.subs),
                    len(self.districts),
                    ", ".join(self.held()),
                )
        else:
            self.connected.clear()
